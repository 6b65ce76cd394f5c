//! Encoding terms in the External Term Format, with OTP's own choices of tags.
//!
//! The bytes are those of `term_to_binary(Term, [{minor_version, 2}])` on OTP 25 (the
//! default from OTP 26 on) and of OTP's distribution encoder with UTF-8 atoms:
//!
//! | term | tag |
//! |---|---|
//! | integer 0..=255 / other `i32` / larger | `SMALL_INTEGER_EXT` / `INTEGER_EXT` / `SMALL_BIG_EXT` or `LARGE_BIG_EXT` |
//! | float | `NEW_FLOAT_EXT` |
//! | atom | `SMALL_ATOM_UTF8_EXT`, or `ATOM_UTF8_EXT` past 255 bytes |
//! | proper list of 1..=65535 integers in 0..=255 | `STRING_EXT` |
//! | any other non-empty list | `LIST_EXT` (so `[-1, -2]` stays a list of integers) |
//! | `[]` | `NIL_EXT` |
//! | pid / port / reference | `NEW_PID_EXT` / `NEW_PORT_EXT` (`V4_PORT_EXT` for ids past 32 bits) / `NEWER_REFERENCE_EXT` |
//!
//! Maps are written in their stored order. A [`Term::BigInteger`] whose value fits
//! `i64` encodes exactly like the [`Term::Integer`], and an improper list whose tail
//! is itself a list is written flat, as OTP writes it.

use num_bigint::Sign;

use super::cmp::{Elem, ListCursor};
use super::decode::{VERSION, tag};
use super::{Atom, InternalFun, Pid, Term};

/// Why a term cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// An atom longer than 255 characters.
    #[error("atom of {chars} characters; Erlang allows 255")]
    AtomTooLong {
        /// Its length in characters.
        chars: usize,
    },
    /// NaN or an infinity: Erlang has neither.
    #[error("float {0} has no Erlang representation")]
    NonFiniteFloat(String),
    /// A `BitBinary` with `bits` outside 1..=7 or no bytes.
    #[error("bit string with {bits} used bits in the last of {len} bytes")]
    InvalidBitBinary {
        /// The `bits` field.
        bits: u8,
        /// Number of bytes.
        len: usize,
    },
    /// A reference with more than 5 id words (Erlang rejects them).
    #[error("reference with {0} id words; Erlang allows at most 5")]
    ReferenceTooLong(usize),
    /// A length that does not fit the format's 32-bit length field.
    #[error("{what} of {len} elements does not fit a 32-bit length")]
    TooLong {
        /// What was too long.
        what: &'static str,
        /// Its length.
        len: usize,
    },
}

type Result<T> = std::result::Result<T, EncodeError>;

/// Encodes a term with its version byte.
pub fn encode(term: &Term) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(term, &mut out)?;
    Ok(out)
}

/// Appends a term with its version byte to `out`. On error `out` is left as it was.
pub fn encode_into(term: &Term, out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    out.push(VERSION);
    let result = write_term(term, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn len32(what: &'static str, len: usize) -> Result<[u8; 4]> {
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| EncodeError::TooLong { what, len })
}

fn write_term(term: &Term, out: &mut Vec<u8>) -> Result<()> {
    match term {
        Term::Integer(i) => write_integer(*i, out),
        Term::BigInteger(b) => match i64::try_from(&**b) {
            Ok(i) => write_integer(i, out),
            Err(_) => {
                let (sign, digits) = b.to_bytes_le();
                write_big(sign == Sign::Minus, &digits, out)?;
            }
        },
        Term::Float(f) => {
            if !f.is_finite() {
                return Err(EncodeError::NonFiniteFloat(f.to_string()));
            }
            out.push(tag::NEW_FLOAT);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        Term::Atom(a) => write_atom(a, out)?,
        Term::Binary(b) => {
            out.push(tag::BINARY);
            out.extend_from_slice(&len32("binary", b.len())?);
            out.extend_from_slice(b);
        }
        Term::BitBinary { bytes, bits } => {
            let Some((last, whole)) = bytes.split_last().filter(|_| (1..8).contains(bits)) else {
                return Err(EncodeError::InvalidBitBinary {
                    bits: *bits,
                    len: bytes.len(),
                });
            };
            out.push(tag::BIT_BINARY);
            out.extend_from_slice(&len32("bit string", bytes.len())?);
            out.push(*bits);
            out.extend_from_slice(whole);
            out.push(last & (0xffu8 << (8 - bits)));
        }
        Term::ByteList(b) if b.len() <= usize::from(u16::MAX) => {
            if b.is_empty() {
                out.push(tag::NIL);
            } else {
                out.push(tag::STRING);
                out.extend_from_slice(&(b.len() as u16).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
        Term::List(_) | Term::ByteList(_) | Term::ImproperList { .. } => write_list(term, out)?,
        Term::Tuple(elements) => {
            match u8::try_from(elements.len()) {
                Ok(n) => out.extend_from_slice(&[tag::SMALL_TUPLE, n]),
                Err(_) => {
                    out.push(tag::LARGE_TUPLE);
                    out.extend_from_slice(&len32("tuple", elements.len())?);
                }
            }
            for e in elements {
                write_term(e, out)?;
            }
        }
        Term::Map(pairs) => {
            out.push(tag::MAP);
            out.extend_from_slice(&len32("map", pairs.len())?);
            for (k, v) in pairs {
                write_term(k, out)?;
                write_term(v, out)?;
            }
        }
        Term::Pid(p) => write_pid(p, out)?,
        Term::Port(p) => {
            match u32::try_from(p.id) {
                Ok(id) => {
                    out.push(tag::NEW_PORT);
                    write_atom(&p.node, out)?;
                    out.extend_from_slice(&id.to_be_bytes());
                }
                Err(_) => {
                    out.push(tag::V4_PORT);
                    write_atom(&p.node, out)?;
                    out.extend_from_slice(&p.id.to_be_bytes());
                }
            }
            out.extend_from_slice(&p.creation.to_be_bytes());
        }
        Term::Reference(r) => {
            let len = u16::try_from(r.id.len())
                .ok()
                .filter(|&n| n <= 5)
                .ok_or(EncodeError::ReferenceTooLong(r.id.len()))?;
            out.push(tag::NEWER_REFERENCE);
            out.extend_from_slice(&len.to_be_bytes());
            write_atom(&r.node, out)?;
            out.extend_from_slice(&r.creation.to_be_bytes());
            for w in &r.id {
                out.extend_from_slice(&w.to_be_bytes());
            }
        }
        Term::ExternalFun(f) => {
            out.push(tag::EXPORT);
            write_atom(&f.module, out)?;
            write_atom(&f.function, out)?;
            out.extend_from_slice(&[tag::SMALL_INTEGER, f.arity]);
        }
        Term::InternalFun(f) => write_fun(f, out)?,
    }
    Ok(())
}

fn write_integer(i: i64, out: &mut Vec<u8>) {
    if let Ok(b) = u8::try_from(i) {
        out.extend_from_slice(&[tag::SMALL_INTEGER, b]);
    } else if let Ok(w) = i32::try_from(i) {
        out.push(tag::INTEGER);
        out.extend_from_slice(&w.to_be_bytes());
    } else {
        let le = i.unsigned_abs().to_le_bytes();
        let n = le.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        // `n` is at most 8: infallible for a SMALL_BIG_EXT.
        out.extend_from_slice(&[tag::SMALL_BIG, n as u8, u8::from(i < 0)]);
        out.extend_from_slice(le.get(..n).unwrap_or_default());
    }
}

fn write_big(negative: bool, digits: &[u8], out: &mut Vec<u8>) -> Result<()> {
    match u8::try_from(digits.len()) {
        Ok(n) => out.extend_from_slice(&[tag::SMALL_BIG, n]),
        Err(_) => {
            out.push(tag::LARGE_BIG);
            out.extend_from_slice(&len32("big integer", digits.len())?);
        }
    }
    out.push(u8::from(negative));
    out.extend_from_slice(digits);
    Ok(())
}

/// `SMALL_ATOM_UTF8_EXT`, or `ATOM_UTF8_EXT` when the name takes more than 255 bytes.
pub(crate) fn write_atom(atom: &Atom, out: &mut Vec<u8>) -> Result<()> {
    let name = atom.as_str();
    let chars = name.chars().count();
    if chars > 255 {
        return Err(EncodeError::AtomTooLong { chars });
    }
    match u8::try_from(name.len()) {
        Ok(n) => out.extend_from_slice(&[tag::SMALL_ATOM_UTF8, n]),
        Err(_) => {
            // At most 4 × 255 bytes: fits u16.
            out.push(tag::ATOM_UTF8);
            out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

fn write_pid(p: &Pid, out: &mut Vec<u8>) -> Result<()> {
    out.push(tag::NEW_PID);
    write_atom(&p.node, out)?;
    out.extend_from_slice(&p.id.to_be_bytes());
    out.extend_from_slice(&p.serial.to_be_bytes());
    out.extend_from_slice(&p.creation.to_be_bytes());
    Ok(())
}

/// Any list form, flattened the way OTP walks cons cells.
fn write_list(term: &Term, out: &mut Vec<u8>) -> Result<()> {
    let Some(mut scan) = ListCursor::new(term) else {
        // `term` was peeled to a non-list (`[ | T]` is `T`).
        return write_term(super::cmp::peel(term), out);
    };
    let mut count = 0usize;
    let mut all_bytes = true;
    while let Some(e) = scan.next_elem() {
        count += 1;
        all_bytes = all_bytes
            && match e {
                Elem::Byte(_) => true,
                Elem::Term(t) => byte_value(t).is_some(),
            };
    }
    let tail = scan.tail();
    let mut cells = ListCursor::new(term);
    if tail.is_none() && count == 0 {
        out.push(tag::NIL);
    } else if tail.is_none() && all_bytes && count <= usize::from(u16::MAX) {
        out.push(tag::STRING);
        out.extend_from_slice(&(count as u16).to_be_bytes());
        while let Some(e) = cells.as_mut().and_then(ListCursor::next_elem) {
            out.push(match e {
                Elem::Byte(b) => b,
                Elem::Term(t) => byte_value(t).unwrap_or_default(),
            });
        }
    } else {
        out.push(tag::LIST);
        out.extend_from_slice(&len32("list", count)?);
        while let Some(e) = cells.as_mut().and_then(ListCursor::next_elem) {
            match e {
                Elem::Byte(b) => out.extend_from_slice(&[tag::SMALL_INTEGER, b]),
                Elem::Term(t) => write_term(t, out)?,
            }
        }
        match tail {
            None => out.push(tag::NIL),
            Some(t) => write_term(t, out)?,
        }
    }
    Ok(())
}

fn byte_value(t: &Term) -> Option<u8> {
    match t {
        Term::Integer(i) => u8::try_from(*i).ok(),
        Term::BigInteger(b) => u8::try_from(&**b).ok(),
        _ => None,
    }
}

fn write_fun(f: &InternalFun, out: &mut Vec<u8>) -> Result<()> {
    out.push(tag::NEW_FUN);
    let size_at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(f.arity);
    out.extend_from_slice(&f.uniq);
    out.extend_from_slice(&f.index.to_be_bytes());
    out.extend_from_slice(&len32("fun environment", f.free_vars.len())?);
    write_atom(&f.module, out)?;
    write_integer(f.old_index, out);
    write_integer(f.old_uniq, out);
    write_pid(&f.pid, out)?;
    for v in &f.free_vars {
        write_term(v, out)?;
    }
    let size = len32("fun", out.len() - size_at)?;
    if let Some(slot) = out.get_mut(size_at..size_at + 4) {
        slot.copy_from_slice(&size);
    }
    Ok(())
}
