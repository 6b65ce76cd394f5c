//! Real RabbitMQ nodes (Debian `rabbitmq-server`, 3.10 here) for a test.
//!
//! Each node runs in its own temporary directory (owned by the `rabbitmq` user, which
//! Debian's `rabbitmq-server` switches to when started as root), on free ports, with its
//! own `rabbitmq.conf` and enabled-plugins file, its own EPMD (a real `epmd` on a free
//! port, through `ERL_EPMD_PORT`) or one shared by the nodes that are to cluster
//! ([`RabbitOptions::epmd_port`]), and the cookie given on the command line. It is
//! started in the background (Debian's `-detached` does nothing as root), waited for with
//! `rabbitmqctl await_startup`, and killed with its whole process tree on drop (`su`
//! starts a new session, so the process group alone would miss the Erlang VM).
//!
//! ```no_run
//! use autocluster_test_support::{RabbitNode, RabbitOptions};
//! # async fn demo() {
//! let node = RabbitNode::start(RabbitOptions::new()
//!     .config("cluster_formation.peer_discovery_backend = etcd")
//!     .plugin("rabbitmq_peer_discovery_etcd")).await;
//! let out = node.eval("rabbit_peer_discovery_etcd:list_nodes().").await;
//! # let _ = out;
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::Epmd;
use super::env::peers;
use super::process::{free_port, kill_process_tree, unique_name};

/// How to start a [`RabbitNode`].
#[derive(Debug, Clone)]
pub struct RabbitOptions {
    /// Prefix of the node's alive name (a unique suffix is added); the host is
    /// `localhost`.
    pub name_prefix: String,
    /// The whole alive name instead (for a node whose name others must know before it
    /// starts); it must be unique.
    pub alive: Option<String>,
    /// The Erlang cookie.
    pub cookie: String,
    /// Lines of `rabbitmq.conf` (the harness adds the listener port and console logging).
    pub config: Vec<String>,
    /// Plugins to enable.
    pub plugins: Vec<String>,
    /// How long to wait for the node to boot.
    pub boot_timeout: Duration,
    /// An EPMD shared with other nodes (nodes that cluster must find each other in one
    /// EPMD); `None`: the node gets its own.
    pub epmd_port: Option<u16>,
    /// More environment variables for `rabbitmq-server` (e.g. `RABBITMQ_NODE_ONLY`).
    pub env: Vec<(String, String)>,
    /// More arguments for the node's VM and for `rabbitmqctl`'s (e.g. TLS distribution:
    /// `-proto_dist inet_tls -ssl_dist_optfile FILE`).
    pub erl_args: Vec<String>,
}

impl Default for RabbitOptions {
    fn default() -> Self {
        RabbitOptions {
            name_prefix: "rabbit".into(),
            alive: None,
            cookie: "autocluster_rabbit_cookie".into(),
            config: Vec::new(),
            plugins: Vec::new(),
            boot_timeout: Duration::from_secs(120),
            epmd_port: None,
            env: Vec::new(),
            erl_args: Vec::new(),
        }
    }
}

impl RabbitOptions {
    /// Defaults: no extra config, no plugins.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a `rabbitmq.conf` line.
    pub fn config(mut self, line: impl Into<String>) -> Self {
        self.config.push(line.into());
        self
    }

    /// Enables a plugin.
    pub fn plugin(mut self, plugin: impl Into<String>) -> Self {
        self.plugins.push(plugin.into());
        self
    }

    /// Names the node `alive@localhost` (unique: see [`unique_name`]).
    pub fn alive(mut self, alive: impl Into<String>) -> Self {
        self.alive = Some(alive.into());
        self
    }

    /// Sets the cookie.
    pub fn cookie(mut self, cookie: impl Into<String>) -> Self {
        self.cookie = cookie.into();
        self
    }

    /// Adds VM arguments, for the node and for `rabbitmqctl`.
    pub fn erl_args(mut self, args: &[&str]) -> Self {
        self.erl_args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Registers the node with the EPMD on `port` (shared, owned by the caller).
    pub fn epmd_port(mut self, port: u16) -> Self {
        self.epmd_port = Some(port);
        self
    }

    /// Sets an environment variable of `rabbitmq-server`.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// A running RabbitMQ node, killed with its whole process tree on drop.
pub struct RabbitNode {
    node: String,
    cookie: String,
    erl_args: Vec<String>,
    /// The node's own EPMD, unless it shares one: held only to be killed with the node.
    _own_epmd: Option<Epmd>,
    epmd_port: u16,
    amqp_port: u16,
    dist_port: u16,
    extra_env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    child: Option<(Child, u32)>,
}

impl RabbitNode {
    /// Starts a node and waits until it has booted (`rabbitmqctl await_startup`).
    /// Panics, with the node's log, if it does not.
    pub async fn start(options: RabbitOptions) -> RabbitNode {
        let timeout = options.boot_timeout;
        let mut rabbit = Self::launch(options).await;
        rabbit.await_startup(timeout).await;
        rabbit
    }

    /// Starts a node without waiting for it to boot (for timing the boot itself).
    pub async fn launch(options: RabbitOptions) -> RabbitNode {
        let own_epmd = match options.epmd_port {
            Some(_) => None,
            None => Some(Epmd::start().await),
        };
        let epmd_port = match (&own_epmd, options.epmd_port) {
            (Some(e), _) => e.port(),
            (None, Some(p)) => p,
            (None, None) => unreachable!("an EPMD either way"),
        };
        let dir = tempfile::Builder::new()
            .prefix("autocluster-rabbit-")
            .tempdir_in("/tmp")
            .expect("temporary directory");
        let alive = options
            .alive
            .clone()
            .unwrap_or_else(|| unique_name(&options.name_prefix));
        let node = format!("{alive}@localhost");
        let amqp_port = free_port();
        let dist_port = free_port();
        let base = dir.path();
        for sub in ["mnesia", "log", "plugins-expand"] {
            std::fs::create_dir_all(base.join(sub)).expect("mkdir");
        }
        let mut config = options.config.clone();
        config.push(format!("listeners.tcp.default = {amqp_port}"));
        config.push("log.console = true".into());
        config.push("log.console.level = debug".into());
        config.push("log.file = false".into());
        std::fs::write(base.join("rabbitmq.conf"), config.join("\n") + "\n")
            .expect("rabbitmq.conf");
        std::fs::write(
            base.join("enabled_plugins"),
            format!("[{}].\n", options.plugins.join(",")),
        )
        .expect("enabled_plugins");
        peers().chown_rabbitmq(base);
        let mut rabbit = RabbitNode {
            node,
            cookie: options.cookie.clone(),
            erl_args: options.erl_args.clone(),
            _own_epmd: own_epmd,
            epmd_port,
            amqp_port,
            dist_port,
            extra_env: options.env.clone(),
            dir,
            child: None,
        };
        rabbit.spawn().await;
        rabbit
    }

    fn vm_args(&self) -> String {
        let mut args = format!("-setcookie {}", self.cookie);
        for a in &self.erl_args {
            args.push(' ');
            args.push_str(a);
        }
        args
    }

    fn env(&self, command: &mut Command) {
        let base = self.dir.path();
        command
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", base.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", base.join("log"))
            .env("RABBITMQ_FEATURE_FLAGS_FILE", base.join("feature_flags"))
            .env("RABBITMQ_PLUGINS_EXPAND_DIR", base.join("plugins-expand"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                base.join("enabled_plugins"),
            )
            .env("RABBITMQ_CONFIG_FILE", base.join("rabbitmq.conf"))
            .env("RABBITMQ_PID_FILE", base.join("rabbit.pid"))
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", self.vm_args())
            .env("RABBITMQ_CTL_ERL_ARGS", self.vm_args())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string());
        for (key, value) in &self.extra_env {
            command.env(key, value);
        }
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("AUTOCLUSTER_") || key.starts_with("ETCD") {
                command.env_remove(key);
            }
        }
    }

    async fn spawn(&mut self) {
        // Appended to: a restarted node keeps the log of its earlier boots.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let log2 = log.try_clone().expect("log file");
        let mut command =
            peers().command("rabbitmq-server", "rabbitmq-server", Some(self.dir.path()));
        self.env(&mut command);
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("start rabbitmq-server");
        let pgid = child.id().expect("pid");
        self.child = Some((child, pgid));
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("console.log")
    }

    /// The node's console output so far (debug level). Not necessarily UTF-8 (the
    /// console output has colour codes and may hold raw bytes): read lossily.
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    async fn await_startup(&mut self, timeout: Duration) {
        // First wait until the node's VM has registered with its EPMD (rabbitmqctl gives
        // up at once on a node that is not running yet), then for the boot to finish.
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some((child, _)) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "RabbitMQ node {} exited with {status}:\n{}",
                    self.node,
                    self.log_tail()
                );
            }
            if self.registered().await == Some(true) {
                break;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "RabbitMQ node {} did not start within {timeout:?}:\n{}",
                    self.node,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let left = deadline
            .saturating_duration_since(std::time::Instant::now())
            .max(Duration::from_secs(10));
        let secs = left.as_secs().to_string();
        let (ok, out) = self
            .rabbitmqctl(
                &["await_startup", "--timeout", &secs],
                left + Duration::from_secs(20),
            )
            .await;
        if !ok {
            panic!(
                "RabbitMQ node {} did not boot: {out}\n--- node log ---\n{}",
                self.node,
                self.log_tail()
            );
        }
    }

    /// Runs `rabbitmqctl -n NODE ARGS...`; returns success and combined output.
    pub async fn rabbitmqctl(&self, args: &[&str], timeout: Duration) -> (bool, String) {
        let mut command = peers().command("rabbitmqctl", "rabbitmq-server", Some(self.dir.path()));
        self.env(&mut command);
        let output = tokio::time::timeout(
            timeout,
            command
                .args(["-n", &self.node])
                .args(args)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await;
        match output {
            Ok(Ok(output)) => (
                output.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            ),
            Ok(Err(e)) => (false, format!("cannot run rabbitmqctl: {e}")),
            Err(_) => (
                false,
                format!("rabbitmqctl {args:?} did not finish within {timeout:?}"),
            ),
        }
    }

    /// Evaluates an Erlang expression on the node (`rabbitmqctl eval`) and returns what it
    /// printed; panics if it failed.
    pub async fn eval(&self, expression: &str) -> String {
        let (ok, out) = self
            .rabbitmqctl(&["eval", expression], Duration::from_secs(60))
            .await;
        assert!(
            ok,
            "rabbitmqctl eval {expression:?} failed: {out}\n--- node log ---\n{}",
            self.log_tail()
        );
        out
    }

    /// The node name, `alive@localhost`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The cookie.
    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    /// The node's directory (data, logs, `rabbit.pid`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The OS pid of the node's VM, from `RABBITMQ_PID_FILE`, once written.
    pub fn vm_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("rabbit.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The EPMD port the node registered with.
    pub fn epmd_port(&self) -> u16 {
        self.epmd_port
    }

    /// Starts `n` nodes at once (they boot in parallel) and waits until all have booted.
    pub async fn start_many(n: usize, options: RabbitOptions) -> Vec<RabbitNode> {
        let tasks: Vec<_> = (0..n)
            .map(|_| tokio::spawn(RabbitNode::start(options.clone())))
            .collect();
        let mut nodes = Vec::with_capacity(n);
        for t in tasks {
            nodes.push(t.await.expect("a RabbitMQ node failed to start"));
        }
        nodes
    }

    /// Stops the node cleanly (`rabbitmqctl stop`), then makes sure its processes are gone.
    pub async fn stop(&mut self) {
        let _ = self.rabbitmqctl(&["stop"], Duration::from_secs(60)).await;
        self.kill().await;
    }

    /// Starts the node again with its data after [`kill`](Self::kill) or
    /// [`stop`](Self::stop), without waiting for it to boot; its log is appended to.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.node);
        // The EPMD forgets the old VM once its connection closes; a new VM registering
        // before that would be refused, and a waiter would take the old entry for it.
        let mut gone = false;
        for _ in 0..100 {
            if self.registered().await == Some(false) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !gone {
            eprintln!(
                "{}: EPMD still lists the old VM after 10 s; starting anyway",
                self.node
            );
        }
        self.spawn().await;
    }

    /// Whether the node's VM is registered with its EPMD (`None`: the EPMD did not
    /// answer within 1 s).
    pub async fn registered(&self) -> Option<bool> {
        let alive = self.node.split('@').next().unwrap_or_default();
        let epmd = autocluster::epmd::EpmdClient::new(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            self.epmd_port,
        )))
        .with_timeout(Duration::from_secs(1));
        let names = epmd.names().await.ok()?;
        Some(names.iter().any(|(name, _)| name == alive))
    }

    /// Waits until a [`restart`](Self::restart)ed node has booted; panics, with its log,
    /// if it does not within `timeout`.
    pub async fn wait_booted(&mut self, timeout: Duration) {
        self.await_startup(timeout).await;
    }

    /// How many times the `rabbit` application started (`Starting RabbitMQ` lines):
    /// once per boot, and again for each start after a stop.
    pub fn starts(&self) -> usize {
        self.log().matches("Starting RabbitMQ").count()
    }

    /// How many times the node's database was reset, or joined to a cluster (a join
    /// resets the joining node first): `DB: resetting node` and `DB: joining cluster`
    /// lines (3.13+, logged at debug level, which the harness turns on), `Resetting
    /// Rabbit` and `Clustering with` (3.10 - 4.x on Mnesia, at info level; the join of
    /// 3.10 - 3.12 resets without a reset line).
    pub fn resets(&self) -> usize {
        let log = self.log();
        [
            "DB: resetting node",
            "DB: joining cluster",
            "Resetting Rabbit",
            "Clustering with",
        ]
        .iter()
        .map(|line| log.matches(line).count())
        .sum()
    }

    /// Publishes `count` persistent messages (`delivery_mode` 2) to the durable queue
    /// `queue` of type `kind` (`classic` or `quorum`), declaring it first, through a
    /// direct AMQP 0-9-1 connection on this node (the broker's own `amqp_client`), with
    /// publisher confirms: returns once the broker confirmed every message; panics if it
    /// did not.
    pub async fn publish_confirmed(&self, queue: &str, kind: &str, count: u32) {
        if let Err(e) = self.try_publish_confirmed(queue, kind, count).await {
            panic!("{e}\n--- node log ---\n{}", self.log_tail());
        }
    }

    /// [`publish_confirmed`](Self::publish_confirmed), returning what went wrong
    /// instead of panicking.
    pub async fn try_publish_confirmed(
        &self,
        queue: &str,
        kind: &str,
        count: u32,
    ) -> Result<(), String> {
        let answer = self
            .amqp_eval(&format!(
                "{{'queue.declare_ok', _, _, _}} = amqp_channel:call(Ch, {{'queue.declare', 0, \
                   <<\"{queue}\">>, false, true, false, false, false, \
                   [{{<<\"x-queue-type\">>, longstr, <<\"{kind}\">>}}]}}), \
                 {{'confirm.select_ok'}} = amqp_channel:call(Ch, {{'confirm.select', false}}), \
                 Props = {{'P_basic', undefined, undefined, undefined, 2, undefined, undefined, \
                   undefined, undefined, undefined, undefined, undefined, undefined, undefined, \
                   undefined}}, \
                 [ok = amqp_channel:call(Ch, {{'basic.publish', 0, <<>>, <<\"{queue}\">>, \
                   false, false}}, {{amqp_msg, Props, integer_to_binary(I)}}) \
                  || I <- lists:seq(1, {count})], \
                 amqp_channel:wait_for_confirms(Ch)"
            ))
            .await;
        match answer {
            Ok(answer) if answer == "true" => Ok(()),
            Ok(answer) | Err(answer) => Err(format!(
                "{}: {count} messages to {queue} not all confirmed: {answer}",
                self.node
            )),
        }
    }

    /// The number of ready messages in `queue` (a passive declare through a direct AMQP
    /// connection on this node); `None` when the node could not tell (not running, the
    /// queue not available yet).
    pub async fn message_count(&self, queue: &str) -> Option<u64> {
        self.amqp_eval(&format!(
            "{{'queue.declare_ok', _, N, _}} = amqp_channel:call(Ch, {{'queue.declare', 0, \
               <<\"{queue}\">>, true, true, false, false, false, []}}), \
             N"
        ))
        .await
        .ok()?
        .parse()
        .ok()
    }

    /// Evaluates `body` on the node with a direct AMQP connection `C` and channel `Ch`
    /// open (closed afterwards, whatever `body` does): the first line of the answer, or
    /// everything `rabbitmqctl eval` printed when it failed.
    async fn amqp_eval(&self, body: &str) -> Result<String, String> {
        let expression = format!("{AMQP_CHANNEL} try {body} after amqp_connection:close(C) end.");
        let (ok, out) = self
            .rabbitmqctl(&["eval", &expression], Duration::from_secs(60))
            .await;
        // The answer is the first line (the client may log a warning after it).
        match out.lines().next() {
            Some(first) if ok => Ok(first.trim().to_owned()),
            _ => Err(out),
        }
    }

    /// Whether the node's VM has exited on its own (a halt at boot, say): its process
    /// tree is then reaped, and [`restart`](Self::restart) starts it again.
    pub fn exited(&mut self) -> bool {
        let gone = match &mut self.child {
            Some((child, _)) => matches!(child.try_wait(), Ok(Some(_))),
            None => false,
        };
        if gone && let Some((_, pgid)) = self.child.take() {
            kill_process_tree(pgid);
        }
        gone
    }

    /// Kills the node's whole process group (a crash).
    pub async fn kill(&mut self) {
        if let Some((mut child, pgid)) = self.child.take() {
            kill_process_tree(pgid);
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }
}

/// An Erlang expression prefix that opens a direct AMQP connection `C` and channel `Ch` on
/// the node it runs on, loading the broker's `amqp_client` (shipped among its plugins,
/// on the code path only when a plugin needs it) when it is not loaded yet.
const AMQP_CHANNEL: &str = "case code:ensure_loaded(amqp_connection) of \
       {module, _} -> ok; \
       _ -> [Ebin | _] = filelib:wildcard(filename:join(filename:dirname(code:lib_dir(rabbit)), \
              \"amqp_client-*/ebin\")), true = code:add_patha(Ebin) end, \
     {ok, _} = application:ensure_all_started(amqp_client), \
     {ok, C} = amqp_connection:start({amqp_params_direct, none, none, <<\"/\">>, node(), none, []}), \
     {ok, Ch} = amqp_connection:open_channel(C),";

impl Drop for RabbitNode {
    fn drop(&mut self) {
        if let Some((mut child, pgid)) = self.child.take() {
            kill_process_tree(pgid);
            let _ = child.start_kill();
        }
    }
}
