//! The initiator state machine fed the acceptor's side of a handshake.
//!
//! Input: `Choice:8 | Challenge:32 | Nlen:8 | PeerName | Frames`. `Choice` bit 0 picks the
//! length prefix, bit 1 a dynamic local name, bit 2 the answer to `alive`; `Challenge` is
//! our challenge and `PeerName` the node we dial, so that a captured handshake (cookie
//! [`COOKIE`]) passes the name and digest checks and reaches the end.
#![no_main]

use autocluster::handshake::{
    DistFlags, Initiator, InitiatorConfig, InitiatorProgress, LengthPrefix, LocalName,
    messages::{MAX_HANDSHAKE_MESSAGE, decode_frame},
};
use autocluster::wire::Status;
use autocluster::{Cookie, NodeName};
use autocluster_fuzz::{COOKIE, check};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [choice, c0, c1, c2, c3, nlen, rest @ ..] = data else {
        return;
    };
    let Some((peer, frames)) = rest.split_at_checked(usize::from(*nlen)) else {
        return;
    };
    let peer = match std::str::from_utf8(peer)
        .ok()
        .and_then(|p| NodeName::new(p).ok())
    {
        Some(peer) => peer,
        None => NodeName::new("peer@localhost").unwrap(),
    };
    let local = if choice & 2 == 0 {
        LocalName::Static(NodeName::new("fuzz@localhost").unwrap())
    } else {
        LocalName::Dynamic {
            host: "localhost".into(),
        }
    };
    let cfg = InitiatorConfig {
        local,
        creation: 7,
        flags: DistFlags::OURS,
        required: DistFlags::REQUIRED,
        cookie: Cookie::new(COOKIE).unwrap(),
        peer,
    };
    let prefix = if choice & 1 == 0 {
        LengthPrefix::U16
    } else {
        LengthPrefix::U32
    };
    let mut init = Initiator::new(cfg, prefix, u32::from_be_bytes([*c0, *c1, *c2, *c3]));
    let mut out = Vec::new();
    if init.start(&mut out).is_err() {
        return;
    }
    let mut rest = frames;
    check("initiator session", data.len(), || {
        while let Ok(Status::Complete((body, used))) =
            decode_frame(rest, prefix, MAX_HANDSHAKE_MESSAGE)
        {
            rest = &rest[used..];
            match init.handle(body, &mut out) {
                Ok(InitiatorProgress::NeedAliveAnswer) => {
                    if init.answer_alive(choice & 4 == 0, &mut out).is_err() {
                        return;
                    }
                }
                Ok(InitiatorProgress::Done(_)) => {
                    assert!(init.handle(b"x", &mut out).is_err());
                    return;
                }
                Ok(InitiatorProgress::Continue) => {}
                Err(_) => {
                    assert!(init.handle(body, &mut out).is_err());
                    return;
                }
            }
        }
    });
});
