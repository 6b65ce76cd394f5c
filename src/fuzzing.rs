//! Internals exposed for the fuzz targets in `fuzz/`, as rustls (`internal`) and quinn
//! (`fuzzing`) do. **Not part of the API**: anything here may change or disappear in any
//! release.
//!
//! The wire parsers (EPMD, handshake, frames, terms) are public API already; what lives
//! here are the backends' answer parsers, which the backends call with the bytes a
//! server sent. They are compiled whatever the features, so that the fuzz crate builds
//! without kube, etcd-client or tonic.

use std::collections::BTreeMap;

use crate::NodeName;
use crate::backend::consul::{ConsulConfig, wire as consul_wire};
use crate::backend::{BackendError, RegisteredNode};

/// etcd: a node key's value (RabbitMQ's JSON or ours), as the etcd backend reads it.
pub fn etcd_node_value(
    key: &str,
    value: &[u8],
    create_revision: i64,
) -> Result<RegisteredNode, BackendError> {
    crate::backend::etcd::parse_node_value(key, value, create_revision)
}

/// etcd: the value the etcd backend writes for a node.
pub fn etcd_registration_value(
    node: &NodeName,
    lease_id: i64,
    ttl_secs: i64,
    address: Option<&str>,
    metadata: &BTreeMap<String, String>,
) -> String {
    crate::backend::etcd::registration_value(node, lease_id, ttl_secs, address, metadata)
}

/// Consul: the answer to `GET /v1/health/service/<service>`, mapped to nodes under
/// `config`.
pub fn consul_health(
    config: &ConsulConfig,
    body: &[u8],
) -> Result<Vec<RegisteredNode>, BackendError> {
    consul_wire::health_answer(config, "/v1/health/service/fuzz", body)
}

/// Consul: the answer to `GET /v1/kv/<key>`; returns how many entries it lists.
pub fn consul_kv(body: &[u8]) -> Result<usize, BackendError> {
    consul_wire::from_json::<Vec<consul_wire::KvEntry>>("/v1/kv/fuzz", body).map(|v| v.len())
}

/// Consul: the answer to `PUT /v1/session/create`; returns the session id.
pub fn consul_session(body: &[u8]) -> Result<String, BackendError> {
    consul_wire::from_json::<consul_wire::SessionId>("/v1/session/create", body).map(|s| s.id)
}

/// Consul: a `true`/`false` answer (KV acquire and release, session destroy).
pub fn consul_bool(body: &[u8]) -> Result<bool, BackendError> {
    consul_wire::from_json::<bool>("/v1/kv/fuzz?acquire", body)
}
