//! The acceptor state machine fed the initiator's side of a handshake.
//!
//! Input: `Choice:8 | Challenge:32 | Frames`. `Choice` bit 0 picks the length prefix (2 or
//! 4 bytes), bits 1-3 the verdict on the initiator (ok, alive, ok_simultaneous, nok,
//! not_allowed, or a name for a dynamic one); `Challenge` is our challenge, so that a
//! captured handshake (cookie [`COOKIE`]) passes the digest check and reaches the end.
#![no_main]

use autocluster::handshake::{
    Acceptor, AcceptorConfig, AcceptorProgress, DistFlags, LengthPrefix, StatusDecision,
    messages::{MAX_HANDSHAKE_MESSAGE, decode_frame},
};
use autocluster::wire::Status;
use autocluster::{Cookie, NodeName};
use autocluster_fuzz::{COOKIE, check};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [choice, c0, c1, c2, c3, frames @ ..] = data else {
        return;
    };
    let cfg = AcceptorConfig {
        local: NodeName::new("fuzz@localhost").unwrap(),
        creation: 7,
        flags: DistFlags::OURS,
        required: DistFlags::REQUIRED,
        cookie: Cookie::new(COOKIE).unwrap(),
    };
    let prefix = if choice & 1 == 0 {
        LengthPrefix::U16
    } else {
        LengthPrefix::U32
    };
    let mut acc = Acceptor::new(cfg, prefix, u32::from_be_bytes([*c0, *c1, *c2, *c3]));
    let mut out = Vec::new();
    let mut rest = frames;
    check("acceptor session", data.len(), || {
        while let Ok(Status::Complete((body, used))) =
            decode_frame(rest, prefix, MAX_HANDSHAKE_MESSAGE)
        {
            rest = &rest[used..];
            match acc.handle(body, &mut out) {
                Ok(AcceptorProgress::NeedDecision(hello)) => {
                    let decision = match (choice >> 1) & 7 {
                        0 | 6 => match hello.dynamic_host {
                            Some(host) => match NodeName::from_parts("gen", &host) {
                                Ok(name) => StatusDecision::Named { name, creation: 9 },
                                Err(_) => StatusDecision::Ok,
                            },
                            None => StatusDecision::Ok,
                        },
                        1 => StatusDecision::Alive,
                        2 => StatusDecision::OkSimultaneous,
                        3 => StatusDecision::Nok,
                        4 => StatusDecision::NotAllowed,
                        _ => StatusDecision::Ok,
                    };
                    if acc.decide(decision, &mut out).is_err() {
                        return;
                    }
                }
                Ok(AcceptorProgress::Done(done)) => {
                    // A finished handshake has consumed its last message: anything more
                    // is refused.
                    assert_eq!(done.local.as_str(), "fuzz@localhost");
                    assert!(acc.handle(b"x", &mut out).is_err());
                    return;
                }
                Ok(AcceptorProgress::Continue) => {}
                Err(_) => {
                    // A failed handshake stays failed.
                    assert!(acc.handle(body, &mut out).is_err());
                    return;
                }
            }
        }
    });
});
