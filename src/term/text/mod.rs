//! Erlang's text form of terms: [`parse_term`] and `impl Display for Term`.
//!
//! `Display` prints exactly what `io_lib:format("~0p", [Term])` prints on OTP 25 (one
//! line, Latin-1 mode): lists of printable Latin-1 characters as `"strings"`, binaries
//! of printable Latin-1 bytes as `<<"text">>`, atoms quoted and escaped when needed,
//! floats in OTP's shortest round-trip form, small maps (up to 32 keys) sorted by key
//! as Erlang stores them. Maps with more keys are printed in the reverse of their stored
//! order, which is Erlang's printing order for a large map decoded from Erlang (Erlang
//! writes its hash trie in the reverse of its iteration order). Pids, ports, references and local
//! funs are printed with their node or module name, since we have no node table: see
//! the [module documentation](super).
//!
//! [`parse_term`] accepts what `erl_scan:string/1` followed by `erl_parse:parse_term/1`
//! accept: literals of every kind, `-`/`+` before a number, bit syntax with literal
//! segments (`<<"a", 1:3, 2/little-unit:16, $é/utf8>>`), `fun M:F/A`, comments and an
//! optional final `.`; maps are sorted by key, a repeated key keeps its last value.

mod parse;
mod print;

pub use parse::{ParseError, ParseErrorKind, parse_term};
pub use print::format_float;
pub(crate) use print::write_atom;
