//! The Kubernetes backend (crate feature `kubernetes`): the pods behind a Service, and a
//! startup lock through a `coordination.k8s.io/v1` Lease, through `kube` and
//! `k8s-openapi` with TLS by rustls and ring.
//!
//! # Building it
//!
//! `k8s-openapi` compiles for exactly one Kubernetes API version, which the final binary
//! chooses, not a library. A binary that uses this feature either depends on
//! `k8s-openapi` with a version feature (`k8s-openapi = { version = "0.29", features =
//! ["latest"] }`) or builds with `K8S_OPENAPI_ENABLED_VERSION=1.37` (any version from
//! 1.33 to 1.37) in its environment; `cargo build --features kubernetes` of this crate
//! alone picks 1.37 through the repository's `.cargo/config.toml`. The backend uses only
//! APIs that every one of those versions has (`discovery.k8s.io/v1`, `core/v1`,
//! `coordination.k8s.io/v1`).
//!
//! TLS is rustls with ring. kube builds its TLS configuration from rustls' process-wide
//! default provider, which panics when both ring and aws-lc-rs are compiled into the
//! binary and none was chosen; so the backend installs ring as the process default before
//! it builds a client, **if no default is installed yet** (an application that prefers
//! another provider installs it first).
//!
//! # Discovery
//!
//! * **EndpointSlices** (`GET /apis/discovery.k8s.io/v1/namespaces/<ns>/endpointslices
//!   ?labelSelector=kubernetes.io/service-name=<svc>`): every endpoint, **ready or not**
//!   (peers booting together must see each other; the Service needs
//!   `publishNotReadyAddresses: true` for not-ready pods to appear at all). Terminating
//!   endpoints are listed too; `ready`, `serving` and `terminating` are in
//!   [`RegisteredNode::metadata`](super::RegisteredNode::metadata).
//! * **Endpoints** (`GET /api/v1/namespaces/<ns>/endpoints/<svc>`), for clusters without
//!   EndpointSlices (the API answers 404) and when no EndpointSlice carries the label: its
//!   `addresses` and `notReadyAddresses`. A Service that does not exist (404 here) is an
//!   error ([`BackendError::Rejected`]); a Service that exists with no endpoints at all is
//!   an empty list, the API's authoritative answer.
//! * Node names: `<node_prefix>@<address><hostname_suffix>`, the address being the
//!   endpoint's IP ([`AddressType::Ip`]) or its `hostname` ([`AddressType::Hostname`],
//!   set for StatefulSet pods with a headless Service); e.g. prefix `rabbit`, hostname
//!   `rmq-0`, suffix `.rmq-headless.ns.svc.cluster.local`. An endpoint without a hostname
//!   in hostname mode fails the listing ([`BackendError::InvalidResponse`] naming the
//!   pod) rather than being left out.
//! * [`RegisteredNode::order`](super::RegisteredNode::order): Kubernetes records no registration order for endpoints,
//!   and an object's `creationTimestamp` is the slice's, not the pod's. The order is the
//!   StatefulSet ordinal of the pod (the number ending its name, from the endpoint's
//!   `hostname` or `targetRef`), which is stable and the same on every node; endpoints
//!   without one have order 0. Ties are broken by name.
//!
//! # Registration
//!
//! Kubernetes registers pods itself (the endpoints controller follows the pods'
//! readiness), so the backend does not: [`supports_registration`] is `false` and
//! [`register`] returns [`BackendError::Unsupported`].
//!
//! [`supports_registration`]: super::Backend::supports_registration
//! [`register`]: super::Backend::register
//!
//! # The startup lock: a Lease
//!
//! `coordination.k8s.io/v1` Lease `<lease_name>` in the namespace, as client-go's leader
//! election uses it:
//!
//! * **free** when it does not exist, has no `holderIdentity`, or its `renewTime +
//!   leaseDurationSeconds` is in the past (clocks of the nodes are assumed synchronised,
//!   to well under the lease duration);
//! * **taken** by a create (`POST`, 409 AlreadyExists when another contender created it
//!   first) or a replace (`PUT`) carrying the `resourceVersion` we read, so that of two
//!   contenders only one succeeds: the other gets **409 Conflict** and reads again. The
//!   holder writes `holderIdentity` (the owner plus a random suffix, unique per
//!   acquisition), `leaseDurationSeconds` (the lock TTL rounded up to whole seconds),
//!   `acquireTime`, `renewTime` and `leaseTransitions + 1`;
//! * **renewed** every TTL/3 by a replace of `renewTime`, which also checks that the
//!   holder is still us;
//! * **released** by a replace clearing `holderIdentity` (the Lease object stays, so its
//!   `leaseTransitions` keeps counting); a lease held by someone else by then is
//!   [`BackendError::LockLost`];
//! * waiters poll every `lock_poll_interval` (default 1 s, earlier when the holder's lease
//!   runs out sooner).
//! * **fencing token**: `leaseTransitions` after our acquisition. It grows by one with
//!   every acquisition. (`resourceVersion` grows too, but Kubernetes documents it as
//!   opaque and not to be compared.) Deleting the Lease object by hand resets the count.
//!
//! A holder that dies frees the lock within **lease duration (whole seconds) + poll
//! interval**.
//!
//! # StatefulSet mode: a seed without any API call
//!
//! [`deterministic_seed`](super::Backend::deterministic_seed) returns the pod with the
//! lowest ordinal of the local node's StatefulSet, derived from the local node's own name
//! with no API call at all (as RabbitMQ 4.1's Kubernetes peer discovery does):
//! `rabbit@rmq-2.rmq-headless.ns.svc.cluster.local` → `rabbit@rmq-0.rmq-headless.ns.svc.cluster.local`
//! (the first label's `-<number>` replaced by `ordinal_start`). `seed_node` overrides it.
//! A local name whose first label does not end in `-<number>` has no such seed (`None`).
//! See [`statefulset_seed`].
//!
//! # Configuration
//!
//! | map key | RabbitMQ key | environment | meaning | default |
//! |---|---|---|---|---|
//! | `backend` | `cluster_formation.peer_discovery_backend` | `AUTOCLUSTER_TYPE` | `kubernetes` or `k8s` (or `rabbit_peer_discovery_k8s`) | |
//! | `k8s_scheme` | `cluster_formation.k8s.scheme` | `K8S_SCHEME` | `https` or `http` | `https` |
//! | `k8s_host` | `cluster_formation.k8s.host` | `K8S_HOST` | API server host | `kubernetes.default.svc.cluster.local` |
//! | `k8s_port` | `cluster_formation.k8s.port` | `K8S_PORT` | API server port | `443` |
//! | `k8s_token_path` | `cluster_formation.k8s.token_path` | `K8S_TOKEN_PATH` | service-account token file (re-read every minute, and at once after a 401) | `/var/run/secrets/kubernetes.io/serviceaccount/token` |
//! | `k8s_cert_path` | `cluster_formation.k8s.cert_path`, `cluster_formation.k8s.tls.cacertfile` | `K8S_CERT_PATH` | CA bundle (PEM) | `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt` |
//! | `k8s_namespace_path` | `cluster_formation.k8s.namespace_path` | `K8S_NAMESPACE_PATH` | namespace file | `/var/run/secrets/kubernetes.io/serviceaccount/namespace` |
//! | `k8s_namespace` | | `AUTOCLUSTER_K8S_NAMESPACE` | the namespace (instead of the file or the kubeconfig's) | |
//! | `k8s_kubeconfig` | | `AUTOCLUSTER_K8S_KUBECONFIG` | use this kubeconfig instead of the in-cluster settings | |
//! | `k8s_context` | | `AUTOCLUSTER_K8S_CONTEXT` | the kubeconfig context | the current one |
//! | `k8s_service_name` | `cluster_formation.k8s.service_name` | `K8S_SERVICE_NAME` | the (headless) Service | `rabbitmq` |
//! | `k8s_address_type` | `cluster_formation.k8s.address_type` | `K8S_ADDRESS_TYPE` | `ip` or `hostname` | `ip` |
//! | `k8s_hostname_suffix` | `cluster_formation.k8s.hostname_suffix` | `K8S_HOSTNAME_SUFFIX` | appended to every address | none |
//! | `node_prefix` | | `AUTOCLUSTER_NODE_PREFIX` | the part of node names before `@` | `rabbit` |
//! | `k8s_ordinal_start` | `cluster_formation.k8s.ordinal_start` | `AUTOCLUSTER_K8S_ORDINAL_START` | the StatefulSet's first ordinal | `0` |
//! | `k8s_seed_node` | `cluster_formation.k8s.seed_node` | `AUTOCLUSTER_K8S_SEED_NODE` | the seed, instead of the lowest ordinal | |
//! | `k8s_lease_name` | | `AUTOCLUSTER_K8S_LEASE_NAME` | the Lease used as the lock | `<service>-autocluster-lock` |
//! | `k8s_lock_ttl` | | `AUTOCLUSTER_K8S_LOCK_TTL` | lease duration, seconds ([`Timings`]) | `30` |
//! | `lock_wait_time` | | `LOCK_WAIT_TIME` | lock wait, seconds ([`Timings`]) | `300` |
//! | `k8s_timeout` | | `AUTOCLUSTER_K8S_TIMEOUT` | bound on every call, seconds | `5` |
//!
//! Every environment variable can also be written with the `AUTOCLUSTER_` prefix
//! (`AUTOCLUSTER_K8S_HOST`, ...). Kubernetes' own `KUBERNETES_*` variables are not read.
//! Other `cluster_formation.k8s.tls.*` keys are rejected as unsupported.
//!
//! ```
//! use std::collections::BTreeMap;
//! use autocluster::backend::kubernetes::{AddressType, KubernetesConfig, statefulset_seed};
//!
//! let map: BTreeMap<String, String> = [
//!     ("cluster_formation.peer_discovery_backend", "rabbit_peer_discovery_k8s"),
//!     ("cluster_formation.k8s.service_name", "rmq-headless"),
//!     ("cluster_formation.k8s.address_type", "hostname"),
//!     ("cluster_formation.k8s.hostname_suffix", ".rmq-headless.ns.svc.cluster.local"),
//! ]
//! .into_iter()
//! .map(|(k, v)| (k.to_string(), v.to_string()))
//! .collect();
//! let config = KubernetesConfig::from_map(&map)?;
//! assert_eq!(config.address_type, AddressType::Hostname);
//! assert_eq!(config.node_name("rmq-1")?.as_str(), "rabbit@rmq-1.rmq-headless.ns.svc.cluster.local");
//!
//! let local = "rabbit@rmq-2.rmq-headless.ns.svc.cluster.local".parse()?;
//! assert_eq!(statefulset_seed(&local, 0).unwrap().as_str(),
//!            "rabbit@rmq-0.rmq-headless.ns.svc.cluster.local");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::PathBuf;
use std::time::Duration;

use super::config::{self, Setting};
use super::{BackendError, KeepAliveOptions, Timings};
use crate::NodeName;

#[cfg(feature = "kubernetes")]
pub use client::KubernetesBackend;

const NAME: &str = "kubernetes";

/// The registry's entry: the constructor is built with the `kubernetes` feature only.
pub(crate) const KIND: super::registry::BackendKind = super::registry::BackendKind {
    name: NAME,
    aliases: &["k8s"],
    feature: Some("kubernetes"),
    settings: SETTINGS,
    #[cfg(feature = "kubernetes")]
    build: Some(|values| {
        Ok(Box::new(KubernetesBackend::new(
            KubernetesConfig::from_values(values)?,
        )?))
    }),
    #[cfg(not(feature = "kubernetes"))]
    build: None,
};

/// The largest response body accepted from the API server.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

pub(crate) const SETTINGS: &[Setting] = &[
    Setting::new(
        "k8s_scheme",
        &["K8S_SCHEME", "AUTOCLUSTER_K8S_SCHEME"],
        &["cluster_formation.k8s.scheme"],
    ),
    Setting::new(
        "k8s_host",
        &["K8S_HOST", "AUTOCLUSTER_K8S_HOST"],
        &["cluster_formation.k8s.host"],
    ),
    Setting::new(
        "k8s_port",
        &["K8S_PORT", "AUTOCLUSTER_K8S_PORT"],
        &["cluster_formation.k8s.port"],
    ),
    Setting::new(
        "k8s_token_path",
        &["K8S_TOKEN_PATH", "AUTOCLUSTER_K8S_TOKEN_PATH"],
        &["cluster_formation.k8s.token_path"],
    ),
    Setting::new(
        "k8s_cert_path",
        &["K8S_CERT_PATH", "AUTOCLUSTER_K8S_CERT_PATH"],
        &[
            "cluster_formation.k8s.cert_path",
            "cluster_formation.k8s.tls.cacertfile",
        ],
    ),
    Setting::new(
        "k8s_namespace_path",
        &["K8S_NAMESPACE_PATH", "AUTOCLUSTER_K8S_NAMESPACE_PATH"],
        &["cluster_formation.k8s.namespace_path"],
    ),
    Setting::new("k8s_namespace", &["AUTOCLUSTER_K8S_NAMESPACE"], &[]),
    Setting::new("k8s_kubeconfig", &["AUTOCLUSTER_K8S_KUBECONFIG"], &[]),
    Setting::new("k8s_context", &["AUTOCLUSTER_K8S_CONTEXT"], &[]),
    Setting::new(
        "k8s_service_name",
        &["K8S_SERVICE_NAME", "AUTOCLUSTER_K8S_SERVICE_NAME"],
        &["cluster_formation.k8s.service_name"],
    ),
    Setting::new(
        "k8s_address_type",
        &["K8S_ADDRESS_TYPE", "AUTOCLUSTER_K8S_ADDRESS_TYPE"],
        &["cluster_formation.k8s.address_type"],
    ),
    Setting::new(
        "k8s_hostname_suffix",
        &["K8S_HOSTNAME_SUFFIX", "AUTOCLUSTER_K8S_HOSTNAME_SUFFIX"],
        &["cluster_formation.k8s.hostname_suffix"],
    ),
    Setting::new("node_prefix", &["AUTOCLUSTER_NODE_PREFIX"], &[]),
    Setting::new(
        "k8s_ordinal_start",
        &["AUTOCLUSTER_K8S_ORDINAL_START"],
        &["cluster_formation.k8s.ordinal_start"],
    ),
    Setting::new(
        "k8s_seed_node",
        &["AUTOCLUSTER_K8S_SEED_NODE"],
        &["cluster_formation.k8s.seed_node"],
    ),
    Setting::new("k8s_lease_name", &["AUTOCLUSTER_K8S_LEASE_NAME"], &[]),
    Setting::new("k8s_lock_ttl", &["AUTOCLUSTER_K8S_LOCK_TTL"], &[]),
    Setting::new(
        "lock_wait_time",
        &["LOCK_WAIT_TIME", "AUTOCLUSTER_LOCK_WAIT_TIME"],
        &[],
    ),
    Setting::new("k8s_timeout", &["AUTOCLUSTER_K8S_TIMEOUT"], &[]),
];

/// What an endpoint's node name is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressType {
    /// The pod's IP address.
    #[default]
    Ip,
    /// The endpoint's `hostname` (StatefulSet pods behind a headless Service).
    Hostname,
}

/// In-cluster access: the API server's address and the service-account files, at paths
/// that rabbitmq-autocluster made configurable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InCluster {
    /// `https` (or `http`, for a local proxy such as `kubectl proxy`).
    pub scheme: String,
    /// API server host.
    pub host: String,
    /// API server port.
    pub port: u16,
    /// The bearer token file; re-read every [`KubernetesConfig::token_refresh`] and after
    /// a 401, so a rotated (projected) token is picked up. Not read with `http`.
    pub token_path: Option<PathBuf>,
    /// The CA bundle (PEM). Not read with `http`.
    pub cert_path: PathBuf,
    /// The file holding the namespace (unless [`KubernetesConfig::namespace`] is set).
    pub namespace_path: PathBuf,
}

impl Default for InCluster {
    fn default() -> Self {
        let dir = "/var/run/secrets/kubernetes.io/serviceaccount";
        InCluster {
            scheme: "https".into(),
            host: "kubernetes.default.svc.cluster.local".into(),
            port: 443,
            token_path: Some(PathBuf::from(format!("{dir}/token"))),
            cert_path: PathBuf::from(format!("{dir}/ca.crt")),
            namespace_path: PathBuf::from(format!("{dir}/namespace")),
        }
    }
}

impl InCluster {
    /// `scheme://host:port`.
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{}://{host}:{}", self.scheme, self.port)
    }
}

/// How to reach the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubernetesApi {
    /// The service account mounted into the pod (the default).
    InCluster(InCluster),
    /// A kubeconfig file (`None`: `$KUBECONFIG` or `~/.kube/config`) and context.
    Kubeconfig {
        /// The file.
        path: Option<PathBuf>,
        /// The context (`None`: the current one).
        context: Option<String>,
    },
    /// The kubeconfig if one loads, else the in-cluster settings; when both fail, the
    /// error keeps both causes.
    Infer(InCluster),
}

/// The Kubernetes backend's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesConfig {
    /// How to reach the API server.
    pub api: KubernetesApi,
    /// The namespace; `None`: the in-cluster namespace file, or the kubeconfig context's.
    pub namespace: Option<String>,
    /// The Service whose endpoints are the nodes.
    pub service_name: String,
    /// IP or hostname.
    pub address_type: AddressType,
    /// Appended to every address.
    pub hostname_suffix: String,
    /// The part of node names before `@`.
    pub node_prefix: String,
    /// The StatefulSet's first ordinal (for [`statefulset_seed`]).
    pub ordinal_start: u32,
    /// The seed, instead of the lowest ordinal.
    pub seed_node: Option<NodeName>,
    /// The Lease used as the startup lock.
    pub lease_name: String,
    /// Lock lease duration offered to the formation engine (default 30 s).
    pub lock_ttl: Duration,
    /// Lock wait offered to the formation engine (default 300 s).
    pub lock_wait: Duration,
    /// How often a waiter reads the Lease (default 1 s).
    pub lock_poll_interval: Duration,
    /// How long a read token is used before the file is read again (default 60 s).
    pub token_refresh: Duration,
    /// Bound on every call (default 5 s).
    pub timeout: Duration,
    /// How locks are refreshed.
    pub keepalive: KeepAliveOptions,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig::new("rabbitmq")
    }
}

impl KubernetesConfig {
    /// In-cluster access to Service `service_name`; every other setting at its default.
    pub fn new(service_name: impl Into<String>) -> KubernetesConfig {
        let service_name = service_name.into();
        KubernetesConfig {
            api: KubernetesApi::InCluster(InCluster::default()),
            namespace: None,
            lease_name: format!("{service_name}-autocluster-lock"),
            service_name,
            address_type: AddressType::Ip,
            hostname_suffix: String::new(),
            node_prefix: "rabbit".into(),
            ordinal_start: 0,
            seed_node: None,
            lock_ttl: Duration::from_secs(30),
            lock_wait: Duration::from_secs(300),
            lock_poll_interval: Duration::from_secs(1),
            token_refresh: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
            keepalive: KeepAliveOptions::default(),
        }
    }

    /// Sets how to reach the API server.
    pub fn with_api(mut self, api: KubernetesApi) -> KubernetesConfig {
        self.api = api;
        self
    }

    /// Sets the namespace.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> KubernetesConfig {
        self.namespace = Some(namespace.into());
        self
    }

    /// Sets the address type and hostname suffix.
    pub fn with_addresses(
        mut self,
        address_type: AddressType,
        hostname_suffix: impl Into<String>,
    ) -> KubernetesConfig {
        self.address_type = address_type;
        self.hostname_suffix = hostname_suffix.into();
        self
    }

    /// Sets the Lease name.
    pub fn with_lease_name(mut self, name: impl Into<String>) -> KubernetesConfig {
        self.lease_name = name.into();
        self
    }

    /// Sets how often a waiter reads the Lease.
    pub fn with_lock_poll_interval(mut self, interval: Duration) -> KubernetesConfig {
        self.lock_poll_interval = interval;
        self
    }

    /// Sets the bound on every call.
    pub fn with_timeout(mut self, timeout: Duration) -> KubernetesConfig {
        self.timeout = timeout;
        self
    }

    /// Sets how long a read token is used before the file is read again.
    pub fn with_token_refresh(mut self, refresh: Duration) -> KubernetesConfig {
        self.token_refresh = refresh;
        self
    }

    /// The timings the formation engine should use.
    pub fn timings(&self) -> Timings {
        Timings {
            node_ttl: None,
            lock_ttl: Some(self.lock_ttl),
            lock_wait: Some(self.lock_wait),
        }
    }

    /// The node name for an endpoint address (an IP or a hostname).
    pub fn node_name(&self, address: &str) -> Result<NodeName, BackendError> {
        let host = format!("{address}{}", self.hostname_suffix);
        NodeName::from_parts(&self.node_prefix, &host).map_err(|e| BackendError::InvalidResponse {
            backend: NAME,
            detail: format!("address {host:?} does not make a node name: {e}"),
        })
    }

    config::settings_constructors!(KubernetesConfig, "The configuration");

    fn from_values(values: config::Values) -> Result<KubernetesConfig, BackendError> {
        let source = |key: &str| values.source(key);
        let mut config = KubernetesConfig::new(
            values
                .string("k8s_service_name")?
                .unwrap_or("rabbitmq".into()),
        );
        let mut in_cluster = InCluster::default();
        if let Some(scheme) = values.string("k8s_scheme")? {
            in_cluster.scheme = scheme.to_ascii_lowercase();
        }
        if let Some(host) = values.string("k8s_host")? {
            in_cluster.host = host;
        }
        if let Some(port) = values.parse::<u16>("k8s_port", "a TCP port")? {
            in_cluster.port = port;
        }
        if let Some(path) = values.string("k8s_token_path")? {
            in_cluster.token_path = Some(PathBuf::from(path));
        }
        if let Some(path) = values.string("k8s_cert_path")? {
            in_cluster.cert_path = PathBuf::from(path);
        }
        if let Some(path) = values.string("k8s_namespace_path")? {
            in_cluster.namespace_path = PathBuf::from(path);
        }
        let kubeconfig = values.string("k8s_kubeconfig")?;
        let context = values.string("k8s_context")?;
        config.api = if kubeconfig.is_some() || context.is_some() {
            KubernetesApi::Kubeconfig {
                path: kubeconfig.map(PathBuf::from),
                context,
            }
        } else {
            KubernetesApi::InCluster(in_cluster)
        };
        config.namespace = values.string("k8s_namespace")?;
        if let Some(found) = values.get("k8s_address_type") {
            config.address_type = match found.value.trim().to_ascii_lowercase().as_str() {
                "ip" => AddressType::Ip,
                "hostname" => AddressType::Hostname,
                other => {
                    return Err(BackendError::config(
                        &found.source,
                        format!("{other:?} is not ip or hostname"),
                    ));
                }
            };
        }
        if let Some(found) = values.get("k8s_hostname_suffix") {
            config.hostname_suffix = found.value.trim().to_owned();
        }
        if let Some(prefix) = values.string("node_prefix")? {
            config.node_prefix = prefix;
        }
        if let Some(start) = values.parse::<u32>("k8s_ordinal_start", "an ordinal")? {
            config.ordinal_start = start;
        }
        if let Some(found) = values.get("k8s_seed_node") {
            config.seed_node = Some(
                found
                    .value
                    .trim()
                    .parse()
                    .map_err(|e| BackendError::config(&found.source, format!("{e}")))?,
            );
        }
        if let Some(name) = values.string("k8s_lease_name")? {
            config.lease_name = name;
        }
        if let Some(ttl) = values.seconds("k8s_lock_ttl")? {
            config.lock_ttl = ttl;
        }
        if let Some(wait) = values.seconds("lock_wait_time")? {
            config.lock_wait = wait;
        }
        if let Some(timeout) = values.seconds("k8s_timeout")? {
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
        if let KubernetesApi::InCluster(c) | KubernetesApi::Infer(c) = &self.api {
            if c.scheme != "https" && c.scheme != "http" {
                return Err(BackendError::config(
                    "k8s_scheme",
                    format!("{:?} is not https or http", c.scheme),
                ));
            }
            if c.host.is_empty() || c.host.contains(['/', ' ', '@']) {
                return Err(BackendError::config(
                    "k8s_host",
                    format!("{:?} is not a host name or address", c.host),
                ));
            }
        }
        let dns_label = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        if !dns_label(&self.service_name) {
            return Err(BackendError::config(
                "k8s_service_name",
                format!("{:?} is not a Service name", self.service_name),
            ));
        }
        if !dns_label(&self.lease_name) {
            return Err(BackendError::config(
                "k8s_lease_name",
                format!("{:?} is not a Lease name", self.lease_name),
            ));
        }
        if let Some(ns) = &self.namespace
            && !dns_label(ns)
        {
            return Err(BackendError::config(
                "k8s_namespace",
                format!("{ns:?} is not a namespace name"),
            ));
        }
        NodeName::from_parts(&self.node_prefix, "host").map_err(|e| {
            BackendError::config(
                "node_prefix",
                format!("{:?} cannot start a node name: {e}", self.node_prefix),
            )
        })?;
        for (key, d) in [
            ("k8s_timeout", self.timeout),
            ("k8s_lock_ttl", self.lock_ttl),
            ("k8s_lock_poll_interval", self.lock_poll_interval),
            ("k8s_token_refresh", self.token_refresh),
        ] {
            if d.is_zero() {
                return Err(BackendError::config(key, "must be positive"));
            }
        }
        Ok(())
    }
}

/// The StatefulSet ordinal ending a pod name or host label (`rmq-2` → 2).
pub fn ordinal(name: &str) -> Option<u32> {
    let label = name.split('.').next()?;
    let (base, number) = label.rsplit_once('-')?;
    if base.is_empty() || number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if number.len() > 1 && number.starts_with('0') {
        return None;
    }
    number.parse().ok()
}

/// The seed of a StatefulSet: the local node's name with its host's first label's ordinal
/// replaced by `ordinal_start` (`rabbit@rmq-2.rmq-headless.ns` → `rabbit@rmq-0.rmq-headless.ns`).
/// `None` when the host's first label does not end in `-<number>`.
pub fn statefulset_seed(local: &NodeName, ordinal_start: u32) -> Option<NodeName> {
    let host = local.host();
    let (label, rest) = match host.split_once('.') {
        Some((label, rest)) => (label, Some(rest)),
        None => (host, None),
    };
    ordinal(label)?;
    let (base, _) = label.rsplit_once('-')?;
    let seed_host = match rest {
        Some(rest) => format!("{base}-{ordinal_start}.{rest}"),
        None => format!("{base}-{ordinal_start}"),
    };
    NodeName::from_parts(local.alive(), &seed_host).ok()
}

#[cfg(feature = "kubernetes")]
mod client;

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
    fn ordinals_and_seeds() {
        assert_eq!(ordinal("rmq-2"), Some(2));
        assert_eq!(ordinal("rmq-server-12.svc"), Some(12));
        assert_eq!(ordinal("rmq"), None);
        assert_eq!(ordinal("rmq-"), None);
        assert_eq!(ordinal("rmq-02"), None);
        assert_eq!(ordinal("-2"), None);
        let seed =
            |n: &str, start| statefulset_seed(&n.parse().unwrap(), start).map(|s| s.to_string());
        assert_eq!(
            seed("rabbit@rmq-2.rmq-headless.ns.svc.cluster.local", 0).as_deref(),
            Some("rabbit@rmq-0.rmq-headless.ns.svc.cluster.local")
        );
        assert_eq!(seed("rabbit@rmq-0", 0).as_deref(), Some("rabbit@rmq-0"));
        assert_eq!(seed("rabbit@rmq-7", 1).as_deref(), Some("rabbit@rmq-1"));
        assert_eq!(seed("rabbit@rmq.ns", 0), None);
        assert_eq!(seed("rabbit@10.0.0.3", 0), None);
    }

    #[test]
    fn autocluster_environment() {
        let config = KubernetesConfig::from_vars(
            [
                ("AUTOCLUSTER_TYPE", "k8s"),
                ("K8S_SCHEME", "http"),
                ("K8S_HOST", "127.0.0.1"),
                ("K8S_PORT", "8001"),
                ("K8S_TOKEN_PATH", "/t"),
                ("K8S_CERT_PATH", "/c"),
                ("K8S_NAMESPACE_PATH", "/n"),
                ("K8S_SERVICE_NAME", "rmq-headless"),
                ("K8S_ADDRESS_TYPE", "hostname"),
                ("K8S_HOSTNAME_SUFFIX", ".rmq-headless.ns.svc.cluster.local"),
                ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap();
        let KubernetesApi::InCluster(c) = &config.api else {
            panic!("in-cluster expected")
        };
        assert_eq!(c.url(), "http://127.0.0.1:8001");
        assert_eq!(c.token_path.as_deref(), Some(std::path::Path::new("/t")));
        assert_eq!(config.service_name, "rmq-headless");
        assert_eq!(config.lease_name, "rmq-headless-autocluster-lock");
        assert_eq!(
            config.node_name("rmq-0").unwrap().as_str(),
            "rabbit@rmq-0.rmq-headless.ns.svc.cluster.local"
        );
        let err =
            KubernetesConfig::from_vars([("K8S_ADDRESS_TYPE".to_string(), "fqdn".to_string())])
                .unwrap_err();
        assert!(
            matches!(&err, BackendError::Config { key, .. } if key == "K8S_ADDRESS_TYPE"),
            "{err}"
        );
    }

    #[test]
    fn rabbitmq_keys() {
        let config = KubernetesConfig::from_map(&map(&[
            ("cluster_formation.k8s.host", "api"),
            ("cluster_formation.k8s.tls.cacertfile", "/ca"),
            ("cluster_formation.k8s.ordinal_start", "1"),
            ("cluster_formation.k8s.seed_node", "rabbit@rmq-1"),
            ("k8s_kubeconfig", "/kc"),
        ]))
        .unwrap();
        assert_eq!(config.ordinal_start, 1);
        assert_eq!(config.seed_node.unwrap().as_str(), "rabbit@rmq-1");
        assert!(matches!(config.api, KubernetesApi::Kubeconfig { .. }));
        let err = KubernetesConfig::from_map(&map(&[(
            "cluster_formation.k8s.tls.verify",
            "verify_none",
        )]))
        .unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
        let err = KubernetesConfig::from_map(&map(&[("k8s_service", "x")])).unwrap_err();
        assert!(
            matches!(&err, BackendError::Config { key, .. } if key == "k8s_service"),
            "{err}"
        );
        let err =
            KubernetesConfig::from_map(&map(&[("cluster_formation.k8s.service_name", "Bad_Name")]))
                .unwrap_err();
        assert!(
            matches!(&err, BackendError::Config { key, .. } if key == "cluster_formation.k8s.service_name"),
            "{err}"
        );
    }
}
