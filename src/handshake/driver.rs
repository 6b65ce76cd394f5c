//! Drives the handshake state machines over an async byte stream.

use std::time::Duration;

use rand::RngExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::messages::{LengthPrefix, MAX_HANDSHAKE_MESSAGE, decode_frame};
use super::{
    Acceptor, AcceptorConfig, AcceptorProgress, HandshakeError, HandshakeStep, Handshaked,
    Initiator, InitiatorConfig, InitiatorProgress, PeerHello, StatusDecision,
};
use crate::wire::Status;

/// A finished handshake and the bytes that arrived after it.
#[derive(Debug)]
pub struct HandshakeOutcome {
    /// What both sides agreed on.
    pub handshaked: Handshaked,
    /// Bytes received after the last handshake message (the start of the first
    /// distribution frame, if the peer was quick). Feed them to the connection.
    pub leftover: Vec<u8>,
}

struct Io<'a, S> {
    io: &'a mut S,
    prefix: LengthPrefix,
    buf: Vec<u8>,
    start: usize,
    timeout: Duration,
    out: Vec<u8>,
}

enum ReadError {
    Closed,
    Timeout,
    Io(std::io::Error),
    Message(super::MessageError),
    /// A TLS record arrived on a plain connection.
    TlsRecord,
}

/// Whether `bytes` start like a TLS record: an alert (21) or a handshake (22) record of
/// TLS 1.x (`3, x`). Read as a 2-byte handshake length that is 5379 or 5635, above any
/// handshake message, so a plain handshake never starts so.
fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15 | 0x16, 0x03, ..])
}

/// Runs `step` for at most `limit`; `None` when it did not finish in time. The timer is
/// created only when the step first has to wait: a write with room in the socket buffer,
/// or bytes that are already there, read no clock and set no timer.
async fn bounded<F: std::future::Future>(limit: Duration, step: F) -> Option<F::Output> {
    use std::task::Poll;
    let mut step = std::pin::pin!(step);
    let mut timer = std::pin::pin!(None::<tokio::time::Sleep>);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = step.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if timer.is_none() {
            timer.set(Some(tokio::time::sleep(limit)));
        }
        match timer.as_mut().as_pin_mut().map(|t| t.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    })
    .await
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<'_, S> {
    /// Reads until a whole message is buffered; returns its body's range in `buf`.
    async fn next(&mut self) -> Result<std::ops::Range<usize>, ReadError> {
        loop {
            match decode_frame(&self.buf[self.start..], self.prefix, MAX_HANDSHAKE_MESSAGE) {
                Ok(Status::Complete((body, consumed))) => {
                    let body_start = self.start + consumed - body.len();
                    let range = body_start..body_start + body.len();
                    self.start += consumed;
                    return Ok(range);
                }
                Ok(Status::Partial) => {}
                Err(_)
                    if self.prefix == LengthPrefix::U16
                        && looks_like_tls(&self.buf[self.start..]) =>
                {
                    return Err(ReadError::TlsRecord);
                }
                Err(e) => return Err(ReadError::Message(e)),
            }
            if self.start > 0 && self.start == self.buf.len() {
                self.buf.clear();
                self.start = 0;
            }
            self.buf.reserve(512);
            match bounded(self.timeout, self.io.read_buf(&mut self.buf)).await {
                None => return Err(ReadError::Timeout),
                Some(Ok(0)) => return Err(ReadError::Closed),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ReadError::Io(e)),
            }
        }
    }

    async fn flush_out(&mut self) -> Result<(), ReadError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let write = async {
            self.io.write_all(&self.out).await?;
            self.io.flush().await
        };
        match bounded(self.timeout, write).await {
            None => Err(ReadError::Timeout),
            Some(Err(e)) => Err(ReadError::Io(e)),
            Some(Ok(())) => {
                self.out.clear();
                Ok(())
            }
        }
    }

    fn leftover(&self) -> Vec<u8> {
        self.buf[self.start..].to_vec()
    }
}

fn map_read_error(
    e: ReadError,
    peer: String,
    step: HandshakeStep,
    timeout: Duration,
    closed: impl FnOnce() -> HandshakeError,
) -> HandshakeError {
    match e {
        ReadError::Closed => closed(),
        ReadError::Timeout => HandshakeError::Timeout {
            peer,
            step,
            timeout,
        },
        ReadError::Io(source) if is_reset(&source) => closed(),
        ReadError::Io(source) => HandshakeError::Io { peer, step, source },
        ReadError::Message(source) => HandshakeError::Protocol { peer, step, source },
        ReadError::TlsRecord => HandshakeError::PeerUsesTls { peer },
    }
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof
    )
}

/// Runs the initiator's side of the handshake over `io`.
///
/// Each step (every read and write) is limited by `step_timeout` (OTP's
/// `net_setuptime`, 7 s by default: [`super::DEFAULT_STEP_TIMEOUT`]). The challenge comes
/// from the thread-local CSPRNG. `on_alive` answers the acceptor's `alive` status (see
/// [`InitiatorProgress::NeedAliveAnswer`]): `true` when we hold no live connection to
/// the peer.
pub async fn initiate<S>(
    io: &mut S,
    prefix: LengthPrefix,
    cfg: InitiatorConfig,
    step_timeout: Duration,
    mut on_alive: impl FnMut() -> bool,
) -> Result<HandshakeOutcome, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Formatted only for an error.
    let peer = cfg.peer.clone();
    let mut hs = Initiator::new(cfg, prefix, rand::rng().random());
    let mut io = Io {
        io,
        prefix,
        buf: Vec::with_capacity(512),
        start: 0,
        timeout: step_timeout,
        out: Vec::with_capacity(512),
    };
    hs.start(&mut io.out)?;
    loop {
        let step = hs.step();
        if let Err(e) = io.flush_out().await {
            return Err(map_read_error(
                e,
                peer.to_string(),
                HandshakeStep::Send,
                step_timeout,
                || hs.closed_error(),
            ));
        }
        let range = match io.next().await {
            Ok(range) => range,
            Err(e) => {
                return Err(map_read_error(
                    e,
                    peer.to_string(),
                    step,
                    step_timeout,
                    || hs.closed_error(),
                ));
            }
        };
        let done = hs.handle(&io.buf[range], &mut io.out);
        let done = match done {
            Ok(InitiatorProgress::NeedAliveAnswer) => hs
                .answer_alive(on_alive(), &mut io.out)
                .map(|()| InitiatorProgress::Continue),
            other => other,
        };
        match done {
            Ok(InitiatorProgress::Done(handshaked)) => {
                return Ok(HandshakeOutcome {
                    handshaked,
                    leftover: io.leftover(),
                });
            }
            Ok(_) => {}
            Err(e) => {
                // Answers such as `s false` are sent even when the handshake ends.
                let _ = io.flush_out().await;
                return Err(e);
            }
        }
    }
}

/// Runs the acceptor's side of the handshake over `io`.
///
/// `decide` is called once, with the initiator's checked name and flags, and returns the
/// status to send (see [`StatusDecision`]). `peer_label` names the peer in errors until
/// its name is known (e.g. its socket address); it is formatted only for an error.
pub async fn accept<S>(
    io: &mut S,
    prefix: LengthPrefix,
    cfg: AcceptorConfig,
    step_timeout: Duration,
    peer_label: impl std::fmt::Display,
    mut decide: impl FnMut(&PeerHello) -> StatusDecision,
) -> Result<HandshakeOutcome, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let peer_label = &peer_label;
    let mut hs = Acceptor::new(cfg, prefix, rand::rng().random());
    let mut io = Io {
        io,
        prefix,
        buf: Vec::with_capacity(512),
        start: 0,
        timeout: step_timeout,
        out: Vec::with_capacity(512),
    };
    loop {
        let step = hs.step();
        let range = match io.next().await {
            Ok(range) => range,
            Err(e) => {
                let peer = label(&hs, peer_label);
                return Err(map_read_error(e, peer, step, step_timeout, || {
                    named(hs.closed_error(), &hs, peer_label)
                }));
            }
        };
        let progress = hs.handle(&io.buf[range], &mut io.out);
        let progress = match progress {
            Ok(p) => p,
            Err(e) => {
                // A `not_allowed` status is queued for some refusals: deliver it.
                let _ = io.flush_out().await;
                return Err(named(e, &hs, peer_label));
            }
        };
        match progress {
            AcceptorProgress::Continue => {}
            AcceptorProgress::NeedDecision(hello) => {
                let decision = decide(&hello);
                let decided = hs.decide(decision, &mut io.out);
                let flushed = io.flush_out().await;
                decided?;
                if let Err(e) = flushed {
                    let peer = label(&hs, peer_label);
                    return Err(map_read_error(
                        e,
                        peer,
                        HandshakeStep::Send,
                        step_timeout,
                        || named(hs.closed_error(), &hs, peer_label),
                    ));
                }
                continue;
            }
            AcceptorProgress::Done(handshaked) => {
                if let Err(e) = io.flush_out().await {
                    let peer = handshaked.peer.to_string();
                    return Err(map_read_error(
                        e,
                        peer,
                        HandshakeStep::Send,
                        step_timeout,
                        || hs.closed_error(),
                    ));
                }
                return Ok(HandshakeOutcome {
                    handshaked,
                    leftover: io.leftover(),
                });
            }
        }
        if let Err(e) = io.flush_out().await {
            let peer = label(&hs, peer_label);
            return Err(map_read_error(
                e,
                peer,
                HandshakeStep::Send,
                step_timeout,
                || hs.closed_error(),
            ));
        }
    }
}

fn label(hs: &Acceptor, fallback: &impl std::fmt::Display) -> String {
    hs.peer_name()
        .map_or_else(|| fallback.to_string(), |n| n.to_string())
}

/// Names the peer by `fallback` in an error of an acceptor that does not know it yet.
fn named(e: HandshakeError, hs: &Acceptor, fallback: &impl std::fmt::Display) -> HandshakeError {
    if hs.knows_peer() {
        return e;
    }
    match e {
        HandshakeError::Protocol { step, source, .. } => HandshakeError::Protocol {
            peer: fallback.to_string(),
            step,
            source,
        },
        HandshakeError::Unexpected { step, detail, .. } => HandshakeError::Unexpected {
            peer: fallback.to_string(),
            step,
            detail,
        },
        HandshakeError::Closed { step, .. } => HandshakeError::Closed {
            peer: fallback.to_string(),
            step,
        },
        other => other,
    }
}
