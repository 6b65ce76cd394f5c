//! The distribution protocol after the handshake: frames, control messages and the
//! connection engine.
//!
//! Pure code, no I/O: [`frame`] splits the byte stream into ticks and data frames with a
//! maximum size checked before anything is buffered, [`control`] turns a data frame
//! into a typed control message plus its message term, and the connection engine
//! (`engine`) decides everything else a connection does, with the time passed in. The
//! tokio driver lives in [`crate::node`].

pub mod control;
pub(crate) mod engine;
pub mod frame;
