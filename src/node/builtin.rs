//! The processes every node runs for itself: `net_kernel` (answers `net_adm:ping/1`)
//! and the group leader of remote calls (answers I/O requests so that a called
//! function that prints does not hang).

use std::sync::Arc;

use crate::dist::control::Control;
use crate::handshake::DistFlags;
use crate::term::{Pid, Term};

use super::NodeInner;
use super::connection::{ConnHandle, Replies};
use super::process::{GenCall, IO_ID, NET_KERNEL_ID};

/// A message to our registered `net_kernel`.
pub(super) fn net_kernel(
    node: &Arc<NodeInner>,
    conn: &Arc<ConnHandle>,
    from: &Pid,
    message: Term,
    out: &mut Replies,
) {
    let Some(call) = GenCall::parse(&message) else {
        tracing::debug!(peer = %conn.peer, from = ?from, "non-call message to net_kernel ignored");
        return;
    };
    let reply = match call.request.as_tuple() {
        // net_adm:ping/1 asks `{is_auth, Node}`; a node that got this far shares our
        // cookie, so the answer is yes.
        Some([kind, _]) if kind.is_atom("is_auth") => Term::atom("yes"),
        _ => {
            tracing::debug!(peer = %conn.peer, request = %call.request, "unsupported net_kernel request");
            Term::Tuple(vec![Term::atom("error"), Term::atom("not_supported")])
        }
    };
    // Answered on this connection only: a call naming a process of another node as
    // its caller would make this node dial that node.
    if call.from.node != conn.peer_atom {
        tracing::debug!(peer = %conn.peer, from = ?call.from, "net_kernel call from another node's process ignored");
        return;
    }
    let me = node.procs.pid(NET_KERNEL_ID);
    let control = match call.reply_alias() {
        Some(alias) if alias.node == conn.peer_atom && conn.flags.contains(DistFlags::ALIAS) => {
            Control::AliasSend {
                from: me,
                alias: alias.clone(),
            }
        }
        _ => Control::Send {
            from: Some(me),
            to: call.from.clone(),
        },
    };
    conn.reply(out, control, Some(call.reply_message(reply)));
}

/// A message to the group leader we give remote calls: `{io_request, From, ReplyAs,
/// Request}`, answered with `{io_reply, ReplyAs, Reply}` as the Erlang I/O protocol
/// says. Output is logged under the target `autocluster::rpc::output`.
pub(super) fn io_request(
    node: &Arc<NodeInner>,
    conn: &Arc<ConnHandle>,
    message: Term,
    out: &mut Replies,
) {
    let Some([kind, from, reply_as, request]) = message.as_tuple() else {
        tracing::debug!(peer = %conn.peer, "non-I/O message to the group leader ignored");
        return;
    };
    if !kind.is_atom("io_request") {
        return;
    }
    let Some(from) = from.as_pid() else { return };
    let reply = io_reply(&conn.peer, request, 0);
    let me = node.procs.pid(IO_ID);
    let answer = Term::Tuple(vec![Term::atom("io_reply"), reply_as.clone(), reply]);
    let send = Control::Send {
        from: Some(me),
        to: from.clone(),
    };
    conn.reply(out, send, Some(answer));
}

fn io_reply(peer: &crate::NodeName, request: &Term, depth: usize) -> Term {
    let error = |r: &str| Term::Tuple(vec![Term::atom("error"), Term::atom(r)]);
    let Some(fields) = request.as_tuple() else {
        return if request.is_atom("getopts") {
            Term::List(vec![
                Term::Tuple(vec![Term::atom("binary"), Term::atom("false")]),
                Term::Tuple(vec![Term::atom("encoding"), Term::atom("unicode")]),
            ])
        } else {
            error("request")
        };
    };
    let Some(op) = fields.first().and_then(Term::as_atom) else {
        return error("request");
    };
    match (op.as_str(), fields.len()) {
        ("put_chars", 2 | 3) => {
            let chars = fields.last().map(text_of).unwrap_or_default();
            tracing::info!(target: "autocluster::rpc::output", %peer, "{}", chars.trim_end());
            Term::atom("ok")
        }
        ("put_chars", 4 | 5) => {
            // `io:format/2` sends {put_chars, Enc, io_lib, format, [Fmt, Args]}: the
            // formatting happens on the caller's side in Erlang; log the request.
            let n = fields.len();
            tracing::info!(
                target: "autocluster::rpc::output",
                %peer,
                "{}:{}({})",
                fields[n - 3],
                fields[n - 2],
                fields[n - 1]
            );
            Term::atom("ok")
        }
        ("requests", 2) if depth < 4 => {
            let mut last = Term::atom("ok");
            for r in fields[1].clone().into_list_elements().unwrap_or_default() {
                last = io_reply(peer, &r, depth + 1);
            }
            last
        }
        ("setopts", 2) => Term::atom("ok"),
        ("get_chars" | "get_line" | "get_until" | "get_password", _) => Term::atom("eof"),
        _ => error("enotsup"),
    }
}

/// Best-effort text of iodata / chardata.
fn text_of(t: &Term) -> String {
    fn walk(t: &Term, out: &mut String, depth: usize) {
        if depth > 64 || out.len() > 64 * 1024 {
            return;
        }
        match t {
            Term::Binary(b) => out.push_str(&String::from_utf8_lossy(b)),
            Term::ByteList(b) => out.extend(b.iter().map(|&c| char::from(c))),
            Term::Integer(c) => {
                if let Some(c) = u32::try_from(*c).ok().and_then(char::from_u32) {
                    out.push(c);
                }
            }
            Term::List(items) => items.iter().for_each(|i| walk(i, out, depth + 1)),
            Term::ImproperList { elements, tail } => {
                elements.iter().for_each(|i| walk(i, out, depth + 1));
                walk(tail, out, depth + 1);
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    walk(t, &mut out, 0);
    out
}
