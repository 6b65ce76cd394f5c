//! What every benchmark shares: the real peers (the integration tests' harness, the
//! `autocluster-test-support` package in `test-support/`), run settings, CPU time, core
//! pinning, a throughput driver, statistics and the JSON result files that
//! `benches/report.rs` turns into `BENCHMARKS.md` and the SVG plots.
//!
//! Every benchmark binary is `harness = false`. `cargo bench` passes `--bench`; without it
//! (`cargo test --all-targets` runs bench targets too) a benchmark only runs a smoke check
//! of a few iterations, so CI stays quick.
#![allow(dead_code, unused_imports)]

pub mod timeline;
pub mod workers;

pub use autocluster_test_support::{
    Epmd, ErlNode, ErlOptions, EtcdServer, RabbitNode, RabbitOptions, free_port,
    kill_process_group, kill_process_tree, require_binary, rss_kib, unique_name,
};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The cookie of every benchmark node.
pub const COOKIE: &str = "autocluster_bench_cookie";

/// How long and how often to measure.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `cargo bench` (true) or a smoke check under `cargo test` (false).
    pub bench: bool,
    /// `BENCH_QUICK=1`: short runs to check that everything works.
    pub quick: bool,
    /// Length of one measurement.
    pub window: Duration,
    /// Warm-up before each measurement.
    pub warmup: Duration,
    /// Rounds: every implementation is measured once per round, in turn, so that a
    /// noisy moment hits all of them alike; figures are medians over rounds.
    pub rounds: usize,
    /// Only the sections whose names contain one of these (from the command line).
    pub filters: Vec<String>,
}

impl Settings {
    /// From the command line (`--bench`, filters) and the environment (`BENCH_QUICK`,
    /// `BENCH_ROUNDS`, `BENCH_WINDOW_MS`).
    pub fn from_env() -> Settings {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let bench = args.iter().any(|a| a == "--bench");
        let filters = args
            .iter()
            .filter(|a| !a.starts_with('-'))
            .cloned()
            .collect();
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
        let env_num = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        let (window_ms, rounds) = match (bench, quick) {
            (false, _) => (50, 1),
            (true, true) => (300, 2),
            (true, false) => (2000, 5),
        };
        let window = Duration::from_millis(env_num("BENCH_WINDOW_MS").unwrap_or(window_ms));
        Settings {
            bench,
            quick,
            window,
            warmup: if bench {
                Duration::from_millis(300).min(window)
            } else {
                Duration::ZERO
            },
            rounds: env_num("BENCH_ROUNDS").map_or(rounds, |r| r.max(1) as usize),
            filters,
        }
    }

    /// Whether the section `name` is selected.
    pub fn wants(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }
}

/// Prints a progress line to standard error, with the time since the process started.
pub fn progress(msg: impl AsRef<str>) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed();
    eprintln!("[{:>7.1}s] {}", t.as_secs_f64(), msg.as_ref());
}

// ---------------------------------------------------------------------------------
// CPU time and cores
// ---------------------------------------------------------------------------------

/// CPU time (user + system) this process has used so far, all threads.
pub fn cpu_time() -> Duration {
    let (user, system) = cpu_times();
    user + system
}

/// CPU time this process has used so far, all threads: (user, system).
#[allow(unsafe_code)]
pub fn cpu_times() -> (Duration, Duration) {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    // SAFETY: initialised by the successful call above (and zeroed before).
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

/// CPU time (user + system) another process has used, from `/proc/PID/stat` (clock
/// ticks, 10 ms here; measurements last long enough for that to be fine).
pub fn process_cpu_time(pid: u32) -> Duration {
    let (user, system) = process_cpu_times(pid);
    user + system
}

/// CPU time another process has used, from `/proc/PID/stat`: (user, system).
pub fn process_cpu_times(pid: u32) -> (Duration, Duration) {
    let zero = (Duration::ZERO, Duration::ZERO);
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return zero;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return zero;
    };
    // After "(comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt
    // cmajflt utime stime ...: utime and stime are the 12th and 13th fields.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ms = |t: u64| Duration::from_millis(t * 1000 / clock_ticks_per_second());
    (ms(ticks(11)), ms(ticks(12)))
}

fn clock_ticks_per_second() -> u64 {
    #[allow(unsafe_code)]
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Resident memory of a process, in KiB (0 when unknown).
pub fn process_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Pins every thread of `pid` (and what it starts later) to the CPUs in `cpus`
/// (`taskset` syntax, e.g. `"0"` or `"0-1"`). Returns whether it worked.
pub fn pin(pid: u32, cpus: &str) -> bool {
    std::process::Command::new("taskset")
        .args(["-a", "-cp", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Pins this process to `cpus`. Call it before the runtime starts, so that every thread
/// inherits it.
pub fn pin_self(cpus: &str) -> bool {
    pin(std::process::id(), cpus)
}

/// The number of CPUs online (not the ones this process is pinned to).
pub fn cpus() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The CPU model, from `/proc/cpuinfo`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The 1-, 5- and 15-minute load averages.
pub fn load_average() -> [f64; 3] {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = s.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

// ---------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------

/// What one throughput measurement counted.
#[derive(Debug, Clone, Default)]
pub struct Counted {
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that failed.
    pub failed: u64,
    /// Wall time of the measurement.
    pub elapsed: Duration,
    /// CPU time of this process during it.
    pub cpu: Duration,
    /// The first error seen, for the log.
    pub first_error: Option<String>,
}

impl Counted {
    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// CPU microseconds of this process per successful operation.
    pub fn cpu_us_per_op(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / (self.ok.max(1) as f64)
    }

    /// `" (the first error)"`, or nothing: the end of a progress line.
    pub fn error_note(&self) -> String {
        self.first_error
            .as_ref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    }

    /// The result record of this measurement: what every benchmark records of it, plus
    /// the fields of `extra` (a JSON object).
    pub fn record(
        &self,
        implementation: &str,
        concurrency: impl Into<Value>,
        round: impl Into<Value>,
        extra: Value,
    ) -> Value {
        let mut record = json!({
            "impl": implementation,
            "concurrency": concurrency.into(),
            "round": round.into(),
            "ok": self.ok,
            "failed": self.failed,
            "secs": self.elapsed.as_secs_f64(),
            "rate": self.rate(),
            "cpu_us_per_op": self.cpu_us_per_op(),
            "first_error": self.first_error,
        });
        if let (Value::Object(fields), Value::Object(extra)) = (&mut record, extra) {
            fields.extend(extra);
        }
        record
    }
}

/// One worker of a throughput measurement: does one operation per call.
pub trait Worker: Send + 'static {
    /// One operation.
    fn op(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// Runs `workers` concurrently, each doing operations back to back, for `warmup` (not
/// counted) and then `window`; returns the count of the window. Operations that started
/// inside the window are waited for and counted, and the wall time runs until the last
/// one finished.
pub async fn throughput<W: Worker>(
    workers: Vec<W>,
    warmup: Duration,
    window: Duration,
) -> (Counted, Vec<W>) {
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut tasks = Vec::new();
    for mut w in workers {
        let (counting, stop, ok, failed, first_error) = (
            counting.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            first_error.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let counts = counting.load(Ordering::Relaxed);
                let r = w.op().await;
                if !counts {
                    continue;
                }
                match r {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e);
                        // A failing peer must not turn into a busy loop.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            w
        }));
    }
    tokio::time::sleep(warmup).await;
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    counting.store(true, Ordering::Relaxed);
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let mut back = Vec::new();
    for t in tasks {
        back.push(t.await.expect("a benchmark worker panicked"));
    }
    let elapsed = t0.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    let first_error = first_error.lock().unwrap_or_else(|e| e.into_inner()).take();
    (
        Counted {
            ok: ok.load(Ordering::Relaxed),
            failed: failed.load(Ordering::Relaxed),
            elapsed,
            cpu,
            first_error,
        },
        back,
    )
}

/// Median, quartiles and extremes of a sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// The median.
    pub median: f64,
    /// First quartile.
    pub q1: f64,
    /// Third quartile.
    pub q3: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Number of values.
    pub n: usize,
}

/// The summary of `values` (quartiles by linear interpolation).
pub fn summarize(values: &[f64]) -> Summary {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Summary::default();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        let pos = p * (v.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
    };
    Summary {
        median: q(0.5),
        q1: q(0.25),
        q3: q(0.75),
        min: v[0],
        max: v[v.len() - 1],
        n: v.len(),
    }
}

impl Summary {
    /// As JSON.
    pub fn json(&self) -> Value {
        json!({"median": self.median, "q1": self.q1, "q3": self.q3, "min": self.min, "max": self.max, "n": self.n})
    }
}

// ---------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------

/// How many operations a `BENCH_PROFILE` run does: `BENCH_PROFILE_OPS`, default 200.
#[allow(dead_code)]
pub fn profile_ops() -> usize {
    std::env::var("BENCH_PROFILE_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// Where results go: `BENCH_RESULTS`, else `<crate>/benches/results` (the published
/// results) for a full run and `<crate>/target/bench-quick` for a quick one.
pub fn results_dir(settings: &Settings) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("BENCH_RESULTS") {
        Some(d) => PathBuf::from(d),
        None if settings.quick => root.join("target/bench-quick"),
        None => root.join("benches/results"),
    }
}

/// The results of one benchmark binary: raw samples (one record per implementation,
/// setting and round) plus free-form facts, written as JSON for the report.
pub struct Results {
    name: String,
    started: Instant,
    load_before: [f64; 3],
    records: Vec<Value>,
    facts: serde_json::Map<String, Value>,
}

impl Results {
    /// Starts collecting for the benchmark `name` (the file is `<name>.json`).
    pub fn new(name: &str) -> Results {
        Results {
            name: name.to_owned(),
            started: Instant::now(),
            load_before: load_average(),
            records: Vec::new(),
            facts: serde_json::Map::new(),
        }
    }

    /// Adds one sample. `record` is an object; the round and the load average are added.
    pub fn record(&mut self, mut record: Value) {
        if let Value::Object(m) = &mut record {
            m.insert("load1".into(), json!(load_average()[0]));
        }
        self.records.push(record);
    }

    /// Sets a fact (versions, pids, settings...).
    pub fn fact(&mut self, key: &str, value: Value) {
        self.facts.insert(key.to_owned(), value);
    }

    /// Writes `<results_dir>/<name>.json` (only under `cargo bench`).
    pub fn write(self, settings: &Settings) {
        let doc = json!({
            "bench": self.name,
            "quick": settings.quick,
            "window_ms": settings.window.as_millis() as u64,
            "rounds": settings.rounds,
            "cpu_model": cpu_model(),
            "cpus": cpus(),
            "load_before": self.load_before,
            "load_after": load_average(),
            "duration_s": self.started.elapsed().as_secs_f64(),
            "unix_time": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            "facts": Value::Object(self.facts),
            "records": self.records,
        });
        if !settings.bench {
            progress(format!(
                "{}: smoke check done ({} records; not written: run `cargo bench`)",
                self.name,
                doc["records"].as_array().map_or(0, Vec::len)
            ));
            return;
        }
        let dir = results_dir(settings);
        std::fs::create_dir_all(&dir).expect("create the results directory");
        let path = dir.join(format!("{}.json", self.name));
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&doc).expect("serialize"),
        )
        .expect("write the results");
        progress(format!("wrote {}", path.display()));
    }
}

/// A multi-thread tokio runtime with `workers` threads.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A current-thread tokio runtime (one core).
pub fn runtime_current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The host part that `erl -sname` gives a node on this machine.
pub fn short_host() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    h.trim().split('.').next().unwrap_or("localhost").to_owned()
}

/// The OS pid of an `erl` node started by the harness.
pub async fn erl_os_pid(node: &mut ErlNode) -> u32 {
    let pid = node.eval("os:getpid()").await;
    pid.trim_matches('"')
        .parse()
        .expect("os:getpid() is a number")
}

/// The cargo target directory: this benchmark is `target/<profile>/deps/BENCH-HASH`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .expect("target/<profile>/deps/BENCH")
        .to_path_buf()
}

/// A command-line example's binary as built by `cargo build --profile cli --example NAME`
/// (`benches/run.sh` builds it so): the way a tool is shipped.
pub fn cli_binary(name: &str) -> PathBuf {
    let p = target_dir().join("cli").join("examples").join(name);
    assert!(
        p.is_file(),
        "{} is missing: build it first (cargo build --profile cli --example {name}), as benches/run.sh does",
        p.display()
    );
    p
}

/// A command-line example's statically linked binary, as built by
/// `RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile cli --example NAME
/// --target HOST` (`benches/run.sh` builds it so).
pub fn cli_static_binary(name: &str) -> PathBuf {
    let target = target_dir();
    let found = std::fs::read_dir(&target)
        .expect("target/")
        .filter_map(Result::ok)
        .map(|e| e.path().join("cli").join("examples").join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "no static {name} under {}/<host>/cli/examples: build it first (RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --profile cli --example {name} --target <host>), as benches/run.sh does",
            target.display()
        )
    })
}

/// An example's binary from the same build as this benchmark (`cargo bench` builds
/// release benchmarks; `benches/run.sh` builds the examples in release first).
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/BENCH-HASH -> target/<profile>/examples/NAME
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let p = dir.join("examples").join(name);
    assert!(
        p.is_file(),
        "{} is missing: build it first (cargo build --release --examples --features etcd), as benches/run.sh does",
        p.display()
    );
    p
}
