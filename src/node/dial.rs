//! Dialling a peer: one dial per peer at a time, host and port caches, EPMD lookups,
//! plain and TLS transports, and the initiator's handshake.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::NodeName;
use crate::epmd::EpmdClient;
use crate::handshake::{self, DistFlags, HandshakeError, InitiatorConfig, LengthPrefix, LocalName};

use super::connection::ConnHandle;
use super::transport::Role;
use super::{ConnectError, DialCounters, HOST_CACHE_TTL, NameInUse, NodeInner, TlsError};

impl NodeInner {
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
    pub(super) fn closing(&self, peer: &NodeName) -> bool {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers
            .get(peer)
            .is_some_and(|s| s.closing > 0 || s.conn.as_ref().is_some_and(|c| c.closed_locally()))
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

    pub(super) async fn resolve(&self, peer: &NodeName) -> Result<IpAddr, ConnectError> {
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
    pub(super) async fn lookup(&self, peer: &NodeName) -> Result<(SocketAddr, bool), ConnectError> {
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

    pub(super) async fn dial(
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
        let stream = match connect {
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
        let tls_error = |kind| ConnectError::Tls {
            node: peer.clone(),
            addr,
            kind,
        };
        let mut stream = self
            .security
            .connect(peer, stream, self.cfg.handshake_timeout)
            .await
            .map_err(tls_error)?;
        let outcome = self
            .initiate(&mut stream, peer, self.security.prefix())
            .await
            .map_err(|e| match &e {
                HandshakeError::PeerUsesTls { .. } => tls_error(TlsError::PeerUsesTls),
                HandshakeError::Io { source, .. } => self
                    .security
                    .classify_io(source, Role::Client)
                    .map_or(ConnectError::Handshake(e), tls_error),
                _ => ConnectError::Handshake(e),
            })?;
        let (read, write) = stream.split();
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
}
