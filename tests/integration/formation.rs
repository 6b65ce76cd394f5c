//! Cluster formation of real Erlang nodes through real etcd: agents started at the same
//! instant end in exactly one cluster, every time; a lock holder killed mid-join delays
//! the others only until its lease expires; the health report tells a formed cluster
//! from a standalone or disconnected node.

// The etcd tests need the `etcd` feature; the helpers they share stay unused without it.
#![cfg_attr(not(feature = "etcd"), allow(dead_code, unused_imports))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[cfg(feature = "etcd")]
use autocluster::backend::etcd::{EtcdBackend, EtcdConfig};
use autocluster::backend::{Backend, MemoryBackend, Registration};
use autocluster::formation::{
    Agent, ClusterTarget, DataState, ErlangMesh, FormationConfig, FormationError, FormationEvent,
    Inspection, LocalTarget, Membership, Outcome, Probe, SeedOrder, Stage, Step,
};
use autocluster::health::CheckOptions;
use autocluster::{Cookie, Node, NodeName, health};

#[cfg(feature = "etcd")]
use crate::common::EtcdServer;
use crate::common::{Epmd, ErlNode, ErlOptions, Hooked, unique_name};

const COOKIE: &str = "autocluster_test_cookie";

fn host_of(node: &str) -> &str {
    node.split_once('@').map(|(_, h)| h).expect("a node name")
}

fn quick() -> FormationConfig {
    FormationConfig {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(500),
        node_ttl: Duration::from_secs(5),
        lock_ttl: Duration::from_secs(5),
        lock_wait: Duration::from_secs(30),
        ..FormationConfig::default()
    }
}

#[cfg(feature = "etcd")]
fn etcd_backend(etcd: &EtcdServer, cluster: &str, lock_ttl: Duration) -> Arc<dyn Backend> {
    let config = EtcdConfig {
        endpoints: vec![etcd.endpoint()],
        cluster_name: cluster.to_owned(),
        node_ttl: Duration::from_secs(3),
        lock_ttl,
        lock_wait: Duration::from_secs(30),
        ..EtcdConfig::default()
    };
    Arc::new(EtcdBackend::new(config).unwrap())
}

async fn probe_node(epmd: &Epmd, host: &str) -> Node {
    Node::builder(
        format!("{}@{host}", unique_name("agent")).parse().unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .epmd_port(epmd.port())
    .start()
    .await
    .unwrap()
}

/// Erlang nodes that do not mesh on their own (`-connect_all false`), so that a
/// complete mesh is the agents' doing, and that can be reset to standalone between runs.
async fn erl_nodes(epmd: &Epmd, n: usize) -> Vec<ErlNode> {
    erl_nodes_with(epmd, n, &["-connect_all", "false"]).await
}

/// Name prefixes n0, n1, ... make the alphabetical order the index order.
async fn erl_nodes_with(epmd: &Epmd, n: usize, args: &[&str]) -> Vec<ErlNode> {
    let starts: Vec<_> = (0..n)
        .map(|i| {
            ErlNode::start(
                ErlOptions::new(epmd.port())
                    .name_prefix(&format!("n{i}"))
                    .args(args.iter().copied()),
            )
        })
        .collect();
    futures_join_all(starts).await
}

async fn futures_join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(futs.len());
    for f in futs {
        out.push(f.await);
    }
    out
}

async fn reset(nodes: &mut [ErlNode]) {
    for n in nodes.iter_mut() {
        n.eval("[erlang:disconnect_node(N) || N <- nodes()], ok")
            .await;
    }
    for n in nodes.iter_mut() {
        assert_eq!(n.eval("nodes()").await, "[]");
    }
}

/// Each node's sorted view of its cluster, itself included.
async fn views(nodes: &mut [ErlNode]) -> Vec<String> {
    let mut v = Vec::new();
    for n in nodes.iter_mut() {
        v.push(n.eval("lists:sort([node() | nodes()])").await);
    }
    v
}

async fn run_all(agents: &[Agent]) -> Vec<Result<autocluster::formation::Formed, FormationError>> {
    let runs: Vec<_> = agents
        .iter()
        .map(|a| {
            let a = a.clone();
            tokio::spawn(async move { a.run().await })
        })
        .collect();
    let mut out = Vec::new();
    for r in runs {
        out.push(r.await.unwrap());
    }
    out
}

#[cfg(feature = "etcd")]
async fn one_cluster_every_time(size: usize, runs: usize) {
    let epmd = Epmd::start().await;
    let etcd = EtcdServer::start().await;
    let mut nodes = erl_nodes(&epmd, size).await;
    let probe = probe_node(&epmd, host_of(nodes[0].name())).await;
    let mut expected: Vec<String> = nodes.iter().map(|n| n.name().to_owned()).collect();
    expected.sort();
    let expected = format!("[{}]", expected.join(","));
    let mut slowest = Duration::ZERO;
    for run in 0..runs {
        reset(&mut nodes).await;
        // A fresh cluster name per run: a fresh registry on the same etcd.
        let backend = etcd_backend(&etcd, &unique_name("c"), Duration::from_secs(5));
        let agents: Vec<Agent> = nodes
            .iter()
            .map(|n| {
                Agent::new(
                    backend.clone(),
                    Arc::new(ErlangMesh::new(probe.clone(), n.name().parse().unwrap())),
                    quick(),
                )
            })
            .collect();
        let started = Instant::now();
        let results = run_all(&agents).await;
        slowest = slowest.max(started.elapsed());
        let formed: Vec<_> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("run {run}: {e}")))
            .collect();
        let outcomes: Vec<Outcome> = formed.iter().map(|f| f.outcome.clone()).collect();
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == Outcome::FormedNew)
                .count(),
            1,
            "run {run}: exactly one node forms: {outcomes:?}"
        );
        let views = views(&mut nodes).await;
        assert!(views.iter().all(|v| *v == expected), "run {run}: {views:?}");
        // Every node registered, and every lock released.
        let listed = backend.list_nodes().await.unwrap();
        assert_eq!(listed.len(), size, "run {run}");
        drop(formed);
    }
    eprintln!("{size} nodes: {runs} runs, one cluster each time, slowest formation {slowest:?}");
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread")]
async fn three_erlang_nodes_form_one_cluster_twenty_times() {
    one_cluster_every_time(3, 20).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread")]
async fn five_erlang_nodes_form_one_cluster_twenty_times() {
    one_cluster_every_time(5, 20).await;
}

/// A target whose join never finishes: the agent is "killed" while it holds the lock.
#[derive(Debug)]
struct HangingJoin {
    inner: ErlangMesh,
    joining: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl ClusterTarget for HangingJoin {
    fn node(&self) -> &NodeName {
        self.inner.node()
    }
    fn kind(&self) -> &'static str {
        "hanging"
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
            Step::Form | Step::Join { .. } => {
                self.joining.store(true, Ordering::SeqCst);
                std::future::pending().await
            }
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

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_holder_killed_mid_join_delays_the_others_only_until_its_lease_expires() {
    let epmd = Epmd::start().await;
    let etcd = EtcdServer::start().await;
    let mut nodes = erl_nodes(&epmd, 4).await;
    let host = host_of(nodes[0].name()).to_owned();
    let cluster = unique_name("c");
    let lock_ttl = Duration::from_secs(3);

    // The doomed agent, in its own runtime: dropping the runtime kills it outright, with
    // no chance to release the lock or deregister (as a crashed process).
    let joining = Arc::new(AtomicBool::new(false));
    let doomed = {
        let joining = joining.clone();
        let endpoint = etcd.endpoint();
        let node_name: NodeName = nodes[3].name().parse().unwrap();
        let cluster = cluster.clone();
        let epmd_port = epmd.port();
        let host = host.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.spawn(async move {
                let probe = Node::builder(
                    format!("{}@{host}", unique_name("doomed")).parse().unwrap(),
                    Cookie::new(COOKIE).unwrap(),
                )
                .epmd_port(epmd_port)
                .start()
                .await
                .unwrap();
                let backend: Arc<dyn Backend> = Arc::new(
                    EtcdBackend::new(EtcdConfig {
                        endpoints: vec![endpoint],
                        cluster_name: cluster,
                        lock_ttl,
                        ..EtcdConfig::default()
                    })
                    .unwrap(),
                );
                let target = Arc::new(HangingJoin {
                    inner: ErlangMesh::new(probe, node_name),
                    joining,
                });
                let _ = Agent::new(backend, target, quick()).run().await;
            });
            rt
        })
        .join()
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !joining.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the doomed agent never got the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Now the others start, and the holder dies.
    let probe = probe_node(&epmd, &host).await;
    let backend = etcd_backend(&etcd, &cluster, lock_ttl);
    let agents: Vec<Agent> = nodes[..3]
        .iter()
        .map(|n| {
            Agent::new(
                backend.clone(),
                Arc::new(ErlangMesh::new(probe.clone(), n.name().parse().unwrap())),
                quick(),
            )
        })
        .collect();
    let killed_at = Instant::now();
    doomed.shutdown_background();
    let results = run_all(&agents).await;
    let waited = killed_at.elapsed();
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    assert!(
        waited >= lock_ttl - Duration::from_millis(500),
        "the others waited for the lease: {waited:?}"
    );
    let mut views = views(&mut nodes[..3]).await;
    views.dedup();
    assert_eq!(views.len(), 1, "one cluster: {views:?}");
    assert!(
        !views[0].contains(nodes[3].name()),
        "the dead agent's node never joined"
    );
    // The dead agent never registered; the survivors did; no lock is left.
    let listed: Vec<String> = backend
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.node.to_string())
        .collect();
    assert_eq!(listed.len(), 3);
    assert!(!listed.contains(&nodes[3].name().to_owned()));
    let locks = etcd.keys("/rabbitmq/locks/").await;
    assert!(locks.is_empty(), "leaked lock keys: {locks:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_tells_formed_standalone_and_disconnected_nodes_apart() {
    let epmd = Epmd::start().await;
    let mut nodes = erl_nodes(&epmd, 4).await;
    let probe = probe_node(&epmd, host_of(nodes[0].name())).await;
    let backend = Arc::new(MemoryBackend::new());
    let targets: Vec<Arc<ErlangMesh>> = nodes
        .iter()
        .map(|n| Arc::new(ErlangMesh::new(probe.clone(), n.name().parse().unwrap())))
        .collect();
    let agents: Vec<Agent> = targets[..3]
        .iter()
        .map(|t| Agent::new(backend.clone(), t.clone(), quick()))
        .collect();
    let formed: Vec<_> = run_all(&agents)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for t in &targets[..3] {
        let report =
            health::check(t.as_ref(), Some(backend.as_ref()), &CheckOptions::default()).await;
        assert!(report.healthy, "{report}");
        assert!(report.to_string().starts_with("SUCCESS: "), "{report}");
        assert_eq!(report.exit_code(), 0);
        assert!(
            report.elapsed < Duration::from_secs(1),
            "{:?}",
            report.elapsed
        );
    }
    // Without a backend: the node's own cluster, with the number of nodes expected.
    let report = health::check(
        targets[1].as_ref(),
        None,
        &CheckOptions::default().expect_nodes(3),
    )
    .await;
    assert!(report.healthy, "{report}");
    let report = health::check(
        targets[1].as_ref(),
        None,
        &CheckOptions::default().expect_nodes(4),
    )
    .await;
    assert!(!report.healthy, "{report}");

    // A fourth node registered but standalone: it fails, and so does the seed beside it.
    let alone_reg = backend
        .register(Registration::new(
            targets[3].node().clone(),
            Duration::from_secs(30),
        ))
        .await
        .unwrap();
    let report = health::check(
        targets[3].as_ref(),
        Some(backend.as_ref()),
        &CheckOptions::default(),
    )
    .await;
    assert!(!report.healthy, "{report}");
    assert!(report.to_string().starts_with("FAILURE: "), "{report}");
    let seed = report.seed.clone().unwrap();
    let seed_target = targets.iter().find(|t| t.node() == &seed).unwrap();
    let report = health::check(
        seed_target.as_ref(),
        Some(backend.as_ref()),
        &CheckOptions::default(),
    )
    .await;
    assert!(
        !report.healthy,
        "a standalone seed beside an unjoined registered node: {report}"
    );
    assert!(
        report.summary.contains(targets[3].node().as_str()),
        "{report}"
    );
    alone_reg.deregister().await.unwrap();

    // A member disconnected from the seed.
    let other = targets[..3]
        .iter()
        .find(|t| t.node() != &seed)
        .unwrap()
        .node()
        .clone();
    let idx = nodes
        .iter()
        .position(|n| n.name() == other.as_str())
        .unwrap();
    nodes[idx]
        .eval(&format!("erlang:disconnect_node('{seed}')"))
        .await;
    let other_target = targets.iter().find(|t| t.node() == &other).unwrap();
    let report = health::check(
        other_target.as_ref(),
        Some(backend.as_ref()),
        &CheckOptions::default(),
    )
    .await;
    assert!(!report.healthy, "{report}");
    assert!(report.summary.contains(seed.as_str()), "{report}");
    let json = report.to_json();
    assert_eq!(json["status"], "FAILURE");
    assert_eq!(json["seed"], seed.as_str());
    drop(formed);
}

#[tokio::test(flavor = "multi_thread")]
async fn data_at_risk_and_the_largest_cluster_order() {
    // An Erlang node already meshed with another is "another cluster": not merged unless
    // allowed. And with the largest-cluster order, a lone node joins the bigger cluster
    // even when its own name sorts first.
    let epmd = Epmd::start().await;
    let mut nodes = erl_nodes(&epmd, 4).await;
    let probe = probe_node(&epmd, host_of(nodes[0].name())).await;
    let names: Vec<NodeName> = nodes.iter().map(|n| n.name().parse().unwrap()).collect();
    // nodes 1 and 2 form a mesh by hand.
    nodes[1]
        .eval(&format!("net_kernel:connect_node('{}')", names[2]))
        .await;
    let backend = Arc::new(MemoryBackend::new());
    let _r1 = backend
        .register(Registration::new(names[1].clone(), Duration::from_secs(30)))
        .await
        .unwrap();
    let _r2 = backend
        .register(Registration::new(names[2].clone(), Duration::from_secs(30)))
        .await
        .unwrap();
    let _r0 = backend
        .register(Registration::new(names[0].clone(), Duration::from_secs(30)))
        .await
        .unwrap();

    let cfg = FormationConfig {
        seed_order: SeedOrder::LargestCluster,
        ..quick()
    };
    let agent = Agent::new(
        backend.clone(),
        Arc::new(ErlangMesh::new(probe.clone(), names[3].clone())),
        cfg.clone(),
    );
    let formed = agent.run().await.unwrap();
    let seed = formed.seed().unwrap().clone();
    assert!(
        seed == names[1] || seed == names[2],
        "joined the two-node cluster, not {seed}"
    );

    // Node 0 is alone but registered; node 3 now belongs to the bigger cluster: joining
    // node 0 would merge two meshes, and is refused.
    let agent = Agent::new(
        backend.clone(),
        Arc::new(ErlangMesh::new(probe.clone(), names[3].clone())),
        FormationConfig {
            seed_order: SeedOrder::Alphabetical,
            max_attempts: 1,
            ..quick()
        },
    );
    let mut events = agent.events();
    let err = agent.run().await.unwrap_err();
    assert!(matches!(err, FormationError::DataAtRisk { .. }), "{err}");
    assert!(err.to_string().contains(names[0].as_str()), "{err}");
    let mut saw_seed = false;
    while let Ok(ev) = events.try_recv() {
        if let FormationEvent::SeedChosen(Some(s)) = ev {
            saw_seed = s == names[0];
        }
    }
    assert!(saw_seed, "the alphabetical seed was node 0");
}

#[tokio::test(flavor = "multi_thread")]
async fn this_rust_process_joins_an_erlang_cluster_and_global_keeps_working() {
    let epmd = Epmd::start().await;
    // Default `connect_all`, so `global` runs as it does in production (OTP 25 turns
    // prevent_overlapping_partitions on by default).
    let mut nodes = erl_nodes_with(&epmd, 3, &[]).await;
    assert_eq!(
        nodes[0]
            .eval("application:get_env(kernel, prevent_overlapping_partitions)")
            .await,
        "{ok,true}"
    );
    let host = host_of(nodes[0].name()).to_owned();
    // The Erlang nodes form their cluster first.
    let probe = probe_node(&epmd, &host).await;
    let backend = Arc::new(MemoryBackend::new());
    let agents: Vec<Agent> = nodes
        .iter()
        .map(|n| {
            Agent::new(
                backend.clone(),
                Arc::new(ErlangMesh::new(probe.clone(), n.name().parse().unwrap())),
                quick(),
            )
        })
        .collect();
    let _formed: Vec<_> = run_all(&agents)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    // Then this process joins, as a hidden node.
    let me = Node::builder(
        format!("{}@{host}", unique_name("rust")).parse().unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .epmd_port(epmd.port())
    .start()
    .await
    .unwrap();
    let local = Arc::new(LocalTarget::new(me.clone()).unwrap());
    let formed = Agent::new(backend.clone(), local.clone(), quick())
        .run()
        .await
        .unwrap();
    assert!(
        matches!(formed.outcome, Outcome::Joined { .. }),
        "{:?}",
        formed.outcome
    );
    assert_eq!(me.connected_nodes().len(), 3, "dialled every member");
    for n in nodes.iter_mut() {
        assert!(n.eval("nodes(hidden)").await.contains(me.name().as_str()));
        let sync = n.eval("global:sync()").await;
        assert_eq!(sync, "ok", "global:sync() returns");
    }
    let name = unique_name("g");
    assert_eq!(
        nodes[0]
            .eval(&format!("global:register_name({name}, self())"))
            .await,
        "yes"
    );
    assert!(
        nodes[2]
            .eval(&format!("global:whereis_name({name})"))
            .await
            .starts_with('<')
    );
    let report = health::check(
        local.as_ref(),
        Some(backend.as_ref()),
        &CheckOptions::default(),
    )
    .await;
    assert!(report.healthy, "{report}");

    // A published Rust node is refused as a target, with the reason.
    let published = Node::builder(
        format!("{}@{host}", unique_name("pub")).parse().unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .published()
    .start()
    .await
    .unwrap();
    let err = LocalTarget::new(published).unwrap_err();
    assert!(err.to_string().contains("global"), "{err}");
}

/// A cluster of Rust processes: 30 autocluster nodes, each with its own listener
/// registered in the embedded EPMD, agents started at once: one star around the seed,
/// identical views, and each member connected to the seed only.
#[tokio::test(flavor = "multi_thread")]
async fn thirty_rust_native_nodes_form_one_star() {
    use autocluster::epmd::{EpmdServer, EpmdServerConfig};
    use autocluster::formation::NativeTarget;
    let epmd = EpmdServer::bind(EpmdServerConfig::localhost(0))
        .await
        .unwrap();
    let backend = Arc::new(MemoryBackend::new());
    let mut targets = Vec::new();
    for i in 0..30 {
        let node = Node::builder(
            format!("{}@localhost", unique_name(&format!("r{i:02}")))
                .parse()
                .unwrap(),
            Cookie::new(COOKIE).unwrap(),
        )
        .epmd_port(epmd.port())
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
        targets.push(Arc::new(NativeTarget::new(node).unwrap()));
    }
    let agents: Vec<Agent> = targets
        .iter()
        .map(|t| Agent::new(backend.clone(), t.clone(), quick()))
        .collect();
    let formed: Vec<_> = run_all(&agents)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        formed
            .iter()
            .filter(|f| f.outcome == Outcome::FormedNew)
            .count(),
        1
    );
    let seed = formed
        .iter()
        .find(|f| f.outcome == Outcome::FormedNew)
        .unwrap()
        .node
        .clone();
    let mut all: Vec<NodeName> = targets.iter().map(|t| t.node().clone()).collect();
    all.sort();
    for t in &targets {
        let m = t.membership().await.unwrap();
        assert_eq!(m.members, all, "{}", t.node());
        if t.node() != &seed {
            assert_eq!(t.seed().as_ref(), Some(&seed));
            // Probes are closed once formation is done; the probed side learns of the
            // close from its socket a moment later.
            let deadline = Instant::now() + Duration::from_secs(5);
            while t.local_node().connected_nodes() != vec![seed.clone()]
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(
                t.local_node().connected_nodes(),
                vec![seed.clone()],
                "{} connects to the seed only",
                t.node()
            );
        }
    }
    let seed_target = targets.iter().find(|t| t.node() == &seed).unwrap();
    assert_eq!(seed_target.local_node().connected_nodes().len(), 29);
    let report = health::check(
        targets[7].as_ref(),
        Some(backend.as_ref()),
        &CheckOptions::default(),
    )
    .await;
    assert!(report.healthy, "{report}");
}

/// Regression (found by the dropped-handshakes trials): an agent whose probe of the only
/// registered node failed for a reason that proves nothing (a connection cut during the
/// handshake) formed a second cluster beside it. Now it retries, names the node and the
/// cause, and follows its failure policy; a node proven gone (EPMD no longer knows it)
/// does not hold anyone back.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_never_forms_a_cluster_beside_a_registered_node_it_could_not_probe() {
    let epmd = Epmd::start().await;
    let mut nodes = erl_nodes(&epmd, 3).await;
    let probe = probe_node(&epmd, host_of(nodes[0].name())).await;
    let names: Vec<NodeName> = nodes.iter().map(|n| n.name().parse().unwrap()).collect();
    let backend = Arc::new(MemoryBackend::new());
    let _r0 = backend
        .register(Registration::new(names[0].clone(), Duration::from_secs(30)))
        .await
        .unwrap();
    // Probes of other nodes fail as if the connection had been cut during the
    // handshake, the first `failures` times.
    let cut = |failures: usize| {
        let left = std::sync::atomic::AtomicUsize::new(failures);
        Arc::new(
            Hooked::new(
                ErlangMesh::new(probe.clone(), names[1].clone()),
                "cut-probes",
            )
            .on_probe(move |node, probed| {
                if probed.is_some() {
                    return None;
                }
                left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .ok()
                    .map(|_| {
                        Probe::down(
                            node.clone(),
                            "the connection was closed during the handshake",
                        )
                    })
            }),
        )
    };
    let once = FormationConfig {
        max_attempts: 1,
        ..quick()
    };

    // Stop: the error, naming the node and the cause.
    let err = Agent::new(backend.clone(), cut(1), once.clone())
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, FormationError::MaybeAlive { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(names[0].as_str()), "{text}");
    assert!(text.contains("closed during the handshake"), "{text}");
    assert!(err.is_retryable());
    assert_eq!(views(&mut nodes[..2]).await[1], format!("[{}]", names[1]));

    // A registered node that is booting holds back a managed node that runs: only a
    // managed node that is booting too takes a booting seed (its own boot joins once the
    // seed's database is up).
    let booting_seed = Arc::new(
        Hooked::new(
            ErlangMesh::new(probe.clone(), names[1].clone()),
            "booting-seed",
        )
        .on_probe(|node, probed| probed.is_none().then(|| Probe::booting(node.clone()))),
    );
    let err = Agent::new(backend.clone(), booting_seed, once.clone())
        .run()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FormationError::MaybeAlive { nodes } if nodes.iter().any(|(n, why)| *n == names[0] && why == "booting")),
        "{err}"
    );
    assert_eq!(views(&mut nodes[..2]).await[1], format!("[{}]", names[1]));

    // Ignore: standalone, with the same error.
    let formed = Agent::new(
        backend.clone(),
        cut(1),
        FormationConfig {
            failure: autocluster::formation::FailurePolicy::Ignore,
            ..once
        },
    )
    .run()
    .await
    .unwrap();
    assert!(
        matches!(&formed.outcome, Outcome::Standalone { error } if error.contains(names[0].as_str())),
        "{:?}",
        formed.outcome
    );

    // With retries, the next attempt reaches the node and joins it.
    let formed = Agent::new(backend.clone(), cut(1), quick())
        .run()
        .await
        .unwrap();
    assert_eq!(
        formed.outcome,
        Outcome::Joined {
            seed: names[0].clone()
        }
    );
    assert_eq!(formed.attempts, 2);

    // A registered node whose EPMD no longer knows it is gone: no reason to wait for it.
    let _r2 = backend
        .register(Registration::new(names[2].clone(), Duration::from_secs(30)))
        .await
        .unwrap();
    drop(nodes.pop()); // kills node 2
    let lone = Arc::new(MemoryBackend::new());
    let _r2 = lone
        .register(Registration::new(names[2].clone(), Duration::from_secs(30)))
        .await
        .unwrap();
    let mut events = Vec::new();
    for _ in 0..50 {
        let p = ErlangMesh::new(probe.clone(), names[0].clone())
            .probe(&names[2])
            .await
            .unwrap();
        if p.gone {
            events.push(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!events.is_empty(), "a killed node is proven gone");
    nodes[0]
        .eval("[erlang:disconnect_node(N) || N <- nodes()], ok")
        .await;
    let formed = Agent::new(
        lone,
        Arc::new(ErlangMesh::new(probe.clone(), names[0].clone())),
        quick(),
    )
    .run()
    .await
    .unwrap();
    assert_eq!(formed.outcome, Outcome::FormedNew);
}

/// Regression (found by the partition and etcd-down-cleanup trials): an Erlang mesh kept
/// no membership of its own, so a member cut off by a partition vanished from it: the
/// watch never reconnected it after the network healed, and cleanup never saw a dead
/// member to forget. Now the target remembers its members.
#[tokio::test(flavor = "multi_thread")]
async fn the_watch_reconnects_a_cut_off_erlang_member_and_cleanup_forgets_a_dead_one() {
    use autocluster::formation::{CleanupConfig, CleanupState};
    let epmd = Epmd::start().await;
    let mut nodes = erl_nodes(&epmd, 3).await;
    let probe = probe_node(&epmd, host_of(nodes[0].name())).await;
    let names: Vec<NodeName> = nodes.iter().map(|n| n.name().parse().unwrap()).collect();
    let backend = Arc::new(MemoryBackend::new());
    let config = FormationConfig {
        cleanup: CleanupConfig {
            enabled: true,
            warn_only: false,
            unreachable_rounds: 2,
            max_share: 0.5,
            unlisted_for: Some(Duration::from_millis(200)),
            ..CleanupConfig::default()
        },
        ..quick()
    };
    let agents: Vec<Agent> = names
        .iter()
        .map(|n| {
            Agent::new(
                backend.clone(),
                Arc::new(ErlangMesh::new(probe.clone(), n.clone())),
                config.clone(),
            )
        })
        .collect();
    let mut formed: Vec<_> = run_all(&agents)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let all = format!(
        "[{}]",
        names
            .iter()
            .map(NodeName::as_str)
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(views(&mut nodes).await.iter().all(|v| *v == all));
    // A mesh learns its members by watching it: the seed formed before the others joined
    // and has seen none of them yet. `Agent::watch` runs a round at once and then every
    // interval; one round each here.
    let mut state = CleanupState::new();
    for agent in &agents {
        agent.watch_round(&mut state, false).await;
    }

    // Node 2 is cut off from the others (as by a partition that has healed since).
    nodes[2]
        .eval("[erlang:disconnect_node(N) || N <- nodes()], ok")
        .await;
    assert_eq!(nodes[2].eval("nodes()").await, "[]");
    let m = agents[0].target().membership().await.unwrap();
    assert!(
        m.members.contains(&names[2]) && !m.lists_running(&names[2]),
        "{m:?}"
    );
    let mut events = agents[0].events();
    let mut state = CleanupState::new();
    agents[0].watch_round(&mut state, false).await;
    // Erlang does not mesh on its own here (`-connect_all false`): each member's watch
    // reconnects it.
    agents[1].watch_round(&mut state, false).await;
    assert!(
        views(&mut nodes).await.iter().all(|v| *v == all),
        "reconnected"
    );
    let mut reconnected = false;
    while let Ok(ev) = events.try_recv() {
        reconnected |= ev == FormationEvent::Reconnected(names[2].clone());
    }
    assert!(reconnected);

    // Node 2 dies and is deregistered: cleanup forgets it, and only it.
    let dead = formed.pop().unwrap();
    dead.registration.unwrap().deregister().await.unwrap();
    drop(nodes.pop());
    let mut forgot = Vec::new();
    for _ in 0..20 {
        agents[0].watch_round(&mut state, true).await;
        while let Ok(ev) = events.try_recv() {
            if let FormationEvent::Forgot(n) = ev {
                forgot.push(n);
            }
        }
        if !forgot.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(forgot, vec![names[2].clone()]);
    let m = agents[0].target().membership().await.unwrap();
    assert_eq!(m.members, names[..2].to_vec());
    drop(formed);
}

/// After formation the watch reconnects a registered member the node lost, and
/// reports two registered clusters that do not list each other.
#[tokio::test(flavor = "multi_thread")]
async fn the_watch_reconnects_lost_members_and_reports_splits() {
    let epmd = Epmd::start().await;
    let mut nodes = erl_nodes(&epmd, 4).await;
    let probe = probe_node(&epmd, host_of(nodes[0].name())).await;
    let backend = Arc::new(MemoryBackend::new());
    let targets: Vec<Arc<ErlangMesh>> = nodes
        .iter()
        .map(|n| Arc::new(ErlangMesh::new(probe.clone(), n.name().parse().unwrap())))
        .collect();
    let agents: Vec<Agent> = targets[..3]
        .iter()
        .map(|t| Agent::new(backend.clone(), t.clone(), quick()))
        .collect();
    let _formed: Vec<_> = run_all(&agents)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    // Node 1 loses node 2 (`-connect_all false`: nothing reconnects them on its own).
    let (n1, n2) = (targets[1].node().clone(), targets[2].node().clone());
    nodes[1]
        .eval(&format!("erlang:disconnect_node('{n2}')"))
        .await;
    assert!(!nodes[1].eval("nodes()").await.contains(n2.as_str()));
    let mut events = agents[1].events();
    let mut state = autocluster::formation::CleanupState::new();
    // The ErlangMesh remembers the members it has seen, and the watch reconnects them
    // (and registered members it does not list).
    agents[1].watch_round(&mut state, false).await;
    let view = nodes[1].eval("lists:sort(nodes())").await;
    let mut reconnected = view.contains(n2.as_str());
    while let Ok(ev) = events.try_recv() {
        if ev == FormationEvent::Reconnected(n2.clone()) {
            reconnected = true;
        }
    }
    assert!(reconnected, "{n1} reconnected {n2}: {view}");

    // A fourth node registered on its own, standalone: a split.
    let _lone = backend
        .register(Registration::new(
            targets[3].node().clone(),
            Duration::from_secs(30),
        ))
        .await
        .unwrap();
    let mut events = agents[0].events();
    agents[0].watch_round(&mut state, false).await;
    let mut split = None;
    while let Ok(ev) = events.try_recv() {
        if let FormationEvent::SplitDetected(groups) = ev {
            split = Some(groups);
        }
    }
    let groups = split.expect("the split is reported");
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert!(
        groups.iter().any(|g| g == &vec![targets[3].node().clone()]),
        "{groups:?}"
    );
    assert_eq!(agents[0].metrics().splits, 1);
}

/// The failure policy: `Stop` returns the error after the retries, `Ignore` runs
/// standalone and says why.
#[tokio::test(flavor = "multi_thread")]
async fn the_failure_policy_is_followed() {
    use autocluster::formation::FailurePolicy;
    let epmd = Epmd::start().await;
    let nodes = erl_nodes(&epmd, 1).await;
    // The probe node holds another cookie: every call to the managed node fails.
    let probe = Node::builder(
        format!("{}@{}", unique_name("agent"), host_of(nodes[0].name()))
            .parse()
            .unwrap(),
        Cookie::new("wrong").unwrap(),
    )
    .epmd_port(epmd.port())
    .start()
    .await
    .unwrap();
    let name: NodeName = nodes[0].name().parse().unwrap();
    let target = Arc::new(ErlangMesh::new(probe, name.clone()));
    let backend = Arc::new(MemoryBackend::new());
    let cfg = FormationConfig {
        max_attempts: 2,
        ..quick()
    };
    let started = Instant::now();
    let err = Agent::new(backend.clone(), target.clone(), cfg.clone())
        .run()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cookie"), "{err}");
    assert!(
        err.to_string().contains(name.as_str()),
        "names the node: {err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let formed = Agent::new(
        backend.clone(),
        target,
        FormationConfig {
            failure: FailurePolicy::Ignore,
            ..cfg
        },
    )
    .run()
    .await
    .unwrap();
    match formed.outcome {
        Outcome::Standalone { error } => assert!(error.contains("cookie"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(formed.attempts, 2);
    assert!(formed.registration.is_none());
    assert!(
        backend.list_nodes().await.unwrap().is_empty(),
        "nothing registered"
    );
    assert!(
        backend.lock_holder().is_none(),
        "the lock was released on the failing path"
    );
}
