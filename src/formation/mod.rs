//! Cluster formation: nodes that boot at the same time end up in exactly one cluster.
//!
//! An [`Agent`] per managed node runs the formation protocol against any
//! [`Backend`](crate::backend::Backend) and any [`ClusterTarget`]:
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
//! 3. **The seed** (chosen by the [seed selector](seed::Selector) that
//!    [`health::check`](crate::health::check) uses too, and published as
//!    [`FormationEvent::SeedChosen`]) is the alphabetically first live registered node
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
//!    the agent decides as usual: the interrupted join is finished. The target only
//!    reports facts and carries out steps; every decision (form, join, reset, start,
//!    wait) is the pure [`plan`](plan::plan)'s, tested without I/O.
//! 5. **Never discard data silently**: a node that holds data, or belongs to another
//!    cluster, is not reset and joined unless [`FormationConfig::allow_reset`] says so;
//!    otherwise [`FormationError::DataAtRisk`] names what would be lost.
//! 6. **Register** with a TTL kept alive in the background, then release the lock. The
//!    lock covers what decides the node's membership, no more: a form or join whose
//!    target has work left that changes none (RabbitMQ: starting the application again,
//!    or the rest of a first boot, seconds) finishes after the release
//!    ([`Stage::Recorded`], [`Stage::Decided`]), so that the next node's join overlaps it,
//!    and is then verified.
//! 7. **Failure policy**: bounded retries with backoff, then [`FailurePolicy::Stop`]
//!    (return the error) or [`FailurePolicy::Ignore`] (log it, run standalone).
//!
//! After formation, [`Agent::watch`] keeps going: it reconnects registered members that
//! are disconnected, detects and reports splits, mends the one kind of split a lock
//! cannot prevent (an empty cluster of one beside a larger cluster: [`split`]), and
//! runs the [cleanup] of dead members; [`Agent::leave`] deregisters first and then leaves the cluster.
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

mod agent;
pub mod cleanup;
mod erlang;
pub mod gate;
mod local;
mod native;
pub mod plan;
mod rabbitmq;
pub mod seed;
pub mod split;
mod target;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub(crate) use agent::seed_policy;
pub use agent::{Agent, WatchHandle};
#[cfg(feature = "testing")]
#[doc(hidden)]
pub use cleanup::CleanupState;
pub use cleanup::{CleanupAction, CleanupConfig};
pub use erlang::ErlangMesh;
pub use gate::FormGate;
pub use local::LocalTarget;
pub use native::{MEMBERSHIP_SERVICE, NativeTarget};
pub use rabbitmq::{RabbitMq, RabbitVersion};
pub use seed::{SeedOrder, SeedPolicy};
pub use target::{
    ClusterTarget, DataState, Inspection, Membership, MetadataStore, Probe, Stage, Step,
};

use crate::NodeName;
use crate::backend::{BackendError, RegistrationHandle};
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
    /// While watching, mend a split where the managed node is a cluster of one beside a
    /// larger cluster: join that cluster, under the startup lock, when the node holds
    /// nothing ([`split`]; default true). A node holding data, and a cluster of several,
    /// are reported and never moved.
    pub heal_splits: bool,
    /// When the node may form a new cluster ([`gate`]; default: whenever the plan says
    /// so). `autocluster agent` uses [`FormGate::safe`].
    pub form_gate: FormGate,
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
            heal_splits: true,
            form_gate: FormGate::default(),
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
    /// The managed node lists the seed as a member, and the seed does not list it: the
    /// cluster forgot it (cleanup of a node down longer than its window, or
    /// `rabbitmqctl forget_cluster_node`) while it was away. Nothing is reset; not retried.
    #[error(
        "{node} was removed from {seed}'s cluster while it was away (cleanup, or forget_cluster_node), and still holds that cluster's data: nothing was reset. To rejoin, reset it, which discards its data (rabbitmqctl stop_app; rabbitmqctl reset; rabbitmqctl start_app, or delete its data directory), then start its agent again; to keep the data, export its definitions and messages first"
    )]
    Forgotten {
        /// The managed node.
        node: NodeName,
        /// The seed that no longer lists it.
        seed: NodeName,
    },
    /// The plan would form a new cluster, and the [`FormGate`] does not allow it yet:
    /// too few contact points answered, they are not stable yet, one runs in a cluster,
    /// or forming is switched off. Retried within [`FormationConfig::max_attempts`].
    #[error("{node}: not forming a new cluster: {reason}")]
    FormRefused {
        /// The managed node.
        node: NodeName,
        /// Why.
        reason: String,
    },
    /// The managed node is a member of a Khepri cluster whose majority is not running:
    /// it can neither form a new cluster nor be a seed, and is never reset. Retried within
    /// [`FormationConfig::max_attempts`]; it clears once enough members are back.
    #[error(
        "{node}: majority lost: {running} of {members} members running; not forming a new cluster from it (the others must come back)"
    )]
    MajorityLost {
        /// The managed node.
        node: NodeName,
        /// Its running, non-partitioned members, itself included.
        running: usize,
        /// Its cluster's members.
        members: usize,
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
            | FormationError::MaybeAlive { .. }
            | FormationError::FormRefused { .. }
            | FormationError::MajorityLost { .. } => true,
            FormationError::DataAtRisk { .. }
            | FormationError::Forgotten { .. }
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
    /// new cluster) and what is left ([`Step::Finish`]) runs after the startup
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
    /// While watching: the managed node, a cluster of one beside a larger cluster,
    /// joined it, through this node ([`FormationConfig::heal_splits`]).
    SplitMended(NodeName),
    /// While watching: cleanup forgot a member.
    Forgot(NodeName),
    /// While watching: cleanup would forget a member (warn-only).
    WouldForget(NodeName),
    /// While watching: a cleanup round was skipped because the backend failed.
    CleanupSkipped(String),
    /// The node left the cluster.
    Left,
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
