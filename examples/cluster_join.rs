//! Forms Erlang nodes into one cluster: one formation agent per node, all started at the
//! same instant, against the embedded in-memory backend or a real etcd.
//!
//! ```text
//! cluster_join [--node NAME]... [--cookie C | --cookie-file F] [--etcd-endpoint URL]...
//!              [--nodes N] [--keep-running] [--epmd-port P]
//! ```
//!
//! Without `--node` it starts `--nodes` (default 3) local `erl` nodes itself (with a fresh
//! random cookie, handed to them in a private cookie file rather than on the command
//! line, listening only on the address the host name resolves to, not on every
//! interface), forms them, and stops them on exit unless `--keep-running`. With `--node` it
//! manages the given running nodes (cookie from `--cookie`, `--cookie-file` or
//! `~/.erlang.cookie`), which keep running, clustered, after it exits.
//!
//! It prints each agent's outcome, each node's view of the cluster and its health report,
//! and exits with status 1 unless exactly one cluster formed (status 2 on usage errors).
//!
//! With `--etcd-endpoint` (build with `--features etcd`) the nodes are registered in etcd
//! under RabbitMQ's key layout (`/rabbitmq/discovery/rabbitmq/clusters/default/nodes/...`)
//! and the startup lock is etcd's.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autocluster::backend::{Backend, BackendError, MemoryBackend};
use autocluster::epmd::EpmdClient;
use autocluster::formation::{Agent, ErlangMesh, FormationConfig, Outcome};
use autocluster::term::Term;
use autocluster::{Cookie, Node, NodeName};

const USAGE: &str = "usage: cluster_join [--node NAME]... [--cookie C | --cookie-file F] [--etcd-endpoint URL]... [--nodes N] [--keep-running] [--epmd-port P]";

struct Args {
    nodes: Vec<NodeName>,
    cookie: Option<Cookie>,
    etcd: Vec<String>,
    count: usize,
    keep_running: bool,
    epmd_port: u16,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        nodes: Vec::new(),
        cookie: None,
        etcd: Vec::new(),
        count: 3,
        keep_running: false,
        epmd_port: autocluster::epmd::port_from_env(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |n: &str| {
            it.next()
                .ok_or_else(|| format!("{n} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--node" => args
                .nodes
                .push(value("--node")?.parse().map_err(|e| format!("{e}"))?),
            "--cookie" => {
                args.cookie = Some(Cookie::new(value("--cookie")?).map_err(|e| e.to_string())?)
            }
            "--cookie-file" => {
                args.cookie =
                    Some(Cookie::from_file(value("--cookie-file")?).map_err(|e| e.to_string())?)
            }
            "--etcd-endpoint" => args.etcd.push(value("--etcd-endpoint")?),
            "--nodes" => {
                args.count = value("--nodes")?
                    .parse()
                    .map_err(|_| "--nodes takes a number".to_string())?
            }
            "--keep-running" => args.keep_running = true,
            "--epmd-port" => {
                args.epmd_port = value("--epmd-port")?
                    .parse()
                    .map_err(|_| "bad --epmd-port".to_string())?
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if !(1..=50).contains(&args.count) {
        return Err("--nodes must be between 1 and 50".into());
    }
    Ok(args)
}

/// The `erl` nodes this program started, stopped on drop unless kept.
struct Started {
    children: Vec<std::process::Child>,
    home: Option<std::path::PathBuf>,
    keep: bool,
}

impl Drop for Started {
    fn drop(&mut self) {
        if !self.keep {
            for child in &mut self.children {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(home) = &self.home {
            let _ = std::fs::remove_dir_all(home);
        }
    }
}

fn hostname() -> Result<String, String> {
    let out = std::process::Command::new("hostname")
        .arg("-s")
        .output()
        .map_err(|e| format!("cannot run hostname: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The IPv4 address `host` resolves to: the one the nodes are dialled at, so the one
/// they listen on (usually a loopback address for the machine's own name), rather than
/// every interface, which is `erl`'s default. EPMD, if these nodes start it, is bound the
/// same way (`ERL_EPMD_ADDRESS`; it adds loopback itself).
fn dist_interface(host: &str) -> Option<std::net::Ipv4Addr> {
    use std::net::ToSocketAddrs as _;
    (host, 0)
        .to_socket_addrs()
        .ok()?
        .find_map(|a| match a.ip() {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        })
}

/// Starts `count` short-named `erl` nodes whose cookie comes from a private `HOME`.
fn start_erl_nodes(
    count: usize,
    cookie: &Cookie,
    epmd_port: u16,
    keep: bool,
) -> Result<(Vec<NodeName>, Started), String> {
    let host = hostname()?;
    let tag = std::process::id();
    let home = std::env::temp_dir().join(format!("cluster_join_{tag}"));
    std::fs::create_dir_all(&home).map_err(|e| format!("cannot create {}: {e}", home.display()))?;
    let mut started = Started {
        children: Vec::new(),
        home: Some(home.clone()),
        keep,
    };
    cookie
        .write_file(home.join(".erlang.cookie"))
        .map_err(|e| format!("cannot write the cookie file: {e}"))?;
    let interface = dist_interface(&host);
    let interface_text = interface.map(|ip| ip.to_string()).unwrap_or_default();
    match interface {
        Some(ip) => println!("the nodes listen on {ip} only (where {host} resolves)"),
        None => println!(
            "{host} does not resolve to an IPv4 address: the nodes listen on every interface"
        ),
    }
    let mut names = Vec::new();
    for i in 1..=count {
        let name: NodeName = format!("node{i}_{tag}@{host}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        let mut cmd = std::process::Command::new("erl");
        cmd.args(["-sname", name.alive(), "-noshell"]);
        if let Some(ip) = interface {
            // Listen where the host name leads, not on every interface.
            let ip = ip.octets();
            cmd.args([
                "-kernel",
                "inet_dist_use_interface",
                &format!("{{{},{},{},{}}}", ip[0], ip[1], ip[2], ip[3]),
            ])
            .env("ERL_EPMD_ADDRESS", interface_text.as_str());
        }
        let child = cmd
            .env("HOME", &home)
            .env("ERL_EPMD_PORT", epmd_port.to_string())
            .env_remove("ERL_FLAGS")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start erl ({e}): install Erlang/OTP (apt-get install -y erlang-nox)"
                )
            })?;
        started.children.push(child);
        names.push(name);
    }
    Ok((names, started))
}

/// Waits until every node is registered in EPMD on this host.
async fn wait_registered(
    names: &[NodeName],
    epmd_port: u16,
    within: Duration,
) -> Result<(), String> {
    let epmd = EpmdClient::new(([127, 0, 0, 1], epmd_port).into());
    let deadline = Instant::now() + within;
    loop {
        let registered = epmd.names().await.unwrap_or_default();
        let missing: Vec<&str> = names
            .iter()
            .filter(|n| !registered.iter().any(|(r, _)| r == n.alive()))
            .map(NodeName::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "nodes did not start within {within:?}: {}",
                missing.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(feature = "etcd")]
fn etcd_backend(endpoints: &[String]) -> Result<Arc<dyn Backend>, BackendError> {
    use autocluster::backend::etcd::{EtcdBackend, EtcdConfig};
    let config = EtcdConfig {
        endpoints: endpoints.to_vec(),
        ..EtcdConfig::default()
    };
    Ok(Arc::new(EtcdBackend::new(config)?))
}

#[cfg(not(feature = "etcd"))]
fn etcd_backend(_endpoints: &[String]) -> Result<Arc<dyn Backend>, BackendError> {
    Err(BackendError::config(
        "--etcd-endpoint",
        "this build has no etcd backend: run with --features etcd",
    ))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<bool, String> {
    let (cookie, names, _started) = if args.nodes.is_empty() {
        let cookie = args.cookie.clone().unwrap_or_else(Cookie::generate);
        let (names, started) =
            start_erl_nodes(args.count, &cookie, args.epmd_port, args.keep_running)?;
        println!("started {} erl nodes: {}", names.len(), join(&names));
        wait_registered(&names, args.epmd_port, Duration::from_secs(30)).await?;
        (cookie, names, Some(started))
    } else {
        let cookie = match args.cookie.clone() {
            Some(c) => c,
            None => Cookie::from_default_file()
                .map_err(|e| format!("no --cookie or --cookie-file, and {e}"))?,
        };
        (cookie, args.nodes.clone(), None)
    };

    let backend: Arc<dyn Backend> = if args.etcd.is_empty() {
        Arc::new(MemoryBackend::new())
    } else {
        etcd_backend(&args.etcd).map_err(|e| e.to_string())?
    };
    // One hidden Rust node probes and drives every managed node.
    let me: NodeName = format!("cluster_join_{}@{}", std::process::id(), names[0].host())
        .parse()
        .map_err(|e| format!("{e}"))?;
    let probe = Node::builder(me, cookie)
        .epmd_port(args.epmd_port)
        .start()
        .await
        .map_err(|e| e.to_string())?;

    println!("forming with the {} backend...", backend.name());
    let started = Instant::now();
    let agents: Vec<Agent> = names
        .iter()
        .map(|n| {
            Agent::new(
                backend.clone(),
                Arc::new(ErlangMesh::new(probe.clone(), n.clone())),
                FormationConfig::default(),
            )
        })
        .collect();
    let runs: Vec<_> = agents
        .iter()
        .map(|a| {
            let a = a.clone();
            tokio::spawn(async move { a.run().await })
        })
        .collect();
    let mut formed = Vec::new();
    let mut ok = true;
    for (name, run) in names.iter().zip(runs) {
        match run.await.map_err(|e| e.to_string())? {
            Ok(f) => {
                println!("  {name}: {} ({} ms)", f.outcome, f.elapsed.as_millis());
                ok &= !matches!(f.outcome, Outcome::Standalone { .. });
                formed.push(f);
            }
            Err(e) => {
                println!("  {name}: FAILED: {e}");
                ok = false;
            }
        }
    }
    println!("formation took {} ms", started.elapsed().as_millis());

    println!("views:");
    let mut views = Vec::new();
    for name in &names {
        let view = probe
            .call(name, "erlang", "nodes", vec![], Duration::from_secs(5))
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        let mut members: Vec<String> = view
            .into_list_elements()
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t.as_atom().map(|a| a.as_str().to_owned()))
            .collect();
        members.push(name.to_string());
        members.sort();
        let as_term = Term::List(members.iter().map(|m| Term::atom(m.as_str())).collect());
        println!("  {name}: {as_term}");
        views.push(members);
    }
    let all: Vec<String> = {
        let mut v: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        v.sort();
        v
    };
    let one_cluster = views.iter().all(|v| *v == all);

    println!("health:");
    for agent in &agents {
        let report = agent.health().await;
        println!("  {report}");
        ok &= report.healthy;
    }
    if one_cluster && ok {
        println!("one cluster of {} nodes", names.len());
    } else {
        println!("NOT one cluster");
    }
    // Registrations are kept until the agents exit; the nodes keep their connections.
    drop(formed);
    probe.shutdown().await;
    Ok(one_cluster && ok)
}

fn join(names: &[NodeName]) -> String {
    names
        .iter()
        .map(NodeName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
