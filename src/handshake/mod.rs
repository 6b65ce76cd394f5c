//! The distribution handshake (OTP 23+ protocol), both roles.
//!
//! Two sans-IO state machines, [`Initiator`] and [`Acceptor`], take message bodies in and
//! append framed messages to an output buffer; they never touch a socket, a clock or a
//! random number generator (the caller passes the challenge), so every path is
//! unit-testable. The async functions [`initiate`] and [`accept`] drive them over any
//! `AsyncRead + AsyncWrite` with a per-step timeout and the length prefix as a
//! parameter (2 bytes on TCP, 4 inside TLS).
//!
//! ```text
//! initiator (A)                               acceptor (B)
//!   send_name  'N' flags creation name  --->
//!                                       <---  send_status 's' ok | ok_simultaneous | nok |
//!                                             not_allowed | alive | named:
//!   ('s' true|false, only after alive)  --->
//!                                       <---  send_challenge 'N' flags challenge creation name
//!   challenge_reply 'r' challenge digest --->
//!                                       <---  challenge_ack 'a' digest
//! ```
//!
//! Errors say what went wrong and whose fault it is: a peer that closes the connection
//! right after our challenge reply rejected our cookie ([`HandshakeError::CookieRejected`]);
//! a wrong digest from the peer means the peer holds another cookie
//! ([`HandshakeError::PeerDigestMismatch`], [`HandshakeError::CookieMismatch`]); a name
//! that differs from the one dialled is [`HandshakeError::NameMismatch`], with a hint when
//! only the case or the short/long form differs.

mod acceptor;
mod digest;
mod driver;
mod flags;
mod initiator;
crate::internal_mod!(messages);

use std::fmt;

pub use acceptor::{Acceptor, AcceptorConfig, AcceptorProgress, PeerHello, StatusDecision};
pub use driver::{HandshakeOutcome, accept, initiate};
pub use flags::DistFlags;
pub use initiator::{Initiator, InitiatorConfig, InitiatorProgress, LocalName};
pub use messages::{LengthPrefix, MessageError};

use crate::NodeName;

/// OTP's default `net_setuptime`: the limit for each handshake step.
pub const DEFAULT_STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(7);

/// The step a handshake was at, for errors and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandshakeStep {
    /// Waiting for the initiator's `send_name`.
    AwaitName,
    /// Waiting for the acceptor's status.
    AwaitStatus,
    /// Waiting for the initiator's answer to `alive`.
    AwaitAliveReply,
    /// Waiting for the acceptor's challenge.
    AwaitChallenge,
    /// Waiting for the initiator's complement (old `n` form only).
    AwaitComplement,
    /// Waiting for the initiator's challenge reply.
    AwaitReply,
    /// Waiting for the acceptor's challenge acknowledgement.
    AwaitAck,
    /// Writing to the peer.
    Send,
    /// Finished.
    Done,
}

impl fmt::Display for HandshakeStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeStep::AwaitName => "waiting for the peer's name (send_name)",
            HandshakeStep::AwaitStatus => "waiting for the handshake status",
            HandshakeStep::AwaitAliveReply => "waiting for the answer to 'alive'",
            HandshakeStep::AwaitChallenge => "waiting for the challenge",
            HandshakeStep::AwaitComplement => "waiting for the flags complement",
            HandshakeStep::AwaitReply => "waiting for the challenge reply",
            HandshakeStep::AwaitAck => "waiting for the challenge acknowledgement",
            HandshakeStep::Send => "sending",
            HandshakeStep::Done => "done",
        })
    }
}

/// How a dialled name and the name a peer answered with differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameMismatchHint {
    /// Same name but for upper/lower case (DNS answers are often lower-case; Erlang
    /// keeps the case of host names).
    Case,
    /// One is a short name and the other the long form of it (`rabbit@host` vs
    /// `rabbit@host.example.com`).
    ShortVsLong,
    /// Same host, another node on it.
    OtherAlive,
    /// A different host.
    OtherHost,
}

impl fmt::Display for NameMismatchHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameMismatchHint::Case => {
                "the names differ only in upper/lower case; Erlang compares node names exactly: dial the name exactly as the node was started"
            }
            NameMismatchHint::ShortVsLong => {
                "one is the short form and the other the long (fully qualified) form: dial the name exactly as the node was started (-sname vs -name)"
            }
            NameMismatchHint::OtherAlive => {
                "another node answered on that host's port: check EPMD and the port given"
            }
            NameMismatchHint::OtherHost => {
                "a node on another host answered: check the address the name resolves to"
            }
        })
    }
}

impl NameMismatchHint {
    /// Classifies how `got` differs from `expected`.
    pub fn classify(expected: &str, got: &str) -> NameMismatchHint {
        let split = |s: &str| -> (String, String) {
            match s.split_once('@') {
                Some((a, h)) => (a.to_owned(), h.to_owned()),
                None => (s.to_owned(), String::new()),
            }
        };
        let ((ea, eh), (ga, gh)) = (split(expected), split(got));
        if expected.eq_ignore_ascii_case(got) {
            NameMismatchHint::Case
        } else if ea == ga && (is_short_form_of(&eh, &gh) || is_short_form_of(&gh, &eh)) {
            NameMismatchHint::ShortVsLong
        } else if eh.eq_ignore_ascii_case(&gh) {
            NameMismatchHint::OtherAlive
        } else {
            NameMismatchHint::OtherHost
        }
    }
}

fn is_short_form_of(short: &str, long: &str) -> bool {
    long.len() > short.len()
        && long.as_bytes()[short.len()] == b'.'
        && long[..short.len()].eq_ignore_ascii_case(short)
}

/// Why a handshake failed. Never contains the cookie.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer closed the connection right after our challenge reply: it computed a
    /// different digest, so it holds another cookie.
    #[error(
        "{peer} rejected our cookie: it closed the connection after our challenge reply; \
         both nodes must share one cookie"
    )]
    CookieRejected {
        /// The peer.
        peer: String,
    },
    /// The peer's challenge acknowledgement carries a wrong digest: it holds another
    /// cookie (or is not the node it claims to be).
    #[error("{peer} answered with a wrong digest: it holds another cookie")]
    PeerDigestMismatch {
        /// The peer.
        peer: String,
    },
    /// (Acceptor) the initiator's challenge reply carries a wrong digest: it holds
    /// another cookie.
    #[error("{peer} tried to connect with another cookie (wrong challenge reply digest)")]
    CookieMismatch {
        /// The initiator.
        peer: String,
    },
    /// The peer answered with another name than the one dialled.
    #[error("dialled {expected} but the peer is {got}: {hint}")]
    NameMismatch {
        /// The name dialled.
        expected: NodeName,
        /// The name the peer gave.
        got: String,
        /// How they differ.
        hint: NameMismatchHint,
    },
    /// A short-name node and a long-name node.
    #[error(transparent)]
    NameKind(#[from] crate::NodeNameError),
    /// The peer sent a name that is not a valid node name.
    #[error("peer sent an invalid node name {name:?}: {reason}")]
    InvalidPeerName {
        /// The name as received.
        name: String,
        /// Why it is invalid.
        reason: crate::NodeNameError,
    },
    /// The peer refused us with `not_allowed`: we lack a flag it requires, or its allow
    /// list (`net_kernel:allow/1`) does not include us.
    #[error(
        "{peer} refused the connection (not_allowed): it requires a capability we lack \
         or its allow list (net_kernel:allow/1) excludes us"
    )]
    NotAllowed {
        /// The peer.
        peer: String,
    },
    /// The peer lacks distribution flags we require.
    #[error(
        "{peer} lacks required distribution capabilities: {missing} (it is older than OTP 25?)"
    )]
    MissingFlags {
        /// The peer.
        peer: String,
        /// What it lacks.
        missing: DistFlags,
    },
    /// The peer answered `nok`: it is connecting to us at the same moment and keeps its
    /// own attempt.
    #[error("{peer} is connecting to us at the same time and keeps its own attempt (nok)")]
    SimultaneousConnect {
        /// The peer.
        peer: String,
    },
    /// The acceptor said it already has a connection to us (`alive`) and we told it to
    /// keep it, or (as acceptor) the initiator answered `false`.
    #[error("{peer} already has a live connection to this node and keeps it")]
    AlreadyConnected {
        /// The peer.
        peer: String,
    },
    /// (Acceptor) the local node refused the initiator (`nok` or `not_allowed` sent).
    #[error("refused {peer}: {reason}")]
    Refused {
        /// The initiator.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A step took longer than its timeout.
    #[error("handshake with {peer} timed out {step} (after {timeout:?})")]
    Timeout {
        /// The peer (the dialled name, or the peer's address when unknown).
        peer: String,
        /// The step.
        step: HandshakeStep,
        /// The limit.
        timeout: std::time::Duration,
    },
    /// The connection closed in the middle of a step.
    #[error("{peer} closed the connection {step}")]
    Closed {
        /// The peer.
        peer: String,
        /// The step.
        step: HandshakeStep,
    },
    /// The peer sent something the protocol does not allow.
    #[error("protocol violation by {peer} {step}: {source}")]
    Protocol {
        /// The peer.
        peer: String,
        /// The step.
        step: HandshakeStep,
        /// What was wrong.
        #[source]
        source: MessageError,
    },
    /// The peer sent a message that does not belong at this step.
    #[error("protocol violation by {peer} {step}: {detail}")]
    Unexpected {
        /// The peer.
        peer: String,
        /// The step.
        step: HandshakeStep,
        /// What was wrong.
        detail: String,
    },
    /// A TLS record arrived where a plain handshake message was expected: the peer uses
    /// TLS distribution (`-proto_dist inet_tls`) and this side does not.
    #[error(
        "{peer} answered with a TLS record: it uses TLS distribution (-proto_dist inet_tls); \
         configure TLS on this side too"
    )]
    PeerUsesTls {
        /// The peer.
        peer: String,
    },
    /// An I/O error.
    #[error("I/O error with {peer} {step}: {source}")]
    Io {
        /// The peer.
        peer: String,
        /// The step.
        step: HandshakeStep,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl HandshakeError {
    /// Whose fault the failure is.
    pub fn fault(&self) -> crate::Fault {
        use crate::Fault;
        match self {
            HandshakeError::CookieRejected { .. }
            | HandshakeError::PeerDigestMismatch { .. }
            | HandshakeError::CookieMismatch { .. }
            | HandshakeError::NameMismatch { .. }
            | HandshakeError::NotAllowed { .. } => Fault::Rejected,
            HandshakeError::NameKind(_)
            | HandshakeError::MissingFlags { .. }
            | HandshakeError::PeerUsesTls { .. } => Fault::PeerIncompatible,
            HandshakeError::InvalidPeerName { .. }
            | HandshakeError::Protocol { .. }
            | HandshakeError::Unexpected { .. } => Fault::PeerMisbehaved,
            HandshakeError::SimultaneousConnect { .. }
            | HandshakeError::AlreadyConnected { .. } => Fault::Contention,
            HandshakeError::Refused { .. } => Fault::Local,
            HandshakeError::Timeout { .. } => Fault::Timeout,
            HandshakeError::Closed { .. } | HandshakeError::Io { .. } => Fault::Unreachable,
        }
    }
}

/// What both sides agreed on once the handshake succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshaked {
    /// The peer's node name.
    pub peer: NodeName,
    /// The peer's creation.
    pub peer_creation: u32,
    /// The peer's flags (with the OTP 25 digest bit expanded).
    pub peer_flags: DistFlags,
    /// The flags in use on the connection: ours AND the peer's.
    pub flags: DistFlags,
    /// Our node name (assigned by the peer with dynamic names).
    pub local: NodeName,
    /// Our creation (assigned by the peer with dynamic names).
    pub local_creation: u32,
    /// (Acceptor) we answered `alive` and the peer said its old connection is dead: the
    /// old connection must be replaced by this one.
    pub replaces_existing: bool,
}

impl Handshaked {
    /// Whether the connection is hidden (either side lacks [`DistFlags::PUBLISHED`]).
    pub fn is_hidden(&self) -> bool {
        !self.flags.contains(DistFlags::PUBLISHED)
    }
}

#[cfg(test)]
mod tests;
