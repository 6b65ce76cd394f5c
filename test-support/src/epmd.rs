//! A real `epmd` for a test: its own port, in the foreground, killed on drop.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use autocluster::epmd::EpmdClient;
use tokio::process::Child;

use super::env::peers;
use super::process::{free_port, kill_process_group};

/// A real `epmd -port P` child process on a free port.
pub struct Epmd {
    port: u16,
    child: Child,
    pgid: u32,
}

impl Epmd {
    /// Starts `epmd -port P -address 127.0.0.1` (which also listens on `::1`) in the
    /// foreground and waits until it answers `NAMES`. Panics if it cannot.
    pub async fn start() -> Epmd {
        Self::start_with(&[]).await
    }

    /// The same with extra `epmd` arguments, e.g. `-relaxed_command_check`.
    pub async fn start_with(args: &[&str]) -> Epmd {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let child = peers()
                .command("epmd", "erlang-base", None)
                .args(["-port", &port.to_string(), "-address", "127.0.0.1"])
                .args(args)
                .env_remove("ERL_EPMD_PORT")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start epmd ({}): {e}", peers().name()));
            let pgid = child.id().expect("epmd has a pid");
            let mut epmd = Epmd { port, child, pgid };
            let client = EpmdClient::new(epmd.addr()).with_timeout(Duration::from_secs(1));
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut child_exited = false;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = epmd.child.try_wait() {
                    // epmd exits (status 0!) when the port is taken: try another.
                    last_error = format!("epmd -port {port} exited with {status}");
                    child_exited = true;
                    break;
                }
                match client.names().await {
                    Ok(_) => {
                        // Make sure the epmd answering is ours, not one that holds the port.
                        if matches!(epmd.child.try_wait(), Ok(None)) {
                            return epmd;
                        }
                    }
                    Err(e) => last_error = e.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !child_exited {
                panic!("epmd -port {port} did not answer within 10 s: {last_error}");
            }
        }
        panic!("could not start epmd: {last_error}");
    }

    /// Its OS process id.
    pub fn pid(&self) -> u32 {
        self.pgid
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// A client for it.
    pub fn client(&self) -> EpmdClient {
        EpmdClient::new(self.addr())
    }
}

impl Drop for Epmd {
    fn drop(&mut self) {
        kill_process_group(self.pgid);
        let _ = self.child.start_kill();
    }
}

/// Runs the real `epmd` command-line client (`epmd -port P ARGS...`, e.g. `-names`)
/// against whatever listens on `port` (real epmd or the crate's server) and returns its
/// exit status and standard output.
pub async fn epmd_cli(port: u16, args: &[&str]) -> (std::process::ExitStatus, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        peers()
            .command("epmd", "erlang-base", None)
            .args(["-port", &port.to_string()])
            .args(args)
            .env_remove("ERL_EPMD_PORT")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("epmd -port {port} {args:?} hung"))
    .unwrap_or_else(|e| panic!("cannot run epmd: {e}"));
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}
