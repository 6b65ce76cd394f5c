//! One distribution connection: the tokio driver of its [engine](crate::dist::engine).
//!
//! The engine decides everything (framing, read sizes, ticks, the peer's silence, write
//! deadlines, batching, when reading pauses); the driver, one task per connection, moves
//! bytes between it and the socket, the time into it, the frames other tasks queue
//! through the [`ConnHandle`] into it, and the messages that arrived to the node's
//! dispatch. Whatever ends the connection, the task reports why and then closes the
//! socket the way the engine says (gracefully when the local side ended it: see
//! [`Shutdown`](crate::dist::engine::Shutdown)), for no longer than the node's
//! [linger clock](super::linger) allows.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};

use crate::NodeName;
use crate::dist::control::{self, Control};
use crate::dist::engine::{self, Engine, Event};
use crate::dist::frame;
use crate::handshake::{DistFlags, Handshaked};
use crate::term::{Atom, DecodeLimits, Term};

use super::transport::{ReadHalf, WriteHalf};
use super::{NodeInner, SendError};

pub use crate::dist::engine::{DisconnectReason, Overload};

/// The replies a peer's messages provoked, encoded, for the driver to queue.
pub(crate) type Replies = Vec<Vec<u8>>;

/// How many frames other tasks may queue for a connection before a sender waits.
const OUTBOX: usize = 1024;

/// The node's handle on a live connection.
pub(crate) struct ConnHandle {
    pub(crate) id: u64,
    pub(crate) peer: NodeName,
    pub(crate) peer_atom: Atom,
    pub(crate) peer_creation: u32,
    pub(crate) flags: DistFlags,
    pub(crate) initiated_locally: bool,
    max_frame: usize,
    /// Frames other tasks queued, for the driver to take (allocated on first use).
    outbox: std::sync::Mutex<VecDeque<Vec<u8>>>,
    /// Wakes the driver: a frame was queued, or the connection closed.
    wake: Notify,
    /// Room in the outbox, a permit per frame; closed with the connection.
    room: Semaphore,
    closed: AtomicBool,
    reason: std::sync::Mutex<Option<DisconnectReason>>,
}

impl ConnHandle {
    /// Encodes and queues one control message (and message term).
    pub(crate) async fn send(
        &self,
        control: &Control,
        message: Option<&Term>,
    ) -> Result<(), SendError> {
        let buf = self.encode(control, message)?;
        // One permit per frame in the outbox: senders wait for room in turn.
        match self.room.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(SendError::ConnectionClosed(self.peer.clone())),
        }
        if self.push(buf) {
            Ok(())
        } else {
            Err(SendError::ConnectionClosed(self.peer.clone()))
        }
    }

    /// Queues a frame (its room taken) for the driver; `false` once the connection is
    /// closed. Checked under the outbox's lock, which [`close`](Self::close) takes too:
    /// a frame is either refused or in the outbox when the connection closes.
    fn push(&self, frame: Vec<u8>) -> bool {
        let mut q = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        q.push_back(frame);
        drop(q);
        self.wake.notify_one();
        true
    }

    /// Moves queued frames into the engine while it has room, and gives their room back
    /// to the senders.
    fn take_into(&self, engine: &mut Engine) {
        let mut q = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        let mut taken = 0;
        while engine.has_room() {
            match q.pop_front() {
                Some(f) => engine.queue(f),
                None => break,
            }
            taken += 1;
        }
        drop(q);
        if taken > 0 {
            self.room.add_permits(taken);
        }
    }

    /// Moves every frame still queued into the engine (a connection closed locally
    /// writes what was sent before the close), or drops them.
    fn drain(&self, into: Option<&mut Engine>) {
        let frames = std::mem::take(&mut *self.outbox.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(engine) = into {
            for f in frames {
                engine.queue(f);
            }
        }
    }

    /// Encodes a reply the peer provoked (the answer to a request, the notice of a
    /// monitor or link that cannot be set up) into `out`, which the connection's driver
    /// queues once the message is dispatched.
    ///
    /// The replies a peer provokes are bounded by the engine: while more than
    /// [`HIGH_WATER`](engine::HIGH_WATER) bytes wait to be written, the driver reads
    /// nothing more from the peer. A peer that sends requests faster than it reads the
    /// replies is slowed to the pace it reads at (logged once per connection); one that
    /// reads nothing is disconnected by the write timeout (`net_ticktime`). No task is
    /// spawned per reply.
    pub(crate) fn reply(&self, out: &mut Replies, control: Control, message: Option<Term>) {
        if let Some(buf) = self.encode_reply(&control, message.as_ref()) {
            out.push(buf);
        }
    }

    /// Queues a message if the connection's queue has room, and drops it otherwise: for a
    /// notice that is not worth waiting for, such as the kill of a remote call's worker
    /// after its caller gave up.
    pub(crate) fn try_send(&self, control: Control, message: Option<Term>) {
        let Some(buf) = self.encode_reply(&control, message.as_ref()) else {
            return;
        };
        match self.room.try_acquire() {
            Ok(permit) => {
                permit.forget();
                self.push(buf);
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                tracing::debug!(peer = %self.peer, "connection queue full: notice dropped");
            }
            Err(tokio::sync::TryAcquireError::Closed) => {}
        }
    }

    fn encode_reply(&self, control: &Control, message: Option<&Term>) -> Option<Vec<u8>> {
        self.encode(control, message)
            .inspect_err(|e| tracing::warn!(peer = %self.peer, error = %e, "cannot encode a reply"))
            .ok()
    }

    fn encode(&self, control: &Control, message: Option<&Term>) -> Result<Vec<u8>, SendError> {
        let downgraded;
        let control = match control {
            // SEND_SENDER only when the peer knows it.
            Control::Send { from: Some(_), to } if !self.flags.contains(DistFlags::SEND_SENDER) => {
                downgraded = Control::Send {
                    from: None,
                    to: to.clone(),
                };
                &downgraded
            }
            other => other,
        };
        let mut buf = Vec::with_capacity(64);
        let at = frame::start(&mut buf);
        control::encode(control, message, &mut buf)?;
        if frame::finish(&mut buf, at, self.max_frame).is_err() {
            return Err(SendError::TooLarge {
                len: buf.len(),
                max: self.max_frame,
            });
        }
        Ok(buf)
    }

    /// Whether the connection is still up.
    pub(crate) fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    /// Closes the connection; the first reason given wins.
    pub(crate) fn close(&self, reason: DisconnectReason) {
        if self.closed.load(Ordering::Acquire) {
            // Closed already, its reason set and its outbox shut.
            return;
        }
        {
            let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
            if r.is_none() {
                *r = Some(reason);
            }
        }
        {
            let _outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
            self.closed.store(true, Ordering::Release);
        }
        self.wake.notify_one();
        self.room.close();
    }

    pub(crate) fn reason(&self) -> DisconnectReason {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or(DisconnectReason::Local)
    }

    /// Whether the connection was closed by this side (and so closes gracefully).
    pub(crate) fn closed_locally(&self) -> bool {
        !self.is_open()
            && self
                .reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_none_or(DisconnectReason::is_local)
    }

    /// Whether the connection is hidden.
    pub(crate) fn is_hidden(&self) -> bool {
        !self.flags.contains(DistFlags::PUBLISHED)
    }
}

/// Parameters of the connection tasks.
#[derive(Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) net_ticktime: Duration,
    pub(crate) max_frame: usize,
}

/// What a new connection starts with.
pub(crate) struct Setup<'a> {
    pub(crate) id: u64,
    pub(crate) handshaked: &'a Handshaked,
    pub(crate) leftover: Vec<u8>,
    pub(crate) initiated_locally: bool,
    pub(crate) timing: Timing,
    pub(crate) decode_limits: DecodeLimits,
    /// The listener slot of an accepted connection, held while it lives.
    pub(crate) permit: Option<crate::listener::ConnectionPermit>,
    /// The clock that bounds the graceful close.
    pub(crate) linger: Arc<super::linger::Linger>,
    /// Counts the connection's task among the node's until it ends.
    pub(crate) tracked: super::tasks::Tracked,
}

/// Starts the task of a connection that finished its handshake (reading, writing,
/// closing) and returns its handle.
pub(crate) fn spawn(
    node: &Arc<NodeInner>,
    read: ReadHalf,
    write: WriteHalf,
    setup: Setup<'_>,
) -> Arc<ConnHandle> {
    let Setup {
        id,
        handshaked: hs,
        leftover,
        initiated_locally,
        timing,
        decode_limits,
        permit,
        linger,
        tracked,
    } = setup;
    let conn = Arc::new(ConnHandle {
        id,
        peer: hs.peer.clone(),
        peer_atom: Atom::from(hs.peer.shared()),
        peer_creation: hs.peer_creation,
        flags: hs.flags,
        initiated_locally,
        max_frame: timing.max_frame,
        outbox: std::sync::Mutex::new(VecDeque::new()),
        wake: Notify::new(),
        room: Semaphore::new(OUTBOX),
        closed: AtomicBool::new(false),
        reason: std::sync::Mutex::new(None),
    });
    let weak = Arc::downgrade(node);
    let c = conn.clone();
    let task = async move {
        // However this task ends, even dropped with its runtime, the handle is closed:
        // senders then fail instead of waiting for a driver that is gone.
        let _closes = CloseOnDrop(c.clone());
        let (mut read, mut write) = (read, write);
        let cfg = engine::Config {
            net_ticktime: timing.net_ticktime,
            max_frame: timing.max_frame,
            decode_limits,
        };
        let start = now();
        let mut engine = Engine::new(start, cfg, &leftover);
        drop(leftover);
        let mut out = Batch::default();
        let reason = drive(
            &mut engine,
            start,
            &mut read,
            &mut write,
            &mut out,
            &weak,
            &c,
        )
        .await;
        // The handle is closed first, so that nothing more gets in; frames sent through
        // it before a local close are written too (an engine closed already drops them).
        c.close(reason.clone());
        if reason.is_local() {
            c.drain(Some(&mut engine));
        }
        engine.close(reason);
        let graceful = !engine.is_finished();
        if let Some(node) = weak.upgrade() {
            if graceful {
                node.closing_started(&c.peer);
            }
            node.connection_closed(&c, c.reason());
        }
        if graceful {
            let close = close_gracefully(&mut engine, &mut read, &mut write, &mut out);
            if linger.bound(close).await.is_none() {
                engine.abandon();
            }
        }
        drop(engine);
        write.release();
        drop(read);
        // The listener slot is held for as long as the connection lives.
        drop(permit);
        if graceful && let Some(node) = weak.upgrade() {
            node.closing_finished(&c.peer);
        }
        drop(tracked);
    };
    // Boxed: spawning moves a future several times, and this one is a few kilobytes.
    tokio::spawn(Box::pin(task));
    conn
}

/// Closes a connection's handle (and drops the frames it still holds) when dropped.
struct CloseOnDrop(Arc<ConnHandle>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(DisconnectReason::Local);
        self.0.drain(None);
    }
}

/// The time, as the pure parts of the node (the engine, the call table) take it: tokio's
/// clock, so that a paused runtime's time is theirs too.
pub(super) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The batch being written, and how much of it is.
#[derive(Default)]
struct Batch {
    bytes: Option<Vec<u8>>,
    written: usize,
}

impl Batch {
    /// Takes the engine's next batch if none is being written.
    fn refill(&mut self, engine: &mut Engine, now: Instant) {
        if self.bytes.is_none() {
            self.bytes = engine.poll_transmit(now);
            self.written = 0;
        }
    }

    /// Writes some more of the batch (see [`write_some`]); the batch's buffer once all
    /// of it is written, for the engine to take back.
    async fn write<W: AsyncWrite + Unpin>(
        &mut self,
        write: &mut W,
    ) -> std::io::Result<Option<Vec<u8>>> {
        match write_some(write, self.bytes.as_deref(), self.written).await? {
            Wrote::Bytes(n) => {
                self.written += n;
                Ok(None)
            }
            Wrote::All => Ok(self.bytes.take()),
        }
    }
}

/// Runs the connection until the engine, the socket, the node or a local close ends it,
/// and returns why.
async fn drive<R, W>(
    engine: &mut Engine,
    engine_start: Instant,
    read: &mut R,
    write: &mut W,
    out: &mut Batch,
    node: &std::sync::Weak<NodeInner>,
    conn: &Arc<ConnHandle>,
) -> DisconnectReason
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut replies = Replies::new();
    let mut told = false;
    // The time of the last event: one clock read per event.
    let mut t = engine_start;
    // The timer is set to the engine's next deadline, and moved only when that comes
    // earlier: a deadline that moved later (the next tick, after each write) lets it fire
    // early once, to no effect, instead of re-registering it at every event.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed: Option<tokio::time::Instant> = None;
    // One wait for the handle's wake-ups, kept across turns of the loop.
    let wake = conn.wake.notified();
    tokio::pin!(wake);
    loop {
        if !conn.is_open() {
            return conn.reason();
        }
        while let Some(event) = engine.poll_event() {
            // Each message counts against the task's budget: a peer that floods this
            // connection gets its turn, and the node's other tasks theirs.
            tokio::task::consume_budget().await;
            match event {
                Event::Message(msg) => {
                    let Some(node) = node.upgrade() else {
                        return DisconnectReason::NodeStopped;
                    };
                    node.dispatch(conn, msg, &mut replies);
                    for reply in replies.drain(..) {
                        engine.queue(reply);
                    }
                    // Closed by what it sent (over a limit): the rest is not read.
                    if !conn.is_open() {
                        return conn.reason();
                    }
                }
                Event::Undecodable(e) => {
                    tracing::warn!(peer = %conn.peer, error = %e, "ignoring an undecodable distribution frame");
                }
            }
        }
        if let Some(reason) = engine.closed() {
            return reason.clone();
        }
        if engine.reading_paused() && !told {
            told = true;
            tracing::warn!(peer = %conn.peer, "more than 256 KiB wait to be written to the peer (it reads slower than it is sent to, or sends requests faster than it reads the replies): reading from it is paused until it catches up");
        }
        conn.take_into(engine);
        out.refill(engine, t);
        if let Some(d) = engine.poll_timeout().map(tokio::time::Instant::from_std)
            && armed.is_none_or(|a| d < a)
        {
            timer.as_mut().reset(d);
            armed = Some(d);
        }
        let wants_read = engine.wants_read();
        // No branch goes first: a peer that is always readable, or a queue that is
        // always writable, must not starve the other direction or the timer.
        tokio::select! {
            // Closed, or frames queued: the top of the loop sees which.
            () = &mut wake => {
                wake.set(conn.wake.notified());
                t = now();
            }
            () = &mut timer, if armed.is_some() => {
                armed = None;
                t = now();
                engine.handle_timeout(t);
            }
            r = out.write(write), if out.bytes.is_some() => match r {
                Ok(None) => {}
                Ok(Some(batch)) => {
                    t = now();
                    engine.on_transmitted(t, batch);
                }
                Err(e) => return DisconnectReason::from_io(&e),
            },
            r = read.read_buf(engine.read_buffer()), if wants_read => match r {
                Ok(n) => {
                    t = now();
                    engine.handle_read(t, n);
                }
                Err(e) => return DisconnectReason::from_io(&e),
            },
        }
    }
}

/// One step of writing a batch.
enum Wrote {
    /// Some more bytes of it.
    Bytes(usize),
    /// All of it, and flushed.
    All,
}

/// Writes some of what is left of `batch` after `written` bytes, or flushes once all of
/// it is written (free on TCP; under TLS it pushes out what rustls still buffers).
/// Cancel-safe: a write dropped before it completes has written nothing, and a flush
/// dropped is started again.
async fn write_some<W: AsyncWrite + Unpin>(
    write: &mut W,
    batch: Option<&[u8]>,
    written: usize,
) -> std::io::Result<Wrote> {
    let Some(rest) = batch.and_then(|b| b.get(written..)) else {
        return std::future::pending().await;
    };
    if rest.is_empty() {
        write.flush().await?;
        return Ok(Wrote::All);
    }
    match write.write(rest).await? {
        0 => Err(std::io::ErrorKind::WriteZero.into()),
        n => Ok(Wrote::Bytes(n)),
    }
}

/// Closes a connection the local side ended as its engine says: writes what was queued
/// before the close, shuts the write side, and reads (dropping what it reads) until the
/// peer has closed its side; a socket error gives the close up. The caller bounds the
/// time it takes (see [`super::linger`]).
async fn close_gracefully<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    engine: &mut Engine,
    read: &mut R,
    write: &mut W,
    out: &mut Batch,
) {
    // The engine takes no decision on time once closed: one reading serves.
    let t = now();
    while !engine.is_finished() {
        out.refill(engine, t);
        if engine.poll_shutdown() {
            if write.shutdown().await.is_err() {
                engine.abandon();
            }
            continue;
        }
        let wants_read = engine.wants_read();
        if out.bytes.is_none() && wants_read {
            // The usual case: nothing was left to write, our FIN is out.
            match read.read_buf(engine.read_buffer()).await {
                Ok(n) => engine.handle_read(t, n),
                Err(_) => engine.abandon(),
            }
            continue;
        }
        tokio::select! {
            r = out.write(write), if out.bytes.is_some() => match r {
                Ok(None) => {}
                Ok(Some(batch)) => engine.on_transmitted(t, batch),
                Err(_) => engine.abandon(),
            },
            r = read.read_buf(engine.read_buffer()), if wants_read => match r {
                Ok(n) => engine.handle_read(t, n),
                Err(_) => engine.abandon(),
            },
            else => engine.abandon(),
        }
    }
}
