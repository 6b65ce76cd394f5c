//! Runs the crate's embedded EPMD in the foreground: a drop-in for `epmd` on a host
//! without Erlang.
//!
//! ```text
//! cargo run --example epmd_server -- [--port PORT] [--bind ADDR]... [--relaxed-command-check]
//!                                    [--idle-timeout SECONDS] [-v]
//! ```
//!
//! Listens on 127.0.0.1 and ::1 by default (on `ERL_EPMD_PORT` or 4369); each `--bind`
//! replaces the defaults with an IP address (the port comes from `--port`). Stops on
//! Ctrl-C or on a `KILL` request it accepts (`epmd -kill` with no node registered).

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use autocluster::epmd::{EpmdServer, EpmdServerConfig, port_from_env};

fn usage() -> &'static str {
    "usage: epmd_server [--port PORT] [--bind ADDR]... [--relaxed-command-check] \
     [--idle-timeout SECONDS] [-v]"
}

fn parse_args() -> Result<(EpmdServerConfig, bool), String> {
    let mut port = port_from_env();
    let mut binds: Vec<IpAddr> = Vec::new();
    let mut config = EpmdServerConfig::default();
    let mut verbose = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value\n{}", usage()))
        };
        match flag.as_str() {
            "--port" => {
                let v = value("--port")?;
                port = v.parse().map_err(|_| format!("bad port {v:?}"))?;
            }
            "--bind" => {
                let v = value("--bind")?;
                let bare = v.trim_start_matches('[').trim_end_matches(']');
                binds.push(bare.parse().map_err(|_| format!("bad IP address {v:?}"))?);
            }
            "--idle-timeout" => {
                let v = value("--idle-timeout")?;
                let secs: f64 = v.parse().map_err(|_| format!("bad timeout {v:?}"))?;
                config.limits.idle_timeout =
                    Duration::try_from_secs_f64(secs).map_err(|_| format!("bad timeout {v:?}"))?;
            }
            "--relaxed-command-check" | "-relaxed_command_check" => {
                config.relaxed_command_check = true;
            }
            "-v" | "--verbose" => verbose = true,
            "-h" | "--help" => return Err(usage().to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    if std::env::var_os("ERL_EPMD_RELAXED_COMMAND_CHECK").is_some() {
        config.relaxed_command_check = true;
    }
    config.addrs = if binds.is_empty() {
        EpmdServerConfig::localhost(port).addrs
    } else {
        binds
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect()
    };
    Ok((config, verbose))
}

// One thread, like the real epmd: each request is a few system calls, and handing
// connections between worker threads would cost more than serving them.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (config, verbose) = match parse_args() {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_max_level(if verbose {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        })
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let server = match EpmdServer::bind(config).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("epmd_server: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        () = server.closed() => {}
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; shutting down");
            server.shutdown().await;
        }
    }
    ExitCode::SUCCESS
}
