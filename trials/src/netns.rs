//! Network namespaces for the partition scenario, created and removed by the runner.
//!
//! ```text
//!   root namespace (the runner: agents, etcd)      198.18.S.1 ─┐
//!   namespace A (epmd, erl nodes n0, n1, ...)      198.18.S.11 ─┤  bridge in a
//!   namespace B (epmd, erl nodes ..., nN)          198.18.S.12 ─┘  "switch" namespace
//! ```
//!
//! Addresses come from 198.18.0.0/15 (RFC 2544, set aside for network tests), one /24
//! per run. A partition adds `blackhole` routes in A for B's address and in B for A's:
//! packets between them vanish (as on a cut link), while both still reach the runner.
//! Healing deletes the routes. Everything is removed on drop; a previous run's leftovers
//! (its process gone) are removed at start.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::procs::{find_binary, kill_group, pid_alive};

const PREFIX: &str = "actr";

/// The namespaces of one run.
pub struct Netns {
    id: String,
    /// The /24's third octet.
    subnet: u8,
    /// Member namespaces (A, B, ...).
    members: Vec<String>,
    switch: String,
    root_if: String,
    epmds: Vec<(Child, u32)>,
    partitioned: bool,
}

async fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip_sync(args: &[&str]) {
    let _ = std::process::Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Removes namespaces and links left by runs whose process is gone.
async fn remove_leftovers() {
    let mine = std::process::id().to_string();
    let stale = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            return false;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        !pid.is_empty() && pid != mine && !pid.parse().is_ok_and(pid_alive)
    };
    if let Ok(list) = ip(&["netns", "list"]).await {
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if stale(ns) {
                ip_sync(&["netns", "del", ns]);
            }
        }
    }
    if let Ok(links) = ip(&["-o", "link", "show"]).await {
        for l in links.lines() {
            if let Some(name) = l
                .split(':')
                .nth(1)
                .map(|s| s.trim().split('@').next().unwrap_or(""))
                && stale(name)
            {
                ip_sync(&["link", "del", name]);
            }
        }
    }
}

impl Netns {
    /// Creates the switch and `groups` member namespaces, each running an `epmd` on
    /// `epmd_port`. Fails with the reason when namespaces cannot be created (not root,
    /// no iproute2, no veth or bridge support).
    pub async fn create(groups: usize, epmd_port: u16) -> Result<Netns, String> {
        remove_leftovers().await;
        let pid = std::process::id();
        let id = format!("{PREFIX}{pid}");
        // A /24 in 198.18.0.0/15 that no interface here uses.
        let used = ip(&["-4", "-o", "addr", "show"]).await.map_err(|e| {
            format!(
                "cannot create the network namespaces for the partition scenario (run as root with iproute2, veth and bridge support): {e}"
            )
        })?;
        let mut subnet = (pid % 250) as u8 + 1;
        for _ in 0..250 {
            if !used.contains(&format!("198.18.{subnet}.")) {
                break;
            }
            subnet = subnet % 250 + 1;
        }
        let mut ns = Netns {
            switch: format!("{id}sw"),
            root_if: format!("{id}r"),
            members: (0..groups)
                .map(|g| format!("{id}{}", (b'a' + g as u8) as char))
                .collect(),
            id,
            subnet,
            epmds: Vec::new(),
            partitioned: false,
        };
        if let Err(e) = ns.build(epmd_port).await {
            ns.remove();
            return Err(format!(
                "cannot create the network namespaces for the partition scenario (run as root with iproute2, veth and bridge support): {e}"
            ));
        }
        Ok(ns)
    }

    async fn build(&mut self, epmd_port: u16) -> Result<(), String> {
        let sw = self.switch.clone();
        ip(&["netns", "add", &sw]).await?;
        ip(&["-n", &sw, "link", "set", "lo", "up"]).await?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]).await?;
        ip(&["-n", &sw, "link", "set", "br0", "up"]).await?;
        // The runner's leg.
        let root_peer = format!("{}p", self.root_if);
        ip(&[
            "link",
            "add",
            &self.root_if,
            "type",
            "veth",
            "peer",
            "name",
            &root_peer,
        ])
        .await?;
        ip(&["link", "set", &root_peer, "netns", &sw]).await?;
        ip(&["-n", &sw, "link", "set", &root_peer, "master", "br0", "up"]).await?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.root_addr()),
            "dev",
            &self.root_if,
        ])
        .await?;
        ip(&["link", "set", &self.root_if, "up"]).await?;
        // The members' legs.
        let epmd = find_binary("epmd", "erlang-base")?;
        for (g, ns) in self.members.clone().iter().enumerate() {
            ip(&["netns", "add", ns]).await?;
            ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
            let inner = format!("{}{g}i", self.id);
            let outer = format!("{}{g}o", self.id);
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ])
            .await?;
            ip(&["link", "set", &inner, "netns", ns]).await?;
            ip(&["link", "set", &outer, "netns", &sw]).await?;
            ip(&["-n", &sw, "link", "set", &outer, "master", "br0", "up"]).await?;
            ip(&["-n", ns, "link", "set", &inner, "name", "eth0"]).await?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", self.addr(g)),
                "dev",
                "eth0",
            ])
            .await?;
            ip(&["-n", ns, "link", "set", "eth0", "up"]).await?;
            let child = Command::new("ip")
                .args(["netns", "exec", ns])
                .arg(&epmd)
                .args(["-port", &epmd_port.to_string()])
                .env_remove("ERL_EPMD_PORT")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start epmd in {ns}: {e}"))?;
            let pgid = child.id().unwrap_or(0);
            self.epmds.push((child, pgid));
        }
        // Every member answers from the runner.
        for g in 0..self.members.len() {
            let addr = SocketAddr::from((self.addr(g), epmd_port));
            let deadline = Instant::now() + Duration::from_secs(20);
            let client =
                autocluster::epmd::EpmdClient::new(addr).with_timeout(Duration::from_millis(500));
            while client.names().await.is_err() {
                if Instant::now() > deadline {
                    return Err(format!(
                        "epmd in {} does not answer at {addr}",
                        self.members[g]
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// The runner's address.
    pub fn root_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet, 1)
    }

    /// Member namespace `g`'s address.
    pub fn addr(&self, g: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet, 11 + g as u8)
    }

    /// Member namespace `g`'s name.
    pub fn name(&self, g: usize) -> &str {
        &self.members[g]
    }

    /// Cuts every member namespace off from every other (the runner still reaches all).
    pub async fn partition(&mut self) -> Result<(), String> {
        self.routes("add").await?;
        self.partitioned = true;
        Ok(())
    }

    /// Heals the partition.
    pub async fn heal(&mut self) -> Result<(), String> {
        if self.partitioned {
            self.routes("del").await?;
            self.partitioned = false;
        }
        Ok(())
    }

    async fn routes(&self, op: &str) -> Result<(), String> {
        for (g, ns) in self.members.iter().enumerate() {
            for h in 0..self.members.len() {
                if h != g {
                    let dst = format!("{}/32", self.addr(h));
                    ip(&["-n", ns, "route", op, "blackhole", &dst]).await?;
                }
            }
        }
        Ok(())
    }

    fn remove(&mut self) {
        for (mut child, pgid) in self.epmds.drain(..) {
            kill_group(pgid);
            let _ = child.start_kill();
        }
        for ns in self.members.iter().chain(std::iter::once(&self.switch)) {
            ip_sync(&["netns", "del", ns]);
        }
        ip_sync(&["link", "del", &self.root_if]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.remove();
    }
}
