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
//! cargo run --example discover --features consul -- --backend consul \
//!     [--consul-addr http://127.0.0.1:8500] [--consul-service rabbitmq] [--consul-token T] \
//!     [--cluster-name default] [--consul-warnings]
//! cargo run --example discover --features kubernetes -- --backend kubernetes \
//!     [--k8s-service rabbitmq] [--k8s-namespace N] [--k8s-address-type ip|hostname] \
//!     [--k8s-hostname-suffix .rmq-headless.ns.svc.cluster.local] [--k8s-api URL] \
//!     [--k8s-kubeconfig FILE [--k8s-context C]]
//! cargo run --example discover --features dns -- --backend dns --dns-name NAME \
//!     [--dns-server ADDR:PORT] [--dns-srv] [--long-names] [--node-prefix rabbit]
//! ```
//!
//! Kubernetes: without `--k8s-kubeconfig` the in-cluster service account is used
//! (`/var/run/secrets/kubernetes.io/serviceaccount/`); `--k8s-api URL` points it at
//! another API server (e.g. `http://127.0.0.1:8001` from `kubectl proxy`, which needs no
//! token). `--node NAME` with `--verbose` also prints the StatefulSet seed of that node.
//!
//! `--verbose` adds each node's order, address and metadata, and the backend's seed.
//! Errors exit with status 1 and the typed error's message; usage errors with status 2.
//!
//! The backend options are shared with the `health` example (`examples/support/`).

use std::process::ExitCode;

use autocluster::backend::BackendError;

mod support;
use support::backend_args::{BACKEND_USAGE, BackendArgs};

struct Args {
    backend: BackendArgs,
    verbose: bool,
}

fn parse_args<I: Iterator<Item = String>>(mut argv: I) -> Result<Args, String> {
    let mut args = Args {
        backend: BackendArgs::default(),
        verbose: false,
    };
    while let Some(flag) = argv.next() {
        let mut value = |name: &str| argv.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--verbose" | "-v" => args.verbose = true,
            // `--node` is discover's name for a static list's node.
            "--node" => {
                args.backend.take("--static-node", &mut value)?;
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

const USAGE: &str = "usage: discover BACKEND-OPTIONS [--node NAME]... [--verbose]
  --node NAME: a node of a static list (or registered in the memory backend), repeatable
  --verbose: each node's order, address and metadata, and the backend's seed";

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
            .backend
            .nodes
            .first()
            .cloned()
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
            eprintln!("{USAGE}\n{BACKEND_USAGE}");
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
