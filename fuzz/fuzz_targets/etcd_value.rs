//! The etcd backend's reading of a node key's value (JSON written by RabbitMQ or by us).
//!
//! Whatever parses must survive a round trip through the value the backend writes: the
//! same node, address and metadata.
#![no_main]

use autocluster::fuzzing::{etcd_node_value, etcd_registration_value};
use autocluster_fuzz::check;
use libfuzzer_sys::fuzz_target;

const KEY: &str = "/rabbitmq/discovery/rabbitmq/clusters/default/nodes/rabbit@host";

fuzz_target!(|data: &[u8]| {
    let Ok(node) = check("etcd node value", data.len(), || {
        etcd_node_value(KEY, data, 42)
    }) else {
        return;
    };
    assert_eq!(node.order, 42);
    let mut extra = node.metadata.clone();
    extra.remove("lease_id");
    extra.remove("ttl");
    let value = etcd_registration_value(&node.node, 7, 61, node.address.as_deref(), &extra);
    let back = etcd_node_value(KEY, value.as_bytes(), 42).expect("our own value parses");
    assert_eq!(back.node, node.node);
    assert_eq!(back.address, node.address);
    extra.insert("lease_id".into(), "7".into());
    extra.insert("ttl".into(), "61".into());
    assert_eq!(back.metadata, extra);
});
