//! The Consul backend (crate feature `consul`): service registration with a TTL check and
//! a startup lock through a session, over Consul's HTTP API.
//!
//! # HTTP client
//!
//! No maintained Consul crate covers the agent API (service registration with a TTL
//! check), so the backend speaks the few endpoints it needs itself, over **hyper** 1
//! (`hyper-util`'s pooled client) with TLS by **rustls and ring** (`hyper-rustls`). hyper
//! rather than reqwest because the `kubernetes` feature compiles hyper, hyper-util and
//! hyper-rustls anyway, so Consul adds almost nothing to a build that has both; and
//! because the client is built with an explicit ring crypto provider, it never depends on
//! (or panics for lack of) a process-wide rustls default.
//!
//! Every request is bounded by `timeout` (blocking queries by their `wait` plus
//! `timeout`), every response body is capped at [`MAX_RESPONSE_BYTES`], and JSON answers
//! must say `Content-Type: application/json`. Refused connections and 5xx answers are
//! [`BackendError::Unavailable`], 401/403 [`BackendError::Unauthorized`], other 4xx
//! [`BackendError::Rejected`], and malformed, mistyped or truncated answers
//! [`BackendError::InvalidResponse`].
//!
//! # What it does in Consul
//!
//! Endpoints from <https://developer.hashicorp.com/consul/api-docs>:
//!
//! * **register**: `PUT /v1/agent/service/register` with
//!   `{"ID": "<svc>:<node>", "Name": "<svc>", "Tags": ["<cluster>", <svc_tags>...],
//!   "Address": ..., "Port": ..., "Meta": {"erlang-node-name": "<node>", "cluster":
//!   "<cluster>", <metadata>...}, "Check": {"Notes": ..., "TTL": "<ttl>", "Status":
//!   "passing", "DeregisterCriticalServiceAfter": ...}}`. The check starts **passing**,
//!   so nodes starting together see each other at once. The ID contains the node name
//!   (RabbitMQ uses `<svc>:<address>`), so several nodes may share one agent.
//! * **keep-alive**: `PUT /v1/agent/check/pass/service:<id>` every TTL/3. An agent that
//!   lost the check answers 404 ("Unknown check ID", current agents) or 500 (older ones):
//!   both mean [`Refresh::Lost`](super::Refresh::Lost), and the service is registered
//!   again.
//! * **deregister**: `PUT /v1/agent/service/deregister/<id>` (a 404 means already gone).
//! * **list**: `GET /v1/health/service/<svc>?passing&tag=<cluster>` (without `passing`
//!   when warnings are included: then every check must be `passing` or `warning`). The node
//!   name is `Service.Meta["erlang-node-name"]`; for services registered without it (older
//!   RabbitMQ), `<node_prefix>@<Service.Address>`, or `<node_prefix>@<Node.Node>` plus the
//!   domain suffix with long names, as RabbitMQ does. [`RegisteredNode::order`](super::RegisteredNode::order) is the
//!   service's `CreateIndex`.
//! * **lock**: a session (`PUT /v1/session/create` with `TTL`, `LockDelay`, `Behavior:
//!   release`), renewed every TTL/3 (`PUT /v1/session/renew/<id>`), and the key
//!   `<lock_prefix>/<cluster>/startup_lock` taken with `PUT /v1/kv/<key>?acquire=<session>`
//!   (value: the owner as JSON). A waiter blocks on `GET /v1/kv/<key>?index=<X-Consul-Index>&wait=<s>`
//!   (a blocking query) until the key changes, then tries again. Release:
//!   `PUT /v1/kv/<key>?release=<session>`, then `PUT /v1/session/destroy/<id>`; a release
//!   that Consul answers `false` (the key is gone or held by another session) is
//!   [`BackendError::LockLost`].
//! * **fencing token**: the key's `ModifyIndex` right after our acquisition (the Raft index
//!   of the acquiring write). It grows with every acquisition, even across the key being
//!   deleted and created again, which `LockIndex` (reset with the key) does not.
//!
//! # Bounds
//!
//! * A registration whose keep-alive stops turns `critical` when its check TTL runs out
//!   and is no longer listed (it stays registered, `critical`, unless
//!   `deregister_after` is set): **TTL + 1 s** (the agent's sync to the servers).
//! * A lock holder that dies: Consul invalidates a session **up to 2 × its TTL** after
//!   the last renewal (it sets its timer to 2 × TTL), releases the key, and then refuses
//!   to hand the key out again for the session's **lock-delay** (15 s by default): the
//!   lock is free within **2 × lock TTL + lock-delay**. Consul accepts session TTLs between
//!   10 s and 24 h, so a shorter lock TTL is raised to [`ConsulConfig::min_session_ttl`]
//!   (10 s by default; lower it only for a server that accepts shorter TTLs).
//! * Every call: `timeout` (default 5 s).
//!
//! # Configuration
//!
//! | map key | RabbitMQ key | environment | meaning | default |
//! |---|---|---|---|---|
//! | `backend` | `cluster_formation.peer_discovery_backend` | `AUTOCLUSTER_TYPE` | `consul` (or `rabbit_peer_discovery_consul`) | |
//! | `consul_scheme` | `cluster_formation.consul.scheme` | `CONSUL_SCHEME` | `http` or `https` | `http` |
//! | `consul_host` | `cluster_formation.consul.host` | `CONSUL_HOST` | the agent's host | `localhost` |
//! | `consul_port` | `cluster_formation.consul.port` | `CONSUL_PORT` | the agent's port | `8500` |
//! | `consul_acl_token` | `cluster_formation.consul.acl_token` | `CONSUL_ACL_TOKEN` | ACL token (`X-Consul-Token`) | none |
//! | `cluster_name` | `cluster_formation.consul.cluster_name` | `CLUSTER_NAME` | the tag, the `cluster` meta, and part of the lock key | `default` |
//! | `consul_svc` | `cluster_formation.consul.svc` | `CONSUL_SVC` | the service name | `rabbitmq` |
//! | `consul_svc_addr` | `cluster_formation.consul.svc_addr` | `CONSUL_SVC_ADDR` | the address to register (if the registration has none) | none (the agent's) |
//! | `consul_svc_port` | `cluster_formation.consul.svc_port` | `CONSUL_SVC_PORT` | the port to register | `5672` |
//! | `consul_svc_ttl` | `cluster_formation.consul.svc_ttl` | `CONSUL_SVC_TTL` | node (check) TTL, seconds ([`Timings`]) | `30` |
//! | `consul_svc_tags` (comma-separated) | `cluster_formation.consul.svc_tags.$index` | `CONSUL_SVC_TAGS` (comma-separated) | extra tags | none |
//! | `consul_deregister_after` | `cluster_formation.consul.deregister_after` | `CONSUL_DEREGISTER_AFTER` | `DeregisterCriticalServiceAfter`, seconds | none |
//! | `consul_include_nodes_with_warnings` | `cluster_formation.consul.include_nodes_with_warnings` | `CONSUL_INCLUDE_NODES_WITH_WARNINGS` | list nodes whose checks warn | `false` |
//! | `consul_use_longname` | `cluster_formation.consul.use_longname` | `CONSUL_USE_LONGNAME` | long names for nodes without `erlang-node-name` meta | `false` |
//! | `consul_domain` | `cluster_formation.consul.domain_suffix` | `CONSUL_DOMAIN` | domain appended to Consul node names (long names) | `consul` |
//! | `node_prefix` | | `AUTOCLUSTER_NODE_PREFIX` | node name prefix for nodes without `erlang-node-name` meta | `rabbit` |
//! | `consul_lock_prefix` | `cluster_formation.consul.lock_prefix` | `CONSUL_LOCK_PREFIX` | KV prefix of the lock key | `rabbitmq` |
//! | `consul_lock_ttl` | | `AUTOCLUSTER_CONSUL_LOCK_TTL` | lock session TTL, seconds ([`Timings`]) | `30` |
//! | `consul_lock_delay` | | `AUTOCLUSTER_CONSUL_LOCK_DELAY` | the session's `LockDelay`, seconds (0 allowed) | `15` |
//! | `lock_wait_time` | `cluster_formation.consul.lock_wait_time`, `cluster_formation.consul.lock_timeout` | `LOCK_WAIT_TIME` | lock wait, seconds ([`Timings`]) | `300` |
//! | `consul_cacertfile` | `cluster_formation.consul.ssl_options.cacertfile` | `AUTOCLUSTER_CONSUL_CACERTFILE` | CA bundle (PEM) for `https` | the system's roots |
//! | `consul_certfile` | `cluster_formation.consul.ssl_options.certfile` | `AUTOCLUSTER_CONSUL_CERTFILE` | client certificate (PEM) | none |
//! | `consul_keyfile` | `cluster_formation.consul.ssl_options.keyfile` | `AUTOCLUSTER_CONSUL_KEYFILE` | client key (PEM) | none |
//! | `consul_ssl_verify` | `cluster_formation.consul.ssl_options.verify` | | only `verify_peer` | `verify_peer` |
//! | `consul_timeout` | | `AUTOCLUSTER_CONSUL_TIMEOUT` | bound on every call, seconds | `5` |
//!
//! Every environment variable can also be written with the `AUTOCLUSTER_` prefix
//! (`AUTOCLUSTER_CONSUL_HOST`, ...). RabbitMQ's `svc_addr_auto`, `svc_addr_nic`,
//! `svc_addr_use_nodename`, `svc_meta.*` and other `ssl_options.*` keys are rejected as
//! unsupported rather than ignored.
//!
//! ```
//! use std::collections::BTreeMap;
//! use autocluster::backend::consul::ConsulConfig;
//!
//! let map: BTreeMap<String, String> = [
//!     ("cluster_formation.peer_discovery_backend", "consul"),
//!     ("cluster_formation.consul.host", "consul.local"),
//!     ("cluster_formation.consul.svc", "rabbitmq"),
//!     ("cluster_formation.consul.cluster_name", "orders"),
//!     ("cluster_formation.consul.svc_ttl", "40"),
//! ]
//! .into_iter()
//! .map(|(k, v)| (k.to_string(), v.to_string()))
//! .collect();
//! let config = ConsulConfig::from_map(&map)?;
//! assert_eq!(config.base_url(), "http://consul.local:8500");
//! assert_eq!(config.lock_key(), "rabbitmq/orders/startup_lock");
//! assert_eq!(config.timings().node_ttl, Some(std::time::Duration::from_secs(40)));
//! # Ok::<(), autocluster::backend::BackendError>(())
//! ```

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::config::{self, Setting};
use super::{BackendError, KeepAliveOptions, Timings};
use crate::NodeName;

#[cfg(feature = "consul")]
pub use client::ConsulBackend;

const NAME: &str = "consul";

/// The registry's entry: the constructor is built with the `consul` feature only.
pub(crate) const KIND: super::registry::BackendKind = super::registry::BackendKind {
    name: NAME,
    aliases: &[],
    feature: Some("consul"),
    settings: SETTINGS,
    #[cfg(feature = "consul")]
    build: Some(|values| {
        Ok(Box::new(ConsulBackend::new(ConsulConfig::from_values(
            values,
        )?)?))
    }),
    #[cfg(not(feature = "consul"))]
    build: None,
};

/// The largest response body accepted from Consul.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

pub(crate) const SETTINGS: &[Setting] = &[
    Setting::new(
        "consul_scheme",
        &["CONSUL_SCHEME", "AUTOCLUSTER_CONSUL_SCHEME"],
        &["cluster_formation.consul.scheme"],
    ),
    Setting::new(
        "consul_host",
        &["CONSUL_HOST", "AUTOCLUSTER_CONSUL_HOST"],
        &["cluster_formation.consul.host"],
    ),
    Setting::new(
        "consul_port",
        &["CONSUL_PORT", "AUTOCLUSTER_CONSUL_PORT"],
        &["cluster_formation.consul.port"],
    ),
    Setting::new(
        "consul_acl_token",
        &["CONSUL_ACL_TOKEN", "AUTOCLUSTER_CONSUL_ACL_TOKEN"],
        &["cluster_formation.consul.acl_token"],
    ),
    Setting::new(
        "cluster_name",
        &["CLUSTER_NAME", "AUTOCLUSTER_CLUSTER_NAME"],
        &["cluster_formation.consul.cluster_name"],
    ),
    Setting::new(
        "consul_svc",
        &["CONSUL_SVC", "AUTOCLUSTER_CONSUL_SVC"],
        &["cluster_formation.consul.svc"],
    ),
    Setting::new(
        "consul_svc_addr",
        &["CONSUL_SVC_ADDR", "AUTOCLUSTER_CONSUL_SVC_ADDR"],
        &["cluster_formation.consul.svc_addr"],
    ),
    Setting::new(
        "consul_svc_port",
        &["CONSUL_SVC_PORT", "AUTOCLUSTER_CONSUL_SVC_PORT"],
        &["cluster_formation.consul.svc_port"],
    ),
    Setting::new(
        "consul_svc_ttl",
        &["CONSUL_SVC_TTL", "AUTOCLUSTER_CONSUL_SVC_TTL"],
        &["cluster_formation.consul.svc_ttl"],
    ),
    Setting::new(
        "consul_svc_tags",
        &["CONSUL_SVC_TAGS", "AUTOCLUSTER_CONSUL_SVC_TAGS"],
        &["cluster_formation.consul.svc_tags.$index"],
    )
    .list(),
    Setting::new(
        "consul_deregister_after",
        &[
            "CONSUL_DEREGISTER_AFTER",
            "AUTOCLUSTER_CONSUL_DEREGISTER_AFTER",
        ],
        &["cluster_formation.consul.deregister_after"],
    ),
    Setting::new(
        "consul_include_nodes_with_warnings",
        &[
            "CONSUL_INCLUDE_NODES_WITH_WARNINGS",
            "AUTOCLUSTER_CONSUL_INCLUDE_NODES_WITH_WARNINGS",
        ],
        &["cluster_formation.consul.include_nodes_with_warnings"],
    ),
    Setting::new(
        "consul_use_longname",
        &["CONSUL_USE_LONGNAME", "AUTOCLUSTER_CONSUL_USE_LONGNAME"],
        &["cluster_formation.consul.use_longname"],
    ),
    Setting::new(
        "consul_domain",
        &["CONSUL_DOMAIN", "AUTOCLUSTER_CONSUL_DOMAIN"],
        &["cluster_formation.consul.domain_suffix"],
    ),
    Setting::new("node_prefix", &["AUTOCLUSTER_NODE_PREFIX"], &[]),
    Setting::new(
        "consul_lock_prefix",
        &["CONSUL_LOCK_PREFIX", "AUTOCLUSTER_CONSUL_LOCK_PREFIX"],
        &["cluster_formation.consul.lock_prefix"],
    ),
    Setting::new("consul_lock_ttl", &["AUTOCLUSTER_CONSUL_LOCK_TTL"], &[]),
    Setting::new("consul_lock_delay", &["AUTOCLUSTER_CONSUL_LOCK_DELAY"], &[]),
    Setting::new(
        "lock_wait_time",
        &["LOCK_WAIT_TIME", "AUTOCLUSTER_LOCK_WAIT_TIME"],
        &[
            "cluster_formation.consul.lock_wait_time",
            "cluster_formation.consul.lock_timeout",
        ],
    ),
    Setting::new(
        "consul_cacertfile",
        &["AUTOCLUSTER_CONSUL_CACERTFILE"],
        &["cluster_formation.consul.ssl_options.cacertfile"],
    ),
    Setting::new(
        "consul_certfile",
        &["AUTOCLUSTER_CONSUL_CERTFILE"],
        &["cluster_formation.consul.ssl_options.certfile"],
    ),
    Setting::new(
        "consul_keyfile",
        &["AUTOCLUSTER_CONSUL_KEYFILE"],
        &["cluster_formation.consul.ssl_options.keyfile"],
    ),
    Setting::new(
        "consul_ssl_verify",
        &[],
        &["cluster_formation.consul.ssl_options.verify"],
    ),
    Setting::new("consul_timeout", &["AUTOCLUSTER_CONSUL_TIMEOUT"], &[]),
];

/// TLS settings for Consul (`https`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsulTls {
    /// CA bundle (PEM); `None`: the system's root certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM), for agents that verify clients.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The Consul backend's configuration. Build it with [`ConsulConfig::new`] and the
/// `with_*` methods, or from a map or the environment (see the [module docs](self)).
#[derive(Clone, PartialEq)]
pub struct ConsulConfig {
    /// `http` or `https`.
    pub scheme: String,
    /// The agent's host.
    pub host: String,
    /// The agent's HTTP port.
    pub port: u16,
    /// ACL token, sent as `X-Consul-Token`.
    pub acl_token: Option<String>,
    /// TLS, with `https`.
    pub tls: Option<ConsulTls>,
    /// The cluster: a tag of every registration, the `cluster` meta, part of the lock key.
    pub cluster_name: String,
    /// The service name.
    pub service: String,
    /// The address registered when the [`Registration`](super::Registration) has none.
    pub service_address: Option<String>,
    /// The port registered.
    pub service_port: u16,
    /// Extra tags.
    pub service_tags: Vec<String>,
    /// `DeregisterCriticalServiceAfter`: Consul removes a registration whose check has been
    /// critical this long.
    pub deregister_after: Option<Duration>,
    /// List nodes whose checks are `warning` too.
    pub include_warnings: bool,
    /// Long node names for services registered without the `erlang-node-name` meta.
    pub use_longname: bool,
    /// Domain appended to Consul node names in long-name mode.
    pub domain: String,
    /// Node name prefix for services registered without the `erlang-node-name` meta.
    pub node_prefix: String,
    /// KV prefix of the lock key.
    pub lock_prefix: String,
    /// Node (check) TTL offered to the formation engine (default 30 s).
    pub node_ttl: Duration,
    /// Lock session TTL offered to the formation engine (default 30 s).
    pub lock_ttl: Duration,
    /// The lock session's lock-delay (default 15 s, Consul's).
    pub lock_delay: Duration,
    /// Lock wait offered to the formation engine (default 300 s).
    pub lock_wait: Duration,
    /// The smallest session TTL sent to Consul: shorter lock TTLs are raised to it.
    /// Default 10 s, Consul's documented minimum.
    pub min_session_ttl: Duration,
    /// Bound on every call (default 5 s).
    pub timeout: Duration,
    /// How registrations and locks are refreshed.
    pub keepalive: KeepAliveOptions,
}

impl fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulConfig")
            .field("base_url", &self.base_url())
            .field("acl_token", &self.acl_token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("cluster_name", &self.cluster_name)
            .field("service", &self.service)
            .field("service_address", &self.service_address)
            .field("service_port", &self.service_port)
            .field("service_tags", &self.service_tags)
            .field("deregister_after", &self.deregister_after)
            .field("include_warnings", &self.include_warnings)
            .field("lock_key", &self.lock_key())
            .field("node_ttl", &self.node_ttl)
            .field("lock_ttl", &self.lock_ttl)
            .field("lock_delay", &self.lock_delay)
            .field("lock_wait", &self.lock_wait)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Default for ConsulConfig {
    fn default() -> Self {
        ConsulConfig::new("localhost", 8500)
    }
}

impl ConsulConfig {
    /// An agent at `http://host:port`, every other setting at its default.
    pub fn new(host: impl Into<String>, port: u16) -> ConsulConfig {
        ConsulConfig {
            scheme: "http".into(),
            host: host.into(),
            port,
            acl_token: None,
            tls: None,
            cluster_name: "default".into(),
            service: "rabbitmq".into(),
            service_address: None,
            service_port: 5672,
            service_tags: Vec::new(),
            deregister_after: None,
            include_warnings: false,
            use_longname: false,
            domain: "consul".into(),
            node_prefix: "rabbit".into(),
            lock_prefix: "rabbitmq".into(),
            node_ttl: Duration::from_secs(30),
            lock_ttl: Duration::from_secs(30),
            lock_delay: Duration::from_secs(15),
            lock_wait: Duration::from_secs(300),
            min_session_ttl: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            keepalive: KeepAliveOptions::default(),
        }
    }

    /// Sets the ACL token.
    pub fn with_acl_token(mut self, token: impl Into<String>) -> ConsulConfig {
        self.acl_token = Some(token.into());
        self
    }

    /// Uses `https` with these TLS settings.
    pub fn with_tls(mut self, tls: ConsulTls) -> ConsulConfig {
        self.scheme = "https".into();
        self.tls = Some(tls);
        self
    }

    /// Sets the cluster name.
    pub fn with_cluster_name(mut self, cluster: impl Into<String>) -> ConsulConfig {
        self.cluster_name = cluster.into();
        self
    }

    /// Sets the service name.
    pub fn with_service(mut self, service: impl Into<String>) -> ConsulConfig {
        self.service = service.into();
        self
    }

    /// Sets the lock's KV prefix.
    pub fn with_lock_prefix(mut self, prefix: impl Into<String>) -> ConsulConfig {
        self.lock_prefix = prefix.into();
        self
    }

    /// Sets the lock session's lock-delay.
    pub fn with_lock_delay(mut self, delay: Duration) -> ConsulConfig {
        self.lock_delay = delay;
        self
    }

    /// Sets the smallest session TTL sent to Consul (see the field's docs).
    pub fn with_min_session_ttl(mut self, ttl: Duration) -> ConsulConfig {
        self.min_session_ttl = ttl;
        self
    }

    /// Sets `DeregisterCriticalServiceAfter`.
    pub fn with_deregister_after(mut self, after: Duration) -> ConsulConfig {
        self.deregister_after = Some(after);
        self
    }

    /// Lists nodes whose checks are `warning` too.
    pub fn with_include_warnings(mut self, include: bool) -> ConsulConfig {
        self.include_warnings = include;
        self
    }

    /// Sets the bound on every call.
    pub fn with_timeout(mut self, timeout: Duration) -> ConsulConfig {
        self.timeout = timeout;
        self
    }

    /// Sets how registrations and locks are refreshed.
    pub fn with_keepalive(mut self, keepalive: KeepAliveOptions) -> ConsulConfig {
        self.keepalive = keepalive;
        self
    }

    /// `scheme://host:port`.
    pub fn base_url(&self) -> String {
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{}://{host}:{}", self.scheme, self.port)
    }

    /// `<lock_prefix>/<cluster>/startup_lock`: the lock's KV key.
    pub fn lock_key(&self) -> String {
        format!(
            "{}/{}/startup_lock",
            self.lock_prefix.trim_matches('/'),
            self.cluster_name
        )
    }

    /// The service ID a node registers under: `<svc>:<node>`.
    pub fn service_id(&self, node: &NodeName) -> String {
        format!("{}:{node}", self.service)
    }

    /// The timings the formation engine should use.
    pub fn timings(&self) -> Timings {
        Timings {
            node_ttl: Some(self.node_ttl),
            lock_ttl: Some(self.lock_ttl),
            lock_wait: Some(self.lock_wait),
        }
    }

    config::settings_constructors!(ConsulConfig, "The configuration");

    fn from_values(values: config::Values) -> Result<ConsulConfig, BackendError> {
        let source = |key: &str| values.source(key);
        let mut config = ConsulConfig::default();
        if let Some(scheme) = values.string("consul_scheme")? {
            config.scheme = scheme.to_ascii_lowercase();
        }
        if let Some(host) = values.string("consul_host")? {
            config.host = host;
        }
        if let Some(port) = values.parse::<u16>("consul_port", "a TCP port")? {
            config.port = port;
        }
        if let Some(token) = values.string("consul_acl_token")? {
            config.acl_token = Some(token);
        }
        if let Some(cluster) = values.string("cluster_name")? {
            config.cluster_name = cluster;
        }
        if let Some(service) = values.string("consul_svc")? {
            config.service = service;
        }
        config.service_address = values.string("consul_svc_addr")?;
        if let Some(port) = values.parse::<u16>("consul_svc_port", "a TCP port")? {
            config.service_port = port;
        }
        if let Some(ttl) = values.seconds("consul_svc_ttl")? {
            config.node_ttl = ttl;
        }
        config.service_tags = values
            .list("consul_svc_tags")
            .into_iter()
            .map(|f| f.value)
            .collect();
        config.deregister_after = values.seconds("consul_deregister_after")?;
        if let Some(b) = config::parse_bool(&values, "consul_include_nodes_with_warnings")? {
            config.include_warnings = b;
        }
        if let Some(b) = config::parse_bool(&values, "consul_use_longname")? {
            config.use_longname = b;
        }
        if let Some(domain) = values.string("consul_domain")? {
            config.domain = domain;
        }
        if let Some(prefix) = values.string("node_prefix")? {
            config.node_prefix = prefix;
        }
        if let Some(prefix) = values.string("consul_lock_prefix")? {
            config.lock_prefix = prefix;
        }
        if let Some(ttl) = values.seconds("consul_lock_ttl")? {
            config.lock_ttl = ttl;
        }
        if let Some(found) = values.get("consul_lock_delay") {
            // 0 is allowed here (Consul's way to turn lock-delay off).
            let value = found.value.trim();
            config.lock_delay = if value == "0" {
                Duration::ZERO
            } else {
                config::parse_seconds(value)
                    .map_err(|detail| BackendError::config(&found.source, detail))?
            };
        }
        if let Some(wait) = values.seconds("lock_wait_time")? {
            config.lock_wait = wait;
        }
        if let Some(timeout) = values.seconds("consul_timeout")? {
            config.timeout = timeout;
        }
        if let Some(verify) = values.string("consul_ssl_verify")?
            && verify != "verify_peer"
        {
            return Err(BackendError::config(
                source("consul_ssl_verify"),
                format!(
                    "{verify:?} is not supported: the server certificate is always verified (verify_peer)"
                ),
            ));
        }
        let ca = values.string("consul_cacertfile")?;
        let cert = values.string("consul_certfile")?;
        let key = values.string("consul_keyfile")?;
        let client = match (cert, key) {
            (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
            (None, None) => None,
            (Some(_), None) => {
                return Err(BackendError::config(
                    source("consul_certfile"),
                    "a client certificate needs both certfile and keyfile",
                ));
            }
            (None, Some(_)) => {
                return Err(BackendError::config(
                    source("consul_keyfile"),
                    "a client key needs both certfile and keyfile",
                ));
            }
        };
        if ca.is_some() || client.is_some() {
            if values.get("consul_scheme").is_none() {
                config.scheme = "https".into();
            }
            config.tls = Some(ConsulTls {
                ca_file: ca.map(PathBuf::from),
                client,
            });
        } else if config.scheme == "https" {
            config.tls = Some(ConsulTls::default());
        }
        config.validate().map_err(|e| match e {
            BackendError::Config { key, detail } => BackendError::config(source(&key), detail),
            e => e,
        })?;
        Ok(config)
    }

    /// Checks the settings (no I/O).
    pub fn validate(&self) -> Result<(), BackendError> {
        match self.scheme.as_str() {
            "http" if self.tls.is_some() => {
                return Err(BackendError::config(
                    "consul_scheme",
                    "TLS files are configured but the scheme is http",
                ));
            }
            "http" | "https" => {}
            other => {
                return Err(BackendError::config(
                    "consul_scheme",
                    format!("{other:?} is not http or https"),
                ));
            }
        }
        if self.host.is_empty() || self.host.contains(['/', ' ', '@']) {
            return Err(BackendError::config(
                "consul_host",
                format!("{:?} is not a host name or address", self.host),
            ));
        }
        for (key, value) in [
            ("consul_svc", &self.service),
            ("cluster_name", &self.cluster_name),
            ("consul_lock_prefix", &self.lock_prefix),
        ] {
            if value.is_empty() || value.contains(char::is_whitespace) || value.contains('?') {
                return Err(BackendError::config(
                    key,
                    format!("{value:?} must be non-empty, without spaces or '?'"),
                ));
            }
        }
        if self.service.contains('/') {
            return Err(BackendError::config(
                "consul_svc",
                "a service name cannot contain '/'",
            ));
        }
        NodeName::from_parts(&self.node_prefix, "host").map_err(|e| {
            BackendError::config(
                "node_prefix",
                format!("{:?} cannot start a node name: {e}", self.node_prefix),
            )
        })?;
        for (key, d) in [
            ("consul_timeout", self.timeout),
            ("consul_svc_ttl", self.node_ttl),
            ("consul_lock_ttl", self.lock_ttl),
        ] {
            if d.is_zero() {
                return Err(BackendError::config(key, "must be positive"));
            }
        }
        if self.lock_delay > Duration::from_secs(60) {
            return Err(BackendError::config(
                "consul_lock_delay",
                "Consul accepts a lock-delay of at most 60 s",
            ));
        }
        Ok(())
    }

    /// The session TTL sent for a lock TTL: at least [`min_session_ttl`](Self::min_session_ttl),
    /// at most 24 h.
    pub fn session_ttl(&self, lock_ttl: Duration) -> Duration {
        lock_ttl
            .max(self.min_session_ttl)
            .min(Duration::from_secs(24 * 3600))
    }
}

/// A duration in Go's syntax, which Consul parses (`30s`, `1500ms`).
pub(crate) fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis().max(1))
    }
}

/// Percent-encodes one path segment (keeps unreserved characters, `:` and `@`).
#[cfg(any(feature = "consul", test))]
pub(crate) fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a KV key (each `/`-separated segment).
#[cfg(any(feature = "consul", test))]
pub(crate) fn key_path(key: &str) -> String {
    key.split('/')
        .map(path_segment)
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(feature = "consul")]
mod client;
#[cfg(feature = "consul")]
mod http;
// Always compiled, so that the fuzz target `consul_json` reaches the answer parsers
// without the `consul` feature (the request bodies are then unused).
#[cfg_attr(not(feature = "consul"), allow(dead_code))]
pub(crate) mod wire;

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
    fn defaults_are_rabbitmqs() {
        let config = ConsulConfig::from_map(&map(&[])).unwrap();
        assert_eq!(config.base_url(), "http://localhost:8500");
        assert_eq!(config.service, "rabbitmq");
        assert_eq!(config.lock_key(), "rabbitmq/default/startup_lock");
        assert_eq!(config.node_ttl, Duration::from_secs(30));
        assert_eq!(config.lock_delay, Duration::from_secs(15));
        assert_eq!(
            config.service_id(&"rabbit@h".parse().unwrap()),
            "rabbitmq:rabbit@h"
        );
        assert_eq!(
            config.session_ttl(Duration::from_secs(1)),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn autocluster_environment() {
        let config = ConsulConfig::from_vars(
            [
                ("AUTOCLUSTER_TYPE", "consul"),
                ("CONSUL_SCHEME", "https"),
                ("CONSUL_HOST", "agent"),
                ("CONSUL_PORT", "8501"),
                ("CONSUL_ACL_TOKEN", "s3cret"),
                ("CONSUL_SVC", "rmq"),
                ("CONSUL_SVC_ADDR", "10.0.0.1"),
                ("CONSUL_SVC_PORT", "5673"),
                ("CONSUL_SVC_TTL", "20"),
                ("CONSUL_SVC_TAGS", "a,b"),
                ("CONSUL_DEREGISTER_AFTER", "90"),
                ("CONSUL_INCLUDE_NODES_WITH_WARNINGS", "true"),
                ("CONSUL_LOCK_PREFIX", "locks"),
                ("CLUSTER_NAME", "c1"),
                ("AUTOCLUSTER_CONSUL_LOCK_DELAY", "0"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap();
        assert_eq!(config.base_url(), "https://agent:8501");
        assert_eq!(config.tls, Some(ConsulTls::default()));
        assert_eq!(config.acl_token.as_deref(), Some("s3cret"));
        assert!(!format!("{config:?}").contains("s3cret"));
        assert_eq!(config.service_tags, ["a", "b"]);
        assert_eq!(config.deregister_after, Some(Duration::from_secs(90)));
        assert!(config.include_warnings);
        assert_eq!(config.lock_key(), "locks/c1/startup_lock");
        assert_eq!(config.lock_delay, Duration::ZERO);

        let err =
            ConsulConfig::from_vars([("CONSUL_PORT".to_string(), "x".to_string())]).unwrap_err();
        assert!(
            matches!(&err, BackendError::Config { key, .. } if key == "CONSUL_PORT"),
            "{err}"
        );
        let err =
            ConsulConfig::from_vars([("AUTOCLUSTER_CONSUL_SVC_TLL".to_string(), "3".to_string())])
                .unwrap_err();
        assert!(
            matches!(&err, BackendError::Config { key, .. } if key == "AUTOCLUSTER_CONSUL_SVC_TLL"),
            "{err}"
        );
    }

    #[test]
    fn rabbitmq_keys() {
        let config = ConsulConfig::from_map(&map(&[
            ("cluster_formation.consul.host", "c"),
            ("cluster_formation.consul.svc_tags.1", "x"),
            ("cluster_formation.consul.svc_tags.2", "y"),
            ("cluster_formation.consul.lock_timeout", "60"),
            ("cluster_formation.consul.ssl_options.cacertfile", "/ca.pem"),
        ]))
        .unwrap();
        assert_eq!(config.service_tags, ["x", "y"]);
        assert_eq!(config.lock_wait, Duration::from_secs(60));
        assert_eq!(config.base_url(), "https://c:8500");
        for key in [
            "cluster_formation.consul.svc_addr_auto",
            "cluster_formation.consul.svc_meta.zone",
            "cluster_formation.consul.ssl_options.depth",
        ] {
            let err = ConsulConfig::from_map(&map(&[(key, "x")])).unwrap_err();
            assert!(
                matches!(&err, BackendError::Config { key: k, detail } if k == key && detail.contains("not supported")),
                "{err}"
            );
        }
        let err = ConsulConfig::from_map(&map(&[("consul_svc_ttl_", "3")])).unwrap_err();
        assert!(err.to_string().contains("consul_svc_ttl_"), "{err}");
        let err = ConsulConfig::from_map(&map(&[("consul_lock_delay", "61")])).unwrap_err();
        assert!(err.to_string().contains("60 s"), "{err}");
    }

    #[test]
    fn encodings() {
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(path_segment("rabbitmq:rabbit@h"), "rabbitmq:rabbit@h");
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(key_path("p/c d/startup_lock"), "p/c%20d/startup_lock");
    }
}
