//! An async EPMD client: look nodes up, list them, register a node.
//!
//! Each call opens one TCP connection, as EPMD serves one request per connection. The
//! timeout (5 s by default) applies to the connect and to every read and write. Nothing
//! EPMD sends can make the client panic: malformed replies are [`EpmdError::Protocol`].
//!
//! ```no_run
//! use std::time::Duration;
//! use autocluster::epmd::{EpmdClient, NodeEntry};
//!
//! # async fn demo() -> Result<(), autocluster::epmd::EpmdError> {
//! let epmd = EpmdClient::for_host("db1.example.com", 4369).await?
//!     .with_timeout(Duration::from_secs(2));
//! match epmd.port_please("rabbit").await? {
//!     Some(node) => println!("rabbit@db1 listens on {}", node.port),
//!     None => println!("no node called rabbit on db1"),
//! }
//!
//! let local = EpmdClient::localhost();
//! let registration = local.register(NodeEntry::new("probe", 45000).hidden()).await?;
//! tokio::select! {
//!     () = registration.closed() => eprintln!("epmd went away: we are unregistered"),
//!     () = tokio::time::sleep(Duration::from_secs(60)) => {}
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

use super::codec::{
    Alive2Form, Alive2Response, CodecError, DumpResponse, MAX_NAMES_RESPONSE_LEN,
    MAX_PORT2_RESPONSE_LEN, NamesResponse, NodeEntry, PortPlease2Response, Request,
};
use crate::wire::Status;

/// The client's default timeout for the connect and for each read and write.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong talking to EPMD. Every variant names the EPMD address.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EpmdError {
    /// The TCP connection could not be made.
    #[error(
        "cannot connect to EPMD at {addr}: {source}; is epmd running? \
         (epmd -daemon, or the crate's embedded server)"
    )]
    Unreachable {
        /// The EPMD address.
        addr: SocketAddr,
        /// The connect error.
        #[source]
        source: io::Error,
    },
    /// A step took longer than the client's timeout.
    #[error("EPMD at {addr} did not answer in time ({step})")]
    Timeout {
        /// The EPMD address.
        addr: SocketAddr,
        /// Which step: `"connect"`, `"send request"`, `"read reply"`, ...
        step: &'static str,
    },
    /// EPMD's reply is malformed, oversized, or cut short.
    #[error("bad reply from EPMD at {addr}: {detail}")]
    Protocol {
        /// The EPMD address.
        addr: SocketAddr,
        /// What is wrong.
        detail: String,
    },
    /// EPMD refused the registration (`ALIVE2` result ≠ 0): a live node holds the name
    /// (epmd also refuses an invalid name this way).
    #[error(
        "EPMD at {addr} refused to register {name:?}: a node with that name is registered already"
    )]
    NameInUse {
        /// The EPMD address.
        addr: SocketAddr,
        /// The name.
        name: String,
    },
    /// An I/O error after the connection was made.
    #[error("I/O error talking to EPMD at {addr}: {source}")]
    Io {
        /// The EPMD address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The request could not be encoded (a name or extra field beyond epmd's limits).
    #[error("invalid request for EPMD at {addr}: {source}")]
    InvalidRequest {
        /// The EPMD address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: CodecError,
    },
    /// The EPMD host name did not resolve (no address is known yet).
    #[error("cannot resolve EPMD host {host:?}: {source}")]
    Resolve {
        /// The host as given, with the port.
        host: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
}

impl EpmdError {
    /// The EPMD address the error is about (`None` when the host did not resolve).
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            EpmdError::Unreachable { addr, .. }
            | EpmdError::Timeout { addr, .. }
            | EpmdError::Protocol { addr, .. }
            | EpmdError::NameInUse { addr, .. }
            | EpmdError::Io { addr, .. }
            | EpmdError::InvalidRequest { addr, .. } => Some(*addr),
            EpmdError::Resolve { .. } => None,
        }
    }
}

/// A client for one EPMD. Cheap to clone; holds no connection.
#[derive(Debug, Clone)]
pub struct EpmdClient {
    addr: SocketAddr,
    timeout: Duration,
}

impl EpmdClient {
    /// A client for the EPMD at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        EpmdClient {
            addr,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A client for the local EPMD: `127.0.0.1` and [`port_from_env`](super::port_from_env)
    /// (`ERL_EPMD_PORT`, default 4369), as OTP's `erl_epmd` does for an IPv4 node.
    pub fn localhost() -> Self {
        Self::new(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            super::port_from_env(),
        ))
    }

    /// A client for the EPMD on `host` (a name, an IPv4 address, or an IPv6 address with
    /// or without brackets), using the first address the resolver returns.
    pub async fn for_host(host: &str, port: u16) -> Result<Self, EpmdError> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Self::new(SocketAddr::new(ip, port)));
        }
        let resolve_error = |source| EpmdError::Resolve {
            host: format!("{host}:{port}"),
            source,
        };
        let lookup = tokio::time::timeout(DEFAULT_TIMEOUT, tokio::net::lookup_host((bare, port)))
            .await
            .map_err(|_| {
                resolve_error(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "name resolution timed out",
                ))
            })?
            .map_err(resolve_error)?;
        let mut addrs: Vec<SocketAddr> = lookup.collect();
        if addrs.is_empty() {
            return Err(resolve_error(io::Error::new(
                io::ErrorKind::NotFound,
                "no address",
            )));
        }
        Ok(Self::new(addrs.remove(0)))
    }

    /// The same client with another timeout for the connect and each read and write.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The EPMD address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The timeout for each step.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Looks up the node with alive name `alive` (`rabbit` for `rabbit@host`).
    /// `Ok(None)` when EPMD knows no such node.
    pub async fn port_please(&self, alive: &str) -> Result<Option<NodeEntry>, EpmdError> {
        let request = Request::PortPlease2 {
            name: alive.to_owned(),
        };
        let mut conn = self.request(&request).await?;
        let reply = conn
            .read_reply(PortPlease2Response::decode, MAX_PORT2_RESPONSE_LEN)
            .await?;
        match reply {
            PortPlease2Response::Found(entry) if entry.name == alive => Ok(Some(entry)),
            PortPlease2Response::Found(entry) => Err(self.protocol(format!(
                "asked for {alive:?}, got the entry of {:?}",
                entry.name
            ))),
            PortPlease2Response::NotFound { .. } => Ok(None),
        }
    }

    /// Lists the registered nodes as `(alive name, port)`, in EPMD's order.
    pub async fn names(&self) -> Result<Vec<(String, u16)>, EpmdError> {
        let reply = self.names_response().await?;
        Ok(reply.nodes.into_iter().map(|n| (n.name, n.port)).collect())
    }

    /// The whole `NAMES` reply, including the port EPMD reports. (OTP's `erl_epmd`
    /// rejects a reply whose port differs from the one it dialled; this client leaves
    /// that check to the caller, as a port-forwarded EPMD reports its own port.)
    pub async fn names_response(&self) -> Result<NamesResponse, EpmdError> {
        let mut conn = self.request(&Request::Names).await?;
        let bytes = conn.read_to_end(MAX_NAMES_RESPONSE_LEN).await?;
        NamesResponse::decode(&bytes).map_err(|e| self.protocol(e.to_string()))
    }

    /// The `DUMP` reply: registered and old names. EPMD serves it to local clients only
    /// (it closes the connection on others, which shows here as a [`EpmdError::Protocol`]
    /// error).
    pub async fn dump(&self) -> Result<DumpResponse, EpmdError> {
        let mut conn = self.request(&Request::Dump).await?;
        let bytes = conn.read_to_end(MAX_NAMES_RESPONSE_LEN).await?;
        DumpResponse::decode(&bytes).map_err(|e| self.protocol(e.to_string()))
    }

    /// Registers a node (`ALIVE2_REQ`). EPMD keeps the registration for as long as the
    /// returned handle lives (it holds the connection open in a background task).
    ///
    /// EPMD serves registrations to local clients only: use the EPMD of the host the node
    /// runs on.
    pub async fn register(&self, entry: NodeEntry) -> Result<EpmdRegistration, EpmdError> {
        let name = entry.name.clone();
        let mut conn = self.request(&Request::Alive2(entry.clone())).await?;
        let reply = conn.read_reply(Alive2Response::decode, 6).await?;
        if !conn.buf.is_empty() {
            return Err(self.protocol(format!(
                "{} unexpected bytes after the ALIVE2 reply",
                conn.buf.len()
            )));
        }
        if !reply.is_ok() {
            return Err(EpmdError::NameInUse {
                addr: self.addr,
                name,
            });
        }
        tracing::debug!(epmd = %self.addr, name = %name, creation = reply.creation, "registered with EPMD");
        Ok(EpmdRegistration::spawn(
            conn.stream,
            self.clone(),
            entry,
            reply,
        ))
    }

    fn protocol(&self, detail: impl Into<String>) -> EpmdError {
        EpmdError::Protocol {
            addr: self.addr,
            detail: detail.into(),
        }
    }

    async fn connect(&self) -> Result<TcpStream, EpmdError> {
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| EpmdError::Timeout {
                addr: self.addr,
                step: "connect",
            })?
            .map_err(|source| EpmdError::Unreachable {
                addr: self.addr,
                source,
            })?;
        // No TCP_NODELAY: a request is one write on a fresh connection, which Nagle's
        // algorithm never holds back (nothing is in flight yet), so the option would
        // only cost a system call per lookup.
        Ok(stream)
    }

    /// Connects and sends `request`.
    async fn request(&self, request: &Request) -> Result<Conn<'_>, EpmdError> {
        let bytes = request
            .encode()
            .map_err(|source| EpmdError::InvalidRequest {
                addr: self.addr,
                source,
            })?;
        let mut stream = self.connect().await?;
        tokio::time::timeout(self.timeout, stream.write_all(&bytes))
            .await
            .map_err(|_| EpmdError::Timeout {
                addr: self.addr,
                step: "send request",
            })?
            .map_err(|source| EpmdError::Io {
                addr: self.addr,
                source,
            })?;
        Ok(Conn {
            client: self,
            stream,
            buf: Vec::new(),
        })
    }
}

/// One open request connection.
struct Conn<'a> {
    client: &'a EpmdClient,
    stream: TcpStream,
    /// Bytes read and not consumed yet.
    buf: Vec<u8>,
}

impl Conn<'_> {
    /// Reads once, appending to `buf`; `Ok(0)` at end of stream.
    async fn read_some(&mut self, step: &'static str) -> Result<usize, EpmdError> {
        let addr = self.client.addr;
        // Into the buffer directly (no zeroed scratch chunk to copy from).
        self.buf.reserve(4096);
        let n = tokio::time::timeout(self.client.timeout, self.stream.read_buf(&mut self.buf))
            .await
            .map_err(|_| EpmdError::Timeout { addr, step })?
            .map_err(|source| EpmdError::Io { addr, source })?;
        Ok(n)
    }

    /// Reads until `decode` completes; leaves any bytes after the reply in `buf`.
    async fn read_reply<T>(
        &mut self,
        decode: impl Fn(&[u8]) -> Result<Status<(T, usize)>, CodecError>,
        max_len: usize,
    ) -> Result<T, EpmdError> {
        loop {
            match decode(&self.buf) {
                Ok(Status::Complete((reply, used))) => {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                Ok(Status::Partial) => {}
                Err(e) => return Err(self.client.protocol(e.to_string())),
            }
            if self.buf.len() > max_len {
                return Err(self
                    .client
                    .protocol(format!("reply longer than {max_len} bytes")));
            }
            if self.read_some("read reply").await? == 0 {
                return Err(self.client.protocol(if self.buf.is_empty() {
                    "EPMD closed the connection without replying".to_owned()
                } else {
                    format!(
                        "EPMD closed the connection after {} bytes, mid-reply",
                        self.buf.len()
                    )
                }));
            }
        }
    }

    /// Reads until EPMD closes the connection, refusing more than `max_len` bytes.
    async fn read_to_end(&mut self, max_len: usize) -> Result<Vec<u8>, EpmdError> {
        while self.read_some("read reply").await? > 0 {
            if self.buf.len() > max_len {
                return Err(self
                    .client
                    .protocol(format!("reply longer than {max_len} bytes")));
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }
}

enum Command {
    /// Close our side and wait for EPMD to close its side.
    Deregister(oneshot::Sender<()>),
}

/// A node registration. EPMD keeps the node registered for as long as this handle lives:
/// dropping it closes the connection (EPMD then forgets the name), and so does
/// [`deregister`](Self::deregister), which also waits until EPMD has done so.
///
/// If EPMD goes away (restarted, killed) the registration is lost: a warning is logged,
/// [`is_active`](Self::is_active) turns false and [`closed`](Self::closed) resolves.
/// Register again to recover (OTP's `erl_epmd` does so every 2 s).
pub struct EpmdRegistration {
    client: EpmdClient,
    entry: NodeEntry,
    creation: u32,
    form: Alive2Form,
    active: watch::Receiver<bool>,
    commands: Option<oneshot::Sender<Command>>,
}

impl fmt::Debug for EpmdRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpmdRegistration")
            .field("epmd", &self.client.addr)
            .field("name", &self.entry.name)
            .field("port", &self.entry.port)
            .field("creation", &self.creation)
            .field("active", &self.is_active())
            .finish()
    }
}

impl EpmdRegistration {
    fn spawn(
        stream: TcpStream,
        client: EpmdClient,
        entry: NodeEntry,
        reply: Alive2Response,
    ) -> Self {
        let (active_tx, active_rx) = watch::channel(true);
        let (command_tx, command_rx) = oneshot::channel();
        tokio::spawn(hold(
            stream,
            client.clone(),
            entry.name.clone(),
            active_tx,
            command_rx,
        ));
        EpmdRegistration {
            client,
            entry,
            creation: reply.creation,
            form: reply.form,
            active: active_rx,
            commands: Some(command_tx),
        }
    }

    /// The creation number EPMD assigned: the node puts it in its pids, refs and ports,
    /// and in the handshake. 32 bits when EPMD answered `ALIVE2_X_RESP` (dist version 6),
    /// 1..=3 when it answered the old `ALIVE2_RESP`.
    pub fn creation(&self) -> u32 {
        self.creation
    }

    /// Which reply EPMD sent.
    pub fn reply_form(&self) -> Alive2Form {
        self.form
    }

    /// The registered entry.
    pub fn entry(&self) -> &NodeEntry {
        &self.entry
    }

    /// The EPMD address.
    pub fn epmd_addr(&self) -> SocketAddr {
        self.client.addr
    }

    /// Whether the connection to EPMD is still open (the node is still registered).
    pub fn is_active(&self) -> bool {
        *self.active.borrow()
    }

    /// Resolves when the registration is lost (EPMD closed the connection or it broke).
    pub async fn closed(&self) {
        let mut active = self.active.clone();
        // An error means the holding task ended, which also means the connection is gone.
        let _ = active.wait_for(|a| !*a).await;
    }

    /// Unregisters: closes the connection and waits (at most the client's timeout) until
    /// EPMD has closed its side too, so a lookup made afterwards no longer finds the name.
    pub async fn deregister(mut self) {
        let Some(commands) = self.commands.take() else {
            return;
        };
        let (done_tx, done_rx) = oneshot::channel();
        if commands.send(Command::Deregister(done_tx)).is_ok() {
            let _ = tokio::time::timeout(self.client.timeout * 2, done_rx).await;
        }
    }
}

/// Holds the registration connection open until EPMD closes it or the handle says stop.
async fn hold(
    mut stream: TcpStream,
    client: EpmdClient,
    name: String,
    active: watch::Sender<bool>,
    mut commands: oneshot::Receiver<Command>,
) {
    let addr = client.addr;
    let mut scratch = [0u8; 256];
    let mut warned_junk = false;
    loop {
        tokio::select! {
            read = stream.read(&mut scratch) => match read {
                Ok(0) => {
                    tracing::warn!(epmd = %addr, name = %name,
                        "EPMD closed the registration connection: the node is no longer registered");
                    break;
                }
                Ok(n) => {
                    // epmd never writes here; ignore it but keep the registration.
                    if !warned_junk {
                        tracing::warn!(epmd = %addr, name = %name, bytes = n,
                            "unexpected bytes from EPMD on a registration connection; ignoring them");
                        warned_junk = true;
                    }
                }
                Err(error) => {
                    tracing::warn!(epmd = %addr, name = %name, %error,
                        "the registration connection to EPMD failed: the node is no longer registered");
                    break;
                }
            },
            command = &mut commands => {
                if let Ok(Command::Deregister(done)) = command {
                    // Half-close, then wait for EPMD to see it and close its side.
                    let _ = stream.shutdown().await;
                    let drain = async {
                        while let Ok(n) = stream.read(&mut scratch).await {
                            if n == 0 {
                                break;
                            }
                        }
                    };
                    let _ = tokio::time::timeout(client.timeout, drain).await;
                    tracing::debug!(epmd = %addr, name = %name, "unregistered from EPMD");
                    active.send_replace(false);
                    let _ = done.send(());
                } else {
                    // The handle was dropped: closing the socket unregisters the node.
                    tracing::debug!(epmd = %addr, name = %name, "registration dropped; closing");
                }
                break;
            }
        }
    }
    active.send_replace(false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A one-shot fake EPMD answering `reply` to whatever it receives.
    async fn fake_epmd(reply: Vec<u8>, close: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(&reply).await;
            if close {
                drop(s);
            } else {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        });
        addr
    }

    fn client(addr: SocketAddr) -> EpmdClient {
        EpmdClient::new(addr).with_timeout(Duration::from_millis(500))
    }

    #[tokio::test]
    async fn garbage_replies_are_protocol_errors() {
        let cases: Vec<(Vec<u8>, bool)> = vec![
            (b"HTTP/1.1 400 Bad Request\r\n".to_vec(), true),
            (vec![119, 0, 0, 1], true),
            (vec![], true),
            (vec![119, 0, 0, 1, 77, 0, 0, 6, 0, 6, 0xff, 0xff], true),
        ];
        for (reply, close) in cases {
            let addr = fake_epmd(reply.clone(), close).await;
            let err = client(addr).port_please("a").await.unwrap_err();
            assert!(
                matches!(err, EpmdError::Protocol { .. }),
                "{reply:?}: {err}"
            );
            assert_eq!(err.addr(), Some(addr));
        }
    }

    #[tokio::test]
    async fn names_reply_is_capped() {
        let mut reply = vec![0, 0, 0x11, 0x11];
        reply.resize(MAX_NAMES_RESPONSE_LEN + 10_000, b'x');
        let addr = fake_epmd(reply, true).await;
        let err = client(addr).names().await.unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
    }

    #[tokio::test]
    async fn silent_epmd_times_out() {
        let addr = fake_epmd(vec![], false).await;
        let err = client(addr).names().await.unwrap_err();
        assert!(
            matches!(
                err,
                EpmdError::Timeout {
                    step: "read reply",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn refused_connection_says_how_to_start_epmd() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = client(addr).names().await.unwrap_err();
        assert!(matches!(err, EpmdError::Unreachable { .. }));
        assert!(err.to_string().contains("is epmd running?"), "{err}");
    }

    #[tokio::test]
    async fn old_and_new_alive2_replies_and_refusal() {
        let addr = fake_epmd(vec![121, 0, 0, 2], false).await;
        let reg = client(addr).register(NodeEntry::new("a", 1)).await.unwrap();
        assert_eq!((reg.creation(), reg.reply_form()), (2, Alive2Form::Old));
        assert!(reg.is_active());
        let addr = fake_epmd(vec![118, 0, 0xde, 0xad, 0xbe, 0xef], true).await;
        let reg = client(addr).register(NodeEntry::new("a", 1)).await.unwrap();
        assert_eq!(reg.creation(), 0xdead_beef);
        // The fake closes at once: the registration is lost and says so.
        tokio::time::timeout(Duration::from_secs(5), reg.closed())
            .await
            .unwrap();
        assert!(!reg.is_active());
        let addr = fake_epmd(vec![118, 1, 0, 0, 0, 99], true).await;
        let err = client(addr)
            .register(NodeEntry::new("a", 1))
            .await
            .unwrap_err();
        assert!(matches!(err, EpmdError::NameInUse { ref name, .. } if name == "a"));
    }

    #[tokio::test]
    async fn invalid_names_never_reach_the_wire() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let err = client(addr)
            .port_please(&"x".repeat(300))
            .await
            .unwrap_err();
        assert!(matches!(err, EpmdError::InvalidRequest { .. }), "{err}");
    }

    #[tokio::test]
    async fn for_host_accepts_ip_literals_and_names() {
        let c = EpmdClient::for_host("::1", 4369).await.unwrap();
        assert_eq!(c.addr(), "[::1]:4369".parse().unwrap());
        let c = EpmdClient::for_host("[::1]", 4370).await.unwrap();
        assert_eq!(c.addr(), "[::1]:4370".parse().unwrap());
        let c = EpmdClient::for_host("localhost", 4369).await.unwrap();
        assert!(c.addr().ip().is_loopback());
        let err = EpmdClient::for_host("no-such-host.invalid", 4369)
            .await
            .unwrap_err();
        assert!(matches!(err, EpmdError::Resolve { .. }), "{err}");
        assert_eq!(err.addr(), None);
    }
}
