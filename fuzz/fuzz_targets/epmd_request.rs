//! The embedded EPMD server: requests as it decodes them, fed to the pure node table
//! (`Registry::handle`), whose replies must decode with the client's decoders.
//!
//! Input: a sequence of `Ctl:8 | Len:16 | Request` records. `Ctl` sets the connection's
//! context (bit 0 local peer, bit 1 relaxed command check, bit 2 registration allowed)
//! and, with bit 3, closes the connection of an earlier request (its number in the high
//! nibble), which unregisters the node it holds.
#![no_main]

use autocluster::epmd::codec::{
    Alive2Response, DumpResponse, KillResponse, NamesResponse, PortPlease2Response, Request,
    StopResponse,
};
use autocluster::epmd::registry::{After, Registry, RequestContext};
use autocluster::wire::Status;
use autocluster_fuzz::check;
use libfuzzer_sys::fuzz_target;

/// Decodes a whole reply with `decode`, which must take every byte.
fn whole<T: std::fmt::Debug>(
    what: &str,
    reply: &[u8],
    decode: impl Fn(&[u8]) -> Result<Status<(T, usize)>, autocluster::epmd::codec::CodecError>,
) -> T {
    match decode(reply) {
        Ok(Status::Complete((value, used))) if used == reply.len() => value,
        other => panic!("the server's {what} reply {reply:?} does not decode: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut registry = Registry::new();
    let mut rest = data;
    let mut conn = 0u64;
    check("epmd server session", data.len(), || {
        while let Some((&ctl, after_ctl)) = rest.split_first() {
            let decoded = check("Request::decode", after_ctl.len(), || {
                Request::decode(after_ctl)
            });
            let Ok(Status::Complete((request, used))) = decoded else {
                return;
            };
            assert!(used <= after_ctl.len());
            rest = &after_ctl[used..];
            conn += 1;

            // What the client sent re-encodes to a request that decodes to the same.
            if let Ok(bytes) = request.encode() {
                match Request::decode(&bytes) {
                    Ok(Status::Complete((again, n))) => {
                        assert_eq!(n, bytes.len());
                        assert_eq!(again, request);
                    }
                    other => panic!("re-encoded request does not decode: {other:?}"),
                }
            }

            if ctl & 8 != 0 {
                registry.unregister_conn(u64::from(ctl >> 4));
            }
            let ctx = RequestContext {
                conn,
                local_peer: ctl & 1 != 0,
                epmd_port: 4369,
                unix_time: 1_700_000_000 + conn,
                relaxed_command_check: ctl & 2 != 0,
                may_register: ctl & 4 != 0,
            };
            let kind = request.kind();
            let alive_name = match &request {
                Request::Alive2(entry) => Some(entry.name.clone()),
                _ => None,
            };
            let outcome = registry.handle(request.clone(), &ctx);
            if outcome.reply.is_empty() {
                assert!(
                    matches!(outcome.after, After::Close),
                    "{kind}: no reply but {:?}",
                    outcome.after
                );
                continue;
            }
            let reply = &outcome.reply;
            match request {
                Request::Alive2(_) => {
                    let r = whole("ALIVE2", reply, Alive2Response::decode);
                    assert_eq!(r.is_ok(), outcome.after == After::KeepRegistered);
                    if r.is_ok() {
                        let name = alive_name.unwrap_or_default();
                        assert!(
                            registry.lookup(&name).is_some(),
                            "{name} registered but not found"
                        );
                    }
                }
                Request::PortPlease2 { name } => {
                    match whole("PORT2", reply, PortPlease2Response::decode) {
                        PortPlease2Response::Found(entry) => assert_eq!(entry.name, name),
                        PortPlease2Response::NotFound { .. } => {
                            assert!(registry.lookup(&name).is_none())
                        }
                    }
                }
                Request::Names => {
                    let names =
                        NamesResponse::decode(reply).expect("the server's NAMES reply decodes");
                    assert_eq!(names.nodes.len(), registry.len());
                }
                Request::Dump => {
                    let dump =
                        DumpResponse::decode(reply).expect("the server's DUMP reply decodes");
                    assert!(dump.entries.len() >= registry.len());
                }
                Request::Kill => {
                    whole("KILL", reply, KillResponse::decode);
                }
                Request::Stop { .. } => {
                    whole("STOP", reply, StopResponse::decode);
                }
            }
        }
    });
});
