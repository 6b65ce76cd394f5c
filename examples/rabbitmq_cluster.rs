//! The seed scenario: three RabbitMQ nodes, registered in etcd, booted together, form one
//! cluster, and `cluster_status` on any of them lists all three under both `nodes` and
//! `running_nodes`, with `partitions` empty.
//!
//! ```text
//! cargo run --example rabbitmq_cluster --features etcd
//! cargo run --example rabbitmq_cluster --features etcd -- --keep-running
//! cargo run --example rabbitmq_cluster --features etcd -- \
//!     --node rabbit@host1 --node rabbit@host2 --node rabbit@host3 \
//!     [--cookie C | --cookie-file F] [--etcd-endpoint URL]... [--cluster-name N] [--allow-reset]
//! ```
//!
//! * **Without `--node`** it starts three local RabbitMQ nodes itself
//!   (`rabbit1_<pid>@localhost` ...; `rabbitmq-server` from the PATH or `/usr/sbin`, each
//!   in its own temporary directory on free ports, registered with the EPMD on the default
//!   port, which the first VM starts if none runs), with a generated cookie, and an etcd
//!   on free ports when no `--etcd-endpoint` is given. The agents start as soon as the
//!   brokers answer, mid-boot, as an init system would start them beside the brokers:
//!   they decide during the first boot and every broker boots once. As root (Debian's
//!   `rabbitmq-server` then runs as user `rabbitmq`), the directories are given to user
//!   `rabbitmq`. The nodes and etcd are stopped when the example exits, unless
//!   `--keep-running`: then the nodes stay up, clustered, and the example prints the
//!   `rabbitmqctl` commands to look at them and to stop them (etcd is stopped either way:
//!   the nodes do not need it once clustered).
//! * **With `--node`** it forms the given running RabbitMQ nodes into one cluster and
//!   leaves them running. The cookie is `--cookie`, `--cookie-file`, Debian's
//!   `/var/lib/rabbitmq/.erlang.cookie` when readable, or `~/.erlang.cookie`; etcd is
//!   `--etcd-endpoint` (default `http://127.0.0.1:2379`).
//!
//! One agent per node runs, all at once, against etcd, registering the nodes under
//! RabbitMQ's own keys (`/rabbitmq/discovery/rabbitmq/clusters/<cluster>/nodes/<node>`,
//! cluster `default` unless `--cluster-name`). A node holding data is not reset unless
//! `--allow-reset`. The registrations end with the example (a long-running agent would
//! keep them alive and watch the cluster).
//!
//! It prints each agent's outcome and the `cluster_status` of the first node in the
//! Erlang-term shape the seed article shows, and exits with status 0 only when exactly
//! one cluster formed: every node lists all of them as running and no partitions.
//! Errors exit with 1, usage errors with 2.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autocluster::backend::etcd::{EtcdBackend, EtcdConfig};
use autocluster::backend::{Backend, RegistrationHandle};
use autocluster::formation::{Agent, FormationConfig, FormationError, Formed, RabbitMq};
use autocluster::{Cookie, Node, NodeName};

const USAGE: &str = "usage: rabbitmq_cluster [--node NAME]... [--cookie C | --cookie-file F]
                        [--etcd-endpoint URL]... [--cluster-name N] [--allow-reset] [--keep-running]
  without --node: starts three local RabbitMQ nodes (and an etcd without --etcd-endpoint)";

#[derive(Debug, Default)]
struct Args {
    nodes: Vec<NodeName>,
    cookie: Option<String>,
    cookie_file: Option<PathBuf>,
    etcd_endpoints: Vec<String>,
    cluster_name: Option<String>,
    allow_reset: bool,
    keep_running: bool,
}

fn parse_args<I: Iterator<Item = String>>(mut argv: I) -> Result<Args, String> {
    let mut args = Args::default();
    while let Some(flag) = argv.next() {
        let mut value = |name: &str| argv.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--node" => args.nodes.push(
                value("--node")?
                    .parse()
                    .map_err(|e: autocluster::NodeNameError| e.to_string())?,
            ),
            "--cookie" => args.cookie = Some(value("--cookie")?),
            "--cookie-file" => args.cookie_file = Some(value("--cookie-file")?.into()),
            "--etcd-endpoint" => args.etcd_endpoints.push(value("--etcd-endpoint")?),
            "--cluster-name" => args.cluster_name = Some(value("--cluster-name")?),
            "--allow-reset" => args.allow_reset = true,
            "--keep-running" => args.keep_running = true,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.cookie.is_some() && args.cookie_file.is_some() {
        return Err("give --cookie or --cookie-file, not both".into());
    }
    if !args.nodes.is_empty() && args.keep_running {
        return Err("--keep-running is for the nodes the example starts itself".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .init();
    }
    // Ctrl-C drops `run`, and with it the nodes and the etcd it started (killed on drop).
    let result = tokio::select! {
        r = run(args) => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// A cookie for the nodes the example starts: 20 upper-case letters, as Erlang makes them.
fn generate_cookie() -> Result<String, String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(bytes.iter().map(|b| char::from(b'A' + b % 26)).collect())
}

fn cookie_of(args: &Args) -> Result<Cookie, String> {
    if let Some(c) = &args.cookie {
        return Cookie::new(c.as_str()).map_err(|e| e.to_string());
    }
    if let Some(f) = &args.cookie_file {
        return Cookie::from_file(f).map_err(|e| format!("{}: {e}", f.display()));
    }
    let debian = PathBuf::from("/var/lib/rabbitmq/.erlang.cookie");
    if let Ok(c) = Cookie::from_file(&debian) {
        return Ok(c);
    }
    Cookie::from_default_file().map_err(|e| e.to_string())
}

/// Returns whether exactly one cluster formed.
async fn run(mut args: Args) -> Result<bool, String> {
    if args.nodes.is_empty() && args.cookie.is_none() && args.cookie_file.is_none() {
        args.cookie = Some(generate_cookie()?);
    }
    let cookie = cookie_of(&args)?;
    let mut local = None;
    let mut etcd = None;
    let mut endpoints = args.etcd_endpoints.clone();
    if endpoints.is_empty() {
        if args.nodes.is_empty() {
            let e = local::Etcd::start().await?;
            println!("started etcd at {}", e.endpoint());
            endpoints.push(e.endpoint());
            etcd = Some(e);
        } else {
            endpoints.push("http://127.0.0.1:2379".into());
        }
    }
    let nodes = if args.nodes.is_empty() {
        let started = Instant::now();
        let text = args.cookie.clone().unwrap_or_default();
        let l = local::Rabbits::start(3, &cookie, &text).await?;
        println!(
            "launched 3 RabbitMQ nodes; they answered in {:.1} s, booting (data and logs in {})",
            started.elapsed().as_secs_f64(),
            l.dir().display()
        );
        let names = l.names();
        local = Some(l);
        names
    } else {
        args.nodes.clone()
    };
    let result = form(&args, &cookie, &nodes, &endpoints).await;
    if let Some(l) = local {
        if args.keep_running && result.is_ok() {
            l.keep();
        } else {
            l.stop().await;
        }
    }
    if let Some(e) = etcd {
        e.stop().await;
    }
    result
}

async fn form(
    args: &Args,
    cookie: &Cookie,
    nodes: &[NodeName],
    endpoints: &[String],
) -> Result<bool, String> {
    let host = nodes.first().map(NodeName::host).unwrap_or("localhost");
    let probe = Node::builder(
        NodeName::from_parts(&format!("rabbitmq_cluster_{}", std::process::id()), host)
            .map_err(|e| e.to_string())?,
        cookie.clone(),
    )
    .register_in_epmd(false)
    .start()
    .await
    .map_err(|e| format!("cannot start the agents' node: {e}"))?;
    let cluster = args.cluster_name.clone().unwrap_or_else(|| {
        if args.nodes.is_empty() {
            format!("autocluster-demo-{}", std::process::id())
        } else {
            "default".into()
        }
    });
    let config = FormationConfig {
        allow_reset: args.allow_reset,
        backoff_max: Duration::from_secs(2),
        lock_wait: Duration::from_secs(120),
        ..FormationConfig::default()
    };
    let mut agents = Vec::new();
    for node in nodes {
        // One backend per agent, as separate processes would have.
        let etcd = EtcdConfig::new(endpoints.to_vec()).with_cluster_name(&cluster);
        let backend: Arc<dyn Backend> =
            Arc::new(EtcdBackend::new(etcd).map_err(|e| e.to_string())?);
        let target = Arc::new(RabbitMq::new(probe.clone(), node.clone()));
        agents.push(Agent::new(backend, target, config.clone()));
    }
    let key = EtcdConfig::new(endpoints.to_vec())
        .with_cluster_name(&cluster)
        .nodes_prefix();
    println!(
        "forming {} node(s) through etcd {} (keys under {key})",
        nodes.len(),
        endpoints.join(",")
    );
    let started = Instant::now();
    let runs: Vec<_> = agents
        .iter()
        .map(|a| {
            let a = a.clone();
            tokio::spawn(async move { a.run().await })
        })
        .collect();
    let mut registrations: Vec<RegistrationHandle> = Vec::new();
    let mut failed = false;
    for (run, node) in runs.into_iter().zip(nodes) {
        match run.await {
            Ok(Ok(Formed {
                outcome,
                registration,
                elapsed,
                ..
            })) => {
                println!("{node}: {outcome} ({:.1} s)", elapsed.as_secs_f64());
                registrations.extend(registration);
            }
            Ok(Err(e)) => {
                failed = true;
                println!("{node}: FAILED: {e}");
                if let FormationError::DataAtRisk { .. } = e {
                    println!("  (rerun with --allow-reset to discard that data and join)");
                }
            }
            Err(e) => {
                failed = true;
                println!("{node}: the agent panicked: {e}");
            }
        }
    }
    println!("formation took {:.1} s", started.elapsed().as_secs_f64());

    // Exactly one cluster: every node lists all of them as running, no partitions.
    let mut all: Vec<NodeName> = nodes.to_vec();
    all.sort();
    let mut one_cluster = !failed;
    for a in &agents {
        match a.target().membership().await {
            Ok(m) => {
                let ok = m.running && m.running_members == all && m.partitions.is_empty();
                one_cluster &= ok;
                if !ok {
                    println!(
                        "{}: running members {:?}, partitions {:?}",
                        a.node(),
                        m.running_members,
                        m.partitions
                    );
                }
            }
            Err(e) => {
                one_cluster = false;
                println!("{}: cannot read its membership: {e}", a.node());
            }
        }
    }
    let first = RabbitMq::new(probe.clone(), all[0].clone());
    match (first.version(&all[0]).await, first.cluster_status().await) {
        (Ok(v), Ok(status)) => {
            println!("cluster_status of {} (RabbitMQ {v}):", all[0]);
            println!("{status}");
        }
        (Err(e), _) | (_, Err(e)) => println!("cannot read the cluster status: {e}"),
    }
    for r in registrations {
        if let Err(e) = r.deregister().await {
            eprintln!("warning: deregistering: {e}");
        }
    }
    if one_cluster {
        println!("one cluster of {} nodes", all.len());
    } else {
        println!("NOT one cluster");
    }
    probe.shutdown().await;
    Ok(one_cluster)
}

/// Local RabbitMQ nodes and etcd, started by the example.
mod local {
    use std::net::TcpListener;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    use autocluster::backend::Backend;
    use autocluster::backend::etcd::{EtcdBackend, EtcdConfig};
    use autocluster::{Cookie, Node, NodeName};
    use tokio::process::{Child, Command};

    fn free_port() -> Result<u16, String> {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free port: {e}"))
    }

    fn find(binary: &str) -> Result<PathBuf, String> {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        dirs.extend(["/usr/sbin", "/usr/lib/rabbitmq/bin"].map(PathBuf::from));
        dirs.into_iter()
            .map(|d| d.join(binary))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("`{binary}` is not installed (Debian: apt-get install rabbitmq-server etcd-server)"))
    }

    fn is_root() -> bool {
        std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }

    /// Kills the process group `child` leads and, as `su` starts its own session, the
    /// VM itself (`vm_pid`). Synchronous, so that it also works in `Drop`.
    fn kill(child: &mut Child, vm_pid: Option<&str>) {
        if let Some(pid) = vm_pid {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid])
                .status();
        }
        if let Some(pid) = child.id() {
            // `--`: without it procps' kill reads `-PID` as options, and a process group
            // such as -13100 became -1, every process the user may signal.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
        let _ = child.start_kill();
    }

    /// An etcd on free loopback ports with a temporary data directory.
    pub struct Etcd {
        endpoint: String,
        child: Child,
        _dir: tempfile::TempDir,
    }

    impl Etcd {
        pub async fn start() -> Result<Etcd, String> {
            let binary = find("etcd")?;
            let dir = tempfile::Builder::new()
                .prefix("rabbitmq_cluster-etcd-")
                .tempdir()
                .map_err(|e| e.to_string())?;
            let (client, peer) = (free_port()?, free_port()?);
            let endpoint = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log =
                std::fs::File::create(dir.path().join("etcd.log")).map_err(|e| e.to_string())?;
            let mut child = Command::new(binary)
                .args(["--name", "demo", "--data-dir"])
                .arg(dir.path().join("data"))
                .args([
                    "--listen-client-urls",
                    &endpoint,
                    "--advertise-client-urls",
                    &endpoint,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                ])
                .args(["--initial-cluster", &format!("demo={peer_url}")])
                .args(["--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start etcd: {e}"))?;
            let backend = EtcdBackend::new(
                EtcdConfig::new([endpoint.clone()]).with_timeout(Duration::from_secs(1)),
            )
            .map_err(|e| e.to_string())?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while backend.list_nodes().await.is_err() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "etcd exited with {status}; see {}",
                        dir.path().join("etcd.log").display()
                    ));
                }
                if Instant::now() > deadline {
                    return Err("etcd did not answer within 30 s".into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Etcd {
                endpoint,
                child,
                _dir: dir,
            })
        }

        pub fn endpoint(&self) -> String {
            self.endpoint.clone()
        }

        pub async fn stop(mut self) {
            kill(&mut self.child, None);
            let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        }
    }

    struct Rabbit {
        name: NodeName,
        child: Child,
        dir: PathBuf,
        exited: bool,
    }

    impl Rabbit {
        /// The VM's pid, which `rabbitmq-server` writes to `RABBITMQ_PID_FILE`.
        fn vm_pid(&self) -> Option<String> {
            let pid = std::fs::read_to_string(self.dir.join("rabbit.pid")).ok()?;
            let pid = pid.trim();
            (!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then(|| pid.to_owned())
        }
    }

    /// RabbitMQ nodes on this machine; killed on drop (Ctrl-C included) unless kept.
    pub struct Rabbits {
        nodes: Vec<Rabbit>,
        dir: Option<tempfile::TempDir>,
        probe: Node,
        cookie: String,
    }

    impl Drop for Rabbits {
        fn drop(&mut self) {
            for r in self.nodes.iter_mut().filter(|r| !r.exited) {
                let pid = r.vm_pid();
                kill(&mut r.child, pid.as_deref());
            }
        }
    }

    impl Rabbits {
        /// Starts `n` nodes at once and waits until every one's VM answers (mid-boot: the
        /// agents then decide during the brokers' first boot).
        pub async fn start(n: usize, cookie: &Cookie, text: &str) -> Result<Rabbits, String> {
            if text.is_empty() {
                return Err("the nodes need the cookie's text (--cookie)".into());
            }
            let server = find("rabbitmq-server")?;
            let dir = tempfile::Builder::new()
                .prefix("rabbitmq_cluster-")
                .tempdir()
                .map_err(|e| e.to_string())?;
            let pid = std::process::id();
            let probe = Node::builder(
                NodeName::from_parts(&format!("rabbitmq_cluster_boot_{pid}"), "localhost")
                    .map_err(|e| e.to_string())?,
                cookie.clone(),
            )
            .register_in_epmd(false)
            .start()
            .await
            .map_err(|e| e.to_string())?;
            let mut rabbits = Rabbits {
                nodes: Vec::new(),
                dir: Some(dir),
                probe,
                cookie: text.to_owned(),
            };
            for i in 1..=n {
                let base = rabbits.dir().join(format!("rabbit{i}"));
                rabbits
                    .nodes
                    .push(spawn(&server, &base, &format!("rabbit{i}_{pid}"), text)?);
            }
            rabbits.await_vm(Duration::from_secs(180)).await?;
            Ok(rabbits)
        }

        pub fn dir(&self) -> &Path {
            self.dir
                .as_ref()
                .map(|d| d.path())
                .unwrap_or(Path::new("/"))
        }

        pub fn names(&self) -> Vec<NodeName> {
            self.nodes.iter().map(|r| r.name.clone()).collect()
        }

        async fn await_vm(&mut self, timeout: Duration) -> Result<(), String> {
            let deadline = Instant::now() + timeout;
            for r in &mut self.nodes {
                loop {
                    let running = self
                        .probe
                        .call(
                            &r.name,
                            "rabbit",
                            "is_running",
                            vec![],
                            Duration::from_secs(5),
                        )
                        .await;
                    if running.is_ok() {
                        break;
                    }
                    if let Ok(Some(status)) = r.child.try_wait() {
                        return Err(format!(
                            "{} exited with {status}:\n{}",
                            r.name,
                            tail(&r.dir.join("console.log"))
                        ));
                    }
                    if Instant::now() > deadline {
                        return Err(format!(
                            "{} did not answer within {timeout:?}:\n{}",
                            r.name,
                            tail(&r.dir.join("console.log"))
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Ok(())
        }

        /// Stops every node (`init:stop()`, then a kill after 30 s) and removes the data.
        pub async fn stop(mut self) {
            for r in &self.nodes {
                let _ = self
                    .probe
                    .call(&r.name, "init", "stop", vec![], Duration::from_secs(5))
                    .await;
            }
            for r in &mut self.nodes {
                // Drop kills what did not stop in time.
                r.exited = tokio::time::timeout(Duration::from_secs(30), r.child.wait())
                    .await
                    .is_ok();
            }
            println!("stopped the local RabbitMQ nodes");
            self.probe.shutdown().await;
        }

        /// Leaves the nodes running and their directory in place; prints how to use them.
        pub fn keep(mut self) {
            let dir = self.dir.take().map(|d| d.keep());
            let ctl = format!(
                "RABBITMQ_CTL_ERL_ARGS='-setcookie {}' rabbitmqctl",
                self.cookie
            );
            println!("\nthe nodes keep running. Look at them:");
            for r in &self.nodes {
                println!("  {ctl} -n {} cluster_status", r.name);
            }
            println!("stop them:");
            for r in &self.nodes {
                println!("  {ctl} -n {} stop", r.name);
            }
            if let Some(dir) = dir {
                println!("then remove {}", dir.display());
            }
            // They outlive the example: nothing to kill on drop.
            for r in &mut self.nodes {
                r.exited = true;
            }
        }
    }

    fn tail(log: &Path) -> String {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Starts one node in `base` (Debian's `rabbitmq-server` as root switches to user
    /// `rabbitmq`, so everything it writes belongs to that user; `-detached` does nothing
    /// as root, so it runs in the background instead).
    fn spawn(server: &Path, base: &Path, alive: &str, cookie: &str) -> Result<Rabbit, String> {
        let name = NodeName::from_parts(alive, "localhost").map_err(|e| e.to_string())?;
        let io = |e: std::io::Error| format!("{}: {e}", base.display());
        for sub in ["mnesia", "log", "plugins-expand"] {
            std::fs::create_dir_all(base.join(sub)).map_err(io)?;
        }
        let (amqp, dist) = (free_port()?, free_port()?);
        std::fs::write(
            base.join("rabbitmq.conf"),
            format!("listeners.tcp.default = {amqp}\nlog.console = true\nlog.file = false\n"),
        )
        .map_err(io)?;
        std::fs::write(base.join("enabled_plugins"), "[].\n").map_err(io)?;
        if is_root() {
            let parent = base.parent().unwrap_or(base);
            let ok = std::process::Command::new("chown")
                .args(["-R", "rabbitmq:rabbitmq"])
                .arg(parent)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                return Err(format!("cannot give {} to user rabbitmq", parent.display()));
            }
        }
        let log = std::fs::File::create(base.join("console.log")).map_err(io)?;
        let log2 = log.try_clone().map_err(io)?;
        let child = Command::new(server)
            .env("RABBITMQ_NODENAME", name.as_str())
            .env("RABBITMQ_NODE_PORT", amqp.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
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
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                format!("-setcookie {cookie}"),
            )
            .current_dir(base)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", server.display()))?;
        Ok(Rabbit {
            name,
            child,
            dir: base.to_owned(),
            exited: false,
        })
    }
}
