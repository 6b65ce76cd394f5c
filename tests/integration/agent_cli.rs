//! `autocluster agent`, the binary, beside real brokers through a real etcd (the host's
//! RabbitMQ; `scripts/peers-matrix` runs the same tests on 4.0 and 4.3): booted
//! together, one cluster and `/readyz` 200 everywhere with the default safety gates; a
//! pod deleted (agent and broker stopped) deregisters and leaves the others ready; back
//! with its data it rejoins without a reset; two more brokers make five; etcd restarted
//! mid-life forgets nobody and leaves readiness alone; `leave` is refused while the
//! node's agent runs and resets the node out of the cluster once it is stopped; with
//! `new_cluster_enabled` off a lone fresh node never forms a cluster.

#![cfg(all(feature = "cli", feature = "etcd"))]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

use crate::common::{
    Epmd, EtcdServer, RabbitNode, RabbitOptions, free_port, set_private, unique_name,
};
use crate::rabbitmq_formation::{RABBIT_TURN, cli_status};
use crate::rabbitmq_safety::enable_khepri;

/// One `autocluster agent` process beside a broker.
struct AgentProcess {
    child: Child,
    http: u16,
    log: PathBuf,
    node: String,
}

impl AgentProcess {
    /// Starts `autocluster agent` for `broker` with `config`, and `extra` flags.
    fn start(broker: &RabbitNode, config: &Path, dir: &Path, extra: &[&str]) -> AgentProcess {
        let http = free_port();
        let cookie = dir.join(format!("{}.cookie", broker.node()));
        std::fs::write(&cookie, broker.cookie()).expect("writing the cookie file");
        set_private(&cookie);
        let log = dir.join(format!("{}-{}.log", broker.node(), unique_name("agent")));
        let out = std::fs::File::create(&log).expect("the agent's log file");
        let child = Command::new(env!("CARGO_BIN_EXE_autocluster"))
            .args(["agent", "--node", broker.node()])
            .arg("--cookie-file")
            .arg(&cookie)
            .args(["--epmd-port", &broker.epmd_port().to_string()])
            .arg("--config")
            .arg(config)
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--readiness-interval", "1"])
            .args(extra)
            .env("HOME", dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("autocluster agent starts");
        AgentProcess {
            child,
            http,
            log,
            node: broker.node().to_owned(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (within 15 s).
    async fn stop(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().expect("a running agent").to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not stop within 15 s:\n{}", self.node, self.log()))
            .expect("waiting for the agent");
        (status.code(), self.log())
    }

    /// `GET path`: the status and body, or `None` when nothing answers.
    async fn get(&self, path: &str) -> Option<(u16, String, String)> {
        http_get(self.http, path).await
    }

    /// Fails the test at once when the agent has exited.
    fn running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.node, self.log());
        }
    }

    /// Waits until `/readyz` answers 200, `within` at most.
    async fn ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            self.running();
            let answer = self.get("/readyz").await;
            if matches!(&answer, Some((200, _, _))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {within:?}: {answer:?}\n{}",
                self.node,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// A pod deleted: its agent stopped with SIGTERM (exit 0), then its broker.
async fn delete_pod(agent: &mut Option<AgentProcess>, broker: &mut RabbitNode) {
    let (code, log) = agent.take().expect("the pod's agent").stop().await;
    assert_eq!(code, Some(0), "{log}");
    broker.stop().await;
}

/// A bare HTTP/1.0 GET on loopback: status, content type and body.
async fn http_get(port: u16, path: &str) -> Option<(u16, String, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    Some((status, content_type, body.to_owned()))
}

/// A rabbitmq.conf with the etcd keys, and keys the agent ignores.
fn write_config(dir: &Path, etcd: &EtcdServer, cluster: &str) -> PathBuf {
    write_config_with(dir, etcd, cluster, 10, "")
}

/// [`write_config`] with another node TTL and `extra` lines.
fn write_config_with(
    dir: &Path,
    etcd: &EtcdServer,
    cluster: &str,
    node_ttl: u32,
    extra: &str,
) -> PathBuf {
    let endpoint = etcd.endpoint();
    let host_port = endpoint.trim_start_matches("http://");
    let path = dir.join("rabbitmq.conf");
    std::fs::write(
        &path,
        format!(
            "# RabbitMQ's own keys are left alone\n\
             listeners.tcp.default = 5672\n\
             default_user = guest\n\
             cluster_formation.peer_discovery_backend = etcd\n\
             cluster_formation.etcd.endpoints.1 = {host_port}\n\
             cluster_formation.etcd.cluster_name = {cluster}\n\
             cluster_formation.etcd.node_ttl = {node_ttl}\n\
             cluster_formation.etcd.lock_wait_time = 120\n\
             cluster_formation.discovery_retry_limit = 60\n\
             cluster_formation.discovery_retry_interval = 500\n\
             {extra}"
        ),
    )
    .expect("writing rabbitmq.conf");
    path
}

/// The nodes registered under `cluster`.
async fn registered(etcd: &EtcdServer, cluster: &str) -> Vec<String> {
    let prefix = format!("/rabbitmq/discovery/rabbitmq/clusters/{cluster}/nodes/");
    let mut nodes: Vec<String> = etcd
        .keys(&prefix)
        .await
        .into_iter()
        .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
        .collect();
    nodes.sort();
    nodes
}

/// Every broker of `brokers` lists all of them as members and running.
async fn assert_one_cluster(brokers: &[&RabbitNode]) {
    let mut all: Vec<String> = brokers.iter().map(|b| b.node().to_owned()).collect();
    all.sort();
    let deadline = Instant::now() + Duration::from_secs(60);
    for b in brokers {
        loop {
            let (disk, running, _) = cli_status(b).await;
            if (disk.clone(), running.clone()) == (all.clone(), all.clone()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: members {disk:?}, running {running:?}, expected {all:?}",
                b.node()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The whole life of a three-broker deployment, and two more brokers, each with an
/// agent, through etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_forms_keeps_ready_and_survives_a_pod_restart_growth_and_an_etcd_restart() {
    let _turn = RABBIT_TURN.lock().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut etcd = EtcdServer::start().await;
    let epmd = Epmd::start().await;
    let cluster = unique_name("agent");
    let config = write_config(dir.path(), &etcd, &cluster);
    let options = RabbitOptions::new().epmd_port(epmd.port());

    // Booted together: three brokers launched, an agent beside each at once.
    let launches: Vec<_> = (0..3)
        .map(|_| tokio::spawn(RabbitNode::launch(options.clone())))
        .collect();
    let mut brokers = Vec::new();
    for l in launches {
        brokers.push(l.await.expect("a broker launches"));
    }
    let started = Instant::now();
    let mut agents: Vec<Option<AgentProcess>> = brokers
        .iter()
        .map(|b| Some(AgentProcess::start(b, &config, dir.path(), &[])))
        .collect();
    for a in agents.iter_mut().flatten() {
        a.ready(Duration::from_secs(120)).await;
    }
    eprintln!(
        "three brokers booted together: one cluster, every /readyz 200 after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_one_cluster(&brokers.iter().collect::<Vec<_>>()).await;
    let mut names: Vec<String> = brokers.iter().map(|b| b.node().to_owned()).collect();
    names.sort();
    assert_eq!(registered(&etcd, &cluster).await, names);
    let agent = agents[0].as_ref().expect("agent 0");
    let (status, content_type, metrics) = agent.get("/metrics").await.expect("/metrics");
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    for line in [
        "autocluster_ready 1",
        "autocluster_cluster_running_members 3",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(metrics.contains("autocluster_seed{node=\""), "{metrics}");
    assert_eq!(agent.get("/healthz").await.map(|a| a.0), Some(200));

    // A pod deleted: the agent and the broker of the last node stopped. The agent
    // deregisters and exits 0; the others stay ready.
    let victim = (0..3)
        .max_by_key(|&i| brokers[i].node().to_owned())
        .expect("three brokers");
    brokers[victim]
        .publish_confirmed("agent-orders", "quorum", 50)
        .await;
    let resets = brokers[victim].resets();
    delete_pod(&mut agents[victim], &mut brokers[victim]).await;
    let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let gone = registered(&etcd, &cluster).await;
    assert!(
        !gone.contains(&brokers[victim].node().to_owned()),
        "still registered: {gone:?}"
    );
    for &i in &others {
        let a = agents[i].as_ref().expect("a running agent");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            a.get("/readyz").await.map(|r| r.0),
            Some(200),
            "{} with a member's pod deleted\n{}",
            a.node,
            a.log()
        );
    }

    // Back with its data: the agent finds it a member; nothing lost, no reset.
    brokers[victim].restart().await;
    let mut back = AgentProcess::start(&brokers[victim], &config, dir.path(), &[]);
    back.ready(Duration::from_secs(120)).await;
    assert!(
        back.log().contains("already a member"),
        "the pod restarted with its data is a member already:\n{}",
        back.log()
    );
    agents[victim] = Some(back);
    assert_eq!(brokers[victim].resets(), resets, "no reset");
    assert_eq!(
        brokers[victim].message_count("agent-orders").await,
        Some(50)
    );

    // Two more brokers: five.
    for _ in 0..2 {
        let b = RabbitNode::launch(options.clone()).await;
        agents.push(Some(AgentProcess::start(&b, &config, dir.path(), &[])));
        brokers.push(b);
    }
    for a in agents.iter_mut().flatten() {
        a.ready(Duration::from_secs(120)).await;
    }
    assert_one_cluster(&brokers.iter().collect::<Vec<_>>()).await;

    // etcd restarted mid-life: readiness unaffected, nobody forgotten.
    etcd.stop().await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        for a in agents.iter().flatten() {
            assert_eq!(
                a.get("/readyz").await.map(|r| r.0),
                Some(200),
                "{} during the etcd outage\n{}",
                a.node,
                a.log()
            );
        }
    }
    etcd.restart().await;
    let mut all: Vec<String> = brokers.iter().map(|b| b.node().to_owned()).collect();
    all.sort();
    let deadline = Instant::now() + Duration::from_secs(60);
    while registered(&etcd, &cluster).await != all {
        assert!(
            Instant::now() < deadline,
            "registrations after the etcd restart: {:?}",
            registered(&etcd, &cluster).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_one_cluster(&brokers.iter().collect::<Vec<_>>()).await;
    let (_, _, metrics) = agents[others[0]]
        .as_ref()
        .expect("an agent")
        .get("/metrics")
        .await
        .expect("/metrics");
    let errors: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("autocluster_backend_errors_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(errors > 0, "the outage shows in the metrics:\n{metrics}");

    // Scale-down while the node's agent runs is refused, nothing changed: the agent
    // would join the reset node back.
    let leaving = brokers.len() - 1;
    let resets = brokers[leaving].resets();
    let (code, out) = leave(&brokers[leaving], dir.path()).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("an agent is connected"), "{out}");
    assert_eq!(brokers[leaving].resets(), resets, "nothing reset");

    // Every agent stops with SIGTERM: exit 0, deregistered, the brokers still one cluster.
    for a in agents.iter_mut() {
        let (code, log) = a.take().expect("an agent").stop().await;
        assert_eq!(code, Some(0), "{log}");
    }
    assert_eq!(registered(&etcd, &cluster).await, Vec::<String>::new());
    assert_one_cluster(&brokers.iter().collect::<Vec<_>>()).await;

    // With its agent stopped, `leave` resets the node out of the cluster.
    let (code, out) = leave(&brokers[leaving], dir.path()).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(brokers[leaving].resets() > resets, "reset: {out}");
    assert_one_cluster(&brokers[..leaving].iter().collect::<Vec<_>>()).await;
    assert_one_cluster(&[&brokers[leaving]]).await;
}

/// `autocluster leave --confirm-reset` for `broker` (the cookie file its agent used):
/// the exit code, and stdout and stderr.
async fn leave(broker: &RabbitNode, dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_autocluster"))
        .args(["leave", "--confirm-reset", "--node", broker.node()])
        .arg("--cookie-file")
        .arg(dir.join(format!("{}.cookie", broker.node())))
        .args(["--epmd-port", &broker.epmd_port().to_string()])
        .env("HOME", dir)
        .output()
        .await
        .expect("autocluster leave runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// A fresh broker alone, its agent told `--new-cluster-enabled false`: it waits and
/// never forms a cluster of its own (nothing registered, `/readyz` 503, the log says
/// why), and stops with SIGTERM before formation finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_new_cluster_enabled_off_a_lone_fresh_node_never_forms() {
    let _turn = RABBIT_TURN.lock().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let etcd = EtcdServer::start().await;
    let epmd = Epmd::start().await;
    let cluster = unique_name("agent");
    let config = write_config(dir.path(), &etcd, &cluster);
    let broker = RabbitNode::start(RabbitOptions::new().epmd_port(epmd.port())).await;
    let mut agent = AgentProcess::start(
        &broker,
        &config,
        dir.path(),
        &["--new-cluster-enabled", "false"],
    );
    let serving = Instant::now() + Duration::from_secs(20);
    while agent.get("/healthz").await.is_none() {
        agent.running();
        assert!(Instant::now() < serving, "no HTTP\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        agent.running();
        assert_eq!(registered(&etcd, &cluster).await, Vec::<String>::new());
        assert_eq!(agent.get("/readyz").await.map(|r| r.0), Some(503));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("switched off"), "{log}");
    assert!(!log.contains("formed a new cluster"), "{log}");
}

/// Cleanup on (`node_cleanup.only_log_warning = false`, a round a second): a pod deleted
/// for longer than the cleanup window (the node TTL, 5 s here, then 3 unreachable
/// rounds) is forgotten by the others. Back with its data it is refused and nothing is
/// reset: on Mnesia by RabbitMQ itself (its boot stops, "inconsistent cluster"); on
/// Khepri, whose boot waits for a leader (minutes on 4.3; on 4.0 the boot then fails
/// with `timeout_waiting_for_leader`), and wherever the broker boots, by its agent, with
/// an error that says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_longer_than_the_cleanup_window_is_forgotten_and_refused_when_back() {
    cleanup_window(false).await;
}

/// The same on RabbitMQ 3.13 - 4.2 with Khepri enabled on every broker before its agent
/// starts (on 4.3 it is the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ 3.13 or later: scripts/peers-matrix runs it on 4.0"]
async fn a_node_down_longer_than_the_cleanup_window_is_forgotten_and_refused_when_back_on_khepri() {
    cleanup_window(true).await;
}

async fn cleanup_window(khepri: bool) {
    let _turn = RABBIT_TURN.lock().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let etcd = EtcdServer::start().await;
    let epmd = Epmd::start().await;
    let cluster = unique_name("agent");
    let config = write_config_with(
        dir.path(),
        &etcd,
        &cluster,
        5,
        "cluster_formation.node_cleanup.interval = 1\n\
         cluster_formation.node_cleanup.only_log_warning = false\n",
    );
    let mut brokers = RabbitNode::start_many(3, RabbitOptions::new().epmd_port(epmd.port())).await;
    if khepri {
        enable_khepri(&brokers).await;
    }
    let mut agents: Vec<Option<AgentProcess>> = brokers
        .iter()
        .map(|b| Some(AgentProcess::start(b, &config, dir.path(), &[])))
        .collect();
    for a in agents.iter_mut().flatten() {
        a.ready(Duration::from_secs(120)).await;
    }
    let victim = (0..3)
        .max_by_key(|&i| brokers[i].node().to_owned())
        .expect("three brokers");
    let name = brokers[victim].node().to_owned();
    let resets = brokers[victim].resets();
    delete_pod(&mut agents[victim], &mut brokers[victim]).await;
    let survivor = (victim + 1) % 3;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (disk, _, _) = cli_status(&brokers[survivor]).await;
        if !disk.contains(&name) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name} was not forgotten: members {disk:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let others: String = agents.iter().flatten().map(AgentProcess::log).collect();
    assert!(others.contains("cleanup: forgot"), "{others}");

    brokers[victim].restart().await;
    let mut back = AgentProcess::start(&brokers[victim], &config, dir.path(), &[]);
    let deadline = Instant::now() + Duration::from_secs(180);
    let refused_by = loop {
        if let Ok(Some(status)) = back.child.try_wait() {
            let log = back.log();
            assert_eq!(
                status.code(),
                Some(3),
                "exit 3, an operator must act: {log}"
            );
            assert!(log.contains("was removed from"), "{log}");
            assert!(log.contains("rabbitmqctl reset"), "{log}");
            break "its agent";
        }
        if brokers[victim].exited() {
            let log = brokers[victim].log();
            assert!(
                log.contains("inconsistent_cluster") || log.contains("disagrees"),
                "the broker stopped for another reason:\n{}",
                brokers[victim].log_tail()
            );
            let (code, agent_log) = back.stop().await;
            assert_eq!(code, Some(0), "{agent_log}");
            assert!(!agent_log.contains("joined"), "{agent_log}");
            break "RabbitMQ itself";
        }
        assert!(
            Instant::now() < deadline,
            "the forgotten node was neither refused nor stopped:\n{}",
            back.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("{name}, forgotten and back with its data, was refused by {refused_by}");
    assert_eq!(brokers[victim].resets(), resets, "nothing reset");
}
