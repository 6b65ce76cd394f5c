//! Benchmark 5 (and the per-node half of 6): time from start to one cluster.
//!
//! * **3 `erl` nodes** (`ErlangMesh`): launch three fresh `erl` nodes; each node's agent
//!   starts as soon as its node is up; done when every agent has finished. In-memory
//!   backend and etcd.
//! * **3 RabbitMQ nodes**: launch three fresh nodes; done when all three report the three
//!   of them as running members (`rabbit_mnesia:cluster_nodes(running)` on each, polled
//!   every 100 ms the same way for every method). Methods: RabbitMQ's own etcd peer
//!   discovery (`rabbitmq_peer_discovery_etcd`), and our agents through etcd (one per node,
//!   started once its broker answers: our RabbitMQ target joins a booted broker with
//!   `stop`, `join_cluster`, `start`).
//! * **10 / 100 / 1,000 Rust-native nodes** (`NativeTarget`): every node started, with
//!   its agent, at once, each node listening and registered in one embedded EPMD; done
//!   when every agent has finished and the seed lists all of them. In-memory backend and
//!   etcd (one client per agent, as separate processes would have). At 1,000 nodes through
//!   etcd the resident memory per registered node is measured too.
//!
//! Under `cargo test` (no `--bench`) only 10 Rust-native nodes form, in memory.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use autocluster::backend::{Backend, MemoryBackend};
use autocluster::epmd::{EpmdServer, EpmdServerConfig};
use autocluster::formation::{
    Agent, ClusterTarget, ErlangMesh, FormationConfig, Formed, NativeTarget, Outcome,
};
use autocluster::listener::ListenerLimits;
use autocluster::{Cookie, Node, NodeName};
use common::{COOKIE, Epmd, ErlNode, ErlOptions, Results, Settings, progress, rss_kib};
use serde_json::json;

fn main() {
    let settings = Settings::from_env();
    if std::env::var_os("BENCH_TRACE").is_some() {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .init();
    }
    progress("formation: starting");
    common::runtime(2).block_on(run(settings));
}

fn config() -> FormationConfig {
    FormationConfig {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        lock_wait: Duration::from_secs(600),
        ..FormationConfig::default()
    }
}

/// Limits that let one host run a thousand nodes (the defaults allow 256 per source).
fn big_limits() -> ListenerLimits {
    ListenerLimits {
        max_connections: 8192,
        max_per_source: 8192,
        max_pending: 4096,
        max_pending_per_source: 4096,
        ..ListenerLimits::default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BackendKind {
    Memory,
    #[cfg(feature = "etcd")]
    Etcd,
}

impl BackendKind {
    fn name(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            #[cfg(feature = "etcd")]
            BackendKind::Etcd => "etcd",
        }
    }
}

/// Makes the backends of one formation: one shared in-memory registry, or one etcd
/// client per agent on a fresh cluster name.
struct Backends {
    kind: BackendKind,
    memory: Arc<MemoryBackend>,
    #[cfg(feature = "etcd")]
    etcd: Option<(String, String)>,
}

impl Backends {
    fn new(kind: BackendKind, _etcd_endpoint: Option<&str>) -> Backends {
        Backends {
            kind,
            memory: Arc::new(MemoryBackend::new()),
            #[cfg(feature = "etcd")]
            etcd: _etcd_endpoint.map(|e| (e.to_owned(), common::unique_name("bench"))),
        }
    }

    fn make(&self) -> Arc<dyn Backend> {
        match self.kind {
            BackendKind::Memory => self.memory.clone(),
            #[cfg(feature = "etcd")]
            BackendKind::Etcd => {
                use autocluster::backend::etcd::{EtcdBackend, EtcdConfig};
                let (endpoint, cluster) = self.etcd.as_ref().expect("an etcd endpoint");
                let config = EtcdConfig {
                    node_ttl: Duration::from_secs(30),
                    lock_ttl: Duration::from_secs(15),
                    lock_wait: Duration::from_secs(600),
                    timeout: Duration::from_secs(20),
                    ..EtcdConfig::new([endpoint.clone()]).with_cluster_name(cluster)
                };
                Arc::new(EtcdBackend::new(config).expect("etcd backend"))
            }
        }
    }
}

fn check_one_cluster(formed: &[Formed]) -> Result<(), String> {
    let new = formed
        .iter()
        .filter(|f| f.outcome == Outcome::FormedNew)
        .count();
    if new != 1 {
        return Err(format!("{new} nodes formed a new cluster"));
    }
    Ok(())
}

/// N Rust-native nodes, all started at once; seconds from the start to one cluster.
async fn native_once(n: usize, backends: &Backends) -> Result<(f64, serde_json::Value), String> {
    let epmd = EpmdServer::bind(EpmdServerConfig {
        limits: big_limits(),
        ..EpmdServerConfig::localhost(0)
    })
    .await
    .map_err(|e| e.to_string())?;
    let epmd_port = epmd.port();
    let rss_before = rss_kib();
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let backend = backends.make();
            tokio::spawn(async move {
                let name =
                    NodeName::from_parts(&common::unique_name(&format!("n{i:04}")), "localhost")
                        .map_err(|e| e.to_string())?;
                let node = Node::builder(name, Cookie::new(COOKIE).unwrap())
                    .epmd_port(epmd_port)
                    .listen("127.0.0.1:0".parse().unwrap())
                    .limits(big_limits())
                    .start()
                    .await
                    .map_err(|e| e.to_string())?;
                let target = Arc::new(NativeTarget::new(node).map_err(|e| e.to_string())?);
                let formed = Agent::new(backend, target.clone(), config())
                    .run()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>((target, formed))
            })
        })
        .collect();
    let mut targets = Vec::with_capacity(n);
    let mut formed = Vec::with_capacity(n);
    let mut errors = Vec::new();
    for t in tasks {
        match t.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok((t, f)) => {
                targets.push(t);
                formed.push(f);
            }
            Err(e) => errors.push(e),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if let Some(e) = errors.first() {
        return Err(format!("{} agents failed, e.g.: {e}", errors.len()));
    }
    check_one_cluster(&formed)?;
    let seed = formed
        .iter()
        .find(|f| f.outcome == Outcome::FormedNew)
        .map(|f| f.node.clone())
        .expect("a seed");
    let seed_target = targets
        .iter()
        .find(|t| t.node() == &seed)
        .expect("the seed's target");
    let members = seed_target
        .membership()
        .await
        .map_err(|e| e.to_string())?
        .members
        .len();
    if members != n {
        return Err(format!("the seed lists {members} members, not {n}"));
    }
    let rss_after = rss_kib();
    let attempts: u32 = formed.iter().map(|f| f.attempts).max().unwrap_or(0);
    let extra = json!({
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_per_node_kib": (rss_after.saturating_sub(rss_before)) as f64 / n as f64,
        "max_attempts": attempts,
        "seed_connections": seed_target.local_node().connected_nodes().len(),
    });
    // Tear down: registrations (dropping them deregisters), then the nodes.
    for f in formed {
        if let Some(r) = f.registration {
            let _ = r.deregister().await;
        }
    }
    for t in &targets {
        t.local_node().shutdown().await;
    }
    drop(targets);
    epmd.shutdown().await;
    Ok((secs, extra))
}

/// Three fresh `erl` nodes and their agents; seconds from the launch to one cluster.
async fn erl_once(epmd: &Epmd, probe: &Node, backends: &Backends) -> Result<f64, String> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            let backend = backends.make();
            let probe = probe.clone();
            let opts = ErlOptions::new(epmd.port())
                .name_prefix(&format!("m{i}"))
                .cookie(COOKIE);
            tokio::spawn(async move {
                let node = ErlNode::try_start(opts).await?;
                let name: NodeName = node.name().parse().map_err(|e| format!("{e}"))?;
                let target = Arc::new(ErlangMesh::new(probe, name));
                let formed = Agent::new(backend, target, config())
                    .run()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>((node, formed))
            })
        })
        .collect();
    let mut nodes = Vec::new();
    let mut formed = Vec::new();
    for t in tasks {
        let (n, f) = t.await.map_err(|e| e.to_string())??;
        nodes.push(n);
        formed.push(f);
    }
    let secs = started.elapsed().as_secs_f64();
    check_one_cluster(&formed)?;
    let mut expected: Vec<String> = nodes.iter().map(|n| n.name().to_owned()).collect();
    expected.sort();
    let expected = format!("[{}]", expected.join(","));
    for n in &mut nodes {
        let view = n.eval("lists:sort([node() | nodes()])").await;
        if view != expected {
            return Err(format!("{} sees {view}, not {expected}", n.name()));
        }
    }
    for f in formed {
        if let Some(r) = f.registration {
            let _ = r.deregister().await;
        }
    }
    drop(nodes);
    Ok(secs)
}

fn record(
    results: &mut Results,
    what: &str,
    backend: &str,
    nodes: usize,
    round: usize,
    r: &Result<f64, String>,
    extra: serde_json::Value,
) {
    match r {
        Ok(s) => progress(format!(
            "  {what} {nodes} nodes via {backend}, run {round}: {s:.2} s"
        )),
        Err(e) => progress(format!(
            "  {what} {nodes} nodes via {backend}, run {round}: FAILED: {e}"
        )),
    }
    results.record(json!({
        "kind": what,
        "backend": backend,
        "nodes": nodes,
        "round": round,
        "secs": r.as_ref().ok(),
        "error": r.as_ref().err(),
        "extra": extra,
    }));
}

async fn run(settings: Settings) {
    let mut results = Results::new("formation");
    #[cfg(feature = "etcd")]
    let etcd = if settings.bench {
        Some(common::EtcdServer::start().await)
    } else {
        None
    };
    #[cfg(feature = "etcd")]
    let etcd_endpoint = etcd.as_ref().map(|e| e.endpoint());
    #[cfg(not(feature = "etcd"))]
    let etcd_endpoint: Option<String> = None;
    let mut kinds = vec![BackendKind::Memory];
    #[cfg(feature = "etcd")]
    if etcd_endpoint.is_some() {
        kinds.push(BackendKind::Etcd);
    }

    // Rust-native nodes.
    if settings.wants("native") {
        let sizes: &[(usize, usize)] = match (settings.bench, settings.quick) {
            (false, _) => &[(10, 1)],
            (true, true) => &[(10, 2), (100, 1), (1000, 1)],
            (true, false) => &[(10, 5), (100, 3), (1000, 3)],
        };
        for &(n, runs) in sizes {
            for &kind in &kinds {
                for round in 0..runs {
                    let backends = Backends::new(kind, etcd_endpoint.as_deref());
                    progress(format!(
                        "native: {n} nodes via {}, run {} of {runs}",
                        kind.name(),
                        round + 1
                    ));
                    let r = native_once(n, &backends).await;
                    let (secs, extra) = match r {
                        Ok((s, e)) => (Ok(s), e),
                        Err(e) => (Err(e), json!(null)),
                    };
                    record(&mut results, "native", kind.name(), n, round, &secs, extra);
                }
            }
        }
    }

    if !settings.bench {
        results.write(&settings);
        return;
    }

    // Three erl nodes.
    if settings.wants("erl") {
        let epmd = Epmd::start().await;
        let probe = Node::builder(
            NodeName::from_parts(
                &format!("agents_{}", std::process::id()),
                &common::short_host(),
            )
            .unwrap(),
            Cookie::new(COOKIE).unwrap(),
        )
        .epmd_port(epmd.port())
        .start()
        .await
        .expect("the agents' node");
        let runs = if settings.quick { 2 } else { 5 };
        for &kind in &kinds {
            for round in 0..runs {
                let backends = Backends::new(kind, etcd_endpoint.as_deref());
                progress(format!(
                    "erl: 3 nodes via {}, run {} of {runs}",
                    kind.name(),
                    round + 1
                ));
                let r = erl_once(&epmd, &probe, &backends).await;
                record(&mut results, "erl", kind.name(), 3, round, &r, json!(null));
            }
        }
    }

    // Three RabbitMQ nodes: RabbitMQ's own etcd peer discovery against our agents.
    #[cfg(feature = "etcd")]
    if settings.wants("rabbit")
        && let Some(endpoint) = etcd_endpoint.as_deref()
    {
        let epmd = Epmd::start().await;
        let probe = Node::builder(
            NodeName::from_parts(&format!("rprobe_{}", std::process::id()), "localhost").unwrap(),
            Cookie::new(RABBIT_COOKIE).unwrap(),
        )
        .epmd_port(epmd.port())
        .start()
        .await
        .expect("the probe node");
        // A round launches three brokers three times (about a minute): `BENCH_ROUNDS`
        // rounds, at least 3; the margin between the methods is a second or so in 15, so
        // more rounds tell them apart better.
        let runs = if settings.quick {
            1
        } else {
            settings.rounds.max(3)
        };
        for round in 0..runs {
            for kind in [
                "rabbitmq_own",
                "rabbitmq_ours_boot",
                "rabbitmq_ours",
                "rabbitmq_standalone",
            ] {
                progress(format!(
                    "rabbitmq: 3 nodes, {kind}, run {} of {runs}",
                    round + 1
                ));
                let r = rabbit_once(kind, &epmd, &probe, endpoint).await;
                record(&mut results, kind, "etcd", 3, round, &r, json!(null));
            }
        }
    }
    results.write(&settings);
}

#[cfg(feature = "etcd")]
const RABBIT_COOKIE: &str = "autocluster_rabbit_cookie";

/// Launches three fresh RabbitMQ nodes and times them until each lists all three as
/// running members. `rabbitmq_own`: the nodes run `rabbitmq_peer_discovery_etcd`;
/// `rabbitmq_ours_boot`: plain nodes, with one of our agents (etcd backend) per node
/// started as soon as the node's VM answers, mid-boot (as an init system starts an agent
/// beside its broker); `rabbitmq_ours`: the same agents started once the broker runs;
/// `rabbitmq_standalone`: no clustering at all, timed until the slowest of the three has
/// booted (the floor any formation adds to).
#[cfg(feature = "etcd")]
async fn rabbit_once(
    method: &str,
    epmd: &Epmd,
    probe: &Node,
    endpoint: &str,
) -> Result<f64, String> {
    use autocluster::backend::etcd::{EtcdBackend, EtcdConfig};
    use autocluster::formation::RabbitMq;
    use common::{RabbitNode, RabbitOptions};

    let cluster = common::unique_name("rbench");
    let mut options = RabbitOptions::new()
        .epmd_port(epmd.port())
        .cookie(RABBIT_COOKIE);
    if method == "rabbitmq_own" {
        let port = endpoint.rsplit(':').next().unwrap_or_default().to_owned();
        options = options
            .plugin("rabbitmq_peer_discovery_etcd")
            .config("cluster_formation.peer_discovery_backend = etcd")
            .config(format!(
                "cluster_formation.etcd.endpoints.1 = 127.0.0.1:{port}"
            ))
            .config(format!("cluster_formation.etcd.cluster_name = {cluster}"));
    }
    let started = Instant::now();
    let launches: Vec<_> = (0..3)
        .map(|_| tokio::spawn(RabbitNode::launch(options.clone())))
        .collect();
    let mut nodes = Vec::new();
    for l in launches {
        nodes.push(l.await.map_err(|e| e.to_string())?);
    }
    let names: Vec<NodeName> = nodes
        .iter()
        .map(|n| n.node().parse().map_err(|e| format!("{e}")))
        .collect::<Result<_, _>>()?;
    let targets: Vec<RabbitMq> = names
        .iter()
        .map(|n| RabbitMq::new(probe.clone(), n.clone()))
        .collect();
    let deadline = started + Duration::from_secs(300);
    let mut agents = Vec::new();
    if method.starts_with("rabbitmq_ours") {
        let mid_boot = method == "rabbitmq_ours_boot";
        for target in &targets {
            let target = Arc::new(target.clone());
            let backend: Arc<dyn Backend> = Arc::new(
                EtcdBackend::new(
                    EtcdConfig::new([endpoint.to_owned()]).with_cluster_name(&cluster),
                )
                .map_err(|e| e.to_string())?,
            );
            agents.push(tokio::spawn(async move {
                while !target
                    .membership()
                    .await
                    .is_ok_and(|m| m.running || (mid_boot && m.booting))
                {
                    if Instant::now() > deadline {
                        return Err("the broker did not boot".to_owned());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Agent::new(backend, target, config())
                    .run()
                    .await
                    .map_err(|e| e.to_string())
            }));
        }
    }
    // The same poll for every method: every node lists all three as running members
    // (standalone: every node runs).
    let wanted = if method == "rabbitmq_standalone" {
        1
    } else {
        3
    };
    let secs = loop {
        let mut done = true;
        for t in &targets {
            let ok = t
                .membership()
                .await
                .is_ok_and(|m| m.running && m.running_members.len() == wanted);
            done &= ok;
            if !ok {
                break;
            }
        }
        if done {
            break started.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            let tails: Vec<String> = nodes.iter().map(|n| n.log_tail()).collect();
            return Err(format!(
                "no cluster of three after 300 s; logs:\n{}",
                tails.join("\n---\n")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for a in agents {
        if let Ok(Ok(formed)) = a.await
            && let Some(r) = formed.registration
        {
            let _ = r.deregister().await;
        }
    }
    for mut n in nodes {
        n.kill().await;
    }
    Ok(secs)
}
