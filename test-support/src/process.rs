//! Free ports, process groups, output capture and finding binaries, shared by the peer
//! harnesses.

use std::collections::{HashSet, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// A TCP port free on both `127.0.0.1` and `[::1]` right now, never handed out twice by
/// this test process (so parallel tests do not race each other for it).
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..1000 {
        let Ok(v4) = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))) else {
            continue;
        };
        let Ok(port) = v4.local_addr().map(|a| a.port()) else {
            continue;
        };
        if TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port))).is_err() {
            continue;
        }
        let mut handed = handed.lock().unwrap_or_else(|e| e.into_inner());
        if handed.insert(port) {
            return port;
        }
    }
    panic!("no free TCP port found on 127.0.0.1 and ::1");
}

/// A name unique to this test process and call: `{prefix}_{pid}_{n}`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Kills a whole process group (a child started with `process_group(0)` leads its own
/// group, so its pid is the group id): the child and everything it started.
pub fn kill_process_group(pgid: u32) {
    // `kill` from procps/util-linux; the crate forbids `unsafe`, so no libc::kill here.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// The last lines a child printed, for failure messages.
#[derive(Clone, Default)]
pub struct OutputLog {
    lines: Arc<Mutex<VecDeque<String>>>,
}

impl OutputLog {
    const KEEP: usize = 300;

    /// Remembers a line (keeping the last few hundred).
    pub fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == Self::KEEP {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// Everything remembered, one line each.
    pub fn dump(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().map(|l| format!("    {l}\n")).collect()
    }
}

/// Resident memory of this test process, in KiB (0 when unknown).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Every descendant of `pid` (children, grandchildren, ...), read from `/proc`. Needed
/// for children that leave their process group, e.g. through `su`, which starts a new
/// session: collect them before killing, as they are reparented once their parent dies.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may contain spaces, so split after ')'.
            let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
                continue;
            };
            if let Some(ppid) = rest
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u32>().ok())
            {
                parents.push((p, ppid));
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, ppid) in &parents {
            if ppid == parent && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

/// Kills `pid`'s process group and every descendant of `pid`, wherever they went.
pub fn kill_process_tree(pid: u32) {
    let tree = descendants(pid);
    kill_process_group(pid);
    if !tree.is_empty() {
        let _ = std::process::Command::new("kill")
            .arg("-KILL")
            .args(tree.iter().map(|p| p.to_string()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Finds `binary` on `PATH` (or in OTP's `bin` directory), or panics with what to install.
pub fn require_binary(binary: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push(PathBuf::from("/usr/lib/erlang/bin"));
    dirs.push(PathBuf::from("/usr/sbin"));
    for dir in dirs {
        let candidate = dir.join(binary);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{binary}` is not installed; these tests run against the real thing: \
         apt-get install -y {package}"
    );
}

/// Taken by the tests that flood a listener or a connection and measure how the node
/// copes (latencies, task counts, memory): they run one at a time, so that one flood's
/// load is not read as another's result. Other tests still run beside them.
pub async fn flood_alone() -> tokio::sync::MutexGuard<'static, ()> {
    static FLOODS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    FLOODS.lock().await
}

/// The example's binary, built by `cargo test` beside the test binaries.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join(name))
        .expect("target/<profile>/examples");
    assert!(
        path.is_file(),
        "{} is missing: cargo test --all-features builds it (or cargo build --example {name} --features etcd)",
        path.display()
    );
    path
}
