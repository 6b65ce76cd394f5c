//! What one trial found, the record file (one JSON object a line, for `--record` and
//! `--resume`), and the summary table.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// What one trial found.
#[derive(Debug, Clone, Default)]
pub struct TrialResult {
    /// The scenario's name.
    pub scenario: String,
    /// The trial's number within its scenario (0-based).
    pub index: usize,
    /// `erl` or `native`.
    pub kind: String,
    /// `memory` or `etcd`.
    pub backend: String,
    /// Nodes in the trial.
    pub nodes: usize,
    /// The trial's own RNG seed (replay with `--seed`).
    pub seed: u64,
    /// Live members that ended in one cluster (every live agent formed, and every view
    /// agrees).
    pub formed: bool,
    /// Distinct views among the live members whose agents formed (1 when formed).
    pub clusters: usize,
    /// More than one cluster among live members whose agents reported success.
    pub split: bool,
    /// The live members were not one cluster yet when the agents returned, and the
    /// agents' watch made them one (or not: then `split`): erl trials, the first round
    /// (run at once after formation); broker trials, a split the watch mended.
    pub incomplete_at_return: bool,
    /// Live members that cleanup forgot.
    pub forgotten: usize,
    /// Whether the startup lock was still held on the backend's side after its lease.
    pub leaked_lock: bool,
    /// Agents that did not finish within their deadline.
    pub hangs: usize,
    /// Agent errors, by kind.
    pub errors: BTreeMap<String, usize>,
    /// From the common start until the last live agent finished.
    pub formation_ms: u64,
    /// Other checks that failed (registration not expired, cleanup not real, ...).
    pub failures: Vec<String>,
    /// Notes that are not failures (what the fault injected, how long it lasted).
    pub notes: Vec<String>,
}

impl TrialResult {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        !self.split
            && self.forgotten == 0
            && !self.leaked_lock
            && self.hangs == 0
            && self.failures.is_empty()
    }

    /// One line for the progress output.
    pub fn line(&self) -> String {
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut s = format!(
            "{:<20} #{:<4} {} clusters={} {}ms",
            self.scenario,
            self.index,
            if self.formed {
                "formed "
            } else if self.passed() {
                "errors "
            } else {
                "FAILED "
            },
            self.clusters,
            self.formation_ms
        );
        if self.split {
            s.push_str(" SPLIT");
        } else if self.incomplete_at_return {
            s.push_str(" (one through the watch)");
        }
        if self.forgotten > 0 {
            s.push_str(&format!(" FORGOTTEN={}", self.forgotten));
        }
        if self.leaked_lock {
            s.push_str(" LEAKED-LOCK");
        }
        if self.hangs > 0 {
            s.push_str(&format!(" HANGS={}", self.hangs));
        }
        if !errors.is_empty() {
            s.push_str(&format!(" errors[{}]", errors.join(",")));
        }
        for f in &self.failures {
            s.push_str(&format!(" FAIL({f})"));
        }
        if !self.notes.is_empty() {
            s.push_str(&format!(" [{}]", self.notes.join("; ")));
        }
        s
    }

    /// The record-file form.
    pub fn to_json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "index": self.index,
            "kind": self.kind,
            "backend": self.backend,
            "nodes": self.nodes,
            "seed": self.seed,
            "formed": self.formed,
            "clusters": self.clusters,
            "split": self.split,
            "incomplete_at_return": self.incomplete_at_return,
            "forgotten": self.forgotten,
            "leaked_lock": self.leaked_lock,
            "hangs": self.hangs,
            "errors": self.errors,
            "formation_ms": self.formation_ms,
            "failures": self.failures,
            "notes": self.notes,
        })
    }

    /// Reads a record back.
    pub fn from_json(v: &Value) -> Option<TrialResult> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let u = |k: &str| v.get(k).and_then(Value::as_u64);
        let b = |k: &str| v.get(k).and_then(Value::as_bool);
        let strings = |k: &str| -> Vec<String> {
            v.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Some(TrialResult {
            scenario: s("scenario")?,
            index: u("index")? as usize,
            kind: s("kind")?,
            backend: s("backend")?,
            nodes: u("nodes")? as usize,
            seed: u("seed")?,
            formed: b("formed")?,
            clusters: u("clusters")? as usize,
            split: b("split")?,
            incomplete_at_return: b("incomplete_at_return").unwrap_or(false),
            forgotten: u("forgotten")? as usize,
            leaked_lock: b("leaked_lock")?,
            hangs: u("hangs")? as usize,
            errors: v
                .get("errors")
                .and_then(Value::as_object)
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, n)| Some((k.clone(), n.as_u64()? as usize)))
                        .collect()
                })
                .unwrap_or_default(),
            formation_ms: u("formation_ms")?,
            failures: strings("failures"),
            notes: strings("notes"),
        })
    }
}

/// The progress line of a finished trial: `[done/total XmYYs] <line>`, and for a failed
/// trial the command flags that replay it (`extra` goes before them, e.g. `--rabbitmq `).
pub fn progress(
    r: &TrialResult,
    done: usize,
    total: usize,
    elapsed: Duration,
    extra: &str,
) -> String {
    let secs = elapsed.as_secs();
    let replay = if r.passed() {
        String::new()
    } else {
        format!(
            " (replay: {extra}--scenario {} --replay {})",
            r.scenario, r.seed
        )
    };
    format!(
        "[{done}/{total} {}m{:02}s] {}{replay}",
        secs / 60,
        secs % 60,
        r.line()
    )
}

/// Opens the record file, if any: with `resume`, also the trials it already holds that
/// `keep` accepts (printing how many).
pub fn open_record(
    path: Option<&Path>,
    resume: bool,
    keep: impl Fn(&TrialResult) -> bool,
) -> Result<(Vec<TrialResult>, Option<Recorder>), String> {
    let Some(path) = path else {
        return Ok((Vec::new(), None));
    };
    let mut results = Vec::new();
    if resume {
        results = read_records(path).into_iter().filter(|r| keep(r)).collect();
        println!(
            "resuming: {} trial(s) already recorded in {}",
            results.len(),
            path.display()
        );
    }
    Ok((results, Some(Recorder::open(path)?)))
}

/// Appends records to a file, one JSON object a line, flushed after each.
pub struct Recorder {
    file: std::fs::File,
}

impl Recorder {
    /// Opens `path` for appending.
    pub fn open(path: &Path) -> Result<Recorder, String> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open the record file {}: {e}", path.display()))?;
        Ok(Recorder { file })
    }

    /// Appends one record.
    pub fn write(&mut self, r: &TrialResult) {
        let line = r.to_json().to_string();
        let _ = writeln!(self.file, "{line}");
        let _ = self.file.flush();
    }
}

/// Reads every record of a file (an absent file is empty; a torn last line is skipped).
pub fn read_records(path: &Path) -> Vec<TrialResult> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| TrialResult::from_json(&v))
        .collect()
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[derive(Default)]
struct Row {
    trials: usize,
    formed: usize,
    splits: usize,
    watch: usize,
    forgotten: usize,
    leaked: usize,
    hangs: usize,
    errors: usize,
    failed_checks: usize,
    times: Vec<u64>,
}

impl Row {
    fn add(&mut self, r: &TrialResult) {
        self.trials += 1;
        self.formed += usize::from(r.formed);
        self.splits += usize::from(r.split);
        self.watch += usize::from(r.incomplete_at_return && !r.split);
        self.forgotten += r.forgotten;
        self.leaked += usize::from(r.leaked_lock);
        self.hangs += r.hangs;
        self.errors += r.errors.values().sum::<usize>();
        self.failed_checks += r.failures.len();
        self.times.push(r.formation_ms);
    }

    fn render(&mut self, label: &str) -> String {
        self.times.sort_unstable();
        format!(
            "{label:<46} {:>6} {:>6} {:>6} {:>6} {:>9} {:>6} {:>5} {:>6} {:>6} {:>7} {:>7} {:>7}",
            self.trials,
            self.formed,
            self.splits,
            self.watch,
            self.forgotten,
            self.leaked,
            self.hangs,
            self.errors,
            self.failed_checks,
            percentile(&self.times, 0.50),
            percentile(&self.times, 0.99),
            self.times.last().copied().unwrap_or(0),
        )
    }
}

/// The totals the last line and the exit status are made of.
pub struct Totals {
    /// Trials.
    pub trials: usize,
    /// Trials with a split.
    pub splits: usize,
    /// Live members forgotten.
    pub forgotten: usize,
    /// Trials that leaked the lock.
    pub leaked_locks: usize,
    /// Agents that hung.
    pub hangs: usize,
    /// Other failed checks.
    pub failed_checks: usize,
    /// p99 formation time.
    pub p99_ms: u64,
}

/// Prints the summary table and returns the totals.
pub fn summary(results: &[TrialResult]) -> Totals {
    let mut rows: BTreeMap<(String, String, String, usize), Row> = BTreeMap::new();
    let mut total = Row::default();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for r in results {
        rows.entry((
            r.scenario.clone(),
            r.kind.clone(),
            r.backend.clone(),
            r.nodes,
        ))
        .or_default()
        .add(r);
        total.add(r);
        for (k, n) in &r.errors {
            *errors.entry(format!("{}: {k}", r.scenario)).or_default() += n;
        }
        for f in &r.failures {
            let kind = f.split(':').next().unwrap_or(f).to_owned();
            *failures
                .entry(format!("{}: {kind}", r.scenario))
                .or_default() += 1;
        }
    }
    println!();
    println!("summary");
    println!(
        "{:<46} {:>6} {:>6} {:>6} {:>6} {:>9} {:>6} {:>5} {:>6} {:>6} {:>7} {:>7} {:>7}",
        "scenario (nodes, backend, N)",
        "trials",
        "formed",
        "splits",
        "watch*",
        "forgotten",
        "leaked",
        "hangs",
        "errors",
        "failed",
        "p50_ms",
        "p99_ms",
        "max_ms"
    );
    for ((scenario, kind, backend, n), row) in rows.iter_mut() {
        println!(
            "{}",
            row.render(&format!("{scenario} ({kind}, {backend}, {n})"))
        );
    }
    println!("{}", total.render("total"));
    println!(
        "* watch: trials whose live members became one cluster only through the agents' watch \
         (erl: its first round, run at once after formation; brokers: a split it mended)"
    );
    if errors.is_empty() {
        println!("agent errors by kind: none");
    } else {
        println!("agent errors by kind:");
        for (k, n) in &errors {
            println!("  {k}: {n}");
        }
    }
    if !failures.is_empty() {
        println!("failed checks by kind:");
        for (k, n) in &failures {
            println!("  {k}: {n}");
        }
    }
    let totals = Totals {
        trials: total.trials,
        splits: total.splits,
        forgotten: total.forgotten,
        leaked_locks: total.leaked,
        hangs: total.hangs,
        failed_checks: total.failed_checks,
        p99_ms: percentile(&total.times, 0.99),
    };
    println!(
        "trials={} splits={} forgotten={} leaked_locks={} p99_ms={}",
        totals.trials, totals.splits, totals.forgotten, totals.leaked_locks, totals.p99_ms
    );
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
