//! Benchmark 2: handshakes per second, Rust ↔ Rust on loopback, both sides in this
//! process (a two-thread tokio runtime), against the floor.
//!
//! * **ours → ours**: `Node::connect_to` + `Node::disconnect` against a listening `Node`
//!   (no EPMD: the address is given);
//! * **erl_dist → erl_dist**: erl_dist 0.8's `ClientSideHandshake` against an acceptor built
//!   on its `ServerSideHandshake` (answering `ok`, closing after the handshake);
//! * **erl_dist → ours**: erl_dist's initiator against our listening `Node`;
//! * **floor**: a raw tokio TCP connect + three round trips of 32 bytes + close, against an
//!   echo acceptor, in the same runtime: what connecting costs before any protocol.
//!
//! Serial and concurrent (up to 64 initiators); each initiator keeps one node name.
//!
//! `BENCH_PROFILE=<ours|erl_dist|erl_dist_to_ours|floor>` with `BENCH_PROFILE_OPS=<n>`
//! (default 200) skips the measurement and runs n serial cycles of that pair alone, on one
//! spawned task as in the serial level, for `valgrind --tool=callgrind`: two runs with a < b
//! cycles give the user-space instructions of one cycle, both sides, as
//! (Ir_b − Ir_a) / (b − a).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use autocluster::{Cookie, Node, NodeName};
use common::workers::{ErlDist, Ours, erl_dist_workers, our_workers};
use common::{COOKIE, Results, Settings, Worker, progress, throughput};
use erl_dist::handshake::{HandshakeStatus, ServerSideHandshake};
use erl_dist::node::{Creation, LocalNode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::TokioAsyncReadCompatExt;

const LEVELS: &[usize] = &[1, 2, 4, 8, 16, 32, 64];
const LEVELS_QUICK: &[usize] = &[1, 64];
const ROUND_TRIP_BYTES: usize = 32;

fn main() {
    let settings = Settings::from_env();
    progress("handshake_rust: starting");
    common::runtime(2).block_on(run(settings));
}

/// The floor's client: connect, three small round trips, close.
struct Floor {
    addr: SocketAddr,
}

impl Worker for Floor {
    async fn op(&mut self) -> Result<(), String> {
        let mut s = TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        let out = [7u8; ROUND_TRIP_BYTES];
        let mut back = [0u8; ROUND_TRIP_BYTES];
        for _ in 0..3 {
            s.write_all(&out).await.map_err(|e| e.to_string())?;
            s.read_exact(&mut back).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

async fn floor_acceptor() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut buf = [0u8; ROUND_TRIP_BYTES];
                for _ in 0..3 {
                    if s.read_exact(&mut buf).await.is_err() || s.write_all(&buf).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// An acceptor built on erl_dist: accepts, answers `ok`, finishes the handshake, closes.
async fn erl_dist_acceptor(host: &str) -> (SocketAddr, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let name: erl_dist::node::NodeName = format!("ed_acceptor_{}@{host}", std::process::id())
        .parse()
        .expect("name");
    let full = name.to_string();
    let local = LocalNode::new(name, Creation::random());
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let local = local.clone();
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut hs = ServerSideHandshake::new(s.compat(), local, COOKIE);
                if hs.execute_recv_name().await.is_err() {
                    return;
                }
                let _ = hs.execute_rest(HandshakeStatus::Ok).await;
            });
        }
    });
    (addr, full)
}

async fn run(settings: Settings) {
    let mut results = Results::new("handshake_rust");
    let host = "localhost";
    let acceptor = Node::builder(
        NodeName::from_parts(&format!("acceptor_{}", std::process::id()), host).unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .listen("127.0.0.1:0".parse().unwrap())
    .register_in_epmd(false)
    .start()
    .await
    .expect("our acceptor");
    let our_addr = acceptor.local_addr().expect("listening");
    let our_name = acceptor.name().clone();
    let floor_addr = floor_acceptor().await;
    let (ed_addr, ed_name) = erl_dist_acceptor(host).await;
    let ed_name: NodeName = ed_name.parse().unwrap();
    let levels = if settings.bench && !settings.quick {
        LEVELS
    } else {
        LEVELS_QUICK
    };
    let max = *levels.iter().max().unwrap();
    let unused_epmd: SocketAddr = "127.0.0.1:9".parse().unwrap();
    if let Ok(which) = std::env::var("BENCH_PROFILE") {
        // For `valgrind --tool=callgrind`: one initiator, serial, a fixed number of cycles,
        // nothing recorded.
        let ops = common::profile_ops();
        let t0 = std::time::Instant::now();
        let (user0, system0) = common::cpu_times();
        let c = match which.as_str() {
            "ours" => {
                let w = our_workers(1, &our_name, 9, false, Some(our_addr), "prof").await;
                profile_ops(w, ops).await
            }
            "erl_dist" | "erl_dist_to_ours" => {
                let (alive, port) = if which == "erl_dist" {
                    (ed_name.alive(), ed_addr.port())
                } else {
                    (our_name.alive(), our_addr.port())
                };
                let w = erl_dist_workers(1, host, alive, unused_epmd, Some(port), "prof");
                profile_ops(w, ops).await
            }
            "floor" => profile_ops(vec![Floor { addr: floor_addr }], ops).await,
            other => panic!("BENCH_PROFILE={other}: ours, erl_dist, erl_dist_to_ours or floor"),
        };
        let (user1, system1) = common::cpu_times();
        let per = |d: Duration| d.as_secs_f64() * 1e6 / c.max(1) as f64;
        progress(format!(
            "profile {which}: {c} of {ops} cycles in {:?} ({:.0} us each); CPU us per cycle: user {:.1}, system {:.1}",
            t0.elapsed(),
            per(t0.elapsed()),
            per(user1.saturating_sub(user0)),
            per(system1.saturating_sub(system0)),
        ));
        return;
    }
    let mut ours = our_workers(max, &our_name, 9, false, Some(our_addr), "rr").await;
    let mut ed_ed = erl_dist_workers(
        max,
        host,
        ed_name.alive(),
        unused_epmd,
        Some(ed_addr.port()),
        "ee",
    );
    let mut ed_ours = erl_dist_workers(
        max,
        host,
        our_name.alive(),
        unused_epmd,
        Some(our_addr.port()),
        "eo",
    );
    let mut floor: Vec<Floor> = (0..max).map(|_| Floor { addr: floor_addr }).collect();

    for round in 0..settings.rounds {
        progress(format!("round {} of {}", round + 1, settings.rounds));
        for &level in levels {
            for which in ["floor", "ours", "erl_dist_to_ours", "erl_dist"] {
                let (c, alive) = match which {
                    "ours" => {
                        let mut ws: Vec<Ours> = std::mem::take(&mut ours);
                        let rest = ws.split_off(level);
                        let before: u64 =
                            ws.iter().map(|w| w.node.dial_stats().alive_answers).sum();
                        let (c, back) = throughput(ws, settings.warmup, settings.window).await;
                        let after: u64 =
                            back.iter().map(|w| w.node.dial_stats().alive_answers).sum();
                        ours.extend(back);
                        ours.extend(rest);
                        (c, after - before)
                    }
                    "floor" => {
                        let mut ws: Vec<Floor> = std::mem::take(&mut floor);
                        let rest = ws.split_off(level);
                        let (c, back) = throughput(ws, settings.warmup, settings.window).await;
                        floor.extend(back);
                        floor.extend(rest);
                        (c, 0)
                    }
                    _ => {
                        let pool = if which == "erl_dist" {
                            &mut ed_ed
                        } else {
                            &mut ed_ours
                        };
                        let mut ws: Vec<ErlDist> = std::mem::take(pool);
                        let rest = ws.split_off(level);
                        let before: u64 = ws.iter().map(|w| w.alive).sum();
                        let (c, back) = throughput(ws, settings.warmup, settings.window).await;
                        let after: u64 = back.iter().map(|w| w.alive).sum();
                        pool.extend(back);
                        pool.extend(rest);
                        (c, after - before)
                    }
                };
                progress(format!(
                    "  round {round} {which:<18} x{level:<3} {:>8.0}/s  cpu {:>6.1} us/op (both sides)  alive {alive}  failed {}{}",
                    c.rate(),
                    c.cpu_us_per_op(),
                    c.failed,
                    c.error_note()
                ));
                results.record(c.record(
                    which,
                    level,
                    round,
                    json!({
                        "alive": alive,
                    }),
                ));
                // Let the acceptors tear the last connections down before the next one.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    results.write(&settings);
}

/// `ops` serial operations of the first of `workers` on a spawned task, as `throughput`
/// runs them; returns how many succeeded.
async fn profile_ops<W: Worker>(mut workers: Vec<W>, ops: usize) -> usize {
    let mut w = workers.swap_remove(0);
    tokio::spawn(async move {
        let mut ok = 0;
        for _ in 0..ops {
            if w.op().await.is_ok() {
                ok += 1;
            }
        }
        ok
    })
    .await
    .expect("the profiled worker panicked")
}
