//! The acceptor state machine fed arbitrary framed messages.
#![no_main]

use autocluster::handshake::{
    Acceptor, AcceptorConfig, AcceptorProgress, DistFlags, LengthPrefix, StatusDecision,
    messages::{MAX_HANDSHAKE_MESSAGE, decode_frame},
};
use autocluster::wire::Status;
use autocluster::{Cookie, NodeName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, data)) = data.split_first() else { return };
    let cfg = AcceptorConfig {
        local: NodeName::new("fuzz@host").unwrap(),
        creation: 7,
        flags: DistFlags::OURS,
        required: DistFlags::REQUIRED,
        cookie: Cookie::new("cookie").unwrap(),
    };
    let prefix = if choice & 1 == 0 { LengthPrefix::U16 } else { LengthPrefix::U32 };
    let mut acc = Acceptor::new(cfg, prefix, 42);
    let mut out = Vec::new();
    let mut rest = data;
    while let Ok(Status::Complete((body, used))) = decode_frame(rest, prefix, MAX_HANDSHAKE_MESSAGE) {
        match acc.handle(body, &mut out) {
            Ok(AcceptorProgress::NeedDecision(_)) => {
                let decision = match choice >> 1 & 3 {
                    0 => StatusDecision::Ok,
                    1 => StatusDecision::Alive,
                    2 => StatusDecision::OkSimultaneous,
                    _ => StatusDecision::Nok,
                };
                if acc.decide(decision, &mut out).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
        rest = &rest[used..];
    }
});
