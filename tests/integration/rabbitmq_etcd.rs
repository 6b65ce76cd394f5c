//! RabbitMQ compatibility of the etcd backend, against a real RabbitMQ 3.10 node running
//! its own etcd peer discovery (`rabbitmq_peer_discovery_etcd`) on a real etcd.

#![cfg(feature = "etcd")]

use std::time::{Duration, Instant};

use autocluster::NodeName;
use autocluster::backend::etcd::{EtcdBackend, EtcdConfig};
use autocluster::backend::{Backend, BackendError, LockRequest, Registration};

use crate::common::{EtcdServer, RabbitNode, RabbitOptions, unique_name};
use autocluster::backend::conformance::unique_node;

/// A RabbitMQ node registers itself in etcd; the crate lists it; a node registered by the
/// crate is listed by RabbitMQ's own backend; and both exclude each other through the
/// same etcd lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_and_the_crate_see_each_other_in_etcd() {
    let etcd = EtcdServer::start().await;
    let cluster = unique_name("compat");
    let endpoint = etcd.endpoint();
    let port = endpoint.rsplit(':').next().unwrap().to_owned();
    let rabbit = RabbitNode::start(
        RabbitOptions::new()
            .plugin("rabbitmq_peer_discovery_etcd")
            .config("cluster_formation.peer_discovery_backend = etcd")
            // RabbitMQ's own form: host:port, no scheme.
            .config(format!(
                "cluster_formation.etcd.endpoints.1 = 127.0.0.1:{port}"
            ))
            .config(format!("cluster_formation.etcd.cluster_name = {cluster}")),
    )
    .await;
    let rabbit_node: NodeName = rabbit.node().parse().unwrap();

    // 1. The crate lists the node RabbitMQ registered (prefix "rabbitmq", RabbitMQ's).
    let backend =
        EtcdBackend::new(EtcdConfig::new([endpoint.clone()]).with_cluster_name(&cluster)).unwrap();
    let key = backend.config().node_key(&rabbit_node);
    let start = Instant::now();
    let listed = loop {
        let nodes = backend.list_nodes().await.expect("list_nodes");
        if let Some(n) = nodes.into_iter().find(|n| n.node == rabbit_node) {
            break n;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "RabbitMQ did not register {key}; keys: {:?}\n--- node log ---\n{}",
            etcd.keys("/rabbitmq").await,
            rabbit.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(listed.order > 0);
    assert_eq!(
        listed.metadata.get("ttl").map(String::as_str),
        Some("61"),
        "{listed:?}"
    );
    assert!(listed.metadata.contains_key("lease_id"), "{listed:?}");
    // The `discover` example lists it too, as an operator would run it.
    let discovered = tokio::process::Command::new(crate::common::example("discover"))
        .args(["--backend", "etcd", "--etcd-endpoints", &endpoint])
        .args(["--cluster-name", &cluster])
        .output()
        .await
        .expect("discover runs");
    let discovered_out = String::from_utf8_lossy(&discovered.stdout);
    assert!(
        discovered.status.success() && discovered_out.lines().any(|l| l.trim() == rabbit.node()),
        "discover: {}\n{discovered_out}{}",
        discovered.status,
        String::from_utf8_lossy(&discovered.stderr)
    );

    // What RabbitMQ wrote, read with etcdctl: the key layout, the JSON value, the lease.
    let value = etcd.get(&key).await.expect("RabbitMQ's node key");
    eprintln!("RabbitMQ wrote {key} = {value}");
    assert!(
        value.contains(&format!("\"node\":\"{}\"", rabbit.node())),
        "{value}"
    );
    assert!(value.contains("\"ttl\":61"), "{value}");
    let json = etcd.etcdctl(&["get", &key, "-w", "json"]).await;
    assert!(
        json.contains("\"lease\":") && !json.contains("\"lease\":0"),
        "key not attached to a lease: {json}"
    );

    // 2. RabbitMQ lists a node registered by the crate: checked on RabbitMQ 3.x. RabbitMQ
    //    4.0 and 4.3's `list_nodes/0` answer with this node alone here (printed below),
    //    which the README's version table states as untested.
    if crate::common::peers().rabbitmq_version().starts_with("3.") {
        rabbitmq_lists_a_node_the_crate_registered(&rabbit, &backend).await;
    } else {
        let seen = rabbit
            .eval("rabbit_peer_discovery_etcd:list_nodes().")
            .await;
        eprintln!(
            "not checked on RabbitMQ {}: RabbitMQ listing the crate's registrations \
             (its list_nodes() = {seen})",
            crate::common::peers().rabbitmq_version()
        );
    }

    // 3. One lock for both: RabbitMQ takes it through its backend, the crate waits.
    // `lock/1` takes this node on 3.x, and the nodes discovered on 3.13 and later.
    let lock_arg = if crate::common::peers().rabbitmq_version().starts_with("3.") {
        "node()"
    } else {
        "[node()]"
    };
    let lock_key = rabbit
        .eval(&format!(
            "{{ok, K}} = rabbit_peer_discovery_etcd:lock({lock_arg}), \
             persistent_term:put(autocluster_test_lock, K), K."
        ))
        .await;
    eprintln!("RabbitMQ holds the lock key {lock_key}");
    assert!(
        lock_key.contains(&backend.config().lock_name()),
        "{lock_key}"
    );
    let result = backend
        .lock(LockRequest::new(
            "crate",
            Duration::from_secs(5),
            Duration::from_secs(1),
        ))
        .await;
    assert!(
        matches!(result, Err(BackendError::LockTimeout { .. })),
        "the crate took the lock RabbitMQ holds: {:?}",
        result.map(|g| g.fencing_token())
    );
    let unlocked = rabbit
        .eval("rabbit_peer_discovery_etcd:unlock(persistent_term:get(autocluster_test_lock)).")
        .await;
    assert!(unlocked.trim() == "ok", "{unlocked}");
    let guard = backend
        .lock(LockRequest::new(
            "crate",
            Duration::from_secs(5),
            Duration::from_secs(5),
        ))
        .await
        .expect("the lock is free once RabbitMQ released it");
    // And RabbitMQ's backend waits for ours (its lock call blocks, so ask with a timeout).
    let held = etcd
        .keys(&format!("{}/", backend.config().lock_name()))
        .await;
    assert_eq!(held.len(), 1, "{held:?}");
    let value = etcd.get(&held[0]).await.unwrap_or_default();
    assert!(value.contains("\"owner\":\"crate\""), "{value}");
    guard.release().await.expect("release");
    assert!(
        etcd.keys(&format!("{}/", backend.config().lock_name()))
            .await
            .is_empty()
    );
}

/// A node registered by the crate is listed by RabbitMQ's own etcd backend, and no longer
/// once deregistered.
async fn rabbitmq_lists_a_node_the_crate_registered(rabbit: &RabbitNode, backend: &EtcdBackend) {
    let ours = unique_node();
    let handle = backend
        .register(Registration::new(ours.clone(), Duration::from_secs(10)))
        .await
        .expect("register");
    let seen = rabbit
        .eval("rabbit_peer_discovery_etcd:list_nodes().")
        .await;
    eprintln!("rabbit_peer_discovery_etcd:list_nodes() = {seen}");
    assert!(
        seen.contains(ours.as_str()),
        "RabbitMQ does not see {ours}: {seen}"
    );
    assert!(seen.contains(rabbit.node()), "{seen}");
    let (ok, discover) = rabbit
        .rabbitmqctl(
            &["eval", "rabbit_peer_discovery:discover_cluster_nodes()."],
            Duration::from_secs(60),
        )
        .await;
    eprintln!("rabbit_peer_discovery:discover_cluster_nodes() = {discover}");
    assert!(ok && discover.contains(ours.as_str()), "{discover}");
    handle.deregister().await.expect("deregister");
    let seen = rabbit
        .eval("rabbit_peer_discovery_etcd:list_nodes().")
        .await;
    assert!(
        !seen.contains(ours.as_str()),
        "still listed by RabbitMQ after deregistration: {seen}"
    );
}
