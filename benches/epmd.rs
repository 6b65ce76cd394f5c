//! Benchmark 3: EPMD `PORT_PLEASE2` lookups per second, our embedded server against the
//! real `epmd`.
//!
//! Both servers run as their own process pinned to CPU 1: the real `epmd -port P`, and
//! the crate's embedded server as the `epmd_server` example (built in release by
//! `benches/run.sh`). The clients run in this process, pinned to CPU 0: our
//! `EpmdClient::port_please`, one TCP connection per lookup as the protocol wants, for a
//! node registered in each server. Serial and 16 concurrent clients, each round split
//! into four short measurements of every server in turn.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use autocluster::epmd::{EpmdClient, NodeEntry};
use common::{
    Epmd, Results, Settings, Worker, example_binary, free_port, pin, process_cpu_time, progress,
    throughput,
};
use serde_json::json;

const LEVELS: &[usize] = &[1, 16];

/// Measurements per round (see `run`).
const SLICES: usize = 4;

struct Lookup {
    client: EpmdClient,
}

impl Worker for Lookup {
    async fn op(&mut self) -> Result<(), String> {
        match self.client.port_please("bench").await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("not registered".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The embedded server as its own process (the `epmd_server` example).
struct Embedded {
    child: tokio::process::Child,
    port: u16,
}

impl Embedded {
    async fn start() -> Embedded {
        let port = free_port();
        let child = tokio::process::Command::new(example_binary("epmd_server"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start epmd_server");
        let client = EpmdClient::new(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .with_timeout(Duration::from_secs(1));
        for _ in 0..200 {
            if client.names().await.is_ok() {
                return Embedded { child, port };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("epmd_server did not answer on port {port}");
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }
}

fn main() {
    if let Ok(port) = std::env::var("BENCH_EPMD_PORT") {
        // For benches/profile.sh: lookups against a server it started (and pinned).
        let port: u16 = port.parse().expect("BENCH_EPMD_PORT: a port");
        let env = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let pid = env("BENCH_EPMD_PID", 0) as u32;
        let ops = env("BENCH_PROFILE_OPS", 20_000);
        let clients = env("BENCH_PROFILE_CLIENTS", 1);
        let delay = Duration::from_micros(env("BENCH_PROFILE_DELAY_US", 0) as u64);
        common::runtime_current_thread().block_on(profile(port, pid, ops, clients, delay));
        return;
    }
    let settings = Settings::from_env();
    progress("epmd: starting");
    let pinned = settings.bench && common::cpus() >= 2 && common::pin_self("0");
    common::runtime_current_thread().block_on(run(settings, pinned));
}

async fn run(settings: Settings, pinned: bool) {
    let mut results = Results::new("epmd");
    results.fact("pinned", json!(pinned));
    let real = Epmd::start().await;
    let embedded = Embedded::start().await;
    if pinned {
        assert!(pin(real.pid(), "1"), "taskset epmd");
        assert!(pin(embedded.pid(), "1"), "taskset epmd_server");
    }
    let servers = [
        ("epmd", real.port(), real.pid()),
        ("embedded", embedded.port, embedded.pid()),
    ];
    // One registered node in each, held for the whole run.
    let mut registrations = Vec::new();
    for (_, port, _) in &servers {
        let client = EpmdClient::new(SocketAddr::from((Ipv4Addr::LOCALHOST, *port)));
        registrations.push(
            client
                .register(NodeEntry::new("bench", 45678).hidden())
                .await
                .expect("register"),
        );
    }
    // A lookup takes about 100 µs and the machine's load drifts over seconds: many short
    // measurements, the servers in turn, pair the two servers more closely in time than
    // a few long ones. Each round is split into SLICES rounds of a quarter of the window.
    let rounds = settings.rounds * SLICES;
    let window = settings.window / SLICES as u32;
    let warmup = settings.warmup.min(Duration::from_millis(100));
    for round in 0..rounds {
        progress(format!("round {} of {rounds}", round + 1));
        for &level in LEVELS {
            for (which, port, pid) in servers {
                let client = EpmdClient::new(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                    .with_timeout(Duration::from_secs(5));
                let workers: Vec<Lookup> = (0..level)
                    .map(|_| Lookup {
                        client: client.clone(),
                    })
                    .collect();
                let server_cpu0 = process_cpu_time(pid);
                let (c, _) = throughput(workers, warmup, window).await;
                let server_cpu = process_cpu_time(pid).saturating_sub(server_cpu0);
                let server_us = server_cpu.as_secs_f64() * 1e6 / c.ok.max(1) as f64;
                progress(format!(
                    "  round {round} {which:<9} x{level:<3} {:>8.0} lookups/s  client cpu {:>5.1} us  server cpu {:>5.1} us  failed {}{}",
                    c.rate(),
                    c.cpu_us_per_op(),
                    server_us,
                    c.failed,
                    c.error_note()
                ));
                results.record(c.record(
                    which,
                    level,
                    round,
                    json!({
                        "server_cpu_us_per_op": server_us,
                    }),
                ));
            }
        }
    }
    drop(registrations);
    results.write(&settings);
}

/// A lookup whose request is sent `delay` after the connection is made, so that the
/// server has accepted the connection before its request arrives.
struct DelayedLookup {
    addr: SocketAddr,
    request: Vec<u8>,
    delay: Duration,
}

impl Worker for DelayedLookup {
    async fn op(&mut self) -> Result<(), String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        tokio::time::sleep(self.delay).await;
        stream
            .write_all(&self.request)
            .await
            .map_err(|e| e.to_string())?;
        let mut reply = Vec::new();
        stream
            .read_to_end(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        match reply.get(..2) {
            Some([b'w', 0]) => Ok(()),
            _ => Err(format!("unexpected reply {reply:?}")),
        }
    }
}

/// `ops` lookups by `clients` concurrent clients against the server on `port` (process
/// `pid`), with a node registered for the time; prints the wall time and both sides' CPU
/// time per lookup, user and system apart. With a `delay`, each client sends its request
/// that long after connecting (see [`DelayedLookup`]).
async fn profile(port: u16, pid: u32, ops: usize, clients: usize, delay: Duration) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let _registration = EpmdClient::new(addr)
        .register(NodeEntry::new("bench", 45678).hidden())
        .await
        .expect("register");
    let client = EpmdClient::new(addr).with_timeout(Duration::from_secs(5));
    let request = autocluster::epmd::codec::Request::PortPlease2 {
        name: "bench".into(),
    }
    .encode()
    .expect("a valid request");
    // Warm up (first connections, allocator), then measure.
    for _ in 0..200 {
        Lookup {
            client: client.clone(),
        }
        .op()
        .await
        .expect("lookup");
    }
    let (server_user0, server_system0) = common::process_cpu_times(pid);
    let (user0, system0) = common::cpu_times();
    let t0 = std::time::Instant::now();
    let per_client = ops / clients.max(1);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let mut lookup = Lookup {
                client: client.clone(),
            };
            let mut delayed = DelayedLookup {
                addr,
                request: request.clone(),
                delay,
            };
            tokio::spawn(async move {
                for _ in 0..per_client {
                    if delay.is_zero() {
                        lookup.op().await.expect("lookup");
                    } else {
                        delayed.op().await.expect("lookup");
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    let wall = t0.elapsed();
    let done = per_client * clients;
    let (user1, system1) = common::cpu_times();
    let (server_user1, server_system1) = common::process_cpu_times(pid);
    let per = |d: Duration| d.as_secs_f64() * 1e6 / done.max(1) as f64;
    println!(
        "{done} lookups, {clients} clients, {:.0}/s, {:.1} us each; client CPU us per lookup: user {:.1}, system {:.1}; server CPU us per lookup: user {:.1}, system {:.1}",
        done as f64 / wall.as_secs_f64(),
        per(wall),
        per(user1.saturating_sub(user0)),
        per(system1.saturating_sub(system0)),
        per(server_user1.saturating_sub(server_user0)),
        per(server_system1.saturating_sub(server_system0)),
    );
}
