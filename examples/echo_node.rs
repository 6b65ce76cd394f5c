//! A Rust node that Erlang can ping and talk to.
//!
//! ```text
//! echo_node --name NAME (--cookie C | --cookie-file F) [--listen ADDR] [--epmd-port P] [--published]
//!           [--ssl-dist-optfile FILE]
//! ```
//!
//! With `--ssl-dist-optfile` (build with `--features tls`) it speaks TLS distribution,
//! configured by the same file as the Erlang nodes (`-proto_dist inet_tls`).
//!
//! It listens (default `127.0.0.1:0`: loopback only; give `--listen` an address other
//! hosts can reach, and firewall it, to serve them), registers in EPMD, answers `net_adm:ping/1`
//! with `pong`, and sends every `{Pid, Term}` received on its registered mailbox `echo`
//! back to `Pid` as `Term`. From Erlang:
//!
//! ```erlang
//! pong = net_adm:ping('echo@localhost'),
//! {echo, 'echo@localhost'} ! {self(), hello},
//! receive hello -> ok end.
//! ```

mod support;
use support::tls_args;

use std::net::SocketAddr;
use std::process::ExitCode;

use autocluster::term::Term;
use autocluster::{Cookie, Node, NodeName};

const USAGE: &str = "usage: echo_node --name NAME (--cookie C | --cookie-file F) [--listen ADDR] [--epmd-port P] [--published] [--ssl-dist-optfile FILE]";

fn parse_args() -> Result<autocluster::node::NodeBuilder, String> {
    let mut name = None;
    let mut cookie = None;
    let mut listen: SocketAddr = "127.0.0.1:0".parse().map_err(|_| "bad default")?;
    let mut epmd_port = None;
    let mut published = false;
    let mut tls = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |n: &str| {
            it.next()
                .ok_or_else(|| format!("{n} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--name" => {
                name = Some(
                    value("--name")?
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
            "--listen" => {
                listen = value("--listen")?
                    .parse()
                    .map_err(|_| "bad --listen address".to_string())?
            }
            "--epmd-port" => {
                epmd_port = Some(
                    value("--epmd-port")?
                        .parse()
                        .map_err(|_| "bad --epmd-port".to_string())?,
                )
            }
            "--published" => published = true,
            "--ssl-dist-optfile" => tls = Some(value("--ssl-dist-optfile")?),
            _ => return Err(USAGE.into()),
        }
    }
    let name = name.ok_or_else(|| format!("--name is required\n{USAGE}"))?;
    let cookie = match cookie {
        Some(c) => c,
        None => Cookie::from_default_file()
            .map_err(|e| format!("no --cookie or --cookie-file, and {e}"))?,
    };
    let mut b = Node::builder(name, cookie)
        .listen(listen)
        .hidden(!published);
    if let Some(p) = epmd_port {
        b = b.epmd_port(p);
    }
    tls_args::with_tls(b, tls)
}

#[tokio::main]
async fn main() -> ExitCode {
    let builder = match parse_args() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let node = match builder.start().await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut echo = match node.register("echo") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{} listening on {:?}; mailbox 'echo' ready",
        node.name(),
        node.local_addr()
    );
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            msg = echo.recv() => {
                let Some(env) = msg else { break };
                if let Term::Tuple(fields) = &env.message
                    && let [Term::Pid(from), payload] = fields.as_slice()
                    && let Err(e) = echo.send(from, payload.clone()).await
                {
                    eprintln!("cannot echo to {from:?}: {e}");
                }
            }
        }
    }
    node.shutdown().await;
    ExitCode::SUCCESS
}
