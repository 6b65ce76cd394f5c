//! Consul's JSON: the request bodies the backend sends and the answers it reads, as the
//! API documents them (<https://developer.hashicorp.com/consul/api-docs>), and the pure
//! mapping from a health listing to [`RegisteredNode`]s.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{ConsulConfig, NAME, go_duration};
use crate::NodeName;
use crate::backend::{BackendError, MAX_LISTED_NODES, RegisteredNode, Registration, sort_nodes};

/// `PUT /v1/agent/service/register` body (agent/service "Register Service").
#[derive(Debug, Serialize)]
pub(crate) struct ServiceRegistration {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Tags")]
    pub tags: Vec<String>,
    #[serde(rename = "Address", skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(rename = "Port")]
    pub port: u16,
    #[serde(rename = "Meta")]
    pub meta: BTreeMap<String, String>,
    #[serde(rename = "Check")]
    pub check: TtlCheck,
}

/// The service's TTL check (agent/check "Register Check" fields, embedded).
#[derive(Debug, Serialize)]
pub(crate) struct TtlCheck {
    #[serde(rename = "Notes")]
    pub notes: String,
    #[serde(rename = "TTL")]
    pub ttl: String,
    #[serde(rename = "Status")]
    pub status: &'static str,
    #[serde(
        rename = "DeregisterCriticalServiceAfter",
        skip_serializing_if = "Option::is_none"
    )]
    pub deregister_critical_service_after: Option<String>,
}

impl ServiceRegistration {
    pub fn new(config: &ConsulConfig, registration: &Registration) -> ServiceRegistration {
        let mut tags = vec![config.cluster_name.clone()];
        for tag in &config.service_tags {
            if !tags.contains(tag) {
                tags.push(tag.clone());
            }
        }
        let mut meta = registration.metadata.clone();
        meta.insert(
            "erlang-node-name".into(),
            registration.node.as_str().to_owned(),
        );
        meta.insert("cluster".into(), config.cluster_name.clone());
        ServiceRegistration {
            id: config.service_id(&registration.node),
            name: config.service.clone(),
            tags,
            address: registration
                .address
                .clone()
                .or_else(|| config.service_address.clone()),
            port: config.service_port,
            meta,
            check: TtlCheck {
                notes: format!(
                    "autocluster: {} passes this check every TTL/3",
                    registration.node
                ),
                ttl: go_duration(check_ttl(registration.ttl)),
                status: "passing",
                deregister_critical_service_after: config.deregister_after.map(go_duration),
            },
        }
    }
}

/// A check TTL as sent: whole milliseconds, at least 1 ms.
pub(crate) fn check_ttl(ttl: Duration) -> Duration {
    Duration::from_millis(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
}

/// `PUT /v1/session/create` body (session "Create Session").
#[derive(Debug, Serialize)]
pub(crate) struct SessionCreate {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "TTL")]
    pub ttl: String,
    #[serde(rename = "LockDelay")]
    pub lock_delay: String,
    #[serde(rename = "Behavior")]
    pub behavior: &'static str,
}

/// `{"ID": "..."}`: the session create answer.
#[derive(Debug, Deserialize)]
pub(crate) struct SessionId {
    #[serde(rename = "ID")]
    pub id: String,
}

/// One entry of `GET /v1/kv/<key>` (kv "Read Key").
#[derive(Debug, Deserialize)]
pub(crate) struct KvEntry {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "LockIndex", default)]
    pub lock_index: u64,
    #[serde(rename = "ModifyIndex")]
    pub modify_index: u64,
    #[serde(rename = "Session", default)]
    pub session: Option<String>,
}

/// One entry of `GET /v1/health/service/<service>` (health "List Service Instances for
/// Service").
#[derive(Debug, Deserialize)]
pub(crate) struct HealthEntry {
    #[serde(rename = "Node")]
    pub node: CatalogNode,
    #[serde(rename = "Service")]
    pub service: AgentService,
    #[serde(rename = "Checks", default)]
    pub checks: Vec<HealthCheck>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CatalogNode {
    #[serde(rename = "Node")]
    pub node: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AgentService {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(rename = "Port", default)]
    pub port: u16,
    #[serde(rename = "Tags", default)]
    pub tags: Option<Vec<String>>,
    #[serde(rename = "Meta", default)]
    pub meta: Option<BTreeMap<String, String>>,
    #[serde(rename = "CreateIndex")]
    pub create_index: u64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct HealthCheck {
    #[serde(rename = "Status")]
    pub status: String,
}

/// An answer body as text for error messages (at most 300 bytes, trimmed).
pub(crate) fn body_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.trim().to_owned()
}

/// Reads a JSON answer body into `T`; `path` names the request in the error.
pub(crate) fn from_json<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, BackendError> {
    serde_json::from_slice(body).map_err(|e| BackendError::InvalidResponse {
        backend: NAME,
        detail: format!("{path}: malformed JSON ({e}): {:?}", body_text(body)),
    })
}

/// The answer to `GET /v1/health/service/<service>`: the nodes it lists.
pub(crate) fn health_answer(
    config: &ConsulConfig,
    path: &str,
    body: &[u8],
) -> Result<Vec<RegisteredNode>, BackendError> {
    nodes_from_health(config, from_json(path, body)?)
}

/// Maps a health listing to nodes (see the module docs for the naming rules).
pub(crate) fn nodes_from_health(
    config: &ConsulConfig,
    entries: Vec<HealthEntry>,
) -> Result<Vec<RegisteredNode>, BackendError> {
    if entries.len() > MAX_LISTED_NODES {
        return Err(BackendError::InvalidResponse {
            backend: NAME,
            detail: format!(
                "more than {MAX_LISTED_NODES} instances of {}",
                config.service
            ),
        });
    }
    let mut nodes: BTreeMap<NodeName, RegisteredNode> = BTreeMap::new();
    for entry in entries {
        if config.include_warnings
            && !entry
                .checks
                .iter()
                .all(|c| c.status == "passing" || c.status == "warning")
        {
            continue;
        }
        let service = entry.service;
        // The server filters by tag already; an answer that did not is filtered here.
        if !service
            .tags
            .as_deref()
            .unwrap_or_default()
            .contains(&config.cluster_name)
        {
            continue;
        }
        let meta = service.meta.unwrap_or_default();
        let invalid = |detail: String| BackendError::InvalidResponse {
            backend: NAME,
            detail: format!("service {}: {detail}", service.id),
        };
        let node = match meta.get("erlang-node-name") {
            Some(name) => name
                .parse::<NodeName>()
                .map_err(|e| invalid(format!("meta erlang-node-name {name:?}: {e}")))?,
            None => {
                let host = if !service.address.is_empty() {
                    service.address.clone()
                } else if config.use_longname {
                    format!("{}.node.{}", entry.node.node, config.domain)
                } else {
                    entry.node.node.clone()
                };
                NodeName::from_parts(&config.node_prefix, &host)
                    .map_err(|e| invalid(format!("{host:?} does not make a node name: {e}")))?
            }
        };
        let mut listed = RegisteredNode::new(node.clone(), service.create_index);
        if !service.address.is_empty() {
            listed.address = Some(service.address.clone());
        }
        listed.metadata = meta;
        listed.metadata.remove("erlang-node-name");
        listed
            .metadata
            .insert("consul_service_id".into(), service.id.clone());
        listed
            .metadata
            .insert("consul_node".into(), entry.node.node.clone());
        listed
            .metadata
            .insert("port".into(), service.port.to_string());
        // The same node twice (re-registered under another ID): keep the older one.
        match nodes.get(&node) {
            Some(existing) if existing.order <= listed.order => {}
            _ => {
                nodes.insert(node, listed);
            }
        }
    }
    let mut nodes: Vec<RegisteredNode> = nodes.into_values().collect();
    sort_nodes(&mut nodes);
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ConsulConfig {
        ConsulConfig::new("localhost", 8500).with_cluster_name("c")
    }

    #[test]
    fn registration_body_is_consuls() {
        let registration = Registration::new("rabbit@h".parse().unwrap(), Duration::from_secs(30))
            .with_address("10.0.0.1")
            .with_metadata("zone", "a");
        let body = ServiceRegistration::new(
            &config().with_deregister_after(Duration::from_secs(90)),
            &registration,
        );
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["ID"], "rabbitmq:rabbit@h");
        assert_eq!(json["Name"], "rabbitmq");
        assert_eq!(json["Tags"], serde_json::json!(["c"]));
        assert_eq!(json["Address"], "10.0.0.1");
        assert_eq!(json["Port"], 5672);
        assert_eq!(
            json["Meta"],
            serde_json::json!({"erlang-node-name": "rabbit@h", "cluster": "c", "zone": "a"})
        );
        assert_eq!(json["Check"]["TTL"], "30s");
        assert_eq!(json["Check"]["Status"], "passing");
        assert_eq!(json["Check"]["DeregisterCriticalServiceAfter"], "90s");
    }

    #[test]
    fn health_listing_names_nodes() {
        let answer = r#"[
          {"Node": {"Node": "agent1", "Address": "10.0.0.9"},
           "Service": {"ID": "rabbitmq:rabbit@b", "Service": "rabbitmq", "Address": "",
                       "Port": 5672, "Tags": ["c"], "Meta": {"erlang-node-name": "rabbit@b", "cluster": "c"},
                       "CreateIndex": 20, "ModifyIndex": 21},
           "Checks": [{"Status": "passing"}, {"Status": "passing"}]},
          {"Node": {"Node": "agent2"},
           "Service": {"ID": "rabbitmq:10.0.0.2", "Service": "rabbitmq", "Address": "10.0.0.2",
                       "Port": 5672, "Tags": ["c"], "Meta": null, "CreateIndex": 10, "ModifyIndex": 10},
           "Checks": [{"Status": "warning"}]},
          {"Node": {"Node": "agent3"},
           "Service": {"ID": "rabbitmq", "Address": "", "Port": 5672, "Tags": ["c", "x"], "CreateIndex": 30, "ModifyIndex": 30},
           "Checks": [{"Status": "critical"}]},
          {"Node": {"Node": "agent4"},
           "Service": {"ID": "other", "Address": "", "Port": 5672, "Tags": ["d"], "CreateIndex": 40, "ModifyIndex": 40},
           "Checks": [{"Status": "critical"}]}
        ]"#;
        let entries: Vec<HealthEntry> = serde_json::from_str(answer).unwrap();
        let nodes = nodes_from_health(&config(), entries).unwrap();
        let names: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(names, ["rabbit@10.0.0.2", "rabbit@b", "rabbit@agent3"]);
        assert_eq!(nodes[1].order, 20);

        let entries: Vec<HealthEntry> = serde_json::from_str(answer).unwrap();
        let mut with_warnings = config().with_include_warnings(true);
        with_warnings.use_longname = true;
        let nodes = nodes_from_health(&with_warnings, entries).unwrap();
        let names: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(names, ["rabbit@10.0.0.2", "rabbit@b"]);

        let bad = r#"[{"Node": {"Node": "a"}, "Service": {"ID": "x", "Address": "", "Tags": ["c"],
            "Meta": {"erlang-node-name": "nohost"}, "CreateIndex": 1}, "Checks": []}]"#;
        let entries: Vec<HealthEntry> = serde_json::from_str(bad).unwrap();
        let err = nodes_from_health(&config(), entries).unwrap_err();
        assert!(
            matches!(&err, BackendError::InvalidResponse { detail, .. } if detail.contains("service x")),
            "{err}"
        );
    }
}
