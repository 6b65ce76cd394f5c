//! Post-handshake framing and control messages, as a connection reads them: a byte
//! stream split into frames (ticks and data), each data frame decoded into a control
//! message and its message term under the default limits.
//!
//! Each frame must respect the memory rule on its own; a decoded message must encode
//! (`control::encode`) to a frame that decodes to the same message.
#![no_main]

use autocluster::dist::{control, frame};
use autocluster::term::DecodeLimits;
use autocluster::wire::Status;
use autocluster_fuzz::check;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits::default();
    let mut rest = data;
    while let Ok(Status::Complete((f, used))) = frame::decode(rest, 1 << 20) {
        assert!(used <= rest.len());
        rest = &rest[used..];
        let frame::Frame::Data(payload) = f else {
            continue;
        };
        let Ok(msg) = check("control::decode", payload.len(), || {
            control::decode(payload, &limits)
        }) else {
            continue;
        };
        let mut bytes = Vec::new();
        let at = frame::start(&mut bytes);
        control::encode(&msg.control, msg.message.as_ref(), &mut bytes)
            .expect("a decoded message encodes");
        frame::finish(&mut bytes, at, usize::MAX).expect("fits");
        match frame::decode(&bytes, usize::MAX) {
            Ok(Status::Complete((frame::Frame::Data(p), n))) if n == bytes.len() => {
                let again = control::decode(p, &limits).expect("our own frame decodes");
                assert_eq!(again, msg);
            }
            other => panic!("our own frame does not split: {other:?}"),
        }
    }
});
