//! Erlang terms and the External Term Format (ETF), written for hostile peers.
//!
//! Every message on an Erlang distribution connection is a pair of terms in the
//! External Term Format (`term_to_binary/1`'s format, version byte 131). This module
//! holds the [`Term`] model, a decoder ([`decode()`], [`decode_prefix`]), an encoder
//! ([`encode()`], [`encode_into`]) that makes the same choices as OTP's own encoder, and
//! a text form: [`parse_term`] reads Erlang literal syntax and `Display` prints a term
//! exactly as `io_lib:format("~0p", [Term])` does on OTP 25.
//!
//! ```
//! use autocluster::term::{self, Term};
//!
//! // {ok, [1, 2, 3], <<"hi">>} as an Erlang node sends it.
//! let bytes = term::encode(&term::parse_term("{ok, [1,2,3], <<\"hi\">>}.")?)?;
//! assert_eq!(bytes[..3], [131, 104, 3]); // version, SMALL_TUPLE_EXT, arity 3
//!
//! let t = term::decode(&bytes)?;
//! let fields = t.as_tuple().expect("a tuple");
//! assert!(fields[0].is_atom("ok"));
//! assert_eq!(fields[1], Term::list(vec![1.into(), 2.into(), 3.into()]));
//! assert_eq!(t.to_string(), r#"{ok,[1,2,3],<<"hi">>}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design
//!
//! * **Pure and bounded.** Decoding reads a borrowed slice through the crate's
//!   bounds-checked `Reader`; nothing indexes unchecked and nothing
//!   panics on any input. Every count a peer sends is checked against the bytes that
//!   are left (each element needs at least one byte) *and* charged against an
//!   allocation budget before anything is allocated: `size_of::<Term>()` per element
//!   slot plus every payload byte ([`DecodeLimits::max_alloc`], by default 16 bytes per
//!   input byte plus 64 KiB, which every term OTP produces fits in but lists or tuples
//!   of thousands of `[]`s, see [`decode`](mod@decode)). Nesting is limited
//!   ([`DecodeLimits::max_depth`], 256 by default).
//! * **Canonical values.** The decoder normalises what has several encodings, so that
//!   equal terms look equal: integers that fit `i64` are [`Term::Integer`] whatever
//!   their tag, a `LIST_EXT` whose tail is itself a list is flattened, an empty
//!   `STRING_EXT` is `[]`, the unused bits of a bit string are cleared. Equality is
//!   Erlang's exact equality (`=:=`): a [`Term::ByteList`] equals the [`Term::List`] of
//!   the same small integers, maps compare as sets of pairs, `1 =/= 1.0`.
//! * **OTP's encoding choices.** The encoder picks the tags `term_to_binary(T,
//!   [{minor_version, 2}])` picks on OTP 25 (UTF-8 atoms, `NEW_FLOAT_EXT`, `STRING_EXT`
//!   only for proper lists of bytes shorter than 65536, `NEW_PID_EXT`,
//!   `NEWER_REFERENCE_EXT`), so our bytes are OTP's bytes; the integration tests check
//!   this against a real `erl`.
//! * **Small terms.** A [`Term`] is 32 bytes; the rare large variants (big integers,
//!   pids, ports, references, funs) are boxed, atoms are shared `Arc<str>`s, and one
//!   decode reuses the atoms it has already seen (node names repeat in every pid).
//! * **Not supported on purpose:** the atom cache (`ATOM_CACHE_REF` 82, the
//!   distribution header 68: we never advertise `DFLAG_DIST_HDR_ATOM_CACHE`),
//!   `LOCAL_EXT` (121, only meaningful to the node that made it), `COMPRESSED` (80, which
//!   OTP never puts on a distribution connection; inflating it would need a zlib
//!   dependency) and the pre-OTP 23 `FUN_EXT` (117). They decode to
//!   [`DecodeError::Unsupported`], never to a panic.
//!
//! # Why not the `eetf` crate
//!
//! `eetf` 0.12 panics (`unimplemented!`) on tags 68 and 82, preallocates whatever
//! element count the peer claims (`Vec::with_capacity(count)`), has no depth limit (a
//! deeply nested term overflows the stack), encodes a list of negative integers as a
//! byte string (`[-1]` arrives as `[255]`), and keeps maps in a `HashMap`, losing their
//! order. A distribution connection must survive any bytes an authenticated but buggy
//! or hostile peer sends, so we keep our own codec and offer conversions to and from
//! `eetf::Term` behind the `eetf` cargo feature.
//!
//! # Printing pids, ports, references and funs
//!
//! Erlang prints these relative to the printing node's node table (`<0.85.0>`,
//! `<9073.85.0>`), which we do not have. `Display` prints the node name instead:
//! `<rabbit@host.85.0>`, `#Port<rabbit@host.5>`, `#Ref<rabbit@host.3.2.1>` (id words
//! most significant first, as Erlang prints them), `fun m:f/2` (as Erlang does) and
//! `#Fun<m.OldIndex.OldUniq>` (as Erlang does). Such output is not parseable by Erlang,
//! just as Erlang's is not.

mod cmp;
pub mod decode;
#[cfg(feature = "eetf")]
#[cfg_attr(docsrs, doc(cfg(feature = "eetf")))]
pub mod eetf;
pub mod encode;
pub mod text;

#[cfg(test)]
pub(crate) mod tests;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use num_bigint::BigInt;

pub use decode::{DecodeError, DecodeLimits, VERSION, decode, decode_prefix};
pub use encode::{EncodeError, encode, encode_into};
pub use text::{ParseError, ParseErrorKind, parse_term};

/// An Erlang atom: a shared, immutable UTF-8 name.
///
/// Cloning is a reference-count increment. An atom longer than 255 characters can be
/// built here but not encoded (Erlang rejects it too).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Atom(Arc<str>);

impl Atom {
    /// Makes an atom with the given name.
    pub fn new(name: &str) -> Self {
        Atom(Arc::from(name))
    }

    /// The atom's name, without quotes.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Atom {
    fn from(name: &str) -> Self {
        Atom::new(name)
    }
}

impl From<String> for Atom {
    fn from(name: String) -> Self {
        Atom(Arc::from(name))
    }
}

impl From<Arc<str>> for Atom {
    fn from(name: Arc<str>) -> Self {
        Atom(name)
    }
}

impl AsRef<str> for Atom {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Atom {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Atom {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Debug for Atom {
    /// Erlang syntax, as `Display`: `ok`, `'EXIT'`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Atom {
    /// Erlang syntax, quoted when needed, exactly as `io_lib:format("~0p", [Atom])`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        text::write_atom(f, self.as_str())
    }
}

/// A process identifier (`NEW_PID_EXT`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pid {
    /// The node the process lives on.
    pub node: Atom,
    /// Process number (15 significant bits on OTP, 32 on the wire).
    pub id: u32,
    /// Serial number (13 significant bits on OTP, 32 on the wire).
    pub serial: u32,
    /// The node incarnation (`creation`) the process belongs to.
    pub creation: u32,
}

/// A port identifier (`NEW_PORT_EXT` / `V4_PORT_EXT`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Port {
    /// The node the port lives on.
    pub node: Atom,
    /// Port number (64 bits since OTP 24).
    pub id: u64,
    /// The node incarnation.
    pub creation: u32,
}

/// A reference (`NEWER_REFERENCE_EXT`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// The node that made the reference.
    pub node: Atom,
    /// The node incarnation.
    pub creation: u32,
    /// Id words, least significant first as on the wire (at most 5).
    pub id: Vec<u32>,
}

/// An external fun, `fun Module:Function/Arity` (`EXPORT_EXT`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExternalFun {
    /// Module name.
    pub module: Atom,
    /// Function name.
    pub function: Atom,
    /// Arity.
    pub arity: u8,
}

/// A local fun with its environment (`NEW_FUN_EXT`).
///
/// Only meaningful to a node that has the code of `module` loaded with the same
/// `uniq`; we decode it to pass it along or print it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InternalFun {
    /// Number of arguments.
    pub arity: u8,
    /// MD5 of the module's code (the fun's identity).
    pub uniq: [u8; 16],
    /// Index in the module's fun table.
    pub index: u32,
    /// Module that defines the fun.
    pub module: Atom,
    /// Old-style index (printed by `#Fun<M.OldIndex.OldUniq>`).
    pub old_index: i64,
    /// Old-style hash of the fun.
    pub old_uniq: i64,
    /// The process that created the fun.
    pub pid: Pid,
    /// Captured variables.
    pub free_vars: Vec<Term>,
}

/// An Erlang term.
///
/// Equality (`==`) is Erlang's exact equality `=:=`: a [`Term::ByteList`] equals the
/// [`Term::List`] of the same integers, `[a | [b]]` equals `[a, b]`, maps compare as
/// multisets of pairs whatever their order, and an integer never equals a float. As in
/// OTP 25, `0.0 =:= -0.0`. `Hash` agrees with equality.
///
/// Variants holding rarely used large payloads are boxed so that a `Term` stays 32
/// bytes; build them with the constructors (`Term::from(pid)`,
/// [`Term::improper_list`], `Term::from(BigInt)`), which also normalise.
#[derive(Clone, Debug)]
pub enum Term {
    /// An atom (`true` and `false` are atoms).
    Atom(Atom),
    /// Any integer that fits `i64`.
    Integer(i64),
    /// An integer outside `i64` (decoders and constructors keep this invariant; a
    /// small value here still compares and encodes like the `Integer`).
    BigInteger(Box<BigInt>),
    /// A float; never NaN or infinite on the wire.
    Float(f64),
    /// A binary.
    Binary(Vec<u8>),
    /// A bit string that is not a whole number of bytes: `bits` (1..=7) bits of the
    /// last byte are used, the high ones.
    BitBinary {
        /// The bytes, the last one partially used.
        bytes: Vec<u8>,
        /// Used bits in the last byte, 1..=7.
        bits: u8,
    },
    /// A proper list; `[]` is `List(vec![])`.
    List(Vec<Term>),
    /// An improper list `[a, b | c]`, with at least one element and a tail that is not
    /// a list. OTP 24+ `gen:call` tags look like `[alias | Ref]`.
    ImproperList {
        /// The elements before the `|`.
        elements: Box<[Term]>,
        /// What follows the `|`.
        tail: Box<Term>,
    },
    /// A proper list of integers 0..=255 in compact form (`STRING_EXT`); equal to the
    /// `List` of the same integers.
    ByteList(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Term>),
    /// A map, in the order the pairs were decoded or inserted.
    Map(Vec<(Term, Term)>),
    /// A process identifier.
    Pid(Box<Pid>),
    /// A port identifier.
    Port(Box<Port>),
    /// A reference.
    Reference(Box<Reference>),
    /// `fun M:F/A`.
    ExternalFun(Box<ExternalFun>),
    /// A local fun.
    InternalFun(Box<InternalFun>),
}

impl Term {
    /// An atom term: `Term::atom("ok")`.
    pub fn atom(name: impl Into<Atom>) -> Term {
        Term::Atom(name.into())
    }

    /// A tuple.
    pub fn tuple(elements: Vec<Term>) -> Term {
        Term::Tuple(elements)
    }

    /// A proper list.
    pub fn list(elements: Vec<Term>) -> Term {
        Term::List(elements)
    }

    /// The empty list `[]`.
    pub fn nil() -> Term {
        Term::List(Vec::new())
    }

    /// A binary.
    pub fn binary(bytes: impl Into<Vec<u8>>) -> Term {
        Term::Binary(bytes.into())
    }

    /// A map from pairs, kept in the given order.
    pub fn map(pairs: Vec<(Term, Term)>) -> Term {
        Term::Map(pairs)
    }

    /// An Erlang string: the list of the text's code points, as a compact
    /// [`Term::ByteList`] when they are all below 256.
    pub fn string(text: &str) -> Term {
        if text.is_empty() {
            Term::nil()
        } else if text.chars().all(|c| (c as u32) < 256) {
            Term::ByteList(text.chars().map(|c| c as u8).collect())
        } else {
            Term::List(
                text.chars()
                    .map(|c| Term::Integer(i64::from(c as u32)))
                    .collect(),
            )
        }
    }

    /// A bit string of `bit_len` bits taken from the front of `bytes` (extra bytes are
    /// dropped, unused low bits of the last byte cleared); a whole number of bytes
    /// gives a [`Term::Binary`]. `None` if `bytes` holds fewer than `bit_len` bits.
    pub fn bit_string(mut bytes: Vec<u8>, bit_len: usize) -> Option<Term> {
        let whole = bit_len / 8;
        let bits = (bit_len % 8) as u8;
        let needed = whole + usize::from(bits > 0);
        if bytes.len() < needed {
            return None;
        }
        bytes.truncate(needed);
        if bits == 0 {
            return Some(Term::Binary(bytes));
        }
        if let Some(last) = bytes.last_mut() {
            *last &= 0xffu8 << (8 - bits);
        }
        Some(Term::BitBinary { bytes, bits })
    }

    /// `[e1, e2, ... | tail]`, normalised: no elements gives `tail` itself, and a list
    /// tail is appended (so the result is a proper list when `tail` is one).
    pub fn improper_list(mut elements: Vec<Term>, tail: Term) -> Term {
        if elements.is_empty() {
            return tail;
        }
        // `reserve_exact`: the vector grows to exactly both lengths (what the decoder's
        // allocation budget charges), not to double its size.
        match tail {
            Term::List(rest) => {
                elements.reserve_exact(rest.len());
                elements.extend(rest);
                Term::List(elements)
            }
            Term::ByteList(rest) => {
                elements.reserve_exact(rest.len());
                elements.extend(rest.into_iter().map(|b| Term::Integer(i64::from(b))));
                Term::List(elements)
            }
            Term::ImproperList {
                elements: rest,
                tail,
            } => {
                elements.reserve_exact(rest.len());
                elements.extend(rest.into_vec());
                Term::ImproperList {
                    elements: elements.into_boxed_slice(),
                    tail,
                }
            }
            tail => Term::ImproperList {
                elements: elements.into_boxed_slice(),
                tail: Box::new(tail),
            },
        }
    }

    /// Erlang's term order in its exact form, the order map keys are sorted in: numbers
    /// by value but every integer before every float (`1 < 1.0`), then atoms,
    /// references, funs, ports, pids, tuples, maps, `[]`, lists, bit strings. Maps are
    /// compared by size, then pairs in stored order, which is Erlang's order for maps
    /// stored sorted (as received from Erlang or built by [`parse_term`]). Pids, ports,
    /// references and funs are ordered by their fields, not by a node table. `Equal`
    /// implies `==`; `Term` does not implement `Ord` because maps stored in different
    /// orders are `==` without comparing `Equal`.
    pub fn compare_exact(&self, other: &Term) -> std::cmp::Ordering {
        cmp::compare_exact(self, other)
    }

    /// The atom, if this is one.
    pub fn as_atom(&self) -> Option<&Atom> {
        match self {
            Term::Atom(a) => Some(a),
            _ => None,
        }
    }

    /// Whether this is the atom `name`.
    pub fn is_atom(&self, name: &str) -> bool {
        matches!(self, Term::Atom(a) if a.as_str() == name)
    }

    /// The integer, if this is one that fits `i64`.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Term::Integer(i) => Some(*i),
            Term::BigInteger(b) => i64::try_from(&**b).ok(),
            _ => None,
        }
    }

    /// The integer as a big integer, if this is an integer.
    pub fn to_big_integer(&self) -> Option<BigInt> {
        match self {
            Term::Integer(i) => Some(BigInt::from(*i)),
            Term::BigInteger(b) => Some((**b).clone()),
            _ => None,
        }
    }

    /// The float, if this is one.
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Term::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// `true`/`false` for the atoms `true` and `false`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Term::Atom(a) if a == "true" => Some(true),
            Term::Atom(a) if a == "false" => Some(false),
            _ => None,
        }
    }

    /// The elements, if this is a tuple.
    pub fn as_tuple(&self) -> Option<&[Term]> {
        match self {
            Term::Tuple(t) => Some(t),
            _ => None,
        }
    }

    /// The bytes, if this is a binary (not a bit string).
    pub fn as_binary(&self) -> Option<&[u8]> {
        match self {
            Term::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// The pairs, if this is a map.
    pub fn as_map(&self) -> Option<&[(Term, Term)]> {
        match self {
            Term::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value stored under `key`, if this is a map that has it.
    pub fn map_get(&self, key: &Term) -> Option<&Term> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The pid, if this is one.
    pub fn as_pid(&self) -> Option<&Pid> {
        match self {
            Term::Pid(p) => Some(p),
            _ => None,
        }
    }

    /// The port, if this is one.
    pub fn as_port(&self) -> Option<&Port> {
        match self {
            Term::Port(p) => Some(p),
            _ => None,
        }
    }

    /// The reference, if this is one.
    pub fn as_reference(&self) -> Option<&Reference> {
        match self {
            Term::Reference(r) => Some(r),
            _ => None,
        }
    }

    /// Whether this is the empty list `[]`.
    pub fn is_nil(&self) -> bool {
        match self {
            Term::List(l) => l.is_empty(),
            Term::ByteList(b) => b.is_empty(),
            _ => false,
        }
    }

    /// Whether this is a proper list (`[]` included).
    pub fn is_proper_list(&self) -> bool {
        matches!(self, Term::List(_) | Term::ByteList(_))
    }

    /// The elements of a proper list ([`Term::List`] or [`Term::ByteList`]).
    pub fn into_list_elements(self) -> Option<Vec<Term>> {
        match self {
            Term::List(l) => Some(l),
            Term::ByteList(b) => Some(b.into_iter().map(|b| Term::Integer(i64::from(b))).collect()),
            _ => None,
        }
    }

    /// Text held by a string-like term: a binary (UTF-8, invalid sequences replaced),
    /// a byte list (Latin-1, as Erlang strings of bytes are) or a proper list of
    /// Unicode code points. `None` for anything else, or for a list holding something
    /// that is not a code point.
    pub fn as_text(&self) -> Option<Cow<'_, str>> {
        match self {
            Term::Binary(b) => Some(String::from_utf8_lossy(b)),
            Term::ByteList(b) => Some(Cow::Owned(b.iter().map(|&b| char::from(b)).collect())),
            Term::List(l) => l
                .iter()
                .map(|t| {
                    t.as_integer()
                        .and_then(|i| u32::try_from(i).ok())
                        .and_then(char::from_u32)
                })
                .collect::<Option<String>>()
                .map(Cow::Owned),
            _ => None,
        }
    }
}

impl From<i64> for Term {
    fn from(v: i64) -> Self {
        Term::Integer(v)
    }
}

impl From<i32> for Term {
    fn from(v: i32) -> Self {
        Term::Integer(i64::from(v))
    }
}

impl From<u32> for Term {
    fn from(v: u32) -> Self {
        Term::Integer(i64::from(v))
    }
}

impl From<u8> for Term {
    fn from(v: u8) -> Self {
        Term::Integer(i64::from(v))
    }
}

impl From<usize> for Term {
    fn from(v: usize) -> Self {
        match i64::try_from(v) {
            Ok(i) => Term::Integer(i),
            Err(_) => Term::BigInteger(Box::new(BigInt::from(v))),
        }
    }
}

impl From<u64> for Term {
    fn from(v: u64) -> Self {
        match i64::try_from(v) {
            Ok(i) => Term::Integer(i),
            Err(_) => Term::BigInteger(Box::new(BigInt::from(v))),
        }
    }
}

impl From<BigInt> for Term {
    /// Normalises: a value that fits `i64` becomes [`Term::Integer`].
    fn from(v: BigInt) -> Self {
        match i64::try_from(&v) {
            Ok(i) => Term::Integer(i),
            Err(_) => Term::BigInteger(Box::new(v)),
        }
    }
}

impl From<f64> for Term {
    fn from(v: f64) -> Self {
        Term::Float(v)
    }
}

impl From<bool> for Term {
    /// The atoms `true` and `false`.
    fn from(v: bool) -> Self {
        Term::atom(if v { "true" } else { "false" })
    }
}

impl From<Atom> for Term {
    fn from(v: Atom) -> Self {
        Term::Atom(v)
    }
}

impl From<Pid> for Term {
    fn from(v: Pid) -> Self {
        Term::Pid(Box::new(v))
    }
}

impl From<Port> for Term {
    fn from(v: Port) -> Self {
        Term::Port(Box::new(v))
    }
}

impl From<Reference> for Term {
    fn from(v: Reference) -> Self {
        Term::Reference(Box::new(v))
    }
}

impl From<ExternalFun> for Term {
    fn from(v: ExternalFun) -> Self {
        Term::ExternalFun(Box::new(v))
    }
}

impl From<InternalFun> for Term {
    fn from(v: InternalFun) -> Self {
        Term::InternalFun(Box::new(v))
    }
}

impl From<Vec<Term>> for Term {
    /// A proper list.
    fn from(v: Vec<Term>) -> Self {
        Term::List(v)
    }
}
