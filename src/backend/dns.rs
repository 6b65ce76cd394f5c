//! The DNS backend (crate feature `dns`): the nodes behind a DNS name, such as a
//! Kubernetes headless Service, through `hickory-resolver`.
//!
//! Like rabbitmq-autocluster's and RabbitMQ's DNS peer discovery, and libcluster's
//! `Kubernetes.DNS` / `DNSSRV` strategies:
//!
//! * **A/AAAA mode** ([`DnsRecord::A`], the default): the name's A and AAAA records give
//!   the peers' addresses; a reverse lookup (PTR) of each address gives its host name,
//!   and the node name is `<node_prefix>@<host>` with the host's first label only (short
//!   names, `rabbit@rmq-0`) or the whole name (long names,
//!   `rabbit@rmq-0.rmq-headless.ns.svc.cluster.local`), as
//!   [`long_names`](DnsConfig::long_names) says. An address without a PTR record fails
//!   the listing ([`BackendError::InvalidResponse`] naming the address) rather than being
//!   left out.
//! * **SRV mode** ([`DnsRecord::Srv`]): the name's SRV records give the peers' host names
//!   directly (their targets); short or long names as above. Ports and priorities are
//!   ignored (Erlang finds a node's port through EPMD); the port is kept in
//!   [`RegisteredNode::metadata`](super::RegisteredNode::metadata) (`port`).
//!
//! DNS has **no registration and no lock** (both [`BackendError::Unsupported`]): the
//! records follow what the orchestrator runs. Instead it offers a
//! [deterministic seed](super::Backend::deterministic_seed): the alphabetically first
//! listed node name, which every node computes the same way from the same answer.
//! DNS has no registration order either: nodes are listed alphabetically, and
//! [`RegisteredNode::order`](super::RegisteredNode::order) is the position in that list.
//!
//! # When the name does not resolve
//!
//! **A name that does not resolve is an error, never an empty list.** NXDOMAIN for the
//! name, and a name that exists without any record of the type asked (NOERROR with no
//! answer), both give [`BackendError::Unavailable`], which is **transient**: a Kubernetes
//! headless Service answers exactly this while none of its pods is ready (or, with
//! `publishNotReadyAddresses: true`, while none has started), so the caller retries
//! rather than concludes that it is alone. A server that cannot be reached or does not
//! answer in time is [`BackendError::Unavailable`] or [`BackendError::Timeout`]; an
//! answer that cannot be used (an address without PTR record, a host name that makes an
//! invalid node name, more than [`MAX_LISTED_NODES`](super::MAX_LISTED_NODES) records) is
//! [`BackendError::InvalidResponse`].
//!
//! # Bounds
//!
//! A listing (the forward lookup and every reverse lookup) is bounded by `timeout` as a
//! whole (default 5 s). Answers are not cached: every listing asks the server again.
//!
//! # Configuration
//!
//! | map key | RabbitMQ key | environment | meaning | default |
//! |---|---|---|---|---|
//! | `backend` | `cluster_formation.peer_discovery_backend` | `AUTOCLUSTER_TYPE` | `dns` (or `rabbit_peer_discovery_dns`) | |
//! | `autocluster_host` | `cluster_formation.dns.hostname` | `AUTOCLUSTER_HOST` | the name to look up | required |
//! | `dns_record` | | `AUTOCLUSTER_DNS_RECORD` | `a` (A and AAAA, then PTR) or `srv` | `a` |
//! | `dns_servers` (comma-separated) | | `AUTOCLUSTER_DNS_SERVERS` (comma-separated) | name servers, `ip` or `ip:port` (UDP, then TCP) | the system's (`/etc/resolv.conf`) |
//! | `longname` | | `RABBITMQ_USE_LONGNAME` | `true`: whole host names (long node names) | `false` |
//! | `node_prefix` | | `AUTOCLUSTER_NODE_PREFIX` | the part of node names before `@` | `rabbit` |
//! | `dns_timeout` | | `AUTOCLUSTER_DNS_TIMEOUT` | bound on one listing, seconds | `5` |
//!
//! Every environment variable can also be written with the `AUTOCLUSTER_` prefix
//! (`AUTOCLUSTER_RABBITMQ_USE_LONGNAME`).
//!
//! ```
//! use std::collections::BTreeMap;
//! use autocluster::backend::dns::{DnsConfig, DnsRecord};
//!
//! let map: BTreeMap<String, String> = [
//!     ("cluster_formation.peer_discovery_backend", "dns"),
//!     ("cluster_formation.dns.hostname", "rmq-headless.default.svc.cluster.local"),
//!     ("dns_servers", "127.0.0.1:5353"),
//!     ("longname", "true"),
//! ]
//! .into_iter()
//! .map(|(k, v)| (k.to_string(), v.to_string()))
//! .collect();
//! let config = DnsConfig::from_map(&map)?;
//! assert_eq!(config.record, DnsRecord::A);
//! assert_eq!(config.servers, ["127.0.0.1:5353".parse().unwrap()]);
//! assert_eq!(config.node_name("rmq-0.rmq-headless.default.svc.cluster.local.")?.as_str(),
//!            "rabbit@rmq-0.rmq-headless.default.svc.cluster.local");
//! # Ok::<(), autocluster::backend::BackendError>(())
//! ```
//!
//! Listing (needs a DNS server):
//!
//! ```no_run
//! use autocluster::backend::Backend;
//! use autocluster::backend::dns::{DnsBackend, DnsConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), autocluster::backend::BackendError> {
//! let backend = DnsBackend::new(DnsConfig::new("rmq-headless.default.svc.cluster.local"))?;
//! for node in backend.list_nodes().await? {
//!     println!("{}", node.node);
//! }
//! # Ok(())
//! # }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::BackendError;
use super::config::{self, Setting};
use crate::NodeName;

#[cfg(feature = "dns")]
pub use client::DnsBackend;

const NAME: &str = "dns";

/// The registry's entry: the constructor is built with the `dns` feature only.
pub(crate) const KIND: super::registry::BackendKind = super::registry::BackendKind {
    name: NAME,
    aliases: &[],
    feature: Some("dns"),
    settings: SETTINGS,
    #[cfg(feature = "dns")]
    build: Some(|values| Ok(Box::new(DnsBackend::new(DnsConfig::from_values(values)?)?))),
    #[cfg(not(feature = "dns"))]
    build: None,
};

pub(crate) const SETTINGS: &[Setting] = &[
    Setting::new(
        "autocluster_host",
        &["AUTOCLUSTER_HOST"],
        &["cluster_formation.dns.hostname"],
    ),
    Setting::new("dns_record", &["AUTOCLUSTER_DNS_RECORD"], &[]),
    Setting::new("dns_servers", &["AUTOCLUSTER_DNS_SERVERS"], &[]).list(),
    Setting::new(
        "longname",
        &["RABBITMQ_USE_LONGNAME", "AUTOCLUSTER_RABBITMQ_USE_LONGNAME"],
        &[],
    ),
    Setting::new("node_prefix", &["AUTOCLUSTER_NODE_PREFIX"], &[]),
    Setting::new("dns_timeout", &["AUTOCLUSTER_DNS_TIMEOUT"], &[]),
];

/// Which records name the peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsRecord {
    /// A and AAAA records, each address then looked up in reverse (PTR) for its host name.
    #[default]
    A,
    /// SRV records; their targets are the host names.
    Srv,
}

/// The DNS backend's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The name to look up (a headless Service's name, or the SRV name such as
    /// `_epmd._tcp.rmq-headless.ns.svc.cluster.local`).
    pub name: String,
    /// A/AAAA (then PTR) or SRV.
    pub record: DnsRecord,
    /// Name servers to ask (port 53 when given as a bare IP); empty: the system's.
    pub servers: Vec<SocketAddr>,
    /// Whole host names (`rabbit@host.domain`) instead of their first label
    /// (`rabbit@host`).
    pub long_names: bool,
    /// The part of node names before `@` (default `rabbit`).
    pub node_prefix: String,
    /// Bound on one listing, all its lookups included (default 5 s).
    pub timeout: Duration,
}

impl DnsConfig {
    /// A/AAAA records of `name`, short names, the system's name servers, prefix `rabbit`.
    pub fn new(name: impl Into<String>) -> DnsConfig {
        DnsConfig {
            name: name.into(),
            record: DnsRecord::A,
            servers: Vec::new(),
            long_names: false,
            node_prefix: "rabbit".into(),
            timeout: Duration::from_secs(5),
        }
    }

    /// Sets which records to look up.
    pub fn with_record(mut self, record: DnsRecord) -> DnsConfig {
        self.record = record;
        self
    }

    /// Asks these name servers instead of the system's.
    pub fn with_servers<I: IntoIterator<Item = SocketAddr>>(mut self, servers: I) -> DnsConfig {
        self.servers = servers.into_iter().collect();
        self
    }

    /// Long (`true`) or short node names.
    pub fn with_long_names(mut self, long_names: bool) -> DnsConfig {
        self.long_names = long_names;
        self
    }

    /// Sets the node name prefix.
    pub fn with_node_prefix(mut self, prefix: impl Into<String>) -> DnsConfig {
        self.node_prefix = prefix.into();
        self
    }

    /// Sets the bound on one listing.
    pub fn with_timeout(mut self, timeout: Duration) -> DnsConfig {
        self.timeout = timeout;
        self
    }

    config::settings_constructors!(DnsConfig, "The configuration");

    fn from_values(values: config::Values) -> Result<DnsConfig, BackendError> {
        let Some(name) = values.string("autocluster_host")? else {
            return Err(BackendError::config(
                "autocluster_host",
                "the DNS name to look up is required: set AUTOCLUSTER_HOST, \
                 cluster_formation.dns.hostname or autocluster_host",
            ));
        };
        let mut config = DnsConfig::new(name);
        if let Some(found) = values.get("dns_record") {
            config.record = match found.value.trim().to_ascii_lowercase().as_str() {
                "a" | "aaaa" | "a_aaaa" => DnsRecord::A,
                "srv" => DnsRecord::Srv,
                other => {
                    return Err(BackendError::config(
                        &found.source,
                        format!("{other:?} is not a or srv"),
                    ));
                }
            };
        }
        for found in values.list("dns_servers") {
            config.servers.push(
                parse_server(&found.value)
                    .map_err(|detail| BackendError::config(&found.source, detail))?,
            );
        }
        if let Some(long) = config::parse_bool(&values, "longname")? {
            config.long_names = long;
        }
        if let Some(prefix) = values.string("node_prefix")? {
            config.node_prefix = prefix;
        }
        if let Some(timeout) = values.seconds("dns_timeout")? {
            config.timeout = timeout;
        }
        let source = |key: &str| values.source(key);
        config.validate().map_err(|e| match e {
            BackendError::Config { key, detail } => BackendError::config(source(&key), detail),
            e => e,
        })?;
        Ok(config)
    }

    /// Checks the settings (no I/O).
    pub fn validate(&self) -> Result<(), BackendError> {
        let name = self.name.trim_end_matches('.');
        if name.is_empty()
            || name.len() > 253
            || name.contains(char::is_whitespace)
            || name
                .split('.')
                .any(|label| label.is_empty() || label.len() > 63)
        {
            return Err(BackendError::config(
                "autocluster_host",
                format!("{:?} is not a DNS name", self.name),
            ));
        }
        NodeName::from_parts(&self.node_prefix, "host").map_err(|e| {
            BackendError::config(
                "node_prefix",
                format!("{:?} cannot start a node name: {e}", self.node_prefix),
            )
        })?;
        if self.timeout.is_zero() {
            return Err(BackendError::config("dns_timeout", "must be positive"));
        }
        Ok(())
    }

    /// The node name for a host name from DNS (a trailing dot is dropped; short names
    /// keep the first label only).
    pub fn node_name(&self, host: &str) -> Result<NodeName, BackendError> {
        let host = host.trim_end_matches('.');
        let host = if self.long_names {
            host
        } else {
            host.split('.').next().unwrap_or(host)
        };
        NodeName::from_parts(&self.node_prefix, host).map_err(|e| BackendError::InvalidResponse {
            backend: NAME,
            detail: format!("host name {host:?} does not make a node name: {e}"),
        })
    }
}

/// `ip` or `ip:port` (`[v6]:port`).
fn parse_server(value: &str) -> Result<SocketAddr, String> {
    let value = value.trim();
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err(format!(
        "{value:?} is not a name server address (ip or ip:port; host names are not accepted)"
    ))
}

#[cfg(feature = "dns")]
mod client {
    use std::collections::BTreeSet;
    use std::net::IpAddr;

    use hickory_resolver::TokioResolver;
    use hickory_resolver::config::{
        ConnectionConfig, LookupIpStrategy, NameServerConfig, ProtocolConfig, ResolverConfig,
    };
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    use hickory_resolver::net::{DnsError, NetError};
    use hickory_resolver::proto::op::ResponseCode;
    use hickory_resolver::proto::rr::{RData, RecordType};

    use super::{DnsConfig, DnsRecord, NAME};
    use crate::NodeName;
    use crate::backend::{Backend, BackendError, MAX_LISTED_NODES, RegisteredNode, with_timeout};

    /// The DNS backend. Cheap to clone.
    #[derive(Clone)]
    pub struct DnsBackend {
        config: DnsConfig,
        resolver: TokioResolver,
        servers_text: String,
    }

    impl std::fmt::Debug for DnsBackend {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("DnsBackend")
                .field("config", &self.config)
                .finish_non_exhaustive()
        }
    }

    impl DnsBackend {
        /// A backend for `config`. Checks it and builds the resolver (reading
        /// `/etc/resolv.conf` when no servers are configured); sends nothing.
        pub fn new(config: DnsConfig) -> Result<DnsBackend, BackendError> {
            config.validate()?;
            let provider = TokioRuntimeProvider::default();
            let mut builder = if config.servers.is_empty() {
                TokioResolver::builder(provider).map_err(|e| {
                    BackendError::config(
                        "dns_servers",
                        format!("no name servers configured and the system's cannot be read: {e}"),
                    )
                })?
            } else {
                let servers = config
                    .servers
                    .iter()
                    .map(|addr| {
                        let connection = |protocol| {
                            let mut connection = ConnectionConfig::new(protocol);
                            connection.port = addr.port();
                            connection
                        };
                        NameServerConfig::new(
                            addr.ip(),
                            true,
                            vec![
                                connection(ProtocolConfig::Udp),
                                connection(ProtocolConfig::Tcp),
                            ],
                        )
                    })
                    .collect();
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), servers),
                    provider,
                )
            };
            let options = builder.options_mut();
            // Fresh answers every time: membership changes are what we are after.
            options.cache_size = 0;
            options.timeout = config.timeout;
            options.attempts = 1;
            options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
            let resolver = builder.build().map_err(|e| {
                BackendError::config("dns_servers", format!("cannot build the resolver: {e}"))
            })?;
            let servers_text = if config.servers.is_empty() {
                "the system's name servers".to_owned()
            } else {
                config
                    .servers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            Ok(DnsBackend {
                config,
                resolver,
                servers_text,
            })
        }

        /// The configuration.
        pub fn config(&self) -> &DnsConfig {
            &self.config
        }

        fn map_error(&self, what: &str, error: NetError) -> BackendError {
            match &error {
                NetError::Dns(DnsError::NoRecordsFound(no_records)) => {
                    let detail = if no_records.response_code == ResponseCode::NXDomain {
                        format!(
                            "{what}: NXDOMAIN, the name does not exist (a headless Service \
                             without ready pods answers this too)"
                        )
                    } else {
                        format!(
                            "{what}: the name exists but has no such records ({})",
                            no_records.response_code
                        )
                    };
                    BackendError::Unavailable {
                        backend: NAME,
                        endpoint: self.servers_text.clone(),
                        detail,
                    }
                }
                NetError::Timeout => BackendError::timeout(NAME, "lookup", self.config.timeout),
                _ => BackendError::Unavailable {
                    backend: NAME,
                    endpoint: self.servers_text.clone(),
                    detail: format!("{what}: {error}"),
                },
            }
        }

        async fn list_unbounded(&self) -> Result<Vec<RegisteredNode>, BackendError> {
            let name = self.config.name.as_str();
            let mut found: BTreeMap<NodeName, RegisteredNode> = BTreeMap::new();
            let too_many = || BackendError::InvalidResponse {
                backend: NAME,
                detail: format!("{name} has more than {MAX_LISTED_NODES} records"),
            };
            match self.config.record {
                DnsRecord::A => {
                    let lookup = self
                        .resolver
                        .lookup_ip(name)
                        .await
                        .map_err(|e| self.map_error(&format!("A/AAAA {name}"), e))?;
                    let addresses: BTreeSet<IpAddr> = lookup.iter().collect();
                    if addresses.len() > MAX_LISTED_NODES {
                        return Err(too_many());
                    }
                    for ip in addresses {
                        let host = self.reverse(name, ip).await?;
                        let node = self.config.node_name(&host)?;
                        let mut entry = RegisteredNode::new(node.clone(), 0);
                        entry.address = Some(ip.to_string());
                        entry.metadata.insert("host".into(), host);
                        found.entry(node).or_insert(entry);
                    }
                }
                DnsRecord::Srv => {
                    let lookup = self
                        .resolver
                        .lookup(name, RecordType::SRV)
                        .await
                        .map_err(|e| self.map_error(&format!("SRV {name}"), e))?;
                    let mut count = 0;
                    for record in lookup.answers() {
                        let RData::SRV(srv) = &record.data else {
                            continue;
                        };
                        count += 1;
                        if count > MAX_LISTED_NODES {
                            return Err(too_many());
                        }
                        let host = srv.target.to_utf8();
                        let node = self.config.node_name(&host)?;
                        let mut entry = RegisteredNode::new(node.clone(), 0);
                        entry.address = Some(host.trim_end_matches('.').to_owned());
                        entry.metadata.insert("port".into(), srv.port.to_string());
                        entry
                            .metadata
                            .insert("host".into(), host.trim_end_matches('.').to_owned());
                        found.entry(node).or_insert(entry);
                    }
                    if count == 0 {
                        return Err(BackendError::Unavailable {
                            backend: NAME,
                            endpoint: self.servers_text.clone(),
                            detail: format!("SRV {name}: the answer holds no SRV record"),
                        });
                    }
                }
            }
            // Alphabetical (a BTreeMap by node name); the order is the position.
            Ok(found
                .into_values()
                .enumerate()
                .map(|(i, mut node)| {
                    node.order = i as u64;
                    node
                })
                .collect())
        }

        /// The host name of `ip` (its first PTR record), without the trailing dot.
        async fn reverse(&self, name: &str, ip: IpAddr) -> Result<String, BackendError> {
            let lookup = self.resolver.reverse_lookup(ip).await.map_err(|e| match e {
                NetError::Dns(DnsError::NoRecordsFound(_)) => BackendError::InvalidResponse {
                    backend: NAME,
                    detail: format!(
                        "{ip} (an address of {name}) has no PTR record: its host name is unknown"
                    ),
                },
                e => self.map_error(&format!("PTR {ip}"), e),
            })?;
            let mut hosts: Vec<String> = lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::PTR(ptr) => Some(ptr.0.to_utf8().trim_end_matches('.').to_owned()),
                    _ => None,
                })
                .collect();
            // Several PTR records: take the smallest, so that every node picks the same.
            hosts.sort();
            hosts
                .into_iter()
                .next()
                .ok_or_else(|| BackendError::InvalidResponse {
                    backend: NAME,
                    detail: format!("{ip} (an address of {name}): the PTR answer holds no name"),
                })
        }
    }

    use std::collections::BTreeMap;

    #[async_trait::async_trait]
    impl Backend for DnsBackend {
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
            with_timeout(
                NAME,
                "list_nodes",
                self.config.timeout,
                self.list_unbounded(),
            )
            .await
        }

        /// The alphabetically first listed node.
        async fn deterministic_seed(
            &self,
            _local: &NodeName,
        ) -> Result<Option<NodeName>, BackendError> {
            Ok(self.list_nodes().await?.into_iter().next().map(|n| n.node))
        }
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
    fn names_short_and_long() {
        let config = DnsConfig::new("svc.example");
        assert_eq!(
            config.node_name("rmq-0.svc.example.").unwrap().as_str(),
            "rabbit@rmq-0"
        );
        let config = config.with_long_names(true).with_node_prefix("app");
        assert_eq!(
            config.node_name("rmq-0.svc.example.").unwrap().as_str(),
            "app@rmq-0.svc.example"
        );
        assert!(matches!(
            config.node_name(""),
            Err(BackendError::InvalidResponse { .. })
        ));
    }

    #[test]
    fn settings_from_both_spellings() {
        let config = DnsConfig::from_vars(
            [
                ("AUTOCLUSTER_TYPE", "dns"),
                ("AUTOCLUSTER_HOST", "rmq.local"),
                ("AUTOCLUSTER_DNS_RECORD", "srv"),
                ("AUTOCLUSTER_DNS_SERVERS", "127.0.0.1:5353, ::1"),
                ("RABBITMQ_USE_LONGNAME", "true"),
                ("AUTOCLUSTER_NODE_PREFIX", "app"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap();
        assert_eq!(config.name, "rmq.local");
        assert_eq!(config.record, DnsRecord::Srv);
        assert_eq!(
            config.servers,
            [
                "127.0.0.1:5353".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert!(config.long_names);
        assert_eq!(config.node_prefix, "app");

        let err = DnsConfig::from_map(&map(&[])).unwrap_err();
        assert!(err.to_string().contains("AUTOCLUSTER_HOST"), "{err}");
        let err = DnsConfig::from_map(&map(&[
            ("cluster_formation.dns.hostname", "x"),
            ("dns_servers", "dns.google"),
        ]))
        .unwrap_err();
        assert!(
            matches!(&err, BackendError::Config { key, .. } if key == "dns_servers"),
            "{err}"
        );
        let err = DnsConfig::from_map(&map(&[
            ("cluster_formation.dns.hostname", "x"),
            ("cluster_formation.dns.host_name", "x"),
        ]))
        .unwrap_err();
        assert!(
            matches!(&err, BackendError::Config { key, .. } if key == "cluster_formation.dns.host_name"),
            "{err}"
        );
        let err = DnsConfig::from_map(&map(&[("autocluster_host", "a..b")])).unwrap_err();
        assert!(err.to_string().contains("not a DNS name"), "{err}");
        let err = DnsConfig::from_map(&map(&[("autocluster_host", "a"), ("longname", "yes")]))
            .unwrap_err();
        assert!(
            matches!(&err, BackendError::Config { key, .. } if key == "longname"),
            "{err}"
        );
    }
}
