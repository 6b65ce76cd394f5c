//! Handshake messages: pure encoders and decoders, no I/O.
//!
//! Each message travels as `Len | Body`; [`LengthPrefix`] says how wide `Len` is
//! (2 bytes over TCP, 4 bytes inside TLS). Bodies are parsed from a complete frame, so a
//! decoder never sees a partial message; it still checks every length against the
//! bytes present and never panics.

use super::flags::DistFlags;
use crate::wire::{Reader, Status};

/// The largest handshake message accepted. Real ones are under 300 bytes (a 255-byte
/// name plus a few fixed fields).
pub const MAX_HANDSHAKE_MESSAGE: usize = 1024;

/// Width of the length field in front of each handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LengthPrefix {
    /// Two bytes, big-endian: plain TCP distribution (`inet_tcp_dist`).
    #[default]
    U16,
    /// Four bytes, big-endian: TLS distribution (`inet_tls_dist`).
    U32,
}

impl LengthPrefix {
    /// Size of the length field in bytes.
    pub const fn width(self) -> usize {
        match self {
            LengthPrefix::U16 => 2,
            LengthPrefix::U32 => 4,
        }
    }
}

/// A handshake message that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// A length field announces more than `MAX_HANDSHAKE_MESSAGE` bytes.
    #[error("handshake message of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A zero-length message, which the handshake never uses.
    #[error("empty handshake message")]
    Empty,
    /// The message ends before its fields do.
    #[error("truncated {0} message")]
    Truncated(&'static str),
    /// The message is not the one expected at this step.
    #[error("expected {expected} message, got tag {got:?}")]
    UnexpectedTag {
        /// What the step expects.
        expected: &'static str,
        /// The first byte received.
        got: char,
    },
    /// A field has the wrong length.
    #[error("{0} message has the wrong length")]
    WrongLength(&'static str),
    /// A node name that is not printable ASCII.
    #[error("node name in {0} message is not printable ASCII")]
    BadName(&'static str),
    /// A status string this crate does not know.
    #[error("unknown handshake status {0:?}")]
    UnknownStatus(String),
}

/// Splits one length-prefixed message off the front of `buf`.
///
/// Returns the body and the number of bytes consumed, or `Partial` when `buf` does not
/// hold a whole message yet. Lengths above `max` are refused before any allocation.
pub fn decode_frame(
    buf: &[u8],
    prefix: LengthPrefix,
    max: usize,
) -> Result<Status<(&[u8], usize)>, MessageError> {
    let mut r = Reader::new(buf);
    let len = match prefix {
        LengthPrefix::U16 => r.u16().map(usize::from),
        LengthPrefix::U32 => r.u32().map(|l| l as usize),
    };
    let Some(len) = len else {
        return Ok(Status::Partial);
    };
    if len > max {
        return Err(MessageError::TooLong { len, max });
    }
    if len == 0 {
        return Err(MessageError::Empty);
    }
    match r.take(len) {
        Some(body) => Ok(Status::Complete((body, prefix.width() + len))),
        None => Ok(Status::Partial),
    }
}

/// Appends `Len | Body` to `out`, where `body` writes the body.
pub(crate) fn write_frame(
    out: &mut Vec<u8>,
    prefix: LengthPrefix,
    body: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&[0; 4][..prefix.width()]);
    body(out);
    let len = out.len() - start - prefix.width();
    debug_assert!(len <= MAX_HANDSHAKE_MESSAGE);
    match prefix {
        LengthPrefix::U16 => {
            out[start..start + 2].copy_from_slice(&(len as u16).to_be_bytes());
        }
        LengthPrefix::U32 => {
            out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
        }
    }
}

fn ascii_name(bytes: &[u8], msg: &'static str) -> Result<String, MessageError> {
    if bytes.iter().all(|b| (33..=126).contains(b)) {
        // All bytes are ASCII, so this conversion cannot fail.
        String::from_utf8(bytes.to_vec()).map_err(|_| MessageError::BadName(msg))
    } else {
        Err(MessageError::BadName(msg))
    }
}

/// `send_name`, the initiator's first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendName {
    /// OTP 23+ form: `'N' | Flags:64 | Creation:32 | Nlen:16 | Name`.
    New {
        /// The initiator's flags.
        flags: DistFlags,
        /// The initiator's creation (0 with [`DistFlags::NAME_ME`]).
        creation: u32,
        /// `alive@host`, or only the host with [`DistFlags::NAME_ME`].
        name: String,
    },
    /// Pre-OTP 23 form: `'n' | Version:16 | Flags:32 | Name`, followed later by a
    /// [`Complement`] when both sides know the OTP 23 handshake.
    Old {
        /// Distribution version (5).
        version: u16,
        /// The low 32 bits of the initiator's flags.
        flags: u32,
        /// `alive@host`.
        name: String,
    },
}

impl SendName {
    /// The tag byte of the new form.
    pub const TAG_NEW: u8 = b'N';
    /// The tag byte of the old form.
    pub const TAG_OLD: u8 = b'n';

    /// Decodes a message body. Bytes after the name are ignored, as OTP does.
    pub fn decode(body: &[u8]) -> Result<SendName, MessageError> {
        const WHAT: &str = "send_name";
        let mut r = Reader::new(body);
        match r.u8() {
            Some(Self::TAG_NEW) => {
                let (Some(flags), Some(creation), Some(nlen)) = (r.u64(), r.u32(), r.u16()) else {
                    return Err(MessageError::Truncated(WHAT));
                };
                let name = r
                    .take(usize::from(nlen))
                    .ok_or(MessageError::Truncated(WHAT))?;
                Ok(SendName::New {
                    flags: DistFlags::from_bits(flags),
                    creation,
                    name: ascii_name(name, WHAT)?,
                })
            }
            Some(Self::TAG_OLD) => {
                let (Some(version), Some(flags)) = (r.u16(), r.u32()) else {
                    return Err(MessageError::Truncated(WHAT));
                };
                Ok(SendName::Old {
                    version,
                    flags,
                    name: ascii_name(r.rest(), WHAT)?,
                })
            }
            Some(other) => Err(MessageError::UnexpectedTag {
                expected: WHAT,
                got: char::from(other),
            }),
            None => Err(MessageError::Truncated(WHAT)),
        }
    }

    /// Encodes the message body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            SendName::New {
                flags,
                creation,
                name,
            } => {
                out.push(Self::TAG_NEW);
                out.extend_from_slice(&flags.bits().to_be_bytes());
                out.extend_from_slice(&creation.to_be_bytes());
                out.extend_from_slice(&(name.len() as u16).to_be_bytes());
                out.extend_from_slice(name.as_bytes());
            }
            SendName::Old {
                version,
                flags,
                name,
            } => {
                out.push(Self::TAG_OLD);
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&flags.to_be_bytes());
                out.extend_from_slice(name.as_bytes());
            }
        }
    }
}

/// `send_status`, the acceptor's verdict on the initiator's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeStatus {
    /// Go on.
    Ok,
    /// Go on; the acceptor dropped its own simultaneous attempt to connect.
    OkSimultaneous,
    /// Stop: the acceptor is connecting to the initiator and keeps that attempt.
    Nok,
    /// Stop: the initiator lacks flags or is not in the acceptor's allow list.
    NotAllowed,
    /// The acceptor already has a connection to this node; the initiator answers with
    /// [`AliveReply`].
    Alive,
    /// Go on under the name the acceptor assigned (dynamic names).
    Named {
        /// The full node name assigned.
        name: String,
        /// The creation assigned.
        creation: u32,
    },
}

impl HandshakeStatus {
    /// Decodes a status message body (`'s' | Status`).
    pub fn decode(body: &[u8]) -> Result<HandshakeStatus, MessageError> {
        const WHAT: &str = "status";
        let mut r = Reader::new(body);
        match r.u8() {
            Some(b's') => {}
            Some(other) => {
                return Err(MessageError::UnexpectedTag {
                    expected: WHAT,
                    got: char::from(other),
                });
            }
            None => return Err(MessageError::Truncated(WHAT)),
        }
        let rest = r.peek_rest();
        if let Some(named) = rest.strip_prefix(b"named:") {
            let mut r = Reader::new(named);
            let nlen = r.u16().ok_or(MessageError::Truncated(WHAT))?;
            let name = r
                .take(usize::from(nlen))
                .ok_or(MessageError::Truncated(WHAT))?;
            let creation = r.u32().ok_or(MessageError::Truncated(WHAT))?;
            return Ok(HandshakeStatus::Named {
                name: ascii_name(name, WHAT)?,
                creation,
            });
        }
        Ok(match rest {
            b"ok" => HandshakeStatus::Ok,
            b"ok_simultaneous" => HandshakeStatus::OkSimultaneous,
            b"nok" => HandshakeStatus::Nok,
            b"not_allowed" => HandshakeStatus::NotAllowed,
            b"alive" => HandshakeStatus::Alive,
            other => {
                let shown = String::from_utf8_lossy(&other[..other.len().min(32)]).into_owned();
                return Err(MessageError::UnknownStatus(shown));
            }
        })
    }

    /// Encodes the message body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(b's');
        match self {
            HandshakeStatus::Ok => out.extend_from_slice(b"ok"),
            HandshakeStatus::OkSimultaneous => out.extend_from_slice(b"ok_simultaneous"),
            HandshakeStatus::Nok => out.extend_from_slice(b"nok"),
            HandshakeStatus::NotAllowed => out.extend_from_slice(b"not_allowed"),
            HandshakeStatus::Alive => out.extend_from_slice(b"alive"),
            HandshakeStatus::Named { name, creation } => {
                out.extend_from_slice(b"named:");
                out.extend_from_slice(&(name.len() as u16).to_be_bytes());
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(&creation.to_be_bytes());
            }
        }
    }
}

/// The initiator's answer to [`HandshakeStatus::Alive`]: `'s' | "true"` or `"false"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AliveReply(pub bool);

impl AliveReply {
    /// Decodes the message body.
    pub fn decode(body: &[u8]) -> Result<AliveReply, MessageError> {
        match body {
            b"strue" => Ok(AliveReply(true)),
            b"sfalse" => Ok(AliveReply(false)),
            [b's', rest @ ..] => Err(MessageError::UnknownStatus(
                String::from_utf8_lossy(&rest[..rest.len().min(32)]).into_owned(),
            )),
            [other, ..] => Err(MessageError::UnexpectedTag {
                expected: "alive reply",
                got: char::from(*other),
            }),
            [] => Err(MessageError::Truncated("alive reply")),
        }
    }

    /// Encodes the message body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.0 { b"strue" } else { b"sfalse" });
    }
}

/// `send_challenge`: `'N' | Flags:64 | Challenge:32 | Creation:32 | Nlen:16 | Name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The acceptor's flags.
    pub flags: DistFlags,
    /// The acceptor's challenge.
    pub challenge: u32,
    /// The acceptor's creation.
    pub creation: u32,
    /// The acceptor's full node name.
    pub name: String,
}

impl Challenge {
    /// Decodes a message body. Bytes after the name are ignored, as OTP does.
    pub fn decode(body: &[u8]) -> Result<Challenge, MessageError> {
        const WHAT: &str = "challenge";
        let mut r = Reader::new(body);
        match r.u8() {
            Some(b'N') => {}
            Some(other) => {
                return Err(MessageError::UnexpectedTag {
                    expected: WHAT,
                    got: char::from(other),
                });
            }
            None => return Err(MessageError::Truncated(WHAT)),
        }
        let (Some(flags), Some(challenge), Some(creation), Some(nlen)) =
            (r.u64(), r.u32(), r.u32(), r.u16())
        else {
            return Err(MessageError::Truncated(WHAT));
        };
        let name = r
            .take(usize::from(nlen))
            .ok_or(MessageError::Truncated(WHAT))?;
        Ok(Challenge {
            flags: DistFlags::from_bits(flags),
            challenge,
            creation,
            name: ascii_name(name, WHAT)?,
        })
    }

    /// Encodes the message body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(b'N');
        out.extend_from_slice(&self.flags.bits().to_be_bytes());
        out.extend_from_slice(&self.challenge.to_be_bytes());
        out.extend_from_slice(&self.creation.to_be_bytes());
        out.extend_from_slice(&(self.name.len() as u16).to_be_bytes());
        out.extend_from_slice(self.name.as_bytes());
    }
}

/// `send_complement`: `'c' | FlagsHigh:32 | Creation:32`, sent only after an old-form
/// [`SendName`] was answered with a new-form [`Challenge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Complement {
    /// The high 32 bits of the initiator's flags.
    pub flags_high: u32,
    /// The initiator's creation.
    pub creation: u32,
}

impl Complement {
    /// Decodes a message body.
    pub fn decode(body: &[u8]) -> Result<Complement, MessageError> {
        const WHAT: &str = "complement";
        let mut r = Reader::new(body);
        match r.u8() {
            Some(b'c') => {}
            Some(other) => {
                return Err(MessageError::UnexpectedTag {
                    expected: WHAT,
                    got: char::from(other),
                });
            }
            None => return Err(MessageError::Truncated(WHAT)),
        }
        let (Some(flags_high), Some(creation)) = (r.u32(), r.u32()) else {
            return Err(MessageError::Truncated(WHAT));
        };
        Ok(Complement {
            flags_high,
            creation,
        })
    }

    /// Encodes the message body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(b'c');
        out.extend_from_slice(&self.flags_high.to_be_bytes());
        out.extend_from_slice(&self.creation.to_be_bytes());
    }
}

/// `send_challenge_reply`: `'r' | Challenge:32 | Digest:16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengeReply {
    /// The initiator's own challenge to the acceptor.
    pub challenge: u32,
    /// `md5(cookie ++ acceptor's challenge)`.
    pub digest: [u8; 16],
}

impl ChallengeReply {
    /// Decodes a message body; it must be exactly 21 bytes.
    pub fn decode(body: &[u8]) -> Result<ChallengeReply, MessageError> {
        const WHAT: &str = "challenge_reply";
        let mut r = Reader::new(body);
        match r.u8() {
            Some(b'r') => {}
            Some(other) => {
                return Err(MessageError::UnexpectedTag {
                    expected: WHAT,
                    got: char::from(other),
                });
            }
            None => return Err(MessageError::Truncated(WHAT)),
        }
        if r.remaining() != 20 {
            return Err(MessageError::WrongLength(WHAT));
        }
        let (Some(challenge), Some(digest)) = (r.u32(), r.array::<16>()) else {
            return Err(MessageError::Truncated(WHAT));
        };
        Ok(ChallengeReply { challenge, digest })
    }

    /// Encodes the message body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(b'r');
        out.extend_from_slice(&self.challenge.to_be_bytes());
        out.extend_from_slice(&self.digest);
    }
}

/// `send_challenge_ack`: `'a' | Digest:16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengeAck {
    /// `md5(cookie ++ initiator's challenge)`.
    pub digest: [u8; 16],
}

impl ChallengeAck {
    /// Decodes a message body; it must be exactly 17 bytes.
    pub fn decode(body: &[u8]) -> Result<ChallengeAck, MessageError> {
        const WHAT: &str = "challenge_ack";
        match body {
            [b'a', digest @ ..] if digest.len() == 16 => {
                let mut d = [0u8; 16];
                d.copy_from_slice(digest);
                Ok(ChallengeAck { digest: d })
            }
            [b'a', ..] => Err(MessageError::WrongLength(WHAT)),
            [other, ..] => Err(MessageError::UnexpectedTag {
                expected: WHAT,
                got: char::from(*other),
            }),
            [] => Err(MessageError::Truncated(WHAT)),
        }
    }

    /// Encodes the message body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(b'a');
        out.extend_from_slice(&self.digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_prefix_fails<T: std::fmt::Debug>(
        full: &[u8],
        decode: impl Fn(&[u8]) -> Result<T, MessageError>,
    ) {
        for n in 0..full.len() {
            assert!(decode(&full[..n]).is_err(), "prefix of {n} bytes decoded");
        }
    }

    #[test]
    fn send_name_round_trips_and_ignores_trailing_bytes() {
        let msg = SendName::New {
            flags: DistFlags::OURS,
            creation: 0xdead_beef,
            name: "rust@host".into(),
        };
        let mut body = Vec::new();
        msg.encode(&mut body);
        assert_eq!(SendName::decode(&body).unwrap(), msg);
        every_prefix_fails(&body, SendName::decode);
        body.extend_from_slice(b"junk");
        assert_eq!(SendName::decode(&body).unwrap(), msg);

        let old = SendName::Old {
            version: 5,
            flags: 0x0107_0f94,
            name: "old@host".into(),
        };
        let mut body = Vec::new();
        old.encode(&mut body);
        assert_eq!(SendName::decode(&body).unwrap(), old);
        assert!(SendName::decode(&body[..5]).is_err());
    }

    #[test]
    fn send_name_rejects_garbage() {
        assert!(matches!(
            SendName::decode(b"X"),
            Err(MessageError::UnexpectedTag { got: 'X', .. })
        ));
        let mut body = vec![b'N'];
        body.extend_from_slice(&[0; 12]);
        body.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(
            SendName::decode(&body),
            Err(MessageError::Truncated("send_name"))
        );
        let mut body = Vec::new();
        SendName::New {
            flags: DistFlags::OURS,
            creation: 1,
            name: "a@b".into(),
        }
        .encode(&mut body);
        let n = body.len();
        body[n - 2] = 0; // NUL in the name
        assert_eq!(
            SendName::decode(&body),
            Err(MessageError::BadName("send_name"))
        );
    }

    #[test]
    fn statuses_round_trip() {
        for status in [
            HandshakeStatus::Ok,
            HandshakeStatus::OkSimultaneous,
            HandshakeStatus::Nok,
            HandshakeStatus::NotAllowed,
            HandshakeStatus::Alive,
            HandshakeStatus::Named {
                name: "gen-1@host".into(),
                creation: 7,
            },
        ] {
            let mut body = Vec::new();
            status.encode(&mut body);
            assert_eq!(HandshakeStatus::decode(&body).unwrap(), status);
        }
        assert!(matches!(
            HandshakeStatus::decode(b"sbogus"),
            Err(MessageError::UnknownStatus(_))
        ));
        assert!(matches!(
            HandshakeStatus::decode(b"snamed:\x00\x05ab"),
            Err(MessageError::Truncated(_))
        ));
        assert!(matches!(
            HandshakeStatus::decode(b""),
            Err(MessageError::Truncated(_))
        ));
        assert_eq!(AliveReply::decode(b"strue"), Ok(AliveReply(true)));
        assert_eq!(AliveReply::decode(b"sfalse"), Ok(AliveReply(false)));
        assert!(AliveReply::decode(b"smaybe").is_err());
    }

    #[test]
    fn challenge_messages_round_trip_and_check_lengths() {
        let ch = Challenge {
            flags: DistFlags::OURS,
            challenge: u32::MAX,
            creation: 3,
            name: "b@h".into(),
        };
        let mut body = Vec::new();
        ch.encode(&mut body);
        assert_eq!(Challenge::decode(&body).unwrap(), ch);
        every_prefix_fails(&body, Challenge::decode);

        let reply = ChallengeReply {
            challenge: 42,
            digest: [7; 16],
        };
        let mut body = Vec::new();
        reply.encode(&mut body);
        assert_eq!(ChallengeReply::decode(&body).unwrap(), reply);
        every_prefix_fails(&body, ChallengeReply::decode);
        body.push(0);
        assert_eq!(
            ChallengeReply::decode(&body),
            Err(MessageError::WrongLength("challenge_reply"))
        );

        let ack = ChallengeAck { digest: [9; 16] };
        let mut body = Vec::new();
        ack.encode(&mut body);
        assert_eq!(ChallengeAck::decode(&body).unwrap(), ack);
        every_prefix_fails(&body, ChallengeAck::decode);

        let comp = Complement {
            flags_high: 0xf,
            creation: 99,
        };
        let mut body = Vec::new();
        comp.encode(&mut body);
        assert_eq!(Complement::decode(&body).unwrap(), comp);
        every_prefix_fails(&body, Complement::decode);
    }

    #[test]
    fn frames_are_bounded_before_allocation() {
        assert_eq!(
            decode_frame(&[0], LengthPrefix::U16, 1024),
            Ok(Status::Partial)
        );
        assert_eq!(
            decode_frame(&[0, 3, b'a'], LengthPrefix::U16, 1024),
            Ok(Status::Partial)
        );
        assert_eq!(
            decode_frame(&[0, 3, b'a', b'b', b'c', b'x'], LengthPrefix::U16, 1024),
            Ok(Status::Complete((&b"abc"[..], 5)))
        );
        assert_eq!(
            decode_frame(&[0xff, 0xff, 0xff, 0xff], LengthPrefix::U32, 1024),
            Err(MessageError::TooLong {
                len: u32::MAX as usize,
                max: 1024
            })
        );
        assert_eq!(
            decode_frame(&[0, 0], LengthPrefix::U16, 1024),
            Err(MessageError::Empty)
        );
        let mut out = Vec::new();
        write_frame(&mut out, LengthPrefix::U32, |o| o.extend_from_slice(b"hey"));
        assert_eq!(out, [0, 0, 0, 3, b'h', b'e', b'y']);
    }
}
