//! Control messages: what a data frame asks the receiving node to do.
//!
//! A data frame is `112 | ControlTerm | [MessageTerm]`, both terms in the external term
//! format. [`decode`] turns a frame payload into a [`DistMessage`]; [`encode`] does the
//! reverse. Trace-token variants (`*_TT`) decode as their plain forms (the token is
//! dropped), and the payload forms of exits (`PAYLOAD_EXIT*`, which carry the reason as
//! the message term) decode as the plain exits. An operation this crate does not know is
//! [`Control::Unknown`]: the connection logs it and goes on.

use crate::term::{self, Atom, DecodeLimits, Pid, Reference, Term};

use super::frame::PASS_THROUGH;

/// Operation codes of control messages (OTP's `dist.h`).
#[allow(missing_docs)]
pub mod op {
    pub const LINK: i64 = 1;
    pub const SEND: i64 = 2;
    pub const EXIT: i64 = 3;
    pub const UNLINK: i64 = 4;
    pub const NODE_LINK: i64 = 5;
    pub const REG_SEND: i64 = 6;
    pub const GROUP_LEADER: i64 = 7;
    pub const EXIT2: i64 = 8;
    pub const SEND_TT: i64 = 12;
    pub const EXIT_TT: i64 = 13;
    pub const REG_SEND_TT: i64 = 16;
    pub const EXIT2_TT: i64 = 18;
    pub const MONITOR_P: i64 = 19;
    pub const DEMONITOR_P: i64 = 20;
    pub const MONITOR_P_EXIT: i64 = 21;
    pub const SEND_SENDER: i64 = 22;
    pub const SEND_SENDER_TT: i64 = 23;
    pub const PAYLOAD_EXIT: i64 = 24;
    pub const PAYLOAD_EXIT_TT: i64 = 25;
    pub const PAYLOAD_EXIT2: i64 = 26;
    pub const PAYLOAD_EXIT2_TT: i64 = 27;
    pub const PAYLOAD_MONITOR_P_EXIT: i64 = 28;
    pub const SPAWN_REQUEST: i64 = 29;
    pub const SPAWN_REQUEST_TT: i64 = 30;
    pub const SPAWN_REPLY: i64 = 31;
    pub const SPAWN_REPLY_TT: i64 = 32;
    pub const ALIAS_SEND: i64 = 33;
    pub const ALIAS_SEND_TT: i64 = 34;
    pub const UNLINK_ID: i64 = 35;
    pub const UNLINK_ID_ACK: i64 = 36;
}

/// A process addressed by pid or by registered name (monitors accept both).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProcessRef {
    /// A pid.
    Pid(Pid),
    /// A registered name on the receiving node.
    Name(Atom),
}

impl ProcessRef {
    fn from_term(t: Term) -> Option<ProcessRef> {
        match t {
            Term::Pid(p) => Some(ProcessRef::Pid(*p)),
            Term::Atom(a) => Some(ProcessRef::Name(a)),
            _ => None,
        }
    }

    fn to_term(&self) -> Term {
        match self {
            ProcessRef::Pid(p) => Term::from(p.clone()),
            ProcessRef::Name(a) => Term::Atom(a.clone()),
        }
    }
}

/// A decoded control message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Control {
    /// `LINK`: `from` links to `to`.
    Link {
        /// The linking process.
        from: Pid,
        /// The local process.
        to: Pid,
    },
    /// `SEND` / `SEND_SENDER`: a message to a pid (the sender is known only with
    /// `SEND_SENDER`).
    Send {
        /// The sender, when the peer said.
        from: Option<Pid>,
        /// The destination.
        to: Pid,
    },
    /// `REG_SEND`: a message to a registered name.
    RegSend {
        /// The sender.
        from: Pid,
        /// The registered name.
        to: Atom,
    },
    /// `ALIAS_SEND`: a message to a process alias (OTP 24+ `gen:call` replies).
    AliasSend {
        /// The sender.
        from: Pid,
        /// The alias.
        alias: Reference,
    },
    /// `EXIT` / `PAYLOAD_EXIT`: a linked process exited.
    Exit {
        /// The process that exited.
        from: Pid,
        /// The linked local process.
        to: Pid,
        /// Its exit reason.
        reason: Term,
    },
    /// `EXIT2` / `PAYLOAD_EXIT2`: `exit(To, Reason)` called remotely.
    Exit2 {
        /// The caller.
        from: Pid,
        /// The target.
        to: Pid,
        /// The reason.
        reason: Term,
    },
    /// `GROUP_LEADER`: set a process's group leader.
    GroupLeader {
        /// The new group leader.
        from: Pid,
        /// The process.
        to: Pid,
    },
    /// `MONITOR_P`: `from` monitors a local process.
    Monitor {
        /// The monitoring process.
        from: Pid,
        /// The monitored local process.
        to: ProcessRef,
        /// The monitor reference.
        reference: Reference,
    },
    /// `DEMONITOR_P`: a monitor is removed.
    Demonitor {
        /// The monitoring process.
        from: Pid,
        /// The monitored local process.
        to: ProcessRef,
        /// The monitor reference.
        reference: Reference,
    },
    /// `MONITOR_P_EXIT` / `PAYLOAD_MONITOR_P_EXIT`: a monitored remote process exited.
    MonitorExit {
        /// The monitored process.
        from: ProcessRef,
        /// The local monitoring process.
        to: Pid,
        /// The monitor reference.
        reference: Reference,
        /// The exit reason.
        reason: Term,
    },
    /// `SPAWN_REQUEST`: spawn a process on the receiving node.
    SpawnRequest {
        /// Request id.
        req_id: Reference,
        /// The requesting process.
        from: Pid,
        /// The group leader for the new process.
        group_leader: Pid,
        /// Module, function and arity.
        mfa: (Atom, Atom, u32),
        /// Spawn options.
        options: Term,
    },
    /// `SPAWN_REPLY`: the outcome of a spawn request.
    SpawnReply {
        /// Request id.
        req_id: Reference,
        /// The requesting process.
        to: Pid,
        /// Flags (1 = link created, 2 = monitor created).
        flags: i64,
        /// The new pid, or an error atom.
        result: Term,
    },
    /// `UNLINK_ID`: the unlink protocol of OTP 23+.
    UnlinkId {
        /// The unlink id.
        id: Term,
        /// The unlinking process.
        from: Pid,
        /// The local process.
        to: Pid,
    },
    /// `UNLINK_ID_ACK`: acknowledges an unlink.
    UnlinkIdAck {
        /// The unlink id.
        id: Term,
        /// The acknowledging process.
        from: Pid,
        /// The local process.
        to: Pid,
    },
    /// An operation this crate does not handle, kept for logging.
    Unknown {
        /// The operation code (or -1 when the control term is not a tuple with an integer).
        op: i64,
        /// The whole control term.
        control: Term,
    },
}

/// A control message with its message term, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct DistMessage {
    /// The control message.
    pub control: Control,
    /// The message (for sends) or argument list (for spawn requests).
    pub message: Option<Term>,
}

/// A data frame that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The frame does not start with the pass-through tag.
    #[error(
        "data frame starts with {0}, not the pass-through tag 112 (atom cache frames are never negotiated)"
    )]
    NotPassThrough(u8),
    /// A term in the frame cannot be decoded.
    #[error("undecodable term in data frame: {0}")]
    Term(#[from] term::DecodeError),
    /// A known operation with the wrong fields.
    #[error("malformed control message {op}: {detail}")]
    Malformed {
        /// Operation code.
        op: i64,
        /// What was wrong.
        detail: &'static str,
    },
    /// A message term is missing where the operation needs one.
    #[error("control message {0} needs a message term and has none")]
    MissingMessage(i64),
    /// Bytes after the message term.
    #[error("{0} bytes after the message term")]
    Trailing(usize),
}

/// Decodes a data frame payload (`112 | Control | [Message]`).
///
/// The two terms share one allocation budget, [`DecodeLimits::budget_for`] the whole
/// payload, so a frame holds no more memory than one term of its size could.
pub fn decode(payload: &[u8], limits: &DecodeLimits) -> Result<DistMessage, ControlError> {
    let Some((&tag, rest)) = payload.split_first() else {
        return Err(ControlError::NotPassThrough(0));
    };
    if tag != PASS_THROUGH {
        return Err(ControlError::NotPassThrough(tag));
    }
    let mut budget = limits.budget_for(payload.len());
    let (control, used) = term::decode::decode_prefix_within(rest, limits.max_depth, &mut budget)?;
    let rest = &rest[used..];
    let message = if rest.is_empty() {
        None
    } else {
        let (m, used) = term::decode::decode_prefix_within(rest, limits.max_depth, &mut budget)?;
        if used != rest.len() {
            return Err(ControlError::Trailing(rest.len() - used));
        }
        Some(m)
    };
    let (mut control, reason_in_message) = Control::from_term(control, message.is_some())?;
    let message = if reason_in_message {
        let reason = message.unwrap_or_else(Term::nil);
        if let Control::Exit { reason: r, .. }
        | Control::Exit2 { reason: r, .. }
        | Control::MonitorExit { reason: r, .. } = &mut control
        {
            *r = reason;
        }
        None
    } else {
        message
    };
    Ok(DistMessage { control, message })
}

fn pid(t: Term, op: i64, what: &'static str) -> Result<Pid, ControlError> {
    match t {
        Term::Pid(p) => Ok(*p),
        _ => Err(ControlError::Malformed { op, detail: what }),
    }
}

fn reference(t: Term, op: i64, what: &'static str) -> Result<Reference, ControlError> {
    match t {
        Term::Reference(r) => Ok(*r),
        _ => Err(ControlError::Malformed { op, detail: what }),
    }
}

fn atom(t: Term, op: i64, what: &'static str) -> Result<Atom, ControlError> {
    match t {
        Term::Atom(a) => Ok(a),
        _ => Err(ControlError::Malformed { op, detail: what }),
    }
}

impl Control {
    /// Interprets a control term. Also says whether the exit reason is the message
    /// term (the `PAYLOAD_*` forms), which the caller then moves into the control.
    fn from_term(control: Term, has_message: bool) -> Result<(Control, bool), ControlError> {
        let Term::Tuple(fields) = control else {
            return Ok((Control::Unknown { op: -1, control }, false));
        };
        let Some(op) = fields.first().and_then(Term::as_integer) else {
            return Ok((
                Control::Unknown {
                    op: -1,
                    control: Term::Tuple(fields),
                },
                false,
            ));
        };
        if !(op::LINK..=op::UNLINK_ID_ACK).contains(&op)
            || matches!(op, op::UNLINK | op::NODE_LINK | 9..=11 | 14 | 15 | 17)
        {
            return Ok((
                Control::Unknown {
                    op,
                    control: Term::Tuple(fields),
                },
                false,
            ));
        }
        let reason_in_message = matches!(
            op,
            op::PAYLOAD_EXIT
                | op::PAYLOAD_EXIT_TT
                | op::PAYLOAD_EXIT2
                | op::PAYLOAD_EXIT2_TT
                | op::PAYLOAD_MONITOR_P_EXIT
        );
        let n = fields.len();
        let mut it = fields.into_iter().skip(1);
        let mut next = || it.next().unwrap_or(Term::nil());
        let malformed = |detail| ControlError::Malformed { op, detail };
        let arity = |want: &[usize]| {
            if want.contains(&n) {
                Ok(())
            } else {
                Err(malformed("wrong number of fields"))
            }
        };
        let need_message = || {
            if has_message {
                Ok(())
            } else {
                Err(ControlError::MissingMessage(op))
            }
        };
        let control = match op {
            op::LINK => {
                arity(&[3])?;
                Control::Link {
                    from: pid(next(), op, "from")?,
                    to: pid(next(), op, "to")?,
                }
            }
            op::SEND | op::SEND_TT => {
                arity(&[3, 4])?;
                need_message()?;
                let _unused = next();
                Control::Send {
                    from: None,
                    to: pid(next(), op, "to")?,
                }
            }
            op::SEND_SENDER | op::SEND_SENDER_TT => {
                arity(&[3, 4])?;
                need_message()?;
                Control::Send {
                    from: Some(pid(next(), op, "from")?),
                    to: pid(next(), op, "to")?,
                }
            }
            op::REG_SEND | op::REG_SEND_TT => {
                arity(&[4, 5])?;
                need_message()?;
                let from = pid(next(), op, "from")?;
                let _unused = next();
                Control::RegSend {
                    from,
                    to: atom(next(), op, "to name")?,
                }
            }
            op::ALIAS_SEND | op::ALIAS_SEND_TT => {
                arity(&[3, 4])?;
                need_message()?;
                Control::AliasSend {
                    from: pid(next(), op, "from")?,
                    alias: reference(next(), op, "alias")?,
                }
            }
            op::EXIT | op::EXIT2 => {
                arity(&[4])?;
                let (from, to, reason) = (pid(next(), op, "from")?, pid(next(), op, "to")?, next());
                if op == op::EXIT {
                    Control::Exit { from, to, reason }
                } else {
                    Control::Exit2 { from, to, reason }
                }
            }
            op::EXIT_TT | op::EXIT2_TT => {
                arity(&[5])?;
                let (from, to) = (pid(next(), op, "from")?, pid(next(), op, "to")?);
                let _token = next();
                let reason = next();
                if op == op::EXIT_TT {
                    Control::Exit { from, to, reason }
                } else {
                    Control::Exit2 { from, to, reason }
                }
            }
            op::PAYLOAD_EXIT | op::PAYLOAD_EXIT_TT | op::PAYLOAD_EXIT2 | op::PAYLOAD_EXIT2_TT => {
                arity(&[3, 4])?;
                need_message()?;
                let (from, to) = (pid(next(), op, "from")?, pid(next(), op, "to")?);
                // The reason is the message term; filled in by `decode`.
                let reason = Term::nil();
                if op == op::PAYLOAD_EXIT || op == op::PAYLOAD_EXIT_TT {
                    Control::Exit { from, to, reason }
                } else {
                    Control::Exit2 { from, to, reason }
                }
            }
            op::GROUP_LEADER => {
                arity(&[3])?;
                Control::GroupLeader {
                    from: pid(next(), op, "from")?,
                    to: pid(next(), op, "to")?,
                }
            }
            op::MONITOR_P | op::DEMONITOR_P => {
                arity(&[4])?;
                let from = pid(next(), op, "from")?;
                let to = ProcessRef::from_term(next()).ok_or(malformed("to"))?;
                let reference = reference(next(), op, "ref")?;
                if op == op::MONITOR_P {
                    Control::Monitor {
                        from,
                        to,
                        reference,
                    }
                } else {
                    Control::Demonitor {
                        from,
                        to,
                        reference,
                    }
                }
            }
            op::MONITOR_P_EXIT => {
                arity(&[5])?;
                let from = ProcessRef::from_term(next()).ok_or(malformed("from"))?;
                let to = pid(next(), op, "to")?;
                let reference = reference(next(), op, "ref")?;
                Control::MonitorExit {
                    from,
                    to,
                    reference,
                    reason: next(),
                }
            }
            op::PAYLOAD_MONITOR_P_EXIT => {
                arity(&[4])?;
                need_message()?;
                let from = ProcessRef::from_term(next()).ok_or(malformed("from"))?;
                let to = pid(next(), op, "to")?;
                let reference = reference(next(), op, "ref")?;
                Control::MonitorExit {
                    from,
                    to,
                    reference,
                    reason: Term::nil(),
                }
            }
            op::SPAWN_REQUEST | op::SPAWN_REQUEST_TT => {
                arity(&[6, 7])?;
                need_message()?;
                let req_id = reference(next(), op, "req id")?;
                let from = pid(next(), op, "from")?;
                let group_leader = pid(next(), op, "group leader")?;
                let mfa = match next() {
                    Term::Tuple(mfa) if mfa.len() == 3 => {
                        let mut mfa = mfa.into_iter();
                        let m = atom(mfa.next().unwrap_or(Term::nil()), op, "module")?;
                        let f = atom(mfa.next().unwrap_or(Term::nil()), op, "function")?;
                        let a = mfa
                            .next()
                            .and_then(|a| a.as_integer())
                            .and_then(|a| u32::try_from(a).ok())
                            .ok_or(malformed("arity"))?;
                        (m, f, a)
                    }
                    _ => return Err(malformed("mfa")),
                };
                Control::SpawnRequest {
                    req_id,
                    from,
                    group_leader,
                    mfa,
                    options: next(),
                }
            }
            op::SPAWN_REPLY | op::SPAWN_REPLY_TT => {
                arity(&[5, 6])?;
                let req_id = reference(next(), op, "req id")?;
                let to = pid(next(), op, "to")?;
                let flags = next().as_integer().ok_or(malformed("flags"))?;
                Control::SpawnReply {
                    req_id,
                    to,
                    flags,
                    result: next(),
                }
            }
            op::UNLINK_ID | op::UNLINK_ID_ACK => {
                arity(&[4])?;
                let id = next();
                let (from, to) = (pid(next(), op, "from")?, pid(next(), op, "to")?);
                if op == op::UNLINK_ID {
                    Control::UnlinkId { id, from, to }
                } else {
                    Control::UnlinkIdAck { id, from, to }
                }
            }
            _ => return Err(malformed("unhandled operation")),
        };
        Ok((control, reason_in_message))
    }

    /// The control term and whether the message slot carries the reason (payload
    /// forms) rather than a message.
    fn to_term(&self) -> Term {
        let i = |n: i64| Term::Integer(n);
        let p = |p: &Pid| Term::from(p.clone());
        let r = |r: &Reference| Term::from(r.clone());
        match self {
            Control::Link { from, to } => Term::Tuple(vec![i(op::LINK), p(from), p(to)]),
            Control::Send { from: None, to } => {
                Term::Tuple(vec![i(op::SEND), Term::atom(""), p(to)])
            }
            Control::Send {
                from: Some(from),
                to,
            } => Term::Tuple(vec![i(op::SEND_SENDER), p(from), p(to)]),
            Control::RegSend { from, to } => Term::Tuple(vec![
                i(op::REG_SEND),
                p(from),
                Term::atom(""),
                Term::Atom(to.clone()),
            ]),
            Control::AliasSend { from, alias } => {
                Term::Tuple(vec![i(op::ALIAS_SEND), p(from), r(alias)])
            }
            Control::Exit { from, to, reason } => {
                Term::Tuple(vec![i(op::EXIT), p(from), p(to), reason.clone()])
            }
            Control::Exit2 { from, to, reason } => {
                Term::Tuple(vec![i(op::EXIT2), p(from), p(to), reason.clone()])
            }
            Control::GroupLeader { from, to } => {
                Term::Tuple(vec![i(op::GROUP_LEADER), p(from), p(to)])
            }
            Control::Monitor {
                from,
                to,
                reference,
            } => Term::Tuple(vec![i(op::MONITOR_P), p(from), to.to_term(), r(reference)]),
            Control::Demonitor {
                from,
                to,
                reference,
            } => Term::Tuple(vec![
                i(op::DEMONITOR_P),
                p(from),
                to.to_term(),
                r(reference),
            ]),
            Control::MonitorExit {
                from,
                to,
                reference,
                reason,
            } => Term::Tuple(vec![
                i(op::MONITOR_P_EXIT),
                from.to_term(),
                p(to),
                r(reference),
                reason.clone(),
            ]),
            Control::SpawnRequest {
                req_id,
                from,
                group_leader,
                mfa,
                options,
            } => Term::Tuple(vec![
                i(op::SPAWN_REQUEST),
                r(req_id),
                p(from),
                p(group_leader),
                Term::Tuple(vec![
                    Term::Atom(mfa.0.clone()),
                    Term::Atom(mfa.1.clone()),
                    Term::Integer(i64::from(mfa.2)),
                ]),
                options.clone(),
            ]),
            Control::SpawnReply {
                req_id,
                to,
                flags,
                result,
            } => Term::Tuple(vec![
                i(op::SPAWN_REPLY),
                r(req_id),
                p(to),
                i(*flags),
                result.clone(),
            ]),
            Control::UnlinkId { id, from, to } => {
                Term::Tuple(vec![i(op::UNLINK_ID), id.clone(), p(from), p(to)])
            }
            Control::UnlinkIdAck { id, from, to } => {
                Term::Tuple(vec![i(op::UNLINK_ID_ACK), id.clone(), p(from), p(to)])
            }
            Control::Unknown { control, .. } => control.clone(),
        }
    }
}

/// Appends a data frame payload (`112 | Control | [Message]`, without the frame length)
/// for `control` and `message` to `out`.
pub fn encode(
    control: &Control,
    message: Option<&Term>,
    out: &mut Vec<u8>,
) -> Result<(), term::EncodeError> {
    out.push(PASS_THROUGH);
    term::encode_into(&control.to_term(), out)?;
    if let Some(m) = message {
        term::encode_into(m, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::term::tests::{arb_atom, arb_term};

    fn pid(n: u32) -> Pid {
        Pid {
            node: Atom::new("a@h"),
            id: n,
            serial: 0,
            creation: 1,
        }
    }

    fn reference() -> Reference {
        Reference {
            node: Atom::new("a@h"),
            creation: 1,
            id: vec![1, 2, 3],
        }
    }

    fn frame(control: &Term, message: Option<&Term>) -> Vec<u8> {
        let mut out = vec![PASS_THROUGH];
        term::encode_into(control, &mut out).unwrap();
        if let Some(m) = message {
            term::encode_into(m, &mut out).unwrap();
        }
        out
    }

    fn dec(payload: &[u8]) -> Result<DistMessage, ControlError> {
        decode(payload, &DecodeLimits::default())
    }

    #[test]
    fn trace_token_and_payload_forms_decode_as_the_plain_ones() {
        let (a, b) = (Term::from(pid(1)), Term::from(pid(2)));
        let msg = Term::atom("hi");
        let send_tt = frame(
            &Term::tuple(vec![
                op::SEND_TT.into(),
                Term::atom(""),
                b.clone(),
                Term::atom("tok"),
            ]),
            Some(&msg),
        );
        assert_eq!(
            dec(&send_tt).unwrap(),
            DistMessage {
                control: Control::Send {
                    from: None,
                    to: pid(2)
                },
                message: Some(msg.clone())
            }
        );
        let payload_exit = frame(
            &Term::tuple(vec![op::PAYLOAD_EXIT.into(), a.clone(), b.clone()]),
            Some(&Term::atom("killed")),
        );
        assert_eq!(
            dec(&payload_exit).unwrap(),
            DistMessage {
                control: Control::Exit {
                    from: pid(1),
                    to: pid(2),
                    reason: Term::atom("killed")
                },
                message: None
            }
        );
        let down = frame(
            &Term::tuple(vec![
                op::PAYLOAD_MONITOR_P_EXIT.into(),
                Term::atom("name"),
                b,
                Term::from(reference()),
            ]),
            Some(&Term::atom("noproc")),
        );
        assert!(matches!(
            dec(&down).unwrap().control,
            Control::MonitorExit { from: ProcessRef::Name(_), reason, .. } if reason.is_atom("noproc")
        ));
    }

    #[test]
    fn malformed_frames_are_errors_and_unknown_operations_are_kept() {
        let a = Term::from(pid(1));
        assert!(matches!(dec(&[]), Err(ControlError::NotPassThrough(0))));
        assert!(matches!(
            dec(&[68, 1]),
            Err(ControlError::NotPassThrough(68))
        ));
        // SEND needs a message term.
        let send = frame(
            &Term::tuple(vec![op::SEND.into(), Term::atom(""), a.clone()]),
            None,
        );
        assert!(matches!(dec(&send), Err(ControlError::MissingMessage(2))));
        // LINK with a non-pid.
        let link = frame(
            &Term::tuple(vec![op::LINK.into(), a.clone(), Term::atom("x")]),
            None,
        );
        assert!(matches!(
            dec(&link),
            Err(ControlError::Malformed { op: 1, .. })
        ));
        // Bytes after the message term.
        let mut trailing = frame(
            &Term::tuple(vec![op::LINK.into(), a.clone(), a.clone()]),
            Some(&a),
        );
        trailing.push(0);
        assert!(matches!(dec(&trailing), Err(ControlError::Trailing(1))));
        // UNLINK (pre-OTP 23, replaced by UNLINK_ID) and operations from the future.
        for code in [op::UNLINK, 99] {
            let f = frame(&Term::tuple(vec![code.into(), a.clone()]), None);
            assert!(matches!(dec(&f).unwrap().control, Control::Unknown { op, .. } if op == code));
        }
        let f = frame(&Term::atom("what"), None);
        assert!(matches!(
            dec(&f).unwrap().control,
            Control::Unknown { op: -1, .. }
        ));
    }

    /// Regression (fuzz target `dist_frame`, memory rule): the control and message terms
    /// each had the budget of the whole frame, so a frame could hold twice what one term
    /// of its size may. 3,000 `[]`s in each term (6,015 bytes) held 192 KB, above
    /// `16 × 6,015 + 64 KiB`; they now share one budget.
    #[test]
    fn regression_control_and_message_share_one_budget() {
        let nils = Term::list(vec![Term::nil(); 3000]);
        let payload = frame(&nils, Some(&nils));
        assert_eq!(payload.len(), 6015);
        assert!(matches!(
            dec(&payload),
            Err(ControlError::Term(term::DecodeError::TooLarge { .. }))
        ));
        // Each term alone fits.
        assert!(term::decode(&payload[1..3008]).is_ok());
    }

    fn arb_pid() -> impl Strategy<Value = Pid> {
        (arb_atom(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            |(node, id, serial, creation)| Pid {
                node,
                id,
                serial,
                creation,
            },
        )
    }

    fn arb_ref() -> impl Strategy<Value = Reference> {
        (
            arb_atom(),
            any::<u32>(),
            prop::collection::vec(any::<u32>(), 0..=5),
        )
            .prop_map(|(node, creation, id)| Reference { node, creation, id })
    }

    fn arb_process() -> impl Strategy<Value = ProcessRef> {
        prop_oneof![
            arb_pid().prop_map(ProcessRef::Pid),
            arb_atom().prop_map(ProcessRef::Name)
        ]
    }

    /// A control message and whether it needs a message term.
    fn arb_control() -> impl Strategy<Value = (Control, bool)> {
        prop_oneof![
            (arb_pid(), arb_pid()).prop_map(|(from, to)| (Control::Link { from, to }, false)),
            (proptest::option::of(arb_pid()), arb_pid())
                .prop_map(|(from, to)| (Control::Send { from, to }, true)),
            (arb_pid(), arb_atom()).prop_map(|(from, to)| (Control::RegSend { from, to }, true)),
            (arb_pid(), arb_ref())
                .prop_map(|(from, alias)| (Control::AliasSend { from, alias }, true)),
            (arb_pid(), arb_pid(), arb_term())
                .prop_map(|(from, to, reason)| (Control::Exit { from, to, reason }, false)),
            (arb_pid(), arb_pid(), arb_term())
                .prop_map(|(from, to, reason)| (Control::Exit2 { from, to, reason }, false)),
            (arb_pid(), arb_pid())
                .prop_map(|(from, to)| (Control::GroupLeader { from, to }, false)),
            (arb_pid(), arb_process(), arb_ref()).prop_map(|(from, to, reference)| (
                Control::Monitor {
                    from,
                    to,
                    reference
                },
                false
            )),
            (arb_pid(), arb_process(), arb_ref()).prop_map(|(from, to, reference)| (
                Control::Demonitor {
                    from,
                    to,
                    reference
                },
                false
            )),
            (arb_process(), arb_pid(), arb_ref(), arb_term()).prop_map(
                |(from, to, reference, reason)| (
                    Control::MonitorExit {
                        from,
                        to,
                        reference,
                        reason
                    },
                    false
                )
            ),
            (
                arb_ref(),
                arb_pid(),
                arb_pid(),
                arb_atom(),
                arb_atom(),
                any::<u32>(),
                arb_term()
            )
                .prop_map(|(req_id, from, group_leader, m, f, a, options)| (
                    Control::SpawnRequest {
                        req_id,
                        from,
                        group_leader,
                        mfa: (m, f, a),
                        options
                    },
                    true
                )),
            (arb_ref(), arb_pid(), any::<i64>(), arb_term()).prop_map(
                |(req_id, to, flags, result)| (
                    Control::SpawnReply {
                        req_id,
                        to,
                        flags,
                        result
                    },
                    false
                )
            ),
            (arb_term(), arb_pid(), arb_pid())
                .prop_map(|(id, from, to)| (Control::UnlinkId { id, from, to }, false)),
            (arb_term(), arb_pid(), arb_pid())
                .prop_map(|(id, from, to)| (Control::UnlinkIdAck { id, from, to }, false)),
            // Unknown operations: codes outside the table, or a control that is not a
            // tuple with an integer first.
            (
                prop_oneof![
                    Just(op::UNLINK),
                    Just(op::NODE_LINK),
                    9i64..=11,
                    Just(14),
                    Just(15),
                    Just(17),
                    37i64..1000,
                    i64::MIN..0
                ],
                prop::collection::vec(arb_term(), 0..3)
            )
                .prop_map(|(code, rest)| {
                    let mut fields = vec![Term::Integer(code)];
                    fields.extend(rest);
                    (
                        Control::Unknown {
                            op: code,
                            control: Term::Tuple(fields),
                        },
                        false,
                    )
                }),
            arb_term()
                .prop_filter("not a tuple with an integer first", |t| !matches!(
                    t.as_tuple(),
                    Some([first, ..]) if first.as_integer().is_some()
                ))
                .prop_map(|control| (Control::Unknown { op: -1, control }, false)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// `encode` then `decode` gives back the same control message and message.
        #[test]
        fn control_messages_round_trip(
            (control, needs_message) in arb_control(),
            message in proptest::option::of(arb_term()),
        ) {
            let message = if needs_message {
                Some(message.unwrap_or_else(|| Term::atom("m")))
            } else {
                message
            };
            let mut payload = Vec::new();
            encode(&control, message.as_ref(), &mut payload).unwrap();
            let back = dec(&payload).map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(back, DistMessage { control, message });
        }

        /// Whole frames: what `encode` writes between `frame::start` and `frame::finish`
        /// splits back into the same payloads, whatever the chunking.
        #[test]
        fn frames_round_trip(
            messages in prop::collection::vec((arb_control(), proptest::option::of(arb_term())), 1..4),
            ticks in prop::collection::vec(any::<bool>(), 4),
        ) {
            use super::super::frame::{self, Frame};
            use crate::wire::Status;
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for (((control, needs), message), tick) in messages.into_iter().zip(ticks) {
                let message = if needs { Some(message.unwrap_or_else(Term::nil)) } else { message };
                if tick {
                    stream.extend_from_slice(&frame::TICK);
                }
                let at = frame::start(&mut stream);
                encode(&control, message.as_ref(), &mut stream).unwrap();
                frame::finish(&mut stream, at, frame::DEFAULT_MAX_FRAME).unwrap();
                expected.push(DistMessage { control, message });
            }
            let mut rest = &stream[..];
            let mut got = Vec::new();
            while let Ok(Status::Complete((f, used))) = frame::decode(rest, frame::DEFAULT_MAX_FRAME) {
                if let Frame::Data(payload) = f {
                    got.push(dec(payload).map_err(|e| TestCaseError::fail(format!("{e}")))?);
                }
                rest = &rest[used..];
            }
            prop_assert!(rest.is_empty());
            prop_assert_eq!(got, expected);
        }
    }
}
