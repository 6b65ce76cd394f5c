//! Benchmark 1: handshakes per second, our initiator → a real OTP node, side by side with
//! OTP's own initiator and erl_dist 0.8's.
//!
//! One `erl` node (the acceptor, `+S 1`) and the real `epmd` are pinned to CPU 1; this
//! process and the OTP initiator node (`+S 1`) to CPU 0, so that the two sides do not
//! fight blindly over the two cores. A handshake is TCP connect + handshake, then close:
//!
//! * **ours, cold**: `Node::connect` with the port cache off (an EPMD lookup every time,
//!   as OTP does), then `Node::disconnect`;
//! * **ours, port cache**: the same with the port cache on (the default);
//! * **erl_dist, cold**: erl_dist 0.8's EPMD client and `ClientSideHandshake`, then a close
//!   like ours (FIN, wait for the peer's);
//! * **erl_dist, port known**: the same without the EPMD lookup (what our cache saves);
//! * **OTP**: an `erl` node looping `net_kernel:hidden_connect_node/1` +
//!   `erlang:disconnect_node/1` (serial only: one OTP node holds one connection per peer).
//!
//! Each worker reuses one node name (OTP creates an atom per peer name before it
//! authenticates; fresh names would fill its atom table), and the `alive` statuses (the
//! acceptor still held the worker's previous connection) are counted. CPU time per
//! handshake is reported for this process (getrusage) and for the OTP processes
//! (`/proc/PID/stat`).

mod common;

use std::time::Duration;

use autocluster::NodeName;
use common::workers::{ErlDist, Ours, erl_dist_workers, our_workers};
use common::{
    COOKIE, Counted, Epmd, ErlNode, ErlOptions, Results, Settings, process_cpu_time, progress,
    throughput,
};
use serde_json::json;

/// Concurrency levels measured against the OTP acceptor.
const LEVELS: &[usize] = &[1, 4, 16, 64];
const LEVELS_QUICK: &[usize] = &[1, 16];

fn main() {
    let settings = Settings::from_env();
    progress("handshake_otp: starting");
    // This process (and the OTP initiator node it starts) on CPU 0, the acceptor on 1.
    let pinned = settings.bench && common::cpus() >= 2 && common::pin_self("0");
    common::runtime_current_thread().block_on(run(settings, pinned));
}

/// CPU time of the OTP acceptor, epmd and the OTP initiator node around a measurement.
struct OtherCpu {
    pids: Vec<(&'static str, u32)>,
    before: Vec<Duration>,
}

impl OtherCpu {
    fn start(pids: &[(&'static str, u32)]) -> OtherCpu {
        OtherCpu {
            pids: pids.to_vec(),
            before: pids.iter().map(|(_, p)| process_cpu_time(*p)).collect(),
        }
    }

    /// Microseconds per operation, per process.
    fn per_op(&self, ops: u64) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for ((name, pid), before) in self.pids.iter().zip(&self.before) {
            let used = process_cpu_time(*pid).saturating_sub(*before);
            m.insert(
                (*name).to_owned(),
                json!(used.as_secs_f64() * 1e6 / ops.max(1) as f64),
            );
        }
        serde_json::Value::Object(m)
    }
}

fn record(
    results: &mut Results,
    implementation: &str,
    concurrency: usize,
    round: usize,
    c: &Counted,
    alive: u64,
    others: serde_json::Value,
) {
    progress(format!(
        "  round {round} {implementation:<22} x{concurrency:<3} {:>8.0}/s  cpu {:>6.1} us/op  alive {alive}  failed {}{}",
        c.rate(),
        c.cpu_us_per_op(),
        c.failed,
        c.error_note()
    ));
    results.record(c.record(
        implementation,
        concurrency,
        round,
        json!({
            "alive": alive,
            "other_cpu_us_per_op": others,
        }),
    ));
}

/// The OTP initiator loop, run inside the OTP client node for `window`.
fn otp_loop_expr(target: &str, window: Duration) -> String {
    format!(
        "Target = '{target}', \
         Loop = fun L(End, N, F) -> \
            case erlang:monotonic_time(microsecond) < End of \
              false -> {{N, F}}; \
              true -> case net_kernel:hidden_connect_node(Target) of \
                        true -> erlang:disconnect_node(Target), L(End, N + 1, F); \
                        _ -> L(End, N, F + 1) \
                      end \
            end \
         end, \
         T0 = erlang:monotonic_time(microsecond), \
         {{N, F}} = Loop(T0 + {}, 0, 0), \
         {{N, F, erlang:monotonic_time(microsecond) - T0}}",
        window.as_micros()
    )
}

fn parse_triple(s: &str) -> (u64, u64, u64) {
    let v: Vec<u64> = s
        .trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .map(|x| x.trim().parse().expect("a number"))
        .collect();
    (v[0], v[1], v[2])
}

async fn run(settings: Settings, pinned: bool) {
    let mut results = Results::new("handshake_otp");
    results.fact("pinned", json!(pinned));
    let epmd = Epmd::start().await;
    let erl_args = ["+S", "1:1"];
    let mut acceptor = ErlNode::start(
        ErlOptions::new(epmd.port())
            .name_prefix("acceptor")
            .cookie(COOKIE)
            .args(erl_args),
    )
    .await;
    let mut client = ErlNode::start(
        ErlOptions::new(epmd.port())
            .name_prefix("otp_initiator")
            .cookie(COOKIE)
            .args(erl_args),
    )
    .await;
    let acceptor_pid = common::erl_os_pid(&mut acceptor).await;
    let client_pid = common::erl_os_pid(&mut client).await;
    if pinned {
        assert!(common::pin(acceptor_pid, "1"), "taskset the acceptor");
        assert!(common::pin(epmd.pid(), "1"), "taskset epmd");
        assert!(common::pin(client_pid, "0"), "taskset the OTP initiator");
    }
    let otp_release = acceptor.eval("erlang:system_info(otp_release)").await;
    results.fact("otp_release", json!(otp_release.trim_matches('"')));
    results.fact("erl_args", json!(erl_args));
    let peer: NodeName = acceptor.name().parse().expect("acceptor name");
    let dist_port = acceptor.dist_port().await;
    let epmd_addr = epmd.addr();
    progress(format!(
        "acceptor {peer} (pid {acceptor_pid}, port {dist_port}), epmd pid {}, OTP initiator pid {client_pid}, pinned: {pinned}",
        epmd.pid()
    ));
    let others = [
        ("acceptor", acceptor_pid),
        ("epmd", epmd.pid()),
        ("otp_initiator", client_pid),
    ];
    if let Ok(which) = std::env::var("BENCH_PROFILE") {
        // For `valgrind --tool=callgrind`: one initiator, serial, a fixed number of
        // handshakes, nothing recorded.
        let ops = common::profile_ops();
        let t0 = std::time::Instant::now();
        let cpu = OtherCpu::start(&others);
        let (user0, system0) = common::cpu_times();
        let c = match which.as_str() {
            "ours_cold" | "ours_cached" => {
                let cache = which == "ours_cached";
                let mut w = our_workers(1, &peer, epmd.port(), cache, None, "prof").await;
                profile_ops(&mut w[0], ops).await
            }
            "erl_dist_cold" | "erl_dist_known_port" => {
                let port = (which == "erl_dist_known_port").then_some(dist_port);
                let mut w = erl_dist_workers(1, peer.host(), peer.alive(), epmd_addr, port, "prof");
                profile_ops(&mut w[0], ops).await
            }
            "timeline" => {
                timeline(&peer, epmd_addr, ops).await;
                return;
            }
            "otp" => {
                let window = Duration::from_secs(3);
                let out = client.eval(&otp_loop_expr(peer.as_str(), window)).await;
                parse_triple(&out).0 as usize
            }
            other => panic!(
                "BENCH_PROFILE={other}: ours_cold, ours_cached, erl_dist_cold, erl_dist_known_port or otp"
            ),
        };
        let (user1, system1) = common::cpu_times();
        let per = |d: Duration| d.as_secs_f64() * 1e6 / c.max(1) as f64;
        progress(format!(
            "profile {which}: {c} of {ops} handshakes in {:?} ({:.0}/s, {:.0} us each); this process's CPU us per handshake: user {:.1}, system {:.1}; other processes' CPU us per handshake: {}",
            t0.elapsed(),
            c as f64 / t0.elapsed().as_secs_f64(),
            per(t0.elapsed()),
            per(user1.saturating_sub(user0)),
            per(system1.saturating_sub(system0)),
            cpu.per_op(c as u64)
        ));
        return;
    }
    let levels = if settings.bench && !settings.quick {
        LEVELS
    } else {
        LEVELS_QUICK
    };
    let max = *levels.iter().max().unwrap();
    // Workers are made once and reused by every round: one name each.
    let mut cold = our_workers(max, &peer, epmd.port(), false, None, "cold").await;
    let mut cached = our_workers(max, &peer, epmd.port(), true, None, "cached").await;
    let mut ed_cold = erl_dist_workers(max, peer.host(), peer.alive(), epmd_addr, None, "edcold");
    let mut ed_known = erl_dist_workers(
        max,
        peer.host(),
        peer.alive(),
        epmd_addr,
        Some(dist_port),
        "edknown",
    );

    for round in 0..settings.rounds {
        progress(format!("round {} of {}", round + 1, settings.rounds));
        // OTP's own initiator, serial.
        {
            let cpu = OtherCpu::start(&others);
            let (n, failed, us) = parse_triple(
                &client
                    .eval(&otp_loop_expr(peer.as_str(), settings.window))
                    .await,
            );
            let c = Counted {
                ok: n,
                failed,
                elapsed: Duration::from_micros(us),
                cpu: Duration::ZERO,
                first_error: None,
            };
            let per_op = cpu.per_op(n);
            record(&mut results, "otp", 1, round, &c, 0, per_op);
        }
        for &level in levels {
            for which in [
                "ours_cold",
                "ours_cached",
                "erl_dist_cold",
                "erl_dist_known_port",
            ] {
                let cpu = OtherCpu::start(&others);
                let (c, alive) = match which {
                    "ours_cold" | "ours_cached" => {
                        let pool = if which == "ours_cold" {
                            &mut cold
                        } else {
                            &mut cached
                        };
                        let mut ws: Vec<Ours> = std::mem::take(pool);
                        let rest = ws.split_off(level);
                        let before: u64 =
                            ws.iter().map(|w| w.node.dial_stats().alive_answers).sum();
                        let (c, back) = throughput(ws, settings.warmup, settings.window).await;
                        let after: u64 =
                            back.iter().map(|w| w.node.dial_stats().alive_answers).sum();
                        pool.extend(back);
                        pool.extend(rest);
                        (c, after - before)
                    }
                    _ => {
                        let pool = if which == "erl_dist_cold" {
                            &mut ed_cold
                        } else {
                            &mut ed_known
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
                let per_op = cpu.per_op(c.ok);
                record(&mut results, which, level, round, &c, alive, per_op);
            }
        }
    }
    let stats: Vec<_> = cached
        .iter()
        .map(|w| w.node.dial_stats())
        .chain(cold.iter().map(|w| w.node.dial_stats()))
        .collect();
    results.fact(
        "ours_dial_stats_total",
        json!({
            "dials": stats.iter().map(|s| s.dials).sum::<u64>(),
            "epmd_lookups": stats.iter().map(|s| s.epmd_lookups).sum::<u64>(),
            "port_cache_hits": stats.iter().map(|s| s.port_cache_hits).sum::<u64>(),
            "alive_answers": stats.iter().map(|s| s.alive_answers).sum::<u64>(),
        }),
    );
    results.write(&settings);
    drop(client);
    drop(acceptor);
}

async fn profile_ops<W: common::Worker>(w: &mut W, ops: usize) -> usize {
    let mut ok = 0;
    for _ in 0..ops {
        if w.op().await.is_ok() {
            ok += 1;
        }
    }
    ok
}

/// The handshake profile: where the wall time of one serial handshake goes (EPMD
/// lookup, TCP connect, each wait for the acceptor, our own steps, the close), measured
/// around the library's own `handshake::initiate` driver on a timestamping socket.
async fn timeline(peer: &NodeName, epmd: std::net::SocketAddr, ops: usize) {
    use autocluster::Cookie;
    use autocluster::epmd::EpmdClient;
    use autocluster::handshake::{self, DistFlags, InitiatorConfig, LengthPrefix, LocalName};
    use common::timeline::{Event, Timed};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let me = NodeName::from_parts(&format!("timeline_{}", std::process::id()), peer.host())
        .expect("name");
    let client = EpmdClient::new(epmd);
    let names = [
        "epmd lookup",
        "tcp connect",
        "send_name -> status (peer)",
        "status -> challenge (peer)",
        "challenge -> reply sent (ours)",
        "reply -> ack (peer)",
        "ack -> handshake done (ours)",
        "close: FIN -> peer's FIN (peer)",
        "our CPU (getrusage)",
    ];
    let mut rows: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut totals = Vec::new();
    for _ in 0..ops {
        let cpu0 = common::cpu_time();
        let t0 = std::time::Instant::now();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let entry = client
            .port_please(peer.alive())
            .await
            .expect("lookup")
            .expect("registered");
        let t_epmd = t0.elapsed();
        let s = tokio::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, entry.port))
            .await
            .expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let t_conn = t0.elapsed();
        let mut timed = Timed::new(s, t0);
        let cfg = InitiatorConfig {
            local: LocalName::Static(me.clone()),
            creation: 7,
            flags: DistFlags::OURS,
            required: DistFlags::REQUIRED,
            cookie: Cookie::new(COOKIE).unwrap(),
            peer: peer.clone(),
        };
        handshake::initiate(
            &mut timed,
            LengthPrefix::U16,
            cfg,
            Duration::from_secs(7),
            || true,
        )
        .await
        .expect("handshake");
        let t_done = t0.elapsed();
        let events = std::mem::take(&mut timed.events);
        let mut s = timed.into_inner();
        let _ = s.shutdown().await;
        let mut sink = [0u8; 256];
        while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
        let t_closed = t0.elapsed();
        drop(s);
        let cpu = common::cpu_time().saturating_sub(cpu0);
        // Events: Wrote(name), Read(status[+challenge]), [Read(challenge)], Wrote(reply), Read(ack).
        let writes: Vec<Duration> = events
            .iter()
            .filter_map(|e| match e {
                Event::Wrote(t, _) => Some(*t),
                _ => None,
            })
            .collect();
        let reads: Vec<Duration> = events
            .iter()
            .filter_map(|e| match e {
                Event::Read(t, n) if *n > 0 => Some(*t),
                _ => None,
            })
            .collect();
        if writes.len() != 2 || !(2..=3).contains(&reads.len()) {
            continue; // an `alive` exchange or split reads: not this profile's shape
        }
        let (name, reply) = (writes[0], writes[1]);
        let status = reads[0];
        let challenge = if reads.len() == 3 { reads[1] } else { reads[0] };
        let ack = *reads.last().unwrap();
        let v = [
            us(t_epmd),
            us(t_conn - t_epmd),
            us(status - name),
            us(challenge - status),
            us(reply - challenge),
            us(ack - reply),
            us(t_done - ack),
            us(t_closed - t_done),
            us(cpu),
        ];
        for (row, x) in rows.iter_mut().zip(v) {
            row.push(x);
        }
        totals.push(us(t_closed));
    }
    let total = common::summarize(&totals);
    println!(
        "handshake timeline against {peer}: {} handshakes, median {:.0} us each (EPMD lookup to the peer's FIN)",
        total.n, total.median
    );
    println!("| step | median µs | q1–q3 µs | share of the median total |");
    println!("|---|---|---|---|");
    for (name, row) in names.iter().zip(&rows) {
        let s = common::summarize(row);
        println!(
            "| {name} | {:.0} | {:.0}–{:.0} | {:.0} % |",
            s.median,
            s.q1,
            s.q3,
            100.0 * s.median / total.median
        );
    }
}
