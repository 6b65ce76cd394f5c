//! The acceptor's side of the handshake, as a sans-IO state machine.

use super::messages::{
    AliveReply, Challenge, ChallengeAck, ChallengeReply, Complement, HandshakeStatus, LengthPrefix,
    SendName, write_frame,
};
use super::{DistFlags, HandshakeError, HandshakeStep, Handshaked, digest};
use crate::{Cookie, NodeName};

/// What the acceptor needs to know.
#[derive(Clone)]
pub struct AcceptorConfig {
    /// Our node name.
    pub local: NodeName,
    /// Our creation.
    pub creation: u32,
    /// The flags we advertise.
    pub flags: DistFlags,
    /// The flags we require of the initiator.
    pub required: DistFlags,
    /// The shared cookie.
    pub cookie: Cookie,
}

impl std::fmt::Debug for AcceptorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcceptorConfig")
            .field("local", &self.local)
            .field("creation", &self.creation)
            .field("flags", &self.flags)
            .field("cookie", &self.cookie)
            .finish_non_exhaustive()
    }
}

/// Who is knocking: the initiator's `send_name`, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHello {
    /// The initiator's name; `None` when it asks to be named (dynamic name).
    pub name: Option<NodeName>,
    /// With a dynamic name, the host it gave.
    pub dynamic_host: Option<String>,
    /// Its flags (digest bit expanded).
    pub flags: DistFlags,
    /// Its creation.
    pub creation: u32,
}

/// The local node's verdict on an initiator, sent as the handshake status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusDecision {
    /// Go on.
    Ok,
    /// Go on; we dropped our own simultaneous attempt to connect to this node.
    OkSimultaneous,
    /// Stop: we are connecting to this node ourselves and keep that attempt.
    Nok,
    /// Stop: not allowed.
    NotAllowed,
    /// We have a connection to this node already: ask whether it is dead.
    Alive,
    /// Go on under this name (the initiator asked to be named).
    Named {
        /// The full name assigned.
        name: NodeName,
        /// The creation assigned.
        creation: u32,
    },
}

/// What the acceptor wants next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptorProgress {
    /// Keep feeding messages.
    Continue,
    /// The initiator is known: call [`Acceptor::decide`].
    NeedDecision(PeerHello),
    /// The handshake succeeded.
    Done(Handshaked),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitName,
    AwaitDecision,
    AwaitAliveReply,
    AwaitComplement,
    AwaitReply,
    Done,
    Failed,
}

/// The acceptor's state machine.
///
/// Feed each message body to [`handle`](Acceptor::handle); when it asks for a decision
/// (after the initiator's name), call [`decide`](Acceptor::decide). Write out whatever
/// either appends to the output buffer.
#[derive(Debug)]
pub struct Acceptor {
    cfg: AcceptorConfig,
    prefix: LengthPrefix,
    state: State,
    our_challenge: u32,
    old_form: bool,
    peer_name: Option<NodeName>,
    peer_label: String,
    peer_flags: DistFlags,
    peer_creation: u32,
    replaces_existing: bool,
}

impl Acceptor {
    /// A new acceptor. `our_challenge` must come from a CSPRNG.
    pub fn new(cfg: AcceptorConfig, prefix: LengthPrefix, our_challenge: u32) -> Acceptor {
        Acceptor {
            cfg,
            prefix,
            state: State::AwaitName,
            our_challenge,
            old_form: false,
            peer_name: None,
            peer_label: String::new(),
            peer_flags: DistFlags::empty(),
            peer_creation: 0,
            replaces_existing: false,
        }
    }

    /// Names the peer in errors before its name is known (e.g. its address).
    pub fn set_peer_label(&mut self, label: impl Into<String>) {
        if self.peer_name.is_none() {
            self.peer_label = label.into();
        }
    }

    /// Whether errors name the peer: by its name, once it sent it, or by the label set.
    pub(crate) fn knows_peer(&self) -> bool {
        self.peer_name.is_some() || !self.peer_label.is_empty()
    }

    /// The peer as errors name it.
    fn label(&self) -> String {
        match &self.peer_name {
            Some(name) => name.to_string(),
            None if self.peer_label.is_empty() => "unknown peer".to_owned(),
            None => self.peer_label.clone(),
        }
    }

    /// The step the acceptor is waiting for.
    pub fn step(&self) -> HandshakeStep {
        match self.state {
            State::AwaitName => HandshakeStep::AwaitName,
            State::AwaitDecision => HandshakeStep::Send,
            State::AwaitAliveReply => HandshakeStep::AwaitAliveReply,
            State::AwaitComplement => HandshakeStep::AwaitComplement,
            State::AwaitReply => HandshakeStep::AwaitReply,
            State::Done | State::Failed => HandshakeStep::Done,
        }
    }

    /// The initiator's name, once known.
    pub fn peer_name(&self) -> Option<&NodeName> {
        self.peer_name.as_ref()
    }

    fn fail(&mut self, err: HandshakeError) -> HandshakeError {
        self.state = State::Failed;
        err
    }

    fn unexpected(&mut self, detail: String) -> HandshakeError {
        let step = self.step();
        self.fail(HandshakeError::Unexpected {
            peer: self.label(),
            step,
            detail,
        })
    }

    fn refuse(&mut self, out: &mut Vec<u8>, err: HandshakeError) -> HandshakeError {
        write_frame(out, self.prefix, |o| HandshakeStatus::NotAllowed.encode(o));
        self.fail(err)
    }

    fn send_challenge(&mut self, out: &mut Vec<u8>) {
        let ch = Challenge {
            flags: self.our_flags(),
            challenge: self.our_challenge,
            creation: self.cfg.creation,
            name: self.cfg.local.as_str().to_owned(),
        };
        write_frame(out, self.prefix, |o| ch.encode(o));
        self.state = if self.old_form {
            State::AwaitComplement
        } else {
            State::AwaitReply
        };
    }

    fn our_flags(&self) -> DistFlags {
        if self.peer_flags.contains(DistFlags::NAME_ME) {
            self.cfg.flags | DistFlags::NAME_ME
        } else {
            self.cfg.flags
        }
    }

    /// Handles one message body from the initiator, appending any answer to `out`.
    pub fn handle(
        &mut self,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<AcceptorProgress, HandshakeError> {
        let step = self.step();
        match self.state {
            State::AwaitName => {
                let msg = SendName::decode(body).map_err(|source| HandshakeError::Protocol {
                    peer: self.label(),
                    step,
                    source,
                });
                let msg = msg.map_err(|e| self.fail(e))?;
                let (flags, creation, name) = match msg {
                    SendName::New {
                        flags,
                        creation,
                        name,
                    } => (flags, creation, name),
                    SendName::Old { flags, name, .. } => {
                        // The old form carries the low 32 flag bits; the rest arrive in
                        // the complement, which only a peer knowing the OTP 23 handshake
                        // sends. Without it the peer is too old (HANDSHAKE_23 is
                        // required) and is refused below.
                        self.old_form = true;
                        (DistFlags::from_bits(u64::from(flags)), 0, name)
                    }
                };
                self.peer_flags = flags.expand_digest();
                self.peer_creation = creation;
                let dynamic = flags.contains(DistFlags::NAME_ME);
                let mut required = self.cfg.required;
                if self.old_form {
                    // Bits above 32 arrive with the complement; check the low half now.
                    required = DistFlags::from_bits(required.bits() & 0xffff_ffff);
                }
                let missing = self.peer_flags.missing(required);
                if !missing.is_empty() {
                    let err = HandshakeError::MissingFlags {
                        peer: name,
                        missing,
                    };
                    return Err(self.refuse(out, err));
                }
                let hello = if dynamic && !self.old_form {
                    if let Err(reason) = crate::node_name::validate_host_only(&name) {
                        let err = HandshakeError::InvalidPeerName { name, reason };
                        return Err(self.refuse(out, err));
                    }
                    // Errors name it by its host until it has a name.
                    self.peer_label = name.clone();
                    PeerHello {
                        name: None,
                        dynamic_host: Some(name),
                        flags: self.peer_flags,
                        creation,
                    }
                } else {
                    let node = match NodeName::new(&name) {
                        Ok(node) => node,
                        Err(reason) => {
                            let err = HandshakeError::InvalidPeerName { name, reason };
                            return Err(self.refuse(out, err));
                        }
                    };
                    if let Err(e) = self.cfg.local.check_compatible(&node) {
                        return Err(self.refuse(out, e.into()));
                    }
                    self.peer_name = Some(node.clone());
                    PeerHello {
                        name: Some(node),
                        dynamic_host: None,
                        flags: self.peer_flags,
                        creation,
                    }
                };
                self.state = State::AwaitDecision;
                Ok(AcceptorProgress::NeedDecision(hello))
            }
            State::AwaitAliveReply => {
                let reply = AliveReply::decode(body).map_err(|source| HandshakeError::Protocol {
                    peer: self.label(),
                    step,
                    source,
                });
                let AliveReply(dead) = reply.map_err(|e| self.fail(e))?;
                if !dead {
                    let err = HandshakeError::AlreadyConnected { peer: self.label() };
                    return Err(self.fail(err));
                }
                self.replaces_existing = true;
                self.send_challenge(out);
                Ok(AcceptorProgress::Continue)
            }
            State::AwaitComplement => {
                let c = Complement::decode(body).map_err(|source| HandshakeError::Protocol {
                    peer: self.label(),
                    step,
                    source,
                });
                let c = c.map_err(|e| self.fail(e))?;
                let flags = DistFlags::from_bits(
                    (u64::from(c.flags_high) << 32) | (self.peer_flags.bits() & 0xffff_ffff),
                );
                self.peer_flags = flags.expand_digest();
                self.peer_creation = c.creation;
                let missing = self.peer_flags.missing(self.cfg.required);
                if !missing.is_empty() {
                    let err = HandshakeError::MissingFlags {
                        peer: self.label(),
                        missing,
                    };
                    return Err(self.fail(err));
                }
                self.state = State::AwaitReply;
                Ok(AcceptorProgress::Continue)
            }
            State::AwaitReply => {
                let reply =
                    ChallengeReply::decode(body).map_err(|source| HandshakeError::Protocol {
                        peer: self.label(),
                        step,
                        source,
                    });
                let reply = reply.map_err(|e| self.fail(e))?;
                if !digest::verify(&self.cfg.cookie, self.our_challenge, &reply.digest) {
                    let err = HandshakeError::CookieMismatch { peer: self.label() };
                    return Err(self.fail(err));
                }
                let ack = ChallengeAck {
                    digest: digest::digest(&self.cfg.cookie, reply.challenge),
                };
                write_frame(out, self.prefix, |o| ack.encode(o));
                let Some(peer) = self.peer_name.clone() else {
                    return Err(self.unexpected("initiator has no name".into()));
                };
                self.state = State::Done;
                Ok(AcceptorProgress::Done(Handshaked {
                    peer,
                    peer_creation: self.peer_creation,
                    peer_flags: self.peer_flags,
                    flags: self.our_flags().negotiate(self.peer_flags),
                    local: self.cfg.local.clone(),
                    local_creation: self.cfg.creation,
                    replaces_existing: self.replaces_existing,
                }))
            }
            State::AwaitDecision => {
                Err(self.unexpected("message before the status was decided".into()))
            }
            State::Done | State::Failed => {
                Err(self.unexpected("message after the handshake ended".into()))
            }
        }
    }

    /// Sends the local node's verdict on the initiator (after
    /// [`AcceptorProgress::NeedDecision`]), appending the status (and the challenge when
    /// the handshake goes on) to `out`.
    pub fn decide(
        &mut self,
        decision: StatusDecision,
        out: &mut Vec<u8>,
    ) -> Result<(), HandshakeError> {
        if self.state != State::AwaitDecision {
            return Err(self.unexpected("decide called at the wrong step".into()));
        }
        let dynamic = self.peer_name.is_none();
        let status = match (&decision, dynamic) {
            (StatusDecision::Ok, false) => HandshakeStatus::Ok,
            (StatusDecision::OkSimultaneous, false) => HandshakeStatus::OkSimultaneous,
            (StatusDecision::Alive, false) => HandshakeStatus::Alive,
            (StatusDecision::Nok, _) => HandshakeStatus::Nok,
            (StatusDecision::NotAllowed, _) => HandshakeStatus::NotAllowed,
            (StatusDecision::Named { name, creation }, true) => {
                if Some(name.host()) != self_dynamic_host(self) {
                    return Err(self.unexpected(format!(
                        "assigned name {name} is not on the initiator's host"
                    )));
                }
                self.peer_name = Some(name.clone());
                self.peer_label = name.to_string();
                self.peer_creation = *creation;
                HandshakeStatus::Named {
                    name: name.to_string(),
                    creation: *creation,
                }
            }
            (other, _) => {
                return Err(self.unexpected(format!(
                    "decision {other:?} does not fit a {} name",
                    if dynamic { "dynamic" } else { "static" }
                )));
            }
        };
        write_frame(out, self.prefix, |o| status.encode(o));
        match status {
            HandshakeStatus::Nok | HandshakeStatus::NotAllowed => {
                let reason = if status == HandshakeStatus::Nok {
                    "we are connecting to it ourselves (nok)"
                } else {
                    "not allowed"
                };
                let err = HandshakeError::Refused {
                    peer: self.label(),
                    reason: reason.into(),
                };
                Err(self.fail(err))
            }
            HandshakeStatus::Alive => {
                self.state = State::AwaitAliveReply;
                Ok(())
            }
            _ => {
                self.send_challenge(out);
                Ok(())
            }
        }
    }

    /// What a connection closed by the initiator at the current step means.
    pub fn closed_error(&self) -> HandshakeError {
        HandshakeError::Closed {
            peer: self.label(),
            step: self.step(),
        }
    }
}

fn self_dynamic_host(a: &Acceptor) -> Option<&str> {
    if a.peer_flags.contains(DistFlags::NAME_ME) && a.peer_name.is_none() {
        Some(a.peer_label.as_str())
    } else {
        None
    }
}
