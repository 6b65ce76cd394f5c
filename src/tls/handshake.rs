//! TLS handshakes on distribution sockets, and what their failures mean.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError};

use crate::NodeName;
use crate::node::TlsError;

use super::{ServerNameIndication, TlsContext};

/// A socket that remembers whether the peer ever sent a byte, to tell "the peer does
/// not speak TLS" from a TLS handshake that started and failed.
#[derive(Debug)]
pub(crate) struct Tracked<S> {
    inner: S,
    received: bool,
    flag: Arc<AtomicBool>,
}

impl<S> Tracked<S> {
    fn new(inner: S) -> (Tracked<S>, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        (
            Tracked {
                inner,
                received: false,
                flag: flag.clone(),
            },
            flag,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if !this.received && buf.filled().len() > before {
            this.received = true;
            this.flag.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A TLS distribution connection we dialled.
pub(crate) type ClientStream = tokio_rustls::client::TlsStream<Tracked<TcpStream>>;
/// A TLS distribution connection we accepted.
pub(crate) type ServerStream = tokio_rustls::server::TlsStream<Tracked<TcpStream>>;

/// Which end of the TLS handshake we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

impl TlsContext {
    /// Runs the client handshake with `peer` over `tcp`, within `timeout`.
    pub(crate) async fn connect(
        &self,
        peer: &NodeName,
        tcp: TcpStream,
        timeout: Duration,
    ) -> Result<ClientStream, TlsError> {
        let name = match &self.sni {
            ServerNameIndication::NodeHost => server_name(peer.host())?,
            ServerNameIndication::Name(n) => server_name(n)?,
            // Neither sent nor checked; rustls still wants one.
            ServerNameIndication::Disable => server_name(peer.host()).unwrap_or_else(|_| {
                ServerName::from(std::net::IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED))
            }),
        };
        let (io, received) = Tracked::new(tcp);
        let connect = self.connector.connect(name, io).into_fallible();
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err((e, _io))) => {
                Err(self.classify(&e, Role::Client, received.load(Ordering::Relaxed)))
            }
            Err(_) => Err(timeout_error(
                timeout,
                received.load(Ordering::Relaxed),
                Role::Client,
            )),
        }
    }

    /// Runs the server handshake over `tcp`, within `timeout`. `None` if this node has
    /// no server side (never the case for a listening node).
    pub(crate) async fn accept(
        &self,
        tcp: TcpStream,
        timeout: Duration,
    ) -> Option<Result<ServerStream, TlsError>> {
        let acceptor = self.acceptor.as_ref()?;
        let (io, received) = Tracked::new(tcp);
        let accept = acceptor.accept(io).into_fallible();
        Some(match tokio::time::timeout(timeout, accept).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err((e, _io))) => {
                Err(self.classify(&e, Role::Server, received.load(Ordering::Relaxed)))
            }
            Err(_) => Err(timeout_error(
                timeout,
                received.load(Ordering::Relaxed),
                Role::Server,
            )),
        })
    }

    /// Classifies an I/O error of a TLS stream, during the TLS handshake or the
    /// distribution handshake that follows it (TLS 1.3 servers reject a client
    /// certificate after the client considers the handshake done).
    pub(crate) fn classify_io(&self, e: &io::Error, role: Role) -> Option<TlsError> {
        let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
        Some(classify_rustls(tls, role, self.has_client_cert))
    }

    fn classify(&self, e: &io::Error, role: Role, received: bool) -> TlsError {
        if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return classify_rustls(tls, role, self.has_client_cert);
        }
        let eof = matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        );
        match (eof, received, role) {
            (true, false, Role::Client) => TlsError::PeerNotTls {
                detail: "it closed the connection without answering our TLS ClientHello".into(),
            },
            (true, false, Role::Server) => TlsError::Closed {
                detail: "the client closed the connection before sending anything".into(),
            },
            (true, true, _) => TlsError::Closed {
                detail: "the peer closed the connection during the TLS handshake, without an alert"
                    .into(),
            },
            (false, ..) => TlsError::Handshake {
                detail: e.to_string(),
            },
        }
    }
}

fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    // An IPv6 literal may come bracketed.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::InvalidServerName {
        name: host.to_owned(),
    })
}

fn timeout_error(after: Duration, received: bool, role: Role) -> TlsError {
    match (received, role) {
        (false, Role::Client) => TlsError::PeerNotTls {
            detail: format!("it sent nothing back to our TLS ClientHello within {after:?}"),
        },
        _ => TlsError::Timeout { after },
    }
}

fn is_certificate_alert(a: AlertDescription) -> bool {
    matches!(
        a,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError
    )
}

fn alert_name(a: AlertDescription) -> String {
    // OTP's names for the alerts it sends.
    match a {
        AlertDescription::BadCertificate => "bad_certificate".into(),
        AlertDescription::UnsupportedCertificate => "unsupported_certificate".into(),
        AlertDescription::CertificateRevoked => "certificate_revoked".into(),
        AlertDescription::CertificateExpired => "certificate_expired".into(),
        AlertDescription::CertificateUnknown => "certificate_unknown".into(),
        AlertDescription::UnknownCA => "unknown_ca".into(),
        AlertDescription::AccessDenied => "access_denied".into(),
        AlertDescription::DecryptError => "decrypt_error".into(),
        AlertDescription::HandshakeFailure => "handshake_failure".into(),
        AlertDescription::CertificateRequired => "certificate_required".into(),
        AlertDescription::ProtocolVersion => "protocol_version".into(),
        AlertDescription::InsufficientSecurity => "insufficient_security".into(),
        other => format!("{other:?}"),
    }
}

pub(super) fn classify_rustls(e: &rustls::Error, role: Role, has_client_cert: bool) -> TlsError {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer
            | CertificateError::BadSignature
            | CertificateError::UnhandledCriticalExtension => TlsError::PeerCertificateUntrusted {
                reason: e.to_string(),
            },
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsError::PeerNameMismatch {
                    reason: e.to_string(),
                }
            }
            _ => TlsError::PeerCertificateInvalid {
                reason: e.to_string(),
            },
        },
        E::NoCertificatesPresented => TlsError::PeerPresentedNoCertificate,
        E::AlertReceived(AlertDescription::CertificateRequired) => {
            TlsError::ClientCertificateRequired
        }
        E::AlertReceived(AlertDescription::HandshakeFailure)
            if role == Role::Client && !has_client_cert =>
        {
            TlsError::ClientCertificateRequired
        }
        E::AlertReceived(a) if is_certificate_alert(*a) => TlsError::CertificateRejected {
            alert: alert_name(*a),
        },
        E::AlertReceived(a) => TlsError::Handshake {
            detail: format!(
                "the peer aborted the TLS handshake with alert {}",
                alert_name(*a)
            ),
        },
        E::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType
            | rustls::InvalidMessage::UnknownProtocolVersion
            | rustls::InvalidMessage::MessageTooLarge,
        ) => TlsError::PeerNotTls {
            detail: "it sent bytes that are not a TLS record".into(),
        },
        other => TlsError::Handshake {
            detail: other.to_string(),
        },
    }
}
