//! Child processes the runner starts: free ports, killing a process group, finding a
//! binary, and a real etcd it can stop and restart.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Kills a whole process group with SIGKILL (a child started with `process_group(0)`
/// leads its own group). The crate forbids `unsafe`, so this runs `kill`.
pub fn kill_group(pgid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether a process is still there (not reaped or a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Finds `binary` on the PATH or in the usual Erlang and sbin directories.
pub fn find_binary(binary: &str, package: &str) -> Result<PathBuf, String> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/lib/erlang/bin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!("`{binary}` is not installed (Debian: apt-get install -y {package})")
        })
}

/// A single-member etcd on free loopback ports with a temporary data directory, killed
/// with its process group on drop. Heartbeat 20 ms and election timeout 200 ms make its
/// minimum lease TTL 1 s, so trials can use short TTLs.
pub struct Etcd {
    binary: PathBuf,
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    child: Option<(Child, u32)>,
}

impl Etcd {
    /// Starts one and waits until it serves.
    pub async fn start() -> Result<Etcd, String> {
        let binary = find_binary("etcd", "etcd-server")?;
        let dir = tempfile::Builder::new()
            .prefix("trials-etcd-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let mut etcd = Etcd {
            binary,
            name: format!("trials{}", std::process::id()),
            client_port: free_port()?,
            peer_port: free_port()?,
            dir,
            child: None,
        };
        etcd.spawn().await?;
        Ok(etcd)
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .map_err(|e| format!("etcd log: {e}"))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("{}={peer}", self.name)])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "20", "--election-timeout", "200"])
            .args(["--logger", "zap", "--log-level", "warn"]);
        // etcd reads ETCD_* variables as flags: keep ours out of it.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD") {
                command.env_remove(key);
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        let pgid = child.id().unwrap_or(0);
        self.child = Some((child, pgid));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((child, _)) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("etcd exited with {status}:\n{}", self.log_tail()));
            }
            if self.healthy().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd did not serve within 30 s:\n{}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether it answers a read.
    async fn healthy(&self) -> bool {
        let connect = etcd_client::Client::connect(
            [self.endpoint()],
            Some(
                etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_millis(500))
                    .with_timeout(Duration::from_millis(500)),
            ),
        );
        match tokio::time::timeout(Duration::from_secs(1), connect).await {
            Ok(Ok(mut client)) => matches!(
                tokio::time::timeout(Duration::from_secs(1), client.get("/health-probe", None))
                    .await,
                Ok(Ok(_))
            ),
            _ => false,
        }
    }

    /// Whether it runs (not stopped by [`stop`](Self::stop)).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Kills it (SIGKILL, as a crash) and waits for it to exit; the data stays.
    pub async fn stop(&mut self) {
        if let Some((mut child, pgid)) = self.child.take() {
            kill_group(pgid);
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }

    /// Starts it again on the same ports and data.
    pub async fn restart(&mut self) -> Result<(), String> {
        self.stop().await;
        self.spawn().await
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some((mut child, pgid)) = self.child.take() {
            kill_group(pgid);
            let _ = child.start_kill();
        }
    }
}

/// Keys under `prefix` on the etcd at `endpoint` (`None` when etcd does not answer).
pub async fn etcd_keys(endpoint: &str, prefix: &str) -> Option<Vec<String>> {
    let connect = etcd_client::Client::connect(
        [endpoint],
        Some(
            etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(Duration::from_secs(2)),
        ),
    );
    let mut client = tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .ok()?
        .ok()?;
    let response = tokio::time::timeout(
        Duration::from_secs(2),
        client.get(
            prefix,
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        ),
    )
    .await
    .ok()?
    .ok()?;
    Some(
        response
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect(),
    )
}
