//! What remote calls ([`crate::rpc`]) use of the node, and nothing more: a connection
//! to send requests on, the node's caller and group leader pids, references, and the
//! call table that matches answers to requests.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::NodeName;
use crate::dist::control::Control;
use crate::handshake::DistFlags;
use crate::term::{Pid, Reference, Term};

use super::calls::{Kind, Outcome};
use super::connection::ConnHandle;
use super::process;
use super::{ConnectError, Node, NodeInner, RpcMethod, SendError};

/// A connection to a peer, as a caller sees it.
pub(crate) struct Channel {
    node: Arc<NodeInner>,
    conn: Arc<ConnHandle>,
}

impl Node {
    /// The connection to `peer` for requests, dialled when there is none.
    pub(crate) async fn channel(&self, peer: &NodeName) -> Result<Channel, ConnectError> {
        let conn = self.inner.connect(peer, None).await?;
        Ok(Channel {
            node: self.inner.clone(),
            conn,
        })
    }

    /// How remote calls are to be made.
    pub(crate) fn rpc_method(&self) -> RpcMethod {
        self.inner.cfg.rpc_method
    }

    /// The pid requests are sent from (the node's call process).
    pub(crate) fn caller(&self) -> Pid {
        self.inner.procs.pid(process::RPC_ID)
    }

    /// A new reference of this node.
    pub(crate) fn new_ref(&self) -> Reference {
        self.inner.procs.make_ref()
    }

    /// Waits for `{Reference, Reply}` to reach the caller from `peer` (which may be this
    /// node) until `deadline`.
    pub(crate) fn expect_reply(
        &self,
        reference: &Reference,
        peer: &NodeName,
        deadline: Instant,
    ) -> oneshot::Receiver<Outcome> {
        self.inner
            .calls
            .register(reference.clone(), peer.clone(), Kind::Reply, deadline)
    }

    /// The caller of `reference` gave up.
    pub(crate) fn give_up(&self, reference: &Reference) {
        // Only erpc calls have workers, and they are made on a channel.
        self.inner.calls.abandon(reference);
    }
}

impl Channel {
    /// Whether the peer takes spawn requests (OTP 23 and later).
    pub(crate) fn spawns(&self) -> bool {
        self.conn.flags.contains(DistFlags::SPAWN)
    }

    /// The group leader given to remote calls: it answers the I/O protocol.
    pub(crate) fn group_leader(&self) -> Pid {
        self.node.procs.pid(process::IO_ID)
    }

    /// Sends a request and registers the call under `reference` (as `kind` says it is
    /// answered), its caller waiting until `deadline`; the receiver gets how it ended.
    pub(crate) async fn request(
        &self,
        reference: &Reference,
        kind: Kind,
        deadline: Instant,
        control: &Control,
        message: Option<&Term>,
    ) -> Result<oneshot::Receiver<Outcome>, SendError> {
        let rx =
            self.node
                .calls
                .register(reference.clone(), self.conn.peer.clone(), kind, deadline);
        match self.conn.send(control, message).await {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.node.calls.remove(reference);
                Err(e)
            }
        }
    }

    /// The caller of `reference` gave up: its erpc worker, if it runs, is killed (a
    /// notice not worth waiting for: dropped if the connection's queue is full).
    pub(crate) fn give_up(&self, reference: &Reference) {
        if let Some(worker) = self.node.calls.abandon(reference) {
            let kill = Control::Exit2 {
                from: self.node.procs.pid(process::RPC_ID),
                to: worker,
                reason: Term::atom("kill"),
            };
            self.conn.try_send(kill, None);
        }
    }
}
