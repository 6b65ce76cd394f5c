//! Whose fault a failure is: the one question a retry loop, a log level or an operator
//! asks of an error, answered by every connection-level error of the crate
//! ([`ConnectError::fault`](crate::node::ConnectError::fault),
//! [`HandshakeError::fault`](crate::handshake::HandshakeError::fault),
//! [`DisconnectReason::fault`](crate::node::DisconnectReason::fault),
//! [`RpcError::fault`](crate::rpc::RpcError::fault)).
//!
//! ```
//! use autocluster::Fault;
//!
//! // A cookie mismatch is not worth retrying; a node still starting is.
//! assert!(!Fault::Rejected.is_transient());
//! assert!(Fault::NotRunning.is_transient());
//! ```

/// Whose fault a failure is, and so what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// The peer broke the protocol: a malformed or misplaced message, an invalid name, a
    /// frame over the limit, more than the node's limits allow. Trying the same peer
    /// again fails the same way.
    PeerMisbehaved,
    /// The two sides are configured for different protocols: short against long names,
    /// TLS against plain TCP, capabilities one of them lacks, no common TLS version.
    /// Fix the configuration of one side.
    PeerIncompatible,
    /// Refused on purpose, for the cookie or the name: another cookie, a certificate not
    /// trusted, a peer that is not the node dialled, an allow list. Fix the
    /// configuration; retrying does not help.
    Rejected,
    /// Two connections between the same nodes met (simultaneous connects, a name still
    /// held by a connection being replaced) and one gave way. Routine; retry.
    Contention,
    /// The node is not running: EPMD on its host does not know it, or nothing listens
    /// on its port. It may be starting; retry.
    NotRunning,
    /// The host or the node could not be reached, or the connection was cut: name
    /// resolution, EPMD, the network. May recover; retry.
    Unreachable,
    /// A step took longer than its limit. May recover; retry.
    Timeout,
    /// This side: a stopped node, its own configuration, a local decision.
    Local,
}

impl Fault {
    /// Whether trying again later may succeed without anyone changing a configuration.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Fault::Contention | Fault::NotRunning | Fault::Unreachable | Fault::Timeout
        )
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fault::PeerMisbehaved => "the peer misbehaved",
            Fault::PeerIncompatible => "the peer is configured incompatibly",
            Fault::Rejected => "rejected for the cookie or the name",
            Fault::Contention => "a concurrent connection won",
            Fault::NotRunning => "the node is not running",
            Fault::Unreachable => "unreachable",
            Fault::Timeout => "timed out",
            Fault::Local => "this side",
        })
    }
}
