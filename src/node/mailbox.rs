//! The local processes: [`Mailbox`]es, and the signals between them and remote
//! processes (messages, monitors, links, exits).

use std::sync::Arc;

use crate::NodeName;
use crate::dist::control::{Control, ProcessRef};
use crate::handshake::DistFlags;
use crate::term::{Atom, Pid, Reference, Term};

use super::process::{self, Delivery};
use tokio::sync::mpsc;

use super::{Envelope, GenCall, Node, NodeInner, SendError};

/// A process of the local node: a pid that Erlang processes can send to, and a queue
/// of what they sent.
///
/// Dropping a mailbox is the process exiting with reason `normal`: remote processes
/// monitoring or linked to it are told.
pub struct Mailbox {
    pub(super) node: Node,
    pub(super) pid: Pid,
    pub(super) rx: mpsc::Receiver<Envelope>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Mailbox {
    /// This mailbox's pid.
    pub fn pid(&self) -> &Pid {
        &self.pid
    }

    /// The next message; `None` once the node has stopped.
    pub async fn recv(&mut self) -> Option<Envelope> {
        self.rx.recv().await
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<Envelope> {
        self.rx.try_recv().ok()
    }

    /// Sends `message` to `to` from this mailbox.
    pub async fn send(&self, to: &Pid, message: Term) -> Result<(), SendError> {
        self.node
            .inner
            .send_from(Some(&self.pid), to, message)
            .await
    }

    /// Sends `message` to the process registered as `name` on `node`.
    pub async fn send_named(
        &self,
        node: &NodeName,
        name: &str,
        message: Term,
    ) -> Result<(), SendError> {
        self.node
            .inner
            .send_named_from(&self.pid, node, name, message)
            .await
    }

    /// Answers an incoming `gen:call` the way `gen:reply/2` does.
    pub async fn reply(&self, call: &GenCall, reply: Term) -> Result<(), SendError> {
        self.node.inner.gen_reply(&self.pid, call, reply).await
    }

    /// Monitors a remote process: when it exits (or the connection drops) this mailbox
    /// receives `{'DOWN', Ref, process, Pid, Reason}`.
    pub async fn monitor(&self, target: &Pid) -> Result<Reference, SendError> {
        self.node.inner.monitor(&self.pid, target).await
    }

    /// Removes a monitor set with [`Mailbox::monitor`].
    pub async fn demonitor(&self, reference: &Reference) -> Result<(), SendError> {
        self.node.inner.demonitor(&self.pid, reference).await
    }

    /// Links to a remote process: when it exits this mailbox receives
    /// `{'EXIT', Pid, Reason}`, and when this mailbox is dropped the process gets an
    /// exit signal with reason `normal`.
    pub async fn link(&self, target: &Pid) -> Result<(), SendError> {
        self.node.inner.link(&self.pid, target).await
    }

    /// The node this mailbox belongs to.
    pub fn node(&self) -> &Node {
        &self.node
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.node
            .inner
            .process_exited(self.pid.id, Term::atom("normal"));
    }
}
impl NodeInner {
    fn node_of(&self, atom: &Atom) -> Result<NodeName, SendError> {
        NodeName::new(atom.as_str()).map_err(|_| SendError::BadNode(atom.as_str().to_owned()))
    }

    /// Sends a control message to `node`, connecting if needed.
    pub(crate) async fn send_control(
        self: &Arc<Self>,
        node: &NodeName,
        control: &Control,
        message: Option<&Term>,
    ) -> Result<(), SendError> {
        let conn = self.connect(node, None).await?;
        conn.send(control, message).await
    }

    pub(crate) async fn send_from(
        self: &Arc<Self>,
        from: Option<&Pid>,
        to: &Pid,
        message: Term,
    ) -> Result<(), SendError> {
        if to.node == self.procs.node {
            if to.creation == self.procs.creation {
                match to.id {
                    process::RPC_ID | process::NET_KERNEL_ID => {
                        self.calls.deliver_reply(message);
                    }
                    id => self.deliver_local(id, from.cloned(), message),
                }
            }
            return Ok(());
        }
        let node = self.node_of(&to.node)?;
        let control = Control::Send {
            from: from.cloned(),
            to: to.clone(),
        };
        self.send_control(&node, &control, Some(&message)).await
    }

    pub(crate) async fn send_named_from(
        self: &Arc<Self>,
        from: &Pid,
        node: &NodeName,
        name: &str,
        message: Term,
    ) -> Result<(), SendError> {
        if node == &self.name {
            if let Some(id) = self.procs.whereis(&Atom::from(name)) {
                self.deliver_local(id, Some(from.clone()), message);
            }
            return Ok(());
        }
        let control = Control::RegSend {
            from: from.clone(),
            to: Atom::from(name),
        };
        self.send_control(node, &control, Some(&message)).await
    }

    pub(crate) async fn gen_reply(
        self: &Arc<Self>,
        from: &Pid,
        call: &GenCall,
        reply: Term,
    ) -> Result<(), SendError> {
        let message = call.reply_message(reply);
        match call.reply_alias() {
            Some(alias) if alias.node != self.procs.node => {
                let node = self.node_of(&alias.node)?;
                let conn = self.connect(&node, None).await?;
                if conn.flags.contains(DistFlags::ALIAS) {
                    let control = Control::AliasSend {
                        from: from.clone(),
                        alias: alias.clone(),
                    };
                    return conn.send(&control, Some(&message)).await;
                }
                self.send_from(Some(from), &call.from, message).await
            }
            _ => self.send_from(Some(from), &call.from, message).await,
        }
    }

    pub(super) fn deliver_local(&self, id: u32, from: Option<Pid>, message: Term) {
        match self.procs.deliver(id, Envelope { from, message }) {
            Delivery::Delivered | Delivery::NoProcess => {}
            Delivery::Full => {
                tracing::warn!(node = %self.name, pid = id, capacity = self.cfg.mailbox_capacity, "mailbox full: message dropped");
            }
        }
    }

    pub(super) async fn monitor(
        self: &Arc<Self>,
        from: &Pid,
        target: &Pid,
    ) -> Result<Reference, SendError> {
        let reference = self.procs.make_ref();
        self.procs
            .lock()
            .monitor(from.id, reference.clone(), Term::from(target.clone()));
        let node = self.node_of(&target.node)?;
        let control = Control::Monitor {
            from: from.clone(),
            to: ProcessRef::Pid(target.clone()),
            reference: reference.clone(),
        };
        if let Err(e) = self.send_control(&node, &control, None).await {
            self.procs.lock().demonitor(from.id, &reference);
            return Err(e);
        }
        Ok(reference)
    }

    async fn demonitor(
        self: &Arc<Self>,
        from: &Pid,
        reference: &Reference,
    ) -> Result<(), SendError> {
        let target = self.procs.lock().demonitor(from.id, reference);
        let Some(Term::Pid(target)) = target else {
            return Ok(());
        };
        let Some(conn) = self
            .node_of(&target.node)
            .ok()
            .and_then(|n| self.connection(&n))
        else {
            return Ok(());
        };
        let control = Control::Demonitor {
            from: from.clone(),
            to: ProcessRef::Pid(*target),
            reference: reference.clone(),
        };
        conn.send(&control, None).await
    }

    pub(super) async fn link(self: &Arc<Self>, from: &Pid, target: &Pid) -> Result<(), SendError> {
        self.procs.lock().link(from.id, target.clone());
        let node = self.node_of(&target.node)?;
        let control = Control::Link {
            from: from.clone(),
            to: target.clone(),
        };
        self.send_control(&node, &control, None).await
    }

    /// A local process ended: tell the remote processes that monitor or link it.
    fn process_exited(self: &Arc<Self>, id: u32, reason: Term) {
        let outgoing = self.procs.lock().exited(id, &reason);
        if outgoing.is_empty() {
            return;
        }
        // Once the node stops, its connections are closing: nothing to tell.
        let Some(tracked) = self.tasks.track_running() else {
            return;
        };
        let node = self.clone();
        tokio::spawn(async move {
            let _tracked = tracked;
            for (peer, control) in outgoing {
                if let Some(conn) = node.node_of(&peer).ok().and_then(|n| node.connection(&n)) {
                    let _ = conn.send(&control, None).await;
                }
            }
        });
    }
}
