use super::*;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_are_rabbitmqs() {
    let config = EtcdConfig::from_map(&map(&[])).unwrap();
    assert_eq!(config.endpoints, ["http://localhost:2379"]);
    assert_eq!(
        config.nodes_prefix(),
        "/rabbitmq/discovery/rabbitmq/clusters/default/nodes/"
    );
    assert_eq!(
        config.lock_name(),
        "/rabbitmq/locks/rabbitmq/clusters/default/registration"
    );
    assert_eq!(config.node_ttl, Duration::from_secs(61));
    assert_eq!(config.lock_ttl, Duration::from_secs(70));
    assert_eq!(config.lock_wait, Duration::from_secs(300));
}

#[test]
fn rabbitmq_keys() {
    let config = EtcdConfig::from_map(&map(&[
        (
            "cluster_formation.peer_discovery_backend",
            "rabbit_peer_discovery_etcd",
        ),
        ("cluster_formation.etcd.endpoints.1", "one:2379"),
        ("cluster_formation.etcd.endpoints.2", "http://two:2380"),
        ("cluster_formation.etcd.key_prefix", "p"),
        ("cluster_formation.etcd.cluster_name", "c"),
        ("cluster_formation.etcd.node_ttl", "40"),
        ("cluster_formation.etcd.lock_timeout", "30"),
        ("cluster_formation.etcd.username", "root"),
        ("cluster_formation.etcd.password", "secret"),
    ]))
    .unwrap();
    assert_eq!(config.endpoints, ["http://one:2379", "http://two:2380"]);
    assert_eq!(
        config.node_key(&"rabbit@h".parse().unwrap()),
        "/rabbitmq/discovery/p/clusters/c/nodes/rabbit@h"
    );
    assert_eq!(config.node_ttl, Duration::from_secs(40));
    assert_eq!(config.lock_wait, Duration::from_secs(30));
    assert_eq!(config.credentials, Some(("root".into(), "secret".into())));
    assert!(!format!("{config:?}").contains("secret"));
}

#[test]
fn autocluster_environment() {
    let config = EtcdConfig::from_vars(vars(&[
        ("AUTOCLUSTER_TYPE", "etcd"),
        ("ETCD_SCHEME", "http"),
        ("ETCD_HOST", "etcd.local"),
        ("ETCD_PORT", "4001"),
        ("ETCD_PREFIX", "pre"),
        ("ETCD_NODE_TTL", "30"),
        ("CLUSTER_NAME", "cl"),
        ("LOCK_WAIT_TIME", "120"),
        ("ETCDCTL_ENDPOINTS", "ignored"),
    ]))
    .unwrap();
    assert_eq!(config.endpoints, ["http://etcd.local:4001"]);
    assert_eq!(
        config.lock_name(),
        "/rabbitmq/locks/pre/clusters/cl/registration"
    );
    assert_eq!(config.timings().node_ttl, Some(Duration::from_secs(30)));
    assert_eq!(config.timings().lock_wait, Some(Duration::from_secs(120)));

    let err = EtcdConfig::from_vars(vars(&[("AUTOCLUSTER_ETCD_TTL", "30")])).unwrap_err();
    assert!(
        matches!(&err, BackendError::Config { key, .. } if key == "AUTOCLUSTER_ETCD_TTL"),
        "{err}"
    );
    let err = EtcdConfig::from_vars(vars(&[("ETCD_NODE_TTL", "thirty")])).unwrap_err();
    assert!(
        matches!(&err, BackendError::Config { key, .. } if key == "ETCD_NODE_TTL"),
        "{err}"
    );
    let err = EtcdConfig::from_vars(vars(&[("ETCD_PORT", "70000")])).unwrap_err();
    assert!(
        matches!(&err, BackendError::Config { key, .. } if key == "ETCD_PORT"),
        "{err}"
    );
}

#[test]
fn autoclusters_misspelled_key_is_an_error() {
    // Fuel CCP set `etcd_ttl`; rabbitmq-autocluster silently ignored it.
    let err = EtcdConfig::from_map(&map(&[("etcd_ttl", "30")])).unwrap_err();
    assert!(
        matches!(&err, BackendError::Config { key, .. } if key == "etcd_ttl"),
        "{err}"
    );
}

#[test]
fn tls_settings() {
    let config = EtcdConfig::from_map(&map(&[
        ("cluster_formation.etcd.endpoints.1", "etcd:2379"),
        ("cluster_formation.etcd.ssl_options.cacertfile", "/ca.pem"),
        ("cluster_formation.etcd.ssl_options.certfile", "/c.pem"),
        ("cluster_formation.etcd.ssl_options.keyfile", "/k.pem"),
        ("cluster_formation.etcd.ssl_options.verify", "verify_peer"),
    ]))
    .unwrap();
    assert_eq!(config.endpoints, ["https://etcd:2379"]);
    assert_eq!(config.tls.unwrap().ca_file, PathBuf::from("/ca.pem"));
    let err = EtcdConfig::from_map(&map(&[("etcd_scheme", "https")])).unwrap_err();
    assert!(err.to_string().contains("CA"), "{err}");
    let err = EtcdConfig::from_map(&map(&[
        ("etcd_cacertfile", "/ca.pem"),
        ("cluster_formation.etcd.ssl_options.verify", "verify_none"),
    ]))
    .unwrap_err();
    assert!(err.to_string().contains("verify_none"), "{err}");
    let err = EtcdConfig::from_map(&map(&[
        ("etcd_cacertfile", "/ca.pem"),
        ("etcd_certfile", "/c.pem"),
    ]))
    .unwrap_err();
    assert!(err.to_string().contains("both"), "{err}");
}

#[test]
fn endpoints_are_normalized_and_checked() {
    assert_eq!(normalize_endpoint("h:1", "http").unwrap(), "http://h:1");
    assert_eq!(normalize_endpoint("h", "https").unwrap(), "https://h:2379");
    assert_eq!(
        normalize_endpoint("HTTP://h:1/", "http").unwrap(),
        "http://h:1"
    );
    assert_eq!(
        normalize_endpoint("[::1]:2379", "http").unwrap(),
        "http://[::1]:2379"
    );
    assert!(normalize_endpoint("ftp://h:1", "http").is_err());
    assert!(normalize_endpoint("h:x", "http").is_err());
    assert!(normalize_endpoint("h:1/path", "http").is_err());
    let err = EtcdConfig::from_map(&map(&[("cluster_formation.etcd.endpoints.1", "h:port")]))
        .unwrap_err();
    assert!(
        matches!(&err, BackendError::Config { key, .. } if key == "cluster_formation.etcd.endpoints.1"),
        "{err}"
    );
    assert!(EtcdConfig::new(["bad endpoint"]).validate().is_err());
}

#[test]
fn ttl_rounding() {
    assert_eq!(ttl_seconds(Duration::from_millis(1)), 1);
    assert_eq!(ttl_seconds(Duration::from_millis(1500)), 2);
    assert_eq!(ttl_seconds(Duration::from_secs(61)), 61);
}

#[test]
fn value_is_rabbitmqs_json() {
    let node: NodeName = "rabbit@h".parse().unwrap();
    assert_eq!(
        registration_value(&node, 7587862319498462213, 61, None, &BTreeMap::new()),
        r#"{"node":"rabbit@h","lease_id":7587862319498462213,"ttl":61}"#
    );
    let meta: BTreeMap<String, String> = [("k\"".to_string(), "v".to_string())].into();
    assert_eq!(
        registration_value(&node, 1, 2, Some("10.0.0.1"), &meta),
        r#"{"node":"rabbit@h","lease_id":1,"ttl":2,"address":"10.0.0.1","metadata":{"k\"":"v"}}"#
    );
}

#[test]
fn values_parse_or_name_the_key() {
    let key = "/rabbitmq/discovery/rabbitmq/clusters/default/nodes/rabbit@h";
    // Exactly what RabbitMQ 3.10 writes (rabbit_json:encode of a map with integers).
    let node = parse_node_value(
        key,
        br#"{"lease_id":7587862319498462213,"node":"rabbit@h","ttl":61}"#,
        42,
    )
    .unwrap();
    assert_eq!(node.node.as_str(), "rabbit@h");
    assert_eq!(node.order, 42);
    assert_eq!(node.metadata["lease_id"], "7587862319498462213");
    assert_eq!(node.metadata["ttl"], "61");
    let ours = registration_value(
        &node.node,
        5,
        6,
        Some("a"),
        &[("x".to_string(), "y".to_string())].into(),
    );
    let back = parse_node_value(key, ours.as_bytes(), 1).unwrap();
    assert_eq!(back.address.as_deref(), Some("a"));
    assert_eq!(back.metadata["x"], "y");
    for garbage in [
        &b"not json"[..],
        b"[1]",
        br#"{"name":"x@y"}"#,
        br#"{"node":"nohost"}"#,
        br#"{"node":1}"#,
        b"",
    ] {
        let err = parse_node_value(key, garbage, 1).unwrap_err();
        assert!(
            matches!(&err, BackendError::InvalidResponse { detail, .. } if detail.contains(key)),
            "{err}"
        );
    }
    let huge = vec![b' '; MAX_VALUE_LEN + 1];
    assert!(parse_node_value(key, &huge, 1).is_err());
}

#[test]
fn value_fields_keep_serde_json_semantics() {
    let key = "/k/nodes/rabbit@h";
    let parse = |v: &str| parse_node_value(key, v.as_bytes(), 3);
    // Numbers, booleans and null as serde_json prints them; later duplicates win.
    let n =
        parse(r#"{"node":"x@y","node":"rabbit@h","lease_id":1.5e300,"ttl":null,"extra":[[{}]]}"#)
            .unwrap();
    assert_eq!(n.node.as_str(), "rabbit@h");
    assert_eq!(
        n.metadata["lease_id"],
        serde_json::json!(1.5e300).to_string()
    );
    assert_eq!(n.metadata["ttl"], "null");
    let n = parse(r#"{"node":"rabbit@h","lease_id":-7,"ttl":true,"address":5}"#).unwrap();
    assert_eq!(n.metadata["lease_id"], "-7");
    assert_eq!(n.metadata["ttl"], "true");
    assert_eq!(n.address, None);
    // Arrays and objects where a scalar is expected are ignored.
    let n = parse(r#"{"node":"rabbit@h","lease_id":[1,2],"ttl":{"a":1}}"#).unwrap();
    assert!(n.metadata.is_empty());
    // Metadata: string values only; the last duplicate decides; lease_id and ttl
    // are not overridden.
    let n = parse(
        r#"{"node":"rabbit@h","ttl":9,"metadata":{"a":"1","a":2,"b":"x","b":"y","ttl":"no","c":[]}}"#,
    )
    .unwrap();
    assert_eq!(
        n.metadata,
        [("b", "y"), ("ttl", "9")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into()
    );
    // A string node that is not a node name, a later non-string node, escapes.
    assert!(parse(r#"{"node":"rabbit@h","node":1}"#).is_err());
    let n = parse(r#"{"n\u006fde":"rabbit@\u0068"}"#).unwrap();
    assert_eq!(n.node.as_str(), "rabbit@h");
    // Not JSON: trailing data, bad nesting.
    assert!(parse(r#"{"node":"rabbit@h"} x"#).is_err());
    assert!(parse(&"[".repeat(200)).is_err());
}

proptest::proptest! {
    /// What the backend writes reads back as the same node, address and metadata.
    #[test]
    fn registration_values_round_trip(
        alive in "[a-z][a-z0-9_-]{0,10}",
        host in "[a-z][a-z0-9.-]{0,20}",
        lease_id in proptest::prelude::any::<i64>(),
        ttl in 1i64..100_000,
        address in proptest::option::of("\\PC{0,20}"),
        metadata in proptest::collection::btree_map("\\PC{1,10}", "\\PC{0,10}", 0..4),
    ) {
        let node = NodeName::from_parts(&alive, &host).unwrap();
        let value = registration_value(&node, lease_id, ttl, address.as_deref(), &metadata);
        let back = parse_node_value("/p/nodes/x", value.as_bytes(), 5).unwrap();
        proptest::prop_assert_eq!(&back.node, &node);
        proptest::prop_assert_eq!(back.order, 5);
        proptest::prop_assert_eq!(back.address, address);
        let mut expected = metadata.clone();
        expected.insert("lease_id".into(), lease_id.to_string());
        expected.insert("ttl".into(), ttl.to_string());
        proptest::prop_assert_eq!(back.metadata, expected);
    }
}
