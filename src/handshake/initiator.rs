//! The initiator's side of the handshake, as a sans-IO state machine.

use super::messages::{
    AliveReply, Challenge, ChallengeAck, ChallengeReply, HandshakeStatus, LengthPrefix, SendName,
    write_frame,
};
use super::{DistFlags, HandshakeError, HandshakeStep, Handshaked, NameMismatchHint, digest};
use crate::{Cookie, NodeName};

/// The name the initiator introduces itself with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalName {
    /// A full node name.
    Static(NodeName),
    /// Only a host: the acceptor assigns the name (`DFLAG_NAME_ME`, OTP 23+).
    Dynamic {
        /// The host part.
        host: String,
    },
}

/// What the initiator needs to know.
#[derive(Clone)]
pub struct InitiatorConfig {
    /// Our name.
    pub local: LocalName,
    /// Our creation (ignored with a dynamic name).
    pub creation: u32,
    /// The flags we advertise.
    pub flags: DistFlags,
    /// The flags we require of the peer.
    pub required: DistFlags,
    /// The shared cookie.
    pub cookie: Cookie,
    /// The node we dial: the acceptor must present exactly this name.
    pub peer: NodeName,
}

/// What the initiator wants next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitiatorProgress {
    /// Keep feeding messages.
    Continue,
    /// The acceptor says it is still connected to us (`alive`): call
    /// [`Initiator::answer_alive`] with `true` when we have no live connection to it (its
    /// old one is dead, use this one) or `false` to keep the existing one.
    NeedAliveAnswer,
    /// The handshake succeeded.
    Done(Handshaked),
}

impl std::fmt::Debug for InitiatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitiatorConfig")
            .field("local", &self.local)
            .field("creation", &self.creation)
            .field("flags", &self.flags)
            .field("peer", &self.peer)
            .field("cookie", &self.cookie)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    AwaitStatus,
    AwaitAliveAnswer,
    AwaitChallenge,
    AwaitAck,
    Done,
    Failed,
}

/// The initiator's state machine.
///
/// Call [`start`](Initiator::start) once, write what it appended, then feed each
/// message body received to [`handle`](Initiator::handle) and write what it appends,
/// until it returns the [`Handshaked`] result.
#[derive(Debug)]
pub struct Initiator {
    cfg: InitiatorConfig,
    prefix: LengthPrefix,
    state: State,
    our_challenge: u32,
    local: Option<NodeName>,
    local_creation: u32,
    peer_flags: DistFlags,
    peer_creation: u32,
}

impl Initiator {
    /// A new initiator. `our_challenge` must come from a CSPRNG.
    pub fn new(cfg: InitiatorConfig, prefix: LengthPrefix, our_challenge: u32) -> Initiator {
        let (local, local_creation) = match &cfg.local {
            LocalName::Static(name) => (Some(name.clone()), cfg.creation),
            LocalName::Dynamic { .. } => (None, 0),
        };
        Initiator {
            cfg,
            prefix,
            state: State::Start,
            our_challenge,
            local,
            local_creation,
            peer_flags: DistFlags::empty(),
            peer_creation: 0,
        }
    }

    /// The step the initiator is waiting for.
    pub fn step(&self) -> HandshakeStep {
        match self.state {
            State::Start => HandshakeStep::Send,
            State::AwaitStatus => HandshakeStep::AwaitStatus,
            State::AwaitAliveAnswer => HandshakeStep::Send,
            State::AwaitChallenge => HandshakeStep::AwaitChallenge,
            State::AwaitAck => HandshakeStep::AwaitAck,
            State::Done | State::Failed => HandshakeStep::Done,
        }
    }

    fn peer(&self) -> String {
        self.cfg.peer.to_string()
    }

    /// Appends `send_name` to `out`.
    pub fn start(&mut self, out: &mut Vec<u8>) -> Result<(), HandshakeError> {
        if self.state != State::Start {
            return Err(self.unexpected("start called twice".into()));
        }
        let msg = match &self.cfg.local {
            LocalName::Static(name) => {
                name.check_compatible(&self.cfg.peer)?;
                SendName::New {
                    flags: self.cfg.flags,
                    creation: self.cfg.creation,
                    name: name.as_str().to_owned(),
                }
            }
            LocalName::Dynamic { host } => {
                crate::node_name::validate_host_only(host)?;
                SendName::New {
                    flags: self.cfg.flags | DistFlags::NAME_ME,
                    creation: 0,
                    name: host.clone(),
                }
            }
        };
        write_frame(out, self.prefix, |o| msg.encode(o));
        self.state = State::AwaitStatus;
        Ok(())
    }

    fn unexpected(&mut self, detail: String) -> HandshakeError {
        let step = self.step();
        self.state = State::Failed;
        HandshakeError::Unexpected {
            peer: self.peer(),
            step,
            detail,
        }
    }

    fn fail(&mut self, err: HandshakeError) -> HandshakeError {
        self.state = State::Failed;
        err
    }

    /// Handles one message body from the acceptor, appending any answer to `out`.
    ///
    /// Returns `Some` once the handshake is complete.
    pub fn handle(
        &mut self,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<InitiatorProgress, HandshakeError> {
        let step = self.step();
        let protocol = |peer: String, source| HandshakeError::Protocol { peer, step, source };
        match self.state {
            State::AwaitStatus => {
                let status = HandshakeStatus::decode(body).map_err(|e| protocol(self.peer(), e));
                let status = status.map_err(|e| self.fail(e))?;
                let dynamic = matches!(self.cfg.local, LocalName::Dynamic { .. });
                match status {
                    HandshakeStatus::Ok | HandshakeStatus::OkSimultaneous if !dynamic => {}
                    HandshakeStatus::Named { name, creation } if dynamic => {
                        let assigned = NodeName::new(&name).map_err(|reason| {
                            HandshakeError::InvalidPeerName {
                                name: name.clone(),
                                reason,
                            }
                        });
                        let assigned = assigned.map_err(|e| self.fail(e))?;
                        let LocalName::Dynamic { host } = &self.cfg.local else {
                            unreachable!("dynamic checked above")
                        };
                        if assigned.host() != host {
                            return Err(self.unexpected(format!(
                                "assigned name {assigned} is not on our host {host}"
                            )));
                        }
                        self.local = Some(assigned);
                        self.local_creation = creation;
                    }
                    HandshakeStatus::Alive if !dynamic => {
                        self.state = State::AwaitAliveAnswer;
                        return Ok(InitiatorProgress::NeedAliveAnswer);
                    }
                    HandshakeStatus::Nok => {
                        return Err(
                            self.fail(HandshakeError::SimultaneousConnect { peer: self.peer() })
                        );
                    }
                    HandshakeStatus::NotAllowed => {
                        return Err(self.fail(HandshakeError::NotAllowed { peer: self.peer() }));
                    }
                    other => {
                        return Err(self.unexpected(format!(
                            "status {other:?} does not fit a {} name",
                            if dynamic { "dynamic" } else { "static" }
                        )));
                    }
                }
                self.state = State::AwaitChallenge;
                Ok(InitiatorProgress::Continue)
            }
            State::AwaitChallenge => {
                let ch = Challenge::decode(body).map_err(|e| protocol(self.peer(), e));
                let ch = ch.map_err(|e| self.fail(e))?;
                if ch.name.as_bytes() != self.cfg.peer.as_str().as_bytes() {
                    let hint = NameMismatchHint::classify(self.cfg.peer.as_str(), &ch.name);
                    return Err(self.fail(HandshakeError::NameMismatch {
                        expected: self.cfg.peer.clone(),
                        got: ch.name,
                        hint,
                    }));
                }
                let peer_flags = ch.flags.expand_digest();
                let missing = peer_flags.missing(self.cfg.required);
                if !missing.is_empty() {
                    return Err(self.fail(HandshakeError::MissingFlags {
                        peer: self.peer(),
                        missing,
                    }));
                }
                self.peer_flags = peer_flags;
                self.peer_creation = ch.creation;
                let reply = ChallengeReply {
                    challenge: self.our_challenge,
                    digest: digest::digest(&self.cfg.cookie, ch.challenge),
                };
                write_frame(out, self.prefix, |o| reply.encode(o));
                self.state = State::AwaitAck;
                Ok(InitiatorProgress::Continue)
            }
            State::AwaitAck => {
                let ack = ChallengeAck::decode(body).map_err(|e| protocol(self.peer(), e));
                let ack = ack.map_err(|e| self.fail(e))?;
                if !digest::verify(&self.cfg.cookie, self.our_challenge, &ack.digest) {
                    return Err(self.fail(HandshakeError::PeerDigestMismatch { peer: self.peer() }));
                }
                self.state = State::Done;
                let local = match self.local.clone() {
                    Some(local) => local,
                    None => return Err(self.unexpected("no name was assigned".into())),
                };
                Ok(InitiatorProgress::Done(Handshaked {
                    peer: self.cfg.peer.clone(),
                    peer_creation: self.peer_creation,
                    peer_flags: self.peer_flags,
                    flags: self.cfg.flags.negotiate(self.peer_flags),
                    local,
                    local_creation: self.local_creation,
                    replaces_existing: false,
                }))
            }
            State::Start | State::AwaitAliveAnswer | State::Done | State::Failed => {
                Err(self.unexpected("message after the handshake ended".into()))
            }
        }
    }

    /// Answers the acceptor's `alive` status (after [`InitiatorProgress::NeedAliveAnswer`]):
    /// `true` when we hold no live connection to it, so its old one is dead and this one
    /// replaces it; `false` to keep the existing connection (the handshake then ends with
    /// [`HandshakeError::AlreadyConnected`]). The answer is appended to `out` either way.
    pub fn answer_alive(
        &mut self,
        use_this_one: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), HandshakeError> {
        if self.state != State::AwaitAliveAnswer {
            return Err(self.unexpected("answer_alive called at the wrong step".into()));
        }
        write_frame(out, self.prefix, |o| AliveReply(use_this_one).encode(o));
        if use_this_one {
            self.state = State::AwaitChallenge;
            Ok(())
        } else {
            Err(self.fail(HandshakeError::AlreadyConnected { peer: self.peer() }))
        }
    }

    /// What a connection closed by the peer at the current step means.
    ///
    /// A close right after our challenge reply is OTP's way of rejecting our digest:
    /// the peer holds another cookie.
    pub fn closed_error(&self) -> HandshakeError {
        match self.state {
            State::AwaitAck => HandshakeError::CookieRejected { peer: self.peer() },
            _ => HandshakeError::Closed {
                peer: self.peer(),
                step: self.step(),
            },
        }
    }
}
