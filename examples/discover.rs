//! Prints the nodes a discovery backend lists, one per line, in registration order, like
//! `rabbitmq-diagnostics discover_peers`: the operator's first question when cluster
//! formation goes wrong.
//!
//! ```text
//! cargo run --example discover --features etcd -- --backend etcd \
//!     --etcd-endpoints http://127.0.0.1:2379 [--etcd-endpoints ...] \
//!     [--etcd-prefix rabbitmq] [--cluster-name default] [--etcd-timeout 5]
//! cargo run --example discover -- --backend static --static-nodes rabbit@a \
//!     --static-nodes rabbit@b [--static-seed rabbit@b]
//! cargo run --example discover --features etcd -- --from-env         # AUTOCLUSTER_TYPE, ETCD_HOST, ...
//! cargo run --example discover --features dns -- --backend dns --autocluster-host NAME \
//!     --set cluster_formation.dns.hostname=NAME   # any key, RabbitMQ's included
//! cargo run --example discover -- --help     # every backend and its flags
//! ```
//!
//! Every setting a backend reads is a flag: its map key (see each backend's settings
//! table, linked from docs/configuration.md) with dashes, repeatable for a list;
//! `--set KEY=VALUE` takes any key, RabbitMQ's `cluster_formation.*` keys included. A flag of a backend other than the chosen one is
//! an error that says so.
//!
//! `--verbose` adds each node's order, address and metadata, and the backend's seed (for
//! `--node NAME`, or else the first node listed).
//! Errors exit with status 1 and the typed error's message; usage errors with status 2.
//!
//! The backend options are shared with the `health` example (`examples/support/`).

use std::process::ExitCode;

use autocluster::backend::BackendError;

mod support;
use autocluster::NodeName;
use support::backend_args::{BackendArgs, backend_usage};

struct Args {
    backend: BackendArgs,
    node: Option<NodeName>,
    verbose: bool,
}

fn parse_args<I: Iterator<Item = String>>(mut argv: I) -> Result<Args, String> {
    let mut args = Args {
        backend: BackendArgs::default(),
        node: None,
        verbose: false,
    };
    while let Some(flag) = argv.next() {
        let mut value = |name: &str| argv.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--verbose" | "-v" => args.verbose = true,
            "--node" => {
                let name = value("--node")?;
                args.node = Some(name.parse().map_err(|e| format!("--node {name:?}: {e}"))?);
            }
            "--help" | "-h" => return Err(String::new()),
            other => {
                if !args.backend.take(other, &mut value)? {
                    return Err(format!("unknown argument {other:?}"));
                }
            }
        }
    }
    if !args.backend.is_set() {
        return Err("choose --backend or --from-env".into());
    }
    Ok(args)
}

const USAGE: &str = "usage: discover BACKEND-OPTIONS [--verbose [--node NAME]]
  --verbose: each node's order, address and metadata, and the backend's seed
  --node NAME: the node whose seed --verbose prints (default: the first listed)";

async fn run(args: Args) -> Result<(), BackendError> {
    let backend = args.backend.build().await?;
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
        let local = args
            .node
            .clone()
            .or_else(|| nodes.first().map(|n| n.node.clone()));
        if let Some(local) = local
            && let Some(seed) = backend.deterministic_seed(&local).await?
        {
            eprintln!("deterministic seed (for {local}): {seed}");
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
            eprintln!("{USAGE}\n{}", backend_usage());
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
