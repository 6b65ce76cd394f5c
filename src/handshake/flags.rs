//! Distribution capability flags exchanged in the handshake.
//!
//! Values are those of OTP's `dist.hrl`. Unknown bits are kept (a peer may set bits this
//! crate does not know) and shown in hex.

use std::fmt;
use std::ops::{BitAnd, BitOr, BitOrAssign, Not};

/// A set of distribution flags (`DFLAG_*`), 64 bits wide.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DistFlags(u64);

macro_rules! flags {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        impl DistFlags {
            $($(#[$doc])* pub const $name: DistFlags = DistFlags($value);)*
            const NAMES: &'static [(&'static str, u64)] = &[$((stringify!($name), $value)),*];
        }
    };
}

flags! {
    /// The node is published: it appears in `nodes()` and takes part in `global`.
    PUBLISHED = 0x1;
    /// Atom cache (never advertised by this crate).
    ATOM_CACHE = 0x2;
    /// Extended references (mandatory since OTP 25).
    EXTENDED_REFERENCES = 0x4;
    /// Process monitors across the connection.
    DIST_MONITOR = 0x8;
    /// Fun tags (mandatory since OTP 25).
    FUN_TAGS = 0x10;
    /// Monitors of registered names.
    DIST_MONITOR_NAME = 0x20;
    /// Atom cache on hidden connections (never advertised by this crate).
    HIDDEN_ATOM_CACHE = 0x40;
    /// New fun tags (mandatory since OTP 25).
    NEW_FUN_TAGS = 0x80;
    /// Extended pids and ports (mandatory since OTP 25).
    EXTENDED_PIDS_PORTS = 0x100;
    /// Export tags (mandatory since OTP 25).
    EXPORT_PTR_TAG = 0x200;
    /// Bit binaries (mandatory since OTP 25).
    BIT_BINARIES = 0x400;
    /// New floats (mandatory since OTP 25).
    NEW_FLOATS = 0x800;
    /// Unicode I/O.
    UNICODE_IO = 0x1000;
    /// Atom cache in the distribution header (never advertised by this crate).
    DIST_HDR_ATOM_CACHE = 0x2000;
    /// Small atom tags.
    SMALL_ATOM_TAGS = 0x4000;
    /// UTF-8 atoms (mandatory since OTP 25).
    UTF8_ATOMS = 0x10000;
    /// The map tag (mandatory since OTP 25).
    MAP_TAG = 0x20000;
    /// 32-bit creation (mandatory since OTP 25).
    BIG_CREATION = 0x40000;
    /// `SEND_SENDER` control messages.
    SEND_SENDER = 0x80000;
    /// Large sequential-trace labels.
    BIG_SEQTRACE_LABELS = 0x100000;
    /// Exit reasons sent as a separate payload term.
    EXIT_PAYLOAD = 0x400000;
    /// Fragmented messages (never advertised by this crate).
    FRAGMENTS = 0x800000;
    /// The OTP 23 handshake (mandatory since OTP 25).
    HANDSHAKE_23 = 0x1000000;
    /// The new unlink protocol (mandatory since OTP 26).
    UNLINK_ID = 0x2000000;
    /// Shorthand for every flag of [`DistFlags::MANDATORY_25`] (bit 26).
    MANDATORY_25_DIGEST = 0x4000000;
    /// `SPAWN_REQUEST`, which `erpc` uses.
    SPAWN = 1 << 32;
    /// Dynamic node names: the acceptor names the initiator.
    NAME_ME = 1 << 33;
    /// 32-bit pid and port numbers, long references (mandatory since OTP 26).
    V4_NC = 1 << 34;
    /// Process aliases (OTP 24+ `gen:call` replies use them).
    ALIAS = 1 << 35;
}

impl DistFlags {
    /// Flags every OTP 25 node requires of its peer.
    pub const MANDATORY_25: DistFlags = DistFlags(
        Self::EXTENDED_REFERENCES.0
            | Self::FUN_TAGS.0
            | Self::EXTENDED_PIDS_PORTS.0
            | Self::NEW_FUN_TAGS.0
            | Self::EXPORT_PTR_TAG.0
            | Self::BIT_BINARIES.0
            | Self::NEW_FLOATS.0
            | Self::UTF8_ATOMS.0
            | Self::MAP_TAG.0
            | Self::BIG_CREATION.0
            | Self::HANDSHAKE_23.0,
    );

    /// Flags every OTP 26+ node requires of its peer, beyond [`DistFlags::MANDATORY_25`].
    pub const MANDATORY_26: DistFlags = DistFlags(Self::V4_NC.0 | Self::UNLINK_ID.0);

    /// What this crate requires of a peer: the OTP 25 set.
    pub const REQUIRED: DistFlags = Self::MANDATORY_25;

    /// What this crate advertises (plus [`DistFlags::PUBLISHED`] when published): the
    /// OTP 25 and 26 mandatory sets, the digest bit, monitors, `erpc` spawning, aliases,
    /// and the message forms the connection decodes. Never atom caches or fragments.
    pub const OURS: DistFlags = DistFlags(
        Self::MANDATORY_25.0
            | Self::MANDATORY_26.0
            | Self::MANDATORY_25_DIGEST.0
            | Self::DIST_MONITOR.0
            | Self::DIST_MONITOR_NAME.0
            | Self::UNICODE_IO.0
            | Self::SMALL_ATOM_TAGS.0
            | Self::SEND_SENDER.0
            | Self::BIG_SEQTRACE_LABELS.0
            | Self::EXIT_PAYLOAD.0
            | Self::SPAWN.0
            | Self::ALIAS.0,
    );

    /// The empty set.
    pub const fn empty() -> DistFlags {
        DistFlags(0)
    }

    /// Flags from their wire value.
    pub const fn from_bits(bits: u64) -> DistFlags {
        DistFlags(bits)
    }

    /// The wire value.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: DistFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The flags of `required` that `self` lacks.
    pub const fn missing(self, required: DistFlags) -> DistFlags {
        DistFlags(required.0 & !self.0)
    }

    /// `self` with the flags of `other` cleared.
    pub const fn without(self, other: DistFlags) -> DistFlags {
        DistFlags(self.0 & !other.0)
    }

    /// OTP's reading of a peer's flags: the digest bit stands for the whole OTP 25 set.
    pub const fn expand_digest(self) -> DistFlags {
        if self.0 & Self::MANDATORY_25_DIGEST.0 != 0 {
            DistFlags(self.0 | Self::MANDATORY_25.0)
        } else {
            self
        }
    }

    /// The flags both sides use: `mine AND theirs`.
    pub const fn negotiate(self, theirs: DistFlags) -> DistFlags {
        DistFlags(self.0 & theirs.0)
    }

    /// Names of the set flags (unknown bits as hex).
    pub fn names(self) -> Vec<String> {
        let mut out = Vec::new();
        let mut known = 0u64;
        for (name, value) in Self::NAMES {
            known |= value;
            if self.0 & value != 0 {
                out.push((*name).to_owned());
            }
        }
        let unknown = self.0 & !known;
        if unknown != 0 {
            out.push(format!("{unknown:#x}"));
        }
        out
    }
}

impl BitOr for DistFlags {
    type Output = DistFlags;
    fn bitor(self, rhs: DistFlags) -> DistFlags {
        DistFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for DistFlags {
    fn bitor_assign(&mut self, rhs: DistFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for DistFlags {
    type Output = DistFlags;
    fn bitand(self, rhs: DistFlags) -> DistFlags {
        DistFlags(self.0 & rhs.0)
    }
}

impl Not for DistFlags {
    type Output = DistFlags;
    fn not(self) -> DistFlags {
        DistFlags(!self.0)
    }
}

impl fmt::Debug for DistFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DistFlags({:#x}: {})", self.0, self.names().join("|"))
    }
}

impl fmt::Display for DistFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("none");
        }
        f.write_str(&self.names().join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_dist_hrl() {
        assert_eq!(DistFlags::MANDATORY_25_DIGEST.bits(), 1 << 26);
        assert_eq!(DistFlags::MANDATORY_25.bits(), 0x0107_0F94);
        assert_eq!(DistFlags::ALIAS.bits(), 0x8_0000_0000);
        assert!(DistFlags::OURS.contains(DistFlags::MANDATORY_25 | DistFlags::MANDATORY_26));
        assert!(!DistFlags::OURS.contains(DistFlags::ATOM_CACHE));
        assert!(!DistFlags::OURS.contains(DistFlags::FRAGMENTS));
        assert!(!DistFlags::OURS.contains(DistFlags::PUBLISHED));
    }

    #[test]
    fn digest_bit_expands_to_the_otp25_set() {
        let peer = DistFlags::MANDATORY_25_DIGEST | DistFlags::SPAWN;
        assert!(!peer.missing(DistFlags::REQUIRED).is_empty());
        assert!(peer.expand_digest().missing(DistFlags::REQUIRED).is_empty());
    }

    #[test]
    fn names_unknown_bits() {
        let f = DistFlags::PUBLISHED | DistFlags::from_bits(1 << 60);
        assert_eq!(f.names(), ["PUBLISHED", "0x1000000000000000"]);
        assert_eq!(
            f.missing(DistFlags::PUBLISHED | DistFlags::SPAWN),
            DistFlags::SPAWN
        );
    }
}
