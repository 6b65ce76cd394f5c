//! Calls a function on an Erlang node and prints the result in Erlang syntax.
//!
//! ```text
//! rpc_call --node NAME (--cookie C | --cookie-file F) [--timeout SECS] [--epmd-port P]
//!          [--rpc erpc|rex] [--ssl-dist-optfile FILE] MODULE FUNCTION [ARGS]
//! ```
//!
//! `--rpc` chooses how the call is made: `erpc` (a spawn request, the default on OTP 23
//! and later) or `rex` (a `gen_server` call to the node's `rex` process, as `erl_call`
//! and `rpc:call/4` against older nodes do).
//!
//! With `--ssl-dist-optfile` (build with `--features tls`) it speaks TLS distribution,
//! configured by the same file as the Erlang nodes (`-proto_dist inet_tls`).
//!
//! `ARGS` is an Erlang list literal, e.g. `'[1, foo, "text", <<"bin">>, {a, 2}]'`
//! (default `[]`). The result is printed as `io_lib:format("~0p", [Result])` would print
//! it. On failure the error is printed and the exit status is 1.

mod support;
use support::tls_args;

use std::net::{IpAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use autocluster::node::RpcMethod;
use autocluster::term::{Term, parse_term};
use autocluster::{Cookie, Node, NodeName};

/// How many runs at once can call the same node (each holds one name of the pool).
const CLIENT_NAMES: u16 = 32;

const USAGE: &str = "usage: rpc_call --node NAME (--cookie C | --cookie-file F) [--timeout SECS] [--epmd-port P] [--rpc erpc|rex] [--ssl-dist-optfile FILE] MODULE FUNCTION [ARGS]";

struct Args {
    node: NodeName,
    cookie: Cookie,
    timeout: Duration,
    epmd_port: Option<u16>,
    rpc: RpcMethod,
    tls: Option<String>,
    module: String,
    function: String,
    args: Vec<Term>,
}

fn parse_args() -> Result<Args, String> {
    let mut node = None;
    let mut cookie = None;
    let mut timeout = Duration::from_secs(15);
    let mut epmd_port = None;
    let mut tls = None;
    let mut rpc = RpcMethod::Auto;
    let mut positional = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
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
            "--timeout" => {
                let secs: f64 = value("--timeout")?
                    .parse()
                    .map_err(|_| "--timeout takes seconds".to_string())?;
                timeout = Duration::from_secs_f64(secs);
            }
            "--epmd-port" => {
                epmd_port = Some(
                    value("--epmd-port")?
                        .parse()
                        .map_err(|_| "bad --epmd-port".to_string())?,
                )
            }
            "--rpc" => {
                rpc = match value("--rpc")?.as_str() {
                    "erpc" => RpcMethod::Erpc,
                    "rex" => RpcMethod::Rex,
                    other => return Err(format!("--rpc takes erpc or rex, not {other:?}")),
                }
            }
            "--ssl-dist-optfile" => tls = Some(value("--ssl-dist-optfile")?),
            "-h" | "--help" => return Err(USAGE.into()),
            other if other.starts_with("--") => {
                return Err(format!("unknown option {other}\n{USAGE}"));
            }
            _ => positional.push(arg),
        }
    }
    let node = node.ok_or_else(|| format!("--node is required\n{USAGE}"))?;
    let cookie = match cookie {
        Some(c) => c,
        None => Cookie::from_default_file()
            .map_err(|e| format!("no --cookie or --cookie-file, and {e}"))?,
    };
    let (module, function, args) = match positional.as_slice() {
        [m, f] => (m.clone(), f.clone(), Vec::new()),
        [m, f, a] => {
            let parsed = parse_term(a).map_err(|e| format!("ARGS: {e}"))?;
            let list = parsed
                .into_list_elements()
                .ok_or_else(|| "ARGS must be an Erlang list, e.g. '[1, foo]'".to_string())?;
            (m.clone(), f.clone(), list)
        }
        _ => return Err(USAGE.into()),
    };
    Ok(Args {
        node,
        cookie,
        timeout,
        epmd_port,
        rpc,
        tls,
        module,
        function,
        args,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // One peer, one call: resolve its host here, blocking, before the runtime starts, and
    // hand the address to the node, which then needs no resolver thread (the larger part
    // of a one-shot call's system time otherwise).
    let host = args.node.host();
    let ip = match args.node.host_ip() {
        Some(ip) => ip,
        None => match (host, 0).to_socket_addrs() {
            // IPv4 first, as the node itself prefers.
            Ok(addrs) => match addrs.min_by_key(|a| a.is_ipv6()) {
                Some(addr) => addr.ip(),
                None => {
                    eprintln!("cannot resolve {host}: no address");
                    return ExitCode::FAILURE;
                }
            },
            Err(e) => {
                eprintln!("cannot resolve {host}: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args, ip))
}

async fn run(args: Args, ip: IpAddr) -> ExitCode {
    // A hidden client node on the peer's host, of the same name kind as the peer, named
    // from a small pool (`rpc_call`, `rpc_call_2`, …): a fresh name per run would leave
    // one atom behind on the peer for every run.
    let me = format!("rpc_call@{}", args.node.host());
    let me: NodeName = match me.parse() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = Node::builder(me, args.cookie)
        .host_address(args.node.host(), ip)
        .rpc_method(args.rpc);
    if let Some(p) = args.epmd_port {
        builder = builder.epmd_port(p);
    }
    let builder = match tls_args::with_tls(builder, args.tls) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let node = match builder.start_client(&args.node, CLIENT_NAMES).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let result = node
        .call(
            &args.node,
            &args.module,
            &args.function,
            args.args,
            args.timeout,
        )
        .await;
    node.shutdown().await;
    match result {
        Ok(result) => {
            println!("{result}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
