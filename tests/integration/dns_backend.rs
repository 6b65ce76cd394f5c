//! The DNS backend against a real dnsmasq (`common/dnsmasq.rs` lists its records): A and
//! AAAA records with reverse lookups, short and long names, SRV, NXDOMAIN and empty
//! answers as errors, an address without PTR record, and dnsmasq stopped.
#![cfg(feature = "dns")]

use std::time::{Duration, Instant};

use autocluster::backend::dns::{DnsBackend, DnsConfig, DnsRecord};
use autocluster::backend::{Backend, BackendError};

use crate::common::Dnsmasq;

fn names(nodes: &[autocluster::backend::RegisteredNode]) -> Vec<String> {
    nodes.iter().map(|n| n.node.to_string()).collect()
}

fn config(server: &Dnsmasq, name: &str) -> DnsConfig {
    DnsConfig::new(name)
        .with_servers([server.addr])
        .with_timeout(Duration::from_secs(1))
}

#[tokio::test]
async fn a_and_aaaa_records_with_reverse_lookups_short_and_long() {
    let server = Dnsmasq::start().await;
    let short = DnsBackend::new(config(&server, "svc.rmq.test")).unwrap();
    let nodes = short.list_nodes().await.unwrap();
    // 192.0.2.2 and fd00::2 are the same host: listed once.
    assert_eq!(
        names(&nodes),
        ["rabbit@rmq-0", "rabbit@rmq-1", "rabbit@rmq-2"]
    );
    assert_eq!(nodes[0].address.as_deref(), Some("192.0.2.1"));
    assert_eq!(nodes.iter().map(|n| n.order).collect::<Vec<_>>(), [0, 1, 2]);
    let long = DnsBackend::new(config(&server, "svc.rmq.test").with_long_names(true)).unwrap();
    assert_eq!(
        names(&long.list_nodes().await.unwrap()),
        [
            "rabbit@rmq-0.rmq.test",
            "rabbit@rmq-1.rmq.test",
            "rabbit@rmq-2.rmq.test"
        ]
    );
    let seed = long
        .deterministic_seed(&"rabbit@rmq-2.rmq.test".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(seed.unwrap().as_str(), "rabbit@rmq-0.rmq.test");
}

#[tokio::test]
async fn srv_records_name_their_targets() {
    let server = Dnsmasq::start().await;
    let backend = DnsBackend::new(
        config(&server, "_epmd._tcp.rmq.test")
            .with_record(DnsRecord::Srv)
            .with_long_names(true)
            .with_node_prefix("app"),
    )
    .unwrap();
    let nodes = backend.list_nodes().await.unwrap();
    assert_eq!(names(&nodes), ["app@rmq-0.rmq.test", "app@rmq-1.rmq.test"]);
    assert_eq!(nodes[0].metadata["port"], "4369");
}

#[tokio::test]
async fn nxdomain_and_empty_answers_are_errors_not_empty_lists() {
    let server = Dnsmasq::start().await;
    let missing = DnsBackend::new(config(&server, "missing.rmq.test")).unwrap();
    let err = missing.list_nodes().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Unavailable { detail, .. } if detail.contains("NXDOMAIN")),
        "{err:?}"
    );
    assert!(err.is_transient());
    // The SRV name exists, but has no A record.
    let no_a = DnsBackend::new(config(&server, "_epmd._tcp.rmq.test")).unwrap();
    let err = no_a.list_nodes().await.unwrap_err();
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
    // And a name without SRV records, in SRV mode.
    let no_srv =
        DnsBackend::new(config(&server, "rmq-0.rmq.test").with_record(DnsRecord::Srv)).unwrap();
    assert!(no_srv.list_nodes().await.is_err());
    // An address whose host name is unknown fails the listing instead of vanishing.
    let no_ptr = DnsBackend::new(config(&server, "nopt.rmq.test")).unwrap();
    let err = no_ptr.list_nodes().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::InvalidResponse { detail, .. } if detail.contains("192.0.2.9")),
        "{err:?}"
    );
    // The seed needs a listing: an error, not None.
    assert!(
        missing
            .deterministic_seed(&"rabbit@x".parse().unwrap())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_stopped_server_is_an_error_within_the_timeout() {
    let mut server = Dnsmasq::start().await;
    let backend = DnsBackend::new(config(&server, "svc.rmq.test")).unwrap();
    assert_eq!(backend.list_nodes().await.unwrap().len(), 3);
    server.stop().await;
    let start = Instant::now();
    let err = backend.list_nodes().await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_millis(2000),
        "{:?}",
        start.elapsed()
    );
    assert!(err.is_transient(), "{err:?}");
}
