//! The external term format decoder: no input may panic, and whatever decodes must
//! survive an encode/decode round trip unchanged.
#![no_main]

use autocluster::term::{self, DecodeLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits::default();
    if let Ok((t, _used)) = term::decode_prefix(data, &limits) {
        if let Ok(bytes) = term::encode(&t) {
            let again = term::decode(&bytes).expect("our own encoding decodes");
            assert_eq!(again, t);
        }
    }
});
