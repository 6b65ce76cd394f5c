//! The initiator state machine fed arbitrary framed messages.
#![no_main]

use autocluster::handshake::{
    DistFlags, Initiator, InitiatorConfig, InitiatorProgress, LengthPrefix, LocalName,
    messages::{MAX_HANDSHAKE_MESSAGE, decode_frame},
};
use autocluster::wire::Status;
use autocluster::{Cookie, NodeName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, data)) = data.split_first() else { return };
    let local = if choice & 2 == 0 {
        LocalName::Static(NodeName::new("fuzz@host").unwrap())
    } else {
        LocalName::Dynamic { host: "host".into() }
    };
    let cfg = InitiatorConfig {
        local,
        creation: 7,
        flags: DistFlags::OURS,
        required: DistFlags::REQUIRED,
        cookie: Cookie::new("cookie").unwrap(),
        peer: NodeName::new("peer@host").unwrap(),
    };
    let prefix = if choice & 1 == 0 { LengthPrefix::U16 } else { LengthPrefix::U32 };
    let mut init = Initiator::new(cfg, prefix, 42);
    let mut out = Vec::new();
    if init.start(&mut out).is_err() {
        return;
    }
    let mut rest = data;
    while let Ok(Status::Complete((body, used))) = decode_frame(rest, prefix, MAX_HANDSHAKE_MESSAGE) {
        match init.handle(body, &mut out) {
            Ok(InitiatorProgress::NeedAliveAnswer) => {
                if init.answer_alive(choice & 4 == 0, &mut out).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
        rest = &rest[used..];
    }
});
