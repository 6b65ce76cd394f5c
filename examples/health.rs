//! The health probe of one node: is it properly clustered?
//!
//! ```text
//! health --node NAME (--cookie C | --cookie-file F) [BACKEND-OPTIONS] [--expect-nodes N]
//!        [--rabbitmq] [--json] [--epmd-port P] [--call-timeout SECS]
//! ```
//!
//! With backend options (the same as `discover`'s, e.g. `--backend etcd --etcd-endpoints
//! URL`, or `--from-env`) the seed is the alphabetically first live registered node;
//! without them it is the alphabetically first running member of the node's own cluster,
//! and `--expect-nodes N` (required then) demands N running, non-partitioned members.
//! `--rabbitmq` reads membership and partitions the way `rabbitmqctl cluster_status`
//! does; by default the node is a plain Erlang node (`nodes()`).
//!
//! Prints `SUCCESS: ...` or `FAILURE: ...` (or the structured report with `--json`) and
//! exits 0 when healthy, 1 when not, 2 on usage errors: fit for a Kubernetes probe.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use autocluster::formation::{ClusterTarget, ErlangMesh, RabbitMq};
use autocluster::node::{ClientStartError, NameInUse};
use autocluster::{Cookie, Node, NodeName, health};

mod support;
use support::backend_args::{BackendArgs, backend_usage};

const USAGE: &str = "usage: health --node NAME (--cookie C | --cookie-file F) [BACKEND-OPTIONS] [--expect-nodes N] [--rabbitmq] [--json] [--epmd-port P] [--call-timeout SECS]";

struct Args {
    node: NodeName,
    cookie: Cookie,
    backend: BackendArgs,
    expect_nodes: Option<usize>,
    rabbitmq: bool,
    json: bool,
    epmd_port: Option<u16>,
    call_timeout: Duration,
}

/// How many probes at once can check the same node (each holds one name of the pool).
const CLIENT_NAMES: u16 = 32;

fn parse_args() -> Result<Args, String> {
    let mut node = None;
    let mut cookie = None;
    let mut backend = BackendArgs::default();
    let mut expect_nodes = None;
    let mut rabbitmq = false;
    let mut json = false;
    let mut epmd_port = None;
    let mut call_timeout = Duration::from_secs(5);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |n: &str| it.next().ok_or_else(|| format!("{n} needs a value"));
        match flag.as_str() {
            "--node" => {
                node = Some(
                    value("--node")?
                        .parse::<NodeName>()
                        .map_err(|e| e.to_string())?,
                )
            }
            "--cookie" => {
                cookie = Some(Cookie::new(value("--cookie")?).map_err(|e| e.to_string())?)
            }
            "--cookie-file" => {
                cookie =
                    Some(Cookie::from_file(value("--cookie-file")?).map_err(|e| e.to_string())?)
            }
            "--expect-nodes" => {
                expect_nodes = Some(
                    value("--expect-nodes")?
                        .parse()
                        .map_err(|_| "--expect-nodes takes a number".to_string())?,
                )
            }
            "--rabbitmq" => rabbitmq = true,
            "--json" => json = true,
            "--epmd-port" => {
                epmd_port = Some(
                    value("--epmd-port")?
                        .parse()
                        .map_err(|_| "bad --epmd-port".to_string())?,
                )
            }
            "--call-timeout" => {
                let secs: f64 = value("--call-timeout")?
                    .parse()
                    .map_err(|_| "--call-timeout takes seconds".to_string())?;
                call_timeout = Duration::from_secs_f64(secs.clamp(0.1, 600.0));
            }
            "-h" | "--help" => return Err(String::new()),
            other => {
                if !backend.take(other, &mut value)? {
                    return Err(format!("unknown argument {other:?}"));
                }
            }
        }
    }
    let node = node.ok_or("--node is required")?;
    let cookie = match cookie {
        Some(c) => c,
        None => Cookie::from_default_file()
            .map_err(|e| format!("no --cookie or --cookie-file, and {e}"))?,
    };
    if !backend.is_set() && expect_nodes.is_none() {
        return Err("without backend options, --expect-nodes N is required".into());
    }
    Ok(Args {
        node,
        cookie,
        backend,
        expect_nodes,
        rabbitmq,
        json,
        epmd_port,
        call_timeout,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("health: {e}");
            }
            eprintln!("{USAGE}\n{}", backend_usage());
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("health: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<ExitCode, String> {
    // Named from a small pool (`health`, `health_2`, …) rather than per run: a probe run
    // every few seconds under fresh names would fill the nodes' atom tables.
    let me: NodeName = format!("health@{}", args.node.host())
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mut builder = Node::builder(me, args.cookie).handshake_timeout(args.call_timeout);
    if let Some(p) = args.epmd_port {
        builder = builder.epmd_port(p);
    }
    let probe = match builder.clone().start_client(&args.node, CLIENT_NAMES).await {
        Ok(node) => node,
        // The node cannot be reached: the check says so, in the report's own form.
        Err(ClientStartError::Connect(_)) => builder
            .name_in_use(NameInUse::GiveWay)
            .start()
            .await
            .map_err(|e| e.to_string())?,
        Err(e) => return Err(e.to_string()),
    };
    let target: Arc<dyn ClusterTarget> = if args.rabbitmq {
        Arc::new(RabbitMq::new(probe.clone(), args.node.clone()).with_timeout(args.call_timeout))
    } else {
        Arc::new(ErlangMesh::new(probe.clone(), args.node.clone()).with_timeout(args.call_timeout))
    };
    let backend = if args.backend.is_set() {
        Some(args.backend.build().await.map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mut options = health::CheckOptions::default();
    if let Some(n) = args.expect_nodes {
        options = options.expect_nodes(n);
    }
    let report = health::check(target.as_ref(), backend.as_deref(), &options).await;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    probe.shutdown().await;
    Ok(if report.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
