//! The external term format decoder, under the limits a `Node` uses by default.
//!
//! No input may panic or break the memory rule; whatever decodes must survive an
//! encode/decode round trip unchanged, and a small term without pids, ports, references
//! or funs must print as text that `parse_term` reads back to the same term.
#![no_main]

use autocluster::term::{self, DecodeLimits, Term};
use autocluster_fuzz::check;
use libfuzzer_sys::fuzz_target;

/// Whether `Display` prints `t` as Erlang syntax `parse_term` reads (not pids, ports,
/// references and funs, as in the crate's own text round-trip property).
fn printable(t: &Term) -> bool {
    match t {
        Term::Pid(_)
        | Term::Port(_)
        | Term::Reference(_)
        | Term::InternalFun(_)
        | Term::ExternalFun(_) => false,
        Term::List(v) | Term::Tuple(v) => v.iter().all(printable),
        Term::ImproperList { elements, tail } => elements.iter().all(printable) && printable(tail),
        Term::Map(pairs) => pairs.iter().all(|(k, v)| printable(k) && printable(v)),
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits::default();
    let Ok((t, used)) = check("term::decode_prefix", data.len(), || {
        term::decode_prefix(data, &limits)
    }) else {
        return;
    };
    assert!(used <= data.len());
    let bytes = term::encode(&t).expect("a decoded term encodes");
    let again = term::decode(&bytes).expect("our own encoding decodes");
    assert_eq!(again, t);
    if bytes.len() < 4096 && printable(&t) {
        let text = t.to_string();
        match term::parse_term(&text) {
            Ok(parsed) => assert_eq!(parsed, t, "{text} parses to another term"),
            Err(e) => panic!("{text} does not parse: {e}"),
        }
    }
});
