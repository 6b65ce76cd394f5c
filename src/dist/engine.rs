//! The connection engine: one distribution connection after the handshake, as a pure
//! state machine.
//!
//! The engine owns everything a connection decides: how frames are split from the bytes
//! read ([`super::frame`]) and decoded ([`super::control`]), how much is read at a time,
//! when a tick is due, when the peer has been silent for `net_ticktime`, when a write has
//! taken too long, how frames are batched into writes, and when reading pauses because
//! the peer does not read what it provoked. It does no I/O and reads no clock: the time is
//! passed in, in the shape of `quinn-proto`.
//!
//! A driver moves bytes and time in and out:
//!
//! - bytes read go into [`Engine::read_buffer`] (or [`Engine::handle_input`]), then
//!   [`Engine::handle_read`] is told the time;
//! - [`Engine::poll_event`] hands out the messages that arrived, one at a time;
//! - frames to send go into [`Engine::queue`]; [`Engine::poll_transmit`] hands out the
//!   next batch to write, and [`Engine::on_transmitted`] says when it is written;
//! - [`Engine::poll_timeout`] says when to call [`Engine::handle_timeout`] next;
//! - once [`Engine::closed`] is `Some`, the connection is over for the node: no event
//!   comes out and no frame goes in any more;
//! - the socket is closed once [`Engine::is_finished`]. Until then, a connection the
//!   local side ended is closed gracefully ([`Shutdown`]): the driver keeps writing what
//!   [`Engine::poll_transmit`] hands out, shuts its write side when
//!   [`Engine::poll_shutdown`] says so, and reads (what it reads is dropped) until the
//!   peer has closed its side too. How long that may take is the driver's bound: the
//!   node's linger clock, after which it calls [`Engine::abandon`].
//!
//! Each step costs bounded memory: the read buffer grows only as far as the frame being
//! read needs (its length checked against the maximum first), events are decoded one at
//! a time from that buffer, and the driver is told to stop reading
//! ([`Engine::wants_read`]) while more than [`HIGH_WATER`] bytes wait to be written.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use super::control::{self, ControlError, DistMessage};
use super::frame::{self, Frame};
use crate::term::DecodeLimits;
use crate::wire::Status;

/// Bytes queued for writing above which the engine asks its driver to stop reading (and
/// to stop taking frames from other senders).
pub(crate) const HIGH_WATER: usize = 256 * 1024;

/// A batch grows from queued frames up to this size.
const BATCH: usize = 256 * 1024;

/// A frame at least this large is written on its own, without being copied into a batch.
const WHOLE_FRAME: usize = 64 * 1024;

/// A write buffer above this size is not kept for the next batch.
const KEEP_BUFFER: usize = 1024 * 1024;

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The peer closed the connection.
    ClosedByPeer,
    /// Nothing arrived from the peer for `net_ticktime`.
    TickTimeout(Duration),
    /// The peer announced a frame above the maximum frame size.
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A socket error.
    Io(String),
    /// A write did not complete within `net_ticktime`: the peer stopped reading.
    WriteTimeout(Duration),
    /// The local side disconnected.
    Local,
    /// A newer connection to the same node replaced this one.
    Replaced,
    /// The local node stopped.
    NodeStopped,
    /// The peer asked the node to hold more for it than the node's limits allow.
    Overloaded(Overload),
}

/// What a peer asked too much of (see [`DisconnectReason::Overloaded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overload {
    /// Monitors and links of one local process: the peer would have held more than
    /// [`MAX_MONITORS_AND_LINKS_PER_PEER`](crate::node::MAX_MONITORS_AND_LINKS_PER_PEER).
    MonitorsAndLinks {
        /// The limit.
        max: usize,
    },
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DisconnectReason::ClosedByPeer => f.write_str("closed by the peer"),
            DisconnectReason::TickTimeout(t) => {
                write!(f, "no data or tick from the peer for {t:?} (net_ticktime)")
            }
            DisconnectReason::FrameTooLarge { len, max } => {
                write!(
                    f,
                    "peer announced a frame of {len} bytes, above the limit of {max}"
                )
            }
            DisconnectReason::Io(e) => write!(f, "socket error: {e}"),
            DisconnectReason::WriteTimeout(t) => write!(f, "the peer stopped reading for {t:?}"),
            DisconnectReason::Local => f.write_str("disconnected locally"),
            DisconnectReason::Replaced => f.write_str("replaced by a newer connection"),
            DisconnectReason::NodeStopped => f.write_str("the local node stopped"),
            DisconnectReason::Overloaded(Overload::MonitorsAndLinks { max }) => write!(
                f,
                "overloaded: the peer monitored or linked one local process more than {max} times"
            ),
        }
    }
}

impl DisconnectReason {
    /// Whose fault the end of the connection is.
    pub fn fault(&self) -> crate::Fault {
        use crate::Fault;
        match self {
            DisconnectReason::ClosedByPeer | DisconnectReason::Io(_) => Fault::Unreachable,
            DisconnectReason::TickTimeout(_) | DisconnectReason::WriteTimeout(_) => Fault::Timeout,
            DisconnectReason::FrameTooLarge { .. } | DisconnectReason::Overloaded(_) => {
                Fault::PeerMisbehaved
            }
            DisconnectReason::Replaced => Fault::Contention,
            DisconnectReason::Local | DisconnectReason::NodeStopped => Fault::Local,
        }
    }

    /// Whether the local side ended the connection (and so closes it gracefully).
    pub(crate) fn is_local(&self) -> bool {
        matches!(
            self,
            DisconnectReason::Local | DisconnectReason::Replaced | DisconnectReason::NodeStopped
        )
    }

    /// The reason a failed read or write gives: a reset or a broken pipe is the peer
    /// closing, anything else a socket error.
    pub(crate) fn from_io(e: &std::io::Error) -> DisconnectReason {
        use std::io::ErrorKind::*;
        match e.kind() {
            ConnectionReset | UnexpectedEof | BrokenPipe | ConnectionAborted => {
                DisconnectReason::ClosedByPeer
            }
            _ => DisconnectReason::Io(e.to_string()),
        }
    }
}

/// How far the close of a connection has got.
///
/// A connection the peer ended, or that failed, is closed at once. One the local side
/// ended ([`DisconnectReason::is_local`]) is closed the way a well-behaved TCP peer
/// closes: the frames already queued are written, then the write side is shut (our
/// FIN), then the peer's own FIN is awaited. The peer has then taken the connection
/// down, so a new connection to it is not met with `alive` (an Erlang node that still
/// holds the old connection makes the initiator confirm and then tears the old one down
/// first, which costs a round trip and, on OTP, milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shutdown {
    /// The connection is open.
    Open,
    /// Writing what was queued before the close.
    Flushing,
    /// Our FIN is sent (or due): waiting for the peer's.
    AwaitingPeer,
    /// Nothing more to do: the socket can be dropped.
    Finished,
}

/// What the engine is configured with.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The peer is declared dead after this long without a byte from it, and a write that
    /// takes this long ends the connection; a tick is sent after a quarter of it idle.
    pub(crate) net_ticktime: Duration,
    /// The largest frame accepted.
    pub(crate) max_frame: usize,
    /// Limits on the terms of a message.
    pub(crate) decode_limits: DecodeLimits,
}

/// Something that arrived.
#[derive(Debug)]
pub(crate) enum Event {
    /// A control message, with its message term if any.
    Message(DistMessage),
    /// A data frame that does not decode: the connection goes on without it.
    Undecodable(ControlError),
}

/// One connection's state.
#[derive(Debug)]
pub(crate) struct Engine {
    cfg: Config,
    /// Bytes read and not yet split into frames.
    inbuf: BytesMut,
    /// No data frame has arrived yet: the read buffer stays small (ticks are 4 bytes).
    quiet: bool,
    /// When the peer last sent a byte (or when reading last resumed after a pause).
    last_input: Instant,
    /// Frames waiting to be written, and their total size.
    outq: VecDeque<Vec<u8>>,
    queued: usize,
    /// The last batch was handed out at this time.
    last_output: Instant,
    /// A batch is being written since this time.
    in_flight: Option<Instant>,
    /// The buffer of the last written batch, kept for the next.
    spare: Vec<u8>,
    /// Reading is paused because too much waits to be written.
    paused: bool,
    closed: Option<DisconnectReason>,
    shutdown: Shutdown,
    /// The peer closed its side (after ours was closed).
    peer_finished: bool,
}

impl Engine {
    /// A connection that finished its handshake at `now`; `leftover` is what was read
    /// after the handshake's last message.
    pub(crate) fn new(now: Instant, cfg: Config, leftover: &[u8]) -> Engine {
        Engine {
            cfg,
            inbuf: BytesMut::from(leftover),
            quiet: true,
            last_input: now,
            outq: VecDeque::new(),
            queued: 0,
            last_output: now,
            in_flight: None,
            spare: Vec::new(),
            paused: false,
            closed: None,
            shutdown: Shutdown::Open,
            peer_finished: false,
        }
    }

    /// Why the connection ended, once it has.
    pub(crate) fn closed(&self) -> Option<&DisconnectReason> {
        self.closed.as_ref()
    }

    /// Ends the connection; the first reason given wins. A reason of the local side
    /// starts a graceful close ([`Shutdown`]), any other ends it at once.
    pub(crate) fn close(&mut self, reason: DisconnectReason) {
        if self.closed.is_some() {
            return;
        }
        self.shutdown = if reason.is_local() {
            Shutdown::Flushing
        } else {
            Shutdown::Finished
        };
        self.closed = Some(reason);
        // Nothing more is read for the node: what was read and not handed out is dropped.
        self.inbuf.clear();
    }

    /// How far the close has got.
    #[cfg(test)]
    pub(crate) fn shutdown(&self) -> Shutdown {
        self.shutdown
    }

    /// Whether the connection is closed and the close is over: the socket can be
    /// dropped.
    pub(crate) fn is_finished(&self) -> bool {
        self.shutdown == Shutdown::Finished
    }

    /// Whether to shut the write side now (send our FIN): everything queued before the
    /// close is written. Says so once.
    pub(crate) fn poll_shutdown(&mut self) -> bool {
        if self.shutdown != Shutdown::Flushing || self.in_flight.is_some() || !self.outq.is_empty()
        {
            return false;
        }
        self.shutdown = if self.peer_finished {
            Shutdown::Finished
        } else {
            Shutdown::AwaitingPeer
        };
        true
    }

    /// Gives the close up (its time is up, or the socket failed): the socket is dropped
    /// without waiting any longer.
    pub(crate) fn abandon(&mut self) {
        if self.closed.is_none() {
            self.close(DisconnectReason::Local);
        }
        self.shutdown = Shutdown::Finished;
    }

    /// Whether the driver should read: the connection is open, every frame read so far
    /// has been handed out, and the peer reads what it is sent; or the connection is
    /// closing and the peer has not closed its side yet.
    pub(crate) fn wants_read(&self) -> bool {
        match self.shutdown {
            Shutdown::Open => !self.paused && !self.has_frame(),
            Shutdown::Flushing | Shutdown::AwaitingPeer => !self.peer_finished,
            Shutdown::Finished => false,
        }
    }

    /// Whether reading is paused because more than [`HIGH_WATER`] bytes wait to be
    /// written.
    pub(crate) fn reading_paused(&self) -> bool {
        self.paused
    }

    /// Whether more frames may be queued by senders that can wait ([`HIGH_WATER`]).
    pub(crate) fn has_room(&self) -> bool {
        self.closed.is_none() && self.queued < HIGH_WATER
    }

    /// The buffer to read into, with room for what the frame being read needs: a small
    /// step while only ticks have arrived, up to 1 MiB at a time for a large frame, never
    /// more than the frame's checked length.
    pub(crate) fn read_buffer(&mut self) -> &mut BytesMut {
        if self.closed.is_some() {
            // Closing: what the peer still sends is read only to be dropped.
            self.inbuf.clear();
            self.inbuf.reserve(64);
            return &mut self.inbuf;
        }
        let (least, guess) = if self.quiet {
            (64, 64)
        } else {
            (4 * 1024, 8 * 1024)
        };
        let want = frame::needed(&self.inbuf, self.cfg.max_frame)
            .map_or(guess, |n| n.saturating_sub(self.inbuf.len()));
        self.inbuf.reserve(want.clamp(least, 1024 * 1024));
        &mut self.inbuf
    }

    /// Bytes were read into [`read_buffer`](Self::read_buffer) at `now`; `n == 0` means
    /// the peer closed its side.
    pub(crate) fn handle_read(&mut self, now: Instant, n: usize) {
        if self.closed.is_some() {
            self.inbuf.clear();
            if n == 0 {
                self.peer_finished = true;
                if self.shutdown == Shutdown::AwaitingPeer {
                    self.shutdown = Shutdown::Finished;
                }
            }
            return;
        }
        if n == 0 {
            self.close(DisconnectReason::ClosedByPeer);
        } else {
            self.last_input = now;
        }
    }

    /// Bytes arrived at `now` (copied into the read buffer).
    #[cfg(test)]
    pub(crate) fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        self.inbuf.extend_from_slice(bytes);
        self.handle_read(now, bytes.len());
    }

    /// Whether the read buffer holds a whole frame (or a length over the limit).
    fn has_frame(&self) -> bool {
        !matches!(
            frame::decode(&self.inbuf, self.cfg.max_frame),
            Ok(Status::Partial)
        )
    }

    /// The next message that arrived, decoded from the read buffer; ticks are consumed
    /// on the way. A frame over the maximum closes the connection.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        while self.closed.is_none() {
            let (consumed, event) = match frame::decode(&self.inbuf, self.cfg.max_frame) {
                Ok(Status::Partial) => return None,
                Ok(Status::Complete((Frame::Tick, n))) => (n, None),
                Ok(Status::Complete((Frame::Data(payload), n))) => {
                    let event = match control::decode(payload, &self.cfg.decode_limits) {
                        Ok(m) => Event::Message(m),
                        Err(e) => Event::Undecodable(e),
                    };
                    (n, Some(event))
                }
                Err(frame::FrameError::TooLarge { len, max }) => {
                    self.close(DisconnectReason::FrameTooLarge { len, max });
                    return None;
                }
            };
            self.inbuf.advance(consumed);
            if event.is_some() {
                self.quiet = false;
                return event;
            }
        }
        None
    }

    /// Queues one encoded frame (length prefix included) for writing. Replies the peer
    /// provoked are queued whatever the queue holds: reading pauses instead, so what the
    /// peer can make the node hold is bounded by what one read returns.
    pub(crate) fn queue(&mut self, frame: Vec<u8>) {
        if self.closed.is_some() {
            return;
        }
        self.queued += frame.len();
        self.outq.push_back(frame);
        // Only a written batch resumes reading (and restarts the peer's silence clock).
        if self.queued > HIGH_WATER {
            self.paused = true;
        }
    }

    /// The next batch to write, if nothing is being written: queued frames joined up to
    /// 256 KiB (a large frame goes alone, uncopied). While the connection is open, or
    /// while its graceful close writes what was queued before it.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if !matches!(self.shutdown, Shutdown::Open | Shutdown::Flushing) || self.in_flight.is_some()
        {
            return None;
        }
        let first = self.outq.pop_front()?;
        self.queued -= first.len();
        let mut batch = if first.len() >= WHOLE_FRAME {
            first
        } else {
            let mut b = std::mem::take(&mut self.spare);
            b.extend_from_slice(&first);
            b
        };
        while batch.len() < BATCH {
            let Some(f) = self.outq.pop_front() else {
                break;
            };
            self.queued -= f.len();
            batch.extend_from_slice(&f);
        }
        self.in_flight = Some(now);
        self.last_output = now;
        Some(batch)
    }

    /// The batch handed out last was written (and flushed) at `now`; its buffer comes
    /// back for reuse.
    pub(crate) fn on_transmitted(&mut self, now: Instant, mut batch: Vec<u8>) {
        self.in_flight = None;
        self.last_output = now;
        if batch.capacity() <= KEEP_BUFFER {
            batch.clear();
            self.spare = batch;
        }
        if self.paused && self.queued <= HIGH_WATER {
            self.paused = false;
            // The peer's silence while this side did not read says nothing about it.
            self.last_input = now;
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next: the peer's silence
    /// limit (while reading), the write limit (while writing), or the next tick (while
    /// idle). None once closed: the driver bounds a graceful close.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        let t = self.cfg.net_ticktime;
        let silence = (!self.paused).then(|| self.last_input + t);
        let write = self.in_flight.map(|since| since + t);
        let tick =
            (self.in_flight.is_none() && self.outq.is_empty()).then(|| self.last_output + t / 4);
        [silence, write, tick].into_iter().flatten().min()
    }

    /// Time passed: a silent peer or a stalled write ends the connection; an idle one
    /// gets a tick.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        let t = self.cfg.net_ticktime;
        if let Some(since) = self.in_flight
            && now >= since + t
        {
            self.close(DisconnectReason::WriteTimeout(t));
            return;
        }
        if !self.paused && now >= self.last_input + t {
            self.close(DisconnectReason::TickTimeout(t));
            return;
        }
        if self.in_flight.is_none() && self.outq.is_empty() && now >= self.last_output + t / 4 {
            self.queue(frame::TICK.to_vec());
        }
    }
}

#[cfg(test)]
mod tests;
