//! The term codec against a real `erl` (OTP 25): for a few hundred terms, Erlang's
//! `io_lib:format("~0p", [T])` must equal our `Display`, Erlang's
//! `term_to_binary(T, [{minor_version, 2}])` must equal our `encode`, and whatever one
//! side can read (`erl_parse:parse_term/1`, `binary_to_term/1`) the other must read the
//! same way.
//!
//! One `erl -noshell` process handles the whole batch: a file of lines `T <hex text>`
//! (parse this text) or `B <hex bytes>` (decode these bytes), answered line by line with
//! `ok <hex ~0p text> <hex term_to_binary bytes>` or `error`.

use std::fmt::Write as _;

use autocluster::term::{self, Atom, ExternalFun, Pid, Port, Reference, Term};
use num_bigint::BigInt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use crate::common;

const ERL_SCRIPT: &str = r#"
{ok, Bin} = file:read_file(hd(init:get_plain_arguments())),
Hex = fun(B) -> binary:encode_hex(B) end,
Emit = fun(T) ->
    P = unicode:characters_to_binary(io_lib:format("~0p", [T])),
    io:put_chars([<<"ok ">>, Hex(P), <<" ">>,
                  Hex(term_to_binary(T, [{minor_version, 2}])), <<"\n">>])
end,
Parse = fun(Text) ->
    case erl_scan:string(Text ++ "\n.") of
        {ok, Toks, _} -> erl_parse:parse_term(Toks);
        Err -> Err
    end
end,
Handle = fun
    (<<"T ", H/binary>>) ->
        case catch Parse(unicode:characters_to_list(binary:decode_hex(H))) of
            {ok, T} -> Emit(T);
            _ -> io:put_chars(<<"error\n">>)
        end;
    (<<"B ", H/binary>>) ->
        case catch binary_to_term(binary:decode_hex(H)) of
            {'EXIT', _} -> io:put_chars(<<"error\n">>);
            T -> Emit(T)
        end;
    (_) -> ok
end,
[Handle(L) || L <- binary:split(Bin, <<"\n">>, [global])],
io:put_chars(<<"done\n">>).
"#;

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02X}");
    }
    s
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex from erl"))
        .collect()
}

#[derive(Debug)]
enum Reply {
    Ok { printed: String, bytes: Vec<u8> },
    Error,
}

enum Query {
    Text(String),
    Bytes(Vec<u8>),
}

/// Runs one `erl` over all queries; one reply per query.
fn ask_erl(queries: &[Query]) -> Vec<Reply> {
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let path = dir.path().join("queries.txt");
    let mut input = String::new();
    for q in queries {
        match q {
            Query::Text(t) => writeln!(input, "T {}", hex(t.as_bytes())),
            Query::Bytes(b) => writeln!(input, "B {}", hex(b)),
        }
        .expect("write to string");
    }
    std::fs::write(&path, input).expect("write queries");
    let out = common::peers()
        .std_command("erl", "erlang-nox", Some(dir.path()))
        .args([
            "-noshell", "-eval", ERL_SCRIPT, "-s", "init", "stop", "-extra",
        ])
        .arg(&path)
        .output()
        .expect("run erl");
    let stdout = String::from_utf8(out.stdout).expect("erl prints ASCII");
    let mut lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.pop(),
        Some("done"),
        "erl did not finish: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines.len(), queries.len(), "one reply per query");
    lines
        .into_iter()
        .map(|l| match l.split(' ').collect::<Vec<_>>().as_slice() {
            ["ok", p, b] => Reply::Ok {
                printed: String::from_utf8(unhex(p)).expect("utf-8"),
                bytes: unhex(b),
            },
            ["error"] => Reply::Error,
            other => panic!("unexpected erl reply {other:?}"),
        })
        .collect()
}

/// Whether erl printed and encoded `term` with its map keys in another order than the
/// crate's (term order): from OTP 26 on, maps are printed, and from OTP 27 on also
/// encoded, in the map's internal order, in which an atom key's place depends on the
/// atom table, not on its text. The term must then read back the same from both.
fn same_but_for_map_order(term: &term::Term, printed: &str, bytes: &[u8]) -> bool {
    common::peers().otp_release() >= 26
        && printed.contains("#{")
        && (term.to_string() != printed || term::encode(term).ok().as_deref() != Some(bytes))
        && term::parse_term(printed).as_ref() == Ok(term)
}

/// Texts that OTP 28 reads and the crate's parser does not (yet): based floats, new in
/// OTP 28. (Before OTP 28, neither reads them.)
const READ_FROM_OTP_28_ONLY: &[&str] = &["2#1.0"];

/// Texts that OTP 25 and 26 read and OTP 27 refuses, as the crate does: the words the
/// `maybe` expression reserves (on by default from OTP 27) and a control escape of a
/// character that names no control character.
const REFUSED_FROM_OTP_27: &[&str] = &["maybe", "else", "\"\\^ \""];

/// Term texts covering the literal syntax; each is checked both ways.
const TEXTS: &[&str] = &[
    // Atoms.
    "ok",
    "'EXIT'",
    "''",
    "'hello world'",
    "'and'",
    "'fun'",
    "maybe",
    "else",
    "a@b",
    "rabbit@host",
    "'rabbit@host.example.com'",
    "é",
    "ä@b",
    "'Ç'",
    "'ß'",
    "aÀ",
    "'\\x{65E5}\\x{672C}'",
    "'\\x{1F600}'",
    "'a\\nb'",
    "'a\\'b'",
    "'a\\\\b'",
    "'\\200'",
    "'\\d'",
    "'\\e\\f\\v\\b\\t\\r'",
    "'\\s'",
    "'\\^A'",
    "'a\"b'",
    "true",
    "false",
    "'_x'",
    "'9'",
    "'A'",
    // Integers.
    "0",
    "1",
    "255",
    "256",
    "-1",
    "-256",
    "2147483647",
    "2147483648",
    "-2147483648",
    "-2147483649",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "123456789012345678901234567890123456789012345678901234567890",
    "-123456789012345678901234567890",
    "16#FF",
    "-16#ff",
    "2#1010",
    "36#zz",
    "8#777",
    "1_000_000",
    "16#dead_beef",
    "$a",
    "$\\n",
    "$\\^A",
    "$\\x{41}",
    "$\\101",
    "$ ",
    "-$a",
    "$é",
    "$\\x{1F600}",
    "- 1",
    "+1",
    "-(1)",
    // Floats.
    "0.0",
    "-0.0",
    "1.0",
    "0.1",
    "1.5",
    "-2.0e-3",
    "1.0e10",
    "1.5e-7",
    "123456789012.0",
    "1.0e100",
    "1.0e3",
    "100.0",
    "0.0001",
    "1.0e-5",
    "12345.678",
    "12345600.0",
    "9007199254740992.0",
    "9007199254740993.0",
    "1.2345678901234568e17",
    "5.0e-324",
    "1.7976931348623157e308",
    "2.2250738585072014e-308",
    "0.0025",
    "1.234e-4",
    "0.01234",
    "3.141592653589793",
    "1.0e21",
    "1.0e22",
    "1.0e23",
    "1.5E3",
    "1_0.5_1e1_0",
    "1.0e-400",
    "4.0e-4",
    "1.0e15",
    "1.0e16",
    // Strings and lists.
    "\"\"",
    "\"abc\"",
    "\"a\\\"b\\\\c\\n\"",
    "\"tab\\there\"",
    "\"héllo\"",
    "\"日本\"",
    "\"\\x{100}\"",
    "\"\\777\"",
    "\"\\^ \"",
    "\"a\\db\"",
    "\"\\e\"",
    "\"ab\" \"cd\"",
    "[$a|\"bc\"]",
    "[]",
    "[1,2,3]",
    "[-1,-2]",
    "[256]",
    "[0,255]",
    "[97,98|99]",
    "[a|b]",
    "[a,b|c]",
    "[1|[2]]",
    "[[],[[]]]",
    "[\"a\",\"b\"]",
    "[a|[]]",
    "[{x,y}|z]",
    "[1.0]",
    "[127]",
    "[31,32]",
    "[160]",
    "[159]",
    "[10,13,9,11,8,12,27]",
    // Binaries and bit strings.
    "<<>>",
    "<<\"\">>",
    "<<\"bin\">>",
    "<<1,2,3>>",
    "<<\"a\",1,\"b\">>",
    "<<\"é\">>",
    "<<\"é\"/utf8>>",
    "<<\"a\\nb\">>",
    "<<127>>",
    "<<255>>",
    "<<-1>>",
    "<<256>>",
    "<<1:3>>",
    "<<\"ab\",1:3>>",
    "<<1:16/little>>",
    "<<1:12/little>>",
    "<<-1:12/little>>",
    "<<1:8/unit:3>>",
    "<<\"ab\":4>>",
    "<<1.5/float>>",
    "<<1.5:32/float>>",
    "<<\"abc\"/utf16>>",
    "<<16#10000/utf16>>",
    "<<$a/utf32-little>>",
    "<<<<1,2>>:1/binary>>",
    "<<<<1:3>>/bits>>",
    "<<1:1,0:7>>",
    "<<1:0>>",
    "<<0:100>>",
    "<<1:65/signed>>",
    "<<16#1FFFF:17>>",
    // Tuples, maps, funs, nesting.
    "{}",
    "{a}",
    "{a,b,c}",
    "{ok,[1,2,3],<<\"hi\">>}",
    "{'$gen_call',{x,[alias|y]},{is_auth,n@h}}",
    "#{}",
    "#{a => 1}",
    "#{b => 1, a => 2}",
    "#{a=>1,a=>2}",
    "#{1 => a, 1.0 => b, 2 => c, 0.5 => d}",
    "#{a => #{b => #{c => []}}}",
    "#{[1] => x, [1.0] => y, {2} => z, {1.0} => w}",
    "#{<<\"k\">> => \"v\", \"k\" => <<\"v\">>, k => {v}}",
    "#{100000000000000000000 => big, 3 => small, -5.0 => float}",
    "#{'日' => 1, 'ä' => 2, a => 3, b => 4}",
    "# {a=>1}",
    "fun lists:map/2",
    "fun 'a b':'c d'/0",
    "fun erlang:self/0",
    "fun ok:'and'/0",
    "fun 'a@b':'C'/0",
    "fun 'é':'日本'/1",
    "{rabbit@host,[16#ff,$a|tail],#{k => <<\"v\">>}}",
    "[{nodes,[{disc,[rabbit@a,rabbit@b]}]},{running_nodes,[rabbit@a]},{cluster_name,<<\"rabbit@a\">>},{partitions,[]}]",
    "{[{[{[{[{[{[]}]}]}]}]}]}",
    "% comment\n ok",
    "(a)",
    "{(1),(<<>>)}",
    // Texts both must reject.
    "- -1",
    "1.0e400",
    "1e5",
    "\"\\x{D800}\"",
    "\"\\x{FFFE}\"",
    "<<1,2|3>>",
    "[a|b|c]",
    "X",
    "_",
    "and",
    "fun m:f/256",
    "<<16#D800/utf8>>",
    "2#1.0",
    "37#1",
    "16#",
    "1_",
    "[a,]",
    "{a,}",
    "#{a:=1}",
    "<<\"abc\"/binary>>",
    "<<1:8/utf8>>",
    "<<1/integer-float>>",
    "<<1/foo>>",
    "<<1.5:8/float>>",
    "<<1/unit:8>>",
    "<<1:1/binary>>",
    "<<<<1:3>>/binary>>",
    "<<1/little-big>>",
    "[1, 2",
    "{a b}",
    "'unterminated",
    "\"unterminated",
    "<0.1.0>",
    "#Ref<0.1.2.3>",
];

fn arb_atom() -> impl Strategy<Value = Atom> {
    prop_oneof![
        prop::sample::select(vec![
            "ok",
            "",
            "EXIT",
            "hello world",
            "and",
            "é",
            "日本",
            "'",
            "\\",
            "a\nb",
            "\u{7f}",
            "\u{85}",
            "ß",
            "😀",
            "n@h",
            "Ab",
        ])
        .prop_map(Atom::new),
        "[a-z][a-zA-Z0-9_@]{0,6}".prop_map(|s| Atom::new(&s)),
        "\\PC{0,12}".prop_map(Atom::from),
    ]
}

fn arb_leaf() -> impl Strategy<Value = Term> {
    prop_oneof![
        4 => arb_atom().prop_map(Term::Atom),
        2 => any::<i64>().prop_map(Term::Integer),
        2 => (-300i64..300).prop_map(Term::Integer),
        1 => (any::<bool>(), prop::collection::vec(any::<u8>(), 0..30)).prop_map(|(neg, b)| {
            let sign = if neg { num_bigint::Sign::Minus } else { num_bigint::Sign::Plus };
            Term::from(BigInt::from_bytes_le(sign, &b))
        }),
        3 => any::<u64>().prop_map(|bits| {
            let f = f64::from_bits(bits);
            Term::Float(if f.is_finite() { f } else { 1.5 })
        }),
        1 => (-1.0e6f64..1.0e6).prop_map(Term::Float),
        2 => prop::collection::vec(any::<u8>(), 0..12).prop_map(Term::Binary),
        1 => "[ -~]{0,10}".prop_map(|s| Term::binary(s.into_bytes())),
        1 => (prop::collection::vec(any::<u8>(), 1..4), 1u8..8).prop_map(|(b, bits)| {
            let len = (b.len() - 1) * 8 + usize::from(bits);
            Term::bit_string(b, len).expect("enough bits")
        }),
        2 => "\\PC{0,8}".prop_map(|s| Term::string(&s)),
        1 => "[ -~\u{a0}-\u{ff}\n\t]{0,8}".prop_map(|s| Term::string(&s)),
        1 => prop::collection::vec(any::<u8>(), 0..8).prop_map(Term::ByteList),
        1 => (arb_atom(), any::<u32>(), 0u32..8192, any::<u32>())
            .prop_map(|(node, id, serial, creation)| Term::from(Pid { node, id: id & 0x7fff, serial, creation })),
        1 => (arb_atom(), any::<u64>(), any::<u32>())
            .prop_map(|(node, id, creation)| Term::from(Port { node, id: id >> 8, creation })),
        1 => (arb_atom(), any::<u32>(), prop::collection::vec(any::<u32>(), 1..=5))
            .prop_map(|(node, creation, id)| Term::from(Reference { node, creation, id })),
        1 => (arb_atom(), arb_atom(), any::<u8>())
            .prop_map(|(module, function, arity)| Term::from(ExternalFun { module, function, arity })),
    ]
}

fn arb_term() -> impl Strategy<Value = Term> {
    arb_leaf().prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Term::Tuple),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Term::List),
            (prop::collection::vec(inner.clone(), 1..4), inner.clone())
                .prop_map(|(e, t)| Term::improper_list(e, t)),
            prop::collection::vec((inner.clone(), inner), 0..6).prop_map(sorted_map),
        ]
    })
}

/// A map as Erlang stores it: distinct keys, sorted (so the bytes can match OTP's).
fn sorted_map(pairs: Vec<(Term, Term)>) -> Term {
    let mut unique: Vec<(Term, Term)> = Vec::new();
    for (k, v) in pairs {
        if !unique.iter().any(|(u, _)| *u == k) {
            unique.push((k, v));
        }
    }
    unique.sort_by(|p, q| p.0.compare_exact(&q.0));
    Term::Map(unique)
}

fn has_opaque(t: &Term) -> bool {
    match t {
        Term::Pid(_) | Term::Port(_) | Term::Reference(_) | Term::InternalFun(_) => true,
        Term::Tuple(v) | Term::List(v) => v.iter().any(has_opaque),
        Term::ImproperList { elements, tail } => {
            elements.iter().any(has_opaque) || has_opaque(tail)
        }
        Term::Map(pairs) => pairs.iter().any(|(k, v)| has_opaque(k) || has_opaque(v)),
        _ => false,
    }
}

#[test]
fn printer_parser_and_codec_agree_with_erl() {
    let mut queries: Vec<Query> = TEXTS.iter().map(|t| Query::Text((*t).to_owned())).collect();

    // Random floats, written by our printer: erl must read them back to the same float
    // and print them the same way.
    let mut runner = TestRunner::deterministic();
    let floats = any::<u64>()
        .prop_map(f64::from_bits)
        .prop_filter("finite", |f| f.is_finite());
    let mut float_terms = Vec::new();
    for _ in 0..150 {
        let f = floats.new_tree(&mut runner).expect("float").current();
        float_terms.push(Term::Float(f));
        queries.push(Query::Text(Term::Float(f).to_string()));
    }

    // Generated terms, sent as our bytes.
    let strategy = arb_term();
    let mut generated = Vec::new();
    for _ in 0..300 {
        let t = strategy.new_tree(&mut runner).expect("term").current();
        queries.push(Query::Bytes(term::encode(&t).expect("encodable")));
        generated.push(t);
    }

    // Maps past 32 keys: Erlang keeps them in hash order; a decoded one must print in
    // Erlang's order.
    let big_maps: Vec<Term> = [33usize, 40, 100, 700]
        .iter()
        .map(|&n| {
            let pairs = (0..n)
                .map(|i| match i % 4 {
                    0 => format!("k{i} => {i}"),
                    1 => format!("{i} => <<\"v\">>"),
                    2 => format!("{{t, {i}}} => [{i}]"),
                    _ => format!("\"s{i}\" => {i}.5"),
                })
                .collect::<Vec<_>>()
                .join(",");
            term::parse_term(&format!("#{{{pairs}}}")).expect("big map")
        })
        .collect();
    for m in &big_maps {
        queries.push(Query::Bytes(term::encode(m).expect("encodable")));
    }

    let replies = ask_erl(&queries);
    let mut checked = 0;
    let mut rejected_by_both = 0;

    for (text, reply) in TEXTS.iter().zip(&replies) {
        let ours = term::parse_term(text);
        if READ_FROM_OTP_28_ONLY.contains(text) && common::peers().otp_release() >= 28 {
            assert!(
                matches!(reply, Reply::Ok { .. }),
                "erl from OTP 28 on {text:?}: {reply:?}"
            );
            assert!(ours.is_err(), "{text:?}: {ours:?}");
            continue;
        }
        if REFUSED_FROM_OTP_27.contains(text) && common::peers().otp_release() < 27 {
            assert!(
                matches!(reply, Reply::Ok { .. }),
                "erl before OTP 27 on {text:?}: {reply:?}"
            );
            assert!(
                ours.is_err(),
                "{text:?} is refused from OTP 27 on: {ours:?}"
            );
            continue;
        }
        match reply {
            Reply::Error => {
                assert!(ours.is_err(), "erl rejects {text:?}, we parsed {ours:?}");
                rejected_by_both += 1;
            }
            Reply::Ok { printed, bytes } => {
                let ours = ours.unwrap_or_else(|e| panic!("erl parses {text:?}, we fail: {e}"));
                let decoded = term::decode(bytes).expect("erl's bytes decode");
                assert_eq!(decoded, ours, "decoded {text:?}");
                if !same_but_for_map_order(&ours, printed, bytes) {
                    assert_eq!(&ours.to_string(), printed, "~0p of {text:?}");
                    assert_eq!(
                        &term::encode(&ours).expect("encodable"),
                        bytes,
                        "bytes of {text:?}"
                    );
                }
                // Erlang prints funs with its C printer, whose output need not read back.
                if !printed.contains("fun ") {
                    assert_eq!(
                        term::parse_term(printed).as_ref(),
                        Ok(&ours),
                        "reparse {printed:?}"
                    );
                }
                checked += 1;
            }
        }
    }

    let float_replies = replies
        .get(TEXTS.len()..TEXTS.len() + float_terms.len())
        .expect("floats");
    for (t, reply) in float_terms.iter().zip(float_replies) {
        let Reply::Ok { printed, bytes } = reply else {
            panic!("erl cannot read {t}");
        };
        assert_eq!(&t.to_string(), printed);
        assert_eq!(&term::encode(t).expect("encodable"), bytes, "{t}");
        checked += 1;
    }

    let gen_replies = replies
        .get(TEXTS.len() + float_terms.len()..)
        .expect("generated");
    for (t, reply) in generated.iter().zip(gen_replies) {
        let Reply::Ok { printed, bytes } = reply else {
            panic!("erl cannot decode our encoding of {t:?}");
        };
        let decoded = term::decode(bytes).expect("erl's bytes decode");
        assert_eq!(&decoded, t, "erl's re-encoding of {t:?}");
        // The same term (just checked); from OTP 26 on, its maps' keys may be printed
        // and encoded in another order (see `same_but_for_map_order`).
        let maps_reordered = common::peers().otp_release() >= 26 && t.to_string().contains("#{");
        if !maps_reordered {
            assert_eq!(
                &term::encode(t).expect("encodable"),
                bytes,
                "bytes of {t:?}"
            );
            if !has_opaque(t) {
                assert_eq!(&t.to_string(), printed, "~0p of {t:?}");
            }
        }
        checked += 1;
    }

    let big_replies = replies
        .get(replies.len() - big_maps.len()..)
        .expect("big maps");
    for (m, reply) in big_maps.iter().zip(big_replies) {
        let Reply::Ok { printed, bytes } = reply else {
            panic!("erl cannot decode a big map");
        };
        let decoded = term::decode(bytes).expect("big map decodes");
        assert_eq!(&decoded, m);
        assert_eq!(
            &decoded.to_string(),
            printed,
            "a decoded big map prints in Erlang's order"
        );
        checked += 1;
    }

    assert!(checked > 400, "only {checked} terms compared");
    assert!(
        rejected_by_both > 30,
        "only {rejected_by_both} rejections compared"
    );
}
