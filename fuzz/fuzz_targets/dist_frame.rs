//! Post-handshake framing and control messages, as a connection reads them.
#![no_main]

use autocluster::dist::{control, frame};
use autocluster::term::DecodeLimits;
use autocluster::wire::Status;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits::default();
    let mut rest = data;
    while let Ok(Status::Complete((f, used))) = frame::decode(rest, 1 << 20) {
        if let frame::Frame::Data(payload) = f {
            let _ = control::decode(payload, &limits);
        }
        rest = &rest[used..];
    }
});
