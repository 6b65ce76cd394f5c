//! An embedded EPMD server: a drop-in for `epmd` on a host without Erlang.
//!
//! Real `erl` nodes register with it (start them with `ERL_EPMD_PORT` pointing at it,
//! and `-start_epmd false` so they do not try to start `epmd` themselves), look each
//! other up through it, and `epmd -names` / `epmd -kill` talk to it as to epmd.
//!
//! The server is a thin tokio shell: each listener's accept loop answers a query whose
//! bytes are there when the connection is accepted (nearly every `PORT_PLEASE2`) itself;
//! for any other connection it asks the shared [`ConnectionLimiter`] for a permit and
//! spawns a task, which reads one request with the pure [`codec`](super::codec), lets
//! the pure [`Registry`] decide the reply and what comes next, and writes it. The access
//! rules (local-only requests, `KILL` and `STOP`) are described in
//! [`registry`](super::registry).
//!
//! A connection is *pending* until its request is complete and *established* once it
//! holds a registration; the [`ListenerLimits`] bound both, and
//! [`ListenerLimits::idle_timeout`] is the request timeout: a client has that long from
//! its connect to finish sending the request and reading the reply.
//!
//! ```
//! use autocluster::epmd::{EpmdClient, EpmdServer, EpmdServerConfig, NodeEntry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Port 0: the system picks a free port, the same one for every address.
//! let server = EpmdServer::bind(EpmdServerConfig::localhost(0)).await?;
//! let client = EpmdClient::new(server.local_addrs()[0]);
//!
//! let registration = client.register(NodeEntry::new("demo", 40000)).await?;
//! assert_eq!(client.names().await?, vec![("demo".to_string(), 40000)]);
//! drop(registration);
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::codec::{NodeEntry, Request};
use super::registry::{After, Note, Registry, RequestContext};
use crate::listener::{ConnectionLimiter, ConnectionPermit, ListenerLimits, ListenerStats};
use crate::wire::Status;

/// How many connections an accept loop admits before letting connection tasks run
/// (well below the default `max_pending_per_source`).
const ACCEPTS_PER_YIELD: u32 = 16;

/// The listen backlog (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// How the embedded server listens and what it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpmdServerConfig {
    /// The addresses to listen on. Default: `127.0.0.1:4369` and `[::1]:4369`, like an
    /// epmd told `-address 127.0.0.1`. A port of 0 picks a free port, shared by every
    /// address with port 0. A loopback IPv6 address that the host lacks is skipped with a
    /// warning (epmd does the same); any other failure to bind is an error.
    pub addrs: Vec<SocketAddr>,
    /// Connection limits; `idle_timeout` is the request timeout.
    pub limits: ListenerLimits,
    /// epmd's `-relaxed_command_check` (or `ERL_EPMD_RELAXED_COMMAND_CHECK`): serve
    /// `STOP`, and `KILL` while nodes are registered. Off by default.
    pub relaxed_command_check: bool,
}

impl Default for EpmdServerConfig {
    fn default() -> Self {
        Self::localhost(super::DEFAULT_PORT)
    }
}

impl EpmdServerConfig {
    /// Both loopback addresses on `port`, default limits.
    pub fn localhost(port: u16) -> Self {
        EpmdServerConfig {
            addrs: vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
            ],
            limits: ListenerLimits::default(),
            relaxed_command_check: false,
        }
    }
}

#[derive(Debug, Default)]
struct ServerState {
    registry: Registry,
    /// Registered connections, to close one on `STOP`.
    stoppers: HashMap<u64, Arc<Notify>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<ServerState>,
    limiter: ConnectionLimiter,
    relaxed_command_check: bool,
    /// [`ListenerLimits::takes_connections`]: a listener configured to take no
    /// connection answers no query either.
    takes_connections: bool,
    shutdown: watch::Sender<bool>,
    /// Accept loops still running (holding their listening socket).
    listening: watch::Sender<usize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ServerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running embedded EPMD. It serves in background tasks until
/// [`shutdown`](Self::shutdown), a `KILL` request it accepts, or drop.
#[derive(Debug)]
pub struct EpmdServer {
    local_addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    accept_tasks: Vec<JoinHandle<()>>,
}

impl EpmdServer {
    /// Binds every configured address and starts serving. Must be called within a tokio
    /// runtime.
    pub async fn bind(config: EpmdServerConfig) -> io::Result<EpmdServer> {
        let listeners = bind_all(&config.addrs)?;
        let (shutdown, _) = watch::channel(false);
        let (listening, _) = watch::channel(listeners.len());
        let takes_connections = config.limits.takes_connections();
        let shared = Arc::new(Shared {
            state: Mutex::new(ServerState::default()),
            takes_connections,
            limiter: ConnectionLimiter::new(config.limits),
            relaxed_command_check: config.relaxed_command_check,
            shutdown,
            listening,
        });
        let mut local_addrs = Vec::new();
        let mut accept_tasks = Vec::new();
        for listener in listeners {
            let listener = TcpListener::from_std(listener)?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "embedded EPMD listening");
            local_addrs.push(addr);
            accept_tasks.push(tokio::spawn(accept_loop(listener, Arc::clone(&shared))));
        }
        Ok(EpmdServer {
            local_addrs,
            shared,
            accept_tasks,
        })
    }

    /// The addresses actually listened on (with the chosen port when 0 was asked).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The port of the first address.
    pub fn port(&self) -> u16 {
        self.local_addrs.first().map_or(0, SocketAddr::port)
    }

    /// Connection counters (pending, established, evicted, timed out...). A query whose
    /// request is there when its connection is accepted is answered without being
    /// admitted (it is never pending), so it is not counted.
    pub fn stats(&self) -> ListenerStats {
        self.shared.limiter.stats()
    }

    /// The registered nodes, newest first.
    pub fn registered(&self) -> Vec<NodeEntry> {
        self.shared.lock().registry.entries().cloned().collect()
    }

    /// Whether the server is still serving.
    pub fn is_running(&self) -> bool {
        !*self.shared.shutdown.borrow()
    }

    /// Resolves when the server has stopped serving (a `KILL` request or a shutdown) and
    /// closed its listening sockets.
    pub async fn closed(&self) {
        let mut stopped = self.shared.shutdown.subscribe();
        let _ = stopped.wait_for(|stopped| *stopped).await;
        let mut listening = self.shared.listening.subscribe();
        let _ = listening.wait_for(|n| *n == 0).await;
    }

    /// Stops listening and closes every connection; registered nodes see EPMD go away.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.send_replace(true);
        for task in self.accept_tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for EpmdServer {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

fn bind_all(addrs: &[SocketAddr]) -> io::Result<Vec<std::net::TcpListener>> {
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no address to listen on",
        ));
    }
    // With port 0 on several addresses, the first bind picks the port and the others
    // follow; if another process holds that port on another address, start over.
    'attempt: for _ in 0..20 {
        let mut chosen: Option<u16> = None;
        let mut out = Vec::new();
        for &asked in addrs {
            let mut addr = asked;
            if asked.port() == 0
                && let Some(port) = chosen
            {
                addr.set_port(port);
            }
            match bind_one(addr) {
                Ok(listener) => {
                    if asked.port() == 0 && chosen.is_none() {
                        chosen = Some(listener.local_addr()?.port());
                    }
                    out.push(listener);
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && asked.port() == 0 => {
                    continue 'attempt;
                }
                Err(e) if is_missing_ipv6_loopback(addr, &e) => {
                    tracing::warn!(%addr, error = %e, "IPv6 loopback unavailable; not listening on it");
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot listen on {addr}: {e}"),
                    ));
                }
            }
        }
        if out.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                "could not listen on any address",
            ));
        }
        return Ok(out);
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "could not find one free port for every address",
    ))
}

fn is_missing_ipv6_loopback(addr: SocketAddr, e: &io::Error) -> bool {
    addr.ip() == IpAddr::V6(Ipv6Addr::LOCALHOST)
        && (e.kind() == io::ErrorKind::AddrNotAvailable
            || e.kind() == io::ErrorKind::Unsupported
            || e.raw_os_error() == Some(97)) // EAFNOSUPPORT on Linux
}

fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    crate::listener::bind(addr, BACKLOG)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    // A connection's local address is the listener's, unless it listens on a wildcard.
    let local = listener
        .local_addr()
        .ok()
        .filter(|addr| !addr.ip().is_unspecified());
    serve_listener(&listener, local, &shared, &mut shutdown).await;
    drop(listener);
    shared.listening.send_modify(|n| *n = n.saturating_sub(1));
}

async fn serve_listener(
    listener: &TcpListener,
    local: Option<SocketAddr>,
    shared: &Arc<Shared>,
    shutdown: &mut watch::Receiver<bool>,
) {
    let mut accepted_since_yield = 0u32;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stopped| *stopped) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(local) = local.or_else(|| stream.local_addr().ok()) else {
                    continue;
                };
                // A query answered at once is never pending, so it takes no slot in the
                // limiter: only a connection that needs a task of its own is admitted.
                let at_once = if shared.takes_connections {
                    answer_at_once(&stream, peer, local, shared)
                } else {
                    AtOnce::Pending(Vec::new()) // refused by the limiter below
                };
                if !matches!(at_once, AtOnce::Answered) {
                    match shared.limiter.admit(peer.ip()) {
                        Ok(permit) => match at_once {
                            AtOnce::Answered => {}
                            AtOnce::Rest(rest) => {
                                tokio::spawn(finish_reply(stream, peer, permit, rest));
                            }
                            AtOnce::Pending(buf) => {
                                let shared = Arc::clone(shared);
                                // Boxed: spawning moves a future several times, and
                                // this one is large.
                                tokio::spawn(Box::pin(serve(
                                    stream, peer, local, permit, shared, buf,
                                )));
                            }
                        },
                        Err(refusal) => tracing::debug!(%peer, %refusal, "connection refused"),
                    }
                }
                // Let the connection tasks run every few accepts: a client that sent its
                // request at once is then served long before a burst of newer
                // connections can push it out as the oldest pending one.
                accepted_since_yield += 1;
                if accepted_since_yield >= ACCEPTS_PER_YIELD {
                    accepted_since_yield = 0;
                    tokio::task::yield_now().await;
                }
            }
            Err(error) if is_transient(&error) => {}
            Err(error) => {
                // Typically EMFILE: back off instead of spinning on the error.
                tracing::warn!(%error, "accept failed; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Whether epmd would treat the peer as local: loopback, or the very address it
/// connected to (a node on this host using a non-loopback address).
fn is_local_peer(peer: IpAddr, local: IpAddr) -> bool {
    let peer = peer.to_canonical();
    peer.is_loopback() || peer == local.to_canonical()
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the bytes read so far on a connection hold.
enum Decoded {
    /// One complete request and nothing after it.
    Request(Request),
    /// The start of a request: read more.
    Partial,
    /// An invalid request, or bytes after a complete one (logged): close.
    Invalid,
}

/// Decodes the one request a connection may send.
fn decode_request(buf: &[u8], peer: SocketAddr) -> Decoded {
    match Request::decode(buf) {
        Ok(Status::Complete((request, used))) if used == buf.len() => Decoded::Request(request),
        Ok(Status::Complete((request, used))) => {
            tracing::debug!(%peer, request = request.kind(), extra = buf.len() - used,
                "bytes after the request; closing");
            Decoded::Invalid
        }
        Ok(Status::Partial) => Decoded::Partial,
        Err(error) => {
            tracing::debug!(%peer, %error, "invalid EPMD request; closing");
            Decoded::Invalid
        }
    }
}

/// What the registry needs to know about a request's connection.
fn request_context(
    conn: u64,
    local_peer: bool,
    local: SocketAddr,
    shared: &Shared,
    may_register: bool,
) -> RequestContext {
    RequestContext {
        conn,
        local_peer,
        epmd_port: local.port(),
        unix_time: unix_time(),
        relaxed_command_check: shared.relaxed_command_check,
        may_register,
    }
}

/// What [`answer_at_once`] did with a connection it was handed.
enum AtOnce {
    /// The request was answered (or refused) and the connection is done.
    Answered,
    /// The request was answered, but this much of the reply did not fit in the socket
    /// buffer.
    Rest(Vec<u8>),
    /// No complete query arrived yet, or the request needs a task of its own (`ALIVE2`,
    /// `KILL`, `STOP`): serve the connection from these bytes on.
    Pending(Vec<u8>),
}

/// `send` flags: no `SIGPIPE` when the client has gone (where the flag exists; Rust
/// programs ignore `SIGPIPE` anyway unless told otherwise).
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: std::ffi::c_int = 0;

/// The fast path for the requests that are one query and one reply (`PORT_PLEASE2`,
/// `NAMES`, `DUMP`), which is nearly every request epmd sees: when the request has
/// arrived by the time its connection is accepted, it is answered right here in the
/// accept loop with one non-blocking read and one non-blocking write, without a task or
/// a wait on the reactor. Anything else goes to [`serve`], with the bytes read so far.
fn answer_at_once(
    stream: &TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    shared: &Shared,
) -> AtOnce {
    let socket = socket2::SockRef::from(stream);
    let mut chunk = [0u8; 512];
    // The socket is non-blocking: no data yet is `WouldBlock`, not a wait.
    let n = match (&*socket).read(&mut chunk) {
        Ok(0) => return AtOnce::Answered, // closed before asking anything
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return AtOnce::Pending(Vec::new()),
        Err(_) => return AtOnce::Answered,
    };
    let buf = &chunk[..n];
    let request = match decode_request(buf, peer) {
        Decoded::Request(request) => request,
        Decoded::Partial => return AtOnce::Pending(buf.to_vec()),
        Decoded::Invalid => return AtOnce::Answered,
    };
    if !matches!(
        request,
        Request::PortPlease2 { .. } | Request::Names | Request::Dump
    ) {
        return AtOnce::Pending(buf.to_vec());
    }
    // A query never registers or stops anything: no connection id.
    let ctx = request_context(
        0,
        is_local_peer(peer.ip(), local.ip()),
        local,
        shared,
        false,
    );
    let kind = request.kind();
    let outcome = shared.lock().registry.handle(request, &ctx);
    debug_assert!(matches!(outcome.after, After::Close));
    log_note(&outcome.note, peer, kind);
    let mut reply = outcome.reply;
    if reply.is_empty() {
        return AtOnce::Answered;
    }
    match socket.send_with_flags(&reply, SEND_FLAGS) {
        Ok(n) if n == reply.len() => AtOnce::Answered,
        Ok(n) => {
            reply.drain(..n);
            AtOnce::Rest(reply)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => AtOnce::Rest(reply),
        Err(_) => AtOnce::Answered,
    }
}

/// Writes the rest of a reply [`answer_at_once`] could not write whole, within the
/// connection's pending deadline, then closes.
async fn finish_reply(
    mut stream: TcpStream,
    peer: SocketAddr,
    mut permit: ConnectionPermit,
    rest: Vec<u8>,
) {
    tokio::select! {
        _ = stream.write_all(&rest) => {}
        reason = permit.closed() => {
            tracing::debug!(%peer, %reason, "closing EPMD connection before the reply was read");
        }
    }
}

/// Unregisters the node of a connection however its task ends.
struct RegistrationGuard {
    shared: Arc<Shared>,
    conn: u64,
}

impl Drop for RegistrationGuard {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.stoppers.remove(&self.conn);
        if let Some(entry) = state.registry.unregister_conn(self.conn) {
            tracing::info!(name = %entry.name, port = entry.port, "node unregistered");
        }
    }
}

/// Serves one connection: one request, one reply, and for a registration, holds on.
async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    mut permit: ConnectionPermit,
    shared: Arc<Shared>,
    mut buf: Vec<u8>,
) {
    let conn = permit.id().0;
    let mut shutdown = shared.shutdown.subscribe();
    // No TCP_NODELAY: every reply is one write (a registered node's one reply, then
    // silence), which Nagle's algorithm never holds back, so the option would only cost
    // a system call per request.

    // 1. Read one complete request, within the pending deadline (starting from what the
    //    accept loop has read already).
    let request = loop {
        match decode_request(&buf, peer) {
            Decoded::Request(request) => break request,
            Decoded::Partial => {}
            Decoded::Invalid => return,
        }
        // Into `buf` directly: a scratch array here would live in the task's future.
        buf.reserve(512);
        tokio::select! {
            read = stream.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            reason = permit.closed() => {
                tracing::debug!(%peer, %reason, "closing pending EPMD connection");
                return;
            }
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        }
    };

    // 2. Let the registry decide.
    let local_peer = is_local_peer(peer.ip(), local.ip());
    let may_register = match &request {
        Request::Alive2(entry) if local_peer => match permit.promote() {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%peer, name = %entry.name, %error, "refusing EPMD registration");
                false
            }
        },
        _ => false,
    };
    let ctx = request_context(conn, local_peer, local, &shared, may_register);
    let kind = request.kind();
    let stop = Arc::new(Notify::new());
    let (outcome, guard) = {
        let mut state = shared.lock();
        let outcome = state.registry.handle(request, &ctx);
        let guard = match outcome.after {
            After::KeepRegistered => {
                state.stoppers.insert(conn, Arc::clone(&stop));
                Some(RegistrationGuard {
                    shared: Arc::clone(&shared),
                    conn,
                })
            }
            After::CloseOther(other) => {
                if let Some(stopper) = state.stoppers.remove(&other) {
                    stopper.notify_one();
                }
                None
            }
            After::Close | After::Shutdown => None,
        };
        (outcome, guard)
    };
    log_note(&outcome.note, peer, kind);

    // 3. Reply, within the pending deadline (a registered node's 6 bytes always fit in
    //    the socket buffer).
    if !outcome.reply.is_empty() {
        let written = tokio::select! {
            written = stream.write_all(&outcome.reply) => written.is_ok(),
            reason = permit.closed() => {
                tracing::debug!(%peer, %reason, "closing EPMD connection before the reply was read");
                false
            }
            _ = shutdown.wait_for(|stopped| *stopped) => false,
        };
        if !written {
            return; // the guard, if any, unregisters
        }
    }
    match outcome.after {
        // Dropping the stream closes it (FIN): no separate shutdown call.
        After::Close | After::CloseOther(_) => return,
        After::Shutdown => {
            let _ = stream.shutdown().await;
            tracing::info!(%peer, "EPMD killed by request; shutting down");
            shared.shutdown.send_replace(true);
            return;
        }
        After::KeepRegistered => {}
    }

    // 4. Hold the registration until the node closes, STOP, or shutdown.
    let mut scratch = [0u8; 64];
    let why = tokio::select! {
        read = stream.read(&mut scratch) => match read {
            Ok(0) => "connection closed by the node",
            Ok(_) => "unexpected bytes on the registration connection",
            Err(_) => "connection error",
        },
        () = stop.notified() => "STOP request",
        _ = shutdown.wait_for(|stopped| *stopped) => "server shutting down",
    };
    tracing::debug!(%peer, reason = why, "registration connection ends");
    drop(guard);
}

fn log_note(note: &Note, peer: SocketAddr, kind: &'static str) {
    match note {
        Note::Registered { name, creation } => {
            tracing::info!(%peer, %name, creation, "node registered");
        }
        Note::NameInUse(name) => {
            tracing::info!(%peer, %name, "registration refused: name in use");
        }
        Note::LimitReached | Note::Refused => {
            tracing::warn!(%peer, "registration refused");
        }
        Note::NotLocal => {
            tracing::warn!(%peer, request = kind, "local-only request from a remote peer; closing");
        }
        Note::KillRefused => tracing::info!(%peer, "KILL refused: nodes are registered"),
        Note::Killed => {}
        Note::StopRefused => {
            tracing::info!(%peer, "STOP refused: relaxed command check is off");
        }
        Note::Stopped(name) => tracing::info!(%peer, %name, "node stopped by request"),
        Note::Served => tracing::trace!(%peer, request = kind, "served"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_peers() {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(is_local_peer(v4("127.0.0.1"), v4("127.0.0.1")));
        assert!(is_local_peer(v4("127.1.2.3"), v4("127.0.0.1")));
        assert!(is_local_peer(v4("::1"), v4("::1")));
        assert!(is_local_peer(v4("::ffff:127.0.0.1"), v4("::1")));
        assert!(is_local_peer(v4("10.0.0.5"), v4("10.0.0.5")));
        assert!(!is_local_peer(v4("10.0.0.6"), v4("10.0.0.5")));
    }

    #[tokio::test]
    async fn port_zero_is_shared_between_addresses() {
        let server = EpmdServer::bind(EpmdServerConfig::localhost(0))
            .await
            .unwrap();
        let addrs = server.local_addrs().to_vec();
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.port() == server.port() && a.port() != 0)
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn bind_errors_name_the_address() {
        let first = EpmdServer::bind(EpmdServerConfig {
            addrs: vec!["127.0.0.1:0".parse().unwrap()],
            ..EpmdServerConfig::default()
        })
        .await
        .unwrap();
        let taken = first.local_addrs()[0];
        let err = EpmdServer::bind(EpmdServerConfig {
            addrs: vec![taken],
            ..EpmdServerConfig::default()
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains(&taken.to_string()), "{err}");
        let err = EpmdServer::bind(EpmdServerConfig {
            addrs: vec![],
            ..EpmdServerConfig::default()
        })
        .await
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn a_server_whose_limits_take_no_connection_answers_no_query() {
        use crate::listener::ListenerLimits;
        let server = EpmdServer::bind(EpmdServerConfig {
            addrs: vec!["127.0.0.1:0".parse().unwrap()],
            limits: ListenerLimits {
                max_pending: 0,
                ..ListenerLimits::default()
            },
            ..EpmdServerConfig::default()
        })
        .await
        .unwrap();
        let request = Request::PortPlease2 {
            name: "anyone".into(),
        }
        .encode()
        .unwrap();
        for _ in 0..3 {
            let mut stream = TcpStream::connect(server.local_addrs()[0]).await.unwrap();
            // The request goes with the connect, so it is there when the server accepts.
            let _ = stream.write_all(&request).await;
            let mut reply = Vec::new();
            let _ = stream.read_to_end(&mut reply).await;
            assert!(reply.is_empty(), "answered: {reply:?}");
        }
        assert_eq!(server.stats().refused, 3);
        server.shutdown().await;
    }
}
