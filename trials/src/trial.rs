//! One trial: members, their agents started at one instant, the checks every trial
//! makes, and the scenarios that inject faults between them.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autocluster::backend::BackendError;
use autocluster::formation::{
    Agent, CleanupConfig, CleanupState, ClusterTarget, ErlangMesh, FormationConfig, FormationError,
    FormationEvent, Formed, NativeTarget, Outcome,
};
use autocluster::{Node, NodeName};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::erl;
use super::lab::{Kind, Lab, TrialBackend};
use super::procs::Etcd;
use super::report::TrialResult;
use super::victim::{KillPoint, Signal, Victim, run_victim};

/// Settings shared by every trial.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Nodes per trial.
    pub nodes: usize,
    /// Each agent starts up to this long after the common instant.
    pub jitter: Duration,
    /// The most an agent may take.
    pub deadline: Duration,
    /// etcd, when the backend is etcd.
    pub etcd_endpoint: Option<String>,
    /// Victims of erl trials on etcd run as child processes (else in a runtime thread).
    pub victim_process: bool,
    /// Share of connections the chaos proxy cuts.
    pub chaos_probability: f64,
    /// Registration TTL.
    pub node_ttl: Duration,
    /// Lock lease.
    pub lock_ttl: Duration,
}

/// The formation settings of every agent in a trial (and of child agents).
pub fn formation_config(node_ttl: Duration, lock_ttl: Duration) -> FormationConfig {
    FormationConfig {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        max_attempts: 30,
        node_ttl,
        lock_ttl,
        lock_wait: Duration::from_secs(60),
        seed_wait: Duration::from_secs(60),
        cleanup: CleanupConfig {
            enabled: true,
            warn_only: false,
            interval: Duration::ZERO,
            unreachable_rounds: 2,
            max_share: 0.34,
            // The agent's default: the node TTL.
            unlisted_for: None,
        },
        watch_interval: Duration::from_millis(250),
        ..FormationConfig::default()
    }
}

/// How an agent's run ended.
#[derive(Debug)]
pub enum RunState {
    /// Not started.
    NotRun,
    /// Formed (joined, formed new, or already a member).
    Formed,
    /// Reported an error (or ran standalone).
    Failed(String),
    /// Did not finish within its deadline.
    Hung,
    /// Runs elsewhere and was (or will be) killed.
    Victim,
}

/// A member of a trial.
pub struct Member {
    /// Its node name.
    pub name: NodeName,
    /// Its index in the erl pool.
    pub erl: Option<usize>,
    /// Its native target (in-process native members).
    pub native: Option<NativeTarget>,
    /// The agent's own node (erl: its probe node; native: the member's node).
    pub node: Option<Node>,
    /// Its in-process agent.
    pub agent: Option<Agent>,
    /// What formation returned.
    pub formed: Option<Formed>,
    /// How its run ended.
    pub state: RunState,
    /// Cleanup counts across watch rounds.
    pub cleanup: CleanupState,
    /// Whether its node is alive.
    pub node_alive: bool,
}

type AgentRun = JoinHandle<(usize, Result<Result<Formed, FormationError>, ()>, Duration)>;

/// Agents started together, to be awaited.
pub struct Running {
    start: Instant,
    handles: Vec<AgentRun>,
}

/// One trial.
pub struct Trial<'a> {
    /// The lab.
    pub lab: &'a mut Lab,
    /// The runner's etcd, when it started one.
    pub etcd: Option<&'a mut Etcd>,
    /// This trial's backend.
    pub backend: TrialBackend,
    /// Agents' settings.
    pub cfg: FormationConfig,
    /// This trial's randomness.
    pub rng: StdRng,
    /// What it found.
    pub r: TrialResult,
    /// Its members.
    pub members: Vec<Member>,
    events: Arc<Mutex<Vec<(NodeName, FormationEvent)>>>,
    /// Shared settings.
    pub settings: &'a Settings,
    tag: String,
    victims: Vec<Victim>,
}

/// A short kind for an agent error.
pub fn error_kind(e: &FormationError) -> String {
    match e {
        FormationError::Backend { step, source } => {
            let what = match source {
                BackendError::Unavailable { .. } => "unavailable",
                BackendError::Timeout { .. } => "timeout",
                BackendError::LockTimeout { .. } => "lock-timeout",
                BackendError::LockLost { .. } => "lock-lost",
                BackendError::InvalidResponse { .. } => "invalid-response",
                BackendError::Rejected { .. } => "rejected",
                BackendError::Unauthorized { .. } => "unauthorized",
                _ => "other",
            };
            format!("backend {what} ({step})")
        }
        FormationError::Rpc { step, .. } => format!("rpc ({step})"),
        FormationError::Unexpected { step, .. } => format!("unexpected ({step})"),
        FormationError::DataAtRisk { .. } => "data-at-risk".into(),
        FormationError::JoinNotVerified { .. } => "join-not-verified".into(),
        FormationError::SeedUnavailable { .. } => "seed-unavailable".into(),
        FormationError::NoSeed { .. } => "no-seed".into(),
        FormationError::Config(_) => "config".into(),
        FormationError::MaybeAlive { .. } => "maybe-alive".into(),
        _ => "other".into(),
    }
}

impl<'a> Trial<'a> {
    /// A trial of `result.nodes` members.
    pub fn new(
        lab: &'a mut Lab,
        etcd: Option<&'a mut Etcd>,
        settings: &'a Settings,
        result: TrialResult,
    ) -> Trial<'a> {
        let tag = format!(
            "{}{}",
            result
                .scenario
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(6)
                .collect::<String>(),
            result.index
        );
        let cluster = format!(
            "trial_{}_{}_{}",
            std::process::id(),
            result.scenario,
            result.index
        );
        let backend = TrialBackend::new(
            settings.etcd_endpoint.as_deref(),
            &cluster,
            settings.node_ttl,
            settings.lock_ttl,
        );
        Trial {
            lab,
            etcd,
            backend,
            cfg: formation_config(settings.node_ttl, settings.lock_ttl),
            rng: StdRng::seed_from_u64(result.seed),
            r: result,
            members: Vec::new(),
            events: Arc::new(Mutex::new(Vec::new())),
            settings,
            tag,
            victims: Vec::new(),
        }
    }

    /// Makes `n` members (erl: the pool's nodes, reset; native: names only, nodes come
    /// with their agents).
    pub async fn setup(&mut self, n: usize) -> Result<(), String> {
        match self.lab.kind {
            Kind::Erl => {
                let pool = self.lab.pool.as_mut().ok_or("no erl pool")?;
                pool.ready(n).await?;
                for (i, name) in pool.names().into_iter().enumerate() {
                    self.members.push(Member::new(name, Some(i)));
                }
            }
            Kind::Native => {
                for i in 0..n {
                    let name: NodeName = format!(
                        "r{i:03}_{}_{}@{}",
                        std::process::id(),
                        self.tag,
                        self.lab.host
                    )
                    .parse()
                    .map_err(|e| format!("{e}"))?;
                    self.members.push(Member::new(name, None));
                }
            }
        }
        Ok(())
    }

    /// The names of members whose node is alive and whose agent formed.
    pub fn live(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| {
                self.members[i].node_alive && matches!(self.members[i].state, RunState::Formed)
            })
            .collect()
    }

    /// Creates member `i`'s in-process agent (and its node).
    async fn make_agent(&mut self, i: usize) -> Result<(), String> {
        let name = self.members[i].name.clone();
        let target: Arc<dyn ClusterTarget> = match self.lab.kind {
            Kind::Erl => {
                let probe = self.lab.client_node(&format!("a{i}_{}", self.tag)).await?;
                self.members[i].node = Some(probe.clone());
                Arc::new(ErlangMesh::new(probe, name.clone()))
            }
            Kind::Native => {
                let node = self.lab.native_node(&name).await?;
                let target = NativeTarget::new(node.clone())
                    .map_err(|e| e.to_string())?
                    .with_timeout(Duration::from_secs(5));
                self.members[i].node = Some(node);
                self.members[i].native = Some(target.clone());
                Arc::new(target)
            }
        };
        let agent = Agent::new(self.backend.for_agent()?, target, self.cfg.clone());
        let mut rx = agent.events();
        let events = self.events.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => events
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((name.clone(), ev)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                }
            }
        });
        self.members[i].agent = Some(agent);
        Ok(())
    }

    /// Starts the agents of `members` at one instant (each within the jitter).
    pub async fn start(&mut self, members: &[usize]) -> Result<Running, String> {
        for &i in members {
            self.make_agent(i).await?;
        }
        let start = Instant::now() + Duration::from_millis(20);
        let jitter_ms = self.settings.jitter.as_millis() as u64;
        let deadline = self.settings.deadline;
        let mut handles = Vec::new();
        for &i in members {
            let agent = self.members[i].agent.clone().ok_or("no agent")?;
            let delay = Duration::from_millis(self.rng.random_range(0..=jitter_ms));
            handles.push(tokio::spawn(async move {
                tokio::time::sleep_until(start + delay).await;
                let result = tokio::time::timeout(deadline, agent.run())
                    .await
                    .map_err(|_| ());
                (i, result, start.elapsed())
            }));
        }
        Ok(Running { start, handles })
    }

    /// Waits for started agents; returns how long the slowest took from the start.
    pub async fn wait(&mut self, running: Running) -> Duration {
        let mut slowest = Duration::ZERO;
        for h in running.handles {
            let Ok((i, result, took)) = h.await else {
                continue;
            };
            slowest = slowest.max(took);
            let state = match result {
                Err(()) => {
                    self.r.hangs += 1;
                    RunState::Hung
                }
                Ok(Ok(formed)) => match &formed.outcome {
                    Outcome::Standalone { error } => {
                        *self.r.errors.entry("standalone".into()).or_default() += 1;
                        RunState::Failed(error.clone())
                    }
                    _ => {
                        self.members[i].formed = Some(formed);
                        RunState::Formed
                    }
                },
                Ok(Err(e)) => {
                    *self.r.errors.entry(error_kind(&e)).or_default() += 1;
                    RunState::Failed(e.to_string())
                }
            };
            if let RunState::Failed(error) = &state {
                let note = format!("{}: {error}", self.members[i].name);
                self.note(note);
            }
            self.members[i].state = state;
        }
        let _ = running.start;
        slowest
    }

    /// Starts `members`' agents and waits for them; records the formation time.
    pub async fn form(&mut self, members: &[usize]) -> Result<(), String> {
        let running = self.start(members).await?;
        let took = self.wait(running).await;
        self.r.formation_ms = self.r.formation_ms.max(took.as_millis() as u64);
        Ok(())
    }

    /// Starts member `i`'s agent as a victim stopping at `point`.
    pub async fn spawn_victim(&mut self, i: usize, point: KillPoint) -> Result<usize, String> {
        let name = self.members[i].name.clone();
        self.members[i].state = RunState::Victim;
        let cfg = self.cfg.clone();
        let use_process = self.settings.victim_process
            && self.lab.kind == Kind::Erl
            && matches!(self.backend, TrialBackend::Etcd(_));
        let victim = if use_process {
            let TrialBackend::Etcd(c) = &self.backend else {
                unreachable!()
            };
            let args = vec![
                "--child-agent".to_owned(),
                "--node".into(),
                name.to_string(),
                "--host".into(),
                self.lab.host.clone(),
                "--epmd-port".into(),
                self.lab.epmd_port.to_string(),
                "--ticktime-ms".into(),
                self.lab.ticktime.as_millis().to_string(),
                "--etcd-endpoint".into(),
                c.endpoints[0].clone(),
                "--cluster".into(),
                c.cluster_name.clone(),
                "--node-ttl-ms".into(),
                self.settings.node_ttl.as_millis().to_string(),
                "--lock-ttl-ms".into(),
                self.settings.lock_ttl.as_millis().to_string(),
                "--kill-point".into(),
                point.as_str().into(),
            ];
            // The cookie goes by environment, not on the command line.
            // SAFETY-free: set before spawning; the child inherits it.
            Victim::process_with_env(args, &[("TRIALS_COOKIE", self.lab.cookie_text.as_str())])?
        } else {
            let backend = self.backend.clone();
            let kind = self.lab.kind;
            let cookie = self.lab.cookie.clone();
            let epmd_port = self.lab.epmd_port;
            let ticktime = self.lab.ticktime;
            let host = self.lab.host.clone();
            let tag = self.tag.clone();
            Victim::thread(move |signal: Signal| async move {
                let setup = async {
                    let backend = backend.for_agent()?;
                    let target: Arc<dyn ClusterTarget> = match kind {
                        Kind::Erl => {
                            let probe = Node::builder(
                                format!("victim_{}_{tag}@{host}", std::process::id())
                                    .parse()
                                    .map_err(|e| format!("{e}"))?,
                                cookie,
                            )
                            .epmd_port(epmd_port)
                            .net_ticktime(ticktime)
                            .start()
                            .await
                            .map_err(|e| e.to_string())?;
                            Arc::new(ErlangMesh::new(probe, name))
                        }
                        Kind::Native => {
                            let node = Node::builder(name, cookie)
                                .epmd_port(epmd_port)
                                .net_ticktime(ticktime)
                                .listen(([127, 0, 0, 1], 0).into())
                                .start()
                                .await
                                .map_err(|e| e.to_string())?;
                            Arc::new(
                                NativeTarget::new(node)
                                    .map_err(|e| e.to_string())?
                                    .with_timeout(Duration::from_secs(5)),
                            )
                        }
                    };
                    Ok::<_, String>((backend, target))
                };
                match setup.await {
                    Ok((backend, target)) => run_victim(backend, target, cfg, point, signal).await,
                    Err(e) => signal.send(&format!("error {e}")),
                }
            })?
        };
        self.victims.push(victim);
        Ok(self.victims.len() - 1)
    }

    /// Waits for victim `v`'s hook.
    pub async fn victim_hook(&mut self, v: usize, prefixes: &[&str]) -> Result<String, String> {
        let within = self.settings.deadline;
        self.victims[v].wait_hook(prefixes, within).await
    }

    /// Kills victim `v`'s agent (and with it a native victim's node).
    pub async fn kill_victim(&mut self, v: usize, member: usize) {
        self.victims[v].kill().await;
        if self.lab.kind == Kind::Native {
            self.members[member].node_alive = false;
        }
    }

    /// Kills member `i`'s node (erl: SIGKILL; native: the node stops). Its agent's
    /// registration, if it formed, is abandoned (left to expire, as after a crash).
    pub async fn kill_node(&mut self, i: usize) {
        let m = &mut self.members[i];
        m.node_alive = false;
        if let Some(formed) = m.formed.take()
            && let Some(reg) = formed.registration
        {
            reg.abandon();
        }
        m.agent = None;
        if let Some(p) = m.erl
            && let Some(pool) = self.lab.pool.as_mut()
        {
            pool.nodes[p].kill();
        }
        if let Some(node) = m.node.take()
            && self.lab.kind == Kind::Native
        {
            node.shutdown().await;
        }
        m.native = None;
    }

    /// Member `i`'s view of its cluster, restricted to `among`.
    async fn view(
        &mut self,
        i: usize,
        among: &BTreeSet<NodeName>,
    ) -> Result<Vec<NodeName>, String> {
        let name = self.members[i].name.clone();
        let full = match self.lab.kind {
            Kind::Erl => {
                let pool = self.lab.pool.as_ref().ok_or("no pool")?;
                erl::view(&pool.checker, &name).await?
            }
            Kind::Native => {
                let t = self.members[i].native.clone().ok_or("no native target")?;
                let m = t.membership().await.map_err(|e| e.to_string())?;
                if let Some(seed) = t.seed()
                    && !t.local_node().is_connected(&seed)
                {
                    return Err(format!("{name} is not connected to its seed {seed}"));
                }
                m.running_members
            }
        };
        Ok(full.into_iter().filter(|n| among.contains(n)).collect())
    }

    /// Counts distinct views among the live members. Returns whether they form one
    /// complete cluster.
    pub async fn check_cluster(&mut self) -> (bool, usize, Vec<String>) {
        let live = self.live();
        let names: BTreeSet<NodeName> =
            live.iter().map(|&i| self.members[i].name.clone()).collect();
        let mut views: Vec<Vec<NodeName>> = Vec::new();
        let mut problems = Vec::new();
        for &i in &live {
            match self.view(i, &names).await {
                Ok(v) => {
                    if !views.contains(&v) {
                        views.push(v);
                    }
                }
                Err(e) => problems.push(e),
            }
        }
        let complete = views.len() == 1 && views[0].len() == names.len();
        let shown: Vec<String> = views
            .iter()
            .map(|v| {
                v.iter()
                    .map(|n| n.alive().split('_').next().unwrap_or("?"))
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect();
        problems.extend(shown.into_iter().map(|v| format!("view {v}")));
        (
            complete && live.len() == names.len(),
            views.len().max(usize::from(!live.is_empty())),
            problems,
        )
    }

    /// The every-trial cluster check: records clusters, split and formed. The live
    /// members are checked as the agents return; when they are not one cluster yet, each
    /// live agent runs one watch round first, as [`Agent::watch`] does at once after
    /// formation (it reconnects members a join could not reach), and the trial records
    /// that it needed it.
    pub async fn verify(&mut self) {
        let (mut one, mut clusters, mut problems) = self.check_cluster().await;
        if !one && !self.live().is_empty() {
            self.r.incomplete_at_return = true;
            self.note(format!(
                "not one cluster as the agents returned ({})",
                problems.join(" | ")
            ));
            self.watch_round().await;
            (one, clusters, problems) = self.check_cluster().await;
        }
        self.r.clusters = clusters;
        self.r.split = !one && !self.live().is_empty();
        let all_ran = self
            .members
            .iter()
            .all(|m| matches!(m.state, RunState::Formed | RunState::Victim) || !m.node_alive);
        self.r.formed = one && all_ran;
        if self.r.split {
            self.r
                .notes
                .push(format!("views: {}", problems.join(" | ")));
        }
    }

    /// Runs `rounds` watch rounds (cleanup on, not warn-only) on every live in-process
    /// agent, all agents at once each round. Stops early, after at least `min` rounds,
    /// once `until` holds.
    pub async fn watch(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.watch_round().await;
        }
    }

    /// One watch round on every live agent, concurrently.
    pub async fn watch_round(&mut self) {
        let mut tasks = Vec::new();
        for i in self.live() {
            let Some(agent) = self.members[i].agent.clone() else {
                continue;
            };
            let mut state = std::mem::take(&mut self.members[i].cleanup);
            tasks.push(tokio::spawn(async move {
                agent.watch_round(&mut state, true).await;
                (i, state)
            }));
        }
        for t in tasks {
            if let Ok((i, state)) = t.await {
                self.members[i].cleanup = state;
            }
        }
    }

    /// Watches until the live members form one cluster, up to `max` rounds; returns the
    /// rounds it took, or `None`.
    pub async fn watch_until_one(&mut self, max: usize, pause: Duration) -> Option<usize> {
        for round in 0..=max {
            if self.check_cluster().await.0 {
                return Some(round);
            }
            if round < max {
                self.watch_round().await;
                tokio::time::sleep(pause).await;
            }
        }
        None
    }

    /// Events seen so far.
    pub fn events(&self) -> Vec<(NodeName, FormationEvent)> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether `node` is alive (a member's, or an erl node whose agent died).
    fn node_is_alive(&mut self, node: &NodeName) -> bool {
        if let Some(m) = self.members.iter().find(|m| &m.name == node) {
            if !m.node_alive {
                return false;
            }
            if let (Some(p), Some(pool)) = (m.erl, self.lab.pool.as_mut()) {
                return !pool.nodes[p].is_dead();
            }
            return true;
        }
        false
    }

    /// The every-trial end: counts live members forgotten, checks the lock is free within
    /// its lease, and tears down.
    pub async fn finish(&mut self) {
        // A scenario that failed half-way must not leave the backend down.
        if let TrialBackend::Memory(m) = &self.backend {
            m.set_available(true);
        }
        if let Some(e) = self.etcd.as_deref_mut()
            && !e.is_running()
            && let Err(err) = e.restart().await
        {
            self.r
                .failures
                .push(format!("harness: cannot restart etcd: {err}"));
        }
        for (by, ev) in self.events() {
            if let FormationEvent::Forgot(n) = ev
                && self.node_is_alive(&n)
            {
                self.r.forgotten += 1;
                self.r.failures.push(format!("forgot live {n} (by {by})"));
            }
        }
        let bound = self.settings.lock_ttl + Duration::from_secs(2);
        if !self.backend.wait_lock_free(bound).await {
            self.r.leaked_lock = true;
        }
        self.teardown().await;
    }

    async fn teardown(&mut self) {
        for v in &mut self.victims {
            v.kill().await;
        }
        self.victims.clear();
        for m in &mut self.members {
            if let Some(formed) = m.formed.take()
                && let Some(reg) = formed.registration
            {
                let _ = tokio::time::timeout(Duration::from_secs(3), reg.deregister()).await;
            }
            m.agent = None;
            m.native = None;
            if let Some(node) = m.node.take() {
                node.shutdown().await;
            }
        }
        if let Some(chaos) = &self.lab.chaos {
            chaos.state.set(false, 0.0, 0);
        }
        if let Some(ns) = self.lab.netns.as_mut() {
            let _ = ns.heal().await;
        }
    }

    /// A random index in `0..n`.
    pub fn pick(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }

    /// A random duration in `[lo, hi]`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let lo_ms = lo.as_millis() as u64;
        let hi_ms = hi.as_millis() as u64;
        Duration::from_millis(self.rng.random_range(lo_ms..=hi_ms.max(lo_ms)))
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.rng.random_range(0..2) == 0
    }

    /// Adds a note.
    pub fn note(&mut self, s: impl Into<String>) {
        self.r.notes.push(s.into());
    }

    /// Adds a failed check.
    pub fn fail(&mut self, s: impl Into<String>) {
        self.r.failures.push(s.into());
    }

    /// Waits until `node` is no longer registered, up to `within`.
    pub async fn wait_deregistered(&mut self, node: &NodeName, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(nodes) = self.backend.registered().await
                && !nodes.contains(node)
            {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Member {
    fn new(name: NodeName, erl: Option<usize>) -> Member {
        Member {
            name,
            erl,
            native: None,
            node: None,
            agent: None,
            formed: None,
            state: RunState::NotRun,
            cleanup: CleanupState::new(),
            node_alive: true,
        }
    }
}
