//! Every handshake message decoder, on its own, and the frame splitter. Whatever decodes
//! re-encodes to bytes that decode to the same message.
//!
//! Input: `Which:8 | Body`.
#![no_main]

use autocluster::handshake::LengthPrefix;
use autocluster::handshake::messages::{
    AliveReply, Challenge, ChallengeAck, ChallengeReply, Complement, HandshakeStatus,
    MAX_HANDSHAKE_MESSAGE, MessageError, SendName, decode_frame,
};
use autocluster::wire::Status;
use autocluster_fuzz::check;
use libfuzzer_sys::fuzz_target;

fn round_trip<T: PartialEq + std::fmt::Debug>(
    what: &str,
    body: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, MessageError>,
    encode: impl Fn(&T, &mut Vec<u8>),
) {
    if let Ok(msg) = check(what, body.len(), || decode(body)) {
        let mut bytes = Vec::new();
        encode(&msg, &mut bytes);
        assert_eq!(
            decode(&bytes).as_ref(),
            Ok(&msg),
            "{what} does not round-trip"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => round_trip("send_name", body, SendName::decode, SendName::encode),
        1 => round_trip(
            "status",
            body,
            HandshakeStatus::decode,
            HandshakeStatus::encode,
        ),
        2 => round_trip("alive reply", body, AliveReply::decode, AliveReply::encode),
        3 => round_trip("challenge", body, Challenge::decode, Challenge::encode),
        4 => round_trip("complement", body, Complement::decode, Complement::encode),
        5 => round_trip(
            "challenge_reply",
            body,
            ChallengeReply::decode,
            ChallengeReply::encode,
        ),
        6 => round_trip(
            "challenge_ack",
            body,
            ChallengeAck::decode,
            ChallengeAck::encode,
        ),
        _ => {
            for prefix in [LengthPrefix::U16, LengthPrefix::U32] {
                if let Ok(Status::Complete((frame, used))) =
                    decode_frame(body, prefix, MAX_HANDSHAKE_MESSAGE)
                {
                    assert!(!frame.is_empty() && frame.len() <= MAX_HANDSHAKE_MESSAGE);
                    assert_eq!(used, prefix.width() + frame.len());
                }
            }
        }
    }
});
