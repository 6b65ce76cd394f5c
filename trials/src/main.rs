//! Formation trials: N agents started at the same instant, M times, with injected faults,
//! against the in-memory backend or a real etcd, on real `erl` nodes or Rust-native
//! nodes. Every trial checks that the live members form exactly one cluster, that
//! cleanup forgot no live member, that the startup lock is free within its lease
//! afterwards, and that every agent finished or reported a typed error within its
//! deadline.
//!
//! ```text
//! cargo run --release -p autocluster-trials -- \
//!     --nodes N --trials M --scenario S --backend memory|etcd [--erl | --native]
//!     [--jitter-ms J] [--seed RNG_SEED] [--deadline-s D] [--etcd-endpoint URL]
//!     [--trials-per-scenario K] [--record FILE [--resume]] [--chaos P] [-v]
//! ```
//!
//! Scenarios (`--scenario all` runs each, `--trials-per-scenario` times):
//!
//! * `none`: no fault.
//! * `lock-holder-killed`: the agent holding the startup lock dies in the middle of its
//!   join (before or after the join itself); a random number of the others formed
//!   before it, the rest start once it holds the lock and must wait for its lease.
//! * `etcd-restart`: etcd is killed during formation and restarted 0.3–3 s later (the
//!   in-memory backend simulates the outage); every agent must ride the outage out and
//!   form.
//! * `etcd-down-cleanup`: a member dies; cleanup rounds (enabled, not warn-only) run
//!   while etcd is down, sometimes with a live member cut off from the others; once etcd
//!   is back the dead member's registration expires and cleanup must forget it (erl).
//! * `killed-after-register`: a node and its agent are killed right after registering
//!   (lock still held) or right after finishing; its registration must expire.
//! * `seed-killed`: the seed forms alone, then dies (node and agent) while the others
//!   form (erl nodes: a native cluster is a star around its seed).
//! * `dropped-handshakes`: an EPMD in front of the real one sends every connection
//!   through a proxy that cuts a share of them (`--chaos`, default 0.3) in the middle of
//!   the distribution handshake.
//! * `partition`: erl nodes in two network namespaces (veth pairs and a bridge on
//!   198.18.0.0/15 test addresses the runner creates and removes itself; root needed,
//!   and a failure to create them fails the run); the namespaces are cut off from each
//!   other during or after formation, then healed: one cluster again, nothing forgotten.
//!
//! `--rabbitmq` runs broker trials instead (see `broker`): three real RabbitMQ brokers of
//! the peer environment (`AUTOCLUSTER_PEERS`), an agent beside each, a real etcd, faults
//! during formation and during the cluster's life, and messages counted after every
//! trial.
//!
//! Victims (the agents that die) run in a runtime of their own that is dropped, or, for
//! erl nodes on etcd, in a child process (this binary with `--child-agent`) killed with
//! SIGKILL.
//!
//! The summary's last line is exactly
//! `trials=M splits=S forgotten=F leaked_locks=L p99_ms=X`; the exit status is non-zero
//! when any of splits, forgotten, leaked locks, hangs or other failed checks is not zero.
//! With `--record FILE` each trial is appended to FILE as a JSON line; `--resume` skips
//! the trials FILE already holds and includes them in the summary.

mod broker;
mod chaos;
mod erl;
mod lab;
mod netns;
mod procs;
mod report;
mod scenarios;
mod trial;
mod victim;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autocluster::backend::etcd::{EtcdBackend, EtcdConfig};
use autocluster::formation::ErlangMesh;
use autocluster::{Cookie, Node, NodeName};

use lab::{Kind, Lab};
use report::TrialResult;
use scenarios::Scenario;
use trial::{Settings, Trial};

const USAGE: &str = "usage: trials --nodes N --trials M --scenario S --backend memory|etcd
              [--erl | --native] [--jitter-ms J] [--seed RNG_SEED] [--deadline-s D]
              [--etcd-endpoint URL] [--scenario all --trials-per-scenario K]
              [--record FILE [--resume]] [--replay TRIAL_SEED] [--chaos P]
              [--node-ttl-ms T] [--lock-ttl-ms T] [--victim process|thread] [-v]
       trials --rabbitmq --scenario S [--trials M | --trials-per-scenario K]
              [--messages N] [--seed RNG_SEED] [--replay TRIAL_SEED] [--deadline-s D]
              [--record FILE [--resume]]
  scenarios: none lock-holder-killed etcd-restart etcd-down-cleanup killed-after-register
             seed-killed dropped-handshakes partition all
  --rabbitmq scenarios (3 brokers of AUTOCLUSTER_PEERS, a real etcd):
             none agent-killed broker-killed etcd-restart all";

struct Args {
    nodes: usize,
    trials: usize,
    scenario: String,
    per_scenario: Option<usize>,
    etcd: bool,
    etcd_endpoint: Option<String>,
    jitter_ms: u64,
    kind: Option<Kind>,
    seed: Option<u64>,
    replay: Option<u64>,
    deadline: Option<Duration>,
    chaos: f64,
    node_ttl: Duration,
    lock_ttl: Duration,
    record: Option<PathBuf>,
    resume: bool,
    victim_process: bool,
    rabbitmq: bool,
    messages: u32,
    verbose: u8,
}

/// The internal `--child-agent` mode: one victim agent for an erl node, on etcd.
struct ChildArgs {
    node: NodeName,
    host: String,
    epmd_port: u16,
    ticktime: Duration,
    etcd_endpoint: String,
    cluster: String,
    node_ttl: Duration,
    lock_ttl: Duration,
    point: victim::KillPoint,
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag} takes a number, not {v:?}"))
}

fn parse_args(argv: Vec<String>) -> Result<Args, String> {
    let mut a = Args {
        nodes: 3,
        trials: 10,
        scenario: "none".into(),
        per_scenario: None,
        etcd: false,
        etcd_endpoint: None,
        jitter_ms: 50,
        kind: None,
        seed: None,
        replay: None,
        deadline: None,
        chaos: 0.3,
        node_ttl: Duration::from_secs(3),
        lock_ttl: Duration::from_secs(3),
        record: None,
        resume: false,
        victim_process: true,
        rabbitmq: false,
        messages: 200,
        verbose: 0,
    };
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--nodes" => a.nodes = number(&flag, &value()?)?,
            "--trials" => a.trials = number(&flag, &value()?)?,
            "--scenario" => a.scenario = value()?,
            "--trials-per-scenario" => a.per_scenario = Some(number(&flag, &value()?)?),
            "--backend" => {
                a.etcd = match value()?.as_str() {
                    "etcd" => true,
                    "memory" => false,
                    other => return Err(format!("--backend memory or etcd, not {other:?}")),
                }
            }
            "--etcd-endpoint" => a.etcd_endpoint = Some(value()?),
            "--jitter-ms" => a.jitter_ms = number(&flag, &value()?)?,
            "--erl" => a.kind = Some(Kind::Erl),
            "--native" => a.kind = Some(Kind::Native),
            "--seed" => a.seed = Some(number(&flag, &value()?)?),
            "--replay" => a.replay = Some(number(&flag, &value()?)?),
            "--deadline-s" => a.deadline = Some(Duration::from_secs(number(&flag, &value()?)?)),
            "--chaos" => a.chaos = number(&flag, &value()?)?,
            "--node-ttl-ms" => a.node_ttl = Duration::from_millis(number(&flag, &value()?)?),
            "--lock-ttl-ms" => a.lock_ttl = Duration::from_millis(number(&flag, &value()?)?),
            "--record" => a.record = Some(PathBuf::from(value()?)),
            "--resume" => a.resume = true,
            "--victim" => {
                a.victim_process = match value()?.as_str() {
                    "process" => true,
                    "thread" => false,
                    other => return Err(format!("--victim process or thread, not {other:?}")),
                }
            }
            "--rabbitmq" => a.rabbitmq = true,
            "--messages" => a.messages = number(&flag, &value()?)?,
            "-v" => a.verbose += 1,
            "-vv" => a.verbose += 2,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if a.nodes == 0 || a.nodes > 500 {
        return Err("--nodes must be between 1 and 500".into());
    }
    if a.etcd_endpoint.is_some() {
        a.etcd = true;
    }
    if a.resume && a.record.is_none() {
        return Err("--resume needs --record FILE".into());
    }
    if a.node_ttl < Duration::from_secs(1) || a.lock_ttl < Duration::from_secs(1) {
        return Err("TTLs under 1 s are below etcd's minimum lease".into());
    }
    Ok(a)
}

fn parse_child(argv: Vec<String>) -> Result<ChildArgs, String> {
    let mut get = std::collections::HashMap::new();
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        if flag == "--child-agent" {
            continue;
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        get.insert(flag, v);
    }
    let take = |k: &str| {
        get.get(k)
            .cloned()
            .ok_or_else(|| format!("child: {k} missing"))
    };
    let ms =
        |k: &str| -> Result<Duration, String> { Ok(Duration::from_millis(number(k, &take(k)?)?)) };
    Ok(ChildArgs {
        node: take("--node")?.parse().map_err(|e| format!("{e}"))?,
        host: take("--host")?,
        epmd_port: number("--epmd-port", &take("--epmd-port")?)?,
        ticktime: ms("--ticktime-ms")?,
        etcd_endpoint: take("--etcd-endpoint")?,
        cluster: take("--cluster")?,
        node_ttl: ms("--node-ttl-ms")?,
        lock_ttl: ms("--lock-ttl-ms")?,
        point: victim::KillPoint::parse(&take("--kill-point")?).ok_or("child: bad --kill-point")?,
    })
}

async fn child_main(c: ChildArgs) -> ExitCode {
    let signal = victim::Signal::Stdout;
    let setup = async {
        let cookie = Cookie::from_env("TRIALS_COOKIE").map_err(|e| e.to_string())?;
        let probe = Node::builder(
            format!("victim_{}@{}", std::process::id(), c.host)
                .parse()
                .map_err(|e| format!("{e}"))?,
            cookie,
        )
        .epmd_port(c.epmd_port)
        .net_ticktime(c.ticktime)
        .start()
        .await
        .map_err(|e| e.to_string())?;
        let backend = EtcdBackend::new(EtcdConfig {
            endpoints: vec![c.etcd_endpoint.clone()],
            cluster_name: c.cluster.clone(),
            node_ttl: c.node_ttl,
            lock_ttl: c.lock_ttl,
            lock_wait: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
            ..EtcdConfig::default()
        })
        .map_err(|e| e.to_string())?;
        Ok::<_, String>((backend, ErlangMesh::new(probe, c.node.clone())))
    };
    match setup.await {
        Ok((backend, target)) => {
            victim::run_victim(
                Arc::new(backend),
                Arc::new(target),
                trial::formation_config(c.node_ttl, c.lock_ttl),
                c.point,
                signal,
            )
            .await
        }
        Err(e) => signal.send(&format!("error {e}")),
    }
    ExitCode::FAILURE
}

/// A trial's seed from the run's seed, the scenario and the trial's number.
fn trial_seed(base: u64, scenario: &str, index: usize) -> u64 {
    let mut x = base ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in scenario.bytes() {
        x = (x ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, Linux {}", kernel.trim())
}

#[tokio::main]
async fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "--child-agent") {
        return match parse_child(argv) {
            Ok(c) => child_main(c).await,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        };
    }
    let args = match parse_args(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.verbose > 0 {
        tracing_subscriber::fmt()
            .with_max_level(if args.verbose > 1 {
                tracing::Level::INFO
            } else {
                tracing::Level::WARN
            })
            .with_writer(std::io::stderr)
            .init();
    }
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("trials: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<bool, String> {
    if args.rabbitmq {
        return run_brokers(args).await;
    }
    let kind = args.kind.unwrap_or(if args.nodes <= 5 {
        Kind::Erl
    } else {
        Kind::Native
    });
    let scenarios: Vec<Scenario> = if args.scenario == "all" {
        scenarios::ALL.to_vec()
    } else {
        let s = Scenario::parse(&args.scenario)
            .ok_or_else(|| format!("unknown scenario {:?}\n{USAGE}", args.scenario))?;
        if let Some(why) = s.unsupported(kind, args.nodes) {
            return Err(why);
        }
        vec![s]
    };
    let per_scenario = if args.replay.is_some() {
        1
    } else {
        args.per_scenario.unwrap_or(args.trials)
    };
    let base_seed = args.seed.unwrap_or_else(rand::random);
    let mut etcd = None;
    let etcd_endpoint = match (&args.etcd_endpoint, args.etcd) {
        (Some(e), _) => Some(e.clone()),
        (None, true) => {
            let e = procs::Etcd::start().await?;
            let endpoint = e.endpoint();
            etcd = Some(e);
            Some(endpoint)
        }
        (None, false) => None,
    };
    let backend_name = if etcd_endpoint.is_some() {
        "etcd"
    } else {
        "memory"
    };
    let default_deadline = Duration::from_secs(60 + args.nodes as u64 / 2);
    let settings = Settings {
        nodes: args.nodes,
        jitter: Duration::from_millis(args.jitter_ms),
        deadline: args.deadline.unwrap_or(default_deadline),
        etcd_endpoint: etcd_endpoint.clone(),
        victim_process: args.victim_process,
        chaos_probability: args.chaos,
        node_ttl: args.node_ttl,
        lock_ttl: args.lock_ttl,
    };
    println!(
        "trials: {} {kind} nodes, {backend_name} backend{}, {per_scenario} trial(s) per scenario: {}",
        args.nodes,
        etcd_endpoint
            .as_deref()
            .map(|e| format!(" at {e}"))
            .unwrap_or_default(),
        scenarios
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", "),
        kind = kind.as_str(),
    );
    println!(
        "seed {base_seed}, jitter {}ms, deadline {:?}, node TTL {:?}, lock TTL {:?}, machine: {}",
        args.jitter_ms,
        settings.deadline,
        settings.node_ttl,
        settings.lock_ttl,
        machine()
    );
    let (mut results, mut recorder) =
        report::open_record(args.record.as_deref(), args.resume, |r| {
            r.kind == kind.as_str() && r.backend == backend_name && r.nodes == args.nodes
        })?;
    let total: usize = scenarios
        .iter()
        .filter(|s| s.unsupported(kind, args.nodes).is_none())
        .count()
        * per_scenario;
    let run_started = Instant::now();
    let mut done_now = 0usize;
    for scenario in scenarios {
        if let Some(why) = scenario.unsupported(kind, args.nodes) {
            println!("{}: not run: {why}", scenario.name());
            continue;
        }
        let done: Vec<usize> = results
            .iter()
            .filter(|r| r.scenario == scenario.name())
            .map(|r| r.index)
            .collect();
        let todo: Vec<usize> = (0..per_scenario).filter(|i| !done.contains(i)).collect();
        if todo.is_empty() {
            continue;
        }
        let groups = 2;
        let mut lab = Lab::new(kind, scenario.network(), groups)
            .await
            .map_err(|e| format!("{}: {e}", scenario.name()))?;
        for index in todo {
            let seed = args
                .replay
                .unwrap_or_else(|| trial_seed(base_seed, scenario.name(), index));
            let result = TrialResult {
                scenario: scenario.name().into(),
                index,
                kind: kind.as_str().into(),
                backend: backend_name.into(),
                nodes: args.nodes,
                seed,
                ..TrialResult::default()
            };
            let mut t = Trial::new(&mut lab, etcd.as_mut(), &settings, result);
            let budget = settings.deadline * 3 + Duration::from_secs(60);
            match tokio::time::timeout(budget, scenarios::run(scenario, &mut t)).await {
                Err(_) => t.fail(format!("harness: the trial took longer than {budget:?}")),
                Ok(Err(e)) => t.fail(format!("harness: {e}")),
                Ok(Ok(())) => {}
            }
            t.finish().await;
            let r = t.r.clone();
            drop(t);
            done_now += 1;
            println!(
                "{}",
                report::progress(&r, results.len() + 1, total, run_started.elapsed(), "")
            );
            if let Some(rec) = recorder.as_mut() {
                rec.write(&r);
            }
            results.push(r);
        }
        drop(lab);
        // A scenario that stopped etcd and failed half-way must not leave it down.
        if let Some(e) = etcd.as_mut()
            && !e.is_running()
        {
            e.restart().await?;
        }
    }
    let _ = done_now;
    let totals = report::summary(&results);
    Ok(totals.splits == 0
        && totals.forgotten == 0
        && totals.leaked_locks == 0
        && totals.hangs == 0
        && totals.failed_checks == 0)
}

/// `--rabbitmq`: broker trials (see `broker`), three brokers of the peer environment.
async fn run_brokers(args: Args) -> Result<bool, String> {
    let scenarios: Vec<&'static str> = if args.scenario == "all" {
        broker::SCENARIOS.to_vec()
    } else {
        let s = broker::SCENARIOS
            .iter()
            .find(|s| **s == args.scenario)
            .ok_or_else(|| {
                format!(
                    "--rabbitmq: unknown scenario {:?} (one of {}, or all)",
                    args.scenario,
                    broker::SCENARIOS.join(" ")
                )
            })?;
        vec![*s]
    };
    if args.nodes != broker::BROKERS {
        return Err(format!("--rabbitmq runs {} brokers", broker::BROKERS));
    }
    let per_scenario = if args.replay.is_some() {
        1
    } else {
        args.per_scenario.unwrap_or(args.trials)
    };
    let base_seed = args.seed.unwrap_or_else(rand::random);
    let peers = autocluster_test_support::peers();
    let mut etcd = procs::Etcd::start().await?;
    let settings = broker::BrokerSettings {
        etcd_endpoint: etcd.endpoint(),
        node_ttl: args.node_ttl.max(Duration::from_secs(10)),
        lock_ttl: args.lock_ttl.max(Duration::from_secs(10)),
        deadline: args.deadline.unwrap_or(Duration::from_secs(120)),
        messages: args.messages,
    };
    println!(
        "trials: {} RabbitMQ {} brokers ({}), etcd backend at {}, {per_scenario} trial(s) per scenario: {}",
        broker::BROKERS,
        peers.rabbitmq_version(),
        peers.name(),
        settings.etcd_endpoint,
        scenarios.join(", ")
    );
    println!(
        "seed {base_seed}, deadline {:?}, node TTL {:?}, lock TTL {:?}, {} messages per queue, machine: {}",
        settings.deadline,
        settings.node_ttl,
        settings.lock_ttl,
        settings.messages,
        machine()
    );
    let kind = format!("{}-{}", broker::KIND, peers.rabbitmq_version());
    let (mut results, mut recorder) =
        report::open_record(args.record.as_deref(), args.resume, |r| r.kind == kind)?;
    let plan = broker::Run {
        scenarios: scenarios.clone(),
        per_scenario,
        base_seed,
        replay: args.replay,
        kind,
    };
    let trials = broker::run(&settings, &mut etcd, &plan, &mut results, |r| {
        if let Some(rec) = recorder.as_mut() {
            rec.write(r);
        }
    });
    // Stopped by a signal, the trial in progress is dropped: its brokers (in process
    // groups of their own, which the terminal's signal misses) are killed with it, and
    // the record keeps every finished trial for `--resume`.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("SIGTERM handler: {e}"))?;
    tokio::select! {
        () = trials => {}
        _ = tokio::signal::ctrl_c() => return Err("interrupted (SIGINT)".into()),
        _ = term.recv() => return Err("terminated (SIGTERM)".into()),
    }
    let totals = report::summary(&results);
    Ok(totals.splits == 0
        && totals.forgotten == 0
        && totals.leaked_locks == 0
        && totals.hangs == 0
        && totals.failed_checks == 0)
}
