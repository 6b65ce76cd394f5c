//! A diagnostic for the handshake profile: the real `handshake::initiate` driver over a
//! socket wrapper that timestamps every read and write, so that the wall time of one
//! handshake splits into time spent waiting for the peer and time spent here.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What happened on the socket, and when (since the wrapper was made).
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// A write of this many bytes completed.
    Wrote(Duration, usize),
    /// A read returned this many bytes.
    Read(Duration, usize),
}

/// Wraps a stream and records [`Event`]s.
pub struct Timed<S> {
    inner: S,
    start: Instant,
    /// The events so far.
    pub events: Vec<Event>,
}

impl<S> Timed<S> {
    /// Wraps `inner`; times are relative to `start`.
    pub fn new(inner: S, start: Instant) -> Self {
        Timed {
            inner,
            start,
            events: Vec::new(),
        }
    }

    /// The stream.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let n = buf.filled().len() - before;
            let t = self.start.elapsed();
            self.events.push(Event::Read(t, n));
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            let t = self.start.elapsed();
            let n = *n;
            self.events.push(Event::Wrote(t, n));
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
