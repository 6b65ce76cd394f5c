//! A real etcd (Debian `etcd-server`) for a test: its own loopback ports and data
//! directory, killed with its process group on drop, and able to stop and restart on the
//! same data directory for outage tests. Plus [`etcdctl`](EtcdServer::etcdctl) against it,
//! and fake servers that accept and never answer, or answer garbage.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::process::require_binary;
use super::process::{free_port, kill_process_group, unique_name};

/// A running (or stopped) single-member etcd on `127.0.0.1`.
pub struct EtcdServer {
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    child: Option<(Child, u32)>,
    tls: Option<TestCerts>,
}

/// A throw-away CA with a server certificate for `127.0.0.1`/`localhost` and a client
/// certificate, generated with the `openssl` command-line tool (PEM, P-256 keys).
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server certificate and key.
    pub server_cert: PathBuf,
    /// The server key.
    pub server_key: PathBuf,
    /// The client certificate.
    pub client_cert: PathBuf,
    /// The client key.
    pub client_key: PathBuf,
}

impl TestCerts {
    /// Generates them in `dir`.
    pub fn generate(dir: &Path) -> TestCerts {
        let openssl = require_binary("openssl", "openssl");
        let run = |args: &[&str]| {
            let out = std::process::Command::new(&openssl)
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &key,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=autocluster test CA",
            ],
        ]
        .concat());
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("server.ext");
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")
            .expect("client.ext");
        for name in ["server", "client"] {
            run(&[
                &["req"][..],
                &key,
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN={name}"),
                ],
            ]
            .concat());
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ]);
        }
        TestCerts {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

impl EtcdServer {
    /// Starts etcd on free ports with a fresh data directory and waits until it serves.
    ///
    /// Heartbeat 20 ms and election timeout 200 ms make its minimum lease TTL 1 s (etcd:
    /// 1.5 election timeouts, rounded up to whole seconds), so tests can use short TTLs.
    pub async fn start() -> EtcdServer {
        Self::start_with_tls(false).await
    }

    /// Starts etcd serving clients over TLS only (`https`), requiring client
    /// certificates; see [`tls`](Self::tls) for the files.
    pub async fn start_tls() -> EtcdServer {
        Self::start_with_tls(true).await
    }

    async fn start_with_tls(tls: bool) -> EtcdServer {
        require_binary("etcd", "etcd-server");
        require_binary("etcdctl", "etcd-client");
        let dir = tempfile::Builder::new()
            .prefix("autocluster-etcd-")
            .tempdir()
            .expect("temporary directory");
        let mut server = EtcdServer {
            name: unique_name("etcd"),
            client_port: free_port(),
            peer_port: free_port(),
            tls: None,
            dir,
            child: None,
        };
        if tls {
            let certs_dir = server.dir.path().join("certs");
            std::fs::create_dir_all(&certs_dir).expect("certs dir");
            server.tls = Some(TestCerts::generate(&certs_dir));
        }
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let binary = require_binary("etcd", "etcd-server");
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log file");
        let mut command = Command::new(&binary);
        command
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("{}={peer}", self.name)])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "20", "--election-timeout", "200"])
            .args(["--logger", "zap", "--log-level", "warn"]);
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        // etcd reads ETCD_* variables as flags: keep the test environment out of it.
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
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let pgid = child.id().expect("etcd has a pid");
        self.child = Some((child, pgid));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((child, _)) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("etcd exited with {status}:\n{}", self.log_tail());
            }
            let (ok, _) = self.try_etcdctl(&["endpoint", "health"]).await;
            if ok {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "etcd did not become healthy within 20 s:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT` (`https` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The certificates, for a TLS server.
    pub fn tls(&self) -> Option<&TestCerts> {
        self.tls.as_ref()
    }

    /// Kills etcd (SIGKILL to its process group, as a crash would) and waits for it to
    /// exit. The data directory stays.
    pub async fn stop(&mut self) {
        if let Some((mut child, pgid)) = self.child.take() {
            kill_process_group(pgid);
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }

    /// Starts etcd again on the same ports and data directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// The last lines of etcd's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    async fn try_etcdctl(&self, args: &[&str]) -> (bool, String) {
        let binary = require_binary("etcdctl", "etcd-client");
        let mut command = Command::new(binary);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCDCTL") {
                command.env_remove(key);
            }
        }
        let output = tokio::time::timeout(
            Duration::from_secs(10),
            command
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", self.endpoint()))
                .args(["--command-timeout=2s", "--dial-timeout=1s"])
                .args(self.tls.iter().flat_map(|t| {
                    [
                        format!("--cacert={}", t.ca.display()),
                        format!("--cert={}", t.client_cert.display()),
                        format!("--key={}", t.client_key.display()),
                    ]
                }))
                .args(args)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await;
        match output {
            Ok(Ok(output)) => (
                output.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            ),
            Ok(Err(e)) => (false, e.to_string()),
            Err(_) => (false, "etcdctl hung".into()),
        }
    }

    /// Runs `etcdctl --endpoints=THIS ARGS...` and returns its standard output; panics if
    /// it fails.
    pub async fn etcdctl(&self, args: &[&str]) -> String {
        let (ok, output) = self.try_etcdctl(args).await;
        assert!(ok, "etcdctl {args:?} failed: {output}");
        output
    }

    /// Keys under `prefix` (`etcdctl get --prefix --keys-only`).
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        self.etcdctl(&["get", "--prefix", "--keys-only", prefix])
            .await
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The value of `key`, if it exists.
    pub async fn get(&self, key: &str) -> Option<String> {
        let out = self.etcdctl(&["get", "--print-value-only", key]).await;
        let value = out.strip_suffix('\n').unwrap_or(&out);
        if value.is_empty() {
            None
        } else {
            Some(value.to_owned())
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if let Some((mut child, pgid)) = self.child.take() {
            kill_process_group(pgid);
            let _ = child.start_kill();
        }
    }
}

/// What a [`FakeServer`] does with a connection.
#[derive(Debug, Clone, Copy)]
pub enum Fake {
    /// Accept and never answer (a hung server).
    Hang,
    /// Answer an HTTP/1.1 500 with an HTML body, whatever was asked.
    Http500,
    /// Answer random-looking bytes and close.
    Garbage,
}

/// A TCP server on `127.0.0.1` that misbehaves, for timeout and garbage tests.
pub struct FakeServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl FakeServer {
    /// Starts one.
    pub async fn start(kind: Fake) -> FakeServer {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                match kind {
                    Fake::Hang => held.push(socket),
                    Fake::Http500 => {
                        tokio::spawn(async move {
                            let _ = socket
                                .write_all(
                                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/html\r\n\
                                      content-length: 23\r\n\r\n<html>oops</html>\r\n\r\n",
                                )
                                .await;
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        });
                    }
                    Fake::Garbage => {
                        let _ = socket
                            .write_all(&[0x17, 0x03, 0x03, 0xff, 0xff, 0, 1, 2, 3, 4, 5])
                            .await;
                    }
                }
            }
        });
        FakeServer { addr, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
