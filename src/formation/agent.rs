//! The formation agent: takes the lock, probes, asks the plan, has the target carry out
//! its steps, registers, and watches.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::NodeName;
use crate::backend::{
    Backend, BackendError, LockGuard, LockRequest, RegisteredNode, Registration, RegistrationHandle,
};

use super::cleanup::{self, CleanupAction, CleanupState};
use super::plan::{self, Decision, Facts};
use super::seed::{SeedChoice, SeedOrder, SeedPolicy, Selector};
use super::split::{self, Survey, Verdict};
use super::target::{ClusterTarget, Inspection, Membership, Probe, Stage, Step};
use super::{
    FailurePolicy, FormationConfig, FormationError, FormationEvent, Formed, Metrics,
    MetricsSnapshot, Outcome,
};

/// How often a booting managed node is inspected again while its boot is waited for.
const BOOT_RECHECK: Duration = Duration::from_secs(3);

/// A form or join whose last part ([`Step::Finish`]) is still to run.
#[derive(Debug)]
struct Pending {
    /// `None` when forming.
    seed: Option<NodeName>,
    /// Register the node only once the finished join is verified ([`Stage::Decided`]).
    register_after: bool,
}

/// Where the plan left an attempt.
enum Planned {
    /// The node is settled (what is left, if anything, runs after the lock).
    Settled(Outcome, Option<Pending>),
    /// Without a lock: waiting for the deterministic seed.
    Wait(NodeName),
}

/// The seed policy of `backend` for `local`: `order`, and the backend's deterministic
/// seed when it has no startup lock.
pub(crate) async fn seed_policy(
    backend: &dyn Backend,
    order: SeedOrder,
    local: &NodeName,
) -> Result<SeedPolicy, BackendError> {
    let deterministic = if backend.supports_lock() {
        None
    } else {
        backend.deterministic_seed(local).await?
    };
    Ok(SeedPolicy::new(order, deterministic))
}

/// The formation agent of one managed node. See the [module documentation](super).
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
    /// The contact points seen, for the form gate's stable margin.
    contacts: std::sync::Mutex<super::gate::History>,
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
                contacts: std::sync::Mutex::new(super::gate::History::new(
                    std::time::Instant::now(),
                )),
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
            let mut candidate = None;
            let error = loop {
                attempt += 1;
                let result = async {
                    if candidate.is_none() {
                        candidate = self.register_candidate().await?;
                    }
                    self.attempt().await
                };
                let result = result.instrument(tracing::info_span!("attempt", attempt)).await;
                let retry = matches!(&result, Err(e) if e.is_retryable() && attempt < cfg.max_attempts.max(1));
                if !retry && let Some(c) = candidate.take() {
                    // The run ends: it is a contact point no more.
                    let _ = tokio::time::timeout(Duration::from_secs(2), c.deregister()).await;
                }
                match result {
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

    async fn list(&self) -> Result<Vec<RegisteredNode>, FormationError> {
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

    /// The seed policy: the configured order, and the backend's deterministic seed when
    /// it has no lock.
    async fn seed_policy(&self) -> Result<SeedPolicy, FormationError> {
        seed_policy(
            self.inner.backend.as_ref(),
            self.inner.config.seed_order,
            self.node(),
        )
        .await
        .map_err(|source| FormationError::Backend {
            step: "asking for the deterministic seed",
            source,
        })
    }

    /// Probes the registered nodes the seed selector names and returns its choice.
    async fn choose_seed(
        &self,
        policy: &SeedPolicy,
        listed: &[RegisteredNode],
    ) -> Result<SeedChoice, FormationError> {
        let mut selector = Selector::new(policy.clone(), self.node(), listed, None);
        while let Some(node) = selector.next_probe() {
            selector.record(self.probe(&node).await?);
        }
        Ok(selector.choice())
    }

    /// Steps 2-6 under the startup lock; returns the part of a join left for after the
    /// lock's release, if any.
    async fn locked_steps(
        &self,
    ) -> Result<(Outcome, Option<RegistrationHandle>, Option<Pending>), FormationError> {
        let listed = self.list().await?;
        let choice = self
            .choose_seed(
                &SeedPolicy::new(self.inner.config.seed_order, None),
                &listed,
            )
            .await?;
        let (outcome, pending) = match self
            .decide(&choice, &listed, None, self.inner.config.allow_reset)
            .await?
        {
            Planned::Wait(seed) => {
                // Only a deterministic seed is waited for; there is none with a lock.
                return Err(FormationError::SeedUnavailable {
                    seed,
                    waited: Duration::ZERO,
                });
            }
            Planned::Settled(outcome, pending) => (outcome, pending),
        };
        let registration = if pending.as_ref().is_some_and(|p| p.register_after) {
            None
        } else {
            self.register().await?
        };
        Ok((outcome, registration, pending))
    }

    /// Inspects the managed node and runs the plan's decisions until one settles it: at
    /// most one inventory, one start of a stopped application, and one membership step.
    async fn decide(
        &self,
        choice: &SeedChoice,
        listed: &[RegisteredNode],
        deterministic: Option<&NodeName>,
        allow_reset: bool,
    ) -> Result<Planned, FormationError> {
        let target = &self.inner.target;
        let registered: Vec<NodeName> = listed.iter().map(|r| r.node.clone()).collect();
        let mut inspection = target.inspect().await?;
        let was_booting = inspection.membership.booting;
        let mut resumed = false;
        // Inventory, start, re-inspection, inventory again, step: five rounds at most.
        let plan_for = |inspection: &Inspection, resumed: bool| {
            plan::plan(
                &Facts::new(self.node(), choice, inspection)
                    .registered(&registered)
                    .deterministic(deterministic)
                    .allow_reset(allow_reset)
                    .resumed(resumed)
                    .was_booting(was_booting),
            )
        };
        for _ in 0..5 {
            let decision = plan_for(&inspection, resumed);
            self.publish_seed(&decision, listed.len());
            match decision? {
                Decision::Inventory => inspection.data = Some(target.inventory().await?),
                Decision::Prepare(step) => {
                    let start = target
                        .execute(&step)
                        .instrument(tracing::info_span!("resume"));
                    if inspection.membership.booting {
                        tracing::info!(%step, "the managed node is booting: waiting for its boot before deciding");
                        // What the booting node knows of its members grows as its boot
                        // goes (a Khepri member's, once its store is up): one the seed
                        // no longer lists waits for a leader that never comes.
                        let mut start = std::pin::pin!(start);
                        let mut recheck = tokio::time::interval(BOOT_RECHECK);
                        recheck.tick().await;
                        loop {
                            tokio::select! {
                                done = &mut start => {
                                    done?;
                                    break;
                                }
                                _ = recheck.tick() => {
                                    if let Ok(now) = target.inspect().await
                                        && let Err(e @ FormationError::Forgotten { .. }) =
                                            plan_for(&now, resumed)
                                    {
                                        return Err(e);
                                    }
                                }
                            }
                        }
                    } else {
                        tracing::warn!(%step, members = ?inspection.membership.members, "the managed node's application is not running (an interrupted join?): starting it before deciding");
                        start.await?;
                    }
                    inspection = target.inspect().await?;
                    resumed = true;
                }
                Decision::Done(outcome) => {
                    if matches!(outcome, Outcome::Joined { .. }) {
                        Metrics::bump(&self.inner.metrics.joins);
                    }
                    return Ok(Planned::Settled(outcome, None));
                }
                Decision::WaitForSeed(seed) => return Ok(Planned::Wait(seed)),
                Decision::Execute(step) => {
                    if matches!(step, Step::Form | Step::BootJoin { seed: None }) {
                        self.gate_form().await?;
                    }
                    if let Step::Join { seed, reset: true } = &step {
                        tracing::warn!(%seed, data = ?inspection.data, "resetting the node to join (allowed by configuration)");
                    }
                    let seed = match &step {
                        Step::Join { seed, .. } => Some(seed.clone()),
                        Step::BootJoin { seed } => seed.clone(),
                        _ => None,
                    };
                    let stage = target
                        .execute(&step)
                        .instrument(tracing::info_span!("step", %step))
                        .await?;
                    let outcome = match &seed {
                        Some(seed) => Outcome::Joined { seed: seed.clone() },
                        None => Outcome::FormedNew,
                    };
                    if stage == Stage::Complete {
                        self.verify(seed.as_ref()).await?;
                    }
                    return Ok(Planned::Settled(
                        outcome,
                        self.decided(stage, seed.as_ref()),
                    ));
                }
            }
        }
        Err(FormationError::unexpected(
            "planning",
            self.node(),
            "the node did not settle after being started and inspected again",
        ))
    }

    /// Publishes the seed a decision acts on ([`FormationEvent::SeedChosen`]): the node
    /// joined, found a member with, or refused to join (data at risk, unsettled), or
    /// `None` when forming. Decisions that settle nothing yet, and a refusal to form
    /// beside nodes that may be alive, publish nothing.
    fn publish_seed(&self, decision: &Result<Decision, FormationError>, registered: usize) {
        let seed = match decision {
            Ok(Decision::Execute(Step::Join { seed, .. })) => Some(seed.clone()),
            Ok(Decision::Execute(Step::BootJoin { seed })) => seed.clone(),
            Ok(Decision::Execute(_)) => None,
            Ok(Decision::Done(Outcome::AlreadyMember { seed } | Outcome::Joined { seed }))
            | Err(FormationError::DataAtRisk { seed, .. }) => Some(seed.clone()),
            _ => return,
        };
        Metrics::bump(&self.inner.metrics.seed_choices);
        tracing::info!(seed = ?seed.as_ref().map(NodeName::as_str), registered, "seed chosen");
        self.emit(FormationEvent::SeedChosen(seed));
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

    /// The last part of a form or join, after the startup lock (if any) is released.
    async fn finish(&self, pending: Pending) -> Result<(), FormationError> {
        let seed = pending.seed;
        self.inner
            .target
            .execute(&Step::Finish { seed: seed.clone() })
            .instrument(tracing::info_span!("finish", seed = ?seed.as_ref().map(NodeName::as_str)))
            .await?;
        self.verify(seed.as_ref()).await
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

    /// Formation without a lock: only the deterministic seed forms a cluster; every
    /// other node waits for it (or joins a cluster formed while it was away).
    async fn lockless_steps(&self) -> Result<Outcome, FormationError> {
        let policy = self.seed_policy().await?;
        let Some(det) = policy.deterministic.clone() else {
            return Err(FormationError::NoSeed {
                backend: self.inner.backend.name(),
            });
        };
        let started = Instant::now();
        let mut delay = self.inner.config.backoff_initial;
        loop {
            let listed = self.list().await?;
            let choice = self.choose_seed(&policy, &listed).await?;
            match self
                .decide(&choice, &listed, Some(&det), self.inner.config.allow_reset)
                .await?
            {
                Planned::Settled(outcome, pending) => {
                    if let Some(pending) = pending {
                        self.finish(pending).await?;
                    }
                    return Ok(outcome);
                }
                Planned::Wait(seed) => {
                    if started.elapsed() >= self.inner.config.seed_wait {
                        return Err(FormationError::SeedUnavailable {
                            seed,
                            waited: started.elapsed(),
                        });
                    }
                    tracing::info!(%seed, "waiting for the seed to come up");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.inner.config.backoff_max);
                }
            }
        }
    }

    /// Checks whether the managed node is properly clustered, with the seed this agent's
    /// configuration and backend choose ([`health::check`](crate::health::check)).
    pub async fn health(&self) -> crate::health::HealthReport {
        let options =
            crate::health::CheckOptions::default().seed_order(self.inner.config.seed_order);
        crate::health::check(
            self.inner.target.as_ref(),
            Some(self.inner.backend.as_ref()),
            &options,
        )
        .await
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
            let survey = self.survey(&membership, listed).await;
            for member in &survey.ours {
                match target.reconnect(member).await {
                    Ok(true) => {
                        tracing::info!(%member, "reconnected a registered member");
                        Metrics::bump(&self.inner.metrics.reconnects);
                        self.emit(FormationEvent::Reconnected(member.clone()));
                    }
                    Ok(false) => {
                        tracing::debug!(%member, "registered member still unreachable")
                    }
                    Err(e) => tracing::warn!(%member, error = %e, "reconnect failed"),
                }
            }
            let verdict = split::verdict(&me, &membership, &survey.groups);
            if verdict != Verdict::United {
                tracing::error!(
                    groups = ?survey.groups,
                    "split detected: registered nodes form separate clusters"
                );
                Metrics::bump(&self.inner.metrics.splits);
                self.emit(FormationEvent::SplitDetected(survey.groups));
            }
            if let Verdict::Rejoin { seed } = verdict {
                self.rejoin(seed).await;
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

    /// Probes the registered nodes outside the managed node's running members and sorts
    /// them ([`split::survey`]).
    async fn survey(&self, membership: &Membership, listed: &[RegisteredNode]) -> Survey {
        let me = self.node();
        let mut probes = Vec::new();
        for r in listed {
            if r.node == *me
                || membership.running_members.contains(&r.node)
                || probes.iter().any(|(n, _)| *n == r.node)
            {
                continue;
            }
            let probe = self.probe(&r.node).await.ok().filter(|p| p.live);
            probes.push((r.node.clone(), probe));
        }
        split::survey(me, membership, &probes)
    }

    /// Mends a split where the managed node is a cluster of one beside a larger cluster
    /// ([`Verdict::Rejoin`]), when the configuration allows it and the backend has a
    /// startup lock: under the lock, reads the facts again and joins that cluster if the
    /// node still is alone and holds nothing. Any failure is logged; the next round tries
    /// again.
    async fn rejoin(&self, seed: NodeName) {
        if !self.inner.config.heal_splits || !self.inner.backend.supports_lock() {
            tracing::warn!(%seed, "this node is a cluster of one beside a larger cluster: not joining it (heal_splits is off, or the backend has no startup lock)");
            return;
        }
        tracing::warn!(%seed, "this node is a cluster of one beside a larger cluster: joining it, if it holds nothing");
        match self
            .rejoin_steps()
            .instrument(tracing::info_span!("rejoin", %seed))
            .await
        {
            Ok(Some(seed)) => {
                tracing::warn!(%seed, "split mended: joined the cluster that formed beside this node");
                self.emit(FormationEvent::SplitMended(seed));
            }
            Ok(None) => tracing::info!("the split was gone when read again under the lock"),
            Err(e) => {
                tracing::error!(error = %e, "could not mend the split: this node stays apart")
            }
        }
    }

    /// [`rejoin`](Self::rejoin) under the lock; the seed joined, or `None` when the facts
    /// read again show no split this node should mend.
    async fn rejoin_steps(&self) -> Result<Option<NodeName>, FormationError> {
        let guard = self.take_lock().await?;
        let decided = async {
            let listed = self.list().await?;
            let membership = self.inner.target.membership().await?;
            let survey = self.survey(&membership, &listed).await;
            let Verdict::Rejoin { seed } = split::verdict(self.node(), &membership, &survey.groups)
            else {
                return Ok(None);
            };
            let choice = SeedChoice {
                seed: Some(seed.clone()),
                ..SeedChoice::default()
            };
            // Never a reset: a node holding data is an operator's to move.
            match self.decide(&choice, &listed, None, false).await? {
                Planned::Settled(_, pending) => Ok(Some((seed, pending))),
                Planned::Wait(_) => Ok(None),
            }
        }
        .await;
        self.release(guard).await;
        let Some((seed, pending)) = decided? else {
            return Ok(None);
        };
        if let Some(pending) = pending {
            self.finish(pending).await?;
        }
        Ok(Some(seed))
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
        self.inner.target.execute(&Step::Leave).await?;
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

mod contacts;

#[cfg(test)]
mod tests;
