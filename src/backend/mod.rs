//! Peer discovery backends: where a node finds the other nodes of its cluster.
//!
//! Operators already run a registry: etcd, Consul, Kubernetes, DNS, or just a list in a
//! config file. Each is a [`Backend`], and the formation engine codes against the trait
//! only, so every backend must give the same answers in the same situations. The
//! conformance suite ([`conformance`], crate feature `testing`) checks that they do;
//! every backend of the crate runs it in `tests/integration/conformance.rs`.
//! The [`registry`] lists every backend, with its names, settings and feature.
//!
//! | backend | type | registration | lock | deterministic seed | feature |
//! |---|---|---|---|---|---|
//! | `memory` | [`MemoryBackend`] | yes (TTL) | yes (lease, fencing) | no | always |
//! | `static` | [`StaticBackend`] | no | no | configured seed, or the first node listed | always |
//! | `etcd` | [`EtcdBackend`](etcd::EtcdBackend) | yes (lease) | yes (etcd Lock API) | no | `etcd` |
//! | `consul` | [`ConsulBackend`](consul::ConsulBackend) | yes (service with a TTL check) | yes (session + KV key) | no | `consul` |
//! | `kubernetes` | [`KubernetesBackend`](kubernetes::KubernetesBackend) | no (Kubernetes registers pods) | yes (`Lease`) | StatefulSet: the lowest ordinal | `kubernetes` |
//! | `dns` | [`DnsBackend`](dns::DnsBackend) | no | no | the alphabetically first node | `dns` |
//!
//! # Semantics every backend follows
//!
//! * **An error is never an empty list.** [`Backend::list_nodes`] returns every registered
//!   node, or a [`BackendError`]: an unreachable, failing or misbehaving backend (refused
//!   connection, timeout, garbage answer) is an error, and
//!   [`BackendError::is_transient`] says whether to retry. Reading an outage as "no
//!   members" is how other tools have forgotten whole clusters.
//! * **Every network call is bounded** by the backend's configured timeout; a TCP
//!   connection that accepts and never answers gives [`BackendError::Timeout`].
//! * **Registration order**: [`RegisteredNode::order`] is lower for a node registered
//!   earlier (etcd `create_revision`, Consul `CreateIndex`, a counter). Nodes are listed in
//!   that order, ties broken by name.
//! * **Registration** ([`Backend::register`]) has a TTL. The returned
//!   [`RegistrationHandle`] refreshes it in the background every TTL/3, reports failures
//!   as [`RegistrationEvent`]s and at warn/error log level, registers again when the
//!   backend lost it, and deregisters on [`RegistrationHandle::deregister`] or when the
//!   last clone is dropped. See [`keepalive`].
//! * **The startup lock** ([`Backend::lock`]) has its own lease TTL, independent of the
//!   node TTL, and a wait timeout ([`BackendError::LockTimeout`]). The [`LockGuard`] carries a
//!   fencing token that grows with every acquisition, keeps the lease alive while held,
//!   and [`LockGuard::release`] reports a lock lost or stolen meanwhile
//!   ([`BackendError::LockLost`]). A holder that dies frees the lock within the lease TTL
//!   plus the backend's stated expiry delay.
//! * **Capabilities, not surprises**: a backend without registration or lock says so
//!   ([`Backend::supports_registration`], [`Backend::supports_lock`]) and returns
//!   [`BackendError::Unsupported`] from the call. Backends without a lock offer a
//!   [`Backend::deterministic_seed`] instead: every node computes the same seed and the
//!   others join it, so nodes starting together cannot form separate clusters.
//!
//! # Stated bounds
//!
//! What each backend promises, and the conformance suite asserts:
//!
//! | backend | dead registrant gone after | dead lock holder's lock free after | one call when the server is down or hung |
//! |---|---|---|---|
//! | memory | TTL | lock TTL | immediate |
//! | static | — | — | immediate |
//! | etcd | TTL + 1 s (TTL rounded up to whole seconds and to etcd's minimum lease TTL) | lock TTL + 1 s | `timeout` (default 5 s) per endpoint tried |
//! | Consul | check TTL + 1 s (then `critical`, no longer listed) | 2 × session TTL + lock-delay (Consul invalidates a session up to 2 × TTL after its last renewal; session TTL at least 10 s, lock-delay 15 s by default) | `timeout` (default 5 s); a blocking query `wait` + `timeout` |
//! | Kubernetes | — (the endpoints follow the pods) | lease duration (whole seconds) + poll interval (1 s) | `timeout` (default 5 s) |
//! | DNS | — (the records follow the orchestrator) | — | `timeout` (default 5 s) for the whole listing, reverse lookups included |
//!
//! The DNS backend treats NXDOMAIN and a name without records as a (transient) error, not
//! as an empty list: a headless Service answers that while none of its pods is ready.
//!
//! # Configuration
//!
//! Each backend has a typed config (e.g. [`StaticConfig`], [`etcd::EtcdConfig`]) with
//! `from_env()` and `from_map()`; [`from_env`] and [`from_map`] pick the backend
//! (`AUTOCLUSTER_TYPE`, or the `backend` / `cluster_formation.peer_discovery_backend`
//! key). Names follow rabbitmq-autocluster (`ETCD_HOST`, `CLUSTER_NAME`, ...) and
//! RabbitMQ's `cluster_formation.*` keys, so an operator migrating from either recognises
//! them; each backend's module documents its table.
//!
//! An unknown or misspelled key in a map is an error naming it, never ignored; so is an
//! unknown environment variable under the crate's prefix `AUTOCLUSTER_` (every setting
//! can also be spelled with that prefix, e.g. `AUTOCLUSTER_ETCD_NODE_TTL`, which is
//! checked strictly). Variables of other tools (`ETCDCTL_*`, `KUBERNETES_*`, etcd's own
//! `ETCD_*` server flags) are not ours to reject. Keys owned by the formation engine
//! (rabbitmq-autocluster's `AUTOCLUSTER_FAILURE`, `AUTOCLUSTER_CLEANUP`,
//! `CLEANUP_INTERVAL`, ..., RabbitMQ's `cluster_formation.node_cleanup.*`, ...) are
//! accepted and left to it.
//!
//! ```
//! use std::collections::BTreeMap;
//! use autocluster::backend::{self, Backend};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), autocluster::backend::BackendError> {
//! let config: BTreeMap<String, String> = [
//!     ("cluster_formation.peer_discovery_backend", "classic_config"),
//!     ("cluster_formation.classic_config.nodes.1", "rabbit@node1"),
//!     ("cluster_formation.classic_config.nodes.2", "rabbit@node2"),
//! ]
//! .into_iter()
//! .map(|(k, v)| (k.to_string(), v.to_string()))
//! .collect();
//! let backend = backend::from_map(&config)?;
//! assert_eq!(backend.name(), "static");
//! let nodes = backend.list_nodes().await?;
//! assert_eq!(nodes[0].node.as_str(), "rabbit@node1");
//!
//! // A misspelled key is an error that names it.
//! let mut typo = config.clone();
//! typo.insert("cluster_formation.classic_config.node.3".into(), "rabbit@node3".into());
//! let err = backend::from_map(&typo).unwrap_err();
//! assert!(err.to_string().contains("cluster_formation.classic_config.node.3"));
//! # Ok(())
//! # }
//! ```
//!
//! # Writing a backend
//!
//! Implement [`Backend`]; for registration implement a [`RegistrationSession`] (refresh,
//! re-register, deregister) and hand it to [`RegistrationHandle::spawn`]; for a lock
//! implement a [`LockSession`] and hand it to [`LockGuard::spawn`]. The keep-alive,
//! retry, logging and event logic is shared. Then run the [`conformance`] suite against
//! it: a backend outside this crate enables the `testing` feature in its
//! dev-dependencies for that.
//!
//! A backend inside this crate is, besides its module (its settings table and its
//! registry entry `KIND`), one line of the registry's table below the module
//! declarations in this file and one row of the table above, its feature in
//! `Cargo.toml`, one call of [`conformance::run`] in `tests/integration/conformance.rs`,
//! and one row in `docs/configuration.md` linking to its settings table (in its module's
//! documentation, where a test checks every setting is): the settings parser, [`from_map`], [`from_env`] and
//! the examples' flags and help texts find it through the [`registry`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::NodeName;

pub(crate) mod config;
#[cfg(feature = "testing")]
pub mod conformance;
mod error;
pub mod keepalive;
pub mod registry;

// The backends, one module each, and the registry's table of them: one line per backend.
pub mod consul;
pub mod dns;
pub mod etcd;
pub mod kubernetes;
pub mod memory;
pub mod static_list;

const KINDS: &[registry::BackendKind] = &[
    memory::KIND,
    static_list::KIND,
    etcd::KIND,
    consul::KIND,
    kubernetes::KIND,
    dns::KIND,
];

pub use config::ENV_PREFIX;
pub use error::{BackendError, with_timeout};
pub use keepalive::{
    KeepAliveOptions, LockGuard, LockSession, Refresh, RegistrationEvent, RegistrationHandle,
    RegistrationSession,
};
pub use memory::MemoryBackend;
pub use registry::BackendKind;
pub use static_list::{StaticBackend, StaticConfig};

/// The most nodes a backend returns from one listing; a larger answer is
/// [`BackendError::InvalidResponse`] rather than an unbounded allocation.
pub const MAX_LISTED_NODES: usize = 10_000;

/// A node as a backend lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredNode {
    /// The Erlang node name.
    pub node: NodeName,
    /// Registration order: lower means registered earlier (etcd `create_revision`, Consul
    /// `CreateIndex`, a counter, the position in a static list).
    pub order: u64,
    /// An address the backend knows for the node (host or IP, maybe with a port), if any.
    pub address: Option<String>,
    /// Whatever else the backend knows, as strings (etcd: `lease_id`, `ttl`).
    pub metadata: BTreeMap<String, String>,
}

impl RegisteredNode {
    /// A node with no address or metadata.
    pub fn new(node: NodeName, order: u64) -> RegisteredNode {
        RegisteredNode {
            node,
            order,
            address: None,
            metadata: BTreeMap::new(),
        }
    }
}

/// What to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The node to register.
    pub node: NodeName,
    /// How long the registration lives without a refresh. Backends round it up to their
    /// granularity (etcd: whole seconds, at least its minimum lease TTL).
    pub ttl: Duration,
    /// An address to publish with it, if the backend stores one.
    pub address: Option<String>,
    /// Extra string data to publish, if the backend stores any.
    pub metadata: BTreeMap<String, String>,
}

impl Registration {
    /// A registration of `node` with `ttl`, no address and no metadata.
    pub fn new(node: NodeName, ttl: Duration) -> Registration {
        Registration {
            node,
            ttl,
            address: None,
            metadata: BTreeMap::new(),
        }
    }

    /// Sets the address.
    pub fn with_address(mut self, address: impl Into<String>) -> Registration {
        self.address = Some(address.into());
        self
    }

    /// Adds a metadata entry.
    pub fn with_metadata(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Registration {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// How to take the startup lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRequest {
    /// Who asks: the node name, shown as the holder.
    pub owner: String,
    /// The lock's lease: a holder that stops refreshing loses the lock after this long.
    /// Independent of the node TTL.
    pub ttl: Duration,
    /// Give up with [`BackendError::LockTimeout`] after waiting this long.
    pub wait: Duration,
}

impl LockRequest {
    /// A request by `owner` with `ttl` and `wait`.
    pub fn new(owner: impl Into<String>, ttl: Duration, wait: Duration) -> LockRequest {
        LockRequest {
            owner: owner.into(),
            ttl,
            wait,
        }
    }
}

/// Timings the operator configured for a backend (node TTL, lock TTL, lock wait), so that
/// the formation engine builds its [`Registration`] and [`LockRequest`] from them instead
/// of silently ignoring `ETCD_NODE_TTL` or `LOCK_WAIT_TIME`. `None`: not configured, use
/// the engine's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// The node registration TTL.
    pub node_ttl: Option<Duration>,
    /// The startup lock's lease TTL.
    pub lock_ttl: Option<Duration>,
    /// How long to wait for the startup lock.
    pub lock_wait: Option<Duration>,
}

/// A peer discovery backend. See the [module documentation](self) for the semantics every
/// implementation follows.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// The backend's name: `"memory"`, `"static"`, `"etcd"`, ...
    fn name(&self) -> &'static str;

    /// Whether [`register`](Self::register) is supported.
    fn supports_registration(&self) -> bool;

    /// Whether [`lock`](Self::lock) is supported.
    fn supports_lock(&self) -> bool;

    /// Every registered node, in registration order (ties by name). A failing,
    /// unreachable or misbehaving backend is an `Err`, never `Ok(vec![])`.
    async fn list_nodes(&self) -> Result<Vec<RegisteredNode>, BackendError>;

    /// Registers a node with a TTL; the handle keeps it alive in the background.
    /// Default: [`BackendError::Unsupported`].
    async fn register(
        &self,
        registration: Registration,
    ) -> Result<RegistrationHandle, BackendError> {
        let _ = registration;
        Err(BackendError::unsupported(self.name(), "registration"))
    }

    /// Takes the cluster's startup lock, waiting at most `request.wait`.
    /// Default: [`BackendError::Unsupported`].
    async fn lock(&self, request: LockRequest) -> Result<LockGuard, BackendError> {
        let _ = request;
        Err(BackendError::unsupported(self.name(), "lock"))
    }

    /// For backends without a lock: the node every node should join first, computed the
    /// same way on every node (static: the configured seed or the first listed; DNS: the
    /// alphabetically first; Kubernetes StatefulSet: the lowest ordinal). `local` is the
    /// node asking. Default: `Ok(None)`.
    async fn deterministic_seed(&self, local: &NodeName) -> Result<Option<NodeName>, BackendError> {
        let _ = local;
        Ok(None)
    }

    /// The timings the operator configured for this backend. Default: none.
    fn timings(&self) -> Timings {
        Timings::default()
    }

    /// Whether [`list_nodes`](Self::list_nodes) lists nodes whatever their membership (a
    /// static list, DNS records, Kubernetes endpoints): the listing is then the formation
    /// engine's contact points
    /// ([`FormGate`](crate::formation::FormGate)). Default: false (nodes register once
    /// they are members).
    fn lists_contact_points(&self) -> bool {
        false
    }

    /// For a backend whose nodes register once they are members: a backend of the same
    /// kind, on the same service, where nodes register as *candidates* before they are
    /// members, under keys RabbitMQ's own peer discovery does not read. The formation
    /// engine's contact points ([`FormGate`](crate::formation::FormGate)). Default: none.
    fn candidates(&self) -> Option<Arc<dyn Backend>> {
        None
    }
}

/// Sorts listed nodes the way every backend returns them: by registration order, then by
/// name.
pub fn sort_nodes(nodes: &mut [RegisteredNode]) {
    nodes.sort_by(|a, b| a.order.cmp(&b.order).then_with(|| a.node.cmp(&b.node)));
}

/// Builds the backend that `AUTOCLUSTER_TYPE` selects, configured from the process
/// environment. An unknown `AUTOCLUSTER_*` variable is an error naming it.
pub fn from_env() -> Result<Box<dyn Backend>, BackendError> {
    from_vars(config::process_env()?)
}

/// [`from_env`] over the given variables instead of the process environment (for tests,
/// and for tools that read variables from elsewhere).
pub fn from_vars<I>(vars: I) -> Result<Box<dyn Backend>, BackendError>
where
    I: IntoIterator<Item = (String, String)>,
{
    let vars: Vec<(String, String)> = vars.into_iter().collect();
    let Some((source, value)) = vars.iter().find(|(k, _)| k == "AUTOCLUSTER_TYPE") else {
        return Err(BackendError::config(
            "AUTOCLUSTER_TYPE",
            format!("not set: choose {}", registry::names_for_humans()),
        ));
    };
    registry::select(source, value)?.from_vars(vars)
}

/// Builds the backend that the `backend` key (rabbitmq-autocluster) or
/// `cluster_formation.peer_discovery_backend` (RabbitMQ) selects, configured from the
/// same map. Any key that the selected backend does not know is an error naming it.
pub fn from_map(map: &BTreeMap<String, String>) -> Result<Box<dyn Backend>, BackendError> {
    let selectors = ["backend", "cluster_formation.peer_discovery_backend"];
    let Some((source, value)) = selectors.iter().find_map(|k| map.get_key_value(*k)) else {
        return Err(BackendError::config(
            "backend",
            "not set: set `backend` or `cluster_formation.peer_discovery_backend`",
        ));
    };
    registry::select(source, value)?.from_map(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn from_vars_picks_the_backend() {
        let backend = from_vars(vars(&[("AUTOCLUSTER_TYPE", "memory")])).unwrap();
        assert_eq!(backend.name(), "memory");
        let backend = from_vars(vars(&[
            ("AUTOCLUSTER_TYPE", "static"),
            ("AUTOCLUSTER_STATIC_NODES", "rabbit@a,rabbit@b"),
        ]))
        .unwrap();
        assert_eq!(backend.name(), "static");
        let err = from_vars(vars(&[])).unwrap_err();
        assert!(err.to_string().contains("AUTOCLUSTER_TYPE"), "{err}");
        #[cfg(not(feature = "dns"))]
        {
            let err = from_vars(vars(&[("AUTOCLUSTER_TYPE", "dns")])).unwrap_err();
            assert!(err.to_string().contains("not available"), "{err}");
        }
        #[cfg(feature = "dns")]
        {
            let err = from_vars(vars(&[("AUTOCLUSTER_TYPE", "dns")])).unwrap_err();
            assert!(err.to_string().contains("AUTOCLUSTER_HOST"), "{err}");
        }
        let err = from_vars(vars(&[
            ("AUTOCLUSTER_TYPE", "memory"),
            ("AUTOCLUSTER_TPYE", "x"),
        ]))
        .unwrap_err();
        assert!(
            matches!(&err, BackendError::Config { key, .. } if key == "AUTOCLUSTER_TPYE"),
            "{err}"
        );
    }

    #[cfg(all(feature = "consul", feature = "kubernetes", feature = "dns"))]
    #[tokio::test]
    async fn from_map_and_vars_build_consul_kubernetes_and_dns() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let consul = from_map(&map(&[
            (
                "cluster_formation.peer_discovery_backend",
                "rabbit_peer_discovery_consul",
            ),
            ("cluster_formation.consul.host", "127.0.0.1"),
        ]))
        .unwrap();
        assert_eq!(consul.name(), "consul");
        assert!(consul.supports_registration() && consul.supports_lock());
        let k8s = from_map(&map(&[
            ("cluster_formation.peer_discovery_backend", "k8s"),
            ("cluster_formation.k8s.service_name", "rmq-headless"),
        ]))
        .unwrap();
        assert_eq!(k8s.name(), "kubernetes");
        assert!(!k8s.supports_registration() && k8s.supports_lock());
        let dns = from_vars(vars(&[
            ("AUTOCLUSTER_TYPE", "dns"),
            ("AUTOCLUSTER_HOST", "rmq.local"),
            ("AUTOCLUSTER_DNS_SERVERS", "127.0.0.1:5353"),
        ]))
        .unwrap();
        assert_eq!(dns.name(), "dns");
        // A Consul key given to the DNS backend is named as such.
        let err = from_map(&map(&[
            ("backend", "dns"),
            ("autocluster_host", "x"),
            ("consul_svc", "y"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("consul backend"), "{err}");
    }

    #[test]
    fn sort_by_order_then_name() {
        let n = |s: &str, o| RegisteredNode::new(s.parse().unwrap(), o);
        let mut nodes = vec![n("b@h", 2), n("c@h", 1), n("a@h", 2)];
        sort_nodes(&mut nodes);
        let names: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(names, ["c@h", "a@h", "b@h"]);
    }
}
