//! Conversions between [`Term`] and [`eetf::Term`] (cargo feature `eetf`).
//!
//! Both directions are `TryFrom`, because each side has values the other cannot hold:
//! `eetf` keeps old-style funs (`FUN_EXT`) that we do not model, and it stores a local
//! fun's old index and old uniq as `i32` where we use `i64`. Everything else converts
//! without loss of meaning; two things change form:
//!
//! * `eetf` keeps maps in a `HashMap`: their order is lost going to `eetf` (equality is
//!   order-insensitive on both sides) and, coming back, pairs are sorted by key the way
//!   Erlang stores small maps.
//! * Integers are normalised coming back: an `eetf` `BigInteger` that fits `i64` becomes
//!   [`Term::Integer`]. Going to `eetf`, integers within `i32` become `FixInteger`.
//!
//! ```
//! use autocluster::term::{parse_term, Term};
//! let ours = parse_term("{ok, [-1, -2], #{k => <<\"v\">>}}")?;
//! let theirs = eetf::Term::try_from(&ours)?;
//! assert_eq!(Term::try_from(&theirs)?, ours);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;

use super::cmp::compare_exact;
use super::{Atom, ExternalFun, InternalFun, Pid, Port, Reference, Term};

/// A value one side can hold and the other cannot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EetfError {
    /// An `eetf` old-style fun (`FUN_EXT`, removed from OTP 23).
    #[error("old-style fun (FUN_EXT) has no autocluster representation")]
    OldFun,
    /// A local fun whose old index or old uniq does not fit `eetf`'s `i32`.
    #[error("local fun field {0} does not fit eetf's i32")]
    FunFieldOutOfRange(&'static str),
}

fn atom_to(a: &Atom) -> eetf::Atom {
    eetf::Atom::from(a.as_str())
}

fn atom_from(a: &eetf::Atom) -> Atom {
    Atom::new(&a.name)
}

fn pid_to(p: &Pid) -> eetf::Pid {
    eetf::Pid {
        node: atom_to(&p.node),
        id: p.id,
        serial: p.serial,
        creation: p.creation,
    }
}

fn pid_from(p: &eetf::Pid) -> Pid {
    Pid {
        node: atom_from(&p.node),
        id: p.id,
        serial: p.serial,
        creation: p.creation,
    }
}

fn terms_to(v: &[Term]) -> Result<Vec<eetf::Term>, EetfError> {
    v.iter().map(eetf::Term::try_from).collect()
}

fn terms_from(v: &[eetf::Term]) -> Result<Vec<Term>, EetfError> {
    v.iter().map(Term::try_from).collect()
}

impl TryFrom<&Term> for eetf::Term {
    type Error = EetfError;

    fn try_from(t: &Term) -> Result<Self, EetfError> {
        Ok(match t {
            Term::Atom(a) => eetf::Term::Atom(atom_to(a)),
            Term::Integer(i) => match i32::try_from(*i) {
                Ok(v) => eetf::Term::FixInteger(eetf::FixInteger { value: v }),
                Err(_) => eetf::Term::BigInteger(eetf::BigInteger { value: (*i).into() }),
            },
            Term::BigInteger(b) => match i32::try_from(&**b) {
                Ok(v) => eetf::Term::FixInteger(eetf::FixInteger { value: v }),
                Err(_) => eetf::Term::BigInteger(eetf::BigInteger {
                    value: (**b).clone(),
                }),
            },
            Term::Float(f) => eetf::Term::Float(eetf::Float { value: *f }),
            Term::Binary(b) => eetf::Term::Binary(eetf::Binary { bytes: b.clone() }),
            // eetf keeps the bits of the last byte in its low bits; we keep them high.
            Term::BitBinary { bytes, bits } => {
                let mut bytes = bytes.clone();
                if let Some(last) = bytes.last_mut() {
                    *last >>= 8 - (*bits).clamp(1, 8);
                }
                eetf::Term::BitBinary(eetf::BitBinary {
                    bytes,
                    tail_bits_size: *bits,
                })
            }
            Term::List(l) => eetf::Term::List(eetf::List {
                elements: terms_to(l)?,
            }),
            Term::ByteList(b) => eetf::Term::ByteList(eetf::ByteList { bytes: b.clone() }),
            Term::ImproperList { elements, tail } => eetf::Term::ImproperList(eetf::ImproperList {
                elements: terms_to(elements)?,
                last: Box::new(eetf::Term::try_from(&**tail)?),
            }),
            Term::Tuple(elements) => eetf::Term::Tuple(eetf::Tuple {
                elements: terms_to(elements)?,
            }),
            Term::Map(pairs) => {
                let mut map = HashMap::with_capacity(pairs.len());
                for (k, v) in pairs {
                    map.insert(eetf::Term::try_from(k)?, eetf::Term::try_from(v)?);
                }
                eetf::Term::Map(eetf::Map { map })
            }
            Term::Pid(p) => eetf::Term::Pid(pid_to(p)),
            Term::Port(p) => eetf::Term::Port(eetf::Port {
                node: atom_to(&p.node),
                id: p.id,
                creation: p.creation,
            }),
            Term::Reference(r) => eetf::Term::Reference(Box::new(eetf::Reference {
                node: atom_to(&r.node),
                id: r.id.clone(),
                creation: r.creation,
            })),
            Term::ExternalFun(f) => eetf::Term::ExternalFun(Box::new(eetf::ExternalFun {
                module: atom_to(&f.module),
                function: atom_to(&f.function),
                arity: f.arity,
            })),
            Term::InternalFun(f) => eetf::Term::InternalFun(Box::new(eetf::InternalFun::New {
                module: atom_to(&f.module),
                arity: f.arity,
                pid: pid_to(&f.pid),
                free_vars: terms_to(&f.free_vars)?,
                index: f.index,
                uniq: f.uniq,
                old_index: i32::try_from(f.old_index)
                    .map_err(|_| EetfError::FunFieldOutOfRange("old_index"))?,
                old_uniq: i32::try_from(f.old_uniq)
                    .map_err(|_| EetfError::FunFieldOutOfRange("old_uniq"))?,
            })),
        })
    }
}

impl TryFrom<Term> for eetf::Term {
    type Error = EetfError;

    fn try_from(t: Term) -> Result<Self, EetfError> {
        eetf::Term::try_from(&t)
    }
}

impl TryFrom<&eetf::Term> for Term {
    type Error = EetfError;

    fn try_from(t: &eetf::Term) -> Result<Self, EetfError> {
        Ok(match t {
            eetf::Term::Atom(a) => Term::Atom(atom_from(a)),
            eetf::Term::FixInteger(i) => Term::Integer(i64::from(i.value)),
            eetf::Term::BigInteger(b) => Term::from(b.value.clone()),
            eetf::Term::Float(f) => Term::Float(f.value),
            eetf::Term::Pid(p) => Term::from(pid_from(p)),
            eetf::Term::Port(p) => Term::from(Port {
                node: atom_from(&p.node),
                id: p.id,
                creation: p.creation,
            }),
            eetf::Term::Reference(r) => Term::from(Reference {
                node: atom_from(&r.node),
                creation: r.creation,
                id: r.id.clone(),
            }),
            eetf::Term::ExternalFun(f) => Term::from(ExternalFun {
                module: atom_from(&f.module),
                function: atom_from(&f.function),
                arity: f.arity,
            }),
            eetf::Term::InternalFun(f) => match &**f {
                eetf::InternalFun::Old { .. } => return Err(EetfError::OldFun),
                eetf::InternalFun::New {
                    module,
                    arity,
                    pid,
                    free_vars,
                    index,
                    uniq,
                    old_index,
                    old_uniq,
                } => Term::from(InternalFun {
                    arity: *arity,
                    uniq: *uniq,
                    index: *index,
                    module: atom_from(module),
                    old_index: i64::from(*old_index),
                    old_uniq: i64::from(*old_uniq),
                    pid: pid_from(pid),
                    free_vars: terms_from(free_vars)?,
                }),
            },
            eetf::Term::Binary(b) => Term::Binary(b.bytes.clone()),
            eetf::Term::BitBinary(b) => {
                let bits = b.tail_bits_size.clamp(1, 8);
                let mut bytes = b.bytes.clone();
                if let Some(last) = bytes.last_mut() {
                    *last = last.checked_shl(u32::from(8 - bits)).unwrap_or_default();
                }
                let len = bytes.len().saturating_sub(1) * 8 + usize::from(bits);
                Term::bit_string(bytes, len).unwrap_or_else(|| Term::Binary(Vec::new()))
            }
            eetf::Term::ByteList(b) => Term::ByteList(b.bytes.clone()),
            eetf::Term::List(l) => Term::List(terms_from(&l.elements)?),
            eetf::Term::ImproperList(l) => {
                Term::improper_list(terms_from(&l.elements)?, Term::try_from(&*l.last)?)
            }
            eetf::Term::Tuple(t) => Term::Tuple(terms_from(&t.elements)?),
            eetf::Term::Map(m) => {
                let mut pairs = m
                    .map
                    .iter()
                    .map(|(k, v)| Ok((Term::try_from(k)?, Term::try_from(v)?)))
                    .collect::<Result<Vec<_>, EetfError>>()?;
                pairs.sort_by(|p, q| compare_exact(&p.0, &q.0));
                Term::Map(pairs)
            }
        })
    }
}

impl TryFrom<eetf::Term> for Term {
    type Error = EetfError;

    fn try_from(t: eetf::Term) -> Result<Self, EetfError> {
        Term::try_from(&t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::{decode, encode, parse_term};

    #[test]
    fn round_trips_through_eetf() {
        let text = "{ok, 'EXIT', -1, 2147483648, 123456789012345678901234567890, 1.5, <<1,2>>, \
                    <<1:3>>, \"abc\", [-1,-2], [a|b], #{a => 1, {x} => [y]}, fun lists:map/2}";
        let ours = parse_term(text).expect("parses");
        let theirs = eetf::Term::try_from(&ours).expect("converts");
        assert_eq!(Term::try_from(&theirs), Ok(ours.clone()));
        // eetf's own decoder reads our bytes into the same value.
        let bytes = encode(&ours).expect("encodes");
        let eetf_decoded = eetf::Term::decode(&bytes[..]).expect("eetf decodes");
        assert_eq!(Term::try_from(eetf_decoded), Ok(ours));
        let pid = Term::from(Pid {
            node: Atom::new("a@b"),
            id: 1,
            serial: 2,
            creation: 3,
        });
        let fun = Term::from(InternalFun {
            arity: 1,
            uniq: [9; 16],
            index: 2,
            module: Atom::new("m"),
            old_index: 3,
            old_uniq: -4,
            pid: Pid {
                node: Atom::new("a@b"),
                id: 1,
                serial: 2,
                creation: 3,
            },
            free_vars: vec![pid.clone()],
        });
        for t in [pid, fun] {
            let back = Term::try_from(eetf::Term::try_from(&t).expect("converts"));
            assert_eq!(back, Ok(t.clone()));
            let mut bytes = Vec::new();
            eetf::Term::try_from(&t)
                .expect("converts")
                .encode(&mut bytes)
                .expect("eetf encodes");
            assert_eq!(decode(&bytes), Ok(t));
        }
    }

    #[test]
    fn lossy_values_are_refused() {
        let old = eetf::Term::InternalFun(Box::new(eetf::InternalFun::Old {
            module: eetf::Atom::from("m"),
            pid: eetf::Pid::new("a@b", 1, 2, 3),
            free_vars: vec![],
            index: 0,
            uniq: 0,
        }));
        assert_eq!(Term::try_from(&old), Err(EetfError::OldFun));
        let fun = Term::from(InternalFun {
            arity: 0,
            uniq: [0; 16],
            index: 0,
            module: Atom::new("m"),
            old_index: 0,
            old_uniq: i64::from(u32::MAX),
            pid: Pid {
                node: Atom::new("a@b"),
                id: 0,
                serial: 0,
                creation: 0,
            },
            free_vars: vec![],
        });
        assert_eq!(
            eetf::Term::try_from(&fun),
            Err(EetfError::FunFieldOutOfRange("old_uniq"))
        );
    }
}
