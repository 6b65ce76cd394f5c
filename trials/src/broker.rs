//! Broker trials (`--rabbitmq`): three real RabbitMQ brokers of the peer environment
//! (`AUTOCLUSTER_PEERS`; `sid` runs RabbitMQ 4.3), each with an agent beside it, through a
//! real etcd. Every trial:
//!
//! 1. launches the three brokers and their agents at one instant, with the scenario's
//!    fault injected during formation;
//! 2. publishes persistent (`delivery_mode` 2), publisher-confirmed messages into a
//!    durable classic queue and a quorum queue declared on a member that is not the seed;
//! 3. injects a fault of the formed cluster's life, drawn from the trial's seed
//!    (`member-restart`, `graceful-restart`, `agents-again`, `etcd-restart`), during which
//!    agents run again beside brokers that hold data;
//! 4. checks: one cluster (every broker lists the three as members and as running), every
//!    message counted, no reset of any broker since the messages were published (no
//!    `DB: resetting node` line, debug logging on), no start of the `rabbit` application
//!    but the restarts the trial made, every agent run again an `AlreadyMember`, the
//!    startup lock free within its lease, no agent past its deadline.
//!
//! Formation faults (`--scenario`): `none`; `agent-killed` (an agent's runtime is dropped
//! at a random moment of its join or form, as a crash; a new agent is started beside the
//! broker); `broker-killed` (a broker's VM gets SIGKILL at a random moment of its agent's
//! join or form and is restarted with its data; its agent keeps running); `etcd-restart`
//! (etcd killed during formation and restarted 0.3-3 s later).
//!
//! Every agent that formed keeps watching ([`Agent::watch`], a round a second), as the
//! `autocluster agent` sidecar does: a split the watch mends is noted, and the cluster
//! must be one within 30 s of formation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use autocluster::backend::Backend;
use autocluster::backend::etcd::{EtcdBackend, EtcdConfig};
use autocluster::formation::{
    Agent, ClusterTarget, DataState, FormationConfig, FormationError, FormationEvent, Formed,
    Inspection, Membership, Outcome, Probe, RabbitMq, Stage, Step, WatchHandle,
};
use autocluster::{Cookie, Node, NodeName};
use autocluster_test_support::{Epmd, RabbitNode, RabbitOptions, unique_name};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use tokio::sync::mpsc;

use super::procs::{Etcd, etcd_keys};
use super::report::TrialResult;
use super::trial::error_kind;
use super::victim::{Signal, Victim};

/// The formation faults, in `--scenario all` order.
pub const SCENARIOS: &[&str] = &["none", "agent-killed", "broker-killed", "etcd-restart"];

/// The life faults a trial draws from.
const LIFE_FAULTS: &[&str] = &[
    "member-restart",
    "graceful-restart",
    "agents-again",
    "etcd-restart",
];

/// Brokers per trial.
pub const BROKERS: usize = 3;

const CLASSIC: &str = "trial-classic";
const QUORUM: &str = "trial-quorum";

/// Settings of every broker trial.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// The etcd every agent registers with.
    pub etcd_endpoint: String,
    /// Registration TTL.
    pub node_ttl: Duration,
    /// Lock lease.
    pub lock_ttl: Duration,
    /// The most an agent may take.
    pub deadline: Duration,
    /// Messages published into each of the two queues.
    pub messages: u32,
}

/// The formation settings of every broker agent.
fn config(s: &BrokerSettings) -> FormationConfig {
    FormationConfig {
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        max_attempts: 60,
        node_ttl: s.node_ttl,
        lock_ttl: s.lock_ttl,
        lock_wait: Duration::from_secs(90),
        seed_wait: Duration::from_secs(60),
        watch_interval: Duration::from_secs(1),
        ..FormationConfig::default()
    }
}

fn backend(s: &BrokerSettings, cluster: &str) -> Result<Arc<dyn Backend>, String> {
    Ok(Arc::new(
        EtcdBackend::new(etcd_config(s, cluster)).map_err(|e| e.to_string())?,
    ))
}

fn etcd_config(s: &BrokerSettings, cluster: &str) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![s.etcd_endpoint.clone()],
        cluster_name: cluster.to_owned(),
        node_ttl: s.node_ttl,
        lock_ttl: s.lock_ttl,
        lock_wait: Duration::from_secs(90),
        timeout: Duration::from_secs(2),
        ..EtcdConfig::default()
    }
}

/// A target that reports when its join or form begins, and then carries it out.
#[derive(Debug)]
struct Signalling {
    inner: RabbitMq,
    signal: Signal,
}

#[async_trait::async_trait]
impl ClusterTarget for Signalling {
    fn node(&self) -> &NodeName {
        self.inner.node()
    }
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn probe(&self, node: &NodeName) -> Result<Probe, FormationError> {
        self.inner.probe(node).await
    }
    async fn membership(&self) -> Result<Membership, FormationError> {
        self.inner.membership().await
    }
    async fn inspect(&self) -> Result<Inspection, FormationError> {
        self.inner.inspect().await
    }
    async fn inventory(&self) -> Result<DataState, FormationError> {
        self.inner.inventory().await
    }
    async fn execute(&self, step: &Step) -> Result<Stage, FormationError> {
        match step {
            Step::Form => self.signal.send("step form"),
            Step::Join { .. } => self.signal.send("step join"),
            Step::BootJoin { .. } => self.signal.send("step boot-join"),
            _ => {}
        }
        self.inner.execute(step).await
    }
    async fn reconnect(&self, member: &NodeName) -> Result<bool, FormationError> {
        self.inner.reconnect(member).await
    }
    async fn forget(&self, member: &NodeName) -> Result<(), FormationError> {
        self.inner.forget(member).await
    }
}

/// An agent that formed, still watching.
struct Running {
    formed: Formed,
    /// Stops the watch when dropped.
    _watch: WatchHandle,
    events: tokio::sync::broadcast::Receiver<FormationEvent>,
}

impl Running {
    /// The seeds of the splits this agent mended since last asked.
    fn mended(&mut self) -> Vec<NodeName> {
        let mut seeds = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            if let FormationEvent::SplitMended(seed) = event {
                seeds.push(seed);
            }
        }
        seeds
    }
}

/// Runs an agent beside a broker that may still be booting: waits until the broker
/// answers, then runs it, all within `deadline`; an agent that formed keeps watching.
async fn run_agent(
    agent: Agent,
    deadline: Duration,
) -> Result<Result<Running, FormationError>, ()> {
    tokio::time::timeout(deadline, async move {
        while agent.target().membership().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let events = agent.events();
        let formed = agent.run().await?;
        let watch = agent.watch(&formed);
        Ok(Running {
            formed,
            _watch: watch,
            events,
        })
    })
    .await
    .map_err(|_| ())
}

type AgentRun = tokio::task::JoinHandle<Result<Result<Running, FormationError>, ()>>;

/// One broker trial.
struct BrokerTrial<'a> {
    s: &'a BrokerSettings,
    etcd: &'a mut Etcd,
    r: TrialResult,
    rng: StdRng,
    cluster: String,
    epmd: Epmd,
    probe: Node,
    brokers: Vec<RabbitNode>,
    names: Vec<NodeName>,
    formed: Vec<Option<Running>>,
    /// Brokers restarted by [`supervise`](Self::supervise) in this trial.
    halts: usize,
    /// Per broker, restarts by [`supervise`](Self::supervise).
    restarted: Vec<usize>,
}

impl<'a> BrokerTrial<'a> {
    fn agent(&self, i: usize) -> Result<Agent, String> {
        Ok(Agent::new(
            backend(self.s, &self.cluster)?,
            Arc::new(RabbitMq::new(self.probe.clone(), self.names[i].clone())),
            config(self.s),
        ))
    }

    fn spawn_agent(&self, i: usize) -> Result<AgentRun, String> {
        let agent = self.agent(i)?;
        Ok(tokio::spawn(run_agent(agent, self.s.deadline)))
    }

    /// Collects agent runs: keeps what formed, counts errors and hangs. Returns the
    /// outcomes of those that formed.
    async fn collect(&mut self, runs: Vec<(usize, AgentRun)>) -> Vec<(usize, Outcome)> {
        while !runs.iter().all(|(_, run)| run.is_finished()) {
            self.supervise().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut outcomes = Vec::new();
        for (i, run) in runs {
            match run.await {
                Ok(Ok(Ok(running))) => {
                    outcomes.push((i, running.formed.outcome.clone()));
                    self.formed[i] = Some(running);
                }
                Ok(Ok(Err(e))) => {
                    *self.r.errors.entry(error_kind(&e)).or_default() += 1;
                    self.r
                        .failures
                        .push(format!("agent of {} failed: {e}", short(&self.names[i])));
                }
                Ok(Err(())) => {
                    self.r.hangs += 1;
                    self.r.failures.push(format!(
                        "agent of {} did not finish within {:?}",
                        short(&self.names[i]),
                        self.s.deadline
                    ));
                }
                Err(e) => self.r.failures.push(format!("agent task: {e}")),
            }
        }
        outcomes
    }

    /// Restarts a broker whose VM exited on its own (as a container runtime restarts a
    /// pod's broker), up to 3 times a trial; each restart is noted and counted.
    async fn supervise(&mut self) {
        for i in 0..BROKERS {
            if self.halts < 3 && self.brokers[i].exited() {
                self.halts += 1;
                self.restarted[i] += 1;
                self.r.notes.push(format!(
                    "{} halted by itself, restarted",
                    short(&self.names[i])
                ));
                self.brokers[i].restart().await;
            }
        }
    }

    /// Stops etcd `after` from now, for 0.3-3 s, and starts it again; noted (`label`
    /// first).
    async fn etcd_outage(&mut self, after: Duration, label: &str) -> Result<(), String> {
        tokio::time::sleep(after).await;
        self.etcd.stop().await;
        let down = Duration::from_millis(self.rng.random_range(300..=3000));
        tokio::time::sleep(down).await;
        self.etcd.restart().await?;
        self.r.notes.push(format!(
            "{label}etcd down {} ms from {} ms",
            down.as_millis(),
            after.as_millis()
        ));
        Ok(())
    }

    /// Phase 1: launch and form, with the scenario's fault.
    async fn form(&mut self, scenario: &str) -> Result<(), String> {
        let started = Instant::now();
        let mut runs = Vec::new();
        let victim = self.rng.random_range(0..BROKERS);
        let delay = Duration::from_millis(self.rng.random_range(0..=2500));
        let mut hook: Option<mpsc::UnboundedReceiver<String>> = None;
        let mut killed_agent: Option<Victim> = None;
        for i in 0..BROKERS {
            match scenario {
                "agent-killed" if i == victim => {
                    let (s, cluster, epmd_port) =
                        (self.s.clone(), self.cluster.clone(), self.epmd.port());
                    let (name, cookie) =
                        (self.names[i].clone(), self.brokers[i].cookie().to_owned());
                    let deadline = self.s.deadline;
                    killed_agent = Some(Victim::thread(move |signal| async move {
                        let Ok(probe) = probe_node(epmd_port, &cookie).await else {
                            signal.send("error probe node");
                            return;
                        };
                        let Ok(backend) = backend(&s, &cluster) else {
                            signal.send("error backend");
                            return;
                        };
                        let target = Arc::new(Signalling {
                            inner: RabbitMq::new(probe, name),
                            signal: signal.clone(),
                        });
                        let agent = Agent::new(backend, target, config(&s));
                        if let Ok(Ok(formed)) = run_agent(agent, deadline).await {
                            signal.send("finished");
                            let _keep = formed;
                            std::future::pending::<()>().await;
                        }
                    })?);
                }
                "broker-killed" if i == victim => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    hook = Some(rx);
                    let target = Arc::new(Signalling {
                        inner: RabbitMq::new(self.probe.clone(), self.names[i].clone()),
                        signal: Signal::Channel(tx),
                    });
                    let agent = Agent::new(backend(self.s, &self.cluster)?, target, config(self.s));
                    runs.push((i, tokio::spawn(run_agent(agent, self.s.deadline))));
                }
                _ => runs.push((i, self.spawn_agent(i)?)),
            }
        }
        let who = short(&self.names[victim]);
        match scenario {
            "agent-killed" => {
                let mut v = killed_agent.take().ok_or("no victim")?;
                match v.wait_hook(&["step", "finished"], self.s.deadline).await {
                    Ok(h) => {
                        tokio::time::sleep(delay).await;
                        v.kill().await;
                        self.r.notes.push(format!(
                            "agent of {who} killed {} ms into its {}",
                            delay.as_millis(),
                            h.trim_start_matches("step ")
                        ));
                    }
                    Err(e) => {
                        v.kill().await;
                        self.r.notes.push(format!("agent of {who} killed: {e}"));
                    }
                }
                runs.push((victim, self.spawn_agent(victim)?));
            }
            "broker-killed" => {
                let mut rx = hook.take().ok_or("no hook")?;
                match tokio::time::timeout(self.s.deadline, rx.recv()).await {
                    Ok(Some(step)) => {
                        tokio::time::sleep(delay).await;
                        self.brokers[victim].kill().await;
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        self.brokers[victim].restart().await;
                        self.r.notes.push(format!(
                            "broker {who} killed {} ms into its agent's {}, restarted",
                            delay.as_millis(),
                            step.trim_start_matches("step ")
                        ));
                    }
                    _ => self.r.notes.push(format!("agent of {who} took no step")),
                }
            }
            "etcd-restart" => self.etcd_outage(delay, "").await?,
            _ => {}
        }
        self.collect(runs).await;
        self.r.formation_ms = started.elapsed().as_millis() as u64;
        Ok(())
    }

    /// Whether the three brokers are one cluster, waiting up to `within` for it.
    async fn one_cluster(&mut self, within: Duration) -> bool {
        let mut all = self.names.clone();
        all.sort();
        let deadline = Instant::now() + within;
        loop {
            let mut views = Vec::new();
            for name in &self.names {
                let target = RabbitMq::new(self.probe.clone(), name.clone());
                views.push(match target.membership().await {
                    Ok(mut m) if m.running => {
                        m.members.sort();
                        m.running_members.sort();
                        Some((m.members, m.running_members))
                    }
                    _ => None,
                });
            }
            let one = views
                .iter()
                .all(|v| v.as_ref().is_some_and(|(m, r)| *m == all && *r == all));
            if one || Instant::now() > deadline {
                let mut distinct: Vec<_> = views.iter().flatten().map(|(_, r)| r.clone()).collect();
                distinct.sort();
                distinct.dedup();
                self.r.clusters = distinct.len();
                if !one {
                    self.r.failures.push(format!(
                        "not one cluster: {}",
                        views
                            .iter()
                            .zip(&self.names)
                            .map(|(v, n)| match v {
                                Some((m, r)) => format!(
                                    "{} members {:?} running {:?}",
                                    short(n),
                                    m.iter().map(short).collect::<Vec<_>>(),
                                    r.iter().map(short).collect::<Vec<_>>()
                                ),
                                None => format!("{} not running", short(n)),
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    ));
                    self.r.split = distinct.len() > 1;
                }
                return one;
            }
            self.supervise().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Phase 3: the life fault; returns the restarts it made, per broker.
    async fn life(&mut self, fault: &str) -> Result<Vec<usize>, String> {
        let mut restarts = vec![0; BROKERS];
        let j = self.rng.random_range(0..BROKERS);
        let mut again: Vec<usize> = (0..BROKERS).collect();
        match fault {
            "member-restart" | "graceful-restart" => {
                self.formed[j] = None;
                if fault == "member-restart" {
                    self.brokers[j].kill().await;
                } else {
                    self.brokers[j].stop().await;
                }
                self.brokers[j].restart().await;
                // Booted (restarted again by the supervisor if it halts), 120 s at most.
                let target = RabbitMq::new(self.probe.clone(), self.names[j].clone());
                let deadline = Instant::now() + Duration::from_secs(120);
                while !target.membership().await.is_ok_and(|m| m.running) {
                    if Instant::now() > deadline {
                        return Err(format!(
                            "{} did not boot again within 120 s",
                            short(&self.names[j])
                        ));
                    }
                    self.supervise().await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                restarts[j] = 1;
                again = vec![j];
                self.r
                    .notes
                    .push(format!("{fault} of {}", short(&self.names[j])));
            }
            _ => {
                for f in &mut self.formed {
                    *f = None;
                }
            }
        }
        let mut runs = Vec::new();
        for &i in &again {
            runs.push((i, self.spawn_agent(i)?));
        }
        if fault == "etcd-restart" {
            let at = Duration::from_millis(self.rng.random_range(0..=1000));
            self.etcd_outage(at, "life: ").await?;
        }
        for (i, outcome) in self.collect(runs).await {
            if !matches!(outcome, Outcome::AlreadyMember { .. }) {
                self.r.failures.push(format!(
                    "agent of {} run again beside its data: {outcome}, not a member already",
                    short(&self.names[i])
                ));
            }
        }
        Ok(restarts)
    }

    async fn run(&mut self, scenario: &str) -> Result<(), String> {
        self.form(scenario).await?;
        self.r.formed = self.one_cluster(Duration::from_secs(30)).await;
        for i in 0..BROKERS {
            let mended = self.formed[i].as_mut().map(Running::mended);
            for seed in mended.unwrap_or_default() {
                self.r.incomplete_at_return = true;
                self.r.notes.push(format!(
                    "split mended: {} joined {} while watching",
                    short(&self.names[i]),
                    short(&seed)
                ));
            }
        }
        if !self.r.formed {
            return Ok(());
        }
        // Phase 2: messages on a member that is not the seed.
        let mut sorted = self.names.clone();
        sorted.sort();
        let others: Vec<usize> = (0..BROKERS)
            .filter(|&i| self.names[i] != sorted[0])
            .collect();
        let m = others[self.rng.random_range(0..others.len())];
        let n = self.s.messages;
        self.brokers[m]
            .try_publish_confirmed(CLASSIC, "classic", n)
            .await?;
        self.brokers[m]
            .try_publish_confirmed(QUORUM, "quorum", n)
            .await?;
        let resets: Vec<usize> = self.brokers.iter().map(RabbitNode::resets).collect();
        let starts: Vec<usize> = self.brokers.iter().map(RabbitNode::starts).collect();
        let restarted = self.restarted.clone();
        // Phase 3.
        let fault = LIFE_FAULTS[self.rng.random_range(0..LIFE_FAULTS.len())];
        self.r.notes.push(format!(
            "messages on {}; life: {fault}",
            short(&self.names[m])
        ));
        let restarts = self.life(fault).await?;
        // Phase 4.
        if !self.one_cluster(Duration::from_secs(60)).await {
            return Ok(());
        }
        for (queue, what) in [(CLASSIC, "classic"), (QUORUM, "quorum")] {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut count = self.brokers[m].message_count(queue).await;
            while count != Some(u64::from(n)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(500)).await;
                count = self.brokers[m].message_count(queue).await;
            }
            match count {
                Some(c) if c == u64::from(n) => self.r.notes.push(format!("{what} {c}")),
                Some(c) => self.r.failures.push(format!(
                    "lost {} of {n} messages of the {what} queue",
                    u64::from(n).saturating_sub(c)
                )),
                None => self
                    .r
                    .failures
                    .push(format!("the {what} queue cannot be counted")),
            }
        }
        for i in 0..BROKERS {
            let who = short(&self.names[i]);
            let (r, s) = (self.brokers[i].resets(), self.brokers[i].starts());
            if r != resets[i] {
                self.r.failures.push(format!(
                    "{who} was reset {} time(s) holding data",
                    r - resets[i]
                ));
            }
            // A boot that halts before its `Starting RabbitMQ` line (in the store's
            // setup) logs no start: the supervisor's restarts count at most once each.
            let expected = restarts[i];
            let supervised = self.restarted[i] - restarted[i];
            if s < starts[i] + expected || s > starts[i] + expected + supervised {
                self.r.failures.push(format!(
                    "{who} started {} time(s) after the messages, {expected} expected \
                     (+{supervised} restarted by the supervisor)",
                    s - starts[i],
                ));
            }
        }
        Ok(())
    }

    async fn finish(&mut self) {
        if !self.etcd.is_running()
            && let Err(e) = self.etcd.restart().await
        {
            self.r
                .failures
                .push(format!("harness: cannot restart etcd: {e}"));
        }
        for f in &mut self.formed {
            if let Some(running) = f.take()
                && let Some(reg) = running.formed.registration
            {
                let _ = tokio::time::timeout(Duration::from_secs(3), reg.deregister()).await;
            }
        }
        let lock = etcd_config(self.s, &self.cluster).lock_name();
        let deadline = Instant::now() + self.s.lock_ttl + Duration::from_secs(2);
        loop {
            match etcd_keys(&self.s.etcd_endpoint, &format!("{lock}/")).await {
                Some(keys) if keys.is_empty() => break,
                _ if Instant::now() > deadline => {
                    self.r.leaked_lock = true;
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        for b in &mut self.brokers {
            b.kill().await;
        }
        self.probe.clone().shutdown().await;
    }
}

async fn probe_node(epmd_port: u16, cookie: &str) -> Result<Node, String> {
    Node::builder(
        format!("{}@localhost", unique_name("trial_agent"))
            .parse()
            .map_err(|e| format!("{e}"))?,
        Cookie::new(cookie).map_err(|e| e.to_string())?,
    )
    .epmd_port(epmd_port)
    .start()
    .await
    .map_err(|e| e.to_string())
}

fn short(n: &NodeName) -> String {
    n.as_str().split('@').next().unwrap_or_default().to_owned()
}

/// Runs one broker trial of `scenario` and returns what it found.
pub async fn trial(
    s: &BrokerSettings,
    etcd: &mut Etcd,
    scenario: &str,
    mut r: TrialResult,
) -> TrialResult {
    let epmd = Epmd::start().await;
    let options = RabbitOptions::new().epmd_port(epmd.port());
    let launches: Vec<_> = (0..BROKERS)
        .map(|_| tokio::spawn(RabbitNode::launch(options.clone())))
        .collect();
    let mut brokers = Vec::new();
    for l in launches {
        match l.await {
            Ok(b) => brokers.push(b),
            Err(e) => {
                r.failures.push(format!("harness: launch: {e}"));
                return r;
            }
        }
    }
    let probe = match probe_node(epmd.port(), brokers[0].cookie()).await {
        Ok(p) => p,
        Err(e) => {
            r.failures.push(format!("harness: probe node: {e}"));
            return r;
        }
    };
    let names = brokers
        .iter()
        .map(|b| b.node().parse().expect("broker name"))
        .collect();
    let mut t = BrokerTrial {
        s,
        etcd,
        rng: StdRng::seed_from_u64(r.seed),
        cluster: unique_name("trial"),
        r: std::mem::take(&mut r),
        epmd,
        probe,
        brokers,
        names,
        formed: (0..BROKERS).map(|_| None).collect(),
        halts: 0,
        restarted: vec![0; BROKERS],
    };
    let budget = s.deadline * 4 + Duration::from_secs(120);
    match tokio::time::timeout(budget, t.run(scenario)).await {
        Err(_) => {
            t.r.failures
                .push(format!("harness: the trial took longer than {budget:?}"))
        }
        Ok(Err(e)) => t.r.failures.push(format!("harness: {e}")),
        Ok(Ok(())) => {}
    }
    t.finish().await;
    t.r
}

/// Which trials a run makes.
#[derive(Debug, Clone)]
pub struct Run {
    /// The scenarios, in order.
    pub scenarios: Vec<&'static str>,
    /// Trials of each.
    pub per_scenario: usize,
    /// The run's seed, from which each trial's seed derives.
    pub base_seed: u64,
    /// One trial with this seed instead (`--replay`).
    pub replay: Option<u64>,
    /// The node kind recorded (`rabbitmq-<version>`).
    pub kind: String,
}

/// Makes the trials of `run` (skipping those `results` holds already), appending each
/// result to `results` and handing it to `record`.
pub async fn run(
    s: &BrokerSettings,
    etcd: &mut Etcd,
    run: &Run,
    results: &mut Vec<TrialResult>,
    mut record: impl FnMut(&TrialResult),
) {
    let total = run.scenarios.len() * run.per_scenario;
    let started = Instant::now();
    for &scenario in &run.scenarios {
        let done: Vec<usize> = results
            .iter()
            .filter(|r| r.scenario == scenario)
            .map(|r| r.index)
            .collect();
        for index in (0..run.per_scenario).filter(|i| !done.contains(i)) {
            let seed = run
                .replay
                .unwrap_or_else(|| super::trial_seed(run.base_seed, scenario, index));
            let r = TrialResult {
                scenario: scenario.into(),
                index,
                kind: run.kind.clone(),
                backend: "etcd".into(),
                nodes: BROKERS,
                seed,
                ..TrialResult::default()
            };
            let r = trial(s, etcd, scenario, r).await;
            println!(
                "{}",
                super::report::progress(
                    &r,
                    results.len() + 1,
                    total,
                    started.elapsed(),
                    "--rabbitmq "
                )
            );
            record(&r);
            results.push(r);
        }
    }
}

/// The node kind broker trials record (with the RabbitMQ version after a dash).
pub const KIND: &str = "rabbitmq";
