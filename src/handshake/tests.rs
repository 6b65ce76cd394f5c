//! Both roles against each other in memory, and every status and failure path.

use std::time::Duration;

use super::messages::{
    ChallengeAck, ChallengeReply, Complement, HandshakeStatus, SendName, decode_frame, write_frame,
};
use super::*;
use crate::wire::Status;
use crate::{Cookie, NodeName};

fn name(s: &str) -> NodeName {
    s.parse().unwrap()
}

fn init_cfg(local: &str, peer: &str, cookie: &str) -> InitiatorConfig {
    InitiatorConfig {
        local: LocalName::Static(name(local)),
        creation: 11,
        flags: DistFlags::OURS,
        required: DistFlags::REQUIRED,
        cookie: Cookie::new(cookie).unwrap(),
        peer: name(peer),
    }
}

fn acc_cfg(local: &str, cookie: &str) -> AcceptorConfig {
    AcceptorConfig {
        local: name(local),
        creation: 22,
        flags: DistFlags::OURS | DistFlags::PUBLISHED,
        required: DistFlags::REQUIRED,
        cookie: Cookie::new(cookie).unwrap(),
    }
}

/// Splits a buffer of framed messages into bodies.
fn bodies(mut buf: &[u8], prefix: LengthPrefix) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let Ok(Status::Complete((body, n))) = decode_frame(buf, prefix, 1024) else {
            panic!("bad framing")
        };
        out.push(body.to_vec());
        buf = &buf[n..];
    }
    out
}

struct Pair {
    init: Initiator,
    acc: Acceptor,
    prefix: LengthPrefix,
}

enum End {
    Ok(Handshaked, Handshaked),
    InitErr(HandshakeError),
    AccErr(HandshakeError, Vec<u8>),
}

impl Pair {
    fn new(i: InitiatorConfig, a: AcceptorConfig, prefix: LengthPrefix) -> Pair {
        Pair {
            init: Initiator::new(i, prefix, 0xfeed_f00d),
            acc: Acceptor::new(a, prefix, 0x0bad_cafe),
            prefix,
        }
    }

    /// Runs both sides to the end, with `decision` as the acceptor's verdict.
    fn run(&mut self, decision: StatusDecision) -> End {
        let mut to_acc = Vec::new();
        self.init.start(&mut to_acc).unwrap();
        let mut acc_done = None;
        loop {
            let mut to_init = Vec::new();
            for body in bodies(&to_acc, self.prefix) {
                match self.acc.handle(&body, &mut to_init) {
                    Ok(AcceptorProgress::Continue) => {}
                    Ok(AcceptorProgress::NeedDecision(_)) => {
                        if let Err(e) = self.acc.decide(decision.clone(), &mut to_init) {
                            return End::AccErr(e, to_init);
                        }
                    }
                    Ok(AcceptorProgress::Done(h)) => acc_done = Some(h),
                    Err(e) => return End::AccErr(e, to_init),
                }
            }
            to_acc.clear();
            for body in bodies(&to_init, self.prefix) {
                match self.init.handle(&body, &mut to_acc) {
                    Ok(InitiatorProgress::Done(h)) => {
                        return End::Ok(h, acc_done.expect("acceptor finished first"));
                    }
                    Ok(InitiatorProgress::NeedAliveAnswer) => {
                        if let Err(e) = self.init.answer_alive(true, &mut to_acc) {
                            return End::InitErr(e);
                        }
                    }
                    Ok(InitiatorProgress::Continue) => {}
                    Err(e) => return End::InitErr(e),
                }
            }
            if to_acc.is_empty() {
                return End::InitErr(self.init.closed_error());
            }
        }
    }
}

#[test]
fn both_roles_agree_on_everything() {
    for prefix in [LengthPrefix::U16, LengthPrefix::U32] {
        let mut p = Pair::new(
            init_cfg("rust@h", "erl@h", "c"),
            acc_cfg("erl@h", "c"),
            prefix,
        );
        let End::Ok(i, a) = p.run(StatusDecision::Ok) else {
            panic!("handshake failed")
        };
        assert_eq!(i.peer, "erl@h");
        assert_eq!(a.peer, "rust@h");
        assert_eq!((i.peer_creation, a.peer_creation), (22, 11));
        assert_eq!(i.flags, a.flags);
        assert!(i.is_hidden(), "the initiator did not publish");
        assert!(i.flags.contains(DistFlags::SPAWN | DistFlags::ALIAS));
        assert!(!a.replaces_existing);
    }
}

#[test]
fn wrong_cookie_is_named_on_both_sides() {
    let mut p = Pair::new(
        init_cfg("rust@h", "erl@h", "one"),
        acc_cfg("erl@h", "two"),
        LengthPrefix::U16,
    );
    let End::AccErr(err, sent) = p.run(StatusDecision::Ok) else {
        panic!("acceptor accepted a wrong cookie")
    };
    assert!(
        matches!(err, HandshakeError::CookieMismatch { ref peer } if peer == "rust@h"),
        "{err}"
    );
    assert!(sent.is_empty(), "no ack is sent to a wrong cookie");
    // The acceptor then closes: the initiator reads that as a rejected cookie.
    let err = p.init.closed_error();
    assert!(
        matches!(err, HandshakeError::CookieRejected { .. }),
        "{err}"
    );
    assert!(!err.to_string().contains("one") || err.to_string().contains("cookie"));
}

#[test]
fn a_wrong_ack_digest_means_the_peer_has_another_cookie() {
    let mut init = Initiator::new(init_cfg("rust@h", "erl@h", "c"), LengthPrefix::U16, 5);
    let mut acc = Acceptor::new(acc_cfg("erl@h", "c"), LengthPrefix::U16, 6);
    let mut buf = Vec::new();
    init.start(&mut buf).unwrap();
    let mut to_init = Vec::new();
    let AcceptorProgress::NeedDecision(_) = acc
        .handle(&bodies(&buf, LengthPrefix::U16)[0], &mut to_init)
        .unwrap()
    else {
        panic!()
    };
    acc.decide(StatusDecision::Ok, &mut to_init).unwrap();
    let mut out = Vec::new();
    for body in bodies(&to_init, LengthPrefix::U16) {
        assert_eq!(
            init.handle(&body, &mut out).unwrap(),
            InitiatorProgress::Continue
        );
    }
    let forged = ChallengeAck { digest: [0; 16] };
    let mut body = Vec::new();
    forged.encode(&mut body);
    let err = init.handle(&body, &mut Vec::new()).unwrap_err();
    assert!(
        matches!(err, HandshakeError::PeerDigestMismatch { .. }),
        "{err}"
    );
}

#[test]
fn the_acceptor_must_be_the_node_dialled() {
    for (dialled, actual, hint) in [
        ("erl@Host", "erl@host", NameMismatchHint::Case),
        ("erl@host", "other@host", NameMismatchHint::OtherAlive),
    ] {
        let mut p = Pair::new(
            init_cfg("rust@x", dialled, "c"),
            acc_cfg(actual, "c"),
            LengthPrefix::U16,
        );
        let End::InitErr(err) = p.run(StatusDecision::Ok) else {
            panic!("name mismatch accepted")
        };
        match err {
            HandshakeError::NameMismatch {
                expected,
                got,
                hint: h,
            } => {
                assert_eq!(
                    (expected.as_str(), got.as_str(), h),
                    (dialled, actual, hint)
                );
            }
            other => panic!("{other}"),
        }
    }
}

#[test]
fn short_and_long_names_never_meet() {
    let mut init = Initiator::new(
        init_cfg("rust@h", "erl@h.example.com", "c"),
        LengthPrefix::U16,
        1,
    );
    let err = init.start(&mut Vec::new()).unwrap_err();
    assert!(matches!(err, HandshakeError::NameKind(_)), "{err}");
    assert!(err.to_string().contains("-sname"), "{err}");

    // As acceptor: a long-name initiator is refused with not_allowed.
    let mut p = Pair::new(
        init_cfg("rust@h.example.com", "erl@h", "c"),
        acc_cfg("erl@h", "c"),
        LengthPrefix::U16,
    );
    // Bypass the initiator's own check to see the acceptor's.
    let mut buf = Vec::new();
    write_frame(&mut buf, LengthPrefix::U16, |o| {
        SendName::New {
            flags: DistFlags::OURS,
            creation: 1,
            name: "rust@h.example.com".into(),
        }
        .encode(o)
    });
    let mut out = Vec::new();
    let err = p
        .acc
        .handle(&bodies(&buf, LengthPrefix::U16)[0], &mut out)
        .unwrap_err();
    assert!(matches!(err, HandshakeError::NameKind(_)), "{err}");
    assert_eq!(bodies(&out, LengthPrefix::U16), [b"snot_allowed".to_vec()]);
}

#[test]
fn missing_flags_are_refused_with_not_allowed() {
    let mut cfg = init_cfg("rust@h", "erl@h", "c");
    cfg.flags = DistFlags::OURS.without(DistFlags::MANDATORY_25_DIGEST | DistFlags::MAP_TAG);
    let mut p = Pair::new(cfg, acc_cfg("erl@h", "c"), LengthPrefix::U16);
    let End::AccErr(err, sent) = p.run(StatusDecision::Ok) else {
        panic!("accepted")
    };
    match err {
        HandshakeError::MissingFlags { missing, .. } => assert_eq!(missing, DistFlags::MAP_TAG),
        other => panic!("{other}"),
    }
    let mut init = Initiator::new(init_cfg("rust@h", "erl@h", "c"), LengthPrefix::U16, 1);
    init.start(&mut Vec::new()).unwrap();
    let err = init
        .handle(&bodies(&sent, LengthPrefix::U16)[0], &mut Vec::new())
        .unwrap_err();
    assert!(matches!(err, HandshakeError::NotAllowed { .. }), "{err}");

    // And the initiator refuses an acceptor lacking what it requires.
    let mut a = acc_cfg("erl@h", "c");
    a.flags = DistFlags::OURS.without(DistFlags::MANDATORY_25_DIGEST | DistFlags::BIG_CREATION);
    let mut p = Pair::new(init_cfg("rust@h", "erl@h", "c"), a, LengthPrefix::U16);
    let End::InitErr(err) = p.run(StatusDecision::Ok) else {
        panic!("accepted")
    };
    assert!(
        matches!(err, HandshakeError::MissingFlags { missing, .. } if missing == DistFlags::BIG_CREATION),
        "{err}"
    );
}

#[test]
fn the_digest_bit_alone_satisfies_otp25_requirements() {
    let mut cfg = init_cfg("rust@h", "erl@h", "c");
    cfg.flags = DistFlags::MANDATORY_25_DIGEST | DistFlags::MANDATORY_26;
    let mut p = Pair::new(cfg, acc_cfg("erl@h", "c"), LengthPrefix::U16);
    let End::Ok(_, a) = p.run(StatusDecision::Ok) else {
        panic!("refused")
    };
    assert!(a.peer_flags.contains(DistFlags::MANDATORY_25));
}

#[test]
fn simultaneous_connect_statuses() {
    let mut p = Pair::new(
        init_cfg("rust@h", "erl@h", "c"),
        acc_cfg("erl@h", "c"),
        LengthPrefix::U16,
    );
    assert!(matches!(p.run(StatusDecision::OkSimultaneous), End::Ok(..)));

    let mut p = Pair::new(
        init_cfg("rust@h", "erl@h", "c"),
        acc_cfg("erl@h", "c"),
        LengthPrefix::U16,
    );
    let End::AccErr(err, sent) = p.run(StatusDecision::Nok) else {
        panic!()
    };
    assert!(matches!(err, HandshakeError::Refused { .. }));
    let err = p
        .init
        .handle(&bodies(&sent, LengthPrefix::U16)[0], &mut Vec::new())
        .unwrap_err();
    assert!(
        matches!(err, HandshakeError::SimultaneousConnect { .. }),
        "{err}"
    );
}

#[test]
fn alive_is_answered_and_the_answer_is_sent() {
    // true: the acceptor's old connection is dead, go on.
    let mut p = Pair::new(
        init_cfg("rust@h", "erl@h", "c"),
        acc_cfg("erl@h", "c"),
        LengthPrefix::U16,
    );
    let End::Ok(_, a) = p.run(StatusDecision::Alive) else {
        panic!()
    };
    assert!(a.replaces_existing);

    // false: give up, and the "false" answer is still written out.
    let mut init = Initiator::new(init_cfg("rust@h", "erl@h", "c"), LengthPrefix::U16, 1);
    init.start(&mut Vec::new()).unwrap();
    let mut out = Vec::new();
    let mut status = Vec::new();
    HandshakeStatus::Alive.encode(&mut status);
    assert_eq!(
        init.handle(&status, &mut out).unwrap(),
        InitiatorProgress::NeedAliveAnswer
    );
    let err = init.answer_alive(false, &mut out).unwrap_err();
    assert!(matches!(err, HandshakeError::AlreadyConnected { .. }));
    assert_eq!(bodies(&out, LengthPrefix::U16), [b"sfalse".to_vec()]);

    // An acceptor told "false" stops.
    let mut acc = Acceptor::new(acc_cfg("erl@h", "c"), LengthPrefix::U16, 1);
    let mut hello = Vec::new();
    SendName::New {
        flags: DistFlags::OURS,
        creation: 1,
        name: "rust@h".into(),
    }
    .encode(&mut hello);
    acc.handle(&hello, &mut Vec::new()).unwrap();
    acc.decide(StatusDecision::Alive, &mut Vec::new()).unwrap();
    let err = acc.handle(b"sfalse", &mut Vec::new()).unwrap_err();
    assert!(matches!(err, HandshakeError::AlreadyConnected { .. }));
}

#[test]
fn dynamic_names_are_assigned_by_the_acceptor() {
    let mut cfg = init_cfg("rust@h", "erl@h", "c");
    cfg.local = LocalName::Dynamic { host: "h".into() };
    let mut p = Pair::new(cfg, acc_cfg("erl@h", "c"), LengthPrefix::U16);
    let End::Ok(i, a) = p.run(StatusDecision::Named {
        name: name("gen-42@h"),
        creation: 77,
    }) else {
        panic!()
    };
    assert_eq!((i.local.as_str(), i.local_creation), ("gen-42@h", 77));
    assert_eq!((a.peer.as_str(), a.peer_creation), ("gen-42@h", 77));

    // A name on another host is refused by the initiator.
    let mut cfg = init_cfg("rust@h", "erl@h", "c");
    cfg.local = LocalName::Dynamic { host: "h".into() };
    let mut init = Initiator::new(cfg, LengthPrefix::U16, 1);
    init.start(&mut Vec::new()).unwrap();
    let mut status = Vec::new();
    HandshakeStatus::Named {
        name: "x@elsewhere".into(),
        creation: 1,
    }
    .encode(&mut status);
    assert!(init.handle(&status, &mut Vec::new()).is_err());

    // A static initiator told "named:" stops.
    let mut init = Initiator::new(init_cfg("rust@h", "erl@h", "c"), LengthPrefix::U16, 1);
    init.start(&mut Vec::new()).unwrap();
    assert!(init.handle(&status, &mut Vec::new()).is_err());
}

#[test]
fn old_send_name_with_complement_is_accepted() {
    let cookie = Cookie::new("c").unwrap();
    let mut acc = Acceptor::new(acc_cfg("erl@h", "c"), LengthPrefix::U16, 1234);
    let all = DistFlags::OURS.bits();
    let mut msg = Vec::new();
    SendName::Old {
        version: 5,
        flags: all as u32,
        name: "old@h".into(),
    }
    .encode(&mut msg);
    let mut out = Vec::new();
    let AcceptorProgress::NeedDecision(hello) = acc.handle(&msg, &mut out).unwrap() else {
        panic!()
    };
    assert_eq!(hello.name.unwrap(), "old@h");
    acc.decide(StatusDecision::Ok, &mut out).unwrap();
    let sent = bodies(&out, LengthPrefix::U16);
    assert_eq!(sent[0], b"sok");
    let challenge = super::messages::Challenge::decode(&sent[1]).unwrap();
    assert_eq!(challenge.challenge, 1234);
    assert_eq!(acc.step(), HandshakeStep::AwaitComplement);

    let mut c = Vec::new();
    Complement {
        flags_high: (all >> 32) as u32,
        creation: 99,
    }
    .encode(&mut c);
    assert_eq!(
        acc.handle(&c, &mut Vec::new()).unwrap(),
        AcceptorProgress::Continue
    );
    let mut r = Vec::new();
    ChallengeReply {
        challenge: 777,
        digest: digest::digest(&cookie, 1234),
    }
    .encode(&mut r);
    let mut out = Vec::new();
    let AcceptorProgress::Done(h) = acc.handle(&r, &mut out).unwrap() else {
        panic!()
    };
    assert_eq!(h.peer_creation, 99);
    assert!(
        h.peer_flags.contains(DistFlags::SPAWN),
        "high flags come from the complement"
    );
    let ack = ChallengeAck::decode(&bodies(&out, LengthPrefix::U16)[0]).unwrap();
    assert_eq!(ack.digest, digest::digest(&cookie, 777));
}

#[test]
fn old_send_name_without_the_otp23_handshake_is_refused() {
    let mut acc = Acceptor::new(acc_cfg("erl@h", "c"), LengthPrefix::U16, 1);
    let flags = DistFlags::OURS
        .without(DistFlags::HANDSHAKE_23 | DistFlags::MANDATORY_25_DIGEST)
        .bits() as u32;
    let mut msg = Vec::new();
    SendName::Old {
        version: 5,
        flags,
        name: "ancient@h".into(),
    }
    .encode(&mut msg);
    let mut out = Vec::new();
    let err = acc.handle(&msg, &mut out).unwrap_err();
    assert!(
        matches!(err, HandshakeError::MissingFlags { missing, .. } if missing.contains(DistFlags::HANDSHAKE_23))
    );
    assert_eq!(bodies(&out, LengthPrefix::U16), [b"snot_allowed".to_vec()]);
}

#[test]
fn old_form_peer_missing_high_flags_is_refused_after_the_complement() {
    let mut acc = Acceptor::new(acc_cfg("erl@h", "c"), LengthPrefix::U16, 1);
    let mut required = acc_cfg("erl@h", "c");
    required.required = DistFlags::REQUIRED | DistFlags::V4_NC;
    let mut acc2 = Acceptor::new(required, LengthPrefix::U16, 1);
    for acc in [&mut acc, &mut acc2] {
        let mut msg = Vec::new();
        SendName::Old {
            version: 5,
            flags: DistFlags::OURS.bits() as u32,
            name: "old@h".into(),
        }
        .encode(&mut msg);
        acc.handle(&msg, &mut Vec::new()).unwrap();
        acc.decide(StatusDecision::Ok, &mut Vec::new()).unwrap();
    }
    let mut c = Vec::new();
    Complement {
        flags_high: 0,
        creation: 1,
    }
    .encode(&mut c);
    assert!(acc.handle(&c, &mut Vec::new()).is_ok());
    let err = acc2.handle(&c, &mut Vec::new()).unwrap_err();
    assert!(
        matches!(err, HandshakeError::MissingFlags { missing, .. } if missing == DistFlags::V4_NC)
    );
}

#[test]
fn messages_out_of_order_are_protocol_errors_not_panics() {
    let mut acc = Acceptor::new(acc_cfg("erl@h", "c"), LengthPrefix::U16, 1);
    assert!(matches!(
        acc.handle(b"r", &mut Vec::new()),
        Err(HandshakeError::Protocol { .. })
    ));
    let mut init = Initiator::new(init_cfg("rust@h", "erl@h", "c"), LengthPrefix::U16, 1);
    assert!(
        init.handle(b"sok", &mut Vec::new()).is_err(),
        "before start"
    );
    let mut init = Initiator::new(init_cfg("rust@h", "erl@h", "c"), LengthPrefix::U16, 1);
    init.start(&mut Vec::new()).unwrap();
    assert!(matches!(
        init.handle(b"a0123456789abcdef", &mut Vec::new()),
        Err(HandshakeError::Protocol { .. })
    ));
}

proptest::proptest! {
    #[test]
    fn arbitrary_bodies_never_panic(msgs in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 1..6)) {
        let mut acc = Acceptor::new(acc_cfg("erl@h", "c"), LengthPrefix::U16, 1);
        let mut init = Initiator::new(init_cfg("rust@h", "erl@h", "c"), LengthPrefix::U16, 1);
        init.start(&mut Vec::new()).unwrap();
        for m in &msgs {
            let mut out = Vec::new();
            if let Ok(AcceptorProgress::NeedDecision(_)) = acc.handle(m, &mut out) {
                let _ = acc.decide(StatusDecision::Ok, &mut out);
            }
            let _ = init.handle(m, &mut out);
        }
    }
}

// ---- the async driver over in-memory streams ----

#[tokio::test]
async fn driver_pair_over_a_duplex_stream_keeps_leftover_bytes() {
    let (mut a, mut b) = tokio::io::duplex(4096);
    let acceptor = tokio::spawn(async move {
        let out = accept(
            &mut b,
            LengthPrefix::U16,
            acc_cfg("erl@h", "c"),
            DEFAULT_STEP_TIMEOUT,
            "test",
            |_| StatusDecision::Ok,
        )
        .await
        .unwrap();
        // The first distribution bytes right behind the ack.
        use tokio::io::AsyncWriteExt;
        b.write_all(&[0, 0, 0, 0]).await.unwrap();
        (out, b)
    });
    let out = initiate(
        &mut a,
        LengthPrefix::U16,
        init_cfg("rust@h", "erl@h", "c"),
        DEFAULT_STEP_TIMEOUT,
        || true,
    )
    .await
    .unwrap();
    assert_eq!(out.handshaked.peer, "erl@h");
    let (acc_out, _b) = acceptor.await.unwrap();
    assert_eq!(acc_out.handshaked.peer, "rust@h");
    assert!(acc_out.leftover.is_empty());
}

#[tokio::test]
async fn driver_reports_a_closed_connection_after_the_reply_as_a_rejected_cookie() {
    let (mut a, mut b) = tokio::io::duplex(4096);
    let acceptor = tokio::spawn(async move {
        let r = accept(
            &mut b,
            LengthPrefix::U16,
            acc_cfg("erl@h", "right"),
            DEFAULT_STEP_TIMEOUT,
            "t",
            |_| StatusDecision::Ok,
        )
        .await;
        drop(b);
        r
    });
    let err = initiate(
        &mut a,
        LengthPrefix::U16,
        init_cfg("rust@h", "erl@h", "wrong"),
        DEFAULT_STEP_TIMEOUT,
        || true,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, HandshakeError::CookieRejected { .. }),
        "{err}"
    );
    let acc_err = acceptor.await.unwrap().unwrap_err();
    assert!(
        matches!(acc_err, HandshakeError::CookieMismatch { .. }),
        "{acc_err}"
    );
}

#[tokio::test(start_paused = true)]
async fn driver_times_out_a_silent_peer_at_the_step_it_was_in() {
    let (mut a, _b) = tokio::io::duplex(4096);
    let err = initiate(
        &mut a,
        LengthPrefix::U16,
        init_cfg("rust@h", "erl@h", "c"),
        Duration::from_secs(7),
        || true,
    )
    .await
    .unwrap_err();
    match err {
        HandshakeError::Timeout { step, timeout, .. } => {
            assert_eq!(step, HandshakeStep::AwaitStatus);
            assert_eq!(timeout, Duration::from_secs(7));
        }
        other => panic!("{other}"),
    }
    let (_a, mut b) = tokio::io::duplex(4096);
    let err = accept(
        &mut b,
        LengthPrefix::U32,
        acc_cfg("erl@h", "c"),
        Duration::from_secs(3),
        "10.0.0.1:5",
        |_| StatusDecision::Ok,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, HandshakeError::Timeout { step: HandshakeStep::AwaitName, ref peer, .. } if peer == "10.0.0.1:5"),
        "{err}"
    );
}

#[tokio::test]
async fn driver_recognises_tls_records_on_a_plain_connection() {
    use tokio::io::AsyncWriteExt;
    // What an OTP TLS node answers our send_name with: a fatal unexpected_message alert.
    let (mut a, mut b) = tokio::io::duplex(4096);
    b.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x0a])
        .await
        .unwrap();
    let err = initiate(
        &mut a,
        LengthPrefix::U16,
        init_cfg("rust@h", "erl@h", "c"),
        DEFAULT_STEP_TIMEOUT,
        || true,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HandshakeError::PeerUsesTls { .. }), "{err}");
    assert!(err.to_string().contains("-proto_dist inet_tls"), "{err}");
    // What a TLS client sends first: a ClientHello record.
    let (mut a, mut b) = tokio::io::duplex(4096);
    a.write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4])
        .await
        .unwrap();
    let err = accept(
        &mut b,
        LengthPrefix::U16,
        acc_cfg("erl@h", "c"),
        DEFAULT_STEP_TIMEOUT,
        "x",
        |_| StatusDecision::Ok,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HandshakeError::PeerUsesTls { .. }), "{err}");
    // Inside TLS (4-byte lengths) the same bytes are just a length that is too large.
    let (mut a, mut b) = tokio::io::duplex(4096);
    a.write_all(&[0x16, 0x03, 0x01, 0x00]).await.unwrap();
    let err = accept(
        &mut b,
        LengthPrefix::U32,
        acc_cfg("erl@h", "c"),
        DEFAULT_STEP_TIMEOUT,
        "x",
        |_| StatusDecision::Ok,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HandshakeError::Protocol { .. }), "{err}");
}

#[tokio::test]
async fn driver_refuses_a_giant_length_without_reading_it() {
    let (mut a, mut b) = tokio::io::duplex(4096);
    use tokio::io::AsyncWriteExt;
    a.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
    let err = accept(
        &mut b,
        LengthPrefix::U32,
        acc_cfg("erl@h", "c"),
        DEFAULT_STEP_TIMEOUT,
        "x",
        |_| StatusDecision::Ok,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            HandshakeError::Protocol {
                source: MessageError::TooLong { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn name_mismatch_hints() {
    use NameMismatchHint::*;
    assert_eq!(
        NameMismatchHint::classify("rabbit@Host", "rabbit@host"),
        Case
    );
    assert_eq!(
        NameMismatchHint::classify("rabbit@host", "rabbit@host.example.com"),
        ShortVsLong
    );
    assert_eq!(
        NameMismatchHint::classify("rabbit@host.example.com", "rabbit@host"),
        ShortVsLong
    );
    assert_eq!(
        NameMismatchHint::classify("rabbit@host", "other@host"),
        OtherAlive
    );
    assert_eq!(
        NameMismatchHint::classify("rabbit@a", "rabbit@b"),
        OtherHost
    );
    assert_eq!(
        NameMismatchHint::classify("rabbit@hostx", "rabbit@host"),
        OtherHost
    );
}

#[tokio::test]
async fn the_acceptor_names_the_peer_by_its_label_until_it_sends_its_name() {
    use tokio::io::AsyncWriteExt;
    let addr: std::net::SocketAddr = "10.0.0.7:4000".parse().unwrap();
    // A malformed first message, then a peer that closes before its name.
    for malformed in [true, false] {
        let (mut a, mut b) = tokio::io::duplex(4096);
        if malformed {
            a.write_all(&[0, 1, b'r']).await.unwrap();
        } else {
            drop(a);
        }
        let err = accept(
            &mut b,
            LengthPrefix::U16,
            acc_cfg("erl@h", "c"),
            DEFAULT_STEP_TIMEOUT,
            addr,
            |_| StatusDecision::Ok,
        )
        .await
        .unwrap_err();
        let peer = match &err {
            HandshakeError::Protocol { peer, .. } if malformed => peer,
            HandshakeError::Closed { peer, .. } if !malformed => peer,
            other => panic!("{other}"),
        };
        assert_eq!(peer, "10.0.0.7:4000", "{err}");
    }
}
