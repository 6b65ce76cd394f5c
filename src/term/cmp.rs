//! Equality, hashing and ordering of terms, the way Erlang defines them.
//!
//! * `==` on [`Term`] is Erlang's exact equality `=:=`.
//! * [`compare_exact`] is Erlang's term order in its exact form, the one map keys are
//!   sorted by (`maps:to_list/1` of a small map, `term_to_binary/1` of a map): numbers
//!   by value, but every integer before every float; then atoms, references, funs,
//!   ports, pids, tuples, maps, `[]`, lists, bit strings. Maps are compared by size,
//!   then by their pairs *in stored order*: for maps stored sorted (as Erlang sends
//!   maps of up to 32 keys, and as [`parse_term`](super::parse_term) builds them) that
//!   is Erlang's order. Not sorting inside a comparison keeps every comparison linear;
//!   sorting there made comparisons of nested maps exponential. It is a total order, so
//!   it is safe for `sort` (a comparator that is not one can make `sort` panic), and
//!   `Equal` implies `==` (the converse fails only for maps stored in different orders).
//!
//! Equality of maps is order-insensitive but never sorts either: when the keys line up
//! (the usual case) values are compared in place, otherwise pairs are matched through
//! their hashes. Each element is compared at most once per level, so comparing two
//! terms costs at most their size times their depth, whatever a peer sent.
//!
//! Lists are compared cell by cell, so `ByteList`, `List` and `ImproperList` forms of
//! the same Erlang list are equal, whatever way they are split.

use std::cmp::Ordering;
use std::hash::{BuildHasher, DefaultHasher, Hash, Hasher, RandomState};
use std::sync::OnceLock;

use num_bigint::BigInt;

use super::Term;

/// Skips `ImproperList`s without elements (`[ | T]` is just `T`).
pub(crate) fn peel(mut t: &Term) -> &Term {
    while let Term::ImproperList { elements, tail } = t {
        if !elements.is_empty() {
            break;
        }
        t = tail;
    }
    t
}

/// One element of a list, in whichever form the list stores it.
#[derive(Clone, Copy)]
pub(crate) enum Elem<'a> {
    Term(&'a Term),
    Byte(u8),
}

impl<'a> Elem<'a> {
    /// Calls `f` with the element as a `&Term`.
    pub(crate) fn with<R>(self, f: impl FnOnce(&Term) -> R) -> R {
        match self {
            Elem::Term(t) => f(t),
            Elem::Byte(b) => f(&Term::Integer(i64::from(b))),
        }
    }
}

/// Walks the cells of an Erlang list, whatever mix of variants stores it.
pub(crate) struct ListCursor<'a> {
    terms: std::slice::Iter<'a, Term>,
    bytes: std::slice::Iter<'a, u8>,
    /// What follows the current segment: `None` for `[]`.
    pending: Option<&'a Term>,
}

impl<'a> ListCursor<'a> {
    /// A cursor over `t`, if `t` is a list (`[]` included).
    pub(crate) fn new(t: &'a Term) -> Option<Self> {
        let mut c = ListCursor {
            terms: [].iter(),
            bytes: [].iter(),
            pending: None,
        };
        if c.load(peel(t)) { Some(c) } else { None }
    }

    fn load(&mut self, t: &'a Term) -> bool {
        match t {
            Term::List(l) => {
                self.terms = l.iter();
                self.bytes = [].iter();
                self.pending = None;
            }
            Term::ByteList(b) => {
                self.terms = [].iter();
                self.bytes = b.iter();
                self.pending = None;
            }
            Term::ImproperList { elements, tail } => {
                self.terms = elements.iter();
                self.bytes = [].iter();
                self.pending = Some(tail);
            }
            _ => return false,
        }
        true
    }

    /// The next element, or `None` at the end of the list.
    pub(crate) fn next_elem(&mut self) -> Option<Elem<'a>> {
        loop {
            if let Some(t) = self.terms.next() {
                return Some(Elem::Term(t));
            }
            if let Some(&b) = self.bytes.next() {
                return Some(Elem::Byte(b));
            }
            let pending = self.pending;
            match pending {
                Some(t) if self.load(t) => continue,
                _ => return None,
            }
        }
    }

    /// Once [`next_elem`](Self::next_elem) returned `None`: the tail after the last
    /// element, `None` for a proper list.
    pub(crate) fn tail(&self) -> Option<&'a Term> {
        self.pending
    }
}

fn is_list(t: &Term) -> bool {
    matches!(
        t,
        Term::List(_) | Term::ByteList(_) | Term::ImproperList { .. }
    )
}

/// A bit string as (whole bytes, last partial byte masked, bits used in it (0 = none)).
fn bits_view(t: &Term) -> Option<(&[u8], u8, u8)> {
    match t {
        Term::Binary(b) => Some((b, 0, 0)),
        Term::BitBinary { bytes, bits } => match bytes.split_last() {
            Some((&last, whole)) if (1..8).contains(bits) => {
                Some((whole, last & (0xffu8 << (8 - bits)), *bits))
            }
            _ => Some((bytes, 0, 0)),
        },
        _ => None,
    }
}

fn int_cmp(a: &Term, b: &Term) -> Option<Ordering> {
    match (a, b) {
        (Term::Integer(x), Term::Integer(y)) => Some(x.cmp(y)),
        (Term::Integer(x), Term::BigInteger(y)) => Some(BigInt::from(*x).cmp(y)),
        (Term::BigInteger(x), Term::Integer(y)) => Some((**x).cmp(&BigInt::from(*y))),
        (Term::BigInteger(x), Term::BigInteger(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn float_eq(a: f64, b: f64) -> bool {
    // `==` makes 0.0 equal to -0.0 (as OTP 25's `=:=` does); the bit test keeps
    // equality reflexive for a NaN built by hand (none can be decoded).
    a == b || a.to_bits() == b.to_bits()
}

fn float_cmp(a: f64, b: f64) -> Ordering {
    if a == b {
        Ordering::Equal
    } else {
        a.total_cmp(&b)
    }
}

pub(crate) fn eq(a: &Term, b: &Term) -> bool {
    let (a, b) = (peel(a), peel(b));
    if is_list(a) || is_list(b) {
        return list_eq(a, b);
    }
    if let Some(o) = int_cmp(a, b) {
        return o == Ordering::Equal;
    }
    match (a, b) {
        (Term::Atom(x), Term::Atom(y)) => x == y,
        (Term::Float(x), Term::Float(y)) => float_eq(*x, *y),
        (Term::Binary(_) | Term::BitBinary { .. }, Term::Binary(_) | Term::BitBinary { .. }) => {
            bits_view(a) == bits_view(b)
        }
        (Term::Tuple(x), Term::Tuple(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| eq(p, q))
        }
        (Term::Map(x), Term::Map(y)) => map_eq(x, y),
        (Term::Pid(x), Term::Pid(y)) => x == y,
        (Term::Port(x), Term::Port(y)) => x == y,
        (Term::Reference(x), Term::Reference(y)) => x == y,
        (Term::ExternalFun(x), Term::ExternalFun(y)) => x == y,
        (Term::InternalFun(x), Term::InternalFun(y)) => x == y,
        _ => false,
    }
}

fn elem_eq(a: Elem<'_>, b: Elem<'_>) -> bool {
    match (a, b) {
        (Elem::Byte(x), Elem::Byte(y)) => x == y,
        (Elem::Byte(x), Elem::Term(t)) | (Elem::Term(t), Elem::Byte(x)) => {
            matches!(t, Term::Integer(i) if *i == i64::from(x))
                || (matches!(t, Term::BigInteger(_)) && eq(t, &Term::Integer(i64::from(x))))
        }
        (Elem::Term(x), Elem::Term(y)) => eq(x, y),
    }
}

fn list_eq(a: &Term, b: &Term) -> bool {
    let (Some(mut ca), Some(mut cb)) = (ListCursor::new(a), ListCursor::new(b)) else {
        return false;
    };
    loop {
        match (ca.next_elem(), cb.next_elem()) {
            (Some(x), Some(y)) => {
                if !elem_eq(x, y) {
                    return false;
                }
            }
            (None, None) => break,
            _ => return false,
        }
    }
    match (ca.tail(), cb.tail()) {
        (None, None) => true,
        (Some(x), Some(y)) => eq(x, y),
        _ => false,
    }
}

/// Maps are equal when they hold the same set of pairs. Keys that line up in stored
/// order (compared with the linear [`compare_exact`]) let values be compared in place;
/// otherwise pairs are matched by hash, each compared with `eq` at most once. A map
/// holding the same key twice (which no Erlang node sends) may compare unequal to a
/// reordering of itself.
fn map_eq(a: &[(Term, Term)], b: &[(Term, Term)]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if a.iter()
        .zip(b)
        .all(|(p, q)| compare_exact(&p.0, &q.0).is_eq())
    {
        return a.iter().zip(b).all(|(p, q)| eq(&p.1, &q.1));
    }
    let hashes = |pairs: &[(Term, Term)]| -> Vec<u64> { pairs.iter().map(pair_hash).collect() };
    let (ha, hb) = (hashes(a), hashes(b));
    let mut order: Vec<usize> = (0..b.len()).collect();
    order.sort_by_key(|&j| hb.get(j).copied().unwrap_or_default());
    let mut used = vec![false; b.len()];
    for (p, &h) in a.iter().zip(&ha) {
        let start = order.partition_point(|&j| hb.get(j).copied().unwrap_or_default() < h);
        let found = order
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&j| hb.get(j) == Some(&h))
            .find(|&&j| {
                !used.get(j).copied().unwrap_or(true)
                    && b.get(j).is_some_and(|q| eq(&p.0, &q.0) && eq(&p.1, &q.1))
            })
            .copied();
        match found.and_then(|j| used.get_mut(j)) {
            Some(slot) => *slot = true,
            None => return false,
        }
    }
    true
}

/// A process-wide random hasher: map hashes are sums of per-pair hashes, and a peer
/// must not be able to aim collisions at them.
fn pair_hasher() -> DefaultHasher {
    static STATE: OnceLock<RandomState> = OnceLock::new();
    STATE.get_or_init(RandomState::new).build_hasher()
}

fn pair_hash((k, v): &(Term, Term)) -> u64 {
    let mut h = pair_hasher();
    hash_term(k, &mut h);
    hash_term(v, &mut h);
    h.finish()
}

impl PartialEq for Term {
    fn eq(&self, other: &Self) -> bool {
        eq(self, other)
    }
}

impl Eq for Term {}

impl Hash for Term {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_term(self, state);
    }
}

fn hash_term<H: Hasher>(t: &Term, h: &mut H) {
    let t = peel(t);
    if let Some(mut c) = ListCursor::new(t) {
        h.write_u8(10);
        while let Some(e) = c.next_elem() {
            match e {
                Elem::Byte(b) => hash_int(i64::from(b), h),
                Elem::Term(t) => hash_term(t, h),
            }
        }
        match c.tail() {
            None => h.write_u8(0),
            Some(t) => {
                h.write_u8(1);
                hash_term(t, h);
            }
        }
        return;
    }
    match t {
        Term::Integer(i) => hash_int(*i, h),
        Term::BigInteger(b) => match i64::try_from(&**b) {
            Ok(i) => hash_int(i, h),
            Err(_) => {
                h.write_u8(0);
                h.write_u8(1);
                b.hash(h);
            }
        },
        Term::Float(f) => {
            h.write_u8(1);
            let f = if *f == 0.0 { 0.0 } else { *f };
            h.write_u64(f.to_bits());
        }
        Term::Atom(a) => {
            h.write_u8(2);
            a.hash(h);
        }
        Term::Reference(r) => {
            h.write_u8(3);
            r.hash(h);
        }
        Term::ExternalFun(f) => {
            h.write_u8(4);
            f.hash(h);
        }
        Term::InternalFun(f) => {
            h.write_u8(5);
            f.hash(h);
        }
        Term::Port(p) => {
            h.write_u8(6);
            p.hash(h);
        }
        Term::Pid(p) => {
            h.write_u8(7);
            p.hash(h);
        }
        Term::Tuple(elements) => {
            h.write_u8(8);
            h.write_usize(elements.len());
            for e in elements {
                hash_term(e, h);
            }
        }
        Term::Map(pairs) => {
            h.write_u8(9);
            h.write_usize(pairs.len());
            // Order-insensitive: a sum of per-pair hashes.
            let sum = pairs.iter().map(pair_hash).fold(0u64, u64::wrapping_add);
            h.write_u64(sum);
        }
        Term::Binary(_) | Term::BitBinary { .. } => {
            if let Some((whole, last, bits)) = bits_view(t) {
                h.write_u8(11);
                h.write(whole);
                h.write_u8(last);
                h.write_u8(bits);
            }
        }
        // Lists were handled above.
        Term::List(_) | Term::ByteList(_) | Term::ImproperList { .. } => {}
    }
}

fn hash_int<H: Hasher>(i: i64, h: &mut H) {
    h.write_u8(0);
    h.write_u8(0);
    h.write_i64(i);
}

/// Rank of each type in Erlang's exact term order.
fn rank(t: &Term) -> u8 {
    match t {
        Term::Integer(_) | Term::BigInteger(_) => 0,
        Term::Float(_) => 1,
        Term::Atom(_) => 2,
        Term::Reference(_) => 3,
        Term::InternalFun(_) => 4,
        Term::ExternalFun(_) => 5,
        Term::Port(_) => 6,
        Term::Pid(_) => 7,
        Term::Tuple(_) => 8,
        Term::Map(_) => 9,
        Term::List(l) if l.is_empty() => 10,
        Term::ByteList(b) if b.is_empty() => 10,
        Term::List(_) | Term::ByteList(_) | Term::ImproperList { .. } => 11,
        Term::Binary(_) | Term::BitBinary { .. } => 12,
    }
}

/// Erlang's term order, exact form (integers before floats, `1 < 1.0`), comparing maps
/// in stored order; a total order whose `Equal` implies `==`. Pids, ports, references
/// and funs are ordered by their fields, which need not match how a node orders them
/// (it uses its node table).
pub(crate) fn compare_exact(a: &Term, b: &Term) -> Ordering {
    let (a, b) = (peel(a), peel(b));
    let (ra, rb) = (rank(a), rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    if let Some(o) = int_cmp(a, b) {
        return o;
    }
    match (a, b) {
        (Term::Float(x), Term::Float(y)) => float_cmp(*x, *y),
        (Term::Atom(x), Term::Atom(y)) => x.as_str().cmp(y.as_str()),
        (Term::Reference(x), Term::Reference(y)) => x
            .node
            .cmp(&y.node)
            .then(x.id.len().cmp(&y.id.len()))
            .then_with(|| x.id.iter().rev().cmp(y.id.iter().rev()))
            .then(x.creation.cmp(&y.creation)),
        (Term::InternalFun(x), Term::InternalFun(y)) => x
            .module
            .cmp(&y.module)
            .then(x.old_index.cmp(&y.old_index))
            .then(x.old_uniq.cmp(&y.old_uniq))
            .then(x.index.cmp(&y.index))
            .then(x.uniq.cmp(&y.uniq))
            .then(x.arity.cmp(&y.arity))
            .then_with(|| compare_pids(&x.pid, &y.pid))
            .then_with(|| compare_seq(&x.free_vars, &y.free_vars)),
        (Term::ExternalFun(x), Term::ExternalFun(y)) => x
            .module
            .cmp(&y.module)
            .then_with(|| x.function.cmp(&y.function))
            .then(x.arity.cmp(&y.arity)),
        (Term::Port(x), Term::Port(y)) => x
            .node
            .cmp(&y.node)
            .then(x.id.cmp(&y.id))
            .then(x.creation.cmp(&y.creation)),
        (Term::Pid(x), Term::Pid(y)) => compare_pids(x, y),
        (Term::Tuple(x), Term::Tuple(y)) => x.len().cmp(&y.len()).then_with(|| compare_seq(x, y)),
        (Term::Map(x), Term::Map(y)) => compare_maps(x, y),
        _ if rank(a) == 10 => Ordering::Equal,
        _ if rank(a) == 11 => compare_lists(a, b),
        _ => compare_bits(a, b),
    }
}

fn compare_pids(x: &super::Pid, y: &super::Pid) -> Ordering {
    x.node
        .cmp(&y.node)
        .then(x.serial.cmp(&y.serial))
        .then(x.id.cmp(&y.id))
        .then(x.creation.cmp(&y.creation))
}

fn compare_seq(x: &[Term], y: &[Term]) -> Ordering {
    for (p, q) in x.iter().zip(y) {
        let o = compare_exact(p, q);
        if o != Ordering::Equal {
            return o;
        }
    }
    x.len().cmp(&y.len())
}

/// Maps: by size, then keys, then values, in stored order (Erlang's order for maps
/// stored sorted by key).
fn compare_maps(x: &[(Term, Term)], y: &[(Term, Term)]) -> Ordering {
    x.len().cmp(&y.len()).then_with(|| {
        for (p, q) in x.iter().zip(y) {
            let o = compare_exact(&p.0, &q.0);
            if o != Ordering::Equal {
                return o;
            }
        }
        for (p, q) in x.iter().zip(y) {
            let o = compare_exact(&p.1, &q.1);
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    })
}

fn compare_lists(a: &Term, b: &Term) -> Ordering {
    let (Some(mut ca), Some(mut cb)) = (ListCursor::new(a), ListCursor::new(b)) else {
        return Ordering::Equal; // unreachable: both have the list rank
    };
    loop {
        match (ca.next_elem(), cb.next_elem()) {
            (Some(x), Some(y)) => {
                let o = x.with(|x| y.with(|y| compare_exact(x, y)));
                if o != Ordering::Equal {
                    return o;
                }
            }
            // One list goes on: compare it (a non-empty list) with the other's rest.
            // A tail is never a list, so its rank differs from a list's.
            (Some(_), None) => return 11u8.cmp(&rest_rank(cb.tail())),
            (None, Some(_)) => return rest_rank(ca.tail()).cmp(&11),
            (None, None) => break,
        }
    }
    let nil = Term::List(Vec::new());
    compare_exact(ca.tail().unwrap_or(&nil), cb.tail().unwrap_or(&nil))
}

/// Rank of what ends a list: `[]` when proper.
fn rest_rank(tail: Option<&Term>) -> u8 {
    tail.map_or(10, rank)
}

fn compare_bits(a: &Term, b: &Term) -> Ordering {
    let (Some((wa, la, ba)), Some((wb, lb, bb))) = (bits_view(a), bits_view(b)) else {
        return Ordering::Equal; // unreachable: both have the bit string rank
    };
    let len_a = wa.len() * 8 + usize::from(ba);
    let len_b = wb.len() * 8 + usize::from(bb);
    let byte_at = |whole: &[u8], last: u8, i: usize| whole.get(i).copied().unwrap_or(last);
    let common = len_a.min(len_b);
    let full = common / 8;
    // `full` whole bytes exist in both: `common` is at most either length.
    let o = wa
        .get(..full)
        .unwrap_or_default()
        .cmp(wb.get(..full).unwrap_or_default());
    if o != Ordering::Equal {
        return o;
    }
    // Compare the remaining bits of the common prefix, if any.
    let rem = common % 8;
    if rem > 0 {
        let shift = 8 - rem;
        let x = byte_at(wa, la, full) >> shift;
        let y = byte_at(wb, lb, full) >> shift;
        if x != y {
            return x.cmp(&y);
        }
    }
    len_a.cmp(&len_b)
}
