//! Errors of the local node: connecting, sending, starting.

use std::net::SocketAddr;
use std::time::Duration;

use crate::epmd::EpmdError;
use crate::handshake::HandshakeError;
use crate::{Fault, NodeName};

/// Why a connection to a node could not be set up. Each variant names the node and says
/// what to check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The peer's name is of the other kind (short vs long) than ours.
    #[error(transparent)]
    NameKind(#[from] crate::NodeNameError),
    /// The peer's host name does not resolve.
    #[error("cannot resolve the host of {node}: {source}")]
    Resolve {
        /// The node dialled.
        node: NodeName,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// EPMD on the peer's host cannot be reached.
    #[error("cannot look up {node}: {source}")]
    EpmdUnreachable {
        /// The node dialled.
        node: NodeName,
        /// The EPMD error.
        #[source]
        source: EpmdError,
    },
    /// EPMD on the peer's host does not know the node.
    #[error(
        "{node} is not registered in EPMD at {epmd} (registered there: {}): is the node running, and under this exact name?",
        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
    )]
    NotRegistered {
        /// The node dialled.
        node: NodeName,
        /// The EPMD asked.
        epmd: SocketAddr,
        /// The names EPMD does know.
        known: Vec<String>,
    },
    /// The TCP connection to the node's distribution port was refused.
    #[error("{node} refused the TCP connection at {addr}: the node is down or the port is wrong")]
    Refused {
        /// The node dialled.
        node: NodeName,
        /// The address dialled.
        addr: SocketAddr,
    },
    /// The TCP connection to the node's distribution port timed out.
    #[error(
        "TCP connection to {node} at {addr} timed out after {after:?}: host unreachable or filtered"
    )]
    ConnectTimeout {
        /// The node dialled.
        node: NodeName,
        /// The address dialled.
        addr: SocketAddr,
        /// The limit.
        after: Duration,
    },
    /// Another socket error while connecting.
    #[error("cannot connect to {node} at {addr}: {source}")]
    Io {
        /// The node dialled.
        node: NodeName,
        /// The address dialled.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The distribution handshake failed (wrong cookie, wrong name, refused, timeout...).
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// TLS distribution failed, or one side uses it and the other does not.
    #[error("{node} at {addr}: {kind}")]
    Tls {
        /// The node dialled.
        node: NodeName,
        /// The address dialled.
        addr: SocketAddr,
        /// What went wrong.
        #[source]
        kind: TlsError,
    },
    /// The local node has been stopped.
    #[error("the local node {0} has been stopped")]
    NodeStopped(NodeName),
}

impl ConnectError {
    /// Whose fault the failure is.
    pub fn fault(&self) -> Fault {
        match self {
            ConnectError::NameKind(_) => Fault::PeerIncompatible,
            ConnectError::Resolve { .. }
            | ConnectError::EpmdUnreachable { .. }
            | ConnectError::Io { .. } => Fault::Unreachable,
            ConnectError::NotRegistered { .. } | ConnectError::Refused { .. } => Fault::NotRunning,
            ConnectError::ConnectTimeout { .. } => Fault::Timeout,
            ConnectError::Handshake(h) => h.fault(),
            ConnectError::Tls { kind, .. } => kind.fault(),
            ConnectError::NodeStopped(_) => Fault::Local,
        }
    }

    /// Whether trying again later may succeed (the peer may be starting, or the network
    /// may recover), as opposed to a configuration error such as a wrong cookie: whether
    /// its [`fault`](Self::fault) is transient.
    pub fn is_transient(&self) -> bool {
        self.fault().is_transient()
    }
}

/// Why a TLS distribution connection failed, in either direction. Holds no key
/// material: reasons are rustls' descriptions of certificates and alerts.
///
/// Exists without the `tls` feature too, because a plain node must be able to say that
/// its peer uses TLS ([`TlsError::PeerUsesTls`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The peer's certificate does not lead to a CA this node trusts (a wrong CA, a
    /// self-signed certificate, a bad signature).
    #[error(
        "the peer's certificate is not trusted ({reason}): it must be signed by a CA in \
         this node's cacertfile"
    )]
    PeerCertificateUntrusted {
        /// rustls' description.
        reason: String,
    },
    /// The server's certificate does not name the host dialled (the host part of the
    /// node name, as OTP checks it).
    #[error(
        "the peer's certificate does not name the host dialled ({reason}): add the host to \
         the certificate's subjectAltName, or set server_name_indication (disable turns \
         the host name check off)"
    )]
    PeerNameMismatch {
        /// rustls' description, with the names expected and presented.
        reason: String,
    },
    /// The peer's certificate is otherwise unusable (expired, not yet valid, wrong key
    /// usage, chain longer than `depth`).
    #[error("the peer's certificate is invalid: {reason}")]
    PeerCertificateInvalid {
        /// rustls' description.
        reason: String,
    },
    /// (Server side) the client presented no certificate and this node requires one.
    #[error(
        "the peer presented no client certificate and this node requires one \
         (fail_if_no_peer_cert)"
    )]
    PeerPresentedNoCertificate,
    /// The peer requires a client certificate and this node presented none.
    #[error(
        "the peer requires a client certificate (fail_if_no_peer_cert) and this node \
         presents none: set the client certfile and keyfile"
    )]
    ClientCertificateRequired,
    /// The peer rejected this node's certificate.
    #[error(
        "the peer rejected this node's certificate (TLS alert {alert}): it must be signed \
         by a CA in the peer's cacertfile (and a server certificate must name the host \
         the peer dials)"
    )]
    CertificateRejected {
        /// The alert the peer sent, by OTP's name (`unknown_ca`, `bad_certificate`...).
        alert: String,
    },
    /// This node speaks plain TCP and the peer answered with a TLS record.
    #[error(
        "the peer uses TLS distribution (-proto_dist inet_tls): configure TLS (NodeBuilder::tls)"
    )]
    PeerUsesTls,
    /// This node speaks TLS and the peer does not.
    #[error("the peer does not speak TLS: is it a plain -proto_dist inet_tcp node? ({detail})")]
    PeerNotTls {
        /// What the peer did.
        detail: String,
    },
    /// The TLS handshake took longer than the handshake timeout.
    #[error("the TLS handshake did not complete within {after:?}")]
    Timeout {
        /// The limit.
        after: Duration,
    },
    /// The connection closed during the TLS handshake.
    #[error("{detail}")]
    Closed {
        /// What happened.
        detail: String,
    },
    /// The name to check the server's certificate against is not a DNS name or an IP
    /// address.
    #[error(
        "{name:?} is not a DNS name or an IP address, so no certificate can match it: set \
         server_name_indication"
    )]
    InvalidServerName {
        /// The name.
        name: String,
    },
    /// Any other TLS failure (no common version or cipher suite, protocol errors).
    #[error("TLS handshake failed: {detail}")]
    Handshake {
        /// What happened.
        detail: String,
    },
}

impl TlsError {
    /// Whose fault the failure is.
    pub fn fault(&self) -> Fault {
        match self {
            TlsError::PeerCertificateUntrusted { .. }
            | TlsError::PeerNameMismatch { .. }
            | TlsError::PeerCertificateInvalid { .. }
            | TlsError::PeerPresentedNoCertificate
            | TlsError::ClientCertificateRequired
            | TlsError::CertificateRejected { .. } => Fault::Rejected,
            TlsError::PeerUsesTls | TlsError::PeerNotTls { .. } => Fault::PeerIncompatible,
            TlsError::Timeout { .. } => Fault::Timeout,
            // `Handshake` also carries the socket errors of the TLS handshake (a network
            // or host unreachable), so it counts as unreachable: worth a retry.
            TlsError::Closed { .. } | TlsError::Handshake { .. } => Fault::Unreachable,
            TlsError::InvalidServerName { .. } => Fault::Local,
        }
    }
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No connection to the destination node could be set up.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The message cannot be encoded (e.g. an atom longer than 255 characters).
    #[error("cannot encode the message: {0}")]
    Encode(#[from] crate::term::EncodeError),
    /// The message is larger than the maximum frame size.
    #[error("message of {len} bytes exceeds the maximum frame size {max}")]
    TooLarge {
        /// Encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The connection closed before the message could be queued.
    #[error("the connection to {0} closed")]
    ConnectionClosed(NodeName),
    /// The destination is not a valid node name.
    #[error("invalid destination node {0:?}")]
    BadNode(String),
}

/// Why [`NodeBuilder::start_client`](super::NodeBuilder::start_client) found no name to
/// connect under.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientStartError {
    /// The node could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Connecting to the peer failed for another reason than a name in use.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The peer has live connections from every name of the pool.
    #[error(
        "{peer} already has live connections from all {pool} names of the pool starting at \
         {first}: other runs of this tool hold them; wait for one to finish, or use a larger pool"
    )]
    PoolExhausted {
        /// The peer.
        peer: NodeName,
        /// The first name of the pool.
        first: NodeName,
        /// The size of the pool.
        pool: u16,
    },
}

/// Why the local node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The distribution listener could not bind.
    #[error("cannot listen for distribution connections on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// EPMD refused or could not take the registration.
    #[error("cannot register {node} in EPMD: {source}")]
    Epmd {
        /// Our name.
        node: NodeName,
        /// The EPMD error.
        #[source]
        source: EpmdError,
    },
    /// The configuration is inconsistent.
    #[error("invalid node configuration: {0}")]
    Config(String),
    /// The TLS configuration cannot be used (a file is missing or malformed, or the
    /// options contradict each other).
    #[cfg(feature = "tls")]
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsConfigError),
}

/// Why a name could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// Another mailbox holds the name.
    #[error("the name {0} is already registered")]
    AlreadyRegistered(String),
    /// The name is reserved by the node itself (`net_kernel`, ...).
    #[error("the name {0} is reserved by the node")]
    Reserved(String),
}
