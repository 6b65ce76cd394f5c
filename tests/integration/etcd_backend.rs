//! etcd-specific behaviour beyond the conformance suite, against a real etcd.

#![cfg(feature = "etcd")]

use std::time::{Duration, Instant};

use autocluster::backend::etcd::{EtcdBackend, EtcdConfig, EtcdTls};
use autocluster::backend::{Backend, BackendError, Registration, RegistrationEvent};

use crate::common::EtcdServer;
use autocluster::backend::conformance::unique_node;

/// Prefix and cluster name are honoured: keys land where configured, and two clusters
/// (or two prefixes) do not see each other's nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_and_cluster_name_are_honoured() {
    let etcd = EtcdServer::start().await;
    let config = |prefix: &str, cluster: &str| {
        EtcdConfig::new([etcd.endpoint()])
            .with_prefix(prefix)
            .with_cluster_name(cluster)
            .with_timeout(Duration::from_secs(2))
    };
    let a = EtcdBackend::new(config("p1", "c1")).unwrap();
    let b = EtcdBackend::new(config("p1", "c2")).unwrap();
    let c = EtcdBackend::new(config("p2", "c1")).unwrap();
    let (na, nb, nc) = (unique_node(), unique_node(), unique_node());
    let ttl = Duration::from_secs(5);
    let _ha = a
        .register(Registration::new(na.clone(), ttl))
        .await
        .unwrap();
    let _hb = b
        .register(Registration::new(nb.clone(), ttl))
        .await
        .unwrap();
    let _hc = c
        .register(Registration::new(nc.clone(), ttl))
        .await
        .unwrap();
    for (backend, node) in [(&a, &na), (&b, &nb), (&c, &nc)] {
        let listed: Vec<_> = backend
            .list_nodes()
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.node)
            .collect();
        assert_eq!(listed, std::slice::from_ref(node));
    }
    let keys = etcd.keys("/rabbitmq/").await;
    assert!(
        keys.contains(&format!("/rabbitmq/discovery/p1/clusters/c1/nodes/{na}")),
        "{keys:?}"
    );
    assert!(
        keys.contains(&format!("/rabbitmq/discovery/p1/clusters/c2/nodes/{nb}")),
        "{keys:?}"
    );
    assert!(
        keys.contains(&format!("/rabbitmq/discovery/p2/clusters/c1/nodes/{nc}")),
        "{keys:?}"
    );
    let value = etcd.get(&a.config().node_key(&na)).await.unwrap();
    assert!(
        value.starts_with(&format!("{{\"node\":\"{na}\",\"lease_id\":")),
        "{value}"
    );
    assert!(value.ends_with(",\"ttl\":5}"), "{value}");
}

/// A node key deleted by an operator (`etcdctl del`) is noticed and registered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_key_is_registered_again() {
    let etcd = EtcdServer::start().await;
    let backend =
        EtcdBackend::new(EtcdConfig::new([etcd.endpoint()]).with_timeout(Duration::from_secs(2)))
            .unwrap();
    let node = unique_node();
    let handle = backend
        .register(Registration::new(node.clone(), Duration::from_secs(2)))
        .await
        .unwrap();
    let mut events = handle.subscribe();
    let key = backend.config().node_key(&node);
    etcd.etcdctl(&["del", &key]).await;
    let start = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
            Ok(Ok(RegistrationEvent::Reregistered)) => break,
            Ok(Ok(_)) => {}
            other => panic!("no re-registration: {other:?}"),
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "noticed only after {:?}",
        start.elapsed()
    );
    assert!(etcd.get(&key).await.is_some());
    handle.deregister().await.unwrap();
    assert!(etcd.get(&key).await.is_none());
}

/// User and password: the right ones work, wrong ones are `Unauthorized`, none at all is
/// an error too (never an empty list).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication() {
    let etcd = EtcdServer::start().await;
    etcd.etcdctl(&["user", "add", "root:rootpw"]).await;
    etcd.etcdctl(&["user", "add", "rabbit:s3cret"]).await;
    etcd.etcdctl(&["role", "add", "discovery"]).await;
    etcd.etcdctl(&[
        "role",
        "grant-permission",
        "discovery",
        "--prefix=true",
        "readwrite",
        "/rabbitmq/",
    ])
    .await;
    etcd.etcdctl(&["user", "grant-role", "rabbit", "discovery"])
        .await;
    etcd.etcdctl(&["auth", "enable"]).await;
    let config = || EtcdConfig::new([etcd.endpoint()]).with_timeout(Duration::from_secs(2));

    let good = EtcdBackend::new(config().with_credentials("rabbit", "s3cret")).unwrap();
    let node = unique_node();
    let handle = good
        .register(Registration::new(node.clone(), Duration::from_secs(3)))
        .await
        .unwrap();
    let listed = good.list_nodes().await.unwrap();
    assert_eq!(listed[0].node, node);

    let wrong = EtcdBackend::new(config().with_credentials("rabbit", "wrong")).unwrap();
    let result = wrong.list_nodes().await;
    assert!(
        matches!(result, Err(BackendError::Unauthorized { .. })),
        "{result:?}"
    );
    assert!(!result.unwrap_err().is_transient());

    let anonymous = EtcdBackend::new(config()).unwrap();
    let result = anonymous.list_nodes().await;
    assert!(
        result.is_err(),
        "anonymous listing with auth enabled: {result:?}"
    );
    eprintln!("anonymous: {}", result.unwrap_err());
    handle.deregister().await.unwrap();
}

/// TLS with a client certificate: works with the right CA and certificate; a client
/// without a certificate, or trusting another CA, gets a typed error in bounded time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let etcd = EtcdServer::start_tls().await;
    let certs = etcd.tls().unwrap().clone();
    let tls = EtcdTls {
        ca_file: certs.ca.clone(),
        cert_file: Some(certs.client_cert.clone()),
        key_file: Some(certs.client_key.clone()),
        server_name: None,
    };
    let endpoint = etcd.endpoint();
    assert!(endpoint.starts_with("https://"));
    let config = EtcdConfig::new([endpoint.clone()])
        .with_timeout(Duration::from_secs(2))
        .with_tls(tls.clone());
    let backend = EtcdBackend::new(config.clone()).unwrap();
    let node = unique_node();
    let handle = backend
        .register(Registration::new(node.clone(), Duration::from_secs(3)))
        .await
        .unwrap();
    assert_eq!(backend.list_nodes().await.unwrap()[0].node, node);
    handle.deregister().await.unwrap();

    // From a config map, RabbitMQ's spelling.
    let map: std::collections::BTreeMap<String, String> = [
        (
            "cluster_formation.etcd.endpoints.1",
            endpoint.trim_start_matches("https://").to_owned(),
        ),
        (
            "cluster_formation.etcd.ssl_options.cacertfile",
            certs.ca.display().to_string(),
        ),
        (
            "cluster_formation.etcd.ssl_options.certfile",
            certs.client_cert.display().to_string(),
        ),
        (
            "cluster_formation.etcd.ssl_options.keyfile",
            certs.client_key.display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let from_map = EtcdBackend::new(EtcdConfig::from_map(&map).unwrap()).unwrap();
    assert!(from_map.list_nodes().await.unwrap().is_empty());

    // No client certificate: refused by the server.
    let no_cert = EtcdBackend::new(
        EtcdConfig::new([endpoint.clone()])
            .with_timeout(Duration::from_secs(2))
            .with_tls(EtcdTls {
                cert_file: None,
                key_file: None,
                ..tls.clone()
            }),
    )
    .unwrap();
    let start = Instant::now();
    let result = no_cert.list_nodes().await;
    assert!(result.is_err(), "{result:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    eprintln!("without a client certificate: {}", result.unwrap_err());

    // Trusting another CA: the server certificate is rejected.
    let other = tempfile::tempdir().unwrap();
    let other_certs = crate::common::TestCerts::generate(other.path());
    let wrong_ca = EtcdBackend::new(
        EtcdConfig::new([endpoint])
            .with_timeout(Duration::from_secs(2))
            .with_tls(EtcdTls {
                ca_file: other_certs.ca,
                ..tls
            }),
    )
    .unwrap();
    let result = wrong_ca.list_nodes().await;
    assert!(result.is_err(), "{result:?}");
    eprintln!("with the wrong CA: {}", result.unwrap_err());
}

/// Several endpoints: one of them down does not stop the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_endpoints_one_down() {
    let etcd = EtcdServer::start().await;
    let dead = format!("http://127.0.0.1:{}", crate::common::free_port());
    let backend = EtcdBackend::new(
        EtcdConfig::new([dead, etcd.endpoint()]).with_timeout(Duration::from_secs(2)),
    )
    .unwrap();
    let node = unique_node();
    let handle = backend
        .register(Registration::new(node.clone(), Duration::from_secs(3)))
        .await
        .unwrap();
    for _ in 0..10 {
        assert_eq!(backend.list_nodes().await.unwrap()[0].node, node);
    }
    handle.deregister().await.unwrap();
}

/// Candidates (the form gate's contact points; kept apart from members, as the
/// conformance suite checks) are registered under `<prefix>/candidates`, a key
/// RabbitMQ's own etcd discovery never reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_live_under_a_prefix_of_their_own() {
    let etcd = EtcdServer::start().await;
    let backend = EtcdBackend::new(
        EtcdConfig::new([etcd.endpoint()])
            .with_cluster_name("c1")
            .with_timeout(Duration::from_secs(2)),
    )
    .unwrap();
    let candidate = unique_node();
    let c = backend
        .candidates()
        .expect("etcd keeps candidates")
        .register(Registration::new(candidate.clone(), Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(
        etcd.keys("/rabbitmq/").await,
        vec![format!(
            "/rabbitmq/discovery/rabbitmq/candidates/clusters/c1/nodes/{candidate}"
        )]
    );
    c.deregister().await.unwrap();
    assert_eq!(etcd.keys("/rabbitmq/").await, Vec::<String>::new());
}
