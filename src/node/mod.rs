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

mod builtin;
mod connection;
mod error;
mod linger;
mod process;
mod tasks;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, broadcast, mpsc};

pub use connection::{DisconnectReason, Overload};
pub use error::{ClientStartError, ConnectError, RegisterError, SendError, StartError, TlsError};
pub use process::{Envelope, GenCall, MAX_MONITORS_AND_LINKS_PER_PEER};

use crate::dist::control::{Control, DistMessage, ProcessRef};
use crate::epmd::{self, EpmdClient, EpmdRegistration, NodeEntry};
use crate::handshake::{
    self, AcceptorConfig, DistFlags, HandshakeError, InitiatorConfig, LengthPrefix, LocalName,
    PeerHello, StatusDecision,
};
use crate::listener::{ConnectionLimiter, ConnectionPermit, ListenerLimits};
use crate::term::{Atom, DecodeLimits, Pid, Reference, Term};
use crate::{Cookie, NodeName};
pub(crate) use connection::ConnHandle as ConnHandleRef;
use connection::{ConnHandle, Replies, Timing};
use process::{Delivery, Processes, Watched};
pub(crate) use process::{IO_ID as IO_PROCESS_ID, RPC_ID as RPC_PROCESS_ID};

/// How remote calls are made. See [`crate::rpc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RpcMethod {
    /// `erpc` when the peer supports spawn requests (OTP 23+), `rex` otherwise.
    #[default]
    Auto,
    /// Always `erpc` (a spawn request of `erpc:execute_call/4`).
    Erpc,
    /// Always the `rex` server (`{call, M, F, A, GroupLeader}`).
    Rex,
}

/// What a node answers when a peer it dials reports a live connection from a node of the
/// same name (the handshake status `alive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NameInUse {
    /// The peer's connection is left over from an earlier run of this node: replace it,
    /// as OTP does (unless this node itself holds a live connection to the peer). The
    /// default.
    #[default]
    Replace,
    /// Other processes may use this name at the same time (a pool of names shared by
    /// the runs of a tool, see [`NodeBuilder::start_client`]): leave their connection
    /// alone. The dial fails with [`HandshakeError::AlreadyConnected`].
    GiveWay,
}

/// Everything a [`Node`] is configured with. Build it with [`Node::builder`].
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node's name.
    pub name: NodeName,
    /// The shared cookie.
    pub cookie: Cookie,
    /// Hidden (the default) or published: a hidden node does not appear in `nodes()` on
    /// its peers and takes no part in `global`.
    pub hidden: bool,
    /// Liveness timeout of connections (OTP's `net_ticktime`, default 60 s): a tick is
    /// sent after a quarter of it without traffic, and a peer silent for all of it is
    /// disconnected.
    pub net_ticktime: Duration,
    /// Limit of each handshake step (OTP's `net_setuptime`, default 7 s).
    pub handshake_timeout: Duration,
    /// Limit of the TCP connect to a peer (default 7 s).
    pub connect_timeout: Duration,
    /// Largest distribution frame accepted or sent (default 128 MiB).
    pub max_frame: usize,
    /// EPMD's port on every host (default `ERL_EPMD_PORT` or 4369).
    pub epmd_port: u16,
    /// Limit of each EPMD request (default 5 s).
    pub epmd_timeout: Duration,
    /// Where to accept distribution connections; `None` for a client-only node.
    pub listen: Option<SocketAddr>,
    /// Whether to register the listener in EPMD (default true).
    pub register_in_epmd: bool,
    /// Limits of the distribution listener.
    pub limits: ListenerLimits,
    /// Remember peers' distribution ports after an EPMD lookup, dropping an entry when
    /// connecting to it fails (default true).
    pub port_cache: bool,
    /// Messages a mailbox holds before further ones are dropped (default 4096).
    pub mailbox_capacity: usize,
    /// The creation to use when not registered in EPMD (default: random).
    pub creation: Option<u32>,
    /// Limits on terms decoded from peers.
    pub decode_limits: DecodeLimits,
    /// How [`Node::call`] reaches the peer.
    pub rpc_method: RpcMethod,
    /// Fixed addresses of peer hosts, used instead of the resolver (a private
    /// `/etc/hosts` for this node): see [`NodeBuilder::host_address`].
    pub hosts: HashMap<String, IpAddr>,
    /// What to answer a peer that reports a live connection from this node's name
    /// (default [`NameInUse::Replace`]).
    pub name_in_use: NameInUse,
    /// TLS distribution (`-proto_dist inet_tls`): when set, every distribution
    /// connection, dialled or accepted, runs TLS first. `None` (the default) is plain TCP.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub tls: Option<crate::tls::TlsConfig>,
}

/// Builds and starts a [`Node`].
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    cfg: NodeConfig,
}

impl NodeBuilder {
    /// Publishes the node (peers list it in `nodes()`); nodes are hidden by default.
    pub fn published(mut self) -> Self {
        self.cfg.hidden = false;
        self
    }

    /// Sets whether the node is hidden.
    pub fn hidden(mut self, hidden: bool) -> Self {
        self.cfg.hidden = hidden;
        self
    }

    /// Sets `net_ticktime`.
    pub fn net_ticktime(mut self, t: Duration) -> Self {
        self.cfg.net_ticktime = t;
        self
    }

    /// Sets the handshake step timeout (`net_setuptime`).
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.cfg.handshake_timeout = t;
        self
    }

    /// Sets the TCP connect timeout.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.cfg.connect_timeout = t;
        self
    }

    /// Sets the maximum frame size.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.cfg.max_frame = bytes;
        self
    }

    /// Sets EPMD's port.
    pub fn epmd_port(mut self, port: u16) -> Self {
        self.cfg.epmd_port = port;
        self
    }

    /// Listens for distribution connections on `addr` (port 0 picks a free port) and
    /// registers the port in EPMD.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.cfg.listen = Some(addr);
        self
    }

    /// Whether a listening node registers in EPMD (default true). Without it, peers
    /// must be told the port (EPMD-less deployments).
    pub fn register_in_epmd(mut self, yes: bool) -> Self {
        self.cfg.register_in_epmd = yes;
        self
    }

    /// Sets the listener limits.
    pub fn limits(mut self, limits: ListenerLimits) -> Self {
        self.cfg.limits = limits;
        self
    }

    /// Turns the EPMD port cache on or off.
    pub fn port_cache(mut self, on: bool) -> Self {
        self.cfg.port_cache = on;
        self
    }

    /// Sets the creation used when not registered in EPMD.
    pub fn creation(mut self, creation: u32) -> Self {
        self.cfg.creation = Some(creation);
        self
    }

    /// Sets how remote calls are made.
    pub fn rpc_method(mut self, method: RpcMethod) -> Self {
        self.cfg.rpc_method = method;
        self
    }

    /// Gives the address of a peer host, so that connecting to nodes `…@host` (and to
    /// EPMD there) never asks the resolver: like a line of `/etc/hosts` for this node
    /// only. For tools that know their peers' addresses already (from Kubernetes
    /// endpoints or a static list, before DNS has caught up) and for one-shot commands
    /// that resolve before their runtime starts (asynchronous resolution costs a thread).
    ///
    /// ```
    /// use autocluster::{Cookie, Node};
    ///
    /// let builder = Node::builder("tool@localhost".parse()?, Cookie::new("secret")?)
    ///     .host_address("rabbit-0.rabbit.default.svc", "10.1.2.3".parse()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn host_address(mut self, host: impl Into<String>, ip: IpAddr) -> Self {
        self.cfg.hosts.insert(host.into(), ip);
        self
    }

    /// Uses TLS distribution, as an OTP node started with `-proto_dist inet_tls`: every
    /// connection this node dials or accepts runs a TLS handshake first, then the
    /// distribution handshake inside it. EPMD stays plain TCP. The certificates and keys
    /// are read, and the rustls configurations built, once by [`NodeBuilder::start`].
    /// See [`crate::tls`].
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(mut self, config: crate::tls::TlsConfig) -> Self {
        self.cfg.tls = Some(config);
        self
    }

    /// Sets what the node answers a peer that reports a live connection from a node of
    /// the same name (see [`NameInUse`]; default [`NameInUse::Replace`]).
    pub fn name_in_use(mut self, answer: NameInUse) -> Self {
        self.cfg.name_in_use = answer;
        self
    }

    /// Sets the mailbox capacity.
    pub fn mailbox_capacity(mut self, n: usize) -> Self {
        self.cfg.mailbox_capacity = n.max(1);
        self
    }

    /// The configuration as built so far.
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// Starts the node: binds and registers the listener when one is configured.
    pub async fn start(self) -> Result<Node, StartError> {
        Node::start(self.cfg).await
    }

    /// Starts a client node for a short-lived process (a command-line tool, a health
    /// probe) and connects it to `peer`, under the first name of a bounded pool that
    /// `peer` has no live connection from: the builder's name `tool@host`, then
    /// `tool_2@host`, … `tool_{pool}@host`.
    ///
    /// An Erlang node makes an atom of every node name that connects to it, before it
    /// checks the cookie, and never frees atoms. A tool that runs every few seconds under
    /// a fresh name (`tool_<pid>@host`) therefore grows the node's atom table by one per
    /// run, until the table (1,048,576 atoms by default) is full and the node crashes: a
    /// probe every 10 seconds gets there in about four months. `erl_call` avoids that with
    /// one fixed name (`c17`) and lets two runs at once cut each other's connection. A
    /// pool does neither: the node dials with [`NameInUse::GiveWay`], a name another run
    /// holds makes the peer answer `alive` and the next name is tried, and the peer never
    /// sees more than `pool` names from the tool. Connections the node dials later (to
    /// other peers) use the name found here.
    ///
    /// ```no_run
    /// use autocluster::{Cookie, Node};
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let peer = "rabbit@db1".parse()?;
    /// let node = Node::builder("healthcheck@db1".parse()?, Cookie::from_default_file()?)
    ///     .start_client(&peer, 16)
    ///     .await?;
    /// println!("connected as {}", node.name());
    /// # Ok(()) }
    /// ```
    pub async fn start_client(self, peer: &NodeName, pool: u16) -> Result<Node, ClientStartError> {
        let first = self.cfg.name.clone();
        let mut cfg = self.cfg;
        cfg.name_in_use = NameInUse::GiveWay;
        for slot in 1..=pool.max(1) {
            if slot > 1 {
                cfg.name = NodeName::from_parts(&format!("{}_{slot}", first.alive()), first.host())
                    .map_err(|e| ClientStartError::Start(StartError::Config(e.to_string())))?;
            }
            let node = Node::start(cfg.clone()).await?;
            match node.connect(peer).await {
                Ok(()) => return Ok(node),
                Err(ConnectError::Handshake(HandshakeError::AlreadyConnected { .. })) => {
                    tracing::debug!(name = %cfg.name, %peer, "name in use by another client; trying the next one");
                    node.shutdown().await;
                }
                Err(e) => {
                    node.shutdown().await;
                    return Err(e.into());
                }
            }
        }
        Err(ClientStartError::PoolExhausted {
            peer: peer.clone(),
            first,
            pool: pool.max(1),
        })
    }
}

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
    peers: std::sync::Mutex<HashMap<NodeName, PeerSlot>>,
    peers_changed: Notify,
    dial_locks: std::sync::Mutex<HashMap<NodeName, Arc<tokio::sync::Mutex<()>>>>,
    events: broadcast::Sender<NodeEvent>,
    pub(crate) calls: crate::rpc::PendingCalls,
    port_cache: std::sync::Mutex<HashMap<NodeName, SocketAddr>>,
    /// Resolved peer hosts, kept [`HOST_CACHE_TTL`].
    host_cache: std::sync::Mutex<HashMap<String, (IpAddr, tokio::time::Instant)>>,
    dial_counters: DialCounters,
    next_conn_id: AtomicU64,
    local_addr: Option<SocketAddr>,
    registration: std::sync::Mutex<Option<EpmdRegistration>>,
    limiter: Option<ConnectionLimiter>,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsContext>,
    /// The stop signal, and the count of the node's tasks that `Node::shutdown` awaits.
    tasks: Arc<tasks::Tasks>,
    /// Bounds the graceful closes of this node's connections.
    linger: Arc<linger::Linger>,
}

impl Node {
    /// A builder with the defaults: hidden, client-only, `net_ticktime` 60 s.
    pub fn builder(name: NodeName, cookie: Cookie) -> NodeBuilder {
        NodeBuilder {
            cfg: NodeConfig {
                name,
                cookie,
                hidden: true,
                net_ticktime: Duration::from_secs(60),
                handshake_timeout: handshake::DEFAULT_STEP_TIMEOUT,
                connect_timeout: Duration::from_secs(7),
                max_frame: crate::dist::frame::DEFAULT_MAX_FRAME,
                epmd_port: epmd::port_from_env(),
                epmd_timeout: Duration::from_secs(5),
                listen: None,
                register_in_epmd: true,
                limits: ListenerLimits::default(),
                port_cache: true,
                mailbox_capacity: 4096,
                creation: None,
                decode_limits: DecodeLimits::default(),
                rpc_method: RpcMethod::Auto,
                hosts: HashMap::new(),
                name_in_use: NameInUse::Replace,
                #[cfg(feature = "tls")]
                tls: None,
            },
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
        #[cfg(feature = "tls")]
        let tls = match &cfg.tls {
            Some(t) => {
                let ctx = crate::tls::TlsContext::new(t, cfg.listen.is_some())?;
                for warning in t.warnings(cfg.listen.is_some()) {
                    tracing::warn!(node = %cfg.name, "{warning}");
                }
                Some(ctx)
            }
            None => None,
        };
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
            peers: std::sync::Mutex::new(HashMap::new()),
            peers_changed: Notify::new(),
            dial_locks: std::sync::Mutex::new(HashMap::new()),
            events,
            calls: crate::rpc::PendingCalls::default(),
            port_cache: std::sync::Mutex::new(HashMap::new()),
            host_cache: std::sync::Mutex::new(HashMap::new()),
            dial_counters: DialCounters::default(),
            next_conn_id: AtomicU64::new(1),
            local_addr,
            registration: std::sync::Mutex::new(registration),
            limiter: listener
                .as_ref()
                .map(|_| ConnectionLimiter::new(cfg_limits)),
            #[cfg(feature = "tls")]
            tls,
            linger: Arc::new(linger::Linger::counted_in(tasks.clone())),
            tasks,
        });
        if let (Some(l), Some(limiter)) = (listener, inner.limiter.clone()) {
            let tracked = inner.tasks.track();
            tokio::spawn(accept_loop(Arc::downgrade(&inner), l, limiter, tracked));
        }
        #[cfg(feature = "tls")]
        let tls = inner.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let tls = false;
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

    /// Pings `peer` as `net_adm:ping/1` does: connects and asks its `net_kernel`
    /// whether we are authorised. `Ok(())` is `pong`.
    pub async fn ping(
        &self,
        peer: &NodeName,
        timeout: Duration,
    ) -> Result<(), crate::rpc::RpcError> {
        crate::rpc::ping(self, peer, timeout).await
    }

    /// `gen:call({name, peer}, request, timeout)`: sends `{'$gen_call', {From, Ref},
    /// Request}` to the process registered as `name` on `peer` (an Erlang `gen_server`,
    /// or a [`Mailbox`] answering with [`Mailbox::reply`]) and waits for its reply.
    pub async fn gen_call(
        &self,
        peer: &NodeName,
        name: &str,
        request: Term,
        timeout: Duration,
    ) -> Result<Term, crate::rpc::RpcError> {
        crate::rpc::call_registered(self, peer, name, request, timeout).await
    }

    /// Calls `module:function(args)` on `peer` and returns its result.
    ///
    /// Many calls may be in flight on one connection. `timeout` limits the remote
    /// execution; connecting has its own limits. A timeout leaves the connection and
    /// the other calls intact (and kills the remote worker under `erpc`). See
    /// [`crate::rpc`] for how the call is made and what errors mean.
    pub async fn call(
        &self,
        peer: &NodeName,
        module: &str,
        function: &str,
        args: Vec<Term>,
        timeout: Duration,
    ) -> Result<Term, crate::rpc::RpcError> {
        crate::rpc::call(self, peer, module, function, args, timeout).await
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

    pub(crate) fn inner(&self) -> &Arc<NodeInner> {
        &self.inner
    }
}

/// How long a resolved peer host is remembered (a failed dial forgets it at once).
const HOST_CACHE_TTL: Duration = Duration::from_secs(5);

fn random_creation() -> u32 {
    use rand::RngExt as _;
    // 0..=3 are reserved by OTP for "no creation"/old formats.
    rand::rng().random_range(4..=u32::MAX)
}

/// A process of the local node: a pid that Erlang processes can send to, and a queue
/// of what they sent.
///
/// Dropping a mailbox is the process exiting with reason `normal`: remote processes
/// monitoring or linked to it are told.
pub struct Mailbox {
    node: Node,
    pid: Pid,
    rx: mpsc::Receiver<Envelope>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Mailbox {
    /// This mailbox's pid.
    pub fn pid(&self) -> &Pid {
        &self.pid
    }

    /// The next message; `None` once the node has stopped.
    pub async fn recv(&mut self) -> Option<Envelope> {
        self.rx.recv().await
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<Envelope> {
        self.rx.try_recv().ok()
    }

    /// Sends `message` to `to` from this mailbox.
    pub async fn send(&self, to: &Pid, message: Term) -> Result<(), SendError> {
        self.node
            .inner
            .send_from(Some(&self.pid), to, message)
            .await
    }

    /// Sends `message` to the process registered as `name` on `node`.
    pub async fn send_named(
        &self,
        node: &NodeName,
        name: &str,
        message: Term,
    ) -> Result<(), SendError> {
        self.node
            .inner
            .send_named_from(&self.pid, node, name, message)
            .await
    }

    /// Answers an incoming `gen:call` the way `gen:reply/2` does.
    pub async fn reply(&self, call: &GenCall, reply: Term) -> Result<(), SendError> {
        self.node.inner.gen_reply(&self.pid, call, reply).await
    }

    /// Monitors a remote process: when it exits (or the connection drops) this mailbox
    /// receives `{'DOWN', Ref, process, Pid, Reason}`.
    pub async fn monitor(&self, target: &Pid) -> Result<Reference, SendError> {
        self.node.inner.monitor(&self.pid, target).await
    }

    /// Removes a monitor set with [`Mailbox::monitor`].
    pub async fn demonitor(&self, reference: &Reference) -> Result<(), SendError> {
        self.node.inner.demonitor(&self.pid, reference).await
    }

    /// Links to a remote process: when it exits this mailbox receives
    /// `{'EXIT', Pid, Reason}`, and when this mailbox is dropped the process gets an
    /// exit signal with reason `normal`.
    pub async fn link(&self, target: &Pid) -> Result<(), SendError> {
        self.node.inner.link(&self.pid, target).await
    }

    /// The node this mailbox belongs to.
    pub fn node(&self) -> &Node {
        &self.node
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.node
            .inner
            .process_exited(self.pid.id, Term::atom("normal"));
    }
}

// ---------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------

impl NodeInner {
    pub(crate) fn name(&self) -> &NodeName {
        &self.name
    }

    pub(crate) fn config(&self) -> &NodeConfig {
        &self.cfg
    }

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

    fn dial_lock(&self, peer: &NodeName) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.dial_locks.lock().unwrap_or_else(|e| e.into_inner());
        // Forget locks nobody holds, so the map stays as small as the set of peers
        // being dialled.
        if locks.len() > 64 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(peer.clone()).or_default().clone()
    }

    /// Returns the connection to `peer`, dialling it when there is none.
    pub(crate) async fn connect(
        self: &Arc<Self>,
        peer: &NodeName,
        addr: Option<SocketAddr>,
    ) -> Result<Arc<ConnHandle>, ConnectError> {
        if let Some(c) = self.connection(peer) {
            return Ok(c);
        }
        if self.is_stopped() {
            return Err(ConnectError::NodeStopped(self.name.clone()));
        }
        self.name.check_compatible(peer)?;
        let lock = self.dial_lock(peer);
        let _guard = lock.lock().await;
        if let Some(c) = self.connection(peer) {
            return Ok(c);
        }
        self.wait_for_teardown(peer).await;
        self.set_dialing(peer, true);
        let result = self.dial(peer, addr).await;
        self.set_dialing(peer, false);
        match result {
            Ok(c) => Ok(c),
            Err(e @ ConnectError::Handshake(HandshakeError::AlreadyConnected { .. }))
                if self.cfg.name_in_use == NameInUse::GiveWay =>
            {
                // The peer's connection from our name is another process's (or ours,
                // accepted in the meantime): no connection of ours is on its way.
                self.connection(peer).ok_or(e)
            }
            Err(ConnectError::Handshake(
                e @ (HandshakeError::SimultaneousConnect { .. }
                | HandshakeError::AlreadyConnected { .. }),
            )) => {
                // The peer is connecting to us at the same moment and keeps its own
                // attempt, or we already have its connection: wait for it.
                tracing::debug!(%peer, "simultaneous connect: waiting for the peer's connection");
                self.wait_for_connection(peer, self.cfg.handshake_timeout * 2)
                    .await
                    .ok_or(ConnectError::Handshake(e))
            }
            Err(e) => Err(e),
        }
    }

    /// A connection to `peer` that this node closed may still be closing (waiting for
    /// the peer to close its side, see [`linger`]). Dialling before the peer has taken
    /// it down is met with `alive`, which costs a round trip and, on OTP, milliseconds of
    /// teardown: wait for it instead.
    ///
    /// The wait shares the node's linger clock instead of setting a timer of its own: a
    /// close ends with [`Self::closing_finished`] (or, for a connection closed but not
    /// yet handed to its task, [`Self::connection_closed`]) within the linger bound,
    /// and the clock bounds this wait too, should a close never report back.
    async fn wait_for_teardown(&self, peer: &NodeName) {
        if !self.closing(peer) {
            return;
        }
        let torn_down = async {
            loop {
                let changed = self.peers_changed.notified();
                if !self.closing(peer) {
                    return;
                }
                changed.await;
            }
        };
        let _ = self.linger.bound(torn_down).await;
    }

    /// Whether a connection to `peer` is closing, or was closed locally a moment ago
    /// and not yet handed to its task (`Node::disconnect` only signals it).
    fn closing(&self, peer: &NodeName) -> bool {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.get(peer).is_some_and(|s| {
            s.closing > 0
                || s.conn
                    .as_ref()
                    .is_some_and(|c| !c.is_open() && c.reason().is_local())
        })
    }

    async fn wait_for_connection(
        &self,
        peer: &NodeName,
        within: Duration,
    ) -> Option<Arc<ConnHandle>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.peers_changed.notified();
            if let Some(c) = self.connection(peer) {
                return Some(c);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.connection(peer);
            }
        }
    }

    fn set_dialing(&self, peer: &NodeName, dialing: bool) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if dialing {
            peers.entry(peer.clone()).or_default().dialing = true;
        } else if let Some(slot) = peers.get_mut(peer) {
            slot.dialing = false;
            if slot.conn.is_none() && slot.closing == 0 {
                peers.remove(peer);
            }
        }
    }

    async fn resolve(&self, peer: &NodeName) -> Result<IpAddr, ConnectError> {
        if let Some(ip) = peer.host_ip() {
            return Ok(ip);
        }
        if let Some(ip) = self.cfg.hosts.get(peer.host()) {
            return Ok(*ip);
        }
        // Resolving costs a thread hand-off and a dozen system calls (getaddrinfo reads
        // /etc/hosts each time), on every EPMD lookup; OTP's inet_db caches too.
        if let Some(ip) = self.cached_host(peer.host()) {
            return Ok(ip);
        }
        let ip = self.resolve_uncached(peer).await?;
        let mut cache = self.host_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(
            peer.host().to_owned(),
            (ip, tokio::time::Instant::now() + HOST_CACHE_TTL),
        );
        Ok(ip)
    }

    fn cached_host(&self, host: &str) -> Option<IpAddr> {
        let cache = self.host_cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(host)
            .filter(|(_, until)| tokio::time::Instant::now() < *until)
            .map(|(ip, _)| *ip)
    }

    fn forget_host(&self, host: &str) {
        self.host_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(host);
    }

    async fn resolve_uncached(&self, peer: &NodeName) -> Result<IpAddr, ConnectError> {
        let host = peer.host().to_owned();
        let mut addrs = tokio::net::lookup_host((host.as_str(), 0))
            .await
            .map_err(|source| ConnectError::Resolve {
                node: peer.clone(),
                source,
            })?;
        // Prefer IPv4 unless the node itself runs over IPv6.
        let want_v6 = self.local_addr.is_some_and(|a| a.is_ipv6());
        let all: Vec<SocketAddr> = addrs.by_ref().collect();
        all.iter()
            .find(|a| a.is_ipv6() == want_v6)
            .or(all.first())
            .map(|a| a.ip())
            .ok_or_else(|| ConnectError::Resolve {
                node: peer.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            })
    }

    /// The peer's distribution port: from the port cache, else from EPMD. `true` when
    /// it came from the cache.
    async fn lookup(&self, peer: &NodeName) -> Result<(SocketAddr, bool), ConnectError> {
        if self.cfg.port_cache {
            let cache = self.port_cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(addr) = cache.get(peer) {
                DialCounters::bump(&self.dial_counters.port_cache_hits);
                return Ok((*addr, true));
            }
        }
        self.lookup_epmd(peer).await.map(|addr| (addr, false))
    }

    async fn lookup_epmd(&self, peer: &NodeName) -> Result<SocketAddr, ConnectError> {
        let ip = self.resolve(peer).await?;
        DialCounters::bump(&self.dial_counters.epmd_lookups);
        let epmd_addr = SocketAddr::new(ip, self.cfg.epmd_port);
        let client = EpmdClient::new(epmd_addr).with_timeout(self.cfg.epmd_timeout);
        let entry = client.port_please(peer.alive()).await.map_err(|source| {
            ConnectError::EpmdUnreachable {
                node: peer.clone(),
                source,
            }
        })?;
        let Some(entry) = entry else {
            let known = client
                .names()
                .await
                .map(|names| names.into_iter().map(|(n, _)| n).collect())
                .unwrap_or_default();
            return Err(ConnectError::NotRegistered {
                node: peer.clone(),
                epmd: epmd_addr,
                known,
            });
        };
        let addr = SocketAddr::new(ip, entry.port);
        if self.cfg.port_cache {
            let mut cache = self.port_cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() > 100_000 {
                cache.clear();
            }
            cache.insert(peer.clone(), addr);
        }
        Ok(addr)
    }

    fn forget_port(&self, peer: &NodeName) {
        if self.cfg.port_cache
            && self
                .port_cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(peer)
                .is_some()
        {
            DialCounters::bump(&self.dial_counters.port_cache_invalidations);
        }
    }

    async fn dial(
        self: &Arc<Self>,
        peer: &NodeName,
        addr: Option<SocketAddr>,
    ) -> Result<Arc<ConnHandle>, ConnectError> {
        DialCounters::bump(&self.dial_counters.dials);
        let explicit = addr.is_some();
        let (addr, cached) = match addr {
            Some(a) => (a, false),
            None => self.lookup(peer).await?,
        };
        let mut result = self.dial_addr(peer, addr).await;
        if cached && matches!(result, Err(ConnectError::Refused { .. })) {
            // The cached port is stale (the peer restarted on another port): forget it
            // and ask EPMD again, once.
            self.forget_port(peer);
            let addr = self.lookup_epmd(peer).await?;
            result = self.dial_addr(peer, addr).await;
        }
        match &result {
            Ok(_) => DialCounters::bump(&self.dial_counters.connected),
            Err(_) if !explicit => {
                self.forget_port(peer);
                self.forget_host(peer.host());
            }
            Err(_) => {}
        }
        result
    }

    async fn dial_addr(
        self: &Arc<Self>,
        peer: &NodeName,
        addr: SocketAddr,
    ) -> Result<Arc<ConnHandle>, ConnectError> {
        let connect =
            tokio::time::timeout(self.cfg.connect_timeout, TcpStream::connect(addr)).await;
        let mut stream = match connect {
            Err(_) => {
                return Err(ConnectError::ConnectTimeout {
                    node: peer.clone(),
                    addr,
                    after: self.cfg.connect_timeout,
                });
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(ConnectError::Refused {
                    node: peer.clone(),
                    addr,
                });
            }
            Ok(Err(source)) => {
                return Err(ConnectError::Io {
                    node: peer.clone(),
                    addr,
                    source,
                });
            }
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return self.dial_tls(tls, peer, addr, stream).await;
        }
        let outcome = self
            .initiate(&mut stream, peer, LengthPrefix::U16)
            .await
            .map_err(|e| match e {
                HandshakeError::PeerUsesTls { .. } => ConnectError::Tls {
                    node: peer.clone(),
                    addr,
                    kind: TlsError::PeerUsesTls,
                },
                e => ConnectError::Handshake(e),
            })?;
        let (read, write) = stream.into_split();
        self.install(read, write, outcome, true, None)
    }

    /// TLS first, then the distribution handshake inside it.
    #[cfg(feature = "tls")]
    async fn dial_tls(
        self: &Arc<Self>,
        tls: &crate::tls::TlsContext,
        peer: &NodeName,
        addr: SocketAddr,
        stream: TcpStream,
    ) -> Result<Arc<ConnHandle>, ConnectError> {
        let tls_error = |kind| ConnectError::Tls {
            node: peer.clone(),
            addr,
            kind,
        };
        let mut stream = tls
            .connect(peer, stream, self.cfg.handshake_timeout)
            .await
            .map_err(tls_error)?;
        let outcome = self
            .initiate(&mut stream, peer, LengthPrefix::U32)
            .await
            .map_err(|e| match &e {
                // A TLS 1.3 server judges our certificate after we consider the TLS
                // handshake done: its alert arrives during the distribution handshake.
                HandshakeError::Io { source, .. } => tls
                    .classify_io(source, crate::tls::Role::Client)
                    .map_or(ConnectError::Handshake(e), tls_error),
                _ => ConnectError::Handshake(e),
            })?;
        let (read, write) = tokio::io::split(stream);
        self.install(read, write, outcome, true, None)
    }

    async fn initiate<S>(
        &self,
        stream: &mut S,
        peer: &NodeName,
        prefix: LengthPrefix,
    ) -> Result<handshake::HandshakeOutcome, HandshakeError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let cfg = InitiatorConfig {
            local: LocalName::Static(self.name.clone()),
            creation: self.procs.creation,
            flags: self.our_flags(),
            required: DistFlags::REQUIRED,
            cookie: self.cfg.cookie.clone(),
            peer: peer.clone(),
        };
        handshake::initiate(stream, prefix, cfg, self.cfg.handshake_timeout, || {
            DialCounters::bump(&self.dial_counters.alive_answers);
            // The peer still holds a connection from our name: left over from an earlier
            // run unless we hold a live one too, or another process shares the name.
            self.cfg.name_in_use == NameInUse::Replace && self.connection(peer).is_none()
        })
        .await
    }

    /// Registers a connection that finished its handshake and starts its task. Returns
    /// the connection kept for the peer (this one, or one that won a simultaneous
    /// connect); a node that has stopped drops the connection instead.
    fn install<R, W>(
        self: &Arc<Self>,
        read: R,
        write: W,
        outcome: handshake::HandshakeOutcome,
        initiated_locally: bool,
        permit: Option<ConnectionPermit>,
    ) -> Result<Arc<ConnHandle>, ConnectError>
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
        W: connection::WriteHalf,
    {
        let hs = outcome.handshaked;
        let Some(tracked) = self.tasks.track_running() else {
            return Err(ConnectError::NodeStopped(self.name.clone()));
        };
        let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let conn = connection::spawn(
            self,
            read,
            write,
            connection::Setup {
                id,
                handshaked: &hs,
                leftover: outcome.leftover,
                initiated_locally,
                timing: self.timing(),
                decode_limits: self.cfg.decode_limits.clone(),
                permit,
                linger: self.linger.clone(),
                tracked,
            },
        );
        let (kept, dropped) = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let slot = peers.entry(hs.peer.clone()).or_default();
            match slot.conn.take().filter(|c| c.is_open()) {
                None => {
                    slot.conn = Some(conn.clone());
                    (conn.clone(), None)
                }
                Some(old) if hs.replaces_existing => {
                    slot.conn = Some(conn.clone());
                    (conn.clone(), Some((old, DisconnectReason::Replaced)))
                }
                Some(old) => {
                    // Two connections finished at once. Both nodes keep the one opened
                    // by the node with the greater name, so they agree.
                    fn initiator<'a>(me: &'a NodeName, c: &'a ConnHandle) -> &'a NodeName {
                        if c.initiated_locally { me } else { &c.peer }
                    }
                    if initiator(&self.name, &conn) > initiator(&self.name, &old) {
                        slot.conn = Some(conn.clone());
                        (conn.clone(), Some((old, DisconnectReason::Replaced)))
                    } else {
                        slot.conn = Some(old.clone());
                        (old, Some((conn.clone(), DisconnectReason::Replaced)))
                    }
                }
            }
        };
        if let Some((c, reason)) = dropped {
            c.close(reason);
        }
        // Stopped while this connection was being set up: `shutdown` closed the
        // connections it found, perhaps before this one was in the table.
        if self.is_stopped() {
            conn.close(DisconnectReason::NodeStopped);
            return Err(ConnectError::NodeStopped(self.name.clone()));
        }
        if Arc::ptr_eq(&kept, &conn) {
            tracing::info!(node = %self.name, peer = %hs.peer, hidden = conn.is_hidden(), flags = %hs.flags, "connection up");
            let _ = self.events.send(NodeEvent::Up {
                node: hs.peer.clone(),
                hidden: conn.is_hidden(),
            });
        }
        self.peers_changed.notify_waiters();
        Ok(kept)
    }

    /// Called by the connection task when it starts closing a connection gracefully
    /// (before [`Self::connection_closed`]).
    pub(crate) fn closing_started(&self, peer: &NodeName) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.entry(peer.clone()).or_default().closing += 1;
    }

    /// Called by the connection task once the peer closed its side too (or the wait
    /// for it ended).
    pub(crate) fn closing_finished(&self, peer: &NodeName) {
        {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = peers.get_mut(peer) {
                slot.closing = slot.closing.saturating_sub(1);
                if slot.closing == 0 && slot.conn.is_none() && !slot.dialing {
                    peers.remove(peer);
                }
            }
        }
        self.peers_changed.notify_waiters();
    }

    /// Called by the connection task when a connection ends.
    pub(crate) fn connection_closed(&self, conn: &Arc<ConnHandle>, reason: DisconnectReason) {
        let was_current = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            match peers.get_mut(&conn.peer) {
                Some(slot) if slot.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) => {
                    slot.conn = None;
                    if !slot.dialing && slot.closing == 0 {
                        peers.remove(&conn.peer);
                    }
                    true
                }
                _ => false,
            }
        };
        if !was_current {
            return;
        }
        match &reason {
            DisconnectReason::Local
            | DisconnectReason::NodeStopped
            | DisconnectReason::Replaced => {
                tracing::info!(node = %self.name, peer = %conn.peer, %reason, "connection down");
            }
            _ => tracing::warn!(node = %self.name, peer = %conn.peer, %reason, "connection down"),
        }
        self.calls.connection_lost(&conn.peer, &reason);
        self.peer_gone(&conn.peer_atom);
        let _ = self.events.send(NodeEvent::Down {
            node: conn.peer.clone(),
            reason,
        });
        self.peers_changed.notify_waiters();
    }

    /// Tells local processes that monitor or link processes of a vanished node.
    fn peer_gone(&self, node: &Atom) {
        let mut notices = Vec::new();
        {
            let mut t = self.procs.lock();
            for (id, p) in t.by_id.iter_mut() {
                for pid in p.forget_node(node) {
                    notices.push((
                        *id,
                        exit_message(&pid, Term::atom("noconnection")),
                        Some(pid),
                    ));
                }
                let downs: Vec<(Reference, Term)> = p
                    .monitors
                    .iter()
                    .filter(|(_, target)| target.as_pid().is_some_and(|t| &t.node == node))
                    .map(|(r, t)| (r.clone(), t.clone()))
                    .collect();
                for (r, target) in downs {
                    p.monitors.remove(&r);
                    let from = target.as_pid().cloned();
                    notices.push((
                        *id,
                        down_message(&r, target, Term::atom("noconnection")),
                        from,
                    ));
                }
            }
        }
        for (id, message, from) in notices {
            let _ = self.procs.deliver(id, Envelope { from, message });
        }
    }

    /// The status for an initiator knocking (the acceptor's `mark_pending`).
    fn decide(&self, hello: &PeerHello) -> StatusDecision {
        let Some(peer) = &hello.name else {
            // Dynamic names are not offered by this node.
            return StatusDecision::NotAllowed;
        };
        if self.is_stopped() {
            return StatusDecision::NotAllowed;
        }
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        match peers.get(peer) {
            Some(slot) if slot.conn.as_ref().is_some_and(|c| c.is_open()) => StatusDecision::Alive,
            Some(slot) if slot.dialing => {
                if self.name > *peer {
                    StatusDecision::Nok
                } else {
                    StatusDecision::OkSimultaneous
                }
            }
            _ => StatusDecision::Ok,
        }
    }

    /// Stops the node; returns its EPMD registration, for the caller to end.
    fn shutdown(&self) -> Option<EpmdRegistration> {
        if !self.tasks.stop() {
            return None;
        }
        self.linger.stop();
        let conns: Vec<Arc<ConnHandle>> = {
            let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            peers.values().filter_map(|s| s.conn.clone()).collect()
        };
        for c in conns {
            c.close(DisconnectReason::NodeStopped);
        }
        tracing::info!(node = %self.name, "node stopped");
        self.registration
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        drop(self.shutdown());
    }
}

async fn accept_loop(
    node: Weak<NodeInner>,
    listener: TcpListener,
    limiter: ConnectionLimiter,
    tracked: tasks::Tracked,
) {
    let tasks = tracked.tasks();
    let mut accepted_count = 0u32;
    loop {
        // Under a flood, let the handshakes already admitted make progress before
        // admitting more (an admitted connection can evict an older pending one).
        accepted_count = accepted_count.wrapping_add(1);
        if accepted_count.is_multiple_of(16) {
            tokio::task::yield_now().await;
        }
        // Only the stop signal is held while waiting, not the node: dropping its last
        // handle stops it, and this loop with it.
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = tasks.stopped() => return,
        };
        let (stream, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "distribution accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut permit = match limiter.admit(addr.ip()) {
            Ok(p) => p,
            Err(refusal) => {
                tracing::debug!(%addr, ?refusal, "distribution connection refused by the listener limits");
                continue;
            }
        };
        let node = node.clone();
        let progress = Progress {
            limiter: limiter.clone(),
            id: permit.id(),
        };
        let Some(tracked) = tasks.track_running() else {
            return;
        };
        let handshake = async move {
            let result = tokio::select! {
                r = accept_connection(&node, stream, addr, &progress) => r,
                reason = permit.closed() => {
                    tracing::debug!(%addr, %reason, "handshake closed by the listener limits");
                    None
                }
                () = tracked.tasks().stopped() => None,
            };
            let Some((inner, stream, outcome)) = result else {
                return;
            };
            if let Err(e) = permit.promote() {
                tracing::warn!(peer = %outcome.handshaked.peer, %addr, error = %e, "distribution connection closed: listener limits");
                return;
            }
            match stream {
                Accepted::Tcp(stream) => {
                    let (read, write) = stream.into_split();
                    let _ = inner.install(read, write, outcome, false, Some(permit));
                }
                #[cfg(feature = "tls")]
                Accepted::Tls(stream) => {
                    let (read, write) = tokio::io::split(*stream);
                    let _ = inner.install(read, write, outcome, false, Some(permit));
                }
            }
        };
        // Boxed: spawning moves a future several times, and this one is large.
        tokio::spawn(Box::pin(handshake));
    }
}

/// An accepted connection that finished its handshake, plain or inside TLS.
enum Accepted {
    Tcp(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<crate::tls::ServerStream>),
}

/// Tells the listener limits that an incoming handshake has got as far as the peer's name,
/// so that a flood of idle connections from its address is evicted before it.
struct Progress {
    limiter: ConnectionLimiter,
    id: crate::listener::ConnId,
}

/// Runs TLS (when configured) and the acceptor's handshake.
async fn accept_connection(
    node: &Weak<NodeInner>,
    stream: TcpStream,
    addr: SocketAddr,
    progress: &Progress,
) -> Option<(Arc<NodeInner>, Accepted, handshake::HandshakeOutcome)> {
    let _ = stream.set_nodelay(true);
    #[cfg(feature = "tls")]
    {
        let inner = node.upgrade()?;
        if let Some(tls) = &inner.tls {
            let accepted = tls.accept(stream, inner.cfg.handshake_timeout).await?;
            let stream = match accepted {
                Ok(s) => s,
                Err(e) => {
                    log_tls_rejection(addr, &e);
                    return None;
                }
            };
            drop(inner);
            return accept_one(node, stream, addr, LengthPrefix::U32, progress)
                .await
                .map(|(inner, s, outcome)| (inner, Accepted::Tls(Box::new(s)), outcome));
        }
    }
    accept_one(node, stream, addr, LengthPrefix::U16, progress)
        .await
        .map(|(inner, s, outcome)| (inner, Accepted::Tcp(s), outcome))
}

#[cfg(feature = "tls")]
fn log_tls_rejection(addr: SocketAddr, e: &TlsError) {
    match e {
        // Port scanners, health checks and slow clients: not worth a warning each.
        TlsError::Closed { .. } | TlsError::Timeout { .. } => {
            tracing::debug!(%addr, error = %e, "incoming TLS distribution handshake failed");
        }
        _ => tracing::warn!(%addr, error = %e, "incoming TLS distribution connection rejected"),
    }
}

/// Runs the acceptor's handshake; the connection to install when it succeeds.
async fn accept_one<S>(
    node: &Weak<NodeInner>,
    mut stream: S,
    addr: SocketAddr,
    prefix: LengthPrefix,
    progress: &Progress,
) -> Option<(Arc<NodeInner>, S, handshake::HandshakeOutcome)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let inner = node.upgrade()?;
    let cfg = AcceptorConfig {
        local: inner.name.clone(),
        creation: inner.procs.creation,
        flags: inner.our_flags(),
        required: DistFlags::REQUIRED,
        cookie: inner.cfg.cookie.clone(),
    };
    let label = addr.to_string();
    let result = handshake::accept(
        &mut stream,
        prefix,
        cfg,
        inner.cfg.handshake_timeout,
        &label,
        |hello| {
            progress.limiter.mark_progress(progress.id);
            inner.decide(hello)
        },
    )
    .await;
    match result {
        Ok(outcome) => Some((inner, stream, outcome)),
        Err(HandshakeError::Refused { peer, reason }) => {
            tracing::debug!(%peer, %addr, %reason, "incoming connection refused");
            None
        }
        Err(HandshakeError::PeerUsesTls { .. }) => {
            tracing::warn!(%addr, error = %TlsError::PeerUsesTls, "incoming connection rejected: a TLS client on this plain distribution listener");
            None
        }
        Err(
            e @ (HandshakeError::CookieMismatch { .. }
            | HandshakeError::NameKind(_)
            | HandshakeError::MissingFlags { .. }),
        ) => {
            tracing::warn!(%addr, error = %e, "incoming connection rejected");
            None
        }
        Err(e) => {
            #[cfg(feature = "tls")]
            if let HandshakeError::Io { source, .. } = &e
                && let Some(tls) = inner
                    .tls
                    .as_ref()
                    .and_then(|t| t.classify_io(source, crate::tls::Role::Server))
            {
                log_tls_rejection(addr, &tls);
                return None;
            }
            tracing::debug!(%addr, error = %e, "incoming handshake failed");
            None
        }
    }
}

// ---------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------

pub(crate) fn exit_message(from: &Pid, reason: Term) -> Term {
    Term::Tuple(vec![Term::atom("EXIT"), Term::from(from.clone()), reason])
}

pub(crate) fn down_message(reference: &Reference, target: Term, reason: Term) -> Term {
    Term::Tuple(vec![
        Term::atom("DOWN"),
        Term::from(reference.clone()),
        Term::atom("process"),
        target,
        reason,
    ])
}

impl NodeInner {
    fn node_of(&self, atom: &Atom) -> Result<NodeName, SendError> {
        NodeName::new(atom.as_str()).map_err(|_| SendError::BadNode(atom.as_str().to_owned()))
    }

    /// Sends a control message to `node`, connecting if needed.
    pub(crate) async fn send_control(
        self: &Arc<Self>,
        node: &NodeName,
        control: &Control,
        message: Option<&Term>,
    ) -> Result<(), SendError> {
        let conn = self.connect(node, None).await?;
        conn.send(control, message).await
    }

    pub(crate) async fn send_from(
        self: &Arc<Self>,
        from: Option<&Pid>,
        to: &Pid,
        message: Term,
    ) -> Result<(), SendError> {
        if to.node == self.procs.node {
            if to.creation == self.procs.creation {
                match to.id {
                    process::RPC_ID | process::NET_KERNEL_ID => {
                        self.calls.deliver_reply(message);
                    }
                    id => self.deliver_local(id, from.cloned(), message),
                }
            }
            return Ok(());
        }
        let node = self.node_of(&to.node)?;
        let control = Control::Send {
            from: from.cloned(),
            to: to.clone(),
        };
        self.send_control(&node, &control, Some(&message)).await
    }

    pub(crate) async fn send_named_from(
        self: &Arc<Self>,
        from: &Pid,
        node: &NodeName,
        name: &str,
        message: Term,
    ) -> Result<(), SendError> {
        if node == &self.name {
            if let Some(id) = self.procs.whereis(&Atom::from(name)) {
                self.deliver_local(id, Some(from.clone()), message);
            }
            return Ok(());
        }
        let control = Control::RegSend {
            from: from.clone(),
            to: Atom::from(name),
        };
        self.send_control(node, &control, Some(&message)).await
    }

    pub(crate) async fn gen_reply(
        self: &Arc<Self>,
        from: &Pid,
        call: &GenCall,
        reply: Term,
    ) -> Result<(), SendError> {
        let message = call.reply_message(reply);
        match call.reply_alias() {
            Some(alias) if alias.node != self.procs.node => {
                let node = self.node_of(&alias.node)?;
                let conn = self.connect(&node, None).await?;
                if conn.flags.contains(DistFlags::ALIAS) {
                    let control = Control::AliasSend {
                        from: from.clone(),
                        alias: alias.clone(),
                    };
                    return conn.send(&control, Some(&message)).await;
                }
                self.send_from(Some(from), &call.from, message).await
            }
            _ => self.send_from(Some(from), &call.from, message).await,
        }
    }

    fn deliver_local(&self, id: u32, from: Option<Pid>, message: Term) {
        match self.procs.deliver(id, Envelope { from, message }) {
            Delivery::Delivered | Delivery::NoProcess => {}
            Delivery::Full => {
                tracing::warn!(node = %self.name, pid = id, capacity = self.cfg.mailbox_capacity, "mailbox full: message dropped");
            }
        }
    }

    async fn monitor(self: &Arc<Self>, from: &Pid, target: &Pid) -> Result<Reference, SendError> {
        let reference = self.procs.make_ref();
        {
            let mut t = self.procs.lock();
            if let Some(p) = t.by_id.get_mut(&from.id) {
                p.monitors
                    .insert(reference.clone(), Term::from(target.clone()));
            }
        }
        let node = self.node_of(&target.node)?;
        let control = Control::Monitor {
            from: from.clone(),
            to: ProcessRef::Pid(target.clone()),
            reference: reference.clone(),
        };
        if let Err(e) = self.send_control(&node, &control, None).await {
            let mut t = self.procs.lock();
            if let Some(p) = t.by_id.get_mut(&from.id) {
                p.monitors.remove(&reference);
            }
            return Err(e);
        }
        Ok(reference)
    }

    async fn demonitor(
        self: &Arc<Self>,
        from: &Pid,
        reference: &Reference,
    ) -> Result<(), SendError> {
        let target = {
            let mut t = self.procs.lock();
            t.by_id
                .get_mut(&from.id)
                .and_then(|p| p.monitors.remove(reference))
        };
        let Some(Term::Pid(target)) = target else {
            return Ok(());
        };
        let Some(conn) = self
            .node_of(&target.node)
            .ok()
            .and_then(|n| self.connection(&n))
        else {
            return Ok(());
        };
        let control = Control::Demonitor {
            from: from.clone(),
            to: ProcessRef::Pid(*target),
            reference: reference.clone(),
        };
        conn.send(&control, None).await
    }

    async fn link(self: &Arc<Self>, from: &Pid, target: &Pid) -> Result<(), SendError> {
        {
            let mut t = self.procs.lock();
            if let Some(p) = t.by_id.get_mut(&from.id) {
                p.add_link(target.clone(), true);
            }
        }
        let node = self.node_of(&target.node)?;
        let control = Control::Link {
            from: from.clone(),
            to: target.clone(),
        };
        self.send_control(&node, &control, None).await
    }

    /// A local process ended: tell the remote processes that monitor or link it.
    fn process_exited(self: &Arc<Self>, id: u32, reason: Term) {
        let Some(p) = self.procs.remove(id) else {
            return;
        };
        if !p.is_watched() {
            return;
        }
        let me = self.procs.pid(id);
        let name = p.name.clone();
        let (monitored_by, links) = p.into_watchers();
        let mut outgoing = Vec::new();
        for (reference, watcher) in monitored_by {
            let to = match &name {
                Some(name) => ProcessRef::Name(name.clone()),
                None => ProcessRef::Pid(me.clone()),
            };
            outgoing.push((
                watcher.node.clone(),
                Control::MonitorExit {
                    from: to,
                    to: watcher,
                    reference,
                    reason: reason.clone(),
                },
            ));
        }
        for linked in links {
            outgoing.push((
                linked.node.clone(),
                Control::Exit {
                    from: me.clone(),
                    to: linked,
                    reason: reason.clone(),
                },
            ));
        }
        // Once the node stops, its connections are closing: nothing to tell.
        let Some(tracked) = self.tasks.track_running() else {
            return;
        };
        let node = self.clone();
        tokio::spawn(async move {
            let _tracked = tracked;
            for (peer, control) in outgoing {
                if let Some(conn) = node.node_of(&peer).ok().and_then(|n| node.connection(&n)) {
                    let _ = conn.send(&control, None).await;
                }
            }
        });
    }

    /// The local process a signal names (by pid of this incarnation, or registered
    /// name), if there is one.
    fn local_id(&self, to: &ProcessRef) -> Option<u32> {
        match to {
            ProcessRef::Pid(p) if self.procs.is_local(p) => Some(p.id),
            ProcessRef::Pid(_) => None,
            ProcessRef::Name(n) if n.as_str() == "net_kernel" => Some(process::NET_KERNEL_ID),
            ProcessRef::Name(n) => self.procs.whereis(n),
        }
    }

    /// A peer went past [`MAX_MONITORS_AND_LINKS_PER_PEER`] on one process: it is
    /// disconnected, which forgets what it held.
    fn overloaded(&self, conn: &ConnHandle) {
        if !conn.is_open() {
            return;
        }
        let max = MAX_MONITORS_AND_LINKS_PER_PEER;
        tracing::warn!(node = %self.name, peer = %conn.peer, max, "the peer monitored or linked one process more than {max} times: disconnecting it");
        conn.close(DisconnectReason::Overloaded(Overload::MonitorsAndLinks {
            max,
        }));
    }

    /// Handles one message from a connection.
    pub(crate) fn dispatch(
        self: &Arc<Self>,
        conn: &Arc<ConnHandle>,
        msg: DistMessage,
        out: &mut Replies,
    ) {
        let DistMessage { control, message } = msg;
        match control {
            Control::Send { from, to } => {
                let message = message.unwrap_or_else(Term::nil);
                self.route_to_pid(conn, from, &to, message, out);
            }
            Control::RegSend { from, to } => {
                let message = message.unwrap_or_else(Term::nil);
                if to.as_str() == "net_kernel" {
                    builtin::net_kernel(self, conn, &from, message, out);
                } else if let Some(id) = self.procs.whereis(&to) {
                    self.deliver_local(id, Some(from), message);
                } else {
                    tracing::debug!(node = %self.name, name = %to, "message to an unregistered name dropped");
                }
            }
            Control::AliasSend { from, alias } => {
                let message = message.unwrap_or_else(Term::nil);
                if !self.calls.deliver_alias(&alias, message) {
                    tracing::debug!(node = %self.name, from = ?from, "message to an unknown alias dropped");
                }
            }
            Control::Monitor {
                from,
                to,
                reference,
            } => {
                if !conn.sent_by_peer(&from) {
                    return;
                }
                let recorded = match self.local_id(&to) {
                    // The node's own processes never exit while it runs.
                    Some(id) if id < 100 => Watched::Recorded,
                    Some(id) => self.procs.add_monitor(id, reference.clone(), from.clone()),
                    None => Watched::NoProcess,
                };
                match recorded {
                    Watched::Recorded => {}
                    Watched::NoProcess => {
                        let exit = Control::MonitorExit {
                            from: to,
                            to: from,
                            reference,
                            reason: Term::atom("noproc"),
                        };
                        conn.reply(out, exit, None);
                    }
                    Watched::TooMany => self.overloaded(conn),
                }
            }
            Control::Demonitor {
                from,
                to,
                reference,
            } => {
                if !conn.sent_by_peer(&from) {
                    return;
                }
                if let Some(id) = self.local_id(&to)
                    && let Some(p) = self.procs.lock().by_id.get_mut(&id)
                {
                    p.remove_monitor(&reference);
                }
            }
            Control::MonitorExit {
                from,
                to,
                reference,
                reason,
            } => {
                if self.calls.monitor_exit(self, &reference, reason.clone()) {
                    return;
                }
                if !self.procs.is_local(&to) {
                    return;
                }
                let removed = {
                    let mut t = self.procs.lock();
                    t.by_id
                        .get_mut(&to.id)
                        .and_then(|p| p.monitors.remove(&reference))
                };
                if removed.is_some() {
                    let target = match &from {
                        ProcessRef::Pid(p) => Term::from(p.clone()),
                        ProcessRef::Name(n) => Term::Tuple(vec![
                            Term::Atom(n.clone()),
                            Term::Atom(conn.peer_atom.clone()),
                        ]),
                    };
                    let from_pid = match from {
                        ProcessRef::Pid(p) => Some(p),
                        ProcessRef::Name(_) => None,
                    };
                    self.deliver_local(to.id, from_pid, down_message(&reference, target, reason));
                }
            }
            Control::Link { from, to } => {
                if !conn.sent_by_peer(&from) {
                    return;
                }
                let linked = if self.procs.is_local(&to) {
                    self.procs.add_link(to.id, from.clone())
                } else {
                    Watched::NoProcess
                };
                match linked {
                    Watched::Recorded => {}
                    Watched::NoProcess if to.id >= 100 => {
                        let exit = Control::Exit {
                            from: to,
                            to: from,
                            reason: Term::atom("noproc"),
                        };
                        conn.reply(out, exit, None);
                    }
                    Watched::NoProcess => {}
                    Watched::TooMany => self.overloaded(conn),
                }
            }
            Control::UnlinkId { id, from, to } => {
                if !conn.sent_by_peer(&from) {
                    return;
                }
                if self.procs.is_local(&to)
                    && let Some(p) = self.procs.lock().by_id.get_mut(&to.id)
                {
                    p.remove_link(&from);
                }
                let ack = Control::UnlinkIdAck {
                    id,
                    from: to,
                    to: from,
                };
                conn.reply(out, ack, None);
            }
            Control::UnlinkIdAck { .. } | Control::GroupLeader { .. } => {}
            Control::Exit { from, to, reason } | Control::Exit2 { from, to, reason } => {
                if !conn.sent_by_peer(&from) {
                    return;
                }
                if self.procs.is_local(&to) {
                    if let Some(p) = self.procs.lock().by_id.get_mut(&to.id) {
                        p.remove_link(&from);
                    }
                    self.deliver_local(to.id, Some(from.clone()), exit_message(&from, reason));
                }
            }
            Control::SpawnRequest { req_id, from, .. } => {
                // This node runs no Erlang code.
                let refusal = Control::SpawnReply {
                    req_id,
                    to: from,
                    flags: 0,
                    result: Term::atom("notsup"),
                };
                conn.reply(out, refusal, None);
            }
            Control::SpawnReply { req_id, result, .. } => {
                if let Some(kill) = self.calls.spawn_reply(self, &req_id, result) {
                    conn.reply(out, kill, None);
                }
            }
            Control::Unknown { op, control } => {
                tracing::debug!(node = %self.name, peer = %conn.peer, op, control = %control, "unknown control message ignored");
            }
        }
    }

    fn route_to_pid(
        self: &Arc<Self>,
        conn: &Arc<ConnHandle>,
        from: Option<Pid>,
        to: &Pid,
        message: Term,
        out: &mut Replies,
    ) {
        if !self.procs.is_local(to) {
            tracing::debug!(node = %self.name, to = ?to, "message to a pid of another node or incarnation dropped");
            return;
        }
        match to.id {
            process::RPC_ID | process::NET_KERNEL_ID => {
                if !self.calls.deliver_reply(message) {
                    tracing::debug!(node = %self.name, "late or unknown reply dropped");
                }
            }
            process::IO_ID => builtin::io_request(self, conn, message, out),
            id => self.deliver_local(id, from, message),
        }
    }
}
