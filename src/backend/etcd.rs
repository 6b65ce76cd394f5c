//! The etcd v3 backend (crate feature `etcd`), compatible with RabbitMQ's own etcd peer
//! discovery (`rabbitmq_peer_discovery_etcd`, RabbitMQ 3.8 and later).
//!
//! # Keys and values
//!
//! Read from RabbitMQ 3.10.8's `rabbitmq_peer_discovery_etcd_v3_client`, and written the
//! same way, so that a Rust tool lists the nodes RabbitMQ registered and RabbitMQ sees the
//! nodes the crate registered:
//!
//! * node key `/rabbitmq/discovery/<prefix>/clusters/<cluster>/nodes/<node>`, put **with
//!   the node's lease** (TTL), kept alive while registered; value the JSON object
//!   `{"node":"rabbit@host","lease_id":<lease id, integer>,"ttl":<seconds, integer>}`.
//!   The crate may add `"address"` and `"metadata"` fields, which RabbitMQ ignores (it
//!   reads only `node`). [`RegisteredNode::order`] is the key's `create_revision`;
//!   `lease_id` and `ttl` appear in [`RegisteredNode::metadata`].
//! * lock: etcd's Lock API (`v3lockpb.Lock`) on the name
//!   `/rabbitmq/locks/<prefix>/clusters/<cluster>/registration` with a lease of its own
//!   (RabbitMQ: 70 s), so RabbitMQ nodes and the crate exclude each other. etcd creates
//!   the key `<name>/<lease id in hex>` and makes the caller wait, server-side, until every
//!   older key under the name is gone (no polling). The fencing token is that key's
//!   `create_revision`. While held, the crate writes the owner into the key's value
//!   (`{"owner":...}`; etcd's lock leaves it empty) so that `etcdctl get --prefix
//!   /rabbitmq/locks/` shows the holder. Release deletes the key in a transaction
//!   conditioned on its `create_revision` (what `Unlock` does, made atomic), then revokes
//!   the lease; if the key was gone or replaced the result is [`BackendError::LockLost`].
//!
//! Defaults are RabbitMQ's: prefix `rabbitmq`, cluster `default`, node TTL 61 s, lock TTL
//! 70 s. Note that RabbitMQ 3.10 **drops** its configured `key_prefix`, `node_ttl` and
//! `lock_wait_time` before use (its `normalize_settings/1`), so a RabbitMQ node always uses
//! prefix `rabbitmq`; the crate honours every setting, so to meet RabbitMQ nodes keep the
//! prefix at `rabbitmq` and use the same cluster name.
//!
//! # Values that are not ours
//!
//! Every key under the node prefix should be a registration. A value that is not valid
//! JSON, has no string `node`, or whose node is not a valid node name fails the whole
//! listing with [`BackendError::InvalidResponse`] naming the key (RabbitMQ logs and skips
//! it): a listing that silently drops a member is worse than a loud error, and the
//! operator can delete the bad key (`etcdctl del KEY`). More than
//! [`MAX_LISTED_NODES`](super::MAX_LISTED_NODES) keys, or a value over 64 KiB, is also
//! an error.
//!
//! # Bounds
//!
//! * Every call is bounded by `timeout` (default 5 s), connecting included; a connection
//!   that accepts and never answers gives [`BackendError::Timeout`].
//! * A registration whose keep-alive stops disappears after its lease TTL (rounded up to
//!   whole seconds and to etcd's minimum lease TTL) plus etcd's expiry check interval
//!   (500 ms in etcd 3.4): **TTL + 1 s**.
//! * A lock holder that dies frees the lock within the same bound: **lock TTL + 1 s**.
//!   The lease is kept alive while waiting for the lock, too.
//!
//! # Configuration
//!
//! | map key | RabbitMQ key | environment | meaning | default |
//! |---|---|---|---|---|
//! | `backend` | `cluster_formation.peer_discovery_backend` | `AUTOCLUSTER_TYPE` | `etcd` (or `rabbit_peer_discovery_etcd`) | |
//! | `etcd_endpoints` (comma-separated) | `cluster_formation.etcd.endpoints.$index` | `AUTOCLUSTER_ETCD_ENDPOINTS` (comma-separated) | endpoints, `host:port` or `http(s)://host:port` | from scheme, host, port |
//! | `etcd_scheme` | `cluster_formation.etcd.scheme` | `ETCD_SCHEME` | `http` or `https` | `http` (`https` with TLS files) |
//! | `etcd_host` | `cluster_formation.etcd.host` | `ETCD_HOST` | one endpoint's host (added to the endpoints) | `localhost` if no endpoints |
//! | `etcd_port` | `cluster_formation.etcd.port` | `ETCD_PORT` | its port | `2379` |
//! | `etcd_prefix` | `cluster_formation.etcd.key_prefix` | `ETCD_PREFIX` | `<prefix>` in the keys | `rabbitmq` |
//! | `cluster_name` | `cluster_formation.etcd.cluster_name` | `CLUSTER_NAME` | `<cluster>` in the keys | `default` |
//! | `etcd_node_ttl` | `cluster_formation.etcd.node_ttl` | `ETCD_NODE_TTL` | node TTL, seconds ([`Timings`]) | `61` |
//! | `etcd_lock_ttl` | | `AUTOCLUSTER_ETCD_LOCK_TTL` | lock lease TTL, seconds ([`Timings`]) | `70` |
//! | `lock_wait_time` | `cluster_formation.etcd.lock_wait_time`, `cluster_formation.etcd.lock_timeout` | `LOCK_WAIT_TIME` | lock wait, seconds ([`Timings`]) | `300` |
//! | `etcd_username` | `cluster_formation.etcd.username` | `AUTOCLUSTER_ETCD_USERNAME` | user (etcd auth) | none |
//! | `etcd_password` | `cluster_formation.etcd.password` | `AUTOCLUSTER_ETCD_PASSWORD` | password | none |
//! | `etcd_cacertfile` | `cluster_formation.etcd.ssl_options.cacertfile` | `AUTOCLUSTER_ETCD_CACERTFILE` | CA bundle (PEM); required for `https` | none |
//! | `etcd_certfile` | `cluster_formation.etcd.ssl_options.certfile` | `AUTOCLUSTER_ETCD_CERTFILE` | client certificate (PEM) | none |
//! | `etcd_keyfile` | `cluster_formation.etcd.ssl_options.keyfile` | `AUTOCLUSTER_ETCD_KEYFILE` | client key (PEM) | none |
//! | `etcd_server_name` | `cluster_formation.etcd.ssl_options.server_name_indication` | `AUTOCLUSTER_ETCD_SERVER_NAME` | name to verify the server certificate against | the endpoint's host |
//! | `etcd_ssl_verify` | `cluster_formation.etcd.ssl_options.verify` | | only `verify_peer` is accepted | `verify_peer` |
//! | `etcd_timeout` | | `AUTOCLUSTER_ETCD_TIMEOUT` | bound on every call, seconds (decimals allowed) | `5` |
//!
//! Every environment variable can also be written with the `AUTOCLUSTER_` prefix
//! (`AUTOCLUSTER_ETCD_HOST`, `AUTOCLUSTER_CLUSTER_NAME`, `AUTOCLUSTER_LOCK_WAIT_TIME`, ...);
//! giving both spellings different values is an error. Other RabbitMQ `ssl_options` keys
//! are rejected as unsupported rather than ignored.
//!
//! ```
//! use std::collections::BTreeMap;
//! use autocluster::backend::etcd::EtcdConfig;
//!
//! let map: BTreeMap<String, String> = [
//!     ("cluster_formation.etcd.endpoints.1", "etcd1:2379"),
//!     ("cluster_formation.etcd.endpoints.2", "etcd2:2379"),
//!     ("cluster_formation.etcd.cluster_name", "orders"),
//! ]
//! .into_iter()
//! .map(|(k, v)| (k.to_string(), v.to_string()))
//! .collect();
//! let config = EtcdConfig::from_map(&map)?;
//! assert_eq!(config.endpoints, ["http://etcd1:2379", "http://etcd2:2379"]);
//! assert_eq!(config.node_key(&"rabbit@a".parse().unwrap()),
//!            "/rabbitmq/discovery/rabbitmq/clusters/orders/nodes/rabbit@a");
//! # Ok::<(), autocluster::backend::BackendError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::RegisteredNode;
use super::config::{self, Setting};
use super::{BackendError, KeepAliveOptions, Timings};
use crate::NodeName;

#[cfg(feature = "etcd")]
pub use client::EtcdBackend;

const NAME: &str = "etcd";

/// The registry's entry: the constructor is built with the `etcd` feature only.
pub(crate) const KIND: super::registry::BackendKind = super::registry::BackendKind {
    name: NAME,
    aliases: &[],
    feature: Some("etcd"),
    settings: SETTINGS,
    #[cfg(feature = "etcd")]
    build: Some(|values| {
        Ok(Box::new(EtcdBackend::new(EtcdConfig::from_values(
            values,
        )?)?))
    }),
    #[cfg(not(feature = "etcd"))]
    build: None,
};

/// The largest value accepted under the node prefix.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

pub(crate) const SETTINGS: &[Setting] = &[
    Setting::new(
        "etcd_endpoints",
        &["AUTOCLUSTER_ETCD_ENDPOINTS"],
        &["cluster_formation.etcd.endpoints.$index"],
    )
    .list(),
    Setting::new(
        "etcd_scheme",
        &["ETCD_SCHEME", "AUTOCLUSTER_ETCD_SCHEME"],
        &["cluster_formation.etcd.scheme"],
    ),
    Setting::new(
        "etcd_host",
        &["ETCD_HOST", "AUTOCLUSTER_ETCD_HOST"],
        &["cluster_formation.etcd.host"],
    ),
    Setting::new(
        "etcd_port",
        &["ETCD_PORT", "AUTOCLUSTER_ETCD_PORT"],
        &["cluster_formation.etcd.port"],
    ),
    Setting::new(
        "etcd_prefix",
        &["ETCD_PREFIX", "AUTOCLUSTER_ETCD_PREFIX"],
        &["cluster_formation.etcd.key_prefix"],
    ),
    Setting::new(
        "cluster_name",
        &["CLUSTER_NAME", "AUTOCLUSTER_CLUSTER_NAME"],
        &["cluster_formation.etcd.cluster_name"],
    ),
    Setting::new(
        "etcd_node_ttl",
        &["ETCD_NODE_TTL", "AUTOCLUSTER_ETCD_NODE_TTL"],
        &["cluster_formation.etcd.node_ttl"],
    ),
    Setting::new("etcd_lock_ttl", &["AUTOCLUSTER_ETCD_LOCK_TTL"], &[]),
    Setting::new(
        "lock_wait_time",
        &["LOCK_WAIT_TIME", "AUTOCLUSTER_LOCK_WAIT_TIME"],
        &[
            "cluster_formation.etcd.lock_wait_time",
            "cluster_formation.etcd.lock_timeout",
        ],
    ),
    Setting::new(
        "etcd_username",
        &["AUTOCLUSTER_ETCD_USERNAME"],
        &["cluster_formation.etcd.username"],
    ),
    Setting::new(
        "etcd_password",
        &["AUTOCLUSTER_ETCD_PASSWORD"],
        &["cluster_formation.etcd.password"],
    ),
    Setting::new(
        "etcd_cacertfile",
        &["AUTOCLUSTER_ETCD_CACERTFILE"],
        &["cluster_formation.etcd.ssl_options.cacertfile"],
    ),
    Setting::new(
        "etcd_certfile",
        &["AUTOCLUSTER_ETCD_CERTFILE"],
        &["cluster_formation.etcd.ssl_options.certfile"],
    ),
    Setting::new(
        "etcd_keyfile",
        &["AUTOCLUSTER_ETCD_KEYFILE"],
        &["cluster_formation.etcd.ssl_options.keyfile"],
    ),
    Setting::new(
        "etcd_server_name",
        &["AUTOCLUSTER_ETCD_SERVER_NAME"],
        &["cluster_formation.etcd.ssl_options.server_name_indication"],
    ),
    Setting::new(
        "etcd_ssl_verify",
        &[],
        &["cluster_formation.etcd.ssl_options.verify"],
    ),
    Setting::new("etcd_timeout", &["AUTOCLUSTER_ETCD_TIMEOUT"], &[]),
];

/// TLS settings for etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// CA bundle (PEM) that signed the etcd server certificates.
    pub ca_file: PathBuf,
    /// Client certificate (PEM), for etcd's `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Name to verify the server certificate against, if not the endpoint's host.
    pub server_name: Option<String>,
}

/// The etcd backend's configuration. Build it with [`EtcdConfig::new`] and the `with_*`
/// methods, or from a map or the environment (see the [module docs](self) for the keys).
#[derive(Clone, PartialEq)]
pub struct EtcdConfig {
    /// Endpoint URLs, `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    /// `<prefix>` in `/rabbitmq/discovery/<prefix>/...` (default `rabbitmq`).
    pub prefix: String,
    /// `<cluster>` in `.../clusters/<cluster>/...` (default `default`).
    pub cluster_name: String,
    /// User and password, for etcd authentication.
    pub credentials: Option<(String, String)>,
    /// TLS (with `https` endpoints).
    pub tls: Option<EtcdTls>,
    /// Bound on every call (default 5 s).
    pub timeout: Duration,
    /// Node TTL offered to the formation engine (default 61 s, RabbitMQ's).
    pub node_ttl: Duration,
    /// Lock lease TTL offered to the formation engine (default 70 s, RabbitMQ's).
    pub lock_ttl: Duration,
    /// Lock wait offered to the formation engine (default 300 s, rabbitmq-autocluster's).
    pub lock_wait: Duration,
    /// How registrations and locks are refreshed.
    pub keepalive: KeepAliveOptions,
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("cluster_name", &self.cluster_name)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .field("node_ttl", &self.node_ttl)
            .field("lock_ttl", &self.lock_ttl)
            .field("lock_wait", &self.lock_wait)
            .finish_non_exhaustive()
    }
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig::new(["http://localhost:2379"])
    }
}

/// `host:port` → `scheme://host:port`; checks the form.
fn normalize_endpoint(endpoint: &str, default_scheme: &str) -> Result<String, String> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    let (scheme, rest) = match endpoint.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => (default_scheme.to_owned(), endpoint),
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("{endpoint:?}: the scheme must be http or https"));
    }
    if rest.is_empty() || rest.contains('/') || rest.contains(char::is_whitespace) {
        return Err(format!(
            "{endpoint:?} is not host:port or http(s)://host:port"
        ));
    }
    let has_port = match rest.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && !port.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    };
    let rest = if has_port {
        rest.to_owned()
    } else if rest.starts_with('[') && rest.ends_with(']') || !rest.contains(':') {
        format!("{rest}:2379")
    } else {
        return Err(format!("{endpoint:?} has an invalid port"));
    };
    Ok(format!("{scheme}://{rest}"))
}

impl EtcdConfig {
    /// A configuration with these endpoints (`host:port` or `http(s)://host:port`; a
    /// missing scheme means `http`) and every other setting at its default. Invalid
    /// endpoints are reported by [`EtcdBackend::new`].
    pub fn new<I, S>(endpoints: I) -> EtcdConfig
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        EtcdConfig {
            endpoints: endpoints
                .into_iter()
                .map(|e| {
                    normalize_endpoint(e.as_ref(), "http").unwrap_or_else(|_| e.as_ref().to_owned())
                })
                .collect(),
            prefix: "rabbitmq".into(),
            cluster_name: "default".into(),
            credentials: None,
            tls: None,
            timeout: Duration::from_secs(5),
            node_ttl: Duration::from_secs(61),
            lock_ttl: Duration::from_secs(70),
            lock_wait: Duration::from_secs(300),
            keepalive: KeepAliveOptions::default(),
        }
    }

    /// Sets the key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> EtcdConfig {
        self.prefix = prefix.into();
        self
    }

    /// Sets the cluster name.
    pub fn with_cluster_name(mut self, cluster_name: impl Into<String>) -> EtcdConfig {
        self.cluster_name = cluster_name.into();
        self
    }

    /// Sets user and password.
    pub fn with_credentials(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> EtcdConfig {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// Sets TLS; endpoints without a scheme then use `https`.
    pub fn with_tls(mut self, tls: EtcdTls) -> EtcdConfig {
        self.tls = Some(tls);
        self.endpoints = self
            .endpoints
            .into_iter()
            .map(|e| e.replacen("http://", "https://", 1))
            .collect();
        self
    }

    /// Sets the bound on every call.
    pub fn with_timeout(mut self, timeout: Duration) -> EtcdConfig {
        self.timeout = timeout;
        self
    }

    /// Sets how registrations and locks are refreshed.
    pub fn with_keepalive(mut self, keepalive: KeepAliveOptions) -> EtcdConfig {
        self.keepalive = keepalive;
        self
    }

    config::settings_constructors!(EtcdConfig, "The configuration");

    fn from_values(values: config::Values) -> Result<EtcdConfig, BackendError> {
        let source = |key: &str| values.source(key);

        let cacertfile = values.string("etcd_cacertfile")?;
        let certfile = values.string("etcd_certfile")?;
        let keyfile = values.string("etcd_keyfile")?;
        let server_name = values.string("etcd_server_name")?;
        if let Some(verify) = values.string("etcd_ssl_verify")?
            && verify != "verify_peer"
        {
            return Err(BackendError::config(
                source("etcd_ssl_verify"),
                format!(
                    "{verify:?} is not supported: the server certificate is always verified (verify_peer)"
                ),
            ));
        }
        if certfile.is_some() != keyfile.is_some() {
            let key = if certfile.is_some() {
                "etcd_certfile"
            } else {
                "etcd_keyfile"
            };
            return Err(BackendError::config(
                source(key),
                "a client certificate needs both certfile and keyfile",
            ));
        }
        let any_tls = cacertfile.is_some() || certfile.is_some() || server_name.is_some();
        let scheme = match values.string("etcd_scheme")? {
            Some(s) => {
                let s = s.to_ascii_lowercase();
                if s != "http" && s != "https" {
                    return Err(BackendError::config(
                        source("etcd_scheme"),
                        format!("{s:?} is not http or https"),
                    ));
                }
                s
            }
            None if any_tls => "https".to_owned(),
            None => "http".to_owned(),
        };
        let tls = if scheme == "https" {
            let Some(ca) = cacertfile else {
                return Err(BackendError::config(
                    "etcd_cacertfile",
                    "https needs the CA bundle that signed the etcd server certificate \
                     (cluster_formation.etcd.ssl_options.cacertfile or AUTOCLUSTER_ETCD_CACERTFILE)",
                ));
            };
            Some(EtcdTls {
                ca_file: PathBuf::from(ca),
                cert_file: certfile.map(PathBuf::from),
                key_file: keyfile.map(PathBuf::from),
                server_name,
            })
        } else {
            if any_tls {
                return Err(BackendError::config(
                    source("etcd_scheme"),
                    "TLS files are configured but the scheme is http",
                ));
            }
            None
        };

        let mut endpoints = Vec::new();
        for found in values.list("etcd_endpoints") {
            let endpoint = normalize_endpoint(&found.value, &scheme)
                .map_err(|detail| BackendError::config(&found.source, detail))?;
            if tls.is_none() && endpoint.starts_with("https://") {
                return Err(BackendError::config(
                    &found.source,
                    "an https endpoint needs the CA bundle (etcd_cacertfile)",
                ));
            }
            if tls.is_some() && endpoint.starts_with("http://") {
                return Err(BackendError::config(
                    &found.source,
                    "TLS is configured but this endpoint is http",
                ));
            }
            endpoints.push(endpoint);
        }
        let host = values.string("etcd_host")?;
        let port: Option<u16> = values.parse("etcd_port", "a TCP port")?;
        if host.is_some() || port.is_some() || endpoints.is_empty() {
            let host = host.unwrap_or_else(|| "localhost".to_owned());
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host
            };
            let endpoint = format!("{scheme}://{host}:{}", port.unwrap_or(2379));
            normalize_endpoint(&endpoint, &scheme)
                .map_err(|detail| BackendError::config(source("etcd_host"), detail))?;
            if !endpoints.contains(&endpoint) {
                endpoints.push(endpoint);
            }
        }

        let mut config = EtcdConfig::new(Vec::<String>::new());
        config.endpoints = endpoints;
        config.tls = tls;
        if let Some(prefix) = values.string("etcd_prefix")? {
            config.prefix = prefix;
        }
        if let Some(cluster) = values.string("cluster_name")? {
            config.cluster_name = cluster;
        }
        match (values.string("etcd_username")?, values.get("etcd_password")) {
            (Some(user), Some(password)) => {
                config.credentials = Some((user, password.value.clone()))
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(BackendError::config(
                    source("etcd_username"),
                    "a user needs a password",
                ));
            }
            (None, Some(_)) => {
                return Err(BackendError::config(
                    source("etcd_password"),
                    "a password needs a user",
                ));
            }
        }
        if let Some(ttl) = values.seconds("etcd_node_ttl")? {
            config.node_ttl = ttl;
        }
        if let Some(ttl) = values.seconds("etcd_lock_ttl")? {
            config.lock_ttl = ttl;
        }
        if let Some(wait) = values.seconds("lock_wait_time")? {
            config.lock_wait = wait;
        }
        if let Some(timeout) = values.seconds("etcd_timeout")? {
            config.timeout = timeout;
        }
        config.validate().map_err(|e| match e {
            BackendError::Config { key, detail } => BackendError::config(source(&key), detail),
            e => e,
        })?;
        Ok(config)
    }

    /// Checks the settings (no I/O).
    pub fn validate(&self) -> Result<(), BackendError> {
        if self.endpoints.is_empty() {
            return Err(BackendError::config(
                "etcd_endpoints",
                "no etcd endpoints configured",
            ));
        }
        for endpoint in &self.endpoints {
            let normalized = normalize_endpoint(endpoint, "http")
                .map_err(|d| BackendError::config("etcd_endpoints", d))?;
            if normalized != *endpoint {
                return Err(BackendError::config(
                    "etcd_endpoints",
                    format!("{endpoint:?} is not in the form http(s)://host:port"),
                ));
            }
            if self.tls.is_some() != endpoint.starts_with("https://") {
                return Err(BackendError::config(
                    "etcd_endpoints",
                    format!(
                        "{endpoint:?}: https endpoints need TLS settings, and TLS needs https endpoints"
                    ),
                ));
            }
        }
        for (key, value) in [
            ("etcd_prefix", &self.prefix),
            ("cluster_name", &self.cluster_name),
        ] {
            if value.is_empty() || value.contains(char::is_whitespace) {
                return Err(BackendError::config(
                    key,
                    format!("{value:?} must be non-empty, without spaces"),
                ));
            }
        }
        for (key, d) in [
            ("etcd_timeout", self.timeout),
            ("etcd_node_ttl", self.node_ttl),
            ("etcd_lock_ttl", self.lock_ttl),
        ] {
            if d.is_zero() {
                return Err(BackendError::config(key, "must be positive"));
            }
        }
        Ok(())
    }

    /// `/rabbitmq/discovery/<prefix>/clusters/<cluster>/nodes/`: where nodes register.
    pub fn nodes_prefix(&self) -> String {
        format!(
            "/rabbitmq/discovery/{}/clusters/{}/nodes/",
            self.prefix, self.cluster_name
        )
    }

    /// The key a node registers under.
    pub fn node_key(&self, node: &NodeName) -> String {
        format!("{}{}", self.nodes_prefix(), node)
    }

    /// `/rabbitmq/locks/<prefix>/clusters/<cluster>/registration`: the lock's name (etcd
    /// creates the holder's and waiters' keys under it).
    pub fn lock_name(&self) -> String {
        format!(
            "/rabbitmq/locks/{}/clusters/{}/registration",
            self.prefix, self.cluster_name
        )
    }

    /// The timings the formation engine should use.
    pub fn timings(&self) -> Timings {
        Timings {
            node_ttl: Some(self.node_ttl),
            lock_ttl: Some(self.lock_ttl),
            lock_wait: Some(self.lock_wait),
        }
    }
}

/// A TTL in whole seconds for etcd, rounded up, at least 1.
#[cfg(any(feature = "etcd", test))]
pub(crate) fn ttl_seconds(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

/// The JSON value of a node key, as RabbitMQ writes it (plus optional fields).
pub(crate) fn registration_value(
    node: &NodeName,
    lease_id: i64,
    ttl_secs: i64,
    address: Option<&str>,
    metadata: &BTreeMap<String, String>,
) -> String {
    let mut value = format!(
        "{{\"node\":{},\"lease_id\":{lease_id},\"ttl\":{ttl_secs}",
        json_string(node.as_str())
    );
    if let Some(address) = address {
        value.push_str(&format!(",\"address\":{}", json_string(address)));
    }
    if !metadata.is_empty() {
        value.push_str(",\"metadata\":{");
        let entries: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
            .collect();
        value.push_str(&entries.join(","));
        value.push('}');
    }
    value.push('}');
    value
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Parses a node key's value (RabbitMQ's or ours) into a listed node. `key` is named in
/// every error.
///
/// The value is a JSON object: `node` (a string, required), `lease_id` and `ttl` (kept
/// as metadata, as text), `address` (a string) and `metadata` (an object whose string
/// values are kept); other fields are ignored. The JSON is read field by field without
/// building a document tree, so what is kept is all that is allocated: a value of `n`
/// bytes takes a few times `n` bytes at most, whatever it holds (the fuzz target
/// `etcd_value` checks `16 × n + 64 KiB`). A `lease_id` or `ttl` that is an array or an
/// object is ignored.
pub(crate) fn parse_node_value(
    key: &str,
    value: &[u8],
    create_revision: i64,
) -> Result<RegisteredNode, BackendError> {
    let invalid = |detail: String| BackendError::InvalidResponse {
        backend: NAME,
        detail: format!("key {key}: {detail}"),
    };
    if value.len() > MAX_VALUE_LEN {
        return Err(invalid(format!(
            "the value is {} bytes long (limit {MAX_VALUE_LEN})",
            value.len()
        )));
    }
    let fields: value::Fields = serde_json::from_slice(value).map_err(|e| {
        invalid(format!(
            "the value is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&value[..value.len().min(200)])
        ))
    })?;
    let value::Fields::Object {
        node,
        lease_id,
        ttl,
        address,
        metadata: extra,
    } = fields
    else {
        return Err(invalid("the value is not a JSON object".into()));
    };
    let Some(node) = node else {
        return Err(invalid("the value has no string field \"node\"".into()));
    };
    let node: NodeName = node
        .parse()
        .map_err(|e| invalid(format!("field \"node\" is not a node name: {e}")))?;
    if let Some(suffix) = key.rsplit('/').next()
        && suffix != node.as_str()
    {
        tracing::warn!(key, node = %node, "etcd node key and the node name in its value differ; using the value");
    }
    let mut metadata = BTreeMap::new();
    for (field, v) in [("lease_id", lease_id), ("ttl", ttl)] {
        if let Some(v) = v {
            metadata.insert(field.to_owned(), v);
        }
    }
    for (k, v) in extra {
        metadata.entry(k).or_insert(v);
    }
    Ok(RegisteredNode {
        node,
        order: u64::try_from(create_revision).unwrap_or(0),
        address,
        metadata,
    })
}

/// Reading a node value's JSON with serde visitors: only the fields kept are allocated.
mod value {
    use std::collections::BTreeMap;
    use std::fmt;

    use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

    /// What a node value holds (later duplicates of a field win, as in JSON objects
    /// read by serde_json).
    pub(super) enum Fields {
        /// A JSON object.
        Object {
            /// `node`, when it is a string.
            node: Option<String>,
            /// `lease_id` as text, when it is a string, number, boolean or null.
            lease_id: Option<String>,
            /// `ttl`, likewise.
            ttl: Option<String>,
            /// `address`, when it is a string.
            address: Option<String>,
            /// The string values of `metadata`, when it is an object.
            metadata: BTreeMap<String, String>,
        },
        /// Any other JSON value.
        NotAnObject,
    }

    impl<'de> Deserialize<'de> for Fields {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fields, D::Error> {
            d.deserialize_any(FieldsVisitor)
        }
    }

    /// Visits any JSON value: an object's fields are read, anything else is skipped.
    macro_rules! skip_non_objects {
        ($out:expr) => {
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok($out)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok($out)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok($out)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok($out)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok($out)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok($out)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok($out)
            }
        };
    }

    struct FieldsVisitor;

    impl<'de> Visitor<'de> for FieldsVisitor {
        type Value = Fields;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }

        skip_non_objects!(Fields::NotAnObject);

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
            let (mut node, mut lease_id, mut ttl, mut address) = (None, None, None, None);
            let mut metadata = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "node" => node = map.next_value::<Value>()?.string(),
                    "lease_id" => lease_id = map.next_value::<Value>()?.text(),
                    "ttl" => ttl = map.next_value::<Value>()?.text(),
                    "address" => address = map.next_value::<Value>()?.string(),
                    "metadata" => metadata = map.next_value::<StringValues>()?.0,
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(Fields::Object {
                node,
                lease_id,
                ttl,
                address,
                metadata,
            })
        }
    }

    /// One JSON value, as much of it as a field keeps: a string, another scalar as the
    /// text serde_json prints for it, or an array or object (skipped, never allocated).
    enum Value {
        Str(String),
        Scalar(String),
        Compound,
    }

    impl Value {
        /// A string field: other values count as absent.
        fn string(self) -> Option<String> {
            match self {
                Value::Str(s) => Some(s),
                Value::Scalar(_) | Value::Compound => None,
            }
        }

        /// A scalar field as text: arrays and objects count as absent.
        fn text(self) -> Option<String> {
            match self {
                Value::Str(s) | Value::Scalar(s) => Some(s),
                Value::Compound => None,
            }
        }
    }

    impl<'de> Deserialize<'de> for Value {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
            d.deserialize_any(ValueVisitor)
        }
    }

    struct ValueVisitor;

    impl<'de> Visitor<'de> for ValueVisitor {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }

        fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
            Ok(Value::Scalar(b.to_string()))
        }
        fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
            Ok(Value::Scalar(i.to_string()))
        }
        fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
            Ok(Value::Scalar(u.to_string()))
        }
        fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
            Ok(Value::Scalar(
                serde_json::Number::from_f64(f).map_or_else(|| "null".into(), |n| n.to_string()),
            ))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Scalar("null".into()))
        }
        fn visit_str<E>(self, s: &str) -> Result<Value, E> {
            Ok(Value::Str(s.to_owned()))
        }
        fn visit_string<E>(self, s: String) -> Result<Value, E> {
            Ok(Value::Str(s))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Value::Compound)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Value::Compound)
        }
    }

    /// An object's string values (later duplicates win), or nothing for any other value.
    struct StringValues(BTreeMap<String, String>);

    impl<'de> Deserialize<'de> for StringValues {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StringValues, D::Error> {
            d.deserialize_any(StringValuesVisitor)
        }
    }

    struct StringValuesVisitor;

    impl<'de> Visitor<'de> for StringValuesVisitor {
        type Value = StringValues;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }

        skip_non_objects!(StringValues(BTreeMap::new()));

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StringValues, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                match map.next_value::<Value>()?.string() {
                    Some(v) => {
                        out.insert(key, v);
                    }
                    None => {
                        out.remove(&key);
                    }
                }
            }
            Ok(StringValues(out))
        }
    }
}

#[cfg(feature = "etcd")]
mod client;

#[cfg(test)]
mod tests;
