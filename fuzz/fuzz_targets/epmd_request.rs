//! EPMD requests as the embedded server decodes them, and the registry's answers.
#![no_main]

use autocluster::epmd::codec::Request;
use autocluster::wire::Status;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Status::Complete((req, used))) = Request::decode(data) {
        assert!(used <= data.len());
        if let Ok(bytes) = req.encode() {
            match Request::decode(&bytes) {
                Ok(Status::Complete((again, n))) => {
                    assert_eq!(n, bytes.len());
                    assert_eq!(again, req);
                }
                other => panic!("re-encoded request does not decode: {other:?}"),
            }
        }
    }
});
