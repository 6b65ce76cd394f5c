use super::*;

fn entry() -> NodeEntry {
    NodeEntry {
        name: "rabbit".into(),
        port: 25672,
        node_type: NodeType::Normal,
        protocol: 0,
        highest_version: 6,
        lowest_version: 5,
        extra: b"xy".to_vec(),
    }
}

/// Every strict prefix of a valid encoding is `Partial`, never an error or a panic.
fn assert_prefixes_partial<T: std::fmt::Debug>(
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<Status<T>, CodecError>,
) {
    for cut in 0..bytes.len() {
        match decode(&bytes[..cut]) {
            Ok(Status::Partial) => {}
            other => panic!("prefix of {cut} bytes: {other:?}"),
        }
    }
}

#[test]
fn alive2_request_matches_otp_bytes() {
    // What OTP 25's erl_epmd:do_register_node/3 sends for "foo" on port 4000.
    let otp: &[u8] = &[
        0, 16, 120, 0x0f, 0xa0, 77, 0, 0, 6, 0, 6, 0, 3, b'f', b'o', b'o', 0, 0,
    ];
    let mut e = NodeEntry::new("foo", 4000);
    assert_eq!(Request::Alive2(e.clone()).encode().unwrap(), otp);
    assert_eq!(
        Request::decode(otp).unwrap(),
        Status::Complete((Request::Alive2(e.clone()), otp.len()))
    );
    e.extra = vec![1, 2, 3];
    e.node_type = NodeType::Other(9);
    let bytes = Request::Alive2(e.clone()).encode().unwrap();
    assert_eq!(
        Request::decode(&bytes).unwrap(),
        Status::Complete((Request::Alive2(e), bytes.len()))
    );
}

#[test]
fn every_request_round_trips_and_every_prefix_is_partial() {
    let requests = [
        Request::Alive2(entry()),
        Request::PortPlease2 { name: "n".into() },
        Request::Names,
        Request::Dump,
        Request::Kill,
        Request::Stop {
            name: "rabbit".into(),
        },
    ];
    for request in requests {
        let bytes = request.encode().unwrap();
        assert_eq!(
            Request::decode(&bytes).unwrap(),
            Status::Complete((request.clone(), bytes.len()))
        );
        // Bytes after the request are not consumed.
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"junk");
        assert_eq!(
            Request::decode(&longer).unwrap(),
            Status::Complete((request, bytes.len()))
        );
        assert_prefixes_partial(&bytes, Request::decode);
    }
}

#[test]
fn names_and_dump_requests_are_three_bytes() {
    assert_eq!(Request::Names.encode().unwrap(), [0, 1, 110]);
    assert_eq!(Request::Dump.encode().unwrap(), [0, 1, 100]);
    assert_eq!(Request::Kill.encode().unwrap(), [0, 1, 107]);
}

#[test]
fn request_lengths_are_checked_before_reading_the_body() {
    assert_eq!(Request::decode(&[0, 0]), Err(CodecError::EmptyRequest));
    assert_eq!(
        Request::decode(&[0xff, 0xff]),
        Err(CodecError::RequestTooLong {
            len: 65535,
            max: MAX_REQUEST_LEN
        })
    );
    let max = u16::try_from(MAX_REQUEST_LEN).unwrap().to_be_bytes();
    assert_eq!(Request::decode(&max), Ok(Status::Partial));
    let over = u16::try_from(MAX_REQUEST_LEN + 1).unwrap().to_be_bytes();
    assert!(matches!(
        Request::decode(&over),
        Err(CodecError::RequestTooLong { .. })
    ));
}

#[test]
fn malformed_requests_are_typed_errors() {
    assert_eq!(
        Request::decode(&[0, 1, 42]),
        Err(CodecError::UnknownRequest(42))
    );
    assert!(matches!(
        Request::decode(&[0, 2, NAMES_REQ, 0]),
        Err(CodecError::TrailingData { count: 1, .. })
    ));
    // ALIVE2 whose name length runs past the request.
    let mut bytes = Request::Alive2(entry()).encode().unwrap();
    bytes[12] = 200;
    assert!(matches!(
        Request::decode(&bytes),
        Err(CodecError::Truncated { .. })
    ));
    // ALIVE2 whose extra length runs past the request.
    let mut bytes = Request::Alive2(entry()).encode().unwrap();
    let elen_at = 2 + 11 + "rabbit".len();
    bytes[elen_at + 1] = 50;
    assert!(matches!(
        Request::decode(&bytes),
        Err(CodecError::Truncated { .. })
    ));
    // ALIVE2 with bytes after the extra field.
    let mut bytes = Request::Alive2(entry()).encode().unwrap();
    bytes[1] += 1;
    bytes.push(0);
    assert!(matches!(
        Request::decode(&bytes),
        Err(CodecError::TrailingData { .. })
    ));
    // ALIVE2 with a name length beyond the limit.
    let mut bytes = vec![0, 20, ALIVE2_REQ, 0, 1, 77, 0, 0, 6, 0, 6];
    bytes.extend_from_slice(&2000u16.to_be_bytes());
    bytes.resize(22, b'a');
    assert!(matches!(
        Request::decode(&bytes),
        Err(CodecError::InvalidName(NameError::TooLong { .. }))
    ));
    // PORT_PLEASE2 with an empty name, a NUL, bad UTF-8, a newline.
    for body in [&b"z"[..], b"z\0", b"za\0b", b"z\xff", b"za\nb"] {
        let mut bytes = vec![0, body.len() as u8];
        bytes.extend_from_slice(body);
        assert!(
            matches!(Request::decode(&bytes), Err(CodecError::InvalidName(_))),
            "{body:?}"
        );
    }
}

#[test]
fn port_please_strips_one_trailing_nul_like_epmd() {
    assert_eq!(
        Request::decode(b"\x00\x05zabc\x00").unwrap(),
        Status::Complete((Request::PortPlease2 { name: "abc".into() }, 7))
    );
}

#[test]
fn name_limits_count_characters_like_epmd() {
    let ok = "é".repeat(255);
    assert!(validate_name(&ok).is_ok());
    let bytes = Request::PortPlease2 { name: ok.clone() }.encode().unwrap();
    assert_eq!(bytes.len(), 2 + 1 + 510);
    assert!(matches!(
        Request::decode(&bytes).unwrap(),
        Status::Complete(_)
    ));
    let long = "a".repeat(256);
    assert_eq!(
        Request::PortPlease2 { name: long.clone() }.encode(),
        Err(CodecError::InvalidName(NameError::TooLong { chars: 256 }))
    );
    let mut e = entry();
    e.name = long;
    assert!(Request::Alive2(e).encode().is_err());
    let mut e = entry();
    e.extra = vec![0; MAX_EXTRA_LEN + 1];
    assert!(matches!(
        Request::Alive2(e).encode(),
        Err(CodecError::ExtraTooLong { .. })
    ));
    // The largest valid ALIVE2 still fits epmd's request limit.
    let mut e = entry();
    e.name = "\u{10000}".repeat(255);
    e.extra = vec![1; MAX_EXTRA_LEN];
    let bytes = Request::Alive2(e.clone()).encode().unwrap();
    assert!(bytes.len() - 2 <= MAX_REQUEST_LEN);
    assert_eq!(
        Request::decode(&bytes).unwrap(),
        Status::Complete((Request::Alive2(e), bytes.len()))
    );
}

#[test]
fn alive2_responses_both_forms() {
    let x = Alive2Response {
        result: 0,
        creation: 0x0102_0304,
        form: Alive2Form::Extended,
    };
    assert_eq!(x.encode(), [118, 0, 1, 2, 3, 4]);
    assert_eq!(
        Alive2Response::decode(&x.encode()),
        Ok(Status::Complete((x, 6)))
    );
    let old = Alive2Response {
        result: 1,
        creation: 3,
        form: Alive2Form::Old,
    };
    assert_eq!(old.encode(), [121, 1, 0, 3]);
    assert_eq!(
        Alive2Response::decode(&old.encode()),
        Ok(Status::Complete((old, 4)))
    );
    assert!(!old.is_ok());
    assert_prefixes_partial(&x.encode(), Alive2Response::decode);
    assert_prefixes_partial(&old.encode(), Alive2Response::decode);
    assert!(matches!(
        Alive2Response::decode(b"HTTP/1.1"),
        Err(CodecError::UnexpectedTag { got: b'H', .. })
    ));
}

#[test]
fn port2_responses() {
    let found = PortPlease2Response::Found(entry());
    let bytes = found.encode().unwrap();
    assert_eq!(&bytes[..4], &[119, 0, 0x64, 0x48]);
    assert_eq!(
        PortPlease2Response::decode(&bytes),
        Ok(Status::Complete((found, bytes.len())))
    );
    assert_prefixes_partial(&bytes, PortPlease2Response::decode);
    let missing = PortPlease2Response::NotFound { result: 1 };
    assert_eq!(missing.encode().unwrap(), [119, 1]);
    assert_eq!(
        PortPlease2Response::decode(&[119, 1]),
        Ok(Status::Complete((missing, 2)))
    );
    assert!(matches!(
        PortPlease2Response::decode(&[118, 0]),
        Err(CodecError::UnexpectedTag { .. })
    ));
    // A giant name length is refused before waiting for the bytes.
    let mut bytes = vec![119, 0, 0, 1, 77, 0, 0, 6, 0, 6, 0xff, 0xff];
    assert!(matches!(
        PortPlease2Response::decode(&bytes),
        Err(CodecError::InvalidName(NameError::TooLong { .. }))
    ));
    bytes[10] = 0;
    bytes[11] = 1;
    bytes.extend_from_slice(b"a\xff\xff");
    assert!(matches!(
        PortPlease2Response::decode(&bytes),
        Err(CodecError::ExtraTooLong { .. })
    ));
}

#[test]
fn names_reply_matches_epmd_format() {
    let reply = NamesResponse {
        epmd_port: 4369,
        nodes: vec![
            NameEntry {
                name: "b".into(),
                port: 41000,
            },
            NameEntry {
                name: "with space".into(),
                port: 1,
            },
        ],
    };
    let bytes = reply.encode();
    assert_eq!(
        bytes,
        b"\x00\x00\x11\x11name b at port 41000\nname with space at port 1\n"
    );
    assert_eq!(NamesResponse::decode(&bytes), Ok(reply));
    assert_eq!(
        NamesResponse::decode(&[0, 0, 0x11, 0x11]),
        Ok(NamesResponse {
            epmd_port: 4369,
            nodes: vec![]
        })
    );
}

#[test]
fn names_and_dump_prefixes_never_invent_entries() {
    let names = NamesResponse {
        epmd_port: 4369,
        nodes: vec![
            NameEntry {
                name: "a".into(),
                port: 1,
            },
            NameEntry {
                name: "bb".into(),
                port: 22,
            },
        ],
    };
    let bytes = names.encode();
    for cut in 0..bytes.len() {
        // A cut inside the header or a line is an error; at a line end, fewer entries.
        match NamesResponse::decode(&bytes[..cut]) {
            Ok(r) => assert!(names.nodes.starts_with(&r.nodes), "cut {cut}"),
            Err(CodecError::Truncated { .. } | CodecError::MalformedLine { .. }) => {}
            Err(e) => panic!("cut {cut}: {e}"),
        }
    }
    let dump = DumpResponse {
        epmd_port: 1,
        entries: vec![DumpEntry {
            name: "a".into(),
            port: 1,
            fd: 3,
            active: true,
        }],
    };
    let bytes = dump.encode();
    for cut in 0..bytes.len() {
        match DumpResponse::decode(&bytes[..cut]) {
            Ok(r) => assert!(r.entries.is_empty(), "cut {cut}"),
            Err(CodecError::Truncated { .. } | CodecError::MalformedLine { .. }) => {}
            Err(e) => panic!("cut {cut}: {e}"),
        }
    }
}

#[test]
fn names_reply_garbage_is_refused() {
    assert!(matches!(
        NamesResponse::decode(&[0, 0]),
        Err(CodecError::Truncated { .. })
    ));
    let bad: [&[u8]; 7] = [
        b"\0\0\0\x01name a at port 1",
        b"\0\0\0\x01nom a at port 1\n",
        b"\0\0\0\x01name a at port 70000\n",
        b"\0\0\0\x01name a at port -1\n",
        b"\0\0\0\x01name a at port \n",
        b"\0\0\0\x01name  at port 1\n",
        b"\0\0\0\x01name \xff at port 1\n",
    ];
    for bytes in bad {
        assert!(NamesResponse::decode(bytes).is_err(), "{bytes:?}");
    }
    let mut huge = vec![0, 0, 0, 1];
    huge.resize(MAX_NAMES_RESPONSE_LEN + 1, b'\n');
    assert!(matches!(
        NamesResponse::decode(&huge),
        Err(CodecError::ResponseTooLong { .. })
    ));
    let mut many = vec![0, 0, 0, 1];
    for _ in 0..=MAX_NAMES_ENTRIES {
        many.extend_from_slice(b"name a at port 1\n");
    }
    assert!(matches!(
        NamesResponse::decode(&many),
        Err(CodecError::TooManyEntries { .. })
    ));
}

#[test]
fn dump_reply_matches_epmd_format() {
    let reply = DumpResponse {
        epmd_port: 4369,
        entries: vec![
            DumpEntry {
                name: "a".into(),
                port: 5,
                fd: 7,
                active: true,
            },
            DumpEntry {
                name: "b".into(),
                port: 6,
                fd: -1,
                active: false,
            },
        ],
    };
    let bytes = reply.encode();
    assert_eq!(
        &bytes[4..],
        b"active name     <a> at port 5, fd = 7\n\0old/unused name <b>, port = 6, fd = -1 \n\0"
    );
    assert_eq!(DumpResponse::decode(&bytes), Ok(reply));
    assert!(DumpResponse::decode(b"\0\0\0\x01active name     <a> at port 5\n\0").is_err());
    assert!(
        DumpResponse::decode(b"\0\0\0\x01active name     <a> at port 5, fd = 1\n").is_err()
    );
}

#[test]
fn kill_and_stop_replies() {
    assert_eq!(
        KillResponse::decode(b"OK"),
        Ok(Status::Complete((KillResponse::Ok, 2)))
    );
    assert_eq!(KillResponse::decode(b"N"), Ok(Status::Partial));
    assert!(KillResponse::decode(b"XX").is_err());
    assert_eq!(KillResponse::No.encode(), b"NO");
    assert_eq!(
        StopResponse::decode(b"NOEXIST"),
        Ok(Status::Complete((StopResponse::NoExist, 7)))
    );
    assert_eq!(StopResponse::decode(b"STOPPE"), Ok(Status::Partial));
    assert!(StopResponse::decode(b"STOPPEX").is_err());
    assert_eq!(StopResponse::Stopped.encode(), b"STOPPED");
}

#[test]
fn decoders_never_panic_on_arbitrary_bytes() {
    use proptest::prelude::*;
    proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..64))| {
        let _ = Request::decode(&bytes);
        let _ = Alive2Response::decode(&bytes);
        let _ = PortPlease2Response::decode(&bytes);
        let _ = NamesResponse::decode(&bytes);
        let _ = DumpResponse::decode(&bytes);
        let _ = KillResponse::decode(&bytes);
        let _ = StopResponse::decode(&bytes);
    });
    // Structured prefixes reach deeper into the decoders.
    proptest!(|(tag in prop_oneof![Just(ALIVE2_REQ), Just(PORT_PLEASE2_REQ), Just(STOP_REQ)],
                body in proptest::collection::vec(any::<u8>(), 0..40))| {
        let mut bytes = vec![0, (body.len() + 1) as u8, tag];
        bytes.extend_from_slice(&body);
        let _ = Request::decode(&bytes);
        let mut reply = vec![PORT2_RESP, 0];
        reply.extend_from_slice(&body);
        let _ = PortPlease2Response::decode(&reply);
    });
}
