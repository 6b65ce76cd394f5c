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
//!   ([`RpcError::Exception`] with its [`ExceptionClass`] and stack trace, and
//!   [`RpcError::is_undef`]), where `rex` folds everything into `{badrpc, Reason}`;
//! * each call runs in its own process on the peer, so many calls are in flight on one
//!   connection with no shared server in the way;
//! * a timed-out call is cleaned up: its process is killed, and its late answer is
//!   dropped, so the connection and the other calls are unaffected.
//!
//! Peers without spawn support (older than OTP 23) are called through the **`rex`**
//! server instead (`{'$gen_call', {From, Ref}, {call, M, F, A, GroupLeader}}`), and
//! [`RpcMethod::Rex`](crate::node::RpcMethod) forces it; its errors are
//! [`RpcError::BadRpc`].
//!
//! The called function's group leader is a process of this node that answers the
//! Erlang I/O protocol, so a function that prints (`io:format/2`) never hangs the call;
//! its output is logged under the tracing target `autocluster::rpc::output`, and reads
//! get `eof`.

use std::time::Duration;

use crate::dist::control::Control;
use crate::node::{
    CallKind, CallOutcome as Outcome, Channel, ConnectError, DisconnectReason, Node, RpcMethod,
    SendError, deadline_after,
};
use crate::term::{Atom, Reference, Term};
use crate::{Fault, NodeName};

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
    /// Whose fault the failure is, when the call did not run to an answer: no
    /// connection, a request not sent, a connection lost, a timeout. `None` when the peer
    /// answered: the function raised, returned `badrpc`, or its process ended otherwise.
    pub fn fault(&self) -> Option<Fault> {
        match self {
            RpcError::Connect(e) | RpcError::Send(SendError::Connect(e)) => Some(e.fault()),
            // The connection went away between the connect and the send.
            RpcError::Send(SendError::ConnectionClosed(_)) => Some(Fault::Unreachable),
            RpcError::Send(_) => Some(Fault::Local),
            RpcError::ConnectionLost { reason, .. } => Some(reason.fault()),
            RpcError::Timeout { .. } => Some(Fault::Timeout),
            _ => None,
        }
    }

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

impl Node {
    /// Calls `module:function(args)` on `peer` and returns its result.
    ///
    /// Many calls may be in flight on one connection. `timeout` limits the remote
    /// execution; connecting has its own limits. A timeout leaves the connection and
    /// the other calls intact (and kills the remote worker under `erpc`). See
    /// [`crate::rpc`] for how the call is made and what errors mean.
    pub async fn call(
        &self,
        peer: &NodeName,
        module: &str,
        function: &str,
        args: Vec<Term>,
        timeout: Duration,
    ) -> Result<Term, RpcError> {
        let channel = self.channel(peer).await?;
        let erpc = match self.rpc_method() {
            RpcMethod::Auto => channel.spawns(),
            RpcMethod::Erpc => true,
            RpcMethod::Rex => false,
        };
        let site = CallSite {
            node: peer,
            module,
            function,
        };
        if erpc {
            erpc_call(self, &channel, &site, args, timeout).await
        } else {
            rex_call(self, &channel, &site, args, timeout).await
        }
    }

    /// `gen:call({name, peer}, request, timeout)`: sends `{'$gen_call', {From, Ref},
    /// Request}` to the process registered as `name` on `peer` (an Erlang `gen_server`,
    /// or a [`Mailbox`](crate::Mailbox) answering with
    /// [`Mailbox::reply`](crate::Mailbox::reply)) and waits for its reply.
    pub async fn gen_call(
        &self,
        peer: &NodeName,
        name: &str,
        request: Term,
        timeout: Duration,
    ) -> Result<Term, RpcError> {
        let site = CallSite {
            node: peer,
            module: name,
            function: "gen_call",
        };
        if peer == self.name() {
            // A mailbox of this very node.
            let reference = self.new_ref();
            let deadline = deadline_after(timeout);
            let rx = self.expect_reply(&reference, peer, deadline);
            let message = gen_call_message(self, &reference, request);
            if let Err(e) = self.send_named(peer, name, message).await {
                self.give_up(&reference);
                return Err(e.into());
            }
            return match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(Outcome::Reply(reply))) => Ok(reply),
                Ok(_) => {
                    Err(GenCallError::Lost(DisconnectReason::NodeStopped).into_rpc(&site, timeout))
                }
                Err(_) => {
                    self.give_up(&reference);
                    Err(site.timeout(timeout))
                }
            };
        }
        let channel = self.channel(peer).await?;
        gen_call(self, &channel, name, request, timeout)
            .await
            .map_err(|e| e.into_rpc(&site, timeout))
    }

    /// Pings `peer` as `net_adm:ping/1` does: connects and asks its `net_kernel`
    /// whether we are authorised. `Ok(())` is `pong`.
    pub async fn ping(&self, peer: &NodeName, timeout: Duration) -> Result<(), RpcError> {
        let channel = self.channel(peer).await?;
        let request = Term::Tuple(vec![
            Term::atom("is_auth"),
            Term::atom(self.name().as_str()),
        ]);
        let site = CallSite {
            node: peer,
            module: "net_kernel",
            function: "is_auth",
        };
        let answer = gen_call(self, &channel, "net_kernel", request, timeout)
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
}

async fn erpc_call(
    node: &Node,
    channel: &Channel,
    site: &CallSite<'_>,
    args: Vec<Term>,
    timeout: Duration,
) -> Result<Term, RpcError> {
    let req_id = node.new_ref();
    let res = node.new_ref();
    let control = Control::SpawnRequest {
        req_id: req_id.clone(),
        from: node.caller(),
        group_leader: channel.group_leader(),
        mfa: (Atom::from("erpc"), Atom::from("execute_call"), 4),
        options: Term::List(vec![Term::atom("monitor")]),
    };
    let arg_list = Term::List(vec![
        Term::from(res.clone()),
        Term::atom(site.module),
        Term::atom(site.function),
        Term::List(args),
    ]);
    // One deadline for the send (which waits while the connection's queue is full) and
    // the answer: the call table drops the entry a grace period after it.
    let deadline = deadline_after(timeout);
    let rx = channel
        .request(&req_id, CallKind::Erpc, deadline, &control, Some(&arg_list))
        .await?;
    let outcome = match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Outcome::Lost(DisconnectReason::NodeStopped),
        Err(_) => {
            channel.give_up(&req_id);
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
    node: &Node,
    channel: &Channel,
    site: &CallSite<'_>,
    args: Vec<Term>,
    timeout: Duration,
) -> Result<Term, RpcError> {
    let request = Term::Tuple(vec![
        Term::atom("call"),
        Term::atom(site.module),
        Term::atom(site.function),
        Term::List(args),
        Term::from(channel.group_leader()),
    ]);
    let reply = gen_call(node, channel, "rex", request, timeout)
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

/// `{'$gen_call', {Caller, Ref}, Request}`, from the node's call process.
fn gen_call_message(node: &Node, reference: &Reference, request: Term) -> Term {
    Term::Tuple(vec![
        Term::atom("$gen_call"),
        Term::Tuple(vec![
            Term::from(node.caller()),
            Term::from(reference.clone()),
        ]),
        request,
    ])
}

/// `gen:call({Name, Node}, Request)` from the node's call process, with a plain
/// `{Pid, Ref}` tag (answered with `{Ref, Reply}` by every OTP version).
async fn gen_call(
    node: &Node,
    channel: &Channel,
    name: &str,
    request: Term,
    timeout: Duration,
) -> Result<Term, GenCallError> {
    let reference = node.new_ref();
    let message = gen_call_message(node, &reference, request);
    let control = Control::RegSend {
        from: node.caller(),
        to: Atom::from(name),
    };
    let deadline = deadline_after(timeout);
    let rx = channel
        .request(
            &reference,
            CallKind::Reply,
            deadline,
            &control,
            Some(&message),
        )
        .await
        .map_err(GenCallError::Send)?;
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(Outcome::Reply(reply))) => Ok(reply),
        Ok(Ok(Outcome::Lost(reason))) => Err(GenCallError::Lost(reason)),
        Ok(Ok(_)) | Ok(Err(_)) => Err(GenCallError::Lost(DisconnectReason::NodeStopped)),
        Err(_) => {
            channel.give_up(&reference);
            Err(GenCallError::Timeout)
        }
    }
}
