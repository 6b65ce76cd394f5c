//! EPMD replies as the client decodes them. Whatever decodes re-encodes to bytes that
//! decode to the same reply.
//!
//! Input: `Which:8 | Reply`, `Which` choosing the decoder (the client always knows which
//! reply it waits for).
#![no_main]

use autocluster::epmd::codec::{
    Alive2Response, DumpResponse, KillResponse, NamesResponse, PortPlease2Response, StopResponse,
};
use autocluster::wire::Status;
use autocluster_fuzz::check;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, reply)) = data.split_first() else {
        return;
    };
    let n = reply.len();
    match which % 6 {
        0 => {
            if let Ok(Status::Complete((r, used))) =
                check("ALIVE2 reply", n, || Alive2Response::decode(reply))
            {
                let bytes = r.encode();
                assert_eq!(bytes, reply[..used]);
            }
        }
        1 => {
            if let Ok(Status::Complete((r, used))) =
                check("PORT2 reply", n, || PortPlease2Response::decode(reply))
            {
                let bytes = r.encode().expect("a decoded PORT2 reply encodes");
                // NotFound keeps only the result byte; Found re-encodes byte for byte.
                assert_eq!(bytes, reply[..used]);
            }
        }
        2 => {
            if let Ok(r) = check("NAMES reply", n, || NamesResponse::decode(reply)) {
                let again = NamesResponse::decode(&r.encode()).expect("re-encoded NAMES decodes");
                assert_eq!(again, r);
            }
        }
        3 => {
            if let Ok(r) = check("DUMP reply", n, || DumpResponse::decode(reply)) {
                let again = DumpResponse::decode(&r.encode()).expect("re-encoded DUMP decodes");
                assert_eq!(again, r);
            }
        }
        4 => {
            if let Ok(Status::Complete((r, used))) =
                check("KILL reply", n, || KillResponse::decode(reply))
            {
                assert_eq!(r.encode(), reply[..used]);
            }
        }
        _ => {
            if let Ok(Status::Complete((r, used))) =
                check("STOP reply", n, || StopResponse::decode(reply))
            {
                assert_eq!(r.encode(), reply[..used]);
            }
        }
    }
});
