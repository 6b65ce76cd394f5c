//! Decoding the External Term Format, safely, from untrusted bytes.
//!
//! [`decode`] reads exactly one term (with its version byte); [`decode_prefix`] reads
//! one term from the front of a buffer and says how many bytes it used, for
//! distribution frames, which carry a control term and a message term back to back.
//!
//! Nothing here panics or indexes unchecked, whatever the input. Before any
//! allocation sized by a peer's count, the count is checked against the bytes left
//! (every element takes at least one byte) and charged against the allocation budget
//! of [`DecodeLimits`], so memory stays proportional to the input. Nesting is limited
//! by [`DecodeLimits::max_depth`].
//!
//! # The allocation budget
//!
//! Every allocation the decoder makes is charged, at the size the allocator is asked
//! for: `size_of::<Term>()` (32 bytes) per element slot, payload bytes, atom
//! allocations with their reference counts and padding, boxes, the merged vector when a
//! list's tail is itself a list, and the key index a large map's duplicate check
//! builds. The default budget is 16 bytes per input byte plus 64 KiB, the bound the fuzz
//! targets check with a counting allocator: whatever a peer sends, one decoded term (or
//! one distribution frame, see `crate::dist::control::decode`) holds at most
//! `16 × input + 64 KiB` bytes of heap.
//!
//! Nearly every term OTP encodes needs less. The exceptions are terms made mostly of
//! elements smaller than their 32-byte slot would allow at 16 bytes per input byte:
//! `[]` (1 byte, so 32 bytes per byte) and one-character atoms not among the last 8
//! distinct atoms decoded (3 bytes for a slot and a 24-byte atom). A list or tuple of
//! more than about 4,000 `[]`s beyond what the other elements pay for, or of more than
//! about 8,000 such atoms, is refused with [`DecodeError::TooLarge`]. Lists of small
//! integers are fine: OTP sends them as `STRING_EXT` (1 byte each, stored as bytes) up
//! to 65,535 elements and as 2-byte `SMALL_INTEGER_EXT`s beyond (exactly 16 bytes per
//! byte). Raise [`DecodeLimits::max_alloc`] to accept more.
//!
//! The decoder recurses once per nesting level (two stack frames per level, a few
//! hundred bytes each in release builds, a few KiB in debug builds). With the default
//! depth of 256 that stays well under 1 MiB even in debug builds, so decoding is safe
//! on a 2 MiB tokio worker stack; a test decodes, compares, prints, re-encodes and
//! drops a term of the maximum depth on a 1 MiB thread. Raise `max_depth` only together
//! with the stack size.

use std::mem::size_of;

use num_bigint::{BigInt, Sign};

use super::cmp::compare_exact;
use super::{Atom, ExternalFun, InternalFun, Pid, Port, Reference, Term};
use crate::wire::Reader;

/// The version byte that starts every term in the External Term Format.
pub const VERSION: u8 = 131;

/// Tag bytes of the External Term Format (`erts/doc/src/erl_ext_dist.xml`).
pub(crate) mod tag {
    pub const NEW_FLOAT: u8 = 70;
    pub const BIT_BINARY: u8 = 77;
    pub const NEW_PID: u8 = 88;
    pub const NEW_PORT: u8 = 89;
    pub const NEWER_REFERENCE: u8 = 90;
    pub const SMALL_INTEGER: u8 = 97;
    pub const INTEGER: u8 = 98;
    pub const FLOAT: u8 = 99;
    pub const ATOM: u8 = 100;
    pub const REFERENCE: u8 = 101;
    pub const PORT: u8 = 102;
    pub const PID: u8 = 103;
    pub const SMALL_TUPLE: u8 = 104;
    pub const LARGE_TUPLE: u8 = 105;
    pub const NIL: u8 = 106;
    pub const STRING: u8 = 107;
    pub const LIST: u8 = 108;
    pub const BINARY: u8 = 109;
    pub const SMALL_BIG: u8 = 110;
    pub const LARGE_BIG: u8 = 111;
    pub const NEW_FUN: u8 = 112;
    pub const EXPORT: u8 = 113;
    pub const NEW_REFERENCE: u8 = 114;
    pub const SMALL_ATOM: u8 = 115;
    pub const MAP: u8 = 116;
    pub const ATOM_UTF8: u8 = 118;
    pub const SMALL_ATOM_UTF8: u8 = 119;
    pub const V4_PORT: u8 = 120;
    // Tags we recognise and refuse.
    pub const DIST_HEADER: u8 = 68;
    pub const DIST_FRAG_HEADER: u8 = 69;
    pub const COMPRESSED: u8 = 80;
    pub const ATOM_CACHE_REF: u8 = 82;
    pub const FUN: u8 = 117;
    pub const LOCAL: u8 = 121;
}

/// Bytes of allocation the default budget allows per input byte (see the [module
/// documentation](self) for what it refuses: only lists and tuples of thousands of `[]`s
/// or one-character atoms).
pub const DEFAULT_ALLOC_PER_INPUT_BYTE: usize = 16;
/// Bytes of allocation the default budget allows on top of the per-byte allowance.
pub const DEFAULT_ALLOC_SLACK: usize = 64 * 1024;

/// Limits applied while decoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Deepest nesting allowed: a term at the top is at depth 0, the elements of a
    /// top-level tuple at depth 1. Default 256.
    pub max_depth: usize,
    /// Bytes the decoded term may allocate, counted as `size_of::<Term>()` per element
    /// slot plus payload bytes (binaries, atom names, big integer digits, boxes).
    /// `None` means `16 × input length + 64 KiB`, enough for any term OTP encodes but
    /// lists or tuples of thousands of `[]`s (see the [module documentation](self)).
    pub max_alloc: Option<usize>,
}

impl DecodeLimits {
    /// The default nesting limit.
    pub const DEFAULT_MAX_DEPTH: usize = 256;

    /// The allocation budget for an input of `input_len` bytes.
    pub fn budget_for(&self, input_len: usize) -> usize {
        self.max_alloc.unwrap_or_else(|| {
            input_len
                .saturating_mul(DEFAULT_ALLOC_PER_INPUT_BYTE)
                .saturating_add(DEFAULT_ALLOC_SLACK)
        })
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_depth: Self::DEFAULT_MAX_DEPTH,
            max_alloc: None,
        }
    }
}

/// Why bytes are not a valid term.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ends in the middle of a term (or a count claims more elements than
    /// bytes are left).
    #[error("input ends in the middle of a term")]
    UnexpectedEnd,
    /// The first byte is not the version byte 131.
    #[error("expected version byte 131, found {0}")]
    BadVersion(u8),
    /// A tag byte that is not part of the format.
    #[error("unknown term tag {0}")]
    UnknownTag(u8),
    /// A tag we recognise but do not decode (atom cache, compression, `LOCAL_EXT`).
    #[error("unsupported term tag {tag}: {what}")]
    Unsupported {
        /// The tag byte.
        tag: u8,
        /// What it is.
        what: &'static str,
    },
    /// Nesting deeper than [`DecodeLimits::max_depth`].
    #[error("term nested deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The term would allocate more than [`DecodeLimits::max_alloc`].
    #[error("term needs {needed} more bytes of memory, its budget has {budget} left")]
    TooLarge {
        /// Bytes the next step needed.
        needed: usize,
        /// Bytes left in the budget.
        budget: usize,
    },
    /// An atom that Erlang would not accept (too long).
    #[error("invalid atom: {0}")]
    InvalidAtom(&'static str),
    /// A UTF-8 atom whose bytes are not UTF-8.
    #[error("atom is not valid UTF-8")]
    InvalidUtf8,
    /// A float that is NaN, infinite or (old format) not a number.
    #[error("invalid float")]
    InvalidFloat,
    /// A map with the same key twice (Erlang rejects these too).
    #[error("map has a duplicate key")]
    DuplicateMapKey,
    /// A field of a term that is out of range or of the wrong type.
    #[error("invalid term (tag {tag}): {what}")]
    Invalid {
        /// The tag of the term being decoded.
        tag: u8,
        /// What is wrong.
        what: &'static str,
    },
    /// Bytes left after the term, where exactly one term was expected.
    #[error("{0} bytes after the term")]
    TrailingBytes(usize),
}

/// Decodes exactly one term, with its version byte, under the default limits.
/// Bytes after the term are an error.
pub fn decode(input: &[u8]) -> std::result::Result<Term, DecodeError> {
    let (term, used) = decode_prefix(input, &DecodeLimits::default())?;
    match input.len() - used {
        0 => Ok(term),
        n => Err(DecodeError::TrailingBytes(n)),
    }
}

/// Decodes one term, with its version byte, from the front of `input`; returns it with
/// the number of bytes it took. The allocation budget is computed from the whole of
/// `input`.
pub fn decode_prefix(
    input: &[u8],
    limits: &DecodeLimits,
) -> std::result::Result<(Term, usize), DecodeError> {
    let mut budget = limits.budget_for(input.len());
    decode_prefix_within(input, limits.max_depth, &mut budget)
}

/// [`decode_prefix`] charging a budget the caller shares between several terms (the
/// two terms of a distribution frame): what the term takes is subtracted from `budget`.
pub(crate) fn decode_prefix_within(
    input: &[u8],
    max_depth: usize,
    budget: &mut usize,
) -> std::result::Result<(Term, usize), DecodeError> {
    let mut r = Reader::new(input);
    let version = r.u8().ok_or(DecodeError::UnexpectedEnd)?;
    if version != VERSION {
        return Err(DecodeError::BadVersion(version));
    }
    let mut d = Decoder {
        r,
        budget: *budget,
        max_depth,
        atoms: AtomCache::default(),
    };
    let result = d.charge(SLOT).and_then(|()| d.term(0));
    *budget = d.budget;
    Ok((result?, d.r.position()))
}

const SLOT: usize = size_of::<Term>();
/// What an `Arc<str>` allocates besides the text: the two reference counts.
const ARC_HEADER: usize = 2 * size_of::<usize>();

/// What an atom of `len` bytes allocates: its `Arc<str>`, padded to the counts'
/// alignment.
fn atom_cost(len: usize) -> usize {
    (ARC_HEADER + len).next_multiple_of(size_of::<usize>())
}
/// Most bytes a 255-character UTF-8 atom can take.
const MAX_ATOM_BYTES: usize = 4 * 255;

/// The last few atoms decoded, so that repeated atoms (node names in pids, `ok`)
/// share one allocation. Keyed by their raw bytes and encoding.
#[derive(Default)]
struct AtomCache<'a> {
    entries: [Option<(bool, &'a [u8], Atom)>; 8],
    next: usize,
}

impl<'a> AtomCache<'a> {
    fn get(&self, latin1: bool, raw: &[u8]) -> Option<Atom> {
        self.entries
            .iter()
            .flatten()
            .find_map(|(l, r, a)| (*l == latin1 && *r == raw).then(|| a.clone()))
    }

    fn put(&mut self, latin1: bool, raw: &'a [u8], atom: Atom) {
        if let Some(slot) = self.entries.get_mut(self.next) {
            *slot = Some((latin1, raw, atom));
        }
        self.next = (self.next + 1) % 8;
    }
}

struct Decoder<'a> {
    r: Reader<'a>,
    budget: usize,
    max_depth: usize,
    atoms: AtomCache<'a>,
}

type Result<T> = std::result::Result<T, DecodeError>;

fn invalid(tag: u8, what: &'static str) -> DecodeError {
    DecodeError::Invalid { tag, what }
}

impl<'a> Decoder<'a> {
    fn charge(&mut self, needed: usize) -> Result<()> {
        if needed > self.budget {
            return Err(DecodeError::TooLarge {
                needed,
                budget: self.budget,
            });
        }
        self.budget -= needed;
        Ok(())
    }

    fn charge_each(&mut self, count: usize, each: usize) -> Result<()> {
        self.charge(count.saturating_mul(each))
    }

    /// Fails unless `count` elements of at least `min_each` bytes can still follow.
    fn need(&self, count: usize, min_each: usize) -> Result<()> {
        if count.saturating_mul(min_each) > self.r.remaining() {
            return Err(DecodeError::UnexpectedEnd);
        }
        Ok(())
    }

    /// The depth of the children of a container at `depth`.
    fn child_depth(&self, depth: usize) -> Result<usize> {
        if depth >= self.max_depth {
            return Err(DecodeError::TooDeep {
                max: self.max_depth,
            });
        }
        Ok(depth + 1)
    }

    fn u8(&mut self) -> Result<u8> {
        self.r.u8().ok_or(DecodeError::UnexpectedEnd)
    }

    fn u16(&mut self) -> Result<u16> {
        self.r.u16().ok_or(DecodeError::UnexpectedEnd)
    }

    fn u32(&mut self) -> Result<u32> {
        self.r.u32().ok_or(DecodeError::UnexpectedEnd)
    }

    fn len32(&mut self) -> Result<usize> {
        let n = self.u32()?;
        usize::try_from(n).map_err(|_| DecodeError::UnexpectedEnd)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        self.r.take(n).ok_or(DecodeError::UnexpectedEnd)
    }

    /// Takes `n` payload bytes and charges them.
    fn payload(&mut self, n: usize) -> Result<&'a [u8]> {
        let bytes = self.take(n)?;
        self.charge(n)?;
        Ok(bytes)
    }

    fn term(&mut self, depth: usize) -> Result<Term> {
        let t = self.u8()?;
        match t {
            tag::SMALL_INTEGER => Ok(Term::Integer(i64::from(self.u8()?))),
            tag::INTEGER => Ok(Term::Integer(i64::from(
                self.r.i32().ok_or(DecodeError::UnexpectedEnd)?,
            ))),
            tag::NEW_FLOAT => {
                let f = self.r.f64().ok_or(DecodeError::UnexpectedEnd)?;
                finite(f)
            }
            tag::FLOAT => self.old_float(),
            tag::ATOM | tag::SMALL_ATOM | tag::ATOM_UTF8 | tag::SMALL_ATOM_UTF8 => {
                Ok(Term::Atom(self.atom_body(t)?))
            }
            tag::SMALL_TUPLE => {
                let n = usize::from(self.u8()?);
                self.tuple(n, depth)
            }
            tag::LARGE_TUPLE => {
                let n = self.len32()?;
                self.tuple(n, depth)
            }
            tag::NIL => Ok(Term::List(Vec::new())),
            tag::STRING => {
                let n = usize::from(self.u16()?);
                let bytes = self.payload(n)?;
                Ok(if n == 0 {
                    Term::List(Vec::new())
                } else {
                    Term::ByteList(bytes.to_vec())
                })
            }
            tag::LIST => self.list(depth),
            tag::BINARY => {
                let n = self.len32()?;
                Ok(Term::Binary(self.payload(n)?.to_vec()))
            }
            tag::BIT_BINARY => self.bit_binary(),
            tag::SMALL_BIG => {
                let n = usize::from(self.u8()?);
                self.big(n)
            }
            tag::LARGE_BIG => {
                let n = self.len32()?;
                self.big(n)
            }
            tag::MAP => self.map(depth),
            tag::PID | tag::NEW_PID => Ok(Term::Pid(Box::new(self.pid_body(t)?))),
            tag::PORT | tag::NEW_PORT | tag::V4_PORT => self.port(t),
            tag::REFERENCE | tag::NEW_REFERENCE | tag::NEWER_REFERENCE => self.reference(t),
            tag::EXPORT => self.export(),
            tag::NEW_FUN => self.new_fun(depth),
            tag::DIST_HEADER => Err(DecodeError::Unsupported {
                tag: t,
                what: "distribution header with atom cache (never negotiated)",
            }),
            tag::DIST_FRAG_HEADER => Err(DecodeError::Unsupported {
                tag: t,
                what: "distribution fragment header (never negotiated)",
            }),
            tag::ATOM_CACHE_REF => Err(DecodeError::Unsupported {
                tag: t,
                what: "atom cache reference (never negotiated)",
            }),
            tag::COMPRESSED => Err(DecodeError::Unsupported {
                tag: t,
                what: "compressed term (never sent on distribution connections)",
            }),
            tag::LOCAL => Err(DecodeError::Unsupported {
                tag: t,
                what: "LOCAL_EXT (only the node that made it can decode it)",
            }),
            tag::FUN => Err(DecodeError::Unsupported {
                tag: t,
                what: "FUN_EXT (removed in OTP 23)",
            }),
            other => Err(DecodeError::UnknownTag(other)),
        }
    }

    /// `FLOAT_EXT`: 31 bytes of C `%.20e` text, NUL padded.
    fn old_float(&mut self) -> Result<Term> {
        let raw = self.take(31)?;
        let text = raw.split(|&b| b == 0).next().unwrap_or_default();
        let text = std::str::from_utf8(text).map_err(|_| DecodeError::InvalidFloat)?;
        let f: f64 = text
            .trim_start()
            .parse()
            .map_err(|_| DecodeError::InvalidFloat)?;
        finite(f)
    }

    /// An atom after its tag byte.
    fn atom_body(&mut self, t: u8) -> Result<Atom> {
        let (len, latin1) = match t {
            tag::ATOM => (usize::from(self.u16()?), true),
            tag::SMALL_ATOM => (usize::from(self.u8()?), true),
            tag::ATOM_UTF8 => (usize::from(self.u16()?), false),
            _ => (usize::from(self.u8()?), false),
        };
        if len > if latin1 { 255 } else { MAX_ATOM_BYTES } {
            return Err(DecodeError::InvalidAtom("longer than 255 characters"));
        }
        let raw = self.take(len)?;
        if let Some(atom) = self.atoms.get(latin1, raw) {
            return Ok(atom);
        }
        let atom = if latin1 {
            let text: String = raw.iter().map(|&b| char::from(b)).collect();
            self.charge(atom_cost(text.len()))?;
            Atom::from(text)
        } else {
            let text = std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8)?;
            if text.chars().count() > 255 {
                return Err(DecodeError::InvalidAtom("longer than 255 characters"));
            }
            self.charge(atom_cost(text.len()))?;
            Atom::new(text)
        };
        self.atoms.put(latin1, raw, atom.clone());
        Ok(atom)
    }

    /// An atom where the format requires one (node names, module names).
    fn atom(&mut self, outer: u8) -> Result<Atom> {
        match self.u8()? {
            t @ (tag::ATOM | tag::SMALL_ATOM | tag::ATOM_UTF8 | tag::SMALL_ATOM_UTF8) => {
                self.atom_body(t)
            }
            tag::ATOM_CACHE_REF => Err(DecodeError::Unsupported {
                tag: tag::ATOM_CACHE_REF,
                what: "atom cache reference (never negotiated)",
            }),
            _ => Err(invalid(outer, "expected an atom")),
        }
    }

    fn tuple(&mut self, n: usize, depth: usize) -> Result<Term> {
        if n == 0 {
            return Ok(Term::Tuple(Vec::new()));
        }
        self.need(n, 1)?;
        self.charge_each(n, SLOT)?;
        let d = self.child_depth(depth)?;
        let mut elements = Vec::with_capacity(n);
        for _ in 0..n {
            elements.push(self.term(d)?);
        }
        Ok(Term::Tuple(elements))
    }

    /// `LIST_EXT`, normalised: a list tail is appended, `[ | T]` is `T`.
    fn list(&mut self, depth: usize) -> Result<Term> {
        let n = self.len32()?;
        self.need(n.saturating_add(1), 1)?;
        self.charge_each(n, SLOT)?;
        let d = self.child_depth(depth)?;
        let mut elements = Vec::with_capacity(n);
        for _ in 0..n {
            elements.push(self.term(d)?);
        }
        let tail = self.term(d)?;
        if !elements.is_empty() {
            let appended = match &tail {
                Term::List(rest) => Some(rest.len()),
                Term::ByteList(rest) => Some(rest.len()),
                Term::ImproperList { elements: rest, .. } => Some(rest.len()),
                _ => None,
            };
            match appended {
                // `[]`, the usual tail: nothing moves.
                Some(0) => {}
                // A list tail is appended: the elements move into a vector of both
                // lengths, allocated while both parts are still held.
                Some(m) => self.charge_each(n.saturating_add(m), SLOT)?,
                // Any other tail moves into a box of its own.
                None => self.charge(SLOT)?,
            }
        }
        Ok(Term::improper_list(elements, tail))
    }

    fn bit_binary(&mut self) -> Result<Term> {
        let n = self.len32()?;
        let bits = self.u8()?;
        let bytes = self.payload(n)?;
        match (n, bits) {
            (0, 0) => Ok(Term::Binary(Vec::new())),
            (1.., 8) => Ok(Term::Binary(bytes.to_vec())),
            (1.., 1..=7) => Term::bit_string(bytes.to_vec(), (n - 1) * 8 + usize::from(bits))
                .ok_or(DecodeError::UnexpectedEnd),
            _ => Err(invalid(
                tag::BIT_BINARY,
                "used bits of the last byte out of range",
            )),
        }
    }

    /// `SMALL_BIG_EXT`/`LARGE_BIG_EXT` after the length: sign byte, little-endian digits.
    fn big(&mut self, n: usize) -> Result<Term> {
        let negative = self.u8()? != 0;
        let digits = self.take(n)?;
        let significant = digits.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let digits = digits.get(..significant).unwrap_or_default();
        if significant <= 8 {
            let mut le = [0u8; 8];
            for (dst, src) in le.iter_mut().zip(digits) {
                *dst = *src;
            }
            let magnitude = i128::from(u64::from_le_bytes(le));
            let value = if negative { -magnitude } else { magnitude };
            if let Ok(i) = i64::try_from(value) {
                return Ok(Term::Integer(i));
            }
        }
        self.charge(size_of::<BigInt>() + significant.div_ceil(8) * 8)?;
        let sign = if negative { Sign::Minus } else { Sign::Plus };
        Ok(Term::BigInteger(Box::new(BigInt::from_bytes_le(
            sign, digits,
        ))))
    }

    fn map(&mut self, depth: usize) -> Result<Term> {
        let n = self.len32()?;
        if n == 0 {
            return Ok(Term::Map(Vec::new()));
        }
        self.need(n, 2)?;
        // The pairs, and the index of keys `has_duplicate_key` sorts for a large map.
        self.charge_each(n, 2 * SLOT + size_of::<&Term>())?;
        let d = self.child_depth(depth)?;
        let mut pairs = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.term(d)?;
            let v = self.term(d)?;
            pairs.push((k, v));
        }
        if has_duplicate_key(&pairs) {
            return Err(DecodeError::DuplicateMapKey);
        }
        Ok(Term::Map(pairs))
    }

    fn pid_body(&mut self, t: u8) -> Result<Pid> {
        let node = self.atom(t)?;
        let id = self.u32()?;
        let serial = self.u32()?;
        let creation = if t == tag::PID {
            u32::from(self.u8()?)
        } else {
            self.u32()?
        };
        self.charge(size_of::<Pid>())?;
        Ok(Pid {
            node,
            id,
            serial,
            creation,
        })
    }

    fn port(&mut self, t: u8) -> Result<Term> {
        let node = self.atom(t)?;
        let id = if t == tag::V4_PORT {
            self.r.u64().ok_or(DecodeError::UnexpectedEnd)?
        } else {
            u64::from(self.u32()?)
        };
        let creation = if t == tag::PORT {
            u32::from(self.u8()?)
        } else {
            self.u32()?
        };
        self.charge(size_of::<Port>())?;
        Ok(Term::Port(Box::new(Port { node, id, creation })))
    }

    fn reference(&mut self, t: u8) -> Result<Term> {
        let (node, creation, id) = if t == tag::REFERENCE {
            let node = self.atom(t)?;
            let id = self.u32()?;
            let creation = u32::from(self.u8()?);
            self.charge(size_of::<u32>())?;
            (node, creation, vec![id])
        } else {
            let len = usize::from(self.u16()?);
            if len > 5 {
                return Err(invalid(t, "reference with more than 5 id words"));
            }
            let node = self.atom(t)?;
            let creation = if t == tag::NEW_REFERENCE {
                u32::from(self.u8()?)
            } else {
                self.u32()?
            };
            self.need(len, 4)?;
            self.charge_each(len, size_of::<u32>())?;
            let mut id = Vec::with_capacity(len);
            for _ in 0..len {
                id.push(self.u32()?);
            }
            (node, creation, id)
        };
        self.charge(size_of::<Reference>())?;
        Ok(Term::Reference(Box::new(Reference { node, creation, id })))
    }

    fn export(&mut self) -> Result<Term> {
        let module = self.atom(tag::EXPORT)?;
        let function = self.atom(tag::EXPORT)?;
        let arity = self.integer_field(tag::EXPORT)?;
        let arity = u8::try_from(arity).map_err(|_| invalid(tag::EXPORT, "arity out of range"))?;
        self.charge(size_of::<ExternalFun>())?;
        Ok(Term::ExternalFun(Box::new(ExternalFun {
            module,
            function,
            arity,
        })))
    }

    /// An integer-valued field (arity, old index, old uniq): any integer tag, value
    /// within `i64`.
    fn integer_field(&mut self, outer: u8) -> Result<i64> {
        match self.u8()? {
            tag::SMALL_INTEGER => Ok(i64::from(self.u8()?)),
            tag::INTEGER => Ok(i64::from(self.r.i32().ok_or(DecodeError::UnexpectedEnd)?)),
            t @ (tag::SMALL_BIG | tag::LARGE_BIG) => {
                let n = if t == tag::SMALL_BIG {
                    usize::from(self.u8()?)
                } else {
                    self.len32()?
                };
                match self.big(n)? {
                    Term::Integer(i) => Ok(i),
                    _ => Err(invalid(outer, "integer field out of range")),
                }
            }
            _ => Err(invalid(outer, "expected an integer")),
        }
    }

    fn new_fun(&mut self, depth: usize) -> Result<Term> {
        let start = self.r.position();
        let size = self.len32()?;
        let arity = self.u8()?;
        let uniq = self.r.array::<16>().ok_or(DecodeError::UnexpectedEnd)?;
        let index = self.u32()?;
        let num_free = self.len32()?;
        let module = self.atom(tag::NEW_FUN)?;
        let old_index = self.integer_field(tag::NEW_FUN)?;
        let old_uniq = self.integer_field(tag::NEW_FUN)?;
        let pid = match self.u8()? {
            t @ (tag::PID | tag::NEW_PID) => self.pid_body(t)?,
            _ => return Err(invalid(tag::NEW_FUN, "expected a pid")),
        };
        let mut free_vars = Vec::new();
        if num_free > 0 {
            self.need(num_free, 1)?;
            self.charge_each(num_free, SLOT)?;
            let d = self.child_depth(depth)?;
            free_vars.reserve_exact(num_free);
            for _ in 0..num_free {
                free_vars.push(self.term(d)?);
            }
        }
        if self.r.position() - start != size {
            return Err(invalid(tag::NEW_FUN, "size field does not match the fun"));
        }
        // The Pid was charged by `pid_body`; it lives inside the InternalFun box.
        self.charge(size_of::<InternalFun>())?;
        Ok(Term::InternalFun(Box::new(InternalFun {
            arity,
            uniq,
            index,
            module,
            old_index,
            old_uniq,
            pid,
            free_vars,
        })))
    }
}

fn finite(f: f64) -> Result<Term> {
    if f.is_finite() {
        Ok(Term::Float(f))
    } else {
        Err(DecodeError::InvalidFloat)
    }
}

/// Whether two keys are equal, found by sorting them with the linear
/// [`compare_exact`]; keys that differ only in the order of maps nested inside them are
/// not caught (harmless: no Erlang node sends them). Near-linear in the size of the
/// keys, even for keys nested in keys.
pub(crate) fn has_duplicate_key(pairs: &[(Term, Term)]) -> bool {
    if pairs.len() <= 8 {
        return pairs.iter().enumerate().any(|(i, (k, _))| {
            pairs
                .iter()
                .skip(i + 1)
                .any(|(k2, _)| compare_exact(k, k2).is_eq())
        });
    }
    let mut keys: Vec<&Term> = pairs.iter().map(|(k, _)| k).collect();
    // Unstable: sorts in place, with no scratch buffer besides `keys`.
    keys.sort_unstable_by(|a, b| compare_exact(a, b));
    keys.windows(2).any(|w| match w {
        [a, b] => compare_exact(a, b).is_eq(),
        _ => false,
    })
}
