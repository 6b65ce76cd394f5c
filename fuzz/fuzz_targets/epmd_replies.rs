//! EPMD replies as the client decodes them.
#![no_main]

use autocluster::epmd::codec::{
    Alive2Response, DumpResponse, KillResponse, NamesResponse, PortPlease2Response, StopResponse,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Alive2Response::decode(data);
    let _ = PortPlease2Response::decode(data);
    let _ = NamesResponse::decode(data);
    let _ = DumpResponse::decode(data);
    let _ = KillResponse::decode(data);
    let _ = StopResponse::decode(data);
});
