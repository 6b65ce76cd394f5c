//! The peer table: installing a connection that finished its handshake (simultaneous
//! connects included), its end, and the node's stop.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::NodeName;
use crate::epmd::EpmdRegistration;
use crate::handshake::{self, PeerHello, StatusDecision};
use crate::listener::ConnectionPermit;
use crate::term::Atom;

use super::connection::{self, ConnHandle};
use super::table::Action;
use super::transport::{ReadHalf, WriteHalf};
use super::{ConnectError, DisconnectReason, Envelope, NodeEvent, NodeInner};

impl NodeInner {
    /// Registers a connection that finished its handshake and starts its task. Returns
    /// the connection kept for the peer (this one, or one that won a simultaneous
    /// connect); a node that has stopped drops the connection instead.
    pub(super) fn install(
        self: &Arc<Self>,
        read: ReadHalf,
        write: WriteHalf,
        outcome: handshake::HandshakeOutcome,
        initiated_locally: bool,
        permit: Option<ConnectionPermit>,
    ) -> Result<Arc<ConnHandle>, ConnectError> {
        let hs = outcome.handshaked;
        let Some(tracked) = self.tasks.track_running() else {
            return Err(ConnectError::NodeStopped(self.name.clone()));
        };
        let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let conn = connection::spawn(
            self,
            read,
            write,
            connection::Setup {
                id,
                handshaked: &hs,
                leftover: outcome.leftover,
                initiated_locally,
                timing: self.timing(),
                decode_limits: self.cfg.decode_limits.clone(),
                permit,
                linger: self.linger.clone(),
                tracked,
            },
        );
        let (kept, dropped) = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let slot = peers.entry(hs.peer.clone()).or_default();
            match slot.conn.take().filter(|c| c.is_open()) {
                None => {
                    slot.conn = Some(conn.clone());
                    (conn.clone(), None)
                }
                Some(old) if hs.replaces_existing => {
                    slot.conn = Some(conn.clone());
                    (conn.clone(), Some((old, DisconnectReason::Replaced)))
                }
                Some(old) => {
                    // Two connections finished at once. Both nodes keep the one opened
                    // by the node with the greater name, so they agree.
                    fn initiator<'a>(me: &'a NodeName, c: &'a ConnHandle) -> &'a NodeName {
                        if c.initiated_locally { me } else { &c.peer }
                    }
                    if initiator(&self.name, &conn) > initiator(&self.name, &old) {
                        slot.conn = Some(conn.clone());
                        (conn.clone(), Some((old, DisconnectReason::Replaced)))
                    } else {
                        slot.conn = Some(old.clone());
                        (old, Some((conn.clone(), DisconnectReason::Replaced)))
                    }
                }
            }
        };
        if let Some((c, reason)) = dropped {
            c.close(reason);
        }
        // Stopped while this connection was being set up: `shutdown` closed the
        // connections it found, perhaps before this one was in the table.
        if self.is_stopped() {
            conn.close(DisconnectReason::NodeStopped);
            return Err(ConnectError::NodeStopped(self.name.clone()));
        }
        if Arc::ptr_eq(&kept, &conn) {
            tracing::info!(node = %self.name, peer = %hs.peer, hidden = conn.is_hidden(), flags = %hs.flags, "connection up");
            let _ = self.events.send(NodeEvent::Up {
                node: hs.peer.clone(),
                hidden: conn.is_hidden(),
            });
        }
        self.peers_changed.notify_waiters();
        Ok(kept)
    }

    /// Called by the connection task when it starts closing a connection gracefully
    /// (before [`Self::connection_closed`]).
    pub(crate) fn closing_started(&self, peer: &NodeName) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.entry(peer.clone()).or_default().closing += 1;
    }

    /// Called by the connection task once the peer closed its side too (or the wait
    /// for it ended).
    pub(crate) fn closing_finished(&self, peer: &NodeName) {
        {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = peers.get_mut(peer) {
                slot.closing = slot.closing.saturating_sub(1);
                if slot.closing == 0 && slot.conn.is_none() && !slot.dialing {
                    peers.remove(peer);
                }
            }
        }
        self.peers_changed.notify_waiters();
    }

    /// Called by the connection task when a connection ends.
    pub(crate) fn connection_closed(&self, conn: &Arc<ConnHandle>, reason: DisconnectReason) {
        let was_current = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            match peers.get_mut(&conn.peer) {
                Some(slot) if slot.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) => {
                    slot.conn = None;
                    if !slot.dialing && slot.closing == 0 {
                        peers.remove(&conn.peer);
                    }
                    true
                }
                _ => false,
            }
        };
        if !was_current {
            return;
        }
        match &reason {
            DisconnectReason::Local
            | DisconnectReason::NodeStopped
            | DisconnectReason::Replaced => {
                tracing::info!(node = %self.name, peer = %conn.peer, %reason, "connection down");
            }
            _ => tracing::warn!(node = %self.name, peer = %conn.peer, %reason, "connection down"),
        }
        self.calls.connection_lost(&conn.peer, &reason);
        self.peer_gone(&conn.peer_atom);
        let _ = self.events.send(NodeEvent::Down {
            node: conn.peer.clone(),
            reason,
        });
        self.peers_changed.notify_waiters();
    }

    /// Tells local processes that monitor or link processes of a vanished node.
    fn peer_gone(&self, node: &Atom) {
        let mut notices = Vec::new();
        self.procs.lock().node_down(node, &mut notices);
        for notice in notices {
            if let Action::Deliver { id, from, message } = notice {
                let _ = self.procs.deliver(id, Envelope { from, message });
            }
        }
    }

    /// The status for an initiator knocking (the acceptor's `mark_pending`).
    pub(super) fn decide(&self, hello: &PeerHello) -> StatusDecision {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let state = match hello.name.as_ref().and_then(|p| peers.get(p)) {
            Some(slot) if slot.conn.as_ref().is_some_and(|c| c.is_open()) => PeerState::Connected,
            Some(slot) if slot.dialing => PeerState::Dialing,
            _ => PeerState::Unknown,
        };
        status_for(&self.name, hello.name.as_ref(), self.is_stopped(), state)
    }

    /// Stops the node; returns its EPMD registration, for the caller to end.
    pub(super) fn shutdown(&self) -> Option<EpmdRegistration> {
        if !self.tasks.stop() {
            return None;
        }
        self.linger.stop();
        let conns: Vec<Arc<ConnHandle>> = {
            let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            peers.values().filter_map(|s| s.conn.clone()).collect()
        };
        for c in conns {
            c.close(DisconnectReason::NodeStopped);
        }
        tracing::info!(node = %self.name, "node stopped");
        self.registration
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        drop(self.shutdown());
    }
}

/// What the peer table holds for a node whose hello arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PeerState {
    /// Nothing: no connection, no dial in progress.
    Unknown,
    /// A live connection.
    Connected,
    /// This node is dialling it.
    Dialing,
}

/// The acceptor's answer to `peer`'s hello, as `net_kernel` gives it: no dynamic names
/// and nothing once stopped (`not_allowed`); `alive` when a connection is up (the
/// initiator then says whether it is a new incarnation); when both nodes dial each other
/// at once, the node with the greater name keeps its own attempt (`nok`) and the other
/// takes the incoming one (`ok_simultaneous`), so exactly one connection survives.
pub(super) fn status_for(
    me: &NodeName,
    peer: Option<&NodeName>,
    stopped: bool,
    state: PeerState,
) -> StatusDecision {
    let Some(peer) = peer else {
        return StatusDecision::NotAllowed;
    };
    if stopped {
        return StatusDecision::NotAllowed;
    }
    match state {
        PeerState::Connected => StatusDecision::Alive,
        PeerState::Dialing if me > peer => StatusDecision::Nok,
        PeerState::Dialing => StatusDecision::OkSimultaneous,
        PeerState::Unknown => StatusDecision::Ok,
    }
}

#[cfg(test)]
mod tests;
