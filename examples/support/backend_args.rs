//! Backend options shared by the `discover` and `health` examples.
//!
//! Adding a backend's flags: add its fields to `BackendArgs`, its flags to
//! `BackendArgs::take`, and build it in `build_backend`.

use std::time::Duration;

use autocluster::NodeName;
use autocluster::backend::{
    self, Backend, BackendError, MemoryBackend, Registration, StaticBackend, StaticConfig,
};

/// The backend options, for usage texts.
pub const BACKEND_USAGE: &str = "  backend: --backend (memory|static|etcd|consul|kubernetes|dns) | --from-env (AUTOCLUSTER_TYPE, ...)
           --timeout SECS
  static:  --static-node NAME (repeatable)  --seed NAME
  etcd:    --etcd-endpoint URL (repeatable, default http://localhost:2379)
           --prefix P (default rabbitmq)  --cluster-name N (default default)
           --username U --password P  --cacertfile F [--certfile F --keyfile F]
  consul:  --consul-addr URL (default http://localhost:8500)  --consul-service S
           --consul-token T  --cluster-name N  --consul-warnings  --cacertfile F
  kubernetes: --k8s-service S  --k8s-namespace N  --k8s-address-type ip|hostname
           --k8s-hostname-suffix X  --k8s-api URL  --k8s-kubeconfig F  --k8s-context C
           --node-prefix P
  dns:     --dns-name NAME  --dns-server ADDR:PORT (repeatable)  --dns-srv  --long-names
           --node-prefix P";

/// Backend options, as `discover` and `health` take them.
#[derive(Debug, Default)]
pub struct BackendArgs {
    backend: Option<String>,
    from_env: bool,
    timeout: Option<Duration>,
    /// Nodes of a static list (or registered in the memory backend).
    pub nodes: Vec<NodeName>,
    seed: Option<NodeName>,
    etcd_endpoints: Vec<String>,
    prefix: Option<String>,
    cluster_name: Option<String>,
    username: Option<String>,
    password: Option<String>,
    cacertfile: Option<String>,
    certfile: Option<String>,
    keyfile: Option<String>,
    consul_addr: Option<String>,
    consul_service: Option<String>,
    consul_token: Option<String>,
    consul_warnings: bool,
    k8s_service: Option<String>,
    k8s_namespace: Option<String>,
    k8s_address_type: Option<String>,
    k8s_hostname_suffix: Option<String>,
    k8s_api: Option<String>,
    k8s_kubeconfig: Option<String>,
    k8s_context: Option<String>,
    node_prefix: Option<String>,
    dns_name: Option<String>,
    dns_servers: Vec<String>,
    dns_srv: bool,
    long_names: bool,
}

impl BackendArgs {
    /// Takes `flag` (reading its value with `value`) when it is a backend option;
    /// `Ok(false)` when it is not one.
    pub fn take(
        &mut self,
        flag: &str,
        value: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<bool, String> {
        let args = self;
        let node = |s: String| s.parse::<NodeName>().map_err(|e| e.to_string());
        match flag {
            "--backend" => args.backend = Some(value("--backend")?),
            "--from-env" => args.from_env = true,
            "--timeout" => {
                let v = value("--timeout")?;
                let secs: f64 = v
                    .parse()
                    .map_err(|_| format!("--timeout {v:?} is not a number of seconds"))?;
                if !(secs > 0.0 && secs < 3600.0) {
                    return Err(format!("--timeout {v:?} is out of range"));
                }
                args.timeout = Some(Duration::from_secs_f64(secs));
            }
            "--static-node" => args.nodes.push(node(value("--static-node")?)?),
            "--seed" => args.seed = Some(node(value("--seed")?)?),
            "--etcd-endpoint" => args.etcd_endpoints.push(value("--etcd-endpoint")?),
            "--prefix" => args.prefix = Some(value("--prefix")?),
            "--cluster-name" => args.cluster_name = Some(value("--cluster-name")?),
            "--username" => args.username = Some(value("--username")?),
            "--password" => args.password = Some(value("--password")?),
            "--cacertfile" => args.cacertfile = Some(value("--cacertfile")?),
            "--certfile" => args.certfile = Some(value("--certfile")?),
            "--keyfile" => args.keyfile = Some(value("--keyfile")?),
            "--consul-addr" => args.consul_addr = Some(value("--consul-addr")?),
            "--consul-service" => args.consul_service = Some(value("--consul-service")?),
            "--consul-token" => args.consul_token = Some(value("--consul-token")?),
            "--consul-warnings" => args.consul_warnings = true,
            "--k8s-service" => args.k8s_service = Some(value("--k8s-service")?),
            "--k8s-namespace" => args.k8s_namespace = Some(value("--k8s-namespace")?),
            "--k8s-address-type" => args.k8s_address_type = Some(value("--k8s-address-type")?),
            "--k8s-hostname-suffix" => {
                args.k8s_hostname_suffix = Some(value("--k8s-hostname-suffix")?)
            }
            "--k8s-api" => args.k8s_api = Some(value("--k8s-api")?),
            "--k8s-kubeconfig" => args.k8s_kubeconfig = Some(value("--k8s-kubeconfig")?),
            "--k8s-context" => args.k8s_context = Some(value("--k8s-context")?),
            "--node-prefix" => args.node_prefix = Some(value("--node-prefix")?),
            "--dns-name" => args.dns_name = Some(value("--dns-name")?),
            "--dns-server" => args.dns_servers.push(value("--dns-server")?),
            "--dns-srv" => args.dns_srv = true,
            "--long-names" => args.long_names = true,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Whether a backend was chosen.
    pub fn is_set(&self) -> bool {
        self.backend.is_some() || self.from_env
    }

    /// Builds the chosen backend.
    pub async fn build(&self) -> Result<Box<dyn Backend>, BackendError> {
        build_backend(self).await
    }
}

async fn build_backend(args: &BackendArgs) -> Result<Box<dyn Backend>, BackendError> {
    if args.from_env {
        return backend::from_env();
    }
    let kind: backend::BackendKind = args
        .backend
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|detail: String| BackendError::config("--backend", detail))?;
    match kind {
        backend::BackendKind::Memory => {
            let registry = MemoryBackend::new();
            for node in &args.nodes {
                // Abandoned at once: listed until the TTL, long enough to print them.
                registry
                    .register(Registration::new(node.clone(), Duration::from_secs(60)))
                    .await?
                    .abandon();
            }
            Ok(Box::new(registry))
        }
        backend::BackendKind::Static => {
            let mut config = StaticConfig::new(args.nodes.clone());
            if let Some(seed) = &args.seed {
                config = config.with_seed(seed.clone());
            }
            Ok(Box::new(StaticBackend::new(config)?))
        }
        backend::BackendKind::Etcd => etcd_backend(args),
        backend::BackendKind::Consul => consul_backend(args),
        backend::BackendKind::Kubernetes => kubernetes_backend(args),
        backend::BackendKind::Dns => dns_backend(args),
        other => Err(BackendError::config(
            "--backend",
            format!("the {other} backend is not available in this example"),
        )),
    }
}

#[cfg(feature = "etcd")]
fn etcd_backend(args: &BackendArgs) -> Result<Box<dyn Backend>, BackendError> {
    use autocluster::backend::etcd::{EtcdBackend, EtcdConfig, EtcdTls};
    let endpoints = if args.etcd_endpoints.is_empty() {
        vec!["http://localhost:2379".to_owned()]
    } else {
        args.etcd_endpoints.clone()
    };
    let mut config = EtcdConfig::new(endpoints);
    if let Some(prefix) = &args.prefix {
        config = config.with_prefix(prefix);
    }
    if let Some(cluster) = &args.cluster_name {
        config = config.with_cluster_name(cluster);
    }
    if let Some(timeout) = args.timeout {
        config = config.with_timeout(timeout);
    }
    match (&args.username, &args.password) {
        (Some(user), Some(password)) => config = config.with_credentials(user, password),
        (None, None) => {}
        _ => {
            return Err(BackendError::config(
                "--username",
                "give both --username and --password",
            ));
        }
    }
    if let Some(ca) = &args.cacertfile {
        config = config.with_tls(EtcdTls {
            ca_file: ca.into(),
            cert_file: args.certfile.as_ref().map(Into::into),
            key_file: args.keyfile.as_ref().map(Into::into),
            server_name: None,
        });
    }
    Ok(Box::new(EtcdBackend::new(config)?))
}

#[cfg(not(feature = "etcd"))]
fn etcd_backend(_args: &BackendArgs) -> Result<Box<dyn Backend>, BackendError> {
    Err(BackendError::config(
        "--backend",
        "this example was built without the etcd backend: add --features etcd",
    ))
}

/// `http(s)://host:port` → (scheme, host, port).
#[cfg(any(feature = "consul", feature = "kubernetes"))]
fn split_url(
    flag: &str,
    url: &str,
    default_port: u16,
) -> Result<(String, String, u16), BackendError> {
    let bad = || BackendError::config(flag, format!("{url:?} is not http(s)://host[:port]"));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => {
            (host, port.parse::<u16>().map_err(|_| bad())?)
        }
        _ => (rest, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || (scheme != "http" && scheme != "https") {
        return Err(bad());
    }
    Ok((scheme.to_owned(), host.to_owned(), port))
}

#[cfg(feature = "consul")]
fn consul_backend(args: &BackendArgs) -> Result<Box<dyn Backend>, BackendError> {
    use autocluster::backend::consul::{ConsulBackend, ConsulConfig, ConsulTls};
    let (scheme, host, port) = split_url(
        "--consul-addr",
        args.consul_addr
            .as_deref()
            .unwrap_or("http://localhost:8500"),
        8500,
    )?;
    let mut config = ConsulConfig::new(host, port);
    if scheme == "https" {
        config = config.with_tls(ConsulTls {
            ca_file: args.cacertfile.as_ref().map(Into::into),
            client: None,
        });
    }
    if let Some(service) = &args.consul_service {
        config = config.with_service(service);
    }
    if let Some(token) = &args.consul_token {
        config = config.with_acl_token(token);
    }
    if let Some(cluster) = &args.cluster_name {
        config = config.with_cluster_name(cluster);
    }
    if let Some(timeout) = args.timeout {
        config = config.with_timeout(timeout);
    }
    config = config.with_include_warnings(args.consul_warnings);
    Ok(Box::new(ConsulBackend::new(config)?))
}

#[cfg(not(feature = "consul"))]
fn consul_backend(_args: &BackendArgs) -> Result<Box<dyn Backend>, BackendError> {
    Err(BackendError::config(
        "--backend",
        "this example was built without the Consul backend: add --features consul",
    ))
}

#[cfg(feature = "kubernetes")]
fn kubernetes_backend(args: &BackendArgs) -> Result<Box<dyn Backend>, BackendError> {
    use autocluster::backend::kubernetes::{
        AddressType, InCluster, KubernetesApi, KubernetesBackend, KubernetesConfig,
    };
    let mut config = KubernetesConfig::new(args.k8s_service.as_deref().unwrap_or("rabbitmq"));
    if args.k8s_kubeconfig.is_some() || args.k8s_context.is_some() {
        config = config.with_api(KubernetesApi::Kubeconfig {
            path: args.k8s_kubeconfig.as_ref().map(Into::into),
            context: args.k8s_context.clone(),
        });
    } else if let Some(url) = &args.k8s_api {
        let (scheme, host, port) = split_url("--k8s-api", url, 443)?;
        let mut in_cluster = InCluster {
            scheme: scheme.clone(),
            host,
            port,
            ..InCluster::default()
        };
        if scheme == "http" {
            // e.g. `kubectl proxy`: it authenticates for us.
            in_cluster.token_path = None;
        }
        config = config.with_api(KubernetesApi::InCluster(in_cluster));
    }
    if let Some(ns) = &args.k8s_namespace {
        config = config.with_namespace(ns);
    }
    let address_type = match args.k8s_address_type.as_deref() {
        None | Some("ip") => AddressType::Ip,
        Some("hostname") => AddressType::Hostname,
        Some(other) => {
            return Err(BackendError::config(
                "--k8s-address-type",
                format!("{other:?} is not ip or hostname"),
            ));
        }
    };
    config = config.with_addresses(
        address_type,
        args.k8s_hostname_suffix.clone().unwrap_or_default(),
    );
    if let Some(prefix) = &args.node_prefix {
        config.node_prefix = prefix.clone();
    }
    if let Some(timeout) = args.timeout {
        config = config.with_timeout(timeout);
    }
    Ok(Box::new(KubernetesBackend::new(config)?))
}

#[cfg(not(feature = "kubernetes"))]
fn kubernetes_backend(_args: &BackendArgs) -> Result<Box<dyn Backend>, BackendError> {
    Err(BackendError::config(
        "--backend",
        "this example was built without the Kubernetes backend: add --features kubernetes",
    ))
}

#[cfg(feature = "dns")]
fn dns_backend(args: &BackendArgs) -> Result<Box<dyn Backend>, BackendError> {
    use autocluster::backend::dns::{DnsBackend, DnsConfig, DnsRecord};
    let Some(name) = &args.dns_name else {
        return Err(BackendError::config(
            "--dns-name",
            "the DNS backend needs --dns-name",
        ));
    };
    let mut servers = Vec::new();
    for server in &args.dns_servers {
        let addr = server
            .parse::<std::net::SocketAddr>()
            .or_else(|_| {
                server
                    .parse::<std::net::IpAddr>()
                    .map(|ip| std::net::SocketAddr::new(ip, 53))
            })
            .map_err(|_| {
                BackendError::config("--dns-server", format!("{server:?} is not ip or ip:port"))
            })?;
        servers.push(addr);
    }
    let mut config = DnsConfig::new(name.clone())
        .with_servers(servers)
        .with_long_names(args.long_names)
        .with_record(if args.dns_srv {
            DnsRecord::Srv
        } else {
            DnsRecord::A
        });
    if let Some(prefix) = &args.node_prefix {
        config = config.with_node_prefix(prefix);
    }
    if let Some(timeout) = args.timeout {
        config = config.with_timeout(timeout);
    }
    Ok(Box::new(DnsBackend::new(config)?))
}

#[cfg(not(feature = "dns"))]
fn dns_backend(_args: &BackendArgs) -> Result<Box<dyn Backend>, BackendError> {
    Err(BackendError::config(
        "--backend",
        "this example was built without the DNS backend: add --features dns",
    ))
}
