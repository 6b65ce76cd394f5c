//! Lists the nodes registered with an EPMD, like `epmd -names`.
//!
//! ```text
//! cargo run --example epmd_names -- [--host HOST] [--port PORT] [--timeout SECONDS]
//! ```
//!
//! The host defaults to 127.0.0.1 and the port to `ERL_EPMD_PORT` or 4369. Exits with
//! status 1 and the error on standard error when EPMD cannot be asked.

use std::process::ExitCode;
use std::time::Duration;

use autocluster::epmd::{EpmdClient, port_from_env};

struct Args {
    host: String,
    port: u16,
    timeout: Duration,
}

fn usage() -> String {
    "usage: epmd_names [--host HOST] [--port PORT] [--timeout SECONDS]".to_owned()
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        host: "127.0.0.1".to_owned(),
        port: port_from_env(),
        timeout: Duration::from_secs(5),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value\n{}", usage()))
        };
        match flag.as_str() {
            "--host" => args.host = value("--host")?,
            "--port" => {
                let v = value("--port")?;
                args.port = v.parse().map_err(|_| format!("bad port {v:?}"))?;
            }
            "--timeout" => {
                let v = value("--timeout")?;
                let secs: f64 = v.parse().map_err(|_| format!("bad timeout {v:?}"))?;
                args.timeout =
                    Duration::try_from_secs_f64(secs).map_err(|_| format!("bad timeout {v:?}"))?;
            }
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let client = match EpmdClient::for_host(&args.host, args.port).await {
        Ok(client) => client.with_timeout(args.timeout),
        Err(e) => {
            eprintln!("epmd_names: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.names_response().await {
        Ok(reply) => {
            println!(
                "epmd: up and running on port {} with data:",
                reply.epmd_port
            );
            for node in reply.nodes {
                println!("name {} at port {}", node.name, node.port);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("epmd_names: {e}");
            ExitCode::FAILURE
        }
    }
}
