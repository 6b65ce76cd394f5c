//! Erlang node names: `alive@host`.
//!
//! A [`NodeName`] is validated with the rules OTP's `net_kernel` applies when a node
//! starts: the alive part is `[0-9A-Za-z_-]+`, the host part is printable ASCII without
//! spaces, and the whole name is an atom of at most 255 characters. Names compare byte
//! for byte, case included (`rabbit@Host` and `rabbit@host` are different nodes, as they
//! are in Erlang), and order byte-wise, which is how Erlang orders atoms: the
//! "alphabetically first" node is the smallest `NodeName`.
//!
//! Erlang nodes run in one of two modes: short names (`-sname`, host without dots) or
//! long names (`-name`, a fully qualified host or an IP address). A node of one mode
//! cannot connect to a node of the other; [`NodeName::check_compatible`] explains such a
//! mix-up before any socket is opened, naming the flag (`-sname`/`-name`) to use.
//!
//! ```
//! use autocluster::{NodeName, NameKind};
//!
//! let short: NodeName = "rabbit@node1".parse()?;
//! assert_eq!(short.alive(), "rabbit");
//! assert_eq!(short.host(), "node1");
//! assert_eq!(short.kind(), NameKind::Short);
//!
//! let long: NodeName = "rabbit@node1.example.com".parse()?;
//! assert_eq!(long.kind(), NameKind::Long);
//! assert!(short.check_compatible(&long).is_err());
//!
//! // IP literals are long names, as in Erlang.
//! assert_eq!("a@::1".parse::<NodeName>()?.kind(), NameKind::Long);
//! # Ok::<(), autocluster::NodeNameError>(())
//! ```

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

/// The longest node name Erlang accepts (an atom holds at most 255 characters).
pub const MAX_NODE_NAME_LEN: usize = 255;

/// Whether a node uses short (`-sname`) or long (`-name`) names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// The host part has no dot and is not an IP address (`-sname`).
    Short,
    /// The host part is fully qualified or an IP address (`-name`).
    Long,
}

impl NameKind {
    /// The `erl` flag that starts a node of this kind.
    pub fn erl_flag(self) -> &'static str {
        match self {
            NameKind::Short => "-sname",
            NameKind::Long => "-name",
        }
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Short => "short",
            NameKind::Long => "long",
        })
    }
}

/// Why a string is not a valid node name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeNameError {
    /// There is no `@` separating the alive part from the host.
    #[error("node name {0:?} has no '@': expected alive@host, e.g. rabbit@node1")]
    MissingAt(String),
    /// The part before `@` is empty.
    #[error("node name {0:?} has an empty alive part before '@'")]
    EmptyAlive(String),
    /// The part after `@` is empty.
    #[error("node name {0:?} has an empty host part after '@'")]
    EmptyHost(String),
    /// The alive part holds a character Erlang does not accept there.
    #[error(
        "node name {name:?}: character {ch:?} is not allowed before '@' (Erlang accepts 0-9 A-Z a-z _ -)"
    )]
    BadAliveChar {
        /// The name given.
        name: String,
        /// The offending character.
        ch: char,
    },
    /// The host part holds a character Erlang does not accept there.
    #[error(
        "node name {name:?}: character {ch:?} is not allowed in the host part (printable ASCII without spaces or '@')"
    )]
    BadHostChar {
        /// The name given.
        name: String,
        /// The offending character.
        ch: char,
    },
    /// The name is longer than an Erlang atom may be.
    #[error("node name is {len} bytes long; Erlang node names are at most {MAX_NODE_NAME_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A short-name node and a long-name node cannot talk to each other.
    #[error(
        "{local} uses {} names but {peer} is a {} name: Erlang cannot connect nodes of both kinds; \
         start every node with {} (or every node with {})",
        local.kind(), peer.kind(), local.kind().erl_flag(), peer.kind().erl_flag()
    )]
    KindMismatch {
        /// The local node.
        local: NodeName,
        /// The peer it was asked to talk to.
        peer: NodeName,
    },
}

/// A validated Erlang node name, `alive@host`.
///
/// Cheap to clone (the text is shared). Ordering is byte-wise, which is how Erlang
/// orders atoms made of ASCII characters: the "alphabetically first" node of a cluster
/// is the smallest `NodeName`.
#[derive(Clone)]
pub struct NodeName {
    full: Arc<str>,
    /// Where the `@` is (names are at most [`MAX_NODE_NAME_LEN`] bytes long).
    at: u8,
    /// Decided once: connecting checks it every time.
    kind: NameKind,
    /// The text's hash ([`NAME_HASH`]), computed once: the node looks names up in its
    /// tables several times per connection. 32 bits keep a name 24 bytes long.
    hash: u32,
}

/// How names are hashed, the same for the whole process, from a seed chosen at random
/// when it starts (so that nobody can choose names that collide).
static NAME_HASH: std::sync::LazyLock<foldhash::fast::RandomState> =
    std::sync::LazyLock::new(Default::default);

// Everything else is derived from the text: compare and hash that alone.
impl PartialEq for NodeName {
    fn eq(&self, other: &Self) -> bool {
        self.full == other.full
    }
}

impl Eq for NodeName {}

impl std::hash::Hash for NodeName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u32(self.hash);
    }
}

impl PartialOrd for NodeName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for NodeName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.full.cmp(&other.full)
    }
}

impl NodeName {
    /// The full name, shared.
    pub(crate) fn shared(&self) -> Arc<str> {
        self.full.clone()
    }
    /// Parses and validates `alive@host`.
    pub fn new(name: &str) -> Result<NodeName, NodeNameError> {
        if name.len() > MAX_NODE_NAME_LEN {
            return Err(NodeNameError::TooLong { len: name.len() });
        }
        let Some(at) = name.find('@') else {
            return Err(NodeNameError::MissingAt(name.to_owned()));
        };
        let (alive, host) = (&name[..at], &name[at + 1..]);
        validate_alive(alive, name)?;
        validate_host(host, name)?;
        Ok(NodeName {
            full: Arc::from(name),
            at: u8::try_from(at).map_err(|_| NodeNameError::TooLong { len: name.len() })?,
            kind: host_kind(host),
            hash: std::hash::BuildHasher::hash_one(&*NAME_HASH, name) as u32,
        })
    }

    /// Builds `alive@host` from its parts.
    pub fn from_parts(alive: &str, host: &str) -> Result<NodeName, NodeNameError> {
        NodeName::new(&format!("{alive}@{host}"))
    }

    /// The whole name, `alive@host`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The part before `@` (the name registered in EPMD).
    pub fn alive(&self) -> &str {
        &self.full[..usize::from(self.at)]
    }

    /// The part after `@`.
    pub fn host(&self) -> &str {
        &self.full[usize::from(self.at) + 1..]
    }

    /// The host as an IP address, when it is an IPv4 or IPv6 literal.
    pub fn host_ip(&self) -> Option<IpAddr> {
        self.host().parse().ok()
    }

    /// Short or long name, decided the way OTP decides it: a host with a dot or an IP
    /// literal is long.
    pub fn kind(&self) -> NameKind {
        self.kind
    }

    /// Checks that a node named `self` can connect to `peer`: both short or both long.
    pub fn check_compatible(&self, peer: &NodeName) -> Result<(), NodeNameError> {
        if self.kind() == peer.kind() {
            Ok(())
        } else {
            Err(NodeNameError::KindMismatch {
                local: self.clone(),
                peer: peer.clone(),
            })
        }
    }
}

fn host_kind(host: &str) -> NameKind {
    if host.contains('.') || host.parse::<IpAddr>().is_ok() {
        NameKind::Long
    } else {
        NameKind::Short
    }
}

/// A host part alone is valid for a dynamic node name (`DFLAG_NAME_ME`).
pub(crate) fn validate_host_only(host: &str) -> Result<(), NodeNameError> {
    if host.len() > MAX_NODE_NAME_LEN {
        return Err(NodeNameError::TooLong { len: host.len() });
    }
    validate_host(host, host)
}

fn validate_alive(alive: &str, name: &str) -> Result<(), NodeNameError> {
    if alive.is_empty() {
        return Err(NodeNameError::EmptyAlive(name.to_owned()));
    }
    if let Some(ch) = alive
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(NodeNameError::BadAliveChar {
            name: name.to_owned(),
            ch,
        });
    }
    Ok(())
}

fn validate_host(host: &str, name: &str) -> Result<(), NodeNameError> {
    if host.is_empty() {
        return Err(NodeNameError::EmptyHost(name.to_owned()));
    }
    if let Some(ch) = host.chars().find(|c| !matches!(c, '!'..='~') || *c == '@') {
        return Err(NodeNameError::BadHostChar {
            name: name.to_owned(),
            ch,
        });
    }
    Ok(())
}

impl FromStr for NodeName {
    type Err = NodeNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeName::new(s)
    }
}

impl TryFrom<&str> for NodeName {
    type Error = NodeNameError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        NodeName::new(s)
    }
}

impl TryFrom<String> for NodeName {
    type Error = NodeNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        NodeName::new(&s)
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.full)
    }
}

impl PartialEq<str> for NodeName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for NodeName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_hash_by_their_text_and_stay_small() {
        use std::hash::BuildHasher;
        let state = std::collections::hash_map::RandomState::new();
        let a = NodeName::new("rabbit@node-1").unwrap();
        let b = NodeName::from_parts("rabbit", "node-1").unwrap();
        assert_eq!(state.hash_one(&a), state.hash_one(&b));
        let c = NodeName::new("rabbit@node-2").unwrap();
        assert_ne!(state.hash_one(&a), state.hash_one(&c));
        assert_eq!(std::mem::size_of::<NodeName>(), 24);
    }

    #[test]
    fn parses_short_and_long_names() {
        let n = NodeName::new("rabbit@node-1").unwrap();
        assert_eq!(
            (n.alive(), n.host(), n.kind()),
            ("rabbit", "node-1", NameKind::Short)
        );
        let n = NodeName::new("rabbit@node-1.svc.cluster.local").unwrap();
        assert_eq!(n.kind(), NameKind::Long);
        assert_eq!(NodeName::new("a@127.0.0.1").unwrap().kind(), NameKind::Long);
        let v6 = NodeName::new("a@::1").unwrap();
        assert_eq!(v6.kind(), NameKind::Long);
        assert_eq!(v6.host_ip(), Some("::1".parse().unwrap()));
        assert_eq!(NodeName::new("a@fe80::1:2").unwrap().kind(), NameKind::Long);
    }

    #[test]
    fn rejects_what_erlang_rejects() {
        assert!(matches!(
            NodeName::new("rabbit"),
            Err(NodeNameError::MissingAt(_))
        ));
        assert!(matches!(
            NodeName::new("@host"),
            Err(NodeNameError::EmptyAlive(_))
        ));
        assert!(matches!(
            NodeName::new("rabbit@"),
            Err(NodeNameError::EmptyHost(_))
        ));
        assert!(matches!(
            NodeName::new("rab bit@host"),
            Err(NodeNameError::BadAliveChar { ch: ' ', .. })
        ));
        assert!(matches!(
            NodeName::new("a.b@host"),
            Err(NodeNameError::BadAliveChar { ch: '.', .. })
        ));
        assert!(matches!(
            NodeName::new("a@ho st"),
            Err(NodeNameError::BadHostChar { ch: ' ', .. })
        ));
        assert!(matches!(
            NodeName::new("a@b@c"),
            Err(NodeNameError::BadHostChar { ch: '@', .. })
        ));
        assert!(matches!(
            NodeName::new("a@hÃ¶st"),
            Err(NodeNameError::BadHostChar { .. })
        ));
        let long = format!("a@{}", "h".repeat(254));
        assert!(matches!(
            NodeName::new(&long),
            Err(NodeNameError::TooLong { len: 256 })
        ));
        let max = format!("a@{}", "h".repeat(253));
        assert!(NodeName::new(&max).is_ok());
    }

    #[test]
    fn compares_byte_exact_and_orders_bytewise() {
        let a = NodeName::new("rabbit@Host").unwrap();
        let b = NodeName::new("rabbit@host").unwrap();
        assert_ne!(a, b);
        assert!(a < b, "uppercase sorts before lowercase, as atoms do");
        let mut v: Vec<NodeName> = ["rabbit@c", "rabbit@a", "rabbit-2@a", "rabbit@b"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        v.sort();
        let got: Vec<&str> = v.iter().map(|n| n.as_str()).collect();
        assert_eq!(got, ["rabbit-2@a", "rabbit@a", "rabbit@b", "rabbit@c"]);
    }

    #[test]
    fn kind_mismatch_explains_itself() {
        let short = NodeName::new("rust@myhost").unwrap();
        let long = NodeName::new("rabbit@myhost.example.com").unwrap();
        let err = short.check_compatible(&long).unwrap_err().to_string();
        assert!(err.contains("short"), "{err}");
        assert!(err.contains("long"), "{err}");
        assert!(err.contains("-sname"), "{err}");
        assert!(
            short
                .check_compatible(&NodeName::new("x@other").unwrap())
                .is_ok()
        );
    }
}
