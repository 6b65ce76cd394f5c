//! Configuring a node: [`NodeConfig`] and the [`NodeBuilder`] that fills it in.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{ClientStartError, ConnectError, Node, StartError};
use crate::handshake::HandshakeError;
use crate::listener::ListenerLimits;
use crate::term::DecodeLimits;
use crate::{Cookie, NodeName};
use crate::{epmd, handshake};

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

impl NodeConfig {
    /// The defaults [`Node::builder`] starts from: hidden, client-only, `net_ticktime`
    /// 60 s.
    pub(super) fn defaults(name: NodeName, cookie: Cookie) -> NodeConfig {
        NodeConfig {
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
        }
    }
}

/// Builds and starts a [`Node`].
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    pub(super) cfg: NodeConfig,
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
