//! One distribution connection: a reader and a writer around a socket, in one task.
//!
//! The writer owns the write half: it batches queued frames into one write and sends a
//! tick whenever it has been idle for a quarter of `net_ticktime`, as OTP does. The
//! reader owns the read half: it splits frames with the pure decoder in
//! [`crate::dist::frame`], never buffering more than the frame it is reading (whose
//! length was checked against the maximum first), decodes control messages and hands
//! them to the node. If nothing at all arrives for `net_ticktime`, the peer is declared
//! dead. Whichever ends first closes the connection and reports why.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};

use crate::NodeName;
use crate::dist::control::{self, Control};
use crate::dist::frame::{self, Frame};
use crate::handshake::{DistFlags, Handshaked};
use crate::term::{Atom, DecodeLimits, Term};
use crate::wire::Status;

use super::{NodeInner, SendError};

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

/// Frames queued for the writer.
pub(crate) enum Outbound {
    Frame(Vec<u8>),
}

/// The node's handle on a live connection.
pub(crate) struct ConnHandle {
    pub(crate) id: u64,
    pub(crate) peer: NodeName,
    pub(crate) peer_atom: Atom,
    pub(crate) peer_creation: u32,
    pub(crate) flags: DistFlags,
    pub(crate) initiated_locally: bool,
    tx: mpsc::Sender<Outbound>,
    max_frame: usize,
    /// Whether the peer has already been told, in the log, that its replies wait.
    backpressured: AtomicBool,
    closed: AtomicBool,
    close_signal: Notify,
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
        self.tx
            .send(Outbound::Frame(buf))
            .await
            .map_err(|_| SendError::ConnectionClosed(self.peer.clone()))
    }

    /// Queues a reply the peer provoked (the answer to a request, the notice of a
    /// monitor or link that cannot be set up) from the connection's reader.
    ///
    /// The replies a peer provokes are bounded by the writer's queue: when it is full,
    /// this waits for room, and while it waits the reader reads nothing more from the
    /// peer. A peer that sends requests faster than it reads the replies is slowed to the
    /// pace it reads at (logged once per connection); one that reads nothing is
    /// disconnected by the writer's timeout (`net_ticktime`). No task is spawned per
    /// reply.
    pub(crate) async fn reply(&self, control: Control, message: Option<Term>) {
        let Some(buf) = self.encode_reply(&control, message.as_ref()) else {
            return;
        };
        let frame = match self.tx.try_send(Outbound::Frame(buf)) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return,
            Err(mpsc::error::TrySendError::Full(frame)) => frame,
        };
        if !self.backpressured.swap(true, Ordering::Relaxed) {
            tracing::warn!(peer = %self.peer, "the peer sends requests faster than it reads the replies: reading from it is paused while its replies wait");
        }
        // Ends when the writer takes a frame, or with the connection: a writer that
        // cannot write for `net_ticktime` ends it.
        let _ = self.tx.send(frame).await;
    }

    /// Queues a message if the writer's queue has room, and drops it otherwise: for a
    /// notice that is not worth waiting for, such as the kill of a remote call's worker
    /// after its caller gave up.
    pub(crate) fn try_send(&self, control: Control, message: Option<Term>) {
        let Some(buf) = self.encode_reply(&control, message.as_ref()) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(Outbound::Frame(buf)) {
            tracing::debug!(peer = %self.peer, "writer queue full: notice dropped");
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

    /// Whether `pid`, named as the sender of a signal that arrived on this connection,
    /// is a process of the peer, as the protocol requires; a signal that names another
    /// node's process is ignored (it would make this node hold state, or send, for a
    /// node that did not ask).
    pub(crate) fn sent_by_peer(&self, pid: &crate::term::Pid) -> bool {
        let ok = pid.node == self.peer_atom;
        if !ok {
            tracing::debug!(peer = %self.peer, sender = ?pid, "signal naming a process of another node as its sender ignored");
        }
        ok
    }

    /// Whether the connection is still up.
    pub(crate) fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    /// Closes the connection; the first reason given wins.
    pub(crate) fn close(&self, reason: DisconnectReason) {
        {
            let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
            if r.is_none() {
                *r = Some(reason);
            }
        }
        self.closed.store(true, Ordering::Release);
        self.close_signal.notify_waiters();
        self.close_signal.notify_one();
    }

    pub(crate) fn reason(&self) -> DisconnectReason {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or(DisconnectReason::Local)
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
pub(crate) fn spawn<R, W>(
    node: &Arc<NodeInner>,
    read: R,
    write: W,
    setup: Setup<'_>,
) -> Arc<ConnHandle>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: WriteHalf,
{
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
    let (tx, rx) = mpsc::channel(1024);
    let conn = Arc::new(ConnHandle {
        id,
        peer: hs.peer.clone(),
        peer_atom: Atom::from(hs.peer.as_str()),
        peer_creation: hs.peer_creation,
        flags: hs.flags,
        initiated_locally,
        tx,
        max_frame: timing.max_frame,
        backpressured: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        close_signal: Notify::new(),
        reason: std::sync::Mutex::new(None),
    });
    let weak = Arc::downgrade(node);
    let c = conn.clone();
    let task = async move {
        let (mut read, mut write) = (read, write);
        let reason = tokio::select! {
            r = reader(&mut read, &weak, &c, leftover, timing, &decode_limits) => r,
            r = writer(&mut write, rx, timing) => r,
            () = closed(&c) => c.reason(),
        };
        c.close(reason.clone());
        let graceful = closed_locally(&reason);
        if let Some(node) = weak.upgrade() {
            if graceful {
                node.closing_started(&c.peer);
            }
            node.connection_closed(&c, c.reason());
        }
        if graceful {
            let _ = linger.bound(close_gracefully(&mut read, &mut write)).await;
        }
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

/// The write half of a connection's transport.
pub(crate) trait WriteHalf: AsyncWrite + Unpin + Send + 'static {
    /// Lets go of the write half once the connection is over. Closing the socket ends
    /// the connection anyway (a FIN, or a reset if the peer's bytes were left unread),
    /// so a TCP write half skips its own `shutdown` call on drop.
    fn release(self);
}

impl WriteHalf for tokio::net::tcp::OwnedWriteHalf {
    fn release(self) {
        self.forget();
    }
}

impl<T: AsyncRead + AsyncWrite + Send + 'static> WriteHalf for tokio::io::WriteHalf<T> {
    fn release(self) {}
}

pub(crate) fn closed_locally(reason: &DisconnectReason) -> bool {
    matches!(
        reason,
        DisconnectReason::Local | DisconnectReason::Replaced | DisconnectReason::NodeStopped
    )
}

/// Sends our FIN and waits until the peer closes its side, discarding what it still
/// sends; the caller bounds the wait (see [`super::linger`]). The peer has then taken
/// the connection down, so a new connection to it is not met with `alive` (an Erlang
/// node that still holds the old connection makes the initiator confirm and then tears
/// the old one down first, which costs a round trip and, on OTP, milliseconds).
async fn close_gracefully<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    read: &mut R,
    write: &mut W,
) {
    if write.shutdown().await.is_err() {
        return;
    }
    // Small: what a peer still sends after our FIN is read only to be dropped.
    let mut sink = [0u8; 64];
    while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
}

async fn closed(c: &ConnHandle) {
    loop {
        let notified = c.close_signal.notified();
        if !c.is_open() {
            return;
        }
        notified.await;
    }
}

async fn reader<R: AsyncRead + Unpin>(
    read: &mut R,
    node: &std::sync::Weak<NodeInner>,
    conn: &Arc<ConnHandle>,
    leftover: Vec<u8>,
    timing: Timing,
    limits: &DecodeLimits,
) -> DisconnectReason {
    let mut buf = bytes::BytesMut::from(&leftover[..]);
    // Until the first message, only ticks (4 bytes) are expected: an idle connection
    // keeps a small buffer.
    let mut quiet = true;
    loop {
        loop {
            let (consumed, payload) = match frame::decode(&buf, timing.max_frame) {
                Ok(Status::Complete((Frame::Tick, n))) => (n, None),
                Ok(Status::Complete((Frame::Data(payload), n))) => {
                    (n, Some(control::decode(payload, limits)))
                }
                Ok(Status::Partial) => break,
                Err(frame::FrameError::TooLarge { len, max }) => {
                    return DisconnectReason::FrameTooLarge { len, max };
                }
            };
            bytes::Buf::advance(&mut buf, consumed);
            quiet &= payload.is_none();
            match payload {
                None => {}
                Some(Ok(msg)) => {
                    let Some(node) = node.upgrade() else {
                        return DisconnectReason::NodeStopped;
                    };
                    node.dispatch(conn, msg).await;
                    // Closed by what it sent (over a limit): the rest is not read.
                    if !conn.is_open() {
                        return conn.reason();
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(peer = %conn.peer, error = %e, "ignoring an undecodable distribution frame");
                }
            }
        }
        // Grow the buffer progressively: a peer announcing a large frame must send it
        // before the memory for it is taken.
        let (least, guess) = if quiet {
            (64, 64)
        } else {
            (4 * 1024, 8 * 1024)
        };
        let want =
            frame::needed(&buf, timing.max_frame).map_or(guess, |n| n.saturating_sub(buf.len()));
        buf.reserve(want.clamp(least, 1024 * 1024));
        match tokio::time::timeout(timing.net_ticktime, read.read_buf(&mut buf)).await {
            Err(_) => return DisconnectReason::TickTimeout(timing.net_ticktime),
            Ok(Ok(0)) => return DisconnectReason::ClosedByPeer,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return match e.kind() {
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof => {
                        DisconnectReason::ClosedByPeer
                    }
                    _ => DisconnectReason::Io(e.to_string()),
                };
            }
        }
    }
}

async fn writer<W: AsyncWrite + Unpin>(
    write: &mut W,
    mut rx: mpsc::Receiver<Outbound>,
    timing: Timing,
) -> DisconnectReason {
    let tick_every = timing.net_ticktime / 4;
    // Grown by the first frames, not up front: a connection that never sends (a probe,
    // a health check) costs no buffer, and freeing a large one makes the allocator
    // consolidate its free lists.
    let mut batch = Vec::new();
    loop {
        match tokio::time::timeout(tick_every, rx.recv()).await {
            Err(_) => batch.extend_from_slice(&frame::TICK),
            Ok(None) => {
                let _ = write.shutdown().await;
                return DisconnectReason::Local;
            }
            Ok(Some(Outbound::Frame(f))) => {
                if batch.is_empty() && f.len() >= 64 * 1024 {
                    batch = f;
                } else {
                    batch.extend_from_slice(&f);
                }
                while batch.len() < 256 * 1024 {
                    match rx.try_recv() {
                        Ok(Outbound::Frame(f)) => batch.extend_from_slice(&f),
                        Err(_) => break,
                    }
                }
            }
        }
        // The flush is free on TCP; under TLS it pushes out what rustls still buffers.
        let send = async {
            write.write_all(&batch).await?;
            write.flush().await
        };
        match tokio::time::timeout(timing.net_ticktime, send).await {
            Err(_) => return DisconnectReason::WriteTimeout(timing.net_ticktime),
            Ok(Err(e)) => {
                return match e.kind() {
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                        DisconnectReason::ClosedByPeer
                    }
                    _ => DisconnectReason::Io(e.to_string()),
                };
            }
            Ok(Ok(())) => {}
        }
        if batch.capacity() > 1024 * 1024 {
            batch = Vec::new();
        } else {
            batch.clear();
        }
    }
}
