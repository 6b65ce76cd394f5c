//! Benchmark 4: remote calls.
//!
//! * **Round trip on an established connection**: `Node::call(peer, erlang, node, [])`
//!   from this process (CPU 0) to an `erl` node (`+S 1`, CPU 1), serial and 16 in flight
//!   on the one connection; baseline: an `erl` node (`+S 1`, CPU 0) looping
//!   `erpc:call(Peer, erlang, node, [])`, what `rpc:call/4` does since OTP 23.
//! * **Whole process, connect + one call + exit**, timed by hyperfine (`-N`, no shell):
//!   the `rpc_call` example (built as a tool ships: `--profile cli`, LTO, statically
//!   linked; the same calling through `rex`, and the dynamically linked build beside it)
//!   against `erl_call -n NODE -c COOKIE -a 'erlang node []'` (erl_interface's C client),
//!   both against a plain `erl` node and a RabbitMQ node, and
//!   `rabbitmqctl -n NODE eval 'node().'` against the RabbitMQ node.
//!   Under `cargo test` (no `--bench`) only the round trips run, briefly.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use autocluster::{Cookie, Node, NodeName};
use common::{
    COOKIE, Counted, Epmd, ErlNode, ErlOptions, RabbitNode, RabbitOptions, Results, Settings,
    Worker, cli_binary, cli_static_binary, process_cpu_time, progress, require_binary, summarize,
    throughput,
};
use serde_json::{Value, json};

/// Rounds of the whole-process comparison (each command's runs are split among them).
const ROUNDS: usize = 6;

const ERL_CALL: &str = "/usr/lib/erlang/lib/erl_interface-5.3/bin/erl_call";

fn main() {
    let settings = Settings::from_env();
    progress("rpc: starting");
    let pinned = settings.bench && common::cpus() >= 2 && common::pin_self("0");
    common::runtime_current_thread().block_on(run(settings, pinned));
}

struct Call {
    node: Node,
    peer: NodeName,
}

impl Worker for Call {
    async fn op(&mut self) -> Result<(), String> {
        let t = self
            .node
            .call(&self.peer, "erlang", "node", vec![], Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?;
        if t.is_atom(self.peer.as_str()) {
            Ok(())
        } else {
            Err(format!("unexpected answer {t}"))
        }
    }
}

fn otp_call_loop(target: &str, window: Duration) -> String {
    format!(
        "Target = '{target}', true = net_kernel:hidden_connect_node(Target), \
         Loop = fun L(End, N) -> \
            case erlang:monotonic_time(microsecond) < End of \
              false -> N; \
              true -> Target = erpc:call(Target, erlang, node, []), L(End, N + 1) \
            end \
         end, \
         T0 = erlang:monotonic_time(microsecond), N = Loop(T0 + {}, 0), \
         {{N, erlang:monotonic_time(microsecond) - T0}}",
        window.as_micros()
    )
}

fn erl_call_binary() -> PathBuf {
    let p = PathBuf::from(ERL_CALL);
    if p.is_file() {
        p
    } else {
        require_binary("erl_call", "erlang-dev")
    }
}

async fn round_trips(
    settings: &Settings,
    results: &mut Results,
    target: &mut ErlNode,
    client: &mut ErlNode,
    epmd_port: u16,
) {
    let peer: NodeName = target.name().parse().expect("name");
    let target_pid = target.pid();
    let node = Node::builder(
        NodeName::from_parts(&format!("caller_{}", std::process::id()), peer.host()).unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .epmd_port(epmd_port)
    .start()
    .await
    .expect("our node");
    node.connect(&peer).await.expect("connect");
    for round in 0..settings.rounds {
        progress(format!(
            "round trips: round {} of {}",
            round + 1,
            settings.rounds
        ));
        // OTP's own, serial.
        let cpu0 = process_cpu_time(target_pid);
        let out = client
            .eval(&otp_call_loop(peer.as_str(), settings.window))
            .await;
        let target_cpu = process_cpu_time(target_pid).saturating_sub(cpu0);
        let (n, us) = out
            .trim_matches(|c| c == '{' || c == '}')
            .split_once(',')
            .map(|(a, b)| {
                (
                    a.trim().parse::<u64>().unwrap(),
                    b.trim().parse::<u64>().unwrap(),
                )
            })
            .expect("{N, Micros}");
        let c = Counted {
            ok: n,
            elapsed: Duration::from_micros(us),
            ..Counted::default()
        };
        record_calls(results, "otp_erpc", 1, round, &c, target_cpu);
        for level in [1usize, 16] {
            let workers: Vec<Call> = (0..level)
                .map(|_| Call {
                    node: node.clone(),
                    peer: peer.clone(),
                })
                .collect();
            let cpu0 = process_cpu_time(target_pid);
            let (c, _) = throughput(workers, settings.warmup, settings.window).await;
            let target_cpu = process_cpu_time(target_pid).saturating_sub(cpu0);
            record_calls(results, "ours", level, round, &c, target_cpu);
        }
    }
    node.shutdown().await;
}

fn record_calls(
    results: &mut Results,
    which: &str,
    level: usize,
    round: usize,
    c: &Counted,
    target_cpu: Duration,
) {
    let target_us = target_cpu.as_secs_f64() * 1e6 / c.ok.max(1) as f64;
    progress(format!(
        "  round {round} {which:<9} x{level:<3} {:>8.0} calls/s  ({:.1} us each; our cpu {:.1} us, target cpu {:.1} us)  failed {}",
        c.rate(),
        1e6 / c.rate().max(1e-9) * level as f64,
        c.cpu_us_per_op(),
        target_us,
        c.failed
    ));
    results.record(json!({
        "kind": "round_trip",
        "impl": which,
        "concurrency": level,
        "round": round,
        "ok": c.ok,
        "failed": c.failed,
        "secs": c.elapsed.as_secs_f64(),
        "rate": c.rate(),
        "cpu_us_per_op": c.cpu_us_per_op(),
        "target_cpu_us_per_op": target_us,
    }));
}

/// Runs hyperfine on `commands` (name, command line) and returns its JSON results.
async fn hyperfine(
    commands: &[(&str, String)],
    env: &[(&str, String)],
    runs: usize,
    warmup: usize,
    out: &Path,
) -> Value {
    let mut cmd = tokio::process::Command::new(require_binary("hyperfine", "hyperfine"));
    cmd.args(["-N", "--style", "basic", "--runs"])
        .arg(runs.to_string())
        .args(["--warmup", &warmup.to_string(), "--export-json"])
        .arg(out);
    for (name, line) in commands {
        cmd.args(["-n", name, line]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .await
        .expect("run hyperfine");
    assert!(status.success(), "hyperfine failed: {status}");
    serde_json::from_str(&std::fs::read_to_string(out).expect("hyperfine's JSON"))
        .expect("hyperfine's JSON")
}

/// Runs hyperfine `rounds` times on the same commands, `runs / rounds` runs each time, so
/// that every command meets the machine's noisy moments alike (hyperfine itself runs one
/// command's runs back to back), and merges the results into one hyperfine-shaped
/// document: per command, every run's time and exit code.
async fn hyperfine_rounds(
    commands: &[(&str, String)],
    env: &[(&str, String)],
    runs: usize,
    rounds: usize,
    out: &Path,
) -> Value {
    let rounds = rounds.clamp(1, runs.max(1));
    let mut merged: Vec<(String, Vec<Value>, Vec<Value>)> = commands
        .iter()
        .map(|(name, _)| ((*name).to_owned(), Vec::new(), Vec::new()))
        .collect();
    for round in 0..rounds {
        progress(format!("  hyperfine round {} of {rounds}", round + 1));
        let doc = hyperfine(commands, env, runs / rounds, 3, out).await;
        for r in doc["results"].as_array().into_iter().flatten() {
            let name = r["command"].as_str().unwrap_or("?");
            if let Some(m) = merged.iter_mut().find(|m| m.0 == name) {
                m.1.extend(r["times"].as_array().into_iter().flatten().cloned());
                m.2.extend(r["exit_codes"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    json!({
        "results": merged
            .into_iter()
            .map(|(name, times, codes)| json!({"command": name, "times": times, "exit_codes": codes}))
            .collect::<Vec<_>>(),
    })
}

fn record_hyperfine(results: &mut Results, target: &str, doc: &Value) {
    for r in doc["results"].as_array().into_iter().flatten() {
        let name = r["command"].as_str().unwrap_or("?");
        let times: Vec<f64> = r["times"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .map(|s| s * 1000.0)
            .collect();
        let s = summarize(&times);
        progress(format!(
            "  {target}: {name:<12} median {:>8.1} ms  (IQR {:.1}-{:.1}, min {:.1}, max {:.1}, n {})",
            s.median, s.q1, s.q3, s.min, s.max, s.n
        ));
        results.record(json!({
            "kind": "whole_process",
            "target": target,
            "impl": name,
            "ms": s.json(),
            "times_ms": times,
            "exit_codes": r["exit_codes"],
        }));
    }
}

async fn run(settings: Settings, pinned: bool) {
    let mut results = Results::new("rpc");
    results.fact("pinned", json!(pinned));
    let epmd = Epmd::start().await;
    let erl_args = ["+S", "1:1"];
    let mut target = ErlNode::start(
        ErlOptions::new(epmd.port())
            .name_prefix("target")
            .cookie(COOKIE)
            .args(erl_args),
    )
    .await;
    let mut client = ErlNode::start(
        ErlOptions::new(epmd.port())
            .name_prefix("otp_caller")
            .cookie(COOKIE)
            .args(erl_args),
    )
    .await;
    if pinned {
        assert!(common::pin(target.pid(), "1"), "taskset the target");
        assert!(common::pin(epmd.pid(), "1"), "taskset epmd");
        assert!(common::pin(client.pid(), "0"), "taskset the OTP caller");
    }
    round_trips(
        &settings,
        &mut results,
        &mut target,
        &mut client,
        epmd.port(),
    )
    .await;
    drop(client);
    if !settings.bench {
        results.write(&settings);
        return;
    }

    // Whole process: connect + one call + exit.
    let (runs, slow_runs) = if settings.quick { (10, 2) } else { (300, 10) };
    let rpc_call = cli_static_binary("rpc_call");
    let rpc_call_dynamic = cli_binary("rpc_call");
    let erl_call = erl_call_binary();
    let dir = tempfile::tempdir().expect("temporary directory");
    let commands = |node: &str, port: u16| {
        let rpc_call_line = |binary: &Path, method: &str| {
            format!(
                "{} --node {node} --cookie {COOKIE} --epmd-port {port} --rpc {method} erlang node",
                binary.display()
            )
        };
        vec![
            ("rpc_call", rpc_call_line(&rpc_call, "erpc")),
            ("rpc_call_rex", rpc_call_line(&rpc_call, "rex")),
            ("rpc_call_dynamic", rpc_call_line(&rpc_call_dynamic, "erpc")),
            (
                "erl_call",
                format!(
                    "{} -n {node} -c {COOKIE} -a 'erlang node []'",
                    erl_call.display()
                ),
            ),
        ]
    };
    progress(format!(
        "whole process against the erl node {}",
        target.name()
    ));
    let doc = hyperfine_rounds(
        &commands(target.name(), epmd.port()),
        &[("ERL_EPMD_PORT", epmd.port().to_string())],
        runs,
        ROUNDS,
        &dir.path().join("erl.json"),
    )
    .await;
    record_hyperfine(&mut results, "erl", &doc);
    drop(target);

    progress("starting a RabbitMQ node");
    let rabbit = RabbitNode::start(RabbitOptions::new().cookie(COOKIE)).await;
    let rabbit_pid = rabbit.vm_pid().expect("the RabbitMQ VM's pid (rabbit.pid)");
    if pinned {
        assert!(common::pin(rabbit_pid, "1"), "taskset RabbitMQ");
    }
    let node = rabbit.node().to_owned();
    let port = rabbit.epmd_port();
    progress(format!("whole process against the RabbitMQ node {node}"));
    let env = [
        ("ERL_EPMD_PORT", port.to_string()),
        ("RABBITMQ_CTL_ERL_ARGS", format!("-setcookie {COOKIE}")),
    ];
    let doc = hyperfine_rounds(
        &commands(&node, port),
        &env,
        runs,
        ROUNDS,
        &dir.path().join("rabbit.json"),
    )
    .await;
    record_hyperfine(&mut results, "rabbitmq", &doc);
    let ctl = require_binary("rabbitmqctl", "rabbitmq-server");
    let doc = hyperfine(
        &[(
            "rabbitmqctl",
            format!("{} -n {node} eval 'node().'", ctl.display()),
        )],
        &env,
        slow_runs,
        1,
        &dir.path().join("rabbitmqctl.json"),
    )
    .await;
    record_hyperfine(&mut results, "rabbitmq", &doc);
    results.write(&settings);
    drop(rabbit);
}
