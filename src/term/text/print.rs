//! Printing a term as `io_lib:format("~0p", [Term])` does: `impl Display for Term`.

use std::fmt::{self, Write as _};

use crate::term::Term;
use crate::term::cmp::{Elem, ListCursor, compare_exact, peel};

impl fmt::Display for Term {
    /// `io_lib:format("~0p", [Term])`; see the [module documentation](super).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_term(f, self)
    }
}

fn write_term(f: &mut fmt::Formatter<'_>, t: &Term) -> fmt::Result {
    let t = peel(t);
    match t {
        Term::Atom(a) => write_atom(f, a.as_str()),
        Term::Integer(i) => write!(f, "{i}"),
        Term::BigInteger(b) => write!(f, "{b}"),
        Term::Float(x) => f.write_str(&format_float(*x)),
        Term::Binary(b) => write_binary(f, b),
        Term::BitBinary { bytes, bits } => write_bit_binary(f, bytes, *bits),
        Term::List(_) | Term::ByteList(_) | Term::ImproperList { .. } => write_list(f, t),
        Term::Tuple(elements) => {
            f.write_char('{')?;
            for (i, e) in elements.iter().enumerate() {
                if i > 0 {
                    f.write_char(',')?;
                }
                write_term(f, e)?;
            }
            f.write_char('}')
        }
        Term::Map(pairs) => {
            f.write_str("#{")?;
            // Up to 32 keys Erlang keeps a map sorted by key. Past that it keeps a hash
            // trie, iterated (and so printed) in the reverse of the order
            // `term_to_binary` writes it in: print a large map decoded from Erlang in
            // Erlang's order.
            let ordered: Vec<&(Term, Term)> = if pairs.len() <= 32 {
                sort_by_key(pairs)
            } else {
                pairs.iter().rev().collect()
            };
            for (i, (k, v)) in ordered.into_iter().enumerate() {
                if i > 0 {
                    f.write_char(',')?;
                }
                write_term(f, k)?;
                f.write_str(" => ")?;
                write_term(f, v)?;
            }
            f.write_char('}')
        }
        Term::Pid(p) => write!(f, "<{}.{}.{}>", p.node.as_str(), p.id, p.serial),
        Term::Port(p) => write!(f, "#Port<{}.{}>", p.node.as_str(), p.id),
        Term::Reference(r) => {
            write!(f, "#Ref<{}", r.node.as_str())?;
            for w in r.id.iter().rev() {
                write!(f, ".{w}")?;
            }
            f.write_char('>')
        }
        // Funs are printed by the emulator's C printer (`erlang:fun_to_list/1`), which
        // quotes atoms by its own rules and emits their UTF-8 bytes one per character.
        Term::ExternalFun(x) => {
            f.write_str("fun ")?;
            write_c_atom(f, x.module.as_str())?;
            f.write_char(':')?;
            write_c_atom(f, x.function.as_str())?;
            write!(f, "/{}", x.arity)
        }
        Term::InternalFun(x) => {
            f.write_str("#Fun<")?;
            for &b in x.module.as_str().as_bytes() {
                f.write_char(char::from(b))?;
            }
            write!(f, ".{}.{}>", x.old_index, x.old_uniq)
        }
    }
}

/// Pairs in Erlang's small-map order: keys in the exact term order.
fn sort_by_key(pairs: &[(Term, Term)]) -> Vec<&(Term, Term)> {
    let mut v: Vec<&(Term, Term)> = pairs.iter().collect();
    v.sort_by(|p, q| compare_exact(&p.0, &q.0));
    v
}

fn write_list(f: &mut fmt::Formatter<'_>, t: &Term) -> fmt::Result {
    if t.is_nil() {
        return f.write_str("[]");
    }
    if let Some(chars) = printable_string(t) {
        f.write_char('"')?;
        for c in chars {
            write_escaped(f, c, '"')?;
        }
        return f.write_char('"');
    }
    let Some(mut cells) = ListCursor::new(t) else {
        return Ok(());
    };
    f.write_char('[')?;
    let mut first = true;
    while let Some(e) = cells.next_elem() {
        if !first {
            f.write_char(',')?;
        }
        first = false;
        match e {
            Elem::Byte(b) => write!(f, "{b}")?,
            Elem::Term(t) => write_term(f, t)?,
        }
    }
    if let Some(tail) = cells.tail() {
        f.write_char('|')?;
        write_term(f, tail)?;
    }
    f.write_char(']')
}

/// The characters of a non-empty proper list that `io_lib:printable_latin1_list/1`
/// accepts, or `None`.
fn printable_string(t: &Term) -> Option<Vec<char>> {
    if let Term::ByteList(b) = t {
        return b
            .iter()
            .all(|&b| printable_latin1(u32::from(b)))
            .then(|| b.iter().map(|&b| char::from(b)).collect());
    }
    let mut cells = ListCursor::new(t)?;
    let mut out = Vec::new();
    while let Some(e) = cells.next_elem() {
        let c = match e {
            Elem::Byte(b) => u32::from(b),
            Elem::Term(Term::Integer(i)) => u32::try_from(*i).ok()?,
            Elem::Term(_) => return None,
        };
        if !printable_latin1(c) {
            return None;
        }
        out.push(char::from_u32(c)?);
    }
    (cells.tail().is_none() && !out.is_empty()).then_some(out)
}

fn printable_latin1(c: u32) -> bool {
    matches!(c, 32..=126 | 160..=255 | 8..=13 | 27)
}

fn write_binary(f: &mut fmt::Formatter<'_>, b: &[u8]) -> fmt::Result {
    if !b.is_empty() && b.iter().all(|&c| printable_latin1(u32::from(c))) {
        f.write_str("<<\"")?;
        for &c in b {
            write_escaped(f, char::from(c), '"')?;
        }
        return f.write_str("\">>");
    }
    f.write_str("<<")?;
    for (i, c) in b.iter().enumerate() {
        if i > 0 {
            f.write_char(',')?;
        }
        write!(f, "{c}")?;
    }
    f.write_str(">>")
}

fn write_bit_binary(f: &mut fmt::Formatter<'_>, bytes: &[u8], bits: u8) -> fmt::Result {
    let Some((last, whole)) = bytes.split_last().filter(|_| (1..8).contains(&bits)) else {
        return write_binary(f, bytes);
    };
    f.write_str("<<")?;
    for c in whole {
        write!(f, "{c},")?;
    }
    write!(f, "{}:{}>>", last >> (8 - bits), bits)
}

/// Writes an atom as `io_lib:write_atom_as_latin1/1` does: bare when it reads back as
/// the same atom, else quoted, with characters past Latin-1 as `\x{...}`.
pub(crate) fn write_atom(f: &mut impl fmt::Write, name: &str) -> fmt::Result {
    if !atom_needs_quotes(name) {
        return f.write_str(name);
    }
    f.write_char('\'')?;
    for c in name.chars() {
        write_escaped(f, c, '\'')?;
    }
    f.write_char('\'')
}

/// An atom as the emulator's C term printer writes it (`print_atom_name` in
/// `erl_printf_term.c`, OTP 25): quoted unless it starts with a Latin-1 lowercase
/// letter and goes on with Latin-1 letters, digits and `_` (no `@`, no reserved word
/// check); control characters escaped, other UTF-8 bytes written as they are, one
/// character per byte.
fn write_c_atom(f: &mut impl fmt::Write, name: &str) -> fmt::Result {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return f.write_str("''");
    }
    // The Latin-1 value the C code sees at each byte (continuation bytes count as a
    // letter, three- and four-byte leads as a non-letter).
    let latin1 = |i: usize| -> u32 {
        let c = u32::from(bytes.get(i).copied().unwrap_or_default());
        let next = u32::from(bytes.get(i + 1).copied().unwrap_or_default());
        match c {
            0..=0x7f => c,
            0xc0..=0xdf => ((c & 0x1f) << 6) | (next & 0x3f),
            0x80..=0xbf => u32::from(b'a'),
            _ => 0,
        }
    };
    let lower = |c: u32| matches!(c, 0x61..=0x7a) || ((223..=255).contains(&c) && c != 247);
    let upper = |c: u32| matches!(c, 0x41..=0x5a) || ((192..=222).contains(&c) && c != 215);
    let alnum = |c: u32| lower(c) || upper(c) || matches!(c, 0x30..=0x39);
    let quote = !lower(latin1(0))
        || (1..bytes.len()).any(|i| !alnum(latin1(i)) && latin1(i) != u32::from(b'_'));
    if quote {
        f.write_char('\'')?;
    }
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\'' => f.write_str("\\'")?,
            b'\\' => f.write_str("\\\\")?,
            b'\n' => f.write_str("\\n")?,
            0x0c => f.write_str("\\f")?,
            b'\t' => f.write_str("\\t")?,
            b'\r' => f.write_str("\\r")?,
            0x08 => f.write_str("\\b")?,
            0x0b => f.write_str("\\v")?,
            0..=31 => write!(f, "\\{b:03o}")?,
            0xc2 if bytes.get(i + 1).is_some_and(|&n| n < 0xa0) => {
                i += 1;
                write!(f, "\\{:03o}", bytes.get(i).copied().unwrap_or_default())?;
            }
            _ => f.write_char(char::from(b))?,
        }
        i += 1;
    }
    if quote {
        f.write_char('\'')?;
    }
    Ok(())
}

pub(super) fn is_lower(c: char) -> bool {
    c.is_ascii_lowercase() || (('ß'..='ÿ').contains(&c) && c != '÷')
}

pub(super) fn is_name_char(c: char) -> bool {
    is_lower(c)
        || c.is_ascii_uppercase()
        || c.is_ascii_digit()
        || c == '_'
        || c == '@'
        || (('À'..='Þ').contains(&c) && c != '×')
}

/// `erl_scan:reserved_word/1` on OTP 27 and later, where the `maybe` expression is on
/// by default and makes `maybe` and `else` reserved (OTP 25 and 26 take both as plain
/// atoms; a quoted `'maybe'` reads the same on every release).
pub(super) fn is_reserved_word(name: &str) -> bool {
    matches!(
        name,
        "maybe"
            | "else"
            | "after"
            | "begin"
            | "case"
            | "try"
            | "cond"
            | "catch"
            | "andalso"
            | "orelse"
            | "end"
            | "fun"
            | "if"
            | "let"
            | "of"
            | "receive"
            | "when"
            | "bnot"
            | "not"
            | "div"
            | "rem"
            | "band"
            | "and"
            | "bor"
            | "bxor"
            | "bsl"
            | "bsr"
            | "or"
            | "xor"
    )
}

fn atom_needs_quotes(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if is_lower(c) => !chars.all(is_name_char) || is_reserved_word(name),
        _ => true,
    }
}

/// One character inside quotes, as `io_lib:write_string_as_latin1/2` writes it.
fn write_escaped(f: &mut impl fmt::Write, c: char, quote: char) -> fmt::Result {
    let code = c as u32;
    match c {
        _ if c == quote => {
            f.write_char('\\')?;
            f.write_char(c)
        }
        '\\' => f.write_str("\\\\"),
        ' '..='~' | '\u{a0}'..='\u{ff}' => f.write_char(c),
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        '\u{b}' => f.write_str("\\v"),
        '\u{8}' => f.write_str("\\b"),
        '\u{c}' => f.write_str("\\f"),
        '\u{1b}' => f.write_str("\\e"),
        '\u{7f}' => f.write_str("\\d"),
        _ if code >= 0x100 => write!(f, "\\x{{{code:X}}}"),
        _ => write!(f, "\\{}{}{}", code >> 6, (code >> 3) & 7, code & 7),
    }
}

/// A float as OTP 25's `float_to_list(F, [short])` (and so `~p`) writes it: the
/// shortest digits that read back as the same float, in plain or scientific notation
/// by OTP's rule (see `erts/emulator/ryu/to_chars.h`).
///
/// NaN and infinities (which no Erlang node can send) are written as Rust writes them.
pub fn format_float(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "1.2345e-7", "1e2", "-0e0".
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let olength = digits.len() as i32;
    let output: u64 = digits.parse().unwrap_or(0);
    let ryu_exponent = exp - (olength - 1);
    let (lower, upper) = if olength == 1 {
        (-4, 2)
    } else if exp >= 10 {
        (-(olength + 2), 2)
    } else {
        (-(olength + 2), 1)
    };
    let fixed = (lower..=upper).contains(&ryu_exponent)
        && !((output >= 1 << 53 && ryu_exponent == 0)
            || (output > (1 << 52) / 5 && ryu_exponent == 1)
            || (output > (1 << 51) / 25 && ryu_exponent == 2));
    let mut s = String::with_capacity(26);
    if negative {
        s.push('-');
    }
    if fixed {
        let whole_digits = olength + ryu_exponent;
        if ryu_exponent >= 0 {
            s.push_str(&digits);
            s.extend(std::iter::repeat_n('0', ryu_exponent as usize));
            s.push_str(".0");
        } else if whole_digits > 0 {
            let (int, frac) = digits.split_at(whole_digits as usize);
            s.push_str(int);
            s.push('.');
            s.push_str(frac);
        } else {
            s.push_str("0.");
            s.extend(std::iter::repeat_n('0', (-whole_digits) as usize));
            s.push_str(&digits);
        }
    } else {
        let (first, rest) = digits.split_at(1);
        s.push_str(first);
        s.push('.');
        s.push_str(if rest.is_empty() { "0" } else { rest });
        let _ = write!(s, "e{exp}");
    }
    s
}
