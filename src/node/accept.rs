//! Accepting connections: the accept loop, the listener's admission, TLS, and the
//! acceptor's handshake.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::transport::{Role, Stream};
use super::{NodeInner, TlsError, tasks};
use crate::Fault;
use crate::handshake::{self, AcceptorConfig, DistFlags, HandshakeError, LengthPrefix};
use crate::listener::ConnectionLimiter;

pub(super) async fn accept_loop(
    node: Weak<NodeInner>,
    listener: TcpListener,
    limiter: ConnectionLimiter,
    tracked: tasks::Tracked,
) {
    let tasks = tracked.tasks();
    let mut accepted_count = 0u32;
    loop {
        // Under a flood, let the handshakes already admitted make progress before
        // admitting more (an admitted connection can evict an older pending one).
        accepted_count = accepted_count.wrapping_add(1);
        if accepted_count.is_multiple_of(16) {
            tokio::task::yield_now().await;
        }
        // Only the stop signal is held while waiting, not the node: dropping its last
        // handle stops it, and this loop with it.
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = tasks.stopped() => return,
        };
        let (stream, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "distribution accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut permit = match limiter.admit(addr.ip()) {
            Ok(p) => p,
            Err(refusal) => {
                tracing::debug!(%addr, ?refusal, "distribution connection refused by the listener limits");
                continue;
            }
        };
        let node = node.clone();
        let progress = Progress {
            limiter: limiter.clone(),
            id: permit.id(),
        };
        let Some(tracked) = tasks.track_running() else {
            return;
        };
        let handshake = async move {
            let result = tokio::select! {
                r = accept_connection(&node, stream, addr, &progress) => r,
                reason = permit.closed() => {
                    tracing::debug!(%addr, %reason, "handshake closed by the listener limits");
                    None
                }
                () = tracked.tasks().stopped() => None,
            };
            let Some((inner, stream, outcome)) = result else {
                return;
            };
            if let Err(e) = permit.promote() {
                tracing::warn!(peer = %outcome.handshaked.peer, %addr, error = %e, "distribution connection closed: listener limits");
                return;
            }
            let (read, write) = stream.split();
            let _ = inner.install(read, write, outcome, false, Some(permit));
        };
        // Boxed: spawning moves a future several times, and this one is large.
        tokio::spawn(Box::pin(handshake));
    }
}

/// Tells the listener limits that an incoming handshake has got as far as the peer's name,
/// so that a flood of idle connections from its address is evicted before it.
struct Progress {
    limiter: ConnectionLimiter,
    id: crate::listener::ConnId,
}

/// Runs TLS (when configured) and the acceptor's handshake.
async fn accept_connection(
    node: &Weak<NodeInner>,
    stream: TcpStream,
    addr: SocketAddr,
    progress: &Progress,
) -> Option<(Arc<NodeInner>, Stream, handshake::HandshakeOutcome)> {
    let (accepted, prefix) = {
        let inner = node.upgrade()?;
        let timeout = inner.cfg.handshake_timeout;
        let accepted = inner.security.accept(stream, timeout).await?;
        (accepted, inner.security.prefix())
    };
    match accepted {
        Ok(stream) => accept_one(node, stream, addr, prefix, progress).await,
        Err(e) => {
            log_tls_rejection(addr, &e);
            None
        }
    }
}

fn log_tls_rejection(addr: SocketAddr, e: &TlsError) {
    match e {
        // Port scanners, health checks and slow clients: not worth a warning each.
        TlsError::Closed { .. } | TlsError::Timeout { .. } => {
            tracing::debug!(%addr, error = %e, "incoming TLS distribution handshake failed");
        }
        _ => tracing::warn!(%addr, error = %e, "incoming TLS distribution connection rejected"),
    }
}

/// Runs the acceptor's handshake; the connection to install when it succeeds.
async fn accept_one(
    node: &Weak<NodeInner>,
    mut stream: Stream,
    addr: SocketAddr,
    prefix: LengthPrefix,
    progress: &Progress,
) -> Option<(Arc<NodeInner>, Stream, handshake::HandshakeOutcome)> {
    let inner = node.upgrade()?;
    let cfg = AcceptorConfig {
        local: inner.name.clone(),
        creation: inner.procs.creation,
        flags: inner.our_flags(),
        required: DistFlags::REQUIRED,
        cookie: inner.cfg.cookie.clone(),
    };
    let result = handshake::accept(
        &mut stream,
        prefix,
        cfg,
        inner.cfg.handshake_timeout,
        addr,
        |hello| {
            progress.limiter.mark_progress(progress.id);
            inner.decide(hello)
        },
    )
    .await;
    match result {
        Ok(outcome) => Some((inner, stream, outcome)),
        Err(HandshakeError::PeerUsesTls { .. }) => {
            tracing::warn!(%addr, error = %TlsError::PeerUsesTls, "incoming connection rejected: a TLS client on this plain distribution listener");
            None
        }
        Err(e) => {
            if let HandshakeError::Io { source, .. } = &e
                && let Some(tls) = inner.security.classify_io(source, Role::Server)
            {
                log_tls_rejection(addr, &tls);
                return None;
            }
            // What an operator must fix (a cookie, a name kind, a capability) is a
            // warning; the rest (races, peers going away, this node's own refusals) is
            // routine.
            match e.fault() {
                Fault::Rejected | Fault::PeerIncompatible => {
                    tracing::warn!(%addr, error = %e, fault = %e.fault(), "incoming connection rejected");
                }
                fault => tracing::debug!(%addr, error = %e, %fault, "incoming handshake failed"),
            }
            None
        }
    }
}
