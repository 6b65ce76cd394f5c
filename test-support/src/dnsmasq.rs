//! A real `dnsmasq` (Debian `dnsmasq-base`) serving test records on a free loopback port,
//! killed on drop.
//!
//! Addresses are from TEST-NET-1 (192.0.2.0/24, RFC 5737): data only, nothing is sent to
//! them (hickory answers reverse lookups of loopback addresses itself, with `localhost`).
//!
//! Records (all under `.test`, for which dnsmasq is made authoritative with `--local`, so
//! that unknown names answer NXDOMAIN instead of REFUSED):
//! * pods: `rmq-0.rmq.test` 192.0.2.1, `rmq-1.rmq.test` 192.0.2.2 and fd00::2,
//!   `rmq-2.rmq.test` 192.0.2.3 (`--host-record`: A/AAAA plus the PTR records);
//! * the headless Service `svc.rmq.test`: A 192.0.2.1, 192.0.2.2, 192.0.2.3 and AAAA
//!   fd00::2 (`--address`, no PTR of its own);
//! * `nopt.rmq.test`: A 192.0.2.9, which has no PTR record;
//! * SRV `_epmd._tcp.rmq.test` → `rmq-0.rmq.test`, `rmq-1.rmq.test` (port 4369).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::process::require_binary;
use super::process::{free_port, kill_process_group};

pub struct Dnsmasq {
    pub addr: SocketAddr,
    child: Option<(Child, u32)>,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    pub async fn start() -> Dnsmasq {
        let dir = tempfile::tempdir().expect("tempdir");
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = Self::spawn(port, dir.path()).await {
                return Dnsmasq {
                    addr: format!("127.0.0.1:{port}").parse().unwrap(),
                    child: Some(child),
                    _dir: dir,
                };
            }
        }
        panic!("dnsmasq did not start on any port");
    }

    async fn spawn(port: u16, dir: &std::path::Path) -> Option<(Child, u32)> {
        let binary = require_binary("dnsmasq", "dnsmasq-base");
        let mut command = Command::new(&binary);
        command
            .arg("--keep-in-foreground")
            .arg(format!("--port={port}"))
            .arg("--listen-address=127.0.0.1")
            .arg("--bind-interfaces")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--conf-file=/dev/null")
            .arg("--user=root")
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg("--local=/test/")
            .arg("--local=/2.0.192.in-addr.arpa/")
            .arg("--host-record=rmq-0.rmq.test,192.0.2.1")
            .arg("--host-record=rmq-1.rmq.test,192.0.2.2,fd00::2")
            .arg("--host-record=rmq-2.rmq.test,192.0.2.3")
            .arg("--address=/svc.rmq.test/192.0.2.1")
            .arg("--address=/svc.rmq.test/192.0.2.2")
            .arg("--address=/svc.rmq.test/192.0.2.3")
            .arg("--address=/svc.rmq.test/fd00::2")
            .arg("--address=/nopt.rmq.test/192.0.2.9")
            .arg("--srv-host=_epmd._tcp.rmq.test,rmq-1.rmq.test,4369")
            .arg("--srv-host=_epmd._tcp.rmq.test,rmq-0.rmq.test,4369")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn dnsmasq");
        let pid = child.id().expect("pid");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // Ready once it accepts TCP (it serves UDP and TCP).
        let start = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Some((child, pid));
            }
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("dnsmasq on port {port} exited ({status})");
                return None;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "dnsmasq did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops it (an outage).
    pub async fn stop(&mut self) {
        if let Some((mut child, pid)) = self.child.take() {
            kill_process_group(pid);
            let _ = child.wait().await;
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        for _ in 0..50 {
            if let Some(child) = Self::spawn(self.addr.port(), self._dir.path()).await {
                self.child = Some(child);
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("dnsmasq did not restart on port {}", self.addr.port());
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if let Some((_, pid)) = self.child.take() {
            kill_process_group(pid);
        }
    }
}
