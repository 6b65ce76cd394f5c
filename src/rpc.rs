//! Remote calls: `module:function(args)` evaluated on an Erlang node.
//!
//! # erpc, and why
//!
//! Calls go through **`erpc`** by default: a `SPAWN_REQUEST` of
//! `erpc:execute_call(Ref, M, F, A)` with a monitor, exactly what `erpc:call/5` (and so
//! `rpc:call/5` since OTP 23) does. The spawned process exits with `{Ref, return, V}`,
//! `{Ref, throw, R}`, `{Ref, exit, R}` or `{Ref, error, R, Stack}`, and the monitor
//! brings that reason back, so:
//!
//! * results and the three exception classes are told apart exactly
//!   ([`RpcError::Exception`] with its [`ExceptionClass`] and stack trace), where
//!   `rex` folds everything into `{badrpc, Reason}`;
//! * each call runs in its own process on the peer, so many calls are in flight on one
//!   connection with no shared server in the way;
//! * a timed-out call is cleaned up: its process is killed, and its late answer is
//!   dropped, so the connection and the other calls are unaffected.
//!
//! Peers without spawn support (older than OTP 23) are called through the **`rex`**
//! server instead (`{'$gen_call', {From, Ref}, {call, M, F, A, GroupLeader}}`), and
//! [`RpcMethod::Rex`](crate::node::RpcMethod) forces it.
//!
//! The called function's group leader is a process of this node that answers the
//! Erlang I/O protocol, so a function that prints (`io:format/2`) never hangs the call;
//! its output is logged under the tracing target `autocluster::rpc::output`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::NodeName;
use crate::dist::control::Control;
use crate::handshake::DistFlags;
use crate::node::{ConnectError, DisconnectReason, Node, NodeInner, RpcMethod, SendError};
use crate::term::{Atom, Pid, Reference, Term};

/// The class of an Erlang exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionClass {
    /// `throw(R)`.
    Throw,
    /// `exit(R)`.
    Exit,
    /// `error(R)` (a crash: `badarg`, `undef`, ...).
    Error,
}

impl std::fmt::Display for ExceptionClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExceptionClass::Throw => "throw",
            ExceptionClass::Exit => "exit",
            ExceptionClass::Error => "error",
        })
    }
}

/// Why a remote call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// No connection to the node.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The request could not be sent.
    #[error(transparent)]
    Send(SendError),
    /// The called function raised an exception.
    #[error("{module}:{function} on {node} raised {class}: {reason}")]
    Exception {
        /// The node.
        node: NodeName,
        /// Module called.
        module: Atom,
        /// Function called.
        function: Atom,
        /// Exception class.
        class: ExceptionClass,
        /// Exception reason.
        reason: Term,
        /// The stack trace, for errors.
        stacktrace: Option<Term>,
    },
    /// `rex` answered `{badrpc, Reason}`.
    #[error("{module}:{function} on {node} failed: {{badrpc,{reason}}}")]
    BadRpc {
        /// The node.
        node: NodeName,
        /// Module called.
        module: Atom,
        /// Function called.
        function: Atom,
        /// The reason.
        reason: Term,
    },
    /// The peer refused to spawn the call (`SPAWN_REPLY` with an error).
    #[error("{node} refused to run the call: {reason}")]
    SpawnFailed {
        /// The node.
        node: NodeName,
        /// The error.
        reason: Term,
    },
    /// The process running the call was killed or exited abnormally.
    #[error("the process running {module}:{function} on {node} was terminated: {reason}")]
    Terminated {
        /// The node.
        node: NodeName,
        /// Module called.
        module: Atom,
        /// Function called.
        function: Atom,
        /// Its exit reason.
        reason: Term,
    },
    /// No answer within the timeout. The connection stays up.
    #[error("{module}:{function} on {node} did not answer within {after:?}")]
    Timeout {
        /// The node.
        node: NodeName,
        /// Module called.
        module: Atom,
        /// Function called.
        function: Atom,
        /// The timeout.
        after: Duration,
    },
    /// The connection went down before the answer came.
    #[error("connection to {node} lost during the call: {reason}")]
    ConnectionLost {
        /// The node.
        node: NodeName,
        /// Why it went down.
        reason: DisconnectReason,
    },
    /// `net_adm:ping/1` style: the node answered something else than `yes`.
    #[error("{node} answered the ping with {answer} (pang)")]
    Pang {
        /// The node.
        node: NodeName,
        /// What it said.
        answer: Term,
    },
}

impl RpcError {
    /// Whether the function called does not exist (`undef`), by either method.
    pub fn is_undef(&self) -> bool {
        match self {
            RpcError::Exception {
                class: ExceptionClass::Error,
                reason,
                ..
            } => reason.is_atom("undef"),
            RpcError::BadRpc { reason, .. } => match reason.as_tuple() {
                Some([exit, inner]) if exit.is_atom("EXIT") => match inner.as_tuple() {
                    Some([r, _]) => r.is_atom("undef"),
                    _ => inner.is_atom("undef"),
                },
                _ => false,
            },
            _ => false,
        }
    }
}

impl From<SendError> for RpcError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Connect(c) => RpcError::Connect(c),
            other => RpcError::Send(other),
        }
    }
}

enum Outcome {
    /// The erpc worker's exit reason.
    Exited(Term),
    /// The spawn was refused.
    SpawnFailed(Term),
    /// `{Ref, Reply}` arrived.
    Reply(Term),
    /// The connection went down.
    Lost(DisconnectReason),
}

enum Kind {
    Erpc,
    Reply,
}

struct Pending {
    node: NodeName,
    kind: Kind,
    /// `None` once the caller gave up.
    tx: Option<oneshot::Sender<Outcome>>,
    spawned: Option<Pid>,
}

/// Calls in flight, keyed by their request reference.
#[derive(Default)]
pub(crate) struct PendingCalls {
    map: std::sync::Mutex<HashMap<Reference, Pending>>,
}

impl PendingCalls {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Reference, Pending>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(
        &self,
        reference: Reference,
        node: NodeName,
        kind: Kind,
    ) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(
            reference,
            Pending {
                node,
                kind,
                tx: Some(tx),
                spawned: None,
            },
        );
        rx
    }

    fn remove(&self, reference: &Reference) {
        self.lock().remove(reference);
    }

    /// The caller timed out. Returns the worker to kill, when known; otherwise the
    /// entry stays (without a caller) until the spawn reply names the worker.
    fn abandon(&self, reference: &Reference) -> Option<Pid> {
        let mut map = self.lock();
        let entry = map.get_mut(reference)?;
        match entry.spawned.take() {
            Some(pid) => {
                map.remove(reference);
                Some(pid)
            }
            None if matches!(entry.kind, Kind::Erpc) => {
                entry.tx = None;
                None
            }
            None => {
                map.remove(reference);
                None
            }
        }
    }

    /// A `SPAWN_REPLY` arrived. Returns the kill to send to the worker it names when
    /// the caller gave up before the worker started.
    pub(crate) fn spawn_reply(
        &self,
        node: &Arc<NodeInner>,
        req_id: &Reference,
        result: Term,
    ) -> Option<Control> {
        let mut map = self.lock();
        let entry = map.get_mut(req_id)?;
        match (result, entry.tx.is_some()) {
            (Term::Pid(pid), true) => entry.spawned = Some(*pid),
            (Term::Pid(pid), false) => {
                // The caller gave up before the worker started: stop it.
                map.remove(req_id);
                return Some(Control::Exit2 {
                    from: node.procs.pid(crate::node::RPC_PROCESS_ID),
                    to: *pid,
                    reason: Term::atom("kill"),
                });
            }
            (reason, _) => {
                if let Some(tx) = map.remove(req_id).and_then(|entry| entry.tx) {
                    let _ = tx.send(Outcome::SpawnFailed(reason));
                }
            }
        }
        None
    }

    /// A monitor signal arrived; returns whether it belonged to a call.
    pub(crate) fn monitor_exit(
        &self,
        _node: &Arc<NodeInner>,
        reference: &Reference,
        reason: Term,
    ) -> bool {
        let Some(entry) = self.lock().remove(reference) else {
            return false;
        };
        if let Some(tx) = entry.tx {
            let _ = tx.send(Outcome::Exited(reason));
        }
        true
    }

    /// A message to the node's own call process: `{Ref, Reply}`. Returns whether it
    /// answered a call.
    pub(crate) fn deliver_reply(&self, message: Term) -> bool {
        let Term::Tuple(mut fields) = message else {
            return false;
        };
        if fields.len() != 2 {
            return false;
        }
        let Some(reference) = fields[0].as_reference().cloned() else {
            return false;
        };
        let mut map = self.lock();
        if !matches!(
            map.get(&reference),
            Some(Pending {
                kind: Kind::Reply,
                ..
            })
        ) {
            return false;
        }
        let entry = map.remove(&reference);
        drop(map);
        if let Some(tx) = entry.and_then(|e| e.tx) {
            let reply = fields.pop().unwrap_or_else(Term::nil);
            let _ = tx.send(Outcome::Reply(reply));
        }
        true
    }

    /// A message sent to an alias.
    pub(crate) fn deliver_alias(&self, _alias: &Reference, message: Term) -> bool {
        self.deliver_reply(message)
    }

    /// The connection to `node` went down: every call to it fails.
    pub(crate) fn connection_lost(&self, node: &NodeName, reason: &DisconnectReason) {
        let mut lost = Vec::new();
        self.lock().retain(|_, p| {
            if &p.node == node {
                if let Some(tx) = p.tx.take() {
                    lost.push(tx);
                }
                false
            } else {
                true
            }
        });
        for tx in lost {
            let _ = tx.send(Outcome::Lost(reason.clone()));
        }
    }

    /// Number of calls in flight (for tests and metrics).
    #[allow(dead_code)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

struct CallSite<'a> {
    node: &'a NodeName,
    module: &'a str,
    function: &'a str,
}

impl CallSite<'_> {
    fn timeout(&self, after: Duration) -> RpcError {
        RpcError::Timeout {
            node: self.node.clone(),
            module: Atom::from(self.module),
            function: Atom::from(self.function),
            after,
        }
    }

    fn exception(&self, class: ExceptionClass, reason: Term, stacktrace: Option<Term>) -> RpcError {
        RpcError::Exception {
            node: self.node.clone(),
            module: Atom::from(self.module),
            function: Atom::from(self.function),
            class,
            reason,
            stacktrace,
        }
    }
}

/// See [`Node::call`].
pub(crate) async fn call(
    node: &Node,
    peer: &NodeName,
    module: &str,
    function: &str,
    args: Vec<Term>,
    timeout: Duration,
) -> Result<Term, RpcError> {
    let inner = node.inner();
    let conn = inner.connect(peer, None).await?;
    let erpc = match inner.config().rpc_method {
        RpcMethod::Auto => conn.flags.contains(DistFlags::SPAWN),
        RpcMethod::Erpc => true,
        RpcMethod::Rex => false,
    };
    let site = CallSite {
        node: peer,
        module,
        function,
    };
    if erpc {
        erpc_call(inner, &conn, &site, args, timeout).await
    } else {
        rex_call(inner, &conn, &site, args, timeout).await
    }
}

async fn erpc_call(
    inner: &Arc<NodeInner>,
    conn: &Arc<crate::node::ConnHandleRef>,
    site: &CallSite<'_>,
    args: Vec<Term>,
    timeout: Duration,
) -> Result<Term, RpcError> {
    let req_id = inner.procs.make_ref();
    let res = inner.procs.make_ref();
    let rx = inner
        .calls
        .register(req_id.clone(), site.node.clone(), Kind::Erpc);
    let control = Control::SpawnRequest {
        req_id: req_id.clone(),
        from: inner.procs.pid(crate::node::RPC_PROCESS_ID),
        group_leader: inner.procs.pid(crate::node::IO_PROCESS_ID),
        mfa: (Atom::from("erpc"), Atom::from("execute_call"), 4),
        options: Term::List(vec![Term::atom("monitor")]),
    };
    let arg_list = Term::List(vec![
        Term::from(res.clone()),
        Term::atom(site.module),
        Term::atom(site.function),
        Term::List(args),
    ]);
    if let Err(e) = conn.send(&control, Some(&arg_list)).await {
        inner.calls.remove(&req_id);
        return Err(e.into());
    }
    let outcome = match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Outcome::Lost(DisconnectReason::NodeStopped),
        Err(_) => {
            if let Some(worker) = inner.calls.abandon(&req_id) {
                let kill = Control::Exit2 {
                    from: inner.procs.pid(crate::node::RPC_PROCESS_ID),
                    to: worker,
                    reason: Term::atom("kill"),
                };
                conn.try_send(kill, None);
            }
            return Err(site.timeout(timeout));
        }
    };
    match outcome {
        Outcome::Exited(reason) => erpc_result(site, &res, reason),
        Outcome::SpawnFailed(reason) => Err(RpcError::SpawnFailed {
            node: site.node.clone(),
            reason,
        }),
        Outcome::Lost(reason) => Err(RpcError::ConnectionLost {
            node: site.node.clone(),
            reason,
        }),
        Outcome::Reply(other) => Err(RpcError::Terminated {
            node: site.node.clone(),
            module: Atom::from(site.module),
            function: Atom::from(site.function),
            reason: other,
        }),
    }
}

/// Reads the exit reason of `erpc:execute_call/4`.
fn erpc_result(site: &CallSite<'_>, res: &Reference, reason: Term) -> Result<Term, RpcError> {
    let ours = |t: &Term| t.as_reference() == Some(res);
    if let Term::Tuple(fields) = &reason {
        match fields.as_slice() {
            [r, tag, value] if ours(r) => {
                let value = value.clone();
                if tag.is_atom("return") {
                    return Ok(value);
                } else if tag.is_atom("throw") {
                    return Err(site.exception(ExceptionClass::Throw, value, None));
                } else if tag.is_atom("exit") {
                    return Err(site.exception(ExceptionClass::Exit, value, None));
                } else if tag.is_atom("error") {
                    // `{Ref, error, {erpc, Reason}}`: bad arguments to the call itself.
                    return Err(site.exception(ExceptionClass::Error, value, None));
                }
            }
            [r, tag, value, stack] if ours(r) && tag.is_atom("error") => {
                return Err(site.exception(
                    ExceptionClass::Error,
                    value.clone(),
                    Some(stack.clone()),
                ));
            }
            _ => {}
        }
    }
    if reason.is_atom("noconnection") {
        return Err(RpcError::ConnectionLost {
            node: site.node.clone(),
            reason: DisconnectReason::ClosedByPeer,
        });
    }
    Err(RpcError::Terminated {
        node: site.node.clone(),
        module: Atom::from(site.module),
        function: Atom::from(site.function),
        reason,
    })
}

async fn rex_call(
    inner: &Arc<NodeInner>,
    conn: &Arc<crate::node::ConnHandleRef>,
    site: &CallSite<'_>,
    args: Vec<Term>,
    timeout: Duration,
) -> Result<Term, RpcError> {
    let request = Term::Tuple(vec![
        Term::atom("call"),
        Term::atom(site.module),
        Term::atom(site.function),
        Term::List(args),
        Term::from(inner.procs.pid(crate::node::IO_PROCESS_ID)),
    ]);
    let reply = gen_call(inner, conn, "rex", request, timeout)
        .await
        .map_err(|e| e.into_rpc(site, timeout))?;
    match reply.as_tuple() {
        Some([tag, reason]) if tag.is_atom("badrpc") => Err(RpcError::BadRpc {
            node: site.node.clone(),
            module: Atom::from(site.module),
            function: Atom::from(site.function),
            reason: reason.clone(),
        }),
        _ => Ok(reply),
    }
}

enum GenCallError {
    Send(SendError),
    Timeout,
    Lost(DisconnectReason),
}

impl GenCallError {
    fn into_rpc(self, site: &CallSite<'_>, after: Duration) -> RpcError {
        match self {
            GenCallError::Send(e) => e.into(),
            GenCallError::Timeout => site.timeout(after),
            GenCallError::Lost(reason) => RpcError::ConnectionLost {
                node: site.node.clone(),
                reason,
            },
        }
    }
}

/// `gen:call({Name, Node}, Request)` from the node's call process, with a plain
/// `{Pid, Ref}` tag (answered with `{Ref, Reply}` by every OTP version).
async fn gen_call(
    inner: &Arc<NodeInner>,
    conn: &Arc<crate::node::ConnHandleRef>,
    name: &str,
    request: Term,
    timeout: Duration,
) -> Result<Term, GenCallError> {
    let reference = inner.procs.make_ref();
    let me = inner.procs.pid(crate::node::RPC_PROCESS_ID);
    let rx = inner
        .calls
        .register(reference.clone(), conn.peer.clone(), Kind::Reply);
    let message = Term::Tuple(vec![
        Term::atom("$gen_call"),
        Term::Tuple(vec![Term::from(me.clone()), Term::from(reference.clone())]),
        request,
    ]);
    let control = Control::RegSend {
        from: me,
        to: Atom::from(name),
    };
    if let Err(e) = conn.send(&control, Some(&message)).await {
        inner.calls.remove(&reference);
        return Err(GenCallError::Send(e));
    }
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(Outcome::Reply(reply))) => Ok(reply),
        Ok(Ok(Outcome::Lost(reason))) => Err(GenCallError::Lost(reason)),
        Ok(Ok(_)) | Ok(Err(_)) => Err(GenCallError::Lost(DisconnectReason::NodeStopped)),
        Err(_) => {
            inner.calls.abandon(&reference);
            Err(GenCallError::Timeout)
        }
    }
}

/// See [`Node::gen_call`].
pub(crate) async fn call_registered(
    node: &Node,
    peer: &NodeName,
    name: &str,
    request: Term,
    timeout: Duration,
) -> Result<Term, RpcError> {
    let inner = node.inner();
    let site = CallSite {
        node: peer,
        module: name,
        function: "gen_call",
    };
    if peer == inner.name() {
        // A mailbox of this very node.
        let reference = inner.procs.make_ref();
        let me = inner.procs.pid(crate::node::RPC_PROCESS_ID);
        let rx = inner
            .calls
            .register(reference.clone(), peer.clone(), Kind::Reply);
        let message = Term::Tuple(vec![
            Term::atom("$gen_call"),
            Term::Tuple(vec![Term::from(me.clone()), Term::from(reference.clone())]),
            request,
        ]);
        inner.send_named_from(&me, peer, name, message).await?;
        return match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Outcome::Reply(reply))) => Ok(reply),
            Ok(_) => {
                Err(GenCallError::Lost(DisconnectReason::NodeStopped).into_rpc(&site, timeout))
            }
            Err(_) => {
                inner.calls.abandon(&reference);
                Err(site.timeout(timeout))
            }
        };
    }
    let conn = inner.connect(peer, None).await?;
    gen_call(inner, &conn, name, request, timeout)
        .await
        .map_err(|e| e.into_rpc(&site, timeout))
}

/// See [`Node::ping`].
pub(crate) async fn ping(node: &Node, peer: &NodeName, timeout: Duration) -> Result<(), RpcError> {
    let inner = node.inner();
    let conn = inner.connect(peer, None).await?;
    let request = Term::Tuple(vec![
        Term::atom("is_auth"),
        Term::atom(inner.name().as_str()),
    ]);
    let site = CallSite {
        node: peer,
        module: "net_kernel",
        function: "is_auth",
    };
    let answer = gen_call(inner, &conn, "net_kernel", request, timeout)
        .await
        .map_err(|e| e.into_rpc(&site, timeout))?;
    if answer.is_atom("yes") {
        Ok(())
    } else {
        Err(RpcError::Pang {
            node: peer.clone(),
            answer,
        })
    }
}
