//! Agents that die: a victim runs its agent in a runtime of its own (dropped with
//! `shutdown_background`, so its tasks, connections, lock and registration keep-alives
//! vanish as in a crash) or in a child process (this binary re-run with
//! `--child-agent`, killed with SIGKILL).
//!
//! A hook stops the victim at the point the scenario kills it: inside the join (before
//! or after the join itself), right after registering (the lock still held), or after
//! formation finished.

use std::sync::Arc;
use std::time::Duration;

use autocluster::NodeName;
use autocluster::backend::{
    Backend, BackendError, LockGuard, LockRequest, RegisteredNode, Registration,
    RegistrationHandle, Timings,
};
use autocluster::formation::{
    Agent, ClusterTarget, DataState, FormationConfig, FormationError, Inspection, Membership,
    Probe, Stage, Step,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// Where a victim is stopped and killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillPoint {
    /// In the join (or the forming of a new cluster), before it is done.
    BeforeJoin,
    /// Right after the join, before registering (the node is in the cluster, its agent
    /// dies holding the lock).
    AfterJoin,
    /// Right after registering, the lock still held.
    AfterRegister,
    /// After formation finished (lock released, registration kept alive).
    AfterFinish,
}

impl KillPoint {
    /// Its name on the child's command line.
    pub fn as_str(self) -> &'static str {
        match self {
            KillPoint::BeforeJoin => "before-join",
            KillPoint::AfterJoin => "after-join",
            KillPoint::AfterRegister => "after-register",
            KillPoint::AfterFinish => "after-finish",
        }
    }

    /// Parses [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<KillPoint> {
        [
            KillPoint::BeforeJoin,
            KillPoint::AfterJoin,
            KillPoint::AfterRegister,
            KillPoint::AfterFinish,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Tells the runner a hook was reached (a channel in-process, a line on stdout in a child).
#[derive(Debug, Clone)]
pub enum Signal {
    /// In-process.
    Channel(mpsc::UnboundedSender<String>),
    /// In a child: `@@HOOK <what>` on stdout.
    Stdout,
}

impl Signal {
    /// Reports `what`.
    pub fn send(&self, what: &str) {
        match self {
            Signal::Channel(tx) => {
                let _ = tx.send(what.to_owned());
            }
            Signal::Stdout => {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "@@HOOK {what}");
                let _ = out.flush();
            }
        }
    }
}

/// A target that stops at the kill point (and stays stopped until killed).
#[derive(Debug)]
pub struct HookTarget {
    /// The real target.
    pub inner: Arc<dyn ClusterTarget>,
    /// Where to stop.
    pub point: KillPoint,
    /// Whom to tell.
    pub signal: Signal,
}

impl HookTarget {
    async fn around<F>(&self, what: &str, f: F) -> Result<Stage, FormationError>
    where
        F: std::future::Future<Output = Result<Stage, FormationError>>,
    {
        if self.point == KillPoint::BeforeJoin {
            self.signal.send(&format!("before-{what}"));
            std::future::pending::<()>().await;
        }
        let stage = f.await?;
        if self.point == KillPoint::AfterJoin {
            self.signal.send(&format!("after-{what}"));
            std::future::pending::<()>().await;
        }
        Ok(stage)
    }
}

#[async_trait::async_trait]
impl ClusterTarget for HookTarget {
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
            Step::Form => self.around("form", self.inner.execute(step)).await,
            Step::Join { .. } => self.around("join", self.inner.execute(step)).await,
            step => self.inner.execute(step).await,
        }
    }
    async fn reconnect(&self, member: &NodeName) -> Result<bool, FormationError> {
        self.inner.reconnect(member).await
    }
    async fn forget(&self, member: &NodeName) -> Result<(), FormationError> {
        self.inner.forget(member).await
    }
}

/// A backend that stops right after a successful registration, when told to.
#[derive(Debug)]
pub struct HookBackend {
    /// The real backend.
    pub inner: Arc<dyn Backend>,
    /// Stop after registering.
    pub stop_after_register: bool,
    /// Whom to tell.
    pub signal: Signal,
}

#[async_trait::async_trait]
impl Backend for HookBackend {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn supports_registration(&self) -> bool {
        self.inner.supports_registration()
    }
    fn supports_lock(&self) -> bool {
        self.inner.supports_lock()
    }
    async fn list_nodes(&self) -> Result<Vec<RegisteredNode>, BackendError> {
        self.inner.list_nodes().await
    }
    async fn register(
        &self,
        registration: Registration,
    ) -> Result<RegistrationHandle, BackendError> {
        let handle = self.inner.register(registration).await?;
        if self.stop_after_register {
            self.signal.send("after-register");
            // Keep the handle (and so the registration) alive until killed.
            let _keep = handle;
            return std::future::pending().await;
        }
        Ok(handle)
    }
    async fn lock(&self, request: LockRequest) -> Result<LockGuard, BackendError> {
        let guard = self.inner.lock(request).await?;
        self.signal.send("locked");
        Ok(guard)
    }
    async fn deterministic_seed(&self, local: &NodeName) -> Result<Option<NodeName>, BackendError> {
        self.inner.deterministic_seed(local).await
    }
    fn timings(&self) -> Timings {
        self.inner.timings()
    }
}

/// Wraps a victim's backend and target with the hooks for `point`, and runs its agent;
/// after formation it holds on (registration alive) until killed.
pub async fn run_victim(
    backend: Arc<dyn Backend>,
    target: Arc<dyn ClusterTarget>,
    config: FormationConfig,
    point: KillPoint,
    signal: Signal,
) {
    let backend = Arc::new(HookBackend {
        inner: backend,
        stop_after_register: point == KillPoint::AfterRegister,
        signal: signal.clone(),
    });
    let target = Arc::new(HookTarget {
        inner: target,
        point,
        signal: signal.clone(),
    });
    let agent = Agent::new(backend, target, config);
    match agent.run().await {
        Ok(formed) => {
            signal.send(&format!("after-finish {}", formed.outcome));
            let _keep = formed;
            std::future::pending::<()>().await;
        }
        Err(e) => signal.send(&format!("error {e}")),
    }
}

/// A victim agent somewhere else: reports its hooks, and can be killed.
pub enum Victim {
    /// In a runtime of its own.
    Thread {
        /// The runtime (dropped to kill).
        runtime: Option<tokio::runtime::Runtime>,
        /// Hook reports.
        hooks: mpsc::UnboundedReceiver<String>,
    },
    /// In a child process.
    Process {
        /// The child.
        child: Box<tokio::process::Child>,
        /// Its stdout, line by line.
        lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    },
}

impl Victim {
    /// Starts `run` (given its hook signal) in a runtime of its own.
    pub fn thread<F, Fut>(run: F) -> Result<Victim, String>
    where
        F: FnOnce(Signal) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("victim")
            .enable_all()
            .build()
            .map_err(|e| format!("victim runtime: {e}"))?;
        let (tx, hooks) = mpsc::unbounded_channel();
        runtime.spawn(run(Signal::Channel(tx)));
        Ok(Victim::Thread {
            runtime: Some(runtime),
            hooks,
        })
    }

    /// Starts this binary again with `args` (which include `--child-agent`) and `env`.
    pub fn process_with_env(args: Vec<String>, env: &[(&str, &str)]) -> Result<Victim, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = tokio::process::Command::new(exe)
            .args(args)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the child agent: {e}"))?;
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        Ok(Victim::Process {
            child: Box::new(child),
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// Waits for the next hook report whose text starts with one of `prefixes`, up to
    /// `within`. Returns it, or an error naming what came instead.
    pub async fn wait_hook(
        &mut self,
        prefixes: &[&str],
        within: Duration,
    ) -> Result<String, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = match self {
                Victim::Thread { hooks, .. } => tokio::time::timeout_at(deadline, hooks.recv())
                    .await
                    .map_err(|_| "timed out".to_owned())?,
                Victim::Process { lines, .. } => loop {
                    match tokio::time::timeout_at(deadline, lines.next_line()).await {
                        Err(_) => {
                            return Err(format!(
                                "no {prefixes:?} from the child within {within:?}"
                            ));
                        }
                        Ok(Ok(Some(l))) => {
                            if let Some(h) = l.strip_prefix("@@HOOK ") {
                                break Some(h.to_owned());
                            }
                        }
                        Ok(_) => break None,
                    }
                },
            };
            match next {
                None => return Err(format!("the victim ended before {prefixes:?}")),
                Some(h) if h.starts_with("error") => {
                    return Err(format!("the victim failed before {prefixes:?}: {h}"));
                }
                Some(h) if prefixes.iter().any(|p| h.starts_with(p)) => return Ok(h),
                Some(_) => continue,
            }
        }
    }

    /// Kills it: drops its runtime, or SIGKILLs the child and reaps it.
    pub async fn kill(&mut self) {
        match self {
            Victim::Thread { runtime, .. } => {
                if let Some(rt) = runtime.take() {
                    rt.shutdown_background();
                }
            }
            Victim::Process { child, .. } => {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            }
        }
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        match self {
            Victim::Thread { runtime, .. } => {
                if let Some(rt) = runtime.take() {
                    rt.shutdown_background();
                }
            }
            Victim::Process { child, .. } => {
                let _ = child.start_kill();
            }
        }
    }
}
