//! What a message from a peer does: the one place that reads a control message and
//! acts on it, answering into the connection's reply list.

use std::sync::Arc;

use crate::dist::control::{Control, DistMessage, ProcessRef};
use crate::term::{Pid, Term};

use super::connection::{ConnHandle, Replies};
use super::mailbox::{down_message, exit_message};
use super::process::{self, Watched};
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
            Control::Monitor {
                from,
                to,
                reference,
            } => {
                if !conn.sent_by_peer(&from) {
                    return;
                }
                let recorded = match self.local_id(&to) {
                    // The node's own processes never exit while it runs.
                    Some(id) if id < 100 => Watched::Recorded,
                    Some(id) => self.procs.add_monitor(id, reference.clone(), from.clone()),
                    None => Watched::NoProcess,
                };
                match recorded {
                    Watched::Recorded => {}
                    Watched::NoProcess => {
                        let exit = Control::MonitorExit {
                            from: to,
                            to: from,
                            reference,
                            reason: Term::atom("noproc"),
                        };
                        conn.reply(out, exit, None);
                    }
                    Watched::TooMany => self.overloaded(conn),
                }
            }
            Control::Demonitor {
                from,
                to,
                reference,
            } => {
                if !conn.sent_by_peer(&from) {
                    return;
                }
                if let Some(id) = self.local_id(&to)
                    && let Some(p) = self.procs.lock().by_id.get_mut(&id)
                {
                    p.remove_monitor(&reference);
                }
            }
            Control::MonitorExit {
                from,
                to,
                reference,
                reason,
            } => {
                if self.calls.monitor_exit(&reference, reason.clone()) {
                    return;
                }
                if !self.procs.is_local(&to) {
                    return;
                }
                let removed = {
                    let mut t = self.procs.lock();
                    t.by_id
                        .get_mut(&to.id)
                        .and_then(|p| p.monitors.remove(&reference))
                };
                if removed.is_some() {
                    let target = match &from {
                        ProcessRef::Pid(p) => Term::from(p.clone()),
                        ProcessRef::Name(n) => Term::Tuple(vec![
                            Term::Atom(n.clone()),
                            Term::Atom(conn.peer_atom.clone()),
                        ]),
                    };
                    let from_pid = match from {
                        ProcessRef::Pid(p) => Some(p),
                        ProcessRef::Name(_) => None,
                    };
                    self.deliver_local(to.id, from_pid, down_message(&reference, target, reason));
                }
            }
            Control::Link { from, to } => {
                if !conn.sent_by_peer(&from) {
                    return;
                }
                let linked = if self.procs.is_local(&to) {
                    self.procs.add_link(to.id, from.clone())
                } else {
                    Watched::NoProcess
                };
                match linked {
                    Watched::Recorded => {}
                    Watched::NoProcess if to.id >= 100 => {
                        let exit = Control::Exit {
                            from: to,
                            to: from,
                            reason: Term::atom("noproc"),
                        };
                        conn.reply(out, exit, None);
                    }
                    Watched::NoProcess => {}
                    Watched::TooMany => self.overloaded(conn),
                }
            }
            Control::UnlinkId { id, from, to } => {
                if !conn.sent_by_peer(&from) {
                    return;
                }
                if self.procs.is_local(&to)
                    && let Some(p) = self.procs.lock().by_id.get_mut(&to.id)
                {
                    p.remove_link(&from);
                }
                let ack = Control::UnlinkIdAck {
                    id,
                    from: to,
                    to: from,
                };
                conn.reply(out, ack, None);
            }
            Control::UnlinkIdAck { .. } | Control::GroupLeader { .. } => {}
            Control::Exit { from, to, reason } | Control::Exit2 { from, to, reason } => {
                if !conn.sent_by_peer(&from) {
                    return;
                }
                if self.procs.is_local(&to) {
                    if let Some(p) = self.procs.lock().by_id.get_mut(&to.id) {
                        p.remove_link(&from);
                    }
                    self.deliver_local(to.id, Some(from.clone()), exit_message(&from, reason));
                }
            }
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
