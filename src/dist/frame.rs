//! Framing after the handshake: `Len:32 | Payload`, where `Len = 0` is a tick.
//!
//! Pure code: the decoder looks at a buffer and says whether it holds a whole frame,
//! refusing a length above the configured maximum before any byte of it is buffered.

use crate::wire::{Reader, Status};

/// The default largest frame accepted: 128 MiB.
///
/// OTP has no limit of its own; a message bigger than this is almost certainly a
/// mistake or an attack. Configurable per node.
pub const DEFAULT_MAX_FRAME: usize = 128 * 1024 * 1024;

/// The pass-through tag that starts every data frame of a connection without atom
/// cache (`p`, 112).
pub const PASS_THROUGH: u8 = 112;

/// One frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A zero-length frame: the peer is alive.
    Tick,
    /// A data frame's payload (without the length).
    Data(&'a [u8]),
}

/// A frame that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The announced length exceeds the limit.
    #[error("peer announced a frame of {len} bytes, above the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Splits one frame off the front of `buf`: the frame and the bytes it used, or
/// `Partial` when more bytes are needed.
///
/// When it returns `Partial`, [`needed`] tells how many bytes the frame needs in all,
/// so the caller can reserve buffer space exactly (never more than `max + 4`).
pub fn decode(buf: &[u8], max: usize) -> Result<Status<(Frame<'_>, usize)>, FrameError> {
    let mut r = Reader::new(buf);
    let Some(len) = r.u32() else {
        return Ok(Status::Partial);
    };
    let len = len as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if len == 0 {
        return Ok(Status::Complete((Frame::Tick, 4)));
    }
    match r.take(len) {
        Some(payload) => Ok(Status::Complete((Frame::Data(payload), 4 + len))),
        None => Ok(Status::Partial),
    }
}

/// How many bytes the frame at the front of `buf` needs in all, once its length is
/// known (and checked against `max`).
pub fn needed(buf: &[u8], max: usize) -> Option<usize> {
    let len = Reader::new(buf).u32()? as usize;
    (len <= max).then_some(4 + len)
}

/// The tick frame.
pub const TICK: [u8; 4] = [0; 4];

/// Starts a data frame in `out`; returns the position to pass to [`finish`].
pub fn start(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

/// Writes the length of the frame started at `at`. Fails when the frame is larger than
/// `max` (the frame is then removed from `out`).
pub fn finish(out: &mut Vec<u8>, at: usize, max: usize) -> Result<(), FrameError> {
    let len = out.len() - at - 4;
    if len > max || u32::try_from(len).is_err() {
        out.truncate(at);
        return Err(FrameError::TooLarge { len, max });
    }
    out[at..at + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_data_and_partial_frames() {
        assert_eq!(decode(&[0, 0], 10), Ok(Status::Partial));
        assert_eq!(
            decode(&[0, 0, 0, 0, 9], 10),
            Ok(Status::Complete((Frame::Tick, 4)))
        );
        assert_eq!(decode(&[0, 0, 0, 2, 1], 10), Ok(Status::Partial));
        assert_eq!(needed(&[0, 0, 0, 2, 1], 10), Some(6));
        assert_eq!(
            decode(&[0, 0, 0, 2, 1, 2, 3], 10),
            Ok(Status::Complete((Frame::Data(&[1, 2]), 6)))
        );
    }

    #[test]
    fn giant_lengths_are_refused_up_front() {
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], 1 << 20),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                max: 1 << 20
            })
        );
        assert_eq!(needed(&[0xff, 0xff, 0xff, 0xff], 1 << 20), None);
    }

    #[test]
    fn encoding_checks_the_limit() {
        let mut out = vec![9];
        let at = start(&mut out);
        out.extend_from_slice(b"abc");
        finish(&mut out, at, 10).unwrap();
        assert_eq!(out, [9, 0, 0, 0, 3, b'a', b'b', b'c']);
        let at = start(&mut out);
        out.extend_from_slice(&[0; 11]);
        assert!(finish(&mut out, at, 10).is_err());
        assert_eq!(out.len(), 8, "the oversized frame is removed");
    }
}
