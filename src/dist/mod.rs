//! The distribution protocol after the handshake: frames and control messages.
//!
//! Pure code, no I/O: [`frame`] splits the byte stream into ticks and data frames with a
//! maximum size checked before anything is buffered, and [`control`] turns a data frame
//! into a typed control message plus its message term. The tokio side lives in
//! [`crate::node`].

pub mod control;
pub(crate) mod engine;
pub mod frame;
