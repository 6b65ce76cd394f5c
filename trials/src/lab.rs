//! The lab a block of trials runs in: the EPMD the nodes use (the embedded server, the
//! chaos EPMD in front of it, or one `epmd` per network namespace), the pool of `erl`
//! nodes, and the backend each trial gets.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autocluster::backend::etcd::{EtcdBackend, EtcdConfig};
use autocluster::backend::{Backend, MemoryBackend};
use autocluster::epmd::{EpmdServer, EpmdServerConfig};
use autocluster::{Cookie, Node, NodeName};

use super::chaos::ChaosEpmd;
use super::erl::{ErlPool, Placement};
use super::netns::Netns;
use super::procs::{Etcd, etcd_keys};

/// Real `erl` nodes or Rust-native nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `erl` nodes, formed through [`autocluster::formation::ErlangMesh`].
    Erl,
    /// `autocluster::Node`s, formed through [`autocluster::formation::NativeTarget`].
    Native,
}

impl Kind {
    /// `erl` or `native`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Erl => "erl",
            Kind::Native => "native",
        }
    }
}

/// How the lab's nodes find each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// The embedded EPMD on loopback.
    Direct,
    /// The chaos EPMD in front of the embedded one.
    Chaos,
    /// Network namespaces, one `epmd` each (erl only).
    Namespaces,
}

/// Where trials run.
pub struct Lab {
    /// Node kind.
    pub kind: Kind,
    /// The EPMD port every node and agent uses.
    pub epmd_port: u16,
    /// The host part of agent and native node names.
    pub host: String,
    /// `net_ticktime` of every node.
    pub ticktime: Duration,
    /// The cookie.
    pub cookie: Cookie,
    /// Its text (a throw-away random cookie, given to `erl` with `-setcookie`).
    pub cookie_text: String,
    /// The erl nodes (dropped before the namespaces they live in).
    pub pool: Option<ErlPool>,
    /// The chaos EPMD, when the network is [`Network::Chaos`].
    pub chaos: Option<ChaosEpmd>,
    /// The namespaces, when the network is [`Network::Namespaces`].
    pub netns: Option<Netns>,
    _epmd: Option<EpmdServer>,
    tag: String,
}

/// `epmd` port inside the namespaces (each has its own port space).
const NETNS_EPMD_PORT: u16 = 4369;

impl Lab {
    /// Sets a lab up. `groups` is the number of namespaces for [`Network::Namespaces`].
    pub async fn new(kind: Kind, network: Network, groups: usize) -> Result<Lab, String> {
        let cookie_text: String = (0..20)
            .map(|_| char::from(b'A' + rand::random_range(0..26u8)))
            .collect();
        let cookie = Cookie::new(cookie_text.clone()).map_err(|e| e.to_string())?;
        let tag = format!("{}", std::process::id());
        let mut lab = Lab {
            kind,
            epmd_port: 0,
            host: "localhost".into(),
            ticktime: Duration::from_secs(60),
            cookie,
            cookie_text,
            pool: None,
            chaos: None,
            netns: None,
            _epmd: None,
            tag,
        };
        let mut placements = Vec::new();
        match network {
            Network::Direct | Network::Chaos => {
                let epmd = EpmdServer::bind(EpmdServerConfig {
                    addrs: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
                    ..EpmdServerConfig::localhost(0)
                })
                .await
                .map_err(|e| format!("embedded EPMD: {e}"))?;
                lab.epmd_port = epmd.port();
                let backing = SocketAddr::from((Ipv4Addr::LOCALHOST, epmd.port()));
                if network == Network::Chaos {
                    let chaos = ChaosEpmd::start(backing).await?;
                    lab.epmd_port = chaos.port();
                    lab.chaos = Some(chaos);
                }
                lab._epmd = Some(epmd);
                placements.push(Placement {
                    netns: None,
                    host: "localhost".into(),
                    epmd_port: lab.epmd_port,
                    epmd_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, lab.epmd_port)),
                });
            }
            Network::Namespaces => {
                if kind != Kind::Erl {
                    return Err("the partition scenario runs real erl nodes only".into());
                }
                let ns = Netns::create(groups, NETNS_EPMD_PORT).await?;
                lab.epmd_port = NETNS_EPMD_PORT;
                lab.host = ns.root_addr().to_string();
                // Partitions are noticed within a few seconds.
                lab.ticktime = Duration::from_secs(4);
                for g in 0..groups {
                    placements.push(Placement {
                        netns: Some(ns.name(g).to_owned()),
                        host: ns.addr(g).to_string(),
                        epmd_port: NETNS_EPMD_PORT,
                        epmd_addr: SocketAddr::from((ns.addr(g), NETNS_EPMD_PORT)),
                    });
                }
                lab.netns = Some(ns);
            }
        }
        if kind == Kind::Erl {
            let checker = lab.client_node("checker").await?;
            let mut extra = vec![
                "-kernel".to_owned(),
                "net_ticktime".to_owned(),
                lab.ticktime.as_secs().to_string(),
            ];
            if network == Network::Namespaces {
                // A connection attempt across the partition gives up after 2 s.
                extra.extend(["-kernel", "net_setuptime", "2"].map(str::to_owned));
            }
            let place_of: fn(usize, usize) -> usize = if network == Network::Namespaces {
                |i, n| usize::from(i >= n.div_ceil(2))
            } else {
                |_, _| 0
            };
            lab.pool = Some(ErlPool::new(
                placements,
                place_of,
                lab.cookie_text.clone(),
                checker,
                extra,
                &lab.tag,
            )?);
        }
        Ok(lab)
    }

    /// A client-only hidden node (an agent's, or the checker).
    pub async fn client_node(&self, prefix: &str) -> Result<Node, String> {
        let name: NodeName = format!("{prefix}_{}@{}", self.tag, self.host)
            .parse()
            .map_err(|e| format!("{e}"))?;
        Node::builder(name, self.cookie.clone())
            .epmd_port(self.epmd_port)
            .net_ticktime(self.ticktime)
            .start()
            .await
            .map_err(|e| format!("cannot start {prefix}: {e}"))
    }

    /// A Rust-native node with its own listener, registered in the lab's EPMD.
    pub async fn native_node(&self, name: &NodeName) -> Result<Node, String> {
        Node::builder(name.clone(), self.cookie.clone())
            .epmd_port(self.epmd_port)
            .net_ticktime(self.ticktime)
            .listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .start()
            .await
            .map_err(|e| format!("cannot start {name}: {e}"))
    }
}

/// The backend of one trial: a fresh in-memory registry, or a fresh cluster name on etcd.
#[derive(Clone)]
pub enum TrialBackend {
    /// In-memory, shared by every in-process agent (and thread victims).
    Memory(MemoryBackend),
    /// etcd: each agent gets a client of its own.
    Etcd(Box<EtcdConfig>),
}

impl TrialBackend {
    /// A fresh backend for one trial.
    pub fn new(
        etcd: Option<&str>,
        cluster: &str,
        node_ttl: Duration,
        lock_ttl: Duration,
    ) -> TrialBackend {
        match etcd {
            None => TrialBackend::Memory(MemoryBackend::new()),
            Some(endpoint) => TrialBackend::Etcd(Box::new(EtcdConfig {
                endpoints: vec![endpoint.to_owned()],
                cluster_name: cluster.to_owned(),
                node_ttl,
                lock_ttl,
                lock_wait: Duration::from_secs(60),
                timeout: Duration::from_secs(2),
                ..EtcdConfig::default()
            })),
        }
    }

    /// A backend for one agent (call inside the runtime the agent runs in).
    pub fn for_agent(&self) -> Result<Arc<dyn Backend>, String> {
        Ok(match self {
            TrialBackend::Memory(m) => Arc::new(m.clone()),
            TrialBackend::Etcd(c) => {
                Arc::new(EtcdBackend::new((**c).clone()).map_err(|e| e.to_string())?)
            }
        })
    }

    /// Whether the startup lock is free on the backend's side (`None`: cannot tell).
    pub async fn lock_free(&self) -> Option<bool> {
        match self {
            TrialBackend::Memory(m) => Some(m.lock_holder().is_none()),
            TrialBackend::Etcd(c) => etcd_keys(&c.endpoints[0], &format!("{}/", c.lock_name()))
                .await
                .map(|k| k.is_empty()),
        }
    }

    /// Waits until the lock is free, up to `within`. Returns whether it is.
    pub async fn wait_lock_free(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.lock_free().await == Some(true) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The registered nodes (`Err` while the backend is down).
    pub async fn registered(&self) -> Result<Vec<NodeName>, String> {
        let b = self.for_agent()?;
        b.list_nodes()
            .await
            .map(|v| v.into_iter().map(|r| r.node).collect())
            .map_err(|e| e.to_string())
    }

    /// Takes the backend down (etcd: killed; memory: a simulated outage).
    pub async fn down(&self, etcd: Option<&mut Etcd>) -> Result<(), String> {
        match self {
            TrialBackend::Memory(m) => {
                m.set_available(false);
                Ok(())
            }
            TrialBackend::Etcd(_) => match etcd {
                Some(e) => {
                    e.stop().await;
                    Ok(())
                }
                None => Err(
                    "this scenario stops etcd: let the runner start its own (no --etcd-endpoint)"
                        .into(),
                ),
            },
        }
    }

    /// Brings it back.
    pub async fn up(&self, etcd: Option<&mut Etcd>) -> Result<(), String> {
        match self {
            TrialBackend::Memory(m) => {
                m.set_available(true);
                Ok(())
            }
            TrialBackend::Etcd(_) => match etcd {
                Some(e) => e.restart().await,
                None => Err("no etcd to restart".into()),
            },
        }
    }
}
