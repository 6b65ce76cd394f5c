//! What a message from a peer does: the one place that reads a control message and
//! acts on it, answering into the connection's reply list.

use std::sync::Arc;

use crate::dist::control::{Control, DistMessage};
use crate::term::{Pid, Term};

use super::connection::{ConnHandle, Replies};
use super::process;
use super::table::Action;
use super::{DisconnectReason, MAX_MONITORS_AND_LINKS_PER_PEER, NodeInner, Overload, builtin};

impl NodeInner {
    /// A peer went past [`MAX_MONITORS_AND_LINKS_PER_PEER`] on one process: it is
    /// disconnected, which forgets what it held.
    fn overloaded(&self, conn: &ConnHandle) {
        if !conn.is_open() {
            return;
        }
        let max = MAX_MONITORS_AND_LINKS_PER_PEER;
        tracing::warn!(node = %self.name, peer = %conn.peer, max, "the peer monitored or linked one process more than {max} times: disconnecting it");
        conn.close(DisconnectReason::Overloaded(Overload::MonitorsAndLinks {
            max,
        }));
    }

    /// Handles one message from a connection.
    pub(crate) fn dispatch(
        self: &Arc<Self>,
        conn: &Arc<ConnHandle>,
        msg: DistMessage,
        out: &mut Replies,
    ) {
        let DistMessage { control, message } = msg;
        match control {
            Control::Send { from, to } => {
                let message = message.unwrap_or_else(Term::nil);
                self.route_to_pid(conn, from, &to, message, out);
            }
            Control::RegSend { from, to } => {
                let message = message.unwrap_or_else(Term::nil);
                if to.as_str() == "net_kernel" {
                    builtin::net_kernel(self, conn, &from, message, out);
                } else if let Some(id) = self.procs.whereis(&to) {
                    self.deliver_local(id, Some(from), message);
                } else {
                    tracing::debug!(node = %self.name, name = %to, "message to an unregistered name dropped");
                }
            }
            Control::AliasSend { from, alias: _ } => {
                let message = message.unwrap_or_else(Term::nil);
                if !self.calls.deliver_reply(message) {
                    tracing::debug!(node = %self.name, from = ?from, "message to an unknown alias dropped");
                }
            }
            // A monitor a remote call placed on its worker.
            Control::MonitorExit {
                ref reference,
                ref reason,
                ..
            } if self.calls.monitor_exit(reference, reason.clone()) => {}
            signal @ (Control::Monitor { .. }
            | Control::Demonitor { .. }
            | Control::MonitorExit { .. }
            | Control::Link { .. }
            | Control::UnlinkId { .. }
            | Control::Exit { .. }
            | Control::Exit2 { .. }) => {
                let mut actions = Vec::new();
                self.procs
                    .lock()
                    .signal(&conn.peer_atom, signal, &mut actions);
                for action in actions {
                    match action {
                        Action::Reply(control) => conn.reply(out, control, None),
                        Action::Deliver { id, from, message } => {
                            self.deliver_local(id, from, message)
                        }
                        Action::Overloaded => self.overloaded(conn),
                    }
                }
            }
            Control::UnlinkIdAck { .. } | Control::GroupLeader { .. } => {}
            Control::SpawnRequest { req_id, from, .. } => {
                // This node runs no Erlang code.
                let refusal = Control::SpawnReply {
                    req_id,
                    to: from,
                    flags: 0,
                    result: Term::atom("notsup"),
                };
                conn.reply(out, refusal, None);
            }
            Control::SpawnReply { req_id, result, .. } => {
                if let Some(worker) = self.calls.spawn_reply(&req_id, result) {
                    // The caller gave up before the worker started: stop it.
                    let kill = Control::Exit2 {
                        from: self.procs.pid(process::RPC_ID),
                        to: worker,
                        reason: Term::atom("kill"),
                    };
                    conn.reply(out, kill, None);
                }
            }
            Control::Unknown { op, control } => {
                tracing::debug!(node = %self.name, peer = %conn.peer, op, control = %control, "unknown control message ignored");
            }
        }
    }

    fn route_to_pid(
        self: &Arc<Self>,
        conn: &Arc<ConnHandle>,
        from: Option<Pid>,
        to: &Pid,
        message: Term,
        out: &mut Replies,
    ) {
        if !self.procs.is_local(to) {
            tracing::debug!(node = %self.name, to = ?to, "message to a pid of another node or incarnation dropped");
            return;
        }
        match to.id {
            process::RPC_ID | process::NET_KERNEL_ID => {
                if !self.calls.deliver_reply(message) {
                    tracing::debug!(node = %self.name, "late or unknown reply dropped");
                }
            }
            process::IO_ID => builtin::io_request(self, conn, message, out),
            id => self.deliver_local(id, from, message),
        }
    }
}
