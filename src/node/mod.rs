//! The local node: a Rust process that takes part in Erlang distribution.
//!
//! A [`Node`] has a name, a cookie and a creation, and optionally a listener registered
//! in EPMD so that Erlang nodes can connect to it. It keeps one connection per peer
//! (dialled on demand with [`Node::connect`], or accepted), handles simultaneous
//! connects the way `net_kernel` does, answers `net_adm:ping/1`, delivers messages to
//! [`Mailbox`]es, and runs remote calls ([`Node::call`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use autocluster::{Cookie, Node, NodeName, term::Term};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::builder("rust@localhost".parse()?, Cookie::new("SECRET")?)
//!     .start()
//!     .await?;
//! let peer: NodeName = "rabbit@localhost".parse()?;
//! let answer = node.call(&peer, "erlang", "node", vec![], Duration::from_secs(5)).await?;
//! assert_eq!(answer, Term::atom("rabbit@localhost"));
//! # Ok(()) }
//! ```

mod accept;
mod builder;
mod builtin;
mod calls;
mod channel;
mod connection;
mod dial;
mod dispatch;
mod error;
mod linger;
mod mailbox;
mod peers;
mod process;
mod table;
mod tasks;
mod transport;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast};

pub use builder::{NameInUse, NodeBuilder, NodeConfig, RpcMethod};
pub use connection::{DisconnectReason, Overload};
pub use error::{ClientStartError, ConnectError, RegisterError, SendError, StartError, TlsError};
pub use mailbox::Mailbox;

pub use process::{Envelope, GenCall};
pub use table::MAX_MONITORS_AND_LINKS_PER_PEER;

use crate::epmd::{EpmdClient, EpmdRegistration, NodeEntry};
use crate::handshake::DistFlags;
use crate::listener::ConnectionLimiter;
use crate::term::{Atom, Pid, Term};
use crate::{Cookie, NodeName};
pub(crate) use calls::{Kind as CallKind, Outcome as CallOutcome, deadline_after};
pub(crate) use channel::Channel;
use connection::{ConnHandle, Timing};
use process::Processes;

/// A live connection, as [`Node::connection_info`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The peer.
    pub peer: NodeName,
    /// The peer's creation (its incarnation).
    pub peer_creation: u32,
    /// The distribution flags in use.
    pub flags: DistFlags,
    /// Whether the connection is hidden.
    pub hidden: bool,
    /// Whether this node dialled it.
    pub initiated_locally: bool,
    /// A number identifying this connection among all this node has had.
    pub id: u64,
}

/// Counters of the connections this node dialled, as [`Node::dial_stats`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DialStats {
    /// Dials started (one per connection attempt, EPMD lookup included).
    pub dials: u64,
    /// Dials that ended with a connection.
    pub connected: u64,
    /// EPMD lookups made (`PORT_PLEASE2`).
    pub epmd_lookups: u64,
    /// Dials that took the peer's port from the port cache instead of EPMD.
    pub port_cache_hits: u64,
    /// Cached ports dropped because dialling them failed.
    pub port_cache_invalidations: u64,
    /// Handshakes in which the peer answered `alive` (it still held an older connection
    /// from this node, which it then replaced).
    pub alive_answers: u64,
}

#[derive(Default)]
struct DialCounters {
    dials: AtomicU64,
    connected: AtomicU64,
    epmd_lookups: AtomicU64,
    port_cache_hits: AtomicU64,
    port_cache_invalidations: AtomicU64,
    alive_answers: AtomicU64,
}

impl DialCounters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> DialStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DialStats {
            dials: g(&self.dials),
            connected: g(&self.connected),
            epmd_lookups: g(&self.epmd_lookups),
            port_cache_hits: g(&self.port_cache_hits),
            port_cache_invalidations: g(&self.port_cache_invalidations),
            alive_answers: g(&self.alive_answers),
        }
    }
}

/// A peer connecting or disconnecting, as `net_kernel:monitor_nodes/1` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A connection to `node` is up.
    Up {
        /// The peer.
        node: NodeName,
        /// Whether the connection is hidden.
        hidden: bool,
    },
    /// The connection to `node` is down.
    Down {
        /// The peer.
        node: NodeName,
        /// Why.
        reason: DisconnectReason,
    },
}

/// A cheap, cloneable handle on a local Erlang distribution node.
///
/// The node stops when [`Node::shutdown`] is called or the last handle is dropped.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.inner.name)
            .field("creation", &self.inner.procs.creation)
            .field("listen", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

/// A map of the node's own: its keys are names this node dials or peers that passed the
/// handshake, never what an unauthenticated peer chooses, so a fast hasher is safe.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Default)]
struct PeerSlot {
    conn: Option<Arc<ConnHandle>>,
    dialing: bool,
    /// Connections to the peer that this node closed and that are still waiting for the
    /// peer to close its side.
    closing: u32,
}

pub(crate) struct NodeInner {
    name: NodeName,
    cfg: NodeConfig,
    pub(crate) procs: Processes,
    peers: std::sync::Mutex<FastMap<NodeName, PeerSlot>>,
    peers_changed: Notify,
    dial_locks: std::sync::Mutex<FastMap<NodeName, Arc<tokio::sync::Mutex<()>>>>,
    events: broadcast::Sender<NodeEvent>,
    pub(crate) calls: calls::Calls,
    port_cache: std::sync::Mutex<FastMap<NodeName, SocketAddr>>,
    /// Resolved peer hosts, kept [`HOST_CACHE_TTL`].
    host_cache: std::sync::Mutex<FastMap<String, (IpAddr, tokio::time::Instant)>>,
    dial_counters: DialCounters,
    next_conn_id: AtomicU64,
    local_addr: Option<SocketAddr>,
    registration: std::sync::Mutex<Option<EpmdRegistration>>,
    limiter: Option<ConnectionLimiter>,
    /// Plain TCP or TLS.
    security: transport::Security,
    /// The stop signal, and the count of the node's tasks that `Node::shutdown` awaits.
    tasks: Arc<tasks::Tasks>,
    /// Bounds the graceful closes of this node's connections.
    linger: Arc<linger::Linger>,
}

impl Node {
    /// A builder with the defaults: hidden, client-only, `net_ticktime` 60 s.
    pub fn builder(name: NodeName, cookie: Cookie) -> NodeBuilder {
        NodeBuilder {
            cfg: NodeConfig::defaults(name, cookie),
        }
    }

    /// Starts a node from a configuration.
    pub async fn start(cfg: NodeConfig) -> Result<Node, StartError> {
        if cfg.net_ticktime < Duration::from_millis(400) {
            return Err(StartError::Config(
                "net_ticktime must be at least 400 ms".into(),
            ));
        }
        if cfg.cookie.is_weak() {
            tracing::warn!(
                node = %cfg.name,
                cookie_len = cfg.cookie.len(),
                "the cookie is shorter than {} characters: whoever observes one handshake \
                 can brute-force it offline, and the cookie gives full control of every node; \
                 use a long random cookie (Cookie::generate) and TLS distribution",
                crate::cookie::WEAK_COOKIE_LEN
            );
        }
        let security = transport::Security::new(&cfg)?;
        let mut listener = None;
        let mut registration = None;
        let mut local_addr = None;
        let mut creation = cfg.creation.unwrap_or_else(random_creation);
        if let Some(addr) = cfg.listen {
            let l = crate::listener::bind(addr, 4096)
                .and_then(TcpListener::from_std)
                .map_err(|source| StartError::Bind { addr, source })?;
            let bound = l
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?;
            local_addr = Some(bound);
            if cfg.register_in_epmd {
                let epmd_ip = if bound.is_ipv6() {
                    IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
                } else {
                    IpAddr::from(std::net::Ipv4Addr::LOCALHOST)
                };
                let client = EpmdClient::new(SocketAddr::new(epmd_ip, cfg.epmd_port))
                    .with_timeout(cfg.epmd_timeout);
                let mut entry = NodeEntry::new(cfg.name.alive(), bound.port());
                if bound.is_ipv6() {
                    // EPMD's "protocol" field: 0 = IPv4 TCP; OTP registers inet6_tcp the same.
                    entry.protocol = 0;
                }
                if cfg.hidden {
                    entry = entry.hidden();
                }
                let reg = client
                    .register(entry)
                    .await
                    .map_err(|source| StartError::Epmd {
                        node: cfg.name.clone(),
                        source,
                    })?;
                creation = reg.creation();
                registration = Some(reg);
            }
            listener = Some(l);
        }
        let (events, _) = broadcast::channel(1024);
        let cfg_limits = cfg.limits.clone();
        let tasks = Arc::new(tasks::Tasks::default());
        let inner = Arc::new(NodeInner {
            name: cfg.name.clone(),
            procs: Processes::new(
                Atom::from(cfg.name.as_str()),
                creation,
                cfg.mailbox_capacity,
            ),
            cfg,
            peers: std::sync::Mutex::new(FastMap::default()),
            peers_changed: Notify::new(),
            dial_locks: std::sync::Mutex::new(FastMap::default()),
            events,
            calls: calls::Calls::default(),
            port_cache: std::sync::Mutex::new(FastMap::default()),
            host_cache: std::sync::Mutex::new(FastMap::default()),
            dial_counters: DialCounters::default(),
            next_conn_id: AtomicU64::new(1),
            local_addr,
            registration: std::sync::Mutex::new(registration),
            limiter: listener
                .as_ref()
                .map(|_| ConnectionLimiter::new(cfg_limits)),
            security,
            linger: Arc::new(linger::Linger::counted_in(tasks.clone())),
            tasks,
        });
        if let (Some(l), Some(limiter)) = (listener, inner.limiter.clone()) {
            let tracked = inner.tasks.track();
            tokio::spawn(accept::accept_loop(
                Arc::downgrade(&inner),
                l,
                limiter,
                tracked,
            ));
        }
        let tls = inner.security.is_tls();
        tracing::info!(node = %inner.name, creation, listen = ?inner.local_addr, hidden = inner.cfg.hidden, tls, "node started");
        Ok(Node { inner })
    }

    /// The node's name.
    pub fn name(&self) -> &NodeName {
        &self.inner.name
    }

    /// The node's creation (from EPMD when registered).
    pub fn creation(&self) -> u32 {
        self.inner.procs.creation
    }

    /// The address the distribution listener is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.cfg
    }

    /// Counters of the distribution listener (pending and established connections,
    /// evictions, timeouts); `None` for a client-only node.
    pub fn listener_stats(&self) -> Option<crate::listener::ListenerStats> {
        self.inner.limiter.as_ref().map(ConnectionLimiter::stats)
    }

    /// Whether the EPMD registration is still held (always false when not registered).
    pub fn is_registered(&self) -> bool {
        self.inner
            .registration
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(EpmdRegistration::is_active)
    }

    /// Connects to `peer` (or returns the existing connection), looking its port up in
    /// EPMD on the peer's host.
    pub async fn connect(&self, peer: &NodeName) -> Result<(), ConnectError> {
        self.inner.connect(peer, None).await.map(|_| ())
    }

    /// Connects to `peer` at a known address, skipping EPMD (for nodes started with
    /// `-start_epmd false` or `-erl_epmd_port`).
    pub async fn connect_to(&self, peer: &NodeName, addr: SocketAddr) -> Result<(), ConnectError> {
        self.inner.connect(peer, Some(addr)).await.map(|_| ())
    }

    /// Counters of the connections this node dialled: dials, EPMD lookups, port cache
    /// hits and invalidations, `alive` answers.
    pub fn dial_stats(&self) -> DialStats {
        self.inner.dial_counters.snapshot()
    }

    /// Whether a connection to `peer` is up.
    pub fn is_connected(&self, peer: &NodeName) -> bool {
        self.inner.connection(peer).is_some()
    }

    /// The nodes this node is connected to, hidden ones included.
    pub fn connected_nodes(&self) -> Vec<NodeName> {
        let peers = self.inner.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<NodeName> = peers
            .iter()
            .filter(|(_, s)| s.conn.as_ref().is_some_and(|c| c.is_open()))
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// What was agreed with `peer` when the connection was set up, if it is up.
    pub fn connection_info(&self, peer: &NodeName) -> Option<ConnectionInfo> {
        self.inner.connection(peer).map(|c| ConnectionInfo {
            peer: c.peer.clone(),
            peer_creation: c.peer_creation,
            flags: c.flags,
            hidden: c.is_hidden(),
            initiated_locally: c.initiated_locally,
            id: c.id,
        })
    }

    /// Closes the connection to `peer`, if any. Returns whether there was one.
    pub fn disconnect(&self, peer: &NodeName) -> bool {
        match self.inner.connection(peer) {
            Some(c) => {
                c.close(DisconnectReason::Local);
                true
            }
            None => false,
        }
    }

    /// Subscribes to peers coming up and going down.
    pub fn monitor_nodes(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    /// Creates an anonymous mailbox with its own pid.
    pub fn mailbox(&self) -> Mailbox {
        let (pid, rx) = self
            .inner
            .procs
            .spawn(None)
            .unwrap_or_else(|_| unreachable!("anonymous spawns cannot clash"));
        Mailbox {
            node: self.clone(),
            pid,
            rx,
        }
    }

    /// Creates a mailbox registered under `name`, so that Erlang can send to
    /// `{Name, 'this@node'}`.
    pub fn register(&self, name: &str) -> Result<Mailbox, RegisterError> {
        let (pid, rx) = self.inner.procs.spawn(Some(Atom::from(name)))?;
        Ok(Mailbox {
            node: self.clone(),
            pid,
            rx,
        })
    }

    /// Sends `message` to a pid (local or remote), connecting if needed.
    pub async fn send(&self, to: &Pid, message: Term) -> Result<(), SendError> {
        self.inner.send_from(None, to, message).await
    }

    /// Sends `message` to the process registered as `name` on `node`.
    pub async fn send_named(
        &self,
        node: &NodeName,
        name: &str,
        message: Term,
    ) -> Result<(), SendError> {
        let from = self.inner.procs.pid(process::RPC_ID);
        self.inner.send_named_from(&from, node, name, message).await
    }

    /// Stops the node: closes every connection and the listener, deregisters from EPMD,
    /// and returns once every task of the node has ended (connections, their graceful
    /// closes included, which wait at most 750 ms for the peer; incoming handshakes; the
    /// accept loop) and EPMD has forgotten the node. Should that take over 1.75 s, it
    /// logs a warning and returns. Calls waiting on a connection fail with
    /// [`RpcError::ConnectionLost`](crate::rpc::RpcError::ConnectionLost).
    ///
    /// Call it before a program exits, so that the peers see the connections closed
    /// rather than reset. Dropping the last handle stops the node too, without waiting.
    ///
    /// ```no_run
    /// # use autocluster::{Cookie, Node};
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let node = Node::builder("tool@localhost".parse()?, Cookie::from_default_file()?)
    ///     .start()
    ///     .await?;
    /// // ...
    /// node.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(&self) {
        let registration = self.inner.shutdown();
        let tasks = &self.inner.tasks;
        let deregistered = async {
            if let Some(registration) = registration {
                registration.deregister().await;
            }
        };
        // The tasks end within the linger bound and EPMD answers at once; should either
        // not, say so rather than wait on.
        let limit = linger::LINGER + Duration::from_secs(1);
        let both = async { tokio::join!(tasks.all_ended(), deregistered) };
        if tokio::time::timeout(limit, both).await.is_err() {
            tracing::warn!(node = %self.inner.name, running = tasks.live(), "node stopped; some of its tasks, or the EPMD deregistration, did not end within {limit:?}");
        }
    }
}

/// How long a resolved peer host is remembered (a failed dial forgets it at once).
const HOST_CACHE_TTL: Duration = Duration::from_secs(5);

fn random_creation() -> u32 {
    use rand::RngExt as _;
    // 0..=3 are reserved by OTP for "no creation"/old formats.
    rand::rng().random_range(4..=u32::MAX)
}

// ---------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------

impl NodeInner {
    fn is_stopped(&self) -> bool {
        self.tasks.is_stopped()
    }

    fn our_flags(&self) -> DistFlags {
        if self.cfg.hidden {
            DistFlags::OURS
        } else {
            DistFlags::OURS | DistFlags::PUBLISHED
        }
    }

    fn timing(&self) -> Timing {
        Timing {
            net_ticktime: self.cfg.net_ticktime,
            max_frame: self.cfg.max_frame,
        }
    }

    /// The live connection to `peer`, if any.
    pub(crate) fn connection(&self, peer: &NodeName) -> Option<Arc<ConnHandle>> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.get(peer)?.conn.clone().filter(|c| c.is_open())
    }
}
