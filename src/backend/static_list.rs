//! [`StaticBackend`]: a fixed list of nodes from configuration, like RabbitMQ's
//! `classic_config` peer discovery.
//!
//! No registration and no lock (both return [`BackendError::Unsupported`]); instead it
//! offers a [deterministic seed](super::Backend::deterministic_seed): the configured seed,
//! or else the first node listed. Every node reads the same list, so every node picks the
//! same seed, and nodes starting together cannot form separate clusters.
//!
//! Nodes are listed in configuration order (`order` = position, from 0).
//!
//! ```
//! use autocluster::backend::{Backend, StaticBackend, StaticConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = StaticBackend::new(StaticConfig::new(["rabbit@b".parse()?, "rabbit@a".parse()?]))?;
//! let nodes = backend.list_nodes().await?;
//! assert_eq!(nodes[0].node.as_str(), "rabbit@b");
//! let seed = backend.deterministic_seed(&"rabbit@a".parse()?).await?;
//! assert_eq!(seed.unwrap().as_str(), "rabbit@b");
//! assert!(!backend.supports_lock());
//! # Ok(())
//! # }
//! ```
//!
//! # Configuration
//!
//! | map key | RabbitMQ key | environment | meaning | default |
//! |---|---|---|---|---|
//! | `backend` | `cluster_formation.peer_discovery_backend` | `AUTOCLUSTER_TYPE` | `static` (or `classic_config`) | |
//! | `static_nodes` (comma-separated) | `cluster_formation.classic_config.nodes.$index` | `AUTOCLUSTER_STATIC_NODES` (comma-separated) | the nodes, in order | required |
//! | `static_seed` | | `AUTOCLUSTER_STATIC_SEED` | the seed; must be one of the nodes | the first node |
//!
//! A node listed twice, an invalid node name or a seed that is not listed is a
//! configuration error naming the key.

use super::config::{self, Setting};
use super::{Backend, BackendError, RegisteredNode};
use crate::NodeName;

const NAME: &str = "static";

/// The registry's entry: always built.
pub(crate) const KIND: super::registry::BackendKind = super::registry::BackendKind {
    name: NAME,
    aliases: &["classic_config", "classic"],
    feature: None,
    settings: SETTINGS,
    build: Some(|values| {
        Ok(Box::new(StaticBackend::new(StaticConfig::from_values(
            values,
        )?)?))
    }),
};

pub(crate) const SETTINGS: &[Setting] = &[
    Setting::new(
        "static_nodes",
        &["AUTOCLUSTER_STATIC_NODES"],
        &["cluster_formation.classic_config.nodes.$index"],
    )
    .list(),
    Setting::new("static_seed", &["AUTOCLUSTER_STATIC_SEED"], &[]),
];

/// The static backend's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticConfig {
    /// The nodes, in order.
    pub nodes: Vec<NodeName>,
    /// The seed, if not the first node.
    pub seed: Option<NodeName>,
}

impl StaticConfig {
    /// A list of nodes; the seed is the first.
    pub fn new<I: IntoIterator<Item = NodeName>>(nodes: I) -> StaticConfig {
        StaticConfig {
            nodes: nodes.into_iter().collect(),
            seed: None,
        }
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: NodeName) -> StaticConfig {
        self.seed = Some(seed);
        self
    }

    config::settings_constructors!(StaticConfig, "The configuration");

    fn from_values(values: config::Values) -> Result<StaticConfig, BackendError> {
        let mut nodes = Vec::new();
        for found in values.list("static_nodes") {
            let node: NodeName = found
                .value
                .parse()
                .map_err(|e| BackendError::config(&found.source, format!("{e}")))?;
            nodes.push(node);
        }
        if nodes.is_empty() {
            return Err(BackendError::config(
                "static_nodes",
                "no nodes configured: set static_nodes, cluster_formation.classic_config.nodes.1 ..., \
                 or AUTOCLUSTER_STATIC_NODES",
            ));
        }
        let seed = match values.get("static_seed") {
            None => None,
            Some(found) => Some(
                found
                    .value
                    .trim()
                    .parse::<NodeName>()
                    .map_err(|e| BackendError::config(&found.source, format!("{e}")))?,
            ),
        };
        let config = StaticConfig { nodes, seed };
        config
            .validate()
            .map_err(|e| match (e, values.list_source("static_nodes")) {
                (BackendError::Config { key, detail }, Some(source)) if key == "static_nodes" => {
                    BackendError::config(source, detail)
                }
                (BackendError::Config { key, detail }, _) if key == "static_seed" => {
                    BackendError::config(
                        values
                            .get("static_seed")
                            .map(|f| f.source.clone())
                            .unwrap_or(key),
                        detail,
                    )
                }
                (e, _) => e,
            })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), BackendError> {
        if self.nodes.is_empty() {
            return Err(BackendError::config("static_nodes", "no nodes configured"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for node in &self.nodes {
            if !seen.insert(node) {
                return Err(BackendError::config(
                    "static_nodes",
                    format!("{node} is listed twice"),
                ));
            }
        }
        if let Some(seed) = &self.seed
            && !seen.contains(seed)
        {
            return Err(BackendError::config(
                "static_seed",
                format!("{seed} is not one of the listed nodes"),
            ));
        }
        Ok(())
    }
}

/// The static backend: lists the configured nodes.
#[derive(Debug, Clone)]
pub struct StaticBackend {
    config: StaticConfig,
}

impl StaticBackend {
    /// A backend over `config`; an empty list, a duplicate or a seed that is not listed is
    /// an error.
    pub fn new(config: StaticConfig) -> Result<StaticBackend, BackendError> {
        config.validate()?;
        Ok(StaticBackend { config })
    }

    /// The configuration.
    pub fn config(&self) -> &StaticConfig {
        &self.config
    }
}

#[async_trait::async_trait]
impl Backend for StaticBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn lists_contact_points(&self) -> bool {
        true
    }

    fn supports_registration(&self) -> bool {
        false
    }

    fn supports_lock(&self) -> bool {
        false
    }

    async fn list_nodes(&self) -> Result<Vec<RegisteredNode>, BackendError> {
        Ok(self
            .config
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| RegisteredNode::new(node.clone(), i as u64))
            .collect())
    }

    async fn deterministic_seed(
        &self,
        _local: &NodeName,
    ) -> Result<Option<NodeName>, BackendError> {
        Ok(self
            .config
            .seed
            .clone()
            .or_else(|| self.config.nodes.first().cloned()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rabbitmq_classic_config_keys() {
        let config = StaticConfig::from_map(&map(&[
            (
                "cluster_formation.peer_discovery_backend",
                "rabbit_peer_discovery_classic_config",
            ),
            ("cluster_formation.classic_config.nodes.2", "rabbit@b"),
            ("cluster_formation.classic_config.nodes.1", "rabbit@a"),
            ("cluster_formation.node_cleanup.interval", "30"),
        ]))
        .unwrap();
        let names: Vec<&str> = config.nodes.iter().map(|n| n.as_str()).collect();
        assert_eq!(names, ["rabbit@a", "rabbit@b"]);
    }

    #[test]
    fn errors_name_the_key() {
        let err = StaticConfig::from_map(&map(&[(
            "cluster_formation.classic_config.nodes.1",
            "nohost",
        )]))
        .unwrap_err();
        assert!(
            matches!(&err, BackendError::Config { key, .. } if key == "cluster_formation.classic_config.nodes.1"),
            "{err}"
        );
        let err = StaticConfig::from_map(&map(&[("static_nodes", "a@h, a@h")])).unwrap_err();
        assert!(
            matches!(&err, BackendError::Config { key, detail } if key == "static_nodes" && detail.contains("twice")),
            "{err}"
        );
        let err = StaticConfig::from_vars([
            ("AUTOCLUSTER_STATIC_NODES".to_string(), "a@h".to_string()),
            ("AUTOCLUSTER_STATIC_SEED".to_string(), "b@h".to_string()),
        ])
        .unwrap_err();
        assert!(
            matches!(&err, BackendError::Config { key, .. } if key == "AUTOCLUSTER_STATIC_SEED"),
            "{err}"
        );
        let err = StaticConfig::from_map(&map(&[])).unwrap_err();
        assert!(err.to_string().contains("no nodes"), "{err}");
        let err = StaticConfig::from_map(&map(&[("static_nodes", "a@h"), ("etcd_host", "x")]))
            .unwrap_err();
        assert!(err.to_string().contains("etcd backend"), "{err}");
    }

    #[tokio::test]
    async fn seed_and_capabilities() {
        let backend = StaticBackend::new(
            StaticConfig::from_vars([
                (
                    "AUTOCLUSTER_STATIC_NODES".to_string(),
                    "a@h,b@h,c@h".to_string(),
                ),
                ("AUTOCLUSTER_STATIC_SEED".to_string(), "b@h".to_string()),
            ])
            .unwrap(),
        )
        .unwrap();
        let local: NodeName = "c@h".parse().unwrap();
        assert_eq!(
            backend
                .deterministic_seed(&local)
                .await
                .unwrap()
                .unwrap()
                .as_str(),
            "b@h"
        );
        assert!(matches!(
            backend
                .register(super::super::Registration::new(
                    local.clone(),
                    std::time::Duration::from_secs(1)
                ))
                .await,
            Err(BackendError::Unsupported {
                backend: "static",
                ..
            })
        ));
        let nodes = backend.list_nodes().await.unwrap();
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[2].order, 2);
    }
}
