//! Cluster formation of real Erlang nodes: agents started at the same instant end in
//! exactly one cluster, every time.

use std::sync::Arc;
use std::time::Duration;

use autocluster::backend::{Backend, MemoryBackend};
use autocluster::formation::{Agent, ErlangMesh, FormationConfig, Outcome};
use autocluster::{Cookie, Node, NodeName};

use crate::common::{Epmd, ErlNode, ErlOptions, unique_name};

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

/// Starts `n` erl nodes and one agent per node, all at once; returns each node's view.
async fn form_once(epmd: &Epmd, nodes: &mut [ErlNode], backend: Arc<dyn Backend>) -> Vec<Outcome> {
    let probe = Node::builder(
        format!("{}@{}", unique_name("agent"), host_of(nodes[0].name()))
            .parse()
            .unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .epmd_port(epmd.port())
    .start()
    .await
    .unwrap();
    let agents: Vec<Agent> = nodes
        .iter()
        .map(|n| {
            let target = Arc::new(ErlangMesh::new(probe.clone(), n.name().parse().unwrap()));
            Agent::new(backend.clone(), target, quick())
        })
        .collect();
    let runs: Vec<_> = agents
        .iter()
        .map(|a| {
            let a = a.clone();
            tokio::spawn(async move { a.run().await })
        })
        .collect();
    let mut outcomes = Vec::new();
    let mut formed = Vec::new();
    for r in runs {
        let f = r.await.unwrap().unwrap();
        outcomes.push(f.outcome.clone());
        formed.push(f);
    }
    drop(formed);
    outcomes
}

async fn views(nodes: &mut [ErlNode]) -> Vec<String> {
    let mut v = Vec::new();
    for n in nodes.iter_mut() {
        v.push(n.eval("lists:sort([node() | nodes()])").await);
    }
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn three_erlang_nodes_form_one_cluster_every_time() {
    let epmd = Epmd::start().await;
    for round in 0..5 {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(ErlNode::start(ErlOptions::new(epmd.port())).await);
        }
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let outcomes = form_once(&epmd, &mut nodes, backend).await;
        let formed_new = outcomes
            .iter()
            .filter(|o| **o == Outcome::FormedNew)
            .count();
        assert_eq!(formed_new, 1, "round {round}: {outcomes:?}");
        let views = views(&mut nodes).await;
        assert!(
            views.iter().all(|v| v == &views[0]),
            "round {round}: {views:?}"
        );
        let members: Vec<&str> = nodes.iter().map(|n| n.name()).collect();
        for m in members {
            assert!(
                views[0].contains(m),
                "round {round}: {m} missing from {}",
                views[0]
            );
        }
        let _ = NodeName::new(nodes[0].name()).unwrap();
    }
}
