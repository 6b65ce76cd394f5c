//! Cluster formation: nodes that boot at the same time end up in exactly one cluster.
//!
//! An [`Agent`] per managed node runs the formation protocol against any
//! [`Backend`] and any [`ClusterTarget`]:
//!
//! 1. **Startup lock.** With a backend that has a lock (memory, etcd, Consul,
//!    Kubernetes), the agent takes it (its own lease, independent of the node TTL) and
//!    releases it on every path, failures included; an agent that dies frees it when the
//!    lease expires. Backends without a lock (static list, DNS, a StatefulSet) name a
//!    deterministic seed instead: only that node forms a new cluster, every other node
//!    keeps trying to join it. There is no random delay anywhere.
//! 2. **Who is alive.** The agent lists the registered nodes (a backend error aborts the
//!    step; it is never an empty list) and probes them as a hidden node (EPMD, handshake,
//!    a call), walking them in seed order and stopping at the first live one, so nodes
//!    are never all connected to each other.
//! 3. **The seed** is the alphabetically first live registered node
//!    ([`SeedOrder::Alphabetical`]), or RabbitMQ 3.13's order (largest cluster, longest
//!    running, name: [`SeedOrder::LargestCluster`]). The managed node itself is not
//!    registered yet, so it never picks itself merely because its name sorts first: when
//!    no registered node is live, it forms the cluster. A managed node that is booting
//!    ([`Membership::booting`]) takes the first registered booting node as its seed when
//!    none is live: both boots then form one cluster.
//! 4. **Form or join** through the [`ClusterTarget`]: [`ErlangMesh`] (a plain Erlang node
//!    told to `net_kernel:connect_node/1` the seed), [`RabbitMq`] (stop the app, join as
//!    a disc node, start the app, with the functions of the node's RabbitMQ version; a
//!    broker in its first boot is told whom its boot joins instead) or [`LocalTarget`]
//!    (this Rust process dialling the cluster's members), or [`NativeTarget`] (a cluster
//!    of Rust processes: a star around the seed). A managed node whose application is
//!    stopped (an agent killed in the middle of a RabbitMQ join) is started first, then
//!    the agent decides as usual: the interrupted join is finished.
//! 5. **Never discard data silently**: a node that holds data, or belongs to another
//!    cluster, is not reset and joined unless [`FormationConfig::allow_reset`] says so;
//!    otherwise [`FormationError::DataAtRisk`] names what would be lost.
//! 6. **Register** with a TTL kept alive in the background, then release the lock. The
//!    lock covers what decides the node's membership, no more: a form or join whose
//!    target has work left that changes none (RabbitMQ: starting the application again,
//!    or the rest of a first boot, seconds) finishes after the release
//!    ([`ClusterTarget::join_membership`]), so that the next node's join overlaps it,
//!    and is then verified.
//! 7. **Failure policy**: bounded retries with backoff, then [`FailurePolicy::Stop`]
//!    (return the error) or [`FailurePolicy::Ignore`] (log it, run standalone).
//!
//! After formation, [`Agent::watch`] keeps going: it reconnects registered members that
//! are disconnected, detects and reports splits, and runs the [cleanup] of dead
//! members; [`Agent::leave`] deregisters first and then leaves the cluster.
//!
//! ```no_run
//! use std::sync::Arc;
//! use autocluster::backend::MemoryBackend;
//! use autocluster::formation::{Agent, ErlangMesh, FormationConfig};
//! use autocluster::{Cookie, Node};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let cookie = Cookie::from_default_file()?;
//! let probe = Node::builder("agent@localhost".parse()?, cookie).start().await?;
//! let backend = Arc::new(MemoryBackend::new());
//! let target = Arc::new(ErlangMesh::new(probe, "app@localhost".parse()?));
//! let agent = Agent::new(backend, target, FormationConfig::default());
//! let formed = agent.run().await?;
//! println!("{} {}", formed.node, formed.outcome);
//! # Ok(()) }
//! ```

pub mod cleanup;
mod erlang;
mod local;
mod native;
mod rabbitmq;
pub mod seed;
mod target;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;
use tracing::Instrument as _;

#[cfg(feature = "testing")]
#[doc(hidden)]
pub use cleanup::CleanupState;
#[cfg(not(feature = "testing"))]
use cleanup::CleanupState;
pub use cleanup::{CleanupAction, CleanupConfig};
pub use erlang::ErlangMesh;
pub use local::LocalTarget;
pub use native::{MEMBERSHIP_SERVICE, NativeTarget};
pub use rabbitmq::{RabbitMq, RabbitVersion};
pub use seed::SeedOrder;
pub use target::{ClusterTarget, DataState, Membership, Probe, Stage};

use crate::NodeName;
use crate::backend::{
    Backend, BackendError, LockGuard, LockRequest, Registration, RegistrationHandle,
};
use crate::rpc::RpcError;

/// What to do when formation fails after its retries (rabbitmq-autocluster's
/// `autocluster_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Return the error; the caller exits (default).
    #[default]
    Stop,
    /// Log the error and run standalone.
    Ignore,
}

/// How formation runs.
#[derive(Debug, Clone)]
pub struct FormationConfig {
    /// How the seed is chosen.
    pub seed_order: SeedOrder,
    /// What to do when formation fails.
    pub failure: FailurePolicy,
    /// Attempts before giving up (default 10).
    pub max_attempts: u32,
    /// First delay between attempts (default 500 ms), doubled each time.
    pub backoff_initial: Duration,
    /// Longest delay between attempts (default 10 s).
    pub backoff_max: Duration,
    /// The registration TTL, when the backend has none configured (default 30 s).
    pub node_ttl: Duration,
    /// The startup lock's lease, when the backend has none configured (default 70 s,
    /// RabbitMQ's). Independent of the node TTL.
    pub lock_ttl: Duration,
    /// How long to wait for the startup lock, when the backend has none configured
    /// (default 300 s, rabbitmq-autocluster's `lock_wait_time`).
    pub lock_wait: Duration,
    /// Without a lock: how long a node waits for its deterministic seed to come up
    /// (default 300 s).
    pub seed_wait: Duration,
    /// Allow resetting a node that holds data or belongs to another cluster (default
    /// false).
    pub allow_reset: bool,
    /// Register the managed node with the backend when it supports registration
    /// (default true).
    pub register: bool,
    /// Cleanup of dead members while watching.
    pub cleanup: CleanupConfig,
    /// Time between checks while watching (default 10 s).
    pub watch_interval: Duration,
}

impl Default for FormationConfig {
    fn default() -> Self {
        FormationConfig {
            seed_order: SeedOrder::Alphabetical,
            failure: FailurePolicy::Stop,
            max_attempts: 10,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(10),
            node_ttl: Duration::from_secs(30),
            lock_ttl: Duration::from_secs(70),
            lock_wait: Duration::from_secs(300),
            seed_wait: Duration::from_secs(300),
            allow_reset: false,
            register: true,
            cleanup: CleanupConfig::default(),
            watch_interval: Duration::from_secs(10),
        }
    }
}

/// Why formation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormationError {
    /// The backend failed at a step (listing, registering, ...).
    #[error("{step}: {source}")]
    Backend {
        /// The step.
        step: &'static str,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// A call to a node failed.
    #[error("{step} on {node}: {source}")]
    Rpc {
        /// The step.
        step: &'static str,
        /// The node called.
        node: NodeName,
        /// The error.
        #[source]
        source: Box<RpcError>,
    },
    /// The node answered something unexpected.
    #[error("{step} on {node}: {detail}")]
    Unexpected {
        /// The step.
        step: &'static str,
        /// The node.
        node: NodeName,
        /// What was wrong.
        detail: String,
    },
    /// Joining would discard data, and resetting was not allowed.
    #[error(
        "{node} holds {data}; joining {seed} would reset it and lose that. \
         Leave it standalone, or allow the reset explicitly (allow_reset / --allow-reset)"
    )]
    DataAtRisk {
        /// The managed node.
        node: NodeName,
        /// The seed it would join.
        seed: NodeName,
        /// What would be lost.
        data: DataState,
    },
    /// The backend has neither a lock nor a deterministic seed.
    #[error("the {backend} backend offers neither a startup lock nor a deterministic seed")]
    NoSeed {
        /// The backend.
        backend: &'static str,
    },
    /// Without a lock: the deterministic seed did not come up in time.
    #[error(
        "the seed {seed} did not come up within {waited:?} (no lock: only the seed forms a cluster)"
    )]
    SeedUnavailable {
        /// The seed.
        seed: NodeName,
        /// How long we waited.
        waited: Duration,
    },
    /// The join call succeeded but the node does not list the seed afterwards.
    #[error(
        "{node} joined {seed} but does not list it as a running member afterwards: {members:?}"
    )]
    JoinNotVerified {
        /// The managed node.
        node: NodeName,
        /// The seed.
        seed: NodeName,
        /// Its running members afterwards.
        members: Vec<NodeName>,
    },
    /// The target cannot be used as configured.
    #[error("{0}")]
    Config(String),
    /// No registered node answered as live, but some could not be reached for a reason
    /// that does not prove them down (a timeout, a connection cut during the handshake, a
    /// refused handshake): forming a new cluster could split the cluster they run.
    /// Retried; it clears once they answer, or once their registrations expire.
    #[error(
        "no registered node answered as live, and {} may still be alive: not forming a new cluster beside {}",
        describe_nodes(nodes),
        if nodes.len() == 1 { "it" } else { "them" }
    )]
    MaybeAlive {
        /// The nodes, each with why its probe failed.
        nodes: Vec<(NodeName, String)>,
    },
}

fn describe_nodes(nodes: &[(NodeName, String)]) -> String {
    nodes
        .iter()
        .map(|(n, why)| format!("{n} ({why})"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl FormationError {
    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            FormationError::Backend { source, .. } => {
                source.is_transient() && !matches!(source, BackendError::LockTimeout { .. })
            }
            // Nodes starting up refuse calls for a moment; the number of attempts bounds it.
            FormationError::Rpc { .. } => true,
            FormationError::Unexpected { .. }
            | FormationError::JoinNotVerified { .. }
            | FormationError::MaybeAlive { .. } => true,
            FormationError::DataAtRisk { .. }
            | FormationError::NoSeed { .. }
            | FormationError::SeedUnavailable { .. }
            | FormationError::Config(_) => false,
        }
    }

    pub(crate) fn rpc(step: &'static str, node: &NodeName, source: RpcError) -> FormationError {
        FormationError::Rpc {
            step,
            node: node.clone(),
            source: Box::new(source),
        }
    }

    pub(crate) fn unexpected(
        step: &'static str,
        node: &NodeName,
        detail: impl Into<String>,
    ) -> FormationError {
        FormationError::Unexpected {
            step,
            node: node.clone(),
            detail: detail.into(),
        }
    }
}

/// How formation ended for the managed node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// No registered node was live: the managed node is the first of a new cluster.
    FormedNew,
    /// The managed node joined the seed's cluster.
    Joined {
        /// The seed.
        seed: NodeName,
    },
    /// The managed node was already a member of the seed's cluster.
    AlreadyMember {
        /// The seed.
        seed: NodeName,
    },
    /// Formation failed and the failure policy is [`FailurePolicy::Ignore`]: the node
    /// runs standalone.
    Standalone {
        /// The error.
        error: String,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::FormedNew => f.write_str("formed a new cluster"),
            Outcome::Joined { seed } => write!(f, "joined {seed}"),
            Outcome::AlreadyMember { seed } => write!(f, "already a member with {seed}"),
            Outcome::Standalone { error } => write!(f, "standalone after an error: {error}"),
        }
    }
}

/// The result of [`Agent::run`].
#[derive(Debug)]
pub struct Formed {
    /// The managed node.
    pub node: NodeName,
    /// What happened.
    pub outcome: Outcome,
    /// The registration kept alive in the background (dropping it deregisters).
    pub registration: Option<RegistrationHandle>,
    /// The startup lock's fencing token, when a lock was taken.
    pub fencing_token: Option<u64>,
    /// The attempts it took.
    pub attempts: u32,
    /// How long it took.
    pub elapsed: Duration,
}

impl Formed {
    /// The seed the node joined or found itself a member with, if any.
    pub fn seed(&self) -> Option<&NodeName> {
        match &self.outcome {
            Outcome::Joined { seed } | Outcome::AlreadyMember { seed } => Some(seed),
            _ => None,
        }
    }
}

/// What an agent reports as it goes, for metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormationEvent {
    /// Waiting for the startup lock.
    LockWaiting,
    /// The startup lock is held.
    LockAcquired {
        /// Its fencing token.
        fencing_token: u64,
        /// How long the wait was.
        waited: Duration,
    },
    /// The startup lock was released.
    LockReleased,
    /// The startup lock was lost while held (or could not be released cleanly).
    LockLost(String),
    /// A node was probed.
    Probed {
        /// The node.
        node: NodeName,
        /// Whether it is live.
        live: bool,
    },
    /// The seed was chosen (`None`: no live node, form a new cluster).
    SeedChosen(Option<NodeName>),
    /// The managed node's membership is decided (joining this seed; `None`: forming a
    /// new cluster) and what is left ([`ClusterTarget::finish`]) runs after the startup
    /// lock is released (at once, without a lock).
    Decided(Option<NodeName>),
    /// Formation finished.
    Finished(Outcome),
    /// The managed node was registered.
    Registered,
    /// An attempt failed and another follows.
    Retrying {
        /// The attempt that failed.
        attempt: u32,
        /// Its error.
        error: String,
    },
    /// While watching: a registered member was disconnected and is reconnected.
    Reconnected(NodeName),
    /// While watching: registered nodes form separate groups that do not list each
    /// other.
    SplitDetected(Vec<Vec<NodeName>>),
    /// While watching: cleanup forgot a member.
    Forgot(NodeName),
    /// While watching: cleanup would forget a member (warn-only).
    WouldForget(NodeName),
    /// While watching: a cleanup round was skipped because the backend failed.
    CleanupSkipped(String),
    /// The node left the cluster.
    Left,
}

/// A form or join whose last part ([`ClusterTarget::finish`]) is still to run.
#[derive(Debug)]
struct Pending {
    /// `None` when forming.
    seed: Option<NodeName>,
    /// Register the node only once the finished join is verified ([`Stage::Decided`]).
    register_after: bool,
}

/// Counters of an agent.
#[derive(Debug, Default)]
pub struct Metrics {
    lock_waits: AtomicU64,
    lock_wait_ms: AtomicU64,
    registrations: AtomicU64,
    keepalive_failures: AtomicU64,
    seed_choices: AtomicU64,
    joins: AtomicU64,
    forms: AtomicU64,
    retries: AtomicU64,
    reconnects: AtomicU64,
    splits: AtomicU64,
    cleanup_forgotten: AtomicU64,
    cleanup_warnings: AtomicU64,
}

/// A snapshot of [`Metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Times the startup lock was waited for.
    pub lock_waits: u64,
    /// Total milliseconds spent waiting for it.
    pub lock_wait_ms: u64,
    /// Registrations made.
    pub registrations: u64,
    /// Registration keep-alive failures seen while watching.
    pub keepalive_failures: u64,
    /// Seeds chosen.
    pub seed_choices: u64,
    /// Joins performed.
    pub joins: u64,
    /// New clusters formed.
    pub forms: u64,
    /// Attempts retried.
    pub retries: u64,
    /// Members reconnected while watching.
    pub reconnects: u64,
    /// Splits detected while watching.
    pub splits: u64,
    /// Members forgotten by cleanup.
    pub cleanup_forgotten: u64,
    /// Members cleanup would have forgotten (warn-only).
    pub cleanup_warnings: u64,
}

impl Metrics {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            lock_waits: g(&self.lock_waits),
            lock_wait_ms: g(&self.lock_wait_ms),
            registrations: g(&self.registrations),
            keepalive_failures: g(&self.keepalive_failures),
            seed_choices: g(&self.seed_choices),
            joins: g(&self.joins),
            forms: g(&self.forms),
            retries: g(&self.retries),
            reconnects: g(&self.reconnects),
            splits: g(&self.splits),
            cleanup_forgotten: g(&self.cleanup_forgotten),
            cleanup_warnings: g(&self.cleanup_warnings),
        }
    }
}

/// The formation agent of one managed node. See the [module documentation](self).
#[derive(Clone)]
pub struct Agent {
    inner: Arc<AgentInner>,
}

struct AgentInner {
    backend: Arc<dyn Backend>,
    target: Arc<dyn ClusterTarget>,
    config: FormationConfig,
    events: broadcast::Sender<FormationEvent>,
    metrics: Metrics,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("node", self.inner.target.node())
            .field("backend", &self.inner.backend.name())
            .field("target", &self.inner.target.kind())
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent forming `target` through `backend`.
    pub fn new(
        backend: Arc<dyn Backend>,
        target: Arc<dyn ClusterTarget>,
        config: FormationConfig,
    ) -> Agent {
        let (events, _) = broadcast::channel(256);
        Agent {
            inner: Arc::new(AgentInner {
                backend,
                target,
                config,
                events,
                metrics: Metrics::default(),
            }),
        }
    }

    /// The managed node.
    pub fn node(&self) -> &NodeName {
        self.inner.target.node()
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The target.
    pub fn target(&self) -> &Arc<dyn ClusterTarget> {
        &self.inner.target
    }

    /// The configuration.
    pub fn config(&self) -> &FormationConfig {
        &self.inner.config
    }

    /// Subscribes to the agent's events.
    pub fn events(&self) -> broadcast::Receiver<FormationEvent> {
        self.inner.events.subscribe()
    }

    /// The agent's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    fn emit(&self, event: FormationEvent) {
        let _ = self.inner.events.send(event);
    }

    fn node_ttl(&self) -> Duration {
        self.inner
            .backend
            .timings()
            .node_ttl
            .unwrap_or(self.inner.config.node_ttl)
    }

    fn lock_request(&self) -> LockRequest {
        let t = self.inner.backend.timings();
        LockRequest::new(
            self.node().as_str(),
            t.lock_ttl.unwrap_or(self.inner.config.lock_ttl),
            t.lock_wait.unwrap_or(self.inner.config.lock_wait),
        )
    }

    /// Runs formation: attempts with backoff, then the failure policy.
    pub async fn run(&self) -> Result<Formed, FormationError> {
        let started = Instant::now();
        let span = tracing::info_span!("formation", node = %self.node(), backend = self.inner.backend.name(), target = self.inner.target.kind());
        async {
            let cfg = &self.inner.config;
            let mut delay = cfg.backoff_initial;
            let mut attempt = 0;
            let error = loop {
                attempt += 1;
                match self.attempt().instrument(tracing::info_span!("attempt", attempt)).await {
                    Ok((outcome, registration, fencing_token)) => {
                        tracing::info!(%outcome, attempts = attempt, elapsed_ms = started.elapsed().as_millis() as u64, "formation finished");
                        self.emit(FormationEvent::Finished(outcome.clone()));
                        return Ok(Formed {
                            node: self.node().clone(),
                            outcome,
                            registration,
                            fencing_token,
                            attempts: attempt,
                            elapsed: started.elapsed(),
                        });
                    }
                    Err(e) if e.is_retryable() && attempt < cfg.max_attempts.max(1) => {
                        tracing::warn!(attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "formation attempt failed; retrying");
                        Metrics::bump(&self.inner.metrics.retries);
                        self.emit(FormationEvent::Retrying { attempt, error: e.to_string() });
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(cfg.backoff_max);
                    }
                    Err(e) => break e,
                }
            };
            match cfg.failure {
                FailurePolicy::Stop => {
                    tracing::error!(error = %error, attempts = attempt, "formation failed");
                    Err(error)
                }
                FailurePolicy::Ignore => {
                    tracing::error!(error = %error, attempts = attempt, "formation failed; running standalone (failure policy: ignore)");
                    let outcome = Outcome::Standalone { error: error.to_string() };
                    self.emit(FormationEvent::Finished(outcome.clone()));
                    Ok(Formed {
                        node: self.node().clone(),
                        outcome,
                        registration: None,
                        fencing_token: None,
                        attempts: attempt,
                        elapsed: started.elapsed(),
                    })
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn attempt(
        &self,
    ) -> Result<(Outcome, Option<RegistrationHandle>, Option<u64>), FormationError> {
        let backend = &self.inner.backend;
        if backend.supports_lock() {
            let guard = self.take_lock().await?;
            let token = guard.fencing_token();
            let result = self.locked_steps().await;
            self.release(guard).await;
            let (outcome, mut registration, pending) = result?;
            if let Some(pending) = pending {
                let register_after = pending.register_after;
                // A failure here drops the registration (which deregisters the node); the
                // next attempt finds its application stopped and finishes the join.
                self.finish(pending).await?;
                if register_after {
                    registration = self.register().await?;
                }
            }
            Ok((outcome, registration, Some(token)))
        } else {
            let outcome = self.lockless_steps().await?;
            Ok((outcome, None, None))
        }
    }

    async fn take_lock(&self) -> Result<LockGuard, FormationError> {
        let request = self.lock_request();
        let waited = Instant::now();
        self.emit(FormationEvent::LockWaiting);
        Metrics::bump(&self.inner.metrics.lock_waits);
        let guard = self
            .inner
            .backend
            .lock(request)
            .instrument(tracing::info_span!("lock"))
            .await
            .map_err(|source| FormationError::Backend {
                step: "taking the startup lock",
                source,
            })?;
        let waited = waited.elapsed();
        self.inner
            .metrics
            .lock_wait_ms
            .fetch_add(waited.as_millis() as u64, Ordering::Relaxed);
        tracing::info!(
            fencing_token = guard.fencing_token(),
            waited_ms = waited.as_millis() as u64,
            "startup lock acquired"
        );
        self.emit(FormationEvent::LockAcquired {
            fencing_token: guard.fencing_token(),
            waited,
        });
        Ok(guard)
    }

    async fn release(&self, guard: LockGuard) {
        match guard.release().await {
            Ok(()) => {
                tracing::info!("startup lock released");
                self.emit(FormationEvent::LockReleased);
            }
            Err(e) => {
                tracing::error!(error = %e, "startup lock was lost or could not be released");
                self.emit(FormationEvent::LockLost(e.to_string()));
            }
        }
    }

    async fn list(&self) -> Result<Vec<crate::backend::RegisteredNode>, FormationError> {
        self.inner
            .backend
            .list_nodes()
            .await
            .map_err(|source| FormationError::Backend {
                step: "listing the registered nodes",
                source,
            })
    }

    async fn probe(&self, node: &NodeName) -> Result<Probe, FormationError> {
        let probe = self.inner.target.probe(node).await?;
        tracing::debug!(%node, live = probe.live, reason = ?probe.reason, "probed");
        self.emit(FormationEvent::Probed {
            node: node.clone(),
            live: probe.live,
        });
        Ok(probe)
    }

    /// Steps 2–6 under the startup lock; returns the part of a join left for after the
    /// lock's release, if any.
    async fn locked_steps(
        &self,
    ) -> Result<(Outcome, Option<RegistrationHandle>, Option<Pending>), FormationError> {
        let me = self.node().clone();
        let listed = self.list().await?;
        let candidates = seed::probe_order(&listed, &me);
        // Registered nodes that did not answer, with nothing proving them down.
        let mut unknown: Vec<(NodeName, String)> = Vec::new();
        // Registered nodes that are booting, in probe order.
        let mut booting: Vec<NodeName> = Vec::new();
        let seed = match self.inner.config.seed_order {
            SeedOrder::Alphabetical => {
                let mut found = None;
                for node in &candidates {
                    let p = self.probe(node).await?;
                    if p.live {
                        found = Some(node.clone());
                        break;
                    }
                    if p.booting {
                        booting.push(node.clone());
                    }
                    if !p.gone {
                        unknown.push((node.clone(), p.reason.unwrap_or_default()));
                    }
                }
                found
            }
            SeedOrder::LargestCluster => {
                let mut probes = Vec::with_capacity(candidates.len());
                for node in &candidates {
                    probes.push(self.probe(node).await?);
                }
                unknown.extend(
                    probes
                        .iter()
                        .filter(|p| !p.live && !p.gone)
                        .map(|p| (p.node.clone(), p.reason.clone().unwrap_or_default())),
                );
                booting.extend(
                    probes
                        .iter()
                        .filter(|p| !p.live && p.booting)
                        .map(|p| p.node.clone()),
                );
                seed::choose(&probes, SeedOrder::LargestCluster)
            }
        };
        let seed = match seed {
            // No registered node is live yet, but some are booting: nodes whose boot forms
            // a new cluster (a node whose boot joins one registers only once it has
            // joined) or members restarting. A managed node that is booting too joins the
            // first of them, and the boots form one cluster (a running node waits for a
            // live seed instead: it can only join a cluster whose database is up).
            None if !booting.is_empty() && self.inner.target.membership().await?.booting => {
                booting.into_iter().next()
            }
            seed => seed,
        };
        if seed.is_none() && !unknown.is_empty() {
            // Forming now could start a second cluster beside a live one that a timeout
            // or a connection cut hid from us: retry instead (the lock is released in
            // between). A dead node stops being registered within its TTL.
            return Err(FormationError::MaybeAlive { nodes: unknown });
        }
        Metrics::bump(&self.inner.metrics.seed_choices);
        tracing::info!(seed = ?seed.as_ref().map(NodeName::as_str), registered = listed.len(), "seed chosen");
        self.emit(FormationEvent::SeedChosen(seed.clone()));
        let (outcome, pending) = match seed {
            None => self.form_new().await?,
            Some(seed) => self.join(&seed).await?,
        };
        let registration = if pending.as_ref().is_some_and(|p| p.register_after) {
            None
        } else {
            self.register().await?
        };
        Ok((outcome, registration, pending))
    }

    async fn form_new(&self) -> Result<(Outcome, Option<Pending>), FormationError> {
        // No registered node is live. A node already clustered with running peers (an
        // existing cluster whose registrations expired, or nodes given to a fresh
        // registry) keeps its cluster: nothing to form.
        if let Ok(m) = self.inner.target.membership().await
            && m.running
            && m.running_members.iter().any(|n| n != self.node())
            && let Some(seed) = m.running_members.iter().min()
        {
            return Ok((Outcome::AlreadyMember { seed: seed.clone() }, None));
        }
        let stage = self
            .inner
            .target
            .form_membership()
            .instrument(tracing::info_span!("form"))
            .await?;
        if stage == Stage::Complete {
            Metrics::bump(&self.inner.metrics.forms);
        }
        Ok((Outcome::FormedNew, self.decided(stage, None)))
    }

    /// What is left after a [`Stage`]: nothing, or the finish after the lock.
    fn decided(&self, stage: Stage, seed: Option<&NodeName>) -> Option<Pending> {
        if stage == Stage::Complete {
            return None;
        }
        let register_after = stage == Stage::Decided;
        tracing::info!(seed = ?seed.map(NodeName::as_str), register_after, "membership decided; the rest finishes after the startup lock");
        self.emit(FormationEvent::Decided(seed.cloned()));
        Some(Pending {
            seed: seed.cloned(),
            register_after,
        })
    }

    /// Runs what a form or join left at once, for the paths without a lock.
    async fn settle(
        &self,
        (outcome, pending): (Outcome, Option<Pending>),
    ) -> Result<Outcome, FormationError> {
        if let Some(pending) = pending {
            self.finish(pending).await?;
        }
        Ok(outcome)
    }

    /// Joins `seed` as far as the target's membership step; what is left, if anything, is
    /// for [`finish`](Self::finish).
    async fn join(&self, seed: &NodeName) -> Result<(Outcome, Option<Pending>), FormationError> {
        let target = &self.inner.target;
        let mut before = target.membership().await?;
        if !before.running && before.booting {
            // Its data cannot be read yet: the target checks it (see join_membership).
            let stage = target
                .join_membership(seed, self.inner.config.allow_reset)
                .instrument(tracing::info_span!("join", %seed, booting = true))
                .await?;
            return self.joined(stage, seed).await;
        }
        if !before.running {
            // The node answers but its application is stopped: an agent was killed
            // between stopping and starting it (or an operator stopped it). Its data
            // cannot be read while stopped, so start it first; a node that had already
            // joined is then a running member, and the join is finished.
            tracing::warn!(%seed, members = ?before.members, "the managed node's application is stopped (an interrupted join?): starting it before deciding");
            target
                .form()
                .instrument(tracing::info_span!("resume"))
                .await?;
            before = target.membership().await?;
            if before.members.contains(seed) && before.lists_running(seed) {
                Metrics::bump(&self.inner.metrics.joins);
                return Ok((Outcome::Joined { seed: seed.clone() }, None));
            }
        }
        if before.members.contains(seed) && before.lists_running(seed) {
            return Ok((Outcome::AlreadyMember { seed: seed.clone() }, None));
        }
        let data = target.data_state().await?;
        let reset = match &data {
            DataState::Empty => false,
            _ if self.inner.config.allow_reset => {
                tracing::warn!(%seed, %data, "resetting the node to join (allowed by configuration)");
                true
            }
            _ => {
                return Err(FormationError::DataAtRisk {
                    node: self.node().clone(),
                    seed: seed.clone(),
                    data,
                });
            }
        };
        let stage = target
            .join_membership(seed, reset)
            .instrument(tracing::info_span!("join", %seed))
            .await?;
        self.joined(stage, seed).await
    }

    async fn joined(
        &self,
        stage: Stage,
        seed: &NodeName,
    ) -> Result<(Outcome, Option<Pending>), FormationError> {
        if stage == Stage::Complete {
            self.verify(Some(seed)).await?;
        }
        Ok((
            Outcome::Joined { seed: seed.clone() },
            self.decided(stage, Some(seed)),
        ))
    }

    /// The last part of a form or join, after the startup lock (if any) is released.
    async fn finish(&self, pending: Pending) -> Result<(), FormationError> {
        let seed = pending.seed.as_ref();
        self.inner
            .target
            .finish(seed)
            .instrument(tracing::info_span!("finish", seed = ?seed.map(NodeName::as_str)))
            .await?;
        self.verify(seed).await
    }

    /// Checks the managed node after a join (it lists `seed` as a running member) or a
    /// form (`None`: it runs).
    async fn verify(&self, seed: Option<&NodeName>) -> Result<(), FormationError> {
        let after = self.inner.target.membership().await?;
        match seed {
            Some(seed) if !after.lists_running(seed) => Err(FormationError::JoinNotVerified {
                node: self.node().clone(),
                seed: seed.clone(),
                members: after.running_members,
            }),
            Some(_) => {
                Metrics::bump(&self.inner.metrics.joins);
                Ok(())
            }
            None if !after.running => Err(FormationError::unexpected(
                "forming a new cluster",
                self.node(),
                "the node is not running after forming",
            )),
            None => {
                Metrics::bump(&self.inner.metrics.forms);
                Ok(())
            }
        }
    }

    async fn register(&self) -> Result<Option<RegistrationHandle>, FormationError> {
        let backend = &self.inner.backend;
        if !self.inner.config.register || !backend.supports_registration() {
            return Ok(None);
        }
        let registration = Registration::new(self.node().clone(), self.node_ttl());
        let handle =
            backend
                .register(registration)
                .await
                .map_err(|source| FormationError::Backend {
                    step: "registering the node",
                    source,
                })?;
        Metrics::bump(&self.inner.metrics.registrations);
        tracing::info!(ttl_ms = handle.ttl().as_millis() as u64, "registered");
        self.emit(FormationEvent::Registered);
        Ok(Some(handle))
    }

    /// Formation without a lock: only the deterministic seed forms a cluster.
    async fn lockless_steps(&self) -> Result<Outcome, FormationError> {
        let me = self.node().clone();
        let det = self
            .inner
            .backend
            .deterministic_seed(&me)
            .await
            .map_err(|source| FormationError::Backend {
                step: "asking for the deterministic seed",
                source,
            })?
            .ok_or(FormationError::NoSeed {
                backend: self.inner.backend.name(),
            })?;
        let started = Instant::now();
        let mut delay = self.inner.config.backoff_initial;
        loop {
            let listed = self.list().await?;
            // A node already in a multi-node cluster with a listed node stays there.
            let mine = self.inner.target.membership().await?;
            if mine.members.len() > 1
                && let Some(seed) = mine
                    .members
                    .iter()
                    .filter(|m| **m != me && mine.lists_running(m))
                    .find(|m| **m == det || listed.iter().any(|r| &r.node == *m))
            {
                return Ok(Outcome::AlreadyMember { seed: seed.clone() });
            }
            let others = seed::probe_order(&listed, &me);
            if det == me {
                // The seed forms the cluster, unless the others already run one (the
                // seed restarted without its data): then it joins them.
                for node in &others {
                    let p = self.probe(node).await?;
                    if p.live && p.cluster_size() >= 2 {
                        self.emit(FormationEvent::SeedChosen(Some(node.clone())));
                        return self.settle(self.join(node).await?).await;
                    }
                }
                self.emit(FormationEvent::SeedChosen(None));
                return self.settle(self.form_new().await?).await;
            }
            let p = self.probe(&det).await?;
            if p.live {
                self.emit(FormationEvent::SeedChosen(Some(det.clone())));
                Metrics::bump(&self.inner.metrics.seed_choices);
                return self.settle(self.join(&det).await?).await;
            }
            // The seed is down: join a cluster the others already formed, if any.
            for node in others.iter().filter(|n| **n != det) {
                let p = self.probe(node).await?;
                if p.live && p.cluster_size() >= 2 {
                    self.emit(FormationEvent::SeedChosen(Some(node.clone())));
                    return self.settle(self.join(node).await?).await;
                }
            }
            if started.elapsed() >= self.inner.config.seed_wait {
                return Err(FormationError::SeedUnavailable {
                    seed: det,
                    waited: started.elapsed(),
                });
            }
            tracing::info!(seed = %det, "waiting for the seed to come up");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.inner.config.backoff_max);
        }
    }

    /// Keeps watching after formation, in the background: reconnects disconnected
    /// registered members, detects splits, runs cleanup, and counts registration
    /// keep-alive failures. Stops when the returned handle is dropped or stopped.
    pub fn watch(&self, formed: &Formed) -> WatchHandle {
        let agent = self.clone();
        let mut keepalive = formed.registration.as_ref().map(|r| r.subscribe());
        let task = tokio::spawn(async move {
            let mut cleanup = CleanupState::new();
            let cfg = agent.inner.config.clone();
            let mut tick = tokio::time::interval(cfg.watch_interval.min(cfg.cleanup.interval));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_cleanup = Instant::now();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    ev = async {
                        match keepalive.as_mut() {
                            Some(rx) => rx.recv().await.ok(),
                            None => std::future::pending().await,
                        }
                    } => {
                        if let Some(crate::backend::RegistrationEvent::RefreshFailed { .. }) = ev {
                            Metrics::bump(&agent.inner.metrics.keepalive_failures);
                        }
                        continue;
                    }
                }
                let run_cleanup =
                    cfg.cleanup.enabled && last_cleanup.elapsed() >= cfg.cleanup.interval;
                if run_cleanup {
                    last_cleanup = Instant::now();
                }
                agent
                    .watch_once(&mut cleanup, run_cleanup)
                    .instrument(tracing::info_span!("watch", node = %agent.node()))
                    .await;
            }
        });
        WatchHandle { task }
    }

    /// One round of watching, for the crate's tests and trial harness to drive the agent
    /// step by step (the `testing` feature; outside semver).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub async fn watch_round(&self, cleanup: &mut CleanupState, run_cleanup: bool) {
        self.watch_once(cleanup, run_cleanup).await
    }

    /// One round of watching.
    async fn watch_once(&self, cleanup: &mut CleanupState, run_cleanup: bool) {
        let me = self.node().clone();
        let target = &self.inner.target;
        let listing = self.inner.backend.list_nodes().await;
        let membership = match target.membership().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the node's membership");
                return;
            }
        };
        if !membership.running {
            // A stopped node lists no running member: reading that as "every member is
            // unreachable" would reconnect and clean up against a node under maintenance.
            tracing::warn!(
                "the managed node's application is stopped: nothing to watch this round"
            );
            return;
        }
        if let Ok(listed) = &listing {
            let mut my_group: Vec<NodeName> = membership.running_members.clone();
            if !my_group.contains(&me) {
                my_group.push(me.clone());
            }
            my_group.sort();
            let mut groups: Vec<Vec<NodeName>> = vec![my_group.clone()];
            for r in listed.iter().filter(|r| r.node != me) {
                if my_group.contains(&r.node) {
                    continue;
                }
                // A registered node outside our running members: a member we lost (the
                // node still lists it, as RabbitMQ does, or it still runs with some of
                // our members: an Erlang mesh forgets a lost node), or another cluster.
                let probe = self.probe(&r.node).await.ok().filter(|p| p.live);
                let ours = membership.members.contains(&r.node)
                    || probe.as_ref().is_some_and(|p| {
                        p.membership
                            .running_members
                            .iter()
                            .any(|m| *m != r.node && my_group.contains(m))
                    });
                if ours {
                    match target.reconnect(&r.node).await {
                        Ok(true) => {
                            tracing::info!(member = %r.node, "reconnected a registered member");
                            Metrics::bump(&self.inner.metrics.reconnects);
                            self.emit(FormationEvent::Reconnected(r.node.clone()));
                        }
                        Ok(false) => {
                            tracing::debug!(member = %r.node, "registered member still unreachable")
                        }
                        Err(e) => tracing::warn!(member = %r.node, error = %e, "reconnect failed"),
                    }
                    continue;
                }
                // Splits: registered live nodes whose clusters do not overlap ours.
                if let Some(p) = probe
                    && !groups.iter().any(|g| g.contains(&r.node))
                {
                    let mut g = p.membership.running_members.clone();
                    if !g.contains(&r.node) {
                        g.push(r.node.clone());
                    }
                    g.sort();
                    groups.push(g);
                }
            }
            if groups.len() > 1 {
                tracing::error!(
                    ?groups,
                    "split detected: registered nodes form separate clusters"
                );
                Metrics::bump(&self.inner.metrics.splits);
                self.emit(FormationEvent::SplitDetected(groups));
            }
        }
        if !run_cleanup {
            return;
        }
        let listing = listing.as_deref().map_err(|e| e.to_string());
        let mut cfg = self.inner.config.cleanup.clone();
        cfg.unlisted_for.get_or_insert(self.node_ttl());
        match cleanup.round(&me, &membership, listing, &cfg, std::time::Instant::now()) {
            Err(cleanup::CleanupSkip::BackendError(e)) => {
                tracing::warn!(error = %e, "cleanup skipped: the backend failed, so nothing is forgotten");
                self.emit(FormationEvent::CleanupSkipped(e));
            }
            Ok(actions) => {
                for action in actions {
                    match action {
                        CleanupAction::WouldForget(n) => {
                            tracing::warn!(member = %n, "cleanup (warn-only): would forget an unreachable, unregistered member");
                            Metrics::bump(&self.inner.metrics.cleanup_warnings);
                            self.emit(FormationEvent::WouldForget(n));
                        }
                        CleanupAction::Forget(n) => match target.forget(&n).await {
                            Ok(()) => {
                                tracing::warn!(member = %n, "cleanup: forgot an unreachable, unregistered member");
                                cleanup.forgotten(&n);
                                Metrics::bump(&self.inner.metrics.cleanup_forgotten);
                                self.emit(FormationEvent::Forgot(n));
                            }
                            Err(e) => {
                                tracing::error!(member = %n, error = %e, "cleanup: forgetting failed")
                            }
                        },
                        CleanupAction::Deferred(n) => {
                            tracing::info!(member = %n, "cleanup: deferred to a later round (share per round used up)");
                        }
                    }
                }
            }
        }
    }

    /// Leaves the cluster gracefully (scale-down): deregisters first, so that no node
    /// picks this one as a seed, then leaves.
    pub async fn leave(&self, formed: Formed) -> Result<(), FormationError> {
        if let Some(registration) = formed.registration {
            registration
                .deregister()
                .await
                .map_err(|source| FormationError::Backend {
                    step: "deregistering before leaving",
                    source,
                })?;
        }
        self.inner.target.leave().await?;
        tracing::info!("left the cluster");
        self.emit(FormationEvent::Left);
        Ok(())
    }
}

/// The background watch of an [`Agent`]; stops when dropped.
#[derive(Debug)]
pub struct WatchHandle {
    task: tokio::task::JoinHandle<()>,
}

impl WatchHandle {
    /// Stops watching.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
