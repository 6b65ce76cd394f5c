//! Unit tests of the term codec: hostile input, encoding choices, equality, text.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use num_bigint::BigInt;
use proptest::prelude::*;

use super::decode::tag;
use super::*;

fn enc(t: &Term) -> Vec<u8> {
    encode(t).expect("encodable")
}

fn parse(s: &str) -> Term {
    parse_term(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn hash_of(t: &Term) -> u64 {
    let mut h = DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

fn pid(node: &str, id: u32) -> Pid {
    Pid {
        node: Atom::new(node),
        id,
        serial: 0,
        creation: 1_700_000_000,
    }
}

/// A term using every variant and most tags.
fn kitchen_sink() -> Term {
    Term::tuple(vec![
        Term::atom("ok"),
        Term::atom("日本"),
        Term::Integer(-1),
        Term::Integer(255),
        Term::Integer(1 << 40),
        Term::from(BigInt::from(1u8) << 100),
        Term::Float(-2.5e-3),
        Term::binary(b"bin".to_vec()),
        Term::bit_string(vec![0xff, 0xe0], 11).expect("bits"),
        Term::string("text"),
        Term::list(vec![Term::Integer(-1), Term::Integer(-2)]),
        Term::improper_list(vec![Term::atom("alias")], Term::atom("tail")),
        Term::map(vec![
            (Term::atom("k"), Term::nil()),
            (Term::Integer(1), Term::tuple(vec![])),
        ]),
        Term::from(pid("rabbit@host", 85)),
        Term::from(Port {
            node: Atom::new("rabbit@host"),
            id: 1 << 40,
            creation: 3,
        }),
        Term::from(Reference {
            node: Atom::new("rabbit@host"),
            creation: 3,
            id: vec![1, 2, 3],
        }),
        Term::from(ExternalFun {
            module: Atom::new("lists"),
            function: Atom::new("map"),
            arity: 2,
        }),
        Term::from(InternalFun {
            arity: 1,
            uniq: [7; 16],
            index: 0,
            module: Atom::new("m"),
            old_index: 0,
            old_uniq: 63_326_676,
            pid: pid("a@b", 9),
            free_vars: vec![Term::atom("x"), Term::Integer(300)],
        }),
    ])
}

#[test]
fn term_is_at_most_32_bytes() {
    assert!(
        std::mem::size_of::<Term>() <= 32,
        "{}",
        std::mem::size_of::<Term>()
    );
}

#[test]
fn kitchen_sink_round_trips() {
    let t = kitchen_sink();
    let bytes = enc(&t);
    assert_eq!(decode(&bytes), Ok(t.clone()));
    assert_eq!(enc(&decode(&bytes).expect("decodes")), bytes);
}

#[test]
fn every_truncation_is_unexpected_end() {
    let bytes = enc(&kitchen_sink());
    for n in 0..bytes.len() {
        assert_eq!(
            decode(bytes.get(..n).expect("prefix")),
            Err(DecodeError::UnexpectedEnd),
            "prefix of {n} bytes"
        );
    }
}

#[test]
fn trailing_bytes_and_prefix() {
    let mut bytes = enc(&Term::atom("a"));
    let one = bytes.len();
    bytes.extend_from_slice(&enc(&Term::Integer(7)));
    assert_eq!(decode(&bytes), Err(DecodeError::TrailingBytes(3)));
    let (t, used) = decode_prefix(&bytes, &DecodeLimits::default()).expect("prefix");
    assert_eq!((t, used), (Term::atom("a"), one));
    let (t, _) =
        decode_prefix(bytes.get(one..).expect("rest"), &DecodeLimits::default()).expect("second");
    assert_eq!(t, Term::Integer(7));
    assert_eq!(decode(&[130, 106]), Err(DecodeError::BadVersion(130)));
    assert_eq!(decode(&[]), Err(DecodeError::UnexpectedEnd));
}

#[test]
fn giant_counts_do_not_allocate() {
    let huge = u32::MAX.to_be_bytes();
    for t in [
        tag::LIST,
        tag::LARGE_TUPLE,
        tag::MAP,
        tag::BINARY,
        tag::LARGE_BIG,
    ] {
        let mut b = vec![131, t];
        b.extend_from_slice(&huge);
        b.extend_from_slice(&[106; 16]);
        assert_eq!(decode(&b), Err(DecodeError::UnexpectedEnd), "tag {t}");
    }
    // BIT_BINARY, NEW_FUN free variables.
    let mut b = vec![131, tag::BIT_BINARY];
    b.extend_from_slice(&huge);
    b.push(3);
    assert_eq!(decode(&b), Err(DecodeError::UnexpectedEnd));
    // STRING_EXT of 65535 claimed bytes, 3 present.
    assert_eq!(
        decode(&[131, 107, 255, 255, 1, 2, 3]),
        Err(DecodeError::UnexpectedEnd)
    );
}

#[test]
fn allocation_budget_is_enforced() {
    // 1000 `[]`s: 32 KB of Terms from ~1 KB of input.
    let t = Term::list(vec![Term::nil(); 1000]);
    let bytes = enc(&t);
    let tight = DecodeLimits {
        max_alloc: Some(10_000),
        ..DecodeLimits::default()
    };
    assert!(matches!(
        decode_prefix(&bytes, &tight),
        Err(DecodeError::TooLarge { .. })
    ));
    // The default budget admits it: it is what OTP would send.
    assert_eq!(decode(&bytes), Ok(t));
    // A binary bigger than the budget.
    let bin = enc(&Term::binary(vec![0; 5000]));
    let tiny = DecodeLimits {
        max_alloc: Some(4000),
        ..DecodeLimits::default()
    };
    assert!(matches!(
        decode_prefix(&bin, &tiny),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn worst_case_legitimate_terms_fit_the_default_budget() {
    // The densest terms OTP sends that the default budget (16 bytes per input byte plus
    // 64 KiB) accepts whatever their size.
    let n = 100_000;
    for t in [
        // Integers of 2 bytes each: exactly 16 bytes of Term per byte.
        Term::list((0..n).map(|i| Term::Integer(i as i64 % 256)).collect()),
        Term::tuple(vec![Term::Integer(7); n]),
        // A string longer than STRING_EXT allows: LIST_EXT of SMALL_INTEGER_EXT.
        Term::ByteList(vec![7; n]),
        Term::map(
            (0..n / 2)
                .map(|i| (Term::Integer(i as i64), Term::nil()))
                .collect(),
        ),
        // Repeated atoms share one allocation.
        Term::list(vec![Term::atom(""); n]),
        Term::list(
            (0..n)
                .map(|i| Term::atom(format!("a{}", i % 1000)))
                .collect(),
        ),
        // Up to ~4,000 `[]`s the 64 KiB allowance pays for their 32-byte slots.
        Term::list(vec![Term::nil(); 4000]),
    ] {
        assert_eq!(decode(&enc(&t)), Ok(t));
    }
}

#[test]
fn what_the_default_budget_refuses() {
    // Terms of 1-byte elements: 32 bytes of Term per input byte, more than the 16 a
    // peer may make us hold. Accepted with a larger budget.
    let generous = DecodeLimits {
        max_alloc: Some(64 << 20),
        ..DecodeLimits::default()
    };
    for t in [
        Term::list(vec![Term::nil(); 10_000]),
        Term::tuple(vec![Term::nil(); 10_000]),
        // One-character atoms, cycling past the decoder's 8-atom cache: 3 bytes for a
        // 32-byte slot and a 24-byte atom.
        Term::list(
            (0..30_000)
                .map(|i| Term::atom(((b'a' + (i % 26) as u8) as char).to_string().as_str()))
                .collect(),
        ),
    ] {
        let bytes = enc(&t);
        assert!(
            matches!(decode(&bytes), Err(DecodeError::TooLarge { .. })),
            "{} bytes",
            bytes.len()
        );
        assert_eq!(decode_prefix(&bytes, &generous), Ok((t, bytes.len())));
    }
}

/// Regression (fuzz target `term_decode`, memory rule, found by libFuzzer in 44 s):
/// nested 104-element tuples (`h` is both the tag and the arity) share the bytes left
/// for their elements, so each level took another 3,328 bytes until the budget ran out.
/// 179 bytes held 69,120, within the old budget (32 × 179 + 64 KiB = 71,264) but above
/// the rule (16 × 179 + 64 KiB = 68,400), which is now the default budget.
#[test]
fn regression_nested_tuples_stay_within_the_rule() {
    let bytes: [u8; 179] = [
        131, 104, 4, 98, 131, 110, 104, 4, 98, 131, 110, 104, 4, 98, 104, 104, 104, 104, 104, 104,
        104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 38,
        104, 104, 104, 104, 104, 104, 104, 104, 104, 38, 104, 104, 104, 104, 104, 104, 104, 104,
        104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104,
        104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104,
        104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104,
        104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104,
        104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104, 104,
        104, 104, 94, 104, 104, 104, 104, 104, 131, 110, 195, 98, 96, 97, 110, 100, 131, 115, 10,
        98, 120, 191, 74, 93, 106, 255, 255, 255, 98, 37, 70, 70, 70,
    ];
    assert_eq!(
        DecodeLimits::default().budget_for(bytes.len()),
        16 * 179 + 65_536
    );
    assert!(matches!(
        decode(&bytes),
        Err(DecodeError::TooLarge { budget, .. }) if budget < 3328
    ));
    for n in [0, 1, 1000, 1 << 20] {
        assert_eq!(DecodeLimits::default().budget_for(n), 16 * n + 64 * 1024);
    }
}

/// Regression (fuzz target `term_decode`, memory rule): 5,000 `[]`s in 5,007 bytes took
/// 160,000 bytes of Terms, above `16 × 5,007 + 64 KiB`, under the old 32-per-byte budget.
#[test]
fn regression_list_of_nils_breaks_the_memory_rule() {
    let mut bytes = vec![131, 108, 0, 0, 0x13, 0x88];
    bytes.extend([106; 5001]);
    assert!(matches!(decode(&bytes), Err(DecodeError::TooLarge { .. })));
}

/// Regression (fuzz target `term_decode`, memory rule): a list whose tail is a list was
/// appended with `Vec::extend`, which doubled the vector: 3,000 `[]`s with the tail `[[]]`
/// held 192 KB of Terms for 3,013 bytes, charged as 96 KB. The merged vector is now
/// charged (and allocated exactly), which puts this input over the default budget.
#[test]
fn regression_list_tail_is_charged() {
    let mut bytes = vec![131, 108, 0, 0, 0x0b, 0xb8];
    bytes.extend([106; 3000]);
    bytes.extend([108, 0, 0, 0, 1, 106, 106]);
    assert!(matches!(decode(&bytes), Err(DecodeError::TooLarge { .. })));
    let t = Term::list(vec![Term::nil(); 3001]);
    // The merge is charged: 3,000 + 1 slots, then 3,001 more for the merged vector.
    let just_the_elements = DecodeLimits {
        max_alloc: Some(32 * (1 + 3000 + 1 + 1)),
        ..DecodeLimits::default()
    };
    assert!(matches!(
        decode_prefix(&bytes, &just_the_elements),
        Err(DecodeError::TooLarge { .. })
    ));
    let with_the_merge = DecodeLimits {
        max_alloc: Some(32 * (1 + 3000 + 1 + 1 + 3001)),
        ..DecodeLimits::default()
    };
    assert_eq!(decode_prefix(&bytes, &with_the_merge), Ok((t, bytes.len())));
}

/// Regression (fuzz target `term_decode`, memory rule): an atom's `Arc<str>` is padded
/// to 8 bytes, which the budget did not charge: 9,000 one-character atoms cycling past
/// the atom cache (27,006 bytes) held 504 KB, above `16 × 27,006 + 64 KiB`.
#[test]
fn regression_atoms_are_charged_with_their_padding() {
    let mut bytes = vec![131, 108, 0, 0, 0x23, 0x28];
    for i in 0..9000u32 {
        bytes.extend([119, 1, b'a' + (i % 26) as u8]);
    }
    bytes.push(106);
    assert!(matches!(decode(&bytes), Err(DecodeError::TooLarge { .. })));
    // One atom: a 32-byte slot for the list element, a 24-byte Arc (16 + 1, padded).
    let one = [131, 108, 0, 0, 0, 1, 119, 1, b'a', 106];
    let exact = |max| DecodeLimits {
        max_alloc: Some(max),
        ..DecodeLimits::default()
    };
    assert!(decode_prefix(&one, &exact(32 + 32 + 24)).is_ok());
    assert!(decode_prefix(&one, &exact(32 + 32 + 23)).is_err());
}

fn nested(depth: usize) -> Term {
    let mut t = Term::atom("leaf");
    for i in 0..depth {
        t = match i % 4 {
            0 => Term::list(vec![t]),
            1 => Term::tuple(vec![Term::Integer(1), t]),
            2 => Term::map(vec![(Term::atom("k"), t)]),
            _ => Term::improper_list(vec![t], Term::atom("tail")),
        };
    }
    t
}

#[test]
fn depth_limit() {
    let max = DecodeLimits::DEFAULT_MAX_DEPTH;
    assert!(decode(&enc(&nested(max))).is_ok());
    assert_eq!(
        decode(&enc(&nested(max + 1))),
        Err(DecodeError::TooDeep { max })
    );
    // A deeper chain of 10 000 one-element lists is refused, not overflowed.
    let mut deep = vec![131];
    for _ in 0..10_000 {
        deep.extend_from_slice(&[108, 0, 0, 0, 1]);
    }
    deep.extend_from_slice(&[106; 10_001]);
    assert_eq!(decode(&deep), Err(DecodeError::TooDeep { max }));
}

#[test]
fn maximum_depth_is_safe_on_a_small_stack() {
    // Half of a tokio worker's 2 MiB stack, in a debug build.
    let worker = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(|| {
            let bytes = enc(&nested(DecodeLimits::DEFAULT_MAX_DEPTH));
            let t = decode(&bytes).expect("decodes");
            let copy = t.clone();
            assert_eq!(t, copy);
            assert_eq!(hash_of(&t), hash_of(&copy));
            assert_eq!(enc(&t), bytes);
            let text = t.to_string();
            assert_eq!(parse(&text), t);
            drop(t);
            drop(copy);
        })
        .expect("spawn");
    worker.join().expect("no stack overflow");
}

#[test]
fn bad_atoms() {
    // Invalid UTF-8, a lone surrogate, an overlong encoding.
    for body in [&[0xc0, 0x80][..], &[0xed, 0xa0, 0x80], &[0xff]] {
        let mut b = vec![131, tag::SMALL_ATOM_UTF8, body.len() as u8];
        b.extend_from_slice(body);
        assert_eq!(decode(&b), Err(DecodeError::InvalidUtf8));
    }
    // 256 Latin-1 characters.
    let mut b = vec![131, tag::ATOM, 1, 0];
    b.extend_from_slice(&[b'a'; 256]);
    assert!(matches!(decode(&b), Err(DecodeError::InvalidAtom(_))));
    // 256 UTF-8 characters; 255 four-byte characters are fine.
    let mut b = vec![131, tag::ATOM_UTF8, 1, 0];
    b.extend_from_slice(&[b'a'; 256]);
    assert!(matches!(decode(&b), Err(DecodeError::InvalidAtom(_))));
    let long = "😀".repeat(255);
    let mut b = vec![131, tag::ATOM_UTF8, 3, 252];
    b.extend_from_slice(long.as_bytes());
    assert_eq!(decode(&b), Ok(Term::atom(long.as_str())));
    assert_eq!(enc(&Term::atom(long.as_str())), b);
    assert!(matches!(
        encode(&Term::atom("a".repeat(256))),
        Err(EncodeError::AtomTooLong { chars: 256 })
    ));
    // A pid whose node is not an atom.
    let b = [131, 88, 106, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    assert!(matches!(decode(&b), Err(DecodeError::Invalid { .. })));
}

#[test]
fn latin1_atoms_are_converted() {
    // ATOM_EXT 'ä' (Latin-1 228) as OTP 25's term_to_binary/1 writes it.
    assert_eq!(decode(&[131, 100, 0, 1, 228]), Ok(Term::atom("ä")));
    assert_eq!(decode(&[131, 115, 1, 228]), Ok(Term::atom("ä")));
    assert_eq!(enc(&Term::atom("ä")), [131, 119, 2, 0xc3, 0xa4]);
}

#[test]
fn refused_tags() {
    for t in [68, 69, 80, 82, 117, 121] {
        assert!(
            matches!(decode(&[131, t, 0, 0, 0, 0]), Err(DecodeError::Unsupported { tag, .. }) if tag == t),
            "tag {t}"
        );
    }
    for t in [0, 1, 71, 96, 122, 255] {
        assert_eq!(decode(&[131, t]), Err(DecodeError::UnknownTag(t)));
    }
}

#[test]
fn floats() {
    for bits in [
        f64::NAN.to_bits(),
        f64::INFINITY.to_bits(),
        f64::NEG_INFINITY.to_bits(),
    ] {
        let mut b = vec![131, tag::NEW_FLOAT];
        b.extend_from_slice(&bits.to_be_bytes());
        assert_eq!(decode(&b), Err(DecodeError::InvalidFloat));
    }
    assert!(encode(&Term::Float(f64::NAN)).is_err());
    // FLOAT_EXT, the pre-R11 text form.
    let mut b = vec![131, tag::FLOAT];
    let text = b"1.50000000000000000000e+00";
    b.extend_from_slice(text);
    b.resize(2 + 31, 0);
    assert_eq!(decode(&b), Ok(Term::Float(1.5)));
    let mut b = vec![131, tag::FLOAT];
    b.extend_from_slice(b"1.5 junk");
    b.resize(2 + 31, 0);
    assert_eq!(decode(&b), Err(DecodeError::InvalidFloat));
    // Equality: 1 =/= 1.0, 0.0 =:= -0.0 (OTP 25).
    assert_ne!(Term::Integer(1), Term::Float(1.0));
    assert_eq!(Term::Float(0.0), Term::Float(-0.0));
    assert_eq!(hash_of(&Term::Float(0.0)), hash_of(&Term::Float(-0.0)));
}

#[test]
fn float_text_matches_otp() {
    for (f, s) in [
        (0.1, "0.1"),
        (1.0, "1.0"),
        (1.0e10, "1.0e10"),
        (1.5e-7, "1.5e-7"),
        (123456789012.0, "123456789012.0"),
        (1.0e100, "1.0e100"),
        (-0.0, "-0.0"),
        (0.0, "0.0"),
        (100.0, "100.0"),
        (1000.0, "1.0e3"),
        (0.0001, "0.0001"),
        (1.0e-5, "1.0e-5"),
        (12345.678, "12345.678"),
        (12345600.0, "1.23456e7"),
        (9007199254740992.0, "9.007199254740992e15"),
        (123456789012345680.0, "1.2345678901234568e17"),
        (5.0e-324, "5.0e-324"),
        (1.7976931348623157e308, "1.7976931348623157e308"),
        (0.0025, "0.0025"),
        (1.234e-4, "1.234e-4"),
        (0.01234, "0.01234"),
    ] {
        assert_eq!(Term::Float(f).to_string(), s, "{f:e}");
    }
    assert_eq!(Term::Float(f64::NAN).to_string(), "NaN");
    assert_eq!(Term::Float(f64::NEG_INFINITY).to_string(), "-inf");
}

#[test]
fn duplicate_map_keys_are_refused() {
    // #{a => 1, a => 2}, which binary_to_term/1 refuses too.
    let b = [131, 116, 0, 0, 0, 2, 119, 1, 97, 97, 1, 119, 1, 97, 97, 2];
    assert_eq!(decode(&b), Err(DecodeError::DuplicateMapKey));
    // A large map whose duplicate keys differ only in representation: "ab" and [97, 98].
    let mut pairs: Vec<(Term, Term)> = (0..20).map(|i| (Term::Integer(i), Term::nil())).collect();
    pairs.push((Term::string("ab"), Term::nil()));
    pairs.push((Term::list(vec![97.into(), 98.into()]), Term::nil()));
    let b = enc(&Term::map(pairs));
    assert_eq!(decode(&b), Err(DecodeError::DuplicateMapKey));
    // 1 and 1.0 are different keys.
    let t = Term::map(vec![(1.into(), Term::nil()), (1.0.into(), Term::nil())]);
    assert_eq!(decode(&enc(&t)), Ok(t));
}

#[test]
fn lists_encode_like_otp() {
    // [-1, -2] is not a string: LIST_EXT of INTEGER_EXT, as term_to_binary/1 does.
    assert_eq!(
        enc(&parse("[-1,-2]")),
        [
            131, 108, 0, 0, 0, 2, 98, 255, 255, 255, 255, 98, 255, 255, 255, 254, 106
        ]
    );
    assert_eq!(
        enc(&Term::list(vec![1.into(), 2.into()])),
        [131, 107, 0, 2, 1, 2]
    );
    assert_eq!(enc(&Term::list(vec![256.into()]))[1], tag::LIST);
    assert_eq!(enc(&Term::nil()), [131, 106]);
    assert_eq!(enc(&Term::ByteList(vec![])), [131, 106]);
    // [1 | [2 | c]] is written flat.
    assert_eq!(
        enc(&Term::ImproperList {
            elements: vec![Term::Integer(1)].into_boxed_slice(),
            tail: Box::new(Term::ImproperList {
                elements: vec![Term::Integer(2)].into_boxed_slice(),
                tail: Box::new(Term::atom("c")),
            }),
        }),
        [131, 108, 0, 0, 0, 2, 97, 1, 97, 2, 119, 1, b'c']
    );
    // A byte list too long for STRING_EXT.
    let long = Term::ByteList(vec![7; 70_000]);
    let b = enc(&long);
    assert_eq!(b.get(1), Some(&tag::LIST));
    assert_eq!(b.len(), 1 + 5 + 2 * 70_000 + 1);
    assert_eq!(decode(&b), Ok(long));
    // A proper LIST_EXT of small integers stays a list, equal to the string.
    let b = [131, 108, 0, 0, 0, 2, 97, 104, 97, 105, 106];
    let t = decode(&b).expect("decodes");
    assert!(matches!(t, Term::List(_)));
    assert_eq!(t, Term::string("hi"));
    // LIST_EXT with no elements is its tail.
    assert_eq!(
        decode(&[131, 108, 0, 0, 0, 0, 119, 1, b'a']),
        Ok(Term::atom("a"))
    );
}

#[test]
fn integers_encode_like_otp() {
    let cases: [(Term, &[u8]); 8] = [
        (Term::Integer(0), &[97, 0]),
        (Term::Integer(255), &[97, 255]),
        (Term::Integer(256), &[98, 0, 0, 1, 0]),
        (Term::Integer(-1), &[98, 255, 255, 255, 255]),
        (
            Term::Integer(i64::from(i32::MAX) + 1),
            &[110, 4, 0, 0, 0, 0, 128],
        ),
        (
            Term::Integer(i64::from(i32::MIN) - 1),
            &[110, 4, 1, 1, 0, 0, 128],
        ),
        (
            Term::Integer(i64::MIN),
            &[110, 8, 1, 0, 0, 0, 0, 0, 0, 0, 128],
        ),
        (Term::BigInteger(Box::new(BigInt::from(5))), &[97, 5]),
    ];
    for (t, body) in cases {
        let b = enc(&t);
        assert_eq!(b.get(1..), Some(body), "{t}");
        assert_eq!(decode(&b), Ok(t));
    }
    let big = Term::from(BigInt::from(1u8) << 2100);
    let b = enc(&big);
    assert_eq!(b.get(1..6), Some(&[111, 0, 0, 1, 7][..]));
    assert_eq!(decode(&b), Ok(big));
    // SMALL_BIG forms that fit i64 decode to Integer, whatever their padding.
    assert_eq!(decode(&[131, 110, 3, 0, 1, 0, 0]), Ok(Term::Integer(1)));
    assert_eq!(decode(&[131, 110, 0, 1]), Ok(Term::Integer(0)));
    assert!(matches!(
        decode(&[131, 110, 8, 0, 0, 0, 0, 0, 0, 0, 0, 128]),
        Ok(Term::BigInteger(_))
    ));
    assert_eq!(
        Term::Integer(5),
        Term::BigInteger(Box::new(BigInt::from(5)))
    );
}

#[test]
fn bit_strings() {
    // Unused bits are cleared, bits = 8 is a binary, bits = 0 only for empty.
    assert_eq!(
        decode(&[131, 77, 0, 0, 0, 1, 3, 255]),
        Ok(Term::BitBinary {
            bytes: vec![0xe0],
            bits: 3
        })
    );
    assert_eq!(
        decode(&[131, 77, 0, 0, 0, 1, 8, 1]),
        Ok(Term::binary(vec![1]))
    );
    assert_eq!(decode(&[131, 77, 0, 0, 0, 0, 0]), Ok(Term::binary(vec![])));
    for bad in [[131, 77, 0, 0, 0, 1, 0, 1], [131, 77, 0, 0, 0, 1, 9, 1]] {
        assert!(matches!(decode(&bad), Err(DecodeError::Invalid { .. })));
    }
    assert!(matches!(
        decode(&[131, 77, 0, 0, 0, 0, 3]),
        Err(DecodeError::Invalid { .. })
    ));
    assert!(
        encode(&Term::BitBinary {
            bytes: vec![],
            bits: 3
        })
        .is_err()
    );
    assert_eq!(parse("<<1:3>>").to_string(), "<<1:3>>");
    assert_eq!(parse("<<\"ab\",1:3>>").to_string(), "<<97,98,1:3>>");
}

#[test]
fn old_and_new_identifier_tags() {
    let node = [115, 3, b'a', b'@', b'b'];
    let with = |head: &[u8], tail: &[u8]| [&[131][..], head, &node, tail].concat();
    // PID_EXT (creation as one byte) equals the NEW_PID_EXT.
    let old = decode(&with(&[103], &[0, 0, 0, 85, 0, 0, 0, 0, 2])).expect("pid");
    let new = decode(&with(&[88], &[0, 0, 0, 85, 0, 0, 0, 0, 0, 0, 0, 2])).expect("pid");
    assert_eq!(old, new);
    assert_eq!(new.to_string(), "<a@b.85.0>");
    // PORT_EXT, NEW_PORT_EXT, V4_PORT_EXT.
    let p1 = decode(&with(&[102], &[0, 0, 0, 5, 2])).expect("port");
    let p2 = decode(&with(&[89], &[0, 0, 0, 5, 0, 0, 0, 2])).expect("port");
    let p3 = decode(&with(&[120], &[0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 2])).expect("port");
    assert!(p1 == p2 && p2 == p3);
    assert_eq!(
        enc(&p3),
        with(&[89], &[0, 0, 0, 5, 0, 0, 0, 2])
            .iter()
            .map(|&b| if b == 115 { 119 } else { b })
            .collect::<Vec<_>>()
    );
    // REFERENCE_EXT, NEW_REFERENCE_EXT, NEWER_REFERENCE_EXT.
    let r1 = decode(&with(&[101], &[0, 0, 0, 7, 2])).expect("ref");
    let r2 = decode(&[&[131, 114, 0, 1][..], &node, &[2, 0, 0, 0, 7]].concat()).expect("ref");
    let r3 =
        decode(&[&[131, 90, 0, 1][..], &node, &[0, 0, 0, 2, 0, 0, 0, 7]].concat()).expect("ref");
    assert!(r1 == r2 && r2 == r3);
    let six = [&[131, 90, 0, 6][..], &node, &[0; 28]].concat();
    assert!(matches!(decode(&six), Err(DecodeError::Invalid { .. })));
    let r = Reference {
        node: Atom::new("a@b"),
        creation: 1,
        id: vec![3, 2, 1],
    };
    assert_eq!(Term::from(r).to_string(), "#Ref<a@b.1.2.3>");
}

#[test]
fn funs_from_otp() {
    // term_to_binary(fun lists:map/2) and a local fun, from OTP 25.
    let export = [
        131, 113, 100, 0, 5, 108, 105, 115, 116, 115, 100, 0, 3, 109, 97, 112, 97, 2,
    ];
    let t = decode(&export).expect("export");
    assert_eq!(t.to_string(), "fun lists:map/2");
    let local = [
        131, 112, 0, 0, 0, 69, 1, 120, 201, 58, 154, 239, 240, 185, 255, 113, 94, 143, 48, 224, 62,
        69, 64, 0, 0, 0, 0, 0, 0, 0, 0, 100, 0, 1, 103, 97, 0, 98, 3, 198, 73, 212, 88, 100, 0, 13,
        110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111, 115, 116, 0, 0, 0, 9, 0, 0, 0, 0, 0,
        0, 0, 0,
    ];
    let t = decode(&local).expect("fun");
    assert_eq!(t.to_string(), "#Fun<g.0.63326676>");
    assert_eq!(decode(&enc(&t)), Ok(t));
    // A wrong size field is refused.
    let mut bad = local;
    bad[5] = 70;
    assert!(matches!(decode(&bad), Err(DecodeError::Invalid { .. })));
}

#[test]
fn equality_is_exact_erlang_equality() {
    let s = Term::string("ab");
    let l = Term::list(vec![97.into(), 98.into()]);
    assert_eq!(s, l);
    assert_eq!(hash_of(&s), hash_of(&l));
    assert_eq!(Term::ByteList(vec![]), Term::nil());
    let split = Term::ImproperList {
        elements: vec![Term::Integer(97)].into_boxed_slice(),
        tail: Box::new(Term::ByteList(b"b".to_vec())),
    };
    assert_eq!(split, s);
    assert_eq!(hash_of(&split), hash_of(&s));
    assert_ne!(
        Term::improper_list(vec![1.into()], Term::atom("b")),
        Term::list(vec![1.into()])
    );
    let m1 = parse("#{a => 1, b => [2]}");
    let m2 = Term::map(vec![
        (Term::atom("b"), Term::list(vec![2.into()])),
        (Term::atom("a"), 1.into()),
    ]);
    assert_eq!(m1, m2);
    assert_eq!(hash_of(&m1), hash_of(&m2));
    assert_ne!(m1, parse("#{a => 1, b => [2.0]}"));
    assert_ne!(Term::tuple(vec![]), Term::nil());
    assert_ne!(Term::binary(vec![]), Term::nil());
}

#[test]
fn constructors_and_accessors() {
    let t = parse("{ok, <<\"v\">>, \"3.10.8\", [1,2], true}");
    let f = t.as_tuple().expect("tuple");
    assert!(f[0].is_atom("ok"));
    assert_eq!(f[0].as_atom().map(Atom::as_str), Some("ok"));
    assert_eq!(f[1].as_binary(), Some(&b"v"[..]));
    assert_eq!(f[2].as_text().as_deref(), Some("3.10.8"));
    assert_eq!(
        f[3].clone().into_list_elements(),
        Some(vec![1.into(), 2.into()])
    );
    assert_eq!(f[2].clone().into_list_elements().map(|v| v.len()), Some(6));
    assert_eq!(f[4].as_bool(), Some(true));
    assert_eq!(Term::from(true), Term::atom("true"));
    assert_eq!(Term::from(u64::MAX).as_integer(), None);
    assert_eq!(
        Term::from(u64::MAX).to_big_integer(),
        Some(BigInt::from(u64::MAX))
    );
    assert_eq!(Term::string("日本").as_text().as_deref(), Some("日本"));
    assert!(Term::nil().is_nil());
    let m = parse("#{k => v}");
    assert_eq!(m.map_get(&Term::atom("k")), Some(&Term::atom("v")));
    assert_eq!(Atom::new("x"), "x");
    assert_eq!(format!("{:?}", Term::atom("EXIT")), "Atom('EXIT')");
}

#[test]
fn display_matches_otp_examples() {
    for (text, shown) in [
        (
            "[{a,b},#{b=>1,a=>[1,2|c]}]",
            "[{a,b},#{a => [1,2|c],b => 1}]",
        ),
        ("<<1:3>>", "<<1:3>>"),
        ("<<\"ab\",1:3>>", "<<97,98,1:3>>"),
        ("[1000]", "[1000]"),
        ("'hello world'", "'hello world'"),
        ("'and'", "'and'"),
        ("'Abc'", "'Abc'"),
        ("[]", "[]"),
        ("<<>>", "<<>>"),
        ("\"a\\\"b\\\\c\\n\"", "\"a\\\"b\\\\c\\n\""),
        ("[97,34,127]", "[97,34,127]"),
        ("{}", "{}"),
        ("#{}", "#{}"),
        ("[a|b]", "[a|b]"),
        ("<<200,1>>", "<<200,1>>"),
        ("fun lists:map/2", "fun lists:map/2"),
        ("fun ok:'and'/0", "fun ok:and/0"),
        ("fun 'a@b':'C'/0", "fun 'a@b':'C'/0"),
        ("'maybe'", "'maybe'"),
        ("'else'", "'else'"),
        ("[97,98|99]", "[97,98|99]"),
        ("''", "''"),
        ("'\\x{65E5}\\x{672C}'", "'\\x{65E5}\\x{672C}'"),
        ("'a\\tb'", "'a\\tb'"),
        ("'\\200'", "'\\200'"),
        ("\"\\x{100}\"", "[256]"),
        ("-12345678901234567890123", "-12345678901234567890123"),
        (
            "#{1.0 => a, 1 => b, 2 => c, 0.5 => d}",
            "#{1 => b,2 => c,0.5 => d,1.0 => a}",
        ),
    ] {
        assert_eq!(parse(text).to_string(), shown, "{text}");
    }
}

#[test]
fn parse_accepts_erlang_literals() {
    for (text, expect) in [
        ("16#FF", Term::Integer(255)),
        ("-16#ff", Term::Integer(-255)),
        ("2#1010", Term::Integer(10)),
        ("36#zz", Term::Integer(1295)),
        ("1_000", Term::Integer(1000)),
        ("16#ff_ff", Term::Integer(65535)),
        ("$a", Term::Integer(97)),
        ("$\\n", Term::Integer(10)),
        ("$\\^A", Term::Integer(1)),
        ("$\\x{41}", Term::Integer(65)),
        ("$\\101", Term::Integer(65)),
        ("$ ", Term::Integer(32)),
        ("-$a", Term::Integer(-97)),
        ("- 1", Term::Integer(-1)),
        ("+1", Term::Integer(1)),
        ("-(1)", Term::Integer(-1)),
        ("1.5", Term::Float(1.5)),
        ("-2.0e-3", Term::Float(-2.0e-3)),
        ("1.5E3", Term::Float(1500.0)),
        ("1_0.5_1e1_0", Term::Float(1.051e11)),
        ("1.0e-400", Term::Float(0.0)),
        ("\"ab\" \"cd\"", Term::string("abcd")),
        ("[$a|\"bc\"]", Term::string("abc")),
        ("<<\"ab\" \"cd\">>", Term::binary(b"abcd".to_vec())),
        ("<<1,2,3>>", Term::binary(vec![1, 2, 3])),
        ("<<\"a\", 1, \"b\">>", Term::binary(b"a\x01b".to_vec())),
        ("<<-1>>", Term::binary(vec![255])),
        ("<<256>>", Term::binary(vec![0])),
        ("<<1:16/little>>", Term::binary(vec![1, 0])),
        (
            "<<1:12/little>>",
            Term::bit_string(vec![1, 0], 12).expect("bits"),
        ),
        (
            "<<-1:12/little>>",
            Term::bit_string(vec![255, 0xf0], 12).expect("bits"),
        ),
        ("<<1:8/unit:3>>", Term::binary(vec![0, 0, 1])),
        ("<<\"ab\":4>>", Term::binary(vec![0x12])),
        (
            "<<1.5/float>>",
            Term::binary(vec![63, 248, 0, 0, 0, 0, 0, 0]),
        ),
        ("<<1.5:32/float>>", Term::binary(vec![63, 192, 0, 0])),
        ("<<\"é\"/utf8>>", Term::binary("é".as_bytes().to_vec())),
        ("<<\"abc\"/utf16>>", Term::binary(vec![0, 97, 0, 98, 0, 99])),
        ("<<16#10000/utf16>>", Term::binary(vec![216, 0, 220, 0])),
        ("<<$a/utf32-little>>", Term::binary(vec![97, 0, 0, 0])),
        ("<<<<1,2>>:1/binary>>", Term::binary(vec![1])),
        (
            "<<<<1:3>>/bits>>",
            Term::bit_string(vec![0x20], 3).expect("bits"),
        ),
        ("<<1:1,0:7>>", Term::binary(vec![128])),
        ("<<1:0>>", Term::binary(vec![])),
        ("<<(1)>>", Term::binary(vec![1])),
        ("'ab\\'c'", Term::atom("ab'c")),
        ("'\\z'", Term::atom("z")),
        ("é", Term::atom("é")),
        ("ä@b", Term::atom("ä@b")),
        ("'\\x{1F600}'", Term::atom("😀")),
        ("\"\\777\"", Term::list(vec![511.into()])),
        (
            "\"\\^@\\^?\\^z\"",
            Term::list(vec![0.into(), 127.into(), 26.into()]),
        ),
        ("# {a=>1}", Term::map(vec![(Term::atom("a"), 1.into())])),
        ("#{a=>1,a=>2}", Term::map(vec![(Term::atom("a"), 2.into())])),
        ("[1|[2]]", Term::list(vec![1.into(), 2.into()])),
        ("(a)", Term::atom("a")),
        (
            "fun 'a b':c/0",
            Term::from(ExternalFun {
                module: Atom::new("a b"),
                function: Atom::new("c"),
                arity: 0,
            }),
        ),
        ("% comment\n  ok . % trailing", Term::atom("ok")),
    ] {
        assert_eq!(parse(text), expect, "{text}");
    }
    // Maps come out sorted by key, as Erlang stores them.
    let m = parse("#{b => 1, a => 2, 1.0 => x, 1 => y}");
    let keys: Vec<String> = m
        .as_map()
        .expect("map")
        .iter()
        .map(|(k, _)| k.to_string())
        .collect();
    assert_eq!(keys, ["1", "1.0", "a", "b"]);
    assert_eq!(
        "{a}".parse::<Term>(),
        Ok(Term::tuple(vec![Term::atom("a")]))
    );
}

#[test]
fn parse_rejects_what_erlang_rejects() {
    for text in [
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
        "1#1",
        "16#",
        "1_",
        "1__0",
        "[a,]",
        "{a,}",
        "#{a=>1,}",
        "#{a:=1}",
        "3.0..",
        "<<\"abc\"/binary>>",
        "<<1:8/utf8>>",
        "<<1/integer-float>>",
        "<<1/foo>>",
        "<<1:-1>>",
        "<<1.5:8/float>>",
        "<<1/unit:8>>",
        "<<1:1/binary>>",
        "<<<<1,2>>:3/binary>>",
        "<<<<1:3>>/binary>>",
        "<<1/little-big>>",
        "",
        "[1, 2",
        "{a b}",
        "a.b",
        "<0.1.0>",
    ] {
        assert!(
            parse_term(text).is_err(),
            "{text} parsed as {:?}",
            parse_term(text)
        );
    }
    let e = parse_term("{ok,\n  [1, X]}").expect_err("variable");
    assert_eq!((e.line, e.column), (2, 7));
    assert_eq!(e.kind, ParseErrorKind::Variable("X".into()));
    assert_eq!(e.to_string(), "line 2, column 7: variable X is not a term");
    let e = parse_term("[1, 2").expect_err("unterminated");
    assert_eq!(
        (e.line, e.column, e.kind),
        (1, 6, ParseErrorKind::UnexpectedEnd)
    );
    let deep = "[".repeat(300) + &"]".repeat(300);
    assert_eq!(
        parse_term(&deep).map_err(|e| e.kind),
        Err(ParseErrorKind::TooDeep)
    );
}

pub(crate) fn arb_atom() -> impl Strategy<Value = Atom> {
    prop_oneof![
        prop::sample::select(vec![
            "ok",
            "error",
            "",
            "EXIT",
            "hello world",
            "and",
            "a@b",
            "rabbit@host",
            "é",
            "日本",
            "'",
            "\\",
            "a\nb",
            "\u{7f}",
            "\u{85}",
            "maybe",
            "_x",
            "Ç",
            "ß",
            "😀",
        ])
        .prop_map(Atom::new),
        "[a-z][a-zA-Z0-9_@]{0,8}".prop_map(|s| Atom::new(&s)),
        any::<String>()
            .prop_filter("at most 255 chars", |s| s.chars().count() <= 255)
            .prop_map(Atom::from),
    ]
}

fn arb_leaf() -> impl Strategy<Value = Term> {
    prop_oneof![
        arb_atom().prop_map(Term::Atom),
        any::<i64>().prop_map(Term::Integer),
        (0i64..300).prop_map(Term::Integer),
        (any::<bool>(), prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(neg, b)| Term::from(
            BigInt::from_bytes_le(
                if neg {
                    num_bigint::Sign::Minus
                } else {
                    num_bigint::Sign::Plus
                },
                &b
            )
        )),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Term::Float),
        prop::collection::vec(any::<u8>(), 0..20).prop_map(Term::Binary),
        (prop::collection::vec(any::<u8>(), 1..6), 1u8..8).prop_map(|(b, bits)| Term::bit_string(
            b.clone(),
            (b.len() - 1) * 8 + usize::from(bits)
        )
        .unwrap_or(Term::Binary(b))),
        prop::collection::vec(any::<u8>(), 0..20).prop_map(Term::ByteList),
        "[ -~]{0,10}".prop_map(|s| Term::string(&s)),
        (arb_atom(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            |(node, id, serial, creation)| Term::from(Pid {
                node,
                id,
                serial,
                creation
            })
        ),
        (arb_atom(), any::<u64>(), any::<u32>())
            .prop_map(|(node, id, creation)| Term::from(Port { node, id, creation })),
        (
            arb_atom(),
            any::<u32>(),
            prop::collection::vec(any::<u32>(), 0..=5)
        )
            .prop_map(|(node, creation, id)| Term::from(Reference { node, creation, id })),
        (arb_atom(), arb_atom(), any::<u8>()).prop_map(|(module, function, arity)| Term::from(
            ExternalFun {
                module,
                function,
                arity
            }
        )),
    ]
}

fn has_opaque(t: &Term) -> bool {
    match t {
        Term::Pid(_) | Term::Port(_) | Term::Reference(_) | Term::InternalFun(_) => true,
        // Printed as Erlang's C printer does (UTF-8 bytes as Latin-1 characters,
        // reserved words unquoted), which does not always read back.
        Term::ExternalFun(_) => true,
        Term::Tuple(v) | Term::List(v) => v.iter().any(has_opaque),
        Term::ImproperList { elements, tail } => {
            elements.iter().any(has_opaque) || has_opaque(tail)
        }
        Term::Map(pairs) => pairs.iter().any(|(k, v)| has_opaque(k) || has_opaque(v)),
        _ => false,
    }
}

pub(crate) fn arb_term() -> impl Strategy<Value = Term> {
    arb_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Term::Tuple),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Term::List),
            (prop::collection::vec(inner.clone(), 0..4), inner.clone())
                .prop_map(|(e, t)| Term::improper_list(e, t)),
            prop::collection::vec((inner.clone(), inner.clone()), 0..5).prop_map(|pairs| {
                let mut unique: Vec<(Term, Term)> = Vec::new();
                for (k, v) in pairs {
                    if !unique.iter().any(|(u, _)| *u == k) {
                        unique.push((k, v));
                    }
                }
                Term::Map(unique)
            }),
            (inner.clone(), prop::collection::vec(inner, 0..3)).prop_map(|(p, free_vars)| {
                Term::from(InternalFun {
                    arity: 2,
                    uniq: [1; 16],
                    index: 3,
                    module: Atom::new("mod"),
                    old_index: 4,
                    old_uniq: -5,
                    pid: Pid {
                        node: Atom::new("n@h"),
                        id: 1,
                        serial: 2,
                        creation: 3,
                    },
                    free_vars: free_vars.into_iter().chain(std::iter::once(p)).collect(),
                })
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_decode_round_trip(t in arb_term()) {
        let bytes = enc(&t);
        let back = decode(&bytes).expect("decodes");
        prop_assert_eq!(&back, &t);
        prop_assert_eq!(hash_of(&back), hash_of(&t));
        // Canonical: decoding then encoding again gives the same bytes.
        prop_assert_eq!(enc(&back), bytes);
    }

    #[test]
    fn text_round_trip(t in arb_term()) {
        // Pids, ports, references and local funs have no parseable text form.
        if !has_opaque(&t) {
            let text = t.to_string();
            let back = parse_term(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(back, t);
        }
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut input = vec![131];
        input.extend_from_slice(&bytes);
        let _ = decode(&input);
        let _ = decode(&bytes);
    }

    #[test]
    fn decoding_mutated_terms_never_panics(t in arb_term(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut bytes = enc(&t);
        for (at, v) in flips {
            let n = bytes.len();
            if let Some(b) = bytes.get_mut(at % n) {
                *b = v;
            }
        }
        if let Ok(t) = decode(&bytes) {
            // Whatever decodes also encodes and prints.
            let _ = encode(&t);
            let _ = t.to_string();
        }
    }

    #[test]
    fn equal_terms_order_equal(a in arb_term(), b in arb_term()) {
        use std::cmp::Ordering;
        let o = cmp::compare_exact(&a, &b);
        if o == Ordering::Equal {
            prop_assert_eq!(&a, &b);
        }
        prop_assert_eq!(cmp::compare_exact(&a, &a), Ordering::Equal);
        prop_assert_eq!(cmp::compare_exact(&b, &a), o.reverse());
    }
}

#[test]
fn nested_maps_compare_in_reasonable_time() {
    // Each level holds the next one as a value or as a key, next to a second pair, and
    // the copy stores every map in the other order: a comparison that sorted or compared
    // twice per level would take 2^200 steps.
    let (mut a, mut b) = (Term::atom("leaf"), Term::atom("leaf"));
    for i in 0..200 {
        let (pa, pb) = if i % 2 == 0 {
            ((Term::atom("v"), a), (Term::atom("v"), b))
        } else {
            ((a, Term::atom("k")), (b, Term::atom("k")))
        };
        a = Term::map(vec![pa, (Term::atom("x"), Term::Integer(1))]);
        b = Term::map(vec![(Term::atom("x"), Term::Integer(1)), pb]);
    }
    let started = std::time::Instant::now();
    assert_eq!(a, b);
    assert_eq!(hash_of(&a), hash_of(&b));
    assert_eq!(a.to_string(), b.to_string());
    assert_eq!(decode(&enc(&a)), Ok(b.clone()));
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn maybe_and_else_are_reserved_words_as_on_otp_27_and_later() {
    for word in ["maybe", "else", "case"] {
        assert!(crate::term::parse_term(word).is_err(), "{word}");
        assert_eq!(Term::atom(word).to_string(), format!("'{word}'"));
        assert_eq!(
            crate::term::parse_term(&format!("'{word}'")).unwrap(),
            Term::atom(word)
        );
    }
}
