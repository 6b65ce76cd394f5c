//! Prints the nodes a discovery backend lists, one per line, in registration order, like
//! `rabbitmq-diagnostics discover_peers`: the operator's first question when cluster
//! formation goes wrong.
//!
//! ```text
//! cargo run --example discover --features etcd -- --backend etcd \
//!     --etcd-endpoint http://127.0.0.1:2379 [--etcd-endpoint ...] \
//!     [--prefix rabbitmq] [--cluster-name default] [--timeout 5]
//! cargo run --example discover -- --backend static --node rabbit@a --node rabbit@b [--seed rabbit@b]
//! cargo run --example discover -- --backend memory --node rabbit@a   # registers, then lists
//! cargo run --example discover --features etcd -- --from-env         # AUTOCLUSTER_TYPE, ETCD_HOST, ...
//! ```
//!
//! `--verbose` adds each node's order, address and metadata, and the backend's seed.
//! Errors exit with status 1 and the typed error's message; usage errors with status 2.
//!
//! Adding a backend's flags: add its fields to `Args`, its flags to `parse_args`, and
//! build it in `build_backend`.

use std::process::ExitCode;
use std::time::Duration;

use autocluster::NodeName;
use autocluster::backend::{
    self, Backend, BackendError, MemoryBackend, Registration, StaticBackend, StaticConfig,
};

const USAGE: &str = "usage: discover --backend (memory|static|etcd) [options] | --from-env
  common:  --verbose  --timeout SECS
  static:  --node NAME (repeatable)  --seed NAME
  memory:  --node NAME (repeatable; registered in the embedded registry, then listed)
  etcd:    --etcd-endpoint URL (repeatable, default http://localhost:2379)
           --prefix P (default rabbitmq)  --cluster-name N (default default)
           --username U --password P  --cacertfile F [--certfile F --keyfile F]";

#[derive(Debug, Default)]
struct Args {
    backend: Option<String>,
    from_env: bool,
    verbose: bool,
    timeout: Option<Duration>,
    nodes: Vec<NodeName>,
    seed: Option<NodeName>,
    etcd_endpoints: Vec<String>,
    prefix: Option<String>,
    cluster_name: Option<String>,
    username: Option<String>,
    password: Option<String>,
    cacertfile: Option<String>,
    certfile: Option<String>,
    keyfile: Option<String>,
}

fn parse_args<I: Iterator<Item = String>>(mut argv: I) -> Result<Args, String> {
    let mut args = Args::default();
    while let Some(flag) = argv.next() {
        let mut value = |name: &str| argv.next().ok_or_else(|| format!("{name} needs a value"));
        let node = |s: String| s.parse::<NodeName>().map_err(|e| e.to_string());
        match flag.as_str() {
            "--backend" => args.backend = Some(value("--backend")?),
            "--from-env" => args.from_env = true,
            "--verbose" | "-v" => args.verbose = true,
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
            "--node" => args.nodes.push(node(value("--node")?)?),
            "--seed" => args.seed = Some(node(value("--seed")?)?),
            "--etcd-endpoint" => args.etcd_endpoints.push(value("--etcd-endpoint")?),
            "--prefix" => args.prefix = Some(value("--prefix")?),
            "--cluster-name" => args.cluster_name = Some(value("--cluster-name")?),
            "--username" => args.username = Some(value("--username")?),
            "--password" => args.password = Some(value("--password")?),
            "--cacertfile" => args.cacertfile = Some(value("--cacertfile")?),
            "--certfile" => args.certfile = Some(value("--certfile")?),
            "--keyfile" => args.keyfile = Some(value("--keyfile")?),
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.backend.is_none() && !args.from_env {
        return Err("choose --backend or --from-env".into());
    }
    Ok(args)
}

async fn build_backend(args: &Args) -> Result<Box<dyn Backend>, BackendError> {
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
        other => Err(BackendError::config(
            "--backend",
            format!("the {other} backend is not available in this example yet"),
        )),
    }
}

#[cfg(feature = "etcd")]
fn etcd_backend(args: &Args) -> Result<Box<dyn Backend>, BackendError> {
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
fn etcd_backend(_args: &Args) -> Result<Box<dyn Backend>, BackendError> {
    Err(BackendError::config(
        "--backend",
        "this example was built without the etcd backend: add --features etcd",
    ))
}

async fn run(args: Args) -> Result<(), BackendError> {
    let backend = build_backend(&args).await?;
    let nodes = backend.list_nodes().await?;
    for node in &nodes {
        if args.verbose {
            let metadata: Vec<String> = node
                .metadata
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            println!(
                "{}\torder={}\taddress={}\t{}",
                node.node,
                node.order,
                node.address.as_deref().unwrap_or("-"),
                metadata.join(",")
            );
        } else {
            println!("{}", node.node);
        }
    }
    if args.verbose {
        eprintln!(
            "{} node(s) from the {} backend (registration: {}, lock: {})",
            nodes.len(),
            backend.name(),
            backend.supports_registration(),
            backend.supports_lock()
        );
        if let Some(local) = nodes.first()
            && let Some(seed) = backend.deterministic_seed(&local.node).await?
        {
            eprintln!("deterministic seed: {seed}");
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("discover: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("discover: {error}");
            ExitCode::from(1)
        }
    }
}
