//! Reading Erlang literal syntax: [`parse_term`].

use std::fmt;
use std::str::FromStr;

use num_bigint::{BigInt, Sign};

use crate::term::cmp::compare_exact;
use crate::term::decode::DecodeLimits;
use crate::term::{Atom, ExternalFun, Term};

use super::print::{format_float, is_lower, is_name_char, is_reserved_word, write_atom};

/// Where and why [`parse_term`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {kind}")]
pub struct ParseError {
    /// Line of the offending text, from 1.
    pub line: usize,
    /// Column (in characters) of the offending text, from 1.
    pub column: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

/// What [`parse_term`] found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// A character that starts no token.
    #[error("unexpected character {0:?}")]
    UnexpectedChar(char),
    /// The text ends inside a term.
    #[error("unexpected end of text")]
    UnexpectedEnd,
    /// A token where another was expected.
    #[error("expected {expected}, found {found}")]
    Expected {
        /// What the grammar needed.
        expected: &'static str,
        /// What was there.
        found: String,
    },
    /// A malformed integer, or a base outside 2..=36.
    #[error("invalid integer")]
    InvalidInteger,
    /// A malformed or out-of-range float.
    #[error("invalid float")]
    InvalidFloat,
    /// A malformed escape sequence, or a character Erlang does not accept.
    #[error("illegal character or escape")]
    IllegalCharacter,
    /// A quoted atom longer than 255 characters.
    #[error("atom longer than 255 characters")]
    AtomTooLong,
    /// A variable: literals only.
    #[error("variable {0} is not a term")]
    Variable(String),
    /// A reserved word where a term was expected.
    #[error("reserved word {0} is not a term")]
    ReservedWord(String),
    /// Nested deeper than [`DecodeLimits::DEFAULT_MAX_DEPTH`].
    #[error("term nested too deeply")]
    TooDeep,
    /// A bit syntax segment Erlang would reject (or that we do not support: 16-bit
    /// floats).
    #[error("bad binary segment: {0}")]
    BadSegment(&'static str),
    /// Text after the term (and its optional `.`).
    #[error("text after the term")]
    TrailingInput,
}

/// Parses one Erlang term from its text form, with an optional final `.`.
///
/// ```
/// use autocluster::term::{parse_term, Term};
/// let t = parse_term("{rabbit@host, [16#ff, $a | tail], #{k => <<\"v\">>}}.")?;
/// assert_eq!(t.to_string(), "{rabbit@host,[255,97|tail],#{k => <<\"v\">>}}");
/// assert!(parse_term("[1, 2").is_err());
/// # Ok::<(), autocluster::term::ParseError>(())
/// ```
pub fn parse_term(text: &str) -> Result<Term, ParseError> {
    let tokens = Scanner::new(text).scan()?;
    let mut p = Parser {
        tokens: &tokens,
        pos: 0,
        end: end_position(text),
    };
    let term = p.term(0)?;
    if p.peek_is(&Tok::Dot) {
        p.pos += 1;
    }
    match p.tokens.get(p.pos) {
        None => Ok(term),
        Some((_, at)) => Err(at.error(ParseErrorKind::TrailingInput)),
    }
}

impl FromStr for Term {
    type Err = ParseError;

    /// [`parse_term`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_term(s)
    }
}

#[derive(Clone, Copy, Debug)]
struct Pos {
    line: usize,
    column: usize,
}

impl Pos {
    fn error(self, kind: ParseErrorKind) -> ParseError {
        ParseError {
            line: self.line,
            column: self.column,
            kind,
        }
    }
}

fn end_position(text: &str) -> Pos {
    let mut pos = Pos { line: 1, column: 1 };
    for c in text.chars() {
        if c == '\n' {
            pos.line += 1;
            pos.column = 1;
        } else {
            pos.column += 1;
        }
    }
    pos
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Atom(String),
    Var(String),
    Reserved(String),
    Int(BigInt),
    Char(u32),
    Float(f64),
    Str(Vec<u32>),
    Punct(&'static str),
    Dot,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Atom(a) => write_atom(f, a),
            Tok::Var(v) | Tok::Reserved(v) => f.write_str(v),
            Tok::Int(i) => write!(f, "{i}"),
            Tok::Char(c) => write!(f, "${}", char::from_u32(*c).unwrap_or('?')),
            Tok::Float(x) => f.write_str(&format_float(*x)),
            Tok::Str(_) => f.write_str("a string"),
            Tok::Punct(p) => write!(f, "'{p}'"),
            Tok::Dot => f.write_str("'.'"),
        }
    }
}

struct Scanner<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    pos: Pos,
}

type PResult<T> = Result<T, ParseError>;

fn is_unicode(c: u32) -> bool {
    c < 0xD800 || (c > 0xDFFF && c < 0xFFFE) || (c > 0xFFFF && c <= 0x10FFFF)
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Scanner {
            chars: text.chars().peekable(),
            pos: Pos { line: 1, column: 1 },
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn peek2(&self) -> Option<char> {
        let mut it = self.chars.clone();
        it.next();
        it.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.pos.line += 1;
            self.pos.column = 1;
        } else {
            self.pos.column += 1;
        }
        Some(c)
    }

    fn scan(mut self) -> PResult<Vec<(Tok, Pos)>> {
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            let at = self.pos;
            let code = c as u32;
            if code <= 32 || (128..=160).contains(&code) {
                self.bump();
                continue;
            }
            if c == '%' {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.bump();
                }
                continue;
            }
            let tok = match c {
                'a'..='z' => self.name(Tok::Atom),
                _ if is_lower(c) => self.name(Tok::Atom),
                'A'..='Z' | '_' => self.name(Tok::Var),
                'À'..='Þ' if c != '×' => self.name(Tok::Var),
                '0'..='9' => self.number(at)?,
                '$' => {
                    self.bump();
                    let c = self.bump().ok_or(at.error(ParseErrorKind::UnexpectedEnd))?;
                    let v = if c == '\\' {
                        self.escape(at)?
                    } else {
                        u32::from(c)
                    };
                    if !is_unicode(v) && c != '\\' {
                        return Err(at.error(ParseErrorKind::IllegalCharacter));
                    }
                    Tok::Char(v)
                }
                '"' => Tok::Str(self.quoted('"', at)?),
                '\'' => {
                    let chars = self.quoted('\'', at)?;
                    if chars.len() > 255 {
                        return Err(at.error(ParseErrorKind::AtomTooLong));
                    }
                    Tok::Atom(chars.iter().filter_map(|&c| char::from_u32(c)).collect())
                }
                '.' => {
                    self.bump();
                    match self.peek() {
                        None | Some('%') => Tok::Dot,
                        Some(c) if (c as u32) <= 32 || (128..=160).contains(&(c as u32)) => {
                            Tok::Dot
                        }
                        Some(_) => return Err(at.error(ParseErrorKind::UnexpectedChar('.'))),
                    }
                }
                _ => {
                    let two: Option<&'static str> = match (c, self.peek2()) {
                        ('<', Some('<')) => Some("<<"),
                        ('>', Some('>')) => Some(">>"),
                        ('=', Some('>')) => Some("=>"),
                        (':', Some('=')) => Some(":="),
                        _ => None,
                    };
                    if let Some(p) = two {
                        self.bump();
                        self.bump();
                        Tok::Punct(p)
                    } else {
                        let p = match c {
                            '{' => "{",
                            '}' => "}",
                            '[' => "[",
                            ']' => "]",
                            '(' => "(",
                            ')' => ")",
                            ',' => ",",
                            '|' => "|",
                            '#' => "#",
                            ':' => ":",
                            '/' => "/",
                            '-' => "-",
                            '+' => "+",
                            _ => return Err(at.error(ParseErrorKind::UnexpectedChar(c))),
                        };
                        self.bump();
                        Tok::Punct(p)
                    }
                }
            };
            out.push((tok, at));
        }
        Ok(out)
    }

    fn name(&mut self, kind: fn(String) -> Tok) -> Tok {
        let mut s = String::new();
        while let Some(c) = self.peek().filter(|&c| is_name_char(c)) {
            s.push(c);
            self.bump();
        }
        match kind(s) {
            Tok::Atom(a) if is_reserved_word(&a) => Tok::Reserved(a),
            t => t,
        }
    }

    /// Digits (and `_` between digits) valid in `base`.
    fn digits(&mut self, base: u32) -> String {
        let mut s = String::new();
        loop {
            match self.peek() {
                Some(c) if c.is_digit(base) => {
                    s.push(c);
                    self.bump();
                }
                Some('_')
                    if s.chars().last().is_some_and(|p| p.is_digit(base))
                        && self.peek2().is_some_and(|n| n.is_digit(base)) =>
                {
                    self.bump();
                }
                _ => return s,
            }
        }
    }

    fn number(&mut self, at: Pos) -> PResult<Tok> {
        let int = self.digits(10);
        if self.peek() == Some('#') {
            self.bump();
            let base: u32 = int
                .parse()
                .ok()
                .filter(|b| (2..=36).contains(b))
                .ok_or(at.error(ParseErrorKind::InvalidInteger))?;
            let digits = self.digits(base);
            return BigInt::parse_bytes(digits.as_bytes(), base)
                .map(Tok::Int)
                .ok_or(at.error(ParseErrorKind::InvalidInteger));
        }
        if self.peek() == Some('.') && self.peek2().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            let frac = self.digits(10);
            let mut text = format!("{int}.{frac}");
            if matches!(self.peek(), Some('e' | 'E')) {
                self.bump();
                text.push('e');
                if let Some(sign @ ('+' | '-')) = self.peek() {
                    self.bump();
                    text.push(sign);
                }
                let exp = self.digits(10);
                if exp.is_empty() {
                    return Err(at.error(ParseErrorKind::InvalidFloat));
                }
                text.push_str(&exp);
            }
            return text
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Tok::Float)
                .ok_or(at.error(ParseErrorKind::InvalidFloat));
        }
        BigInt::parse_bytes(int.as_bytes(), 10)
            .map(Tok::Int)
            .ok_or(at.error(ParseErrorKind::InvalidInteger))
    }

    /// The characters of a quoted string or atom; the opening quote is next.
    fn quoted(&mut self, quote: char, at: Pos) -> PResult<Vec<u32>> {
        self.bump();
        let mut out = Vec::new();
        loop {
            let here = self.pos;
            match self.bump() {
                None => return Err(at.error(ParseErrorKind::UnexpectedEnd)),
                Some(c) if c == quote => return Ok(out),
                Some('\\') => out.push(self.escape(here)?),
                Some(c) if is_unicode(u32::from(c)) => out.push(u32::from(c)),
                Some(_) => return Err(here.error(ParseErrorKind::IllegalCharacter)),
            }
        }
    }

    /// The value of an escape sequence; the backslash has been read.
    fn escape(&mut self, at: Pos) -> PResult<u32> {
        let bad = || at.error(ParseErrorKind::IllegalCharacter);
        let c = self.bump().ok_or(at.error(ParseErrorKind::UnexpectedEnd))?;
        Ok(match c {
            '0'..='7' => {
                let mut v = c as u32 - '0' as u32;
                for _ in 0..2 {
                    match self.peek() {
                        Some(d @ '0'..='7') => {
                            self.bump();
                            v = v * 8 + (d as u32 - '0' as u32);
                        }
                        _ => break,
                    }
                }
                v
            }
            'x' => {
                if self.peek() == Some('{') {
                    self.bump();
                    let mut hex = String::new();
                    while let Some(h) = self.peek().filter(char::is_ascii_hexdigit) {
                        hex.push(h);
                        self.bump();
                    }
                    if self.bump() != Some('}') {
                        return Err(bad());
                    }
                    u32::from_str_radix(&hex, 16)
                        .ok()
                        .filter(|&v| is_unicode(v))
                        .ok_or_else(bad)?
                } else {
                    let mut v = 0;
                    for _ in 0..2 {
                        let h = self.bump().and_then(|h| h.to_digit(16)).ok_or_else(bad)?;
                        v = v * 16 + h;
                    }
                    v
                }
            }
            // Control characters as OTP 27 and later read them: `\^?` is DEL, and only
            // `@`..`_` and letters name one (OTP 25 took any character, `?` as 31).
            '^' => match self.bump().ok_or(at.error(ParseErrorKind::UnexpectedEnd))? {
                '?' => 127,
                c @ ('@'..='_' | 'a'..='z') => u32::from(c) & 31,
                _ => return Err(bad()),
            },
            'n' => 10,
            'r' => 13,
            't' => 9,
            'v' => 11,
            'b' => 8,
            'f' => 12,
            'e' => 27,
            's' => 32,
            'd' => 127,
            c if is_unicode(u32::from(c)) => u32::from(c),
            _ => return Err(bad()),
        })
    }
}

struct Parser<'t> {
    tokens: &'t [(Tok, Pos)],
    pos: usize,
    end: Pos,
}

impl<'t> Parser<'t> {
    fn peek(&self) -> Option<&'t Tok> {
        self.tokens.get(self.pos).map(|(t, _)| t)
    }

    fn peek_is(&self, tok: &Tok) -> bool {
        self.peek() == Some(tok)
    }

    fn here(&self) -> Pos {
        self.tokens.get(self.pos).map_or(self.end, |(_, p)| *p)
    }

    fn next(&mut self) -> PResult<(&'t Tok, Pos)> {
        let (t, p) = self
            .tokens
            .get(self.pos)
            .ok_or(self.end.error(ParseErrorKind::UnexpectedEnd))?;
        self.pos += 1;
        Ok((t, *p))
    }

    fn expect(&mut self, punct: &'static str) -> PResult<()> {
        let at = self.here();
        match self.next() {
            Ok((Tok::Punct(p), _)) if *p == punct => Ok(()),
            Ok((t, _)) => Err(at.error(ParseErrorKind::Expected {
                expected: punct,
                found: t.to_string(),
            })),
            Err(e) => Err(e),
        }
    }

    fn eat(&mut self, punct: &'static str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(p)) if *p == punct) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn unexpected(&self, at: Pos, tok: &Tok, expected: &'static str) -> ParseError {
        at.error(match tok {
            Tok::Var(v) => ParseErrorKind::Variable(v.clone()),
            Tok::Reserved(r) => ParseErrorKind::ReservedWord(r.clone()),
            t => ParseErrorKind::Expected {
                expected,
                found: t.to_string(),
            },
        })
    }

    fn term(&mut self, depth: usize) -> PResult<Term> {
        if depth > DecodeLimits::DEFAULT_MAX_DEPTH {
            return Err(self.here().error(ParseErrorKind::TooDeep));
        }
        let (tok, at) = self.next()?;
        match tok {
            Tok::Atom(a) => Ok(Term::Atom(Atom::new(a))),
            Tok::Int(_) | Tok::Char(_) | Tok::Float(_) => Ok(number(tok)),
            Tok::Punct(sign @ ("-" | "+")) => {
                let v = self.signed_number(sign == &"-", depth)?;
                Ok(number(&v))
            }
            Tok::Str(s) => {
                let mut chars = s.clone();
                self.more_strings(&mut chars);
                Ok(code_points(&chars))
            }
            Tok::Punct("(") => {
                let t = self.term(depth + 1)?;
                self.expect(")")?;
                Ok(t)
            }
            Tok::Punct("{") => {
                let elements = self.sequence(depth, "}")?;
                Ok(Term::Tuple(elements))
            }
            Tok::Punct("[") => self.list(depth),
            Tok::Punct("#") => {
                self.expect("{")?;
                self.map(depth)
            }
            Tok::Punct("<<") => self.binary(depth),
            Tok::Reserved(r) if r == "fun" => self.fun(),
            t => Err(self.unexpected(at, t, "a term")),
        }
    }

    /// A number after `-` or `+` (possibly in parentheses), as a token.
    fn signed_number(&mut self, negate: bool, depth: usize) -> PResult<Tok> {
        let at = self.here();
        if depth > DecodeLimits::DEFAULT_MAX_DEPTH {
            return Err(at.error(ParseErrorKind::TooDeep));
        }
        let (tok, _) = self.next()?;
        let tok = match tok {
            Tok::Punct("(") => {
                let v = self.signed_number(false, depth + 1)?;
                self.expect(")")?;
                v
            }
            Tok::Int(_) | Tok::Char(_) | Tok::Float(_) => tok.clone(),
            t => return Err(self.unexpected(at, t, "a number")),
        };
        Ok(match (tok, negate) {
            (t, false) => t,
            (Tok::Int(i), true) => Tok::Int(-i),
            (Tok::Char(c), true) => Tok::Int(-BigInt::from(c)),
            (Tok::Float(f), true) => Tok::Float(-f),
            (t, true) => t,
        })
    }

    fn more_strings(&mut self, chars: &mut Vec<u32>) {
        while let Some(Tok::Str(s)) = self.peek() {
            chars.extend_from_slice(s);
            self.pos += 1;
        }
    }

    /// Comma-separated terms up to `close`.
    fn sequence(&mut self, depth: usize, close: &'static str) -> PResult<Vec<Term>> {
        let mut out = Vec::new();
        if self.eat(close) {
            return Ok(out);
        }
        loop {
            out.push(self.term(depth + 1)?);
            if self.eat(close) {
                return Ok(out);
            }
            self.expect(",")?;
        }
    }

    fn list(&mut self, depth: usize) -> PResult<Term> {
        let mut elements = Vec::new();
        if self.eat("]") {
            return Ok(Term::nil());
        }
        loop {
            elements.push(self.term(depth + 1)?);
            if self.eat("]") {
                return Ok(Term::List(elements));
            }
            if self.eat("|") {
                let tail = self.term(depth + 1)?;
                self.expect("]")?;
                return Ok(Term::improper_list(elements, tail));
            }
            self.expect(",")?;
        }
    }

    fn map(&mut self, depth: usize) -> PResult<Term> {
        let mut pairs: Vec<(Term, Term)> = Vec::new();
        if !self.eat("}") {
            loop {
                let k = self.term(depth + 1)?;
                self.expect("=>")?;
                let v = self.term(depth + 1)?;
                match pairs.iter_mut().find(|(old, _)| *old == k) {
                    Some(pair) => pair.1 = v,
                    None => pairs.push((k, v)),
                }
                if self.eat("}") {
                    break;
                }
                self.expect(",")?;
            }
        }
        pairs.sort_by(|p, q| compare_exact(&p.0, &q.0));
        Ok(Term::Map(pairs))
    }

    fn fun(&mut self) -> PResult<Term> {
        let module = self.atom()?;
        self.expect(":")?;
        let function = self.atom()?;
        self.expect("/")?;
        let at = self.here();
        let arity = match self.next()? {
            (Tok::Int(i), _) => u8::try_from(i).ok(),
            _ => None,
        }
        .ok_or(at.error(ParseErrorKind::Expected {
            expected: "an arity 0..=255",
            found: String::from("something else"),
        }))?;
        Ok(Term::from(ExternalFun {
            module,
            function,
            arity,
        }))
    }

    fn atom(&mut self) -> PResult<Atom> {
        let at = self.here();
        match self.next()? {
            (Tok::Atom(a), _) => Ok(Atom::new(a)),
            (t, _) => Err(self.unexpected(at, t, "an atom")),
        }
    }

    fn binary(&mut self, depth: usize) -> PResult<Term> {
        let mut bits = BitBuf::default();
        if !self.eat(">>") {
            loop {
                self.segment(depth, &mut bits)?;
                if self.eat(">>") {
                    break;
                }
                self.expect(",")?;
            }
        }
        let len = bits.len;
        Term::bit_string(bits.bytes, len)
            .ok_or(self.end.error(ParseErrorKind::BadSegment("internal")))
    }

    /// `Value[:Size][/Type-Specifiers]`, appended to `bits`.
    fn segment(&mut self, depth: usize, bits: &mut BitBuf) -> PResult<()> {
        let at = self.here();
        let bad = |why| at.error(ParseErrorKind::BadSegment(why));
        let value = match self.next()? {
            (Tok::Str(s), _) => {
                let mut chars = s.clone();
                self.more_strings(&mut chars);
                SegValue::Chars(chars)
            }
            (t @ (Tok::Int(_) | Tok::Char(_) | Tok::Float(_)), _) => SegValue::Number(t.clone()),
            (Tok::Punct(sign @ ("-" | "+")), _) => {
                SegValue::Number(self.signed_number(*sign == "-", depth)?)
            }
            (Tok::Punct("("), _) => {
                let v = self.signed_number(false, depth + 1)?;
                self.expect(")")?;
                SegValue::Number(v)
            }
            (Tok::Punct("<<"), _) => {
                if depth >= DecodeLimits::DEFAULT_MAX_DEPTH {
                    return Err(at.error(ParseErrorKind::TooDeep));
                }
                let inner = self.binary(depth + 1)?;
                SegValue::Bits(inner)
            }
            (t, _) => return Err(self.unexpected(at, t, "a binary segment")),
        };
        let size = if self.eat(":") {
            let at = self.here();
            let paren = self.eat("(");
            let size = match self.next()? {
                (Tok::Int(i), _) => usize::try_from(i).ok(),
                _ => None,
            }
            .ok_or(at.error(ParseErrorKind::BadSegment(
                "size must be a non-negative integer",
            )))?;
            if paren {
                self.expect(")")?;
            }
            Some(size)
        } else {
            None
        };
        let mut spec = SegSpec::default();
        if self.eat("/") {
            loop {
                let at = self.here();
                let name = self
                    .atom()
                    .map_err(|_| at.error(ParseErrorKind::BadSegment("unknown type specifier")))?;
                spec.add(name.as_str(), self, at)?;
                if !self.eat("-") {
                    break;
                }
            }
        }
        spec.write(&value, size, bits).map_err(bad)
    }
}

fn number(tok: &Tok) -> Term {
    match tok {
        Tok::Int(i) => Term::from(i.clone()),
        Tok::Char(c) => Term::Integer(i64::from(*c)),
        Tok::Float(f) => Term::Float(*f),
        _ => Term::nil(),
    }
}

/// An Erlang string from code points.
fn code_points(chars: &[u32]) -> Term {
    if chars.is_empty() {
        Term::nil()
    } else if chars.iter().all(|&c| c < 256) {
        Term::ByteList(chars.iter().map(|&c| c as u8).collect())
    } else {
        Term::List(chars.iter().map(|&c| Term::Integer(i64::from(c))).collect())
    }
}

enum SegValue {
    Number(Tok),
    Chars(Vec<u32>),
    Bits(Term),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SegType {
    Integer,
    Float,
    Binary,
    Bits,
    Utf8,
    Utf16,
    Utf32,
}

#[derive(Default)]
struct SegSpec {
    ty: Option<SegType>,
    little: Option<bool>,
    signed: Option<bool>,
    unit: Option<usize>,
}

/// Total bits a parsed binary may hold (128 MiB).
const MAX_TEXT_BITS: usize = 1 << 30;

impl SegSpec {
    fn add(&mut self, name: &str, p: &mut Parser<'_>, at: Pos) -> PResult<()> {
        let bad = |why| at.error(ParseErrorKind::BadSegment(why));
        let ty = match name {
            "integer" => Some(SegType::Integer),
            "float" => Some(SegType::Float),
            "binary" | "bytes" => Some(SegType::Binary),
            "bitstring" | "bits" => Some(SegType::Bits),
            "utf8" => Some(SegType::Utf8),
            "utf16" => Some(SegType::Utf16),
            "utf32" => Some(SegType::Utf32),
            _ => None,
        };
        if let Some(ty) = ty {
            if self.ty.is_some_and(|old| old != ty) {
                return Err(bad("conflicting types"));
            }
            self.ty = Some(ty);
            return Ok(());
        }
        let set = |slot: &mut Option<bool>, v: bool| {
            if slot.is_some_and(|old| old != v) {
                return Err(bad("conflicting specifiers"));
            }
            *slot = Some(v);
            Ok(())
        };
        match name {
            "big" => set(&mut self.little, false),
            "little" => set(&mut self.little, true),
            "native" => set(&mut self.little, cfg!(target_endian = "little")),
            "signed" => set(&mut self.signed, true),
            "unsigned" => set(&mut self.signed, false),
            "unit" => {
                p.expect(":")?;
                let unit = match p.next()? {
                    (Tok::Int(i), _) => usize::try_from(i).ok().filter(|u| (1..=256).contains(u)),
                    _ => None,
                }
                .ok_or(bad("unit must be 1..=256"))?;
                if self.unit.is_some_and(|old| old != unit) {
                    return Err(bad("conflicting units"));
                }
                self.unit = Some(unit);
                Ok(())
            }
            _ => Err(bad("unknown type specifier")),
        }
    }

    fn write(
        &self,
        value: &SegValue,
        size: Option<usize>,
        bits: &mut BitBuf,
    ) -> Result<(), &'static str> {
        let ty = self.ty.unwrap_or(SegType::Integer);
        let little = self.little.unwrap_or(false);
        if self.unit.is_some()
            && (size.is_none() || matches!(ty, SegType::Utf8 | SegType::Utf16 | SegType::Utf32))
        {
            return Err("unit needs a size");
        }
        let size_bits =
            |default_unit: usize| size.map(|s| s.saturating_mul(self.unit.unwrap_or(default_unit)));
        match value {
            SegValue::Chars(chars) => {
                for &c in chars {
                    self.write(&SegValue::Number(Tok::Int(BigInt::from(c))), size, bits)?;
                }
                Ok(())
            }
            SegValue::Bits(term) => {
                let (bytes, len) = match term {
                    Term::Binary(b) => (b.as_slice(), b.len() * 8),
                    Term::BitBinary { bytes, bits } => (
                        bytes.as_slice(),
                        (bytes.len().saturating_sub(1)) * 8 + usize::from(*bits),
                    ),
                    _ => return Err("not a bit string"),
                };
                let take = match ty {
                    SegType::Binary => {
                        let n = size_bits(8).unwrap_or(len);
                        if n % 8 != 0 || len % 8 != 0 {
                            return Err("not a binary");
                        }
                        n
                    }
                    SegType::Bits => size_bits(1).unwrap_or(len),
                    _ => return Err("a binary value needs the binary or bits type"),
                };
                if take > len {
                    return Err("size larger than the value");
                }
                bits.push(bytes, 0, take)
            }
            SegValue::Number(tok) => match ty {
                SegType::Integer => {
                    let v = match tok {
                        Tok::Int(i) => i.clone(),
                        Tok::Char(c) => BigInt::from(*c),
                        _ => return Err("a float in an integer segment"),
                    };
                    let n = size_bits(1).unwrap_or(8);
                    bits.push_int(&v, n, little)
                }
                SegType::Float => {
                    let f = match tok {
                        Tok::Int(i) => i
                            .to_string()
                            .parse::<f64>()
                            .map_err(|_| "float out of range")?,
                        Tok::Char(c) => f64::from(*c),
                        Tok::Float(f) => *f,
                        _ => return Err("not a number"),
                    };
                    let mut raw = match size_bits(1).unwrap_or(64) {
                        64 => f.to_bits().to_be_bytes().to_vec(),
                        32 => (f as f32).to_bits().to_be_bytes().to_vec(),
                        16 => return Err("16-bit floats are not supported"),
                        _ => return Err("float size must be 16, 32 or 64"),
                    };
                    if little {
                        raw.reverse();
                    }
                    let n = raw.len() * 8;
                    bits.push(&raw, 0, n)
                }
                SegType::Utf8 | SegType::Utf16 | SegType::Utf32 => {
                    if size.is_some() {
                        return Err("a UTF segment takes no size");
                    }
                    let c = match tok {
                        Tok::Int(i) => u32::try_from(i).ok(),
                        Tok::Char(c) => Some(*c),
                        _ => None,
                    }
                    .and_then(char::from_u32)
                    .ok_or("not a Unicode code point")?;
                    let raw: Vec<u8> = match ty {
                        SegType::Utf8 => c.to_string().into_bytes(),
                        SegType::Utf16 => {
                            let mut units = [0u16; 2];
                            c.encode_utf16(&mut units)
                                .iter()
                                .flat_map(|u| {
                                    if little {
                                        u.to_le_bytes()
                                    } else {
                                        u.to_be_bytes()
                                    }
                                })
                                .collect()
                        }
                        _ => {
                            let v = c as u32;
                            if little {
                                v.to_le_bytes()
                            } else {
                                v.to_be_bytes()
                            }
                            .to_vec()
                        }
                    };
                    let n = raw.len() * 8;
                    bits.push(&raw, 0, n)
                }
                SegType::Binary | SegType::Bits => Err("a number in a binary segment"),
            },
        }
    }
}

/// A growing bit string.
#[derive(Default)]
struct BitBuf {
    bytes: Vec<u8>,
    len: usize,
}

impl BitBuf {
    /// Appends `count` bits of `data`, starting `skip` bits in, most significant first.
    fn push(&mut self, data: &[u8], skip: usize, count: usize) -> Result<(), &'static str> {
        if self.len.saturating_add(count) > MAX_TEXT_BITS {
            return Err("binary too large");
        }
        if self.len.is_multiple_of(8) && skip.is_multiple_of(8) && count.is_multiple_of(8) {
            let from = skip / 8;
            let chunk = data.get(from..from + count / 8).ok_or("internal")?;
            self.bytes.extend_from_slice(chunk);
            self.len += count;
            return Ok(());
        }
        for i in skip..skip + count {
            let byte = data.get(i / 8).copied().ok_or("internal")?;
            let bit = (byte >> (7 - i % 8)) & 1;
            if self.len.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if bit == 1
                && let Some(last) = self.bytes.last_mut()
            {
                *last |= 0x80 >> (self.len % 8);
            }
            self.len += 1;
        }
        Ok(())
    }

    /// Appends the low `n` bits of `v` (two's complement), big- or little-endian as
    /// Erlang's bit syntax does (little: low byte first, the leftover high bits last).
    fn push_int(&mut self, v: &BigInt, n: usize, little: bool) -> Result<(), &'static str> {
        if self.len.saturating_add(n) > MAX_TEXT_BITS {
            return Err("binary too large");
        }
        let nbytes = n.div_ceil(8);
        // Big-endian two's complement in exactly `nbytes` bytes.
        let mut be = v.to_signed_bytes_be();
        let fill = if v.sign() == Sign::Minus { 0xff } else { 0 };
        if be.len() < nbytes {
            let mut padded = vec![fill; nbytes - be.len()];
            padded.extend_from_slice(&be);
            be = padded;
        } else {
            be.drain(..be.len() - nbytes);
        }
        if !little {
            return self.push(&be, nbytes * 8 - n, n);
        }
        // Little-endian: whole low bytes first, then the top `n % 8` bits.
        let whole = n / 8;
        for i in 0..whole {
            let b = be.get(nbytes - 1 - i).copied().ok_or("internal")?;
            self.push(&[b], 0, 8)?;
        }
        let rest = n % 8;
        if rest > 0 {
            let b = be.first().copied().ok_or("internal")?;
            self.push(&[b], 8 - rest, rest)?;
        }
        Ok(())
    }
}
