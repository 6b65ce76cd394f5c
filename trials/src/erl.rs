//! Real `erl` nodes, kept across trials: started once, their mesh reset between trials
//! (`-connect_all false`, so that nothing meshes them but the agents), restarted when a
//! trial killed one.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use autocluster::epmd::EpmdClient;
use autocluster::term::Term;
use autocluster::{Node, NodeName};
use tokio::process::{Child, Command};

use super::procs::{find_binary, kill_group};

/// Where a pool's nodes live.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The network namespace, if any (`ip netns exec NS erl ...`).
    pub netns: Option<String>,
    /// The host part of the names: `localhost` (short names) or an IP (long names).
    pub host: String,
    /// The EPMD the nodes register with and look peers up in, and its address as seen
    /// from the runner.
    pub epmd_port: u16,
    /// EPMD's address as seen from the runner.
    pub epmd_addr: std::net::SocketAddr,
}

/// One `erl` node.
pub struct ErlProc {
    /// Its name.
    pub name: NodeName,
    child: Child,
    pgid: u32,
    placement: usize,
    killed: bool,
}

impl ErlProc {
    /// Whether it was killed (or died).
    pub fn is_dead(&mut self) -> bool {
        self.killed || !matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills it (SIGKILL to its process group), as a crash.
    pub fn kill(&mut self) {
        self.killed = true;
        kill_group(self.pgid);
        let _ = self.child.start_kill();
    }
}

impl Drop for ErlProc {
    fn drop(&mut self) {
        kill_group(self.pgid);
        let _ = self.child.start_kill();
    }
}

/// A pool of `erl` nodes.
pub struct ErlPool {
    /// The nodes, in name order.
    pub nodes: Vec<ErlProc>,
    placements: Vec<Placement>,
    /// Which placement node `i` goes to.
    place_of: fn(usize, usize) -> usize,
    cookie: String,
    erl: PathBuf,
    extra_args: Vec<String>,
    generation: u64,
    dir: tempfile::TempDir,
    /// The runner's own node, to reset and read the nodes.
    pub checker: Node,
    tag: String,
}

impl ErlPool {
    /// A pool over `placements`; node `i` of `n` goes to `place_of(i, n)`. `checker` is
    /// a hidden node holding the cookie that can reach every placement.
    pub fn new(
        placements: Vec<Placement>,
        place_of: fn(usize, usize) -> usize,
        cookie: String,
        checker: Node,
        extra_args: Vec<String>,
        tag: &str,
    ) -> Result<ErlPool, String> {
        let dir = tempfile::Builder::new()
            .prefix("trials-erl-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        Ok(ErlPool {
            nodes: Vec::new(),
            placements,
            place_of,
            cookie,
            erl: find_binary("erl", "erlang-nox")?,
            extra_args,
            generation: 0,
            dir,
            checker,
            tag: tag.to_owned(),
        })
    }

    /// The placement of node `i`.
    pub fn placement(&self, i: usize) -> &Placement {
        &self.placements[self.nodes[i].placement]
    }

    /// Makes sure `n` nodes run (restarting dead ones), with no connections between them.
    pub async fn ready(&mut self, n: usize) -> Result<(), String> {
        self.nodes.truncate(n);
        let mut starting = Vec::new();
        for i in 0..n {
            let dead = match self.nodes.get_mut(i) {
                Some(p) => p.is_dead(),
                None => true,
            };
            if dead {
                let proc = self.spawn(i, n)?;
                if i < self.nodes.len() {
                    self.nodes[i] = proc;
                } else {
                    self.nodes.push(proc);
                }
                starting.push(i);
            }
        }
        for i in starting {
            self.await_up(i).await?;
        }
        self.reset().await
    }

    fn spawn(&mut self, i: usize, n: usize) -> Result<ErlProc, String> {
        self.generation += 1;
        let placement = (self.place_of)(i, n);
        let place = &self.placements[placement];
        // n0 < n1 < ...: the name order is the index order.
        let alive = format!("n{i}_{}_{}", self.tag, self.generation);
        let name: NodeName = format!("{alive}@{}", place.host)
            .parse()
            .map_err(|e| format!("{e}"))?;
        let long = name.host().contains('.');
        let log = std::fs::File::create(self.dir.path().join(format!("{alive}.log")))
            .map_err(|e| format!("erl log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("erl log: {e}"))?;
        let mut command = match &place.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.erl);
                c
            }
            None => Command::new(&self.erl),
        };
        command
            .arg(if long { "-name" } else { "-sname" })
            .arg(name.as_str())
            .args(["-setcookie", &self.cookie])
            .args(["-noshell", "-start_epmd", "false", "-connect_all", "false"])
            // No busy-waiting schedulers: the machine is shared.
            .args(["+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none"])
            .args(&self.extra_args)
            .env("ERL_EPMD_PORT", place.epmd_port.to_string())
            .env_remove("ERL_FLAGS")
            .env_remove("ERL_AFLAGS")
            .env_remove("ERL_ZFLAGS")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start erl: {e}"))?;
        let pgid = child.id().unwrap_or(0);
        Ok(ErlProc {
            name,
            child,
            pgid,
            placement,
            killed: false,
        })
    }

    async fn await_up(&mut self, i: usize) -> Result<(), String> {
        let name = self.nodes[i].name.clone();
        let epmd =
            EpmdClient::new(self.placement(i).epmd_addr).with_timeout(Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.nodes[i].is_dead() {
                return Err(format!(
                    "erl node {name} exited at start; its log:\n{}",
                    self.log_of(&name)
                ));
            }
            if let Ok(Some(_)) = epmd.port_please(name.alive()).await
                && self
                    .checker
                    .ping(&name, Duration::from_secs(5))
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "erl node {name} did not come up within 60 s; its log:\n{}",
                    self.log_of(&name)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_of(&self, name: &NodeName) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", name.alive())))
            .unwrap_or_default()
    }

    /// Disconnects every node from every other.
    pub async fn reset(&mut self) -> Result<(), String> {
        for attempt in 0..50 {
            let mut clean = true;
            for p in &self.nodes {
                let nodes = call_nodes(&self.checker, &p.name).await?;
                for other in nodes {
                    clean = false;
                    let _ = call(
                        &self.checker,
                        &p.name,
                        "erlang",
                        "disconnect_node",
                        vec![Term::atom(other.as_str())],
                    )
                    .await;
                }
            }
            if clean {
                return Ok(());
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Err("the erl nodes keep reconnecting to each other".into())
    }

    /// The names, in order.
    pub fn names(&self) -> Vec<NodeName> {
        self.nodes.iter().map(|p| p.name.clone()).collect()
    }
}

/// Calls `m:f(args)` on `node`, retrying a few times (a connection may be cut by the
/// chaos proxy or a partition may just have healed).
pub async fn call(
    checker: &Node,
    node: &NodeName,
    m: &str,
    f: &str,
    args: Vec<Term>,
) -> Result<Term, String> {
    let mut last = String::new();
    for attempt in 0..5 {
        match checker
            .call(node, m, f, args.clone(), Duration::from_secs(10))
            .await
        {
            Ok(t) => return Ok(t),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
    }
    Err(format!("{m}:{f} on {node}: {last}"))
}

/// `nodes()` on `node`.
pub async fn call_nodes(checker: &Node, node: &NodeName) -> Result<Vec<NodeName>, String> {
    let t = call(checker, node, "erlang", "nodes", vec![]).await?;
    t.into_list_elements()
        .ok_or_else(|| format!("nodes() on {node} is not a list"))?
        .iter()
        .map(|a| {
            a.as_atom()
                .and_then(|a| NodeName::new(a.as_str()).ok())
                .ok_or_else(|| format!("nodes() on {node} holds a non-node"))
        })
        .collect()
}

/// `[node() | nodes()]` on `node`, sorted.
pub async fn view(checker: &Node, node: &NodeName) -> Result<Vec<NodeName>, String> {
    let mut v = call_nodes(checker, node).await?;
    v.push(node.clone());
    v.sort();
    Ok(v)
}
