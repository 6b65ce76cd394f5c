//! The transport of a distribution connection, plain TCP or TLS, as one type: the one
//! place of the node that knows whether TLS is compiled in.
//!
//! [`Security`] is what the node was configured with: it runs the TLS handshake (when
//! configured) over a TCP stream, dialled or accepted, and says which TLS failure an
//! I/O error of the distribution handshake hides. [`Stream`] is the connected stream
//! either way, and [`ReadHalf`] / [`WriteHalf`] its halves for a connection's driver.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::NodeName;
use crate::handshake::LengthPrefix;

use super::{NodeConfig, StartError, TlsError};

/// Which end of a connection this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// It dialled.
    Client,
    /// It accepted.
    Server,
}

/// How the node secures its distribution connections.
pub(super) struct Security {
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsContext>,
}

impl Security {
    /// The node's security, from its configuration: checks a TLS configuration and logs
    /// its warnings.
    pub(super) fn new(cfg: &NodeConfig) -> Result<Security, StartError> {
        #[cfg(feature = "tls")]
        {
            let listening = cfg.listen.is_some();
            let tls = match &cfg.tls {
                Some(t) => {
                    let ctx = crate::tls::TlsContext::new(t, listening)?;
                    for warning in t.warnings(listening) {
                        tracing::warn!(node = %cfg.name, "{warning}");
                    }
                    Some(ctx)
                }
                None => None,
            };
            Ok(Security { tls })
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = cfg;
            Ok(Security {})
        }
    }

    /// Whether connections run inside TLS.
    pub(super) fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// The handshake's length prefix: 2 bytes over TCP, 4 inside TLS (as OTP's
    /// `inet_tls_dist` frames it).
    pub(super) fn prefix(&self) -> LengthPrefix {
        if self.is_tls() {
            LengthPrefix::U32
        } else {
            LengthPrefix::U16
        }
    }

    /// The client side of a TCP connection to `peer`: the TLS handshake, within
    /// `timeout`, when TLS is configured.
    pub(super) async fn connect(
        &self,
        peer: &NodeName,
        tcp: TcpStream,
        timeout: Duration,
    ) -> Result<Stream, TlsError> {
        let _ = tcp.set_nodelay(true);
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let stream = tls.connect(peer, tcp, timeout).await?;
            return Ok(Stream::Client(Box::new(stream)));
        }
        let _ = (peer, timeout);
        Ok(Stream::Tcp(tcp))
    }

    /// The server side of an accepted TCP connection: the TLS handshake, within
    /// `timeout`, when TLS is configured. `None` when this node cannot be a TLS server
    /// (a client-only configuration; a listening node always can).
    pub(super) async fn accept(
        &self,
        tcp: TcpStream,
        timeout: Duration,
    ) -> Option<Result<Stream, TlsError>> {
        let _ = tcp.set_nodelay(true);
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let accepted = tls.accept(tcp, timeout).await?;
            return Some(accepted.map(|s| Stream::Server(Box::new(s))));
        }
        let _ = timeout;
        Some(Ok(Stream::Tcp(tcp)))
    }

    /// The TLS failure an I/O error of the distribution handshake stands for, if any: a
    /// TLS 1.3 server judges the client's certificate after the client considers the
    /// TLS handshake done, so its alert arrives during the distribution handshake.
    pub(super) fn classify_io(&self, e: &io::Error, role: Role) -> Option<TlsError> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let role = match role {
                Role::Client => crate::tls::Role::Client,
                Role::Server => crate::tls::Role::Server,
            };
            return tls.classify_io(e, role);
        }
        let _ = (e, role);
        None
    }
}

/// A connected distribution stream, plain or inside TLS.
pub(super) enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS, dialled.
    #[cfg(feature = "tls")]
    Client(Box<crate::tls::ClientStream>),
    /// TLS, accepted.
    #[cfg(feature = "tls")]
    Server(Box<crate::tls::ServerStream>),
}

impl Stream {
    /// The stream's halves, for a connection's driver: TCP splits without a lock, TLS
    /// (one state for both directions) through tokio's split.
    pub(super) fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            #[cfg(feature = "tls")]
            tls => {
                let (r, w) = tokio::io::split(tls);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }
}

/// Delegates a poll method to the variant a transport enum holds.
macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr, [$($(#[$meta:meta])* $variant:ident),+]) => {
        match $self.get_mut() {
            $($(#[$meta])* Self::$variant($s) => $call,)+
        }
    };
}

/// Delegates to a [`Stream`]'s variant.
macro_rules! stream {
    ($self:ident, $s:ident => $call:expr) => {
        delegate!($self, $s => $call, [Tcp, #[cfg(feature = "tls")] Client, #[cfg(feature = "tls")] Server])
    };
}

/// Delegates to a [`ReadHalf`]'s or [`WriteHalf`]'s variant.
macro_rules! half {
    ($self:ident, $s:ident => $call:expr) => {
        delegate!($self, $s => $call, [Tcp, #[cfg(feature = "tls")] Tls])
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        stream!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        stream!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        stream!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        stream!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// The read half of a connection's stream.
pub(super) enum ReadHalf {
    /// Plain TCP.
    Tcp(OwnedReadHalf),
    /// Inside TLS.
    #[cfg(feature = "tls")]
    Tls(tokio::io::ReadHalf<Stream>),
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        half!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

/// The write half of a connection's stream.
pub(super) enum WriteHalf {
    /// Plain TCP.
    Tcp(OwnedWriteHalf),
    /// Inside TLS.
    #[cfg(feature = "tls")]
    Tls(tokio::io::WriteHalf<Stream>),
}

impl WriteHalf {
    /// Lets go of the write half once the connection is over. Closing the socket ends
    /// the connection anyway (a FIN, or a reset if the peer's bytes were left unread),
    /// so a TCP write half skips its own `shutdown` call on drop.
    pub(super) fn release(self) {
        match self {
            WriteHalf::Tcp(w) => w.forget(),
            #[cfg(feature = "tls")]
            WriteHalf::Tls(_) => {}
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        half!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        half!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        half!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}
