//! Local processes: mailboxes with pids and registered names, in the node's
//! [process table](super::table) behind one lock.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::term::{Atom, Pid, Reference, Term};

pub(crate) use super::table::{IO_ID, NET_KERNEL_ID, RPC_ID};
use super::table::{NameTaken, Table};

/// A message delivered to a mailbox.
///
/// Exits and monitor notifications arrive as the messages an Erlang process that traps
/// exits would get: `{'EXIT', From, Reason}` and `{'DOWN', Ref, process, From, Reason}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The sender, when the peer said (`SEND_SENDER`, `REG_SEND`, exits) .
    pub from: Option<Pid>,
    /// The message.
    pub message: Term,
}

/// The node's processes.
pub(crate) struct Processes {
    pub(crate) node: Atom,
    pub(crate) creation: u32,
    next_ref: AtomicU64,
    table: std::sync::Mutex<Table<mpsc::Sender<Envelope>>>,
    pub(crate) capacity: usize,
}

/// What a delivery attempt found.
pub(crate) enum Delivery {
    Delivered,
    NoProcess,
    Full,
}

impl Processes {
    pub(crate) fn new(node: Atom, creation: u32, capacity: usize) -> Processes {
        Processes {
            table: std::sync::Mutex::new(Table::new(node.clone(), creation)),
            node,
            creation,
            next_ref: AtomicU64::new(1),
            capacity,
        }
    }

    /// The table, locked.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Table<mpsc::Sender<Envelope>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pid of this node with the given number.
    pub(crate) fn pid(&self, id: u32) -> Pid {
        super::table::pid_of(&self.node, self.creation, id)
    }

    /// A fresh reference, unique for this node incarnation.
    pub(crate) fn make_ref(&self) -> Reference {
        let n = self.next_ref.fetch_add(1, Ordering::Relaxed);
        Reference {
            node: self.node.clone(),
            creation: self.creation,
            id: vec![(n & 0x3_ffff) as u32, (n >> 18) as u32, (n >> 50) as u32],
        }
    }

    /// Whether `pid` names a process of this node incarnation.
    pub(crate) fn is_local(&self, pid: &Pid) -> bool {
        pid.node == self.node && pid.creation == self.creation
    }

    /// Creates a mailbox process, optionally registered under `name`.
    pub(crate) fn spawn(
        &self,
        name: Option<Atom>,
    ) -> Result<(Pid, mpsc::Receiver<Envelope>), super::RegisterError> {
        let (tx, rx) = mpsc::channel(self.capacity);
        let taken = |name: &Option<Atom>| name.as_ref().map(|n| n.to_string()).unwrap_or_default();
        match self.lock().spawn(name.clone(), tx) {
            Ok(id) => Ok((self.pid(id), rx)),
            Err(NameTaken::Reserved) => Err(super::RegisterError::Reserved(taken(&name))),
            Err(NameTaken::Registered) => {
                Err(super::RegisterError::AlreadyRegistered(taken(&name)))
            }
        }
    }

    /// The process id registered under `name`.
    pub(crate) fn whereis(&self, name: &Atom) -> Option<u32> {
        self.lock().whereis(name)
    }

    /// Queues `envelope` for process `id` without waiting.
    pub(crate) fn deliver(&self, id: u32, envelope: Envelope) -> Delivery {
        let t = self.lock();
        let Some(tx) = t.mailbox(id) else {
            return Delivery::NoProcess;
        };
        match tx.try_send(envelope) {
            Ok(()) => Delivery::Delivered,
            Err(mpsc::error::TrySendError::Full(_)) => Delivery::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::NoProcess,
        }
    }
}

/// Reads the incoming `{'$gen_call', {From, Tag}, Request}` shape.
///
/// Erlang's `gen:call` (and so `gen_server:call`) sends this; answer it with
/// [`Mailbox::reply`](super::Mailbox::reply), which sends the reply the way `gen:reply/2`
/// does (to the alias when the tag is an OTP 24+ `[alias|Ref]`).
#[derive(Debug, Clone, PartialEq)]
pub struct GenCall {
    /// The calling process.
    pub from: Pid,
    /// The call's tag (a reference, or `[alias|Ref]` on OTP 24+).
    pub tag: Term,
    /// The request.
    pub request: Term,
}

impl GenCall {
    /// Recognises a `gen:call` request.
    pub fn parse(message: &Term) -> Option<GenCall> {
        let [kind, from, request] = message.as_tuple()? else {
            return None;
        };
        if !kind.is_atom("$gen_call") {
            return None;
        }
        let [pid, tag] = from.as_tuple()? else {
            return None;
        };
        Some(GenCall {
            from: pid.as_pid()?.clone(),
            tag: tag.clone(),
            request: request.clone(),
        })
    }

    /// Where `gen:reply/2` sends the reply: the alias when the tag carries one.
    pub(crate) fn reply_alias(&self) -> Option<&Reference> {
        // OTP 24+: `[alias|Ref]`, or `[[alias|Ref]|_]` for calls with a label.
        fn alias_of(t: &Term) -> Option<&Reference> {
            match t {
                Term::ImproperList { elements, tail }
                    if elements.len() == 1 && elements[0].is_atom("alias") =>
                {
                    tail.as_reference()
                }
                _ => None,
            }
        }
        let first = match &self.tag {
            Term::ImproperList { elements, .. } => elements.first(),
            Term::List(elements) => elements.first(),
            _ => None,
        };
        alias_of(&self.tag).or_else(|| first.and_then(alias_of))
    }

    /// The reply message, `{Tag, Reply}`.
    pub(crate) fn reply_message(&self, reply: Term) -> Term {
        Term::Tuple(vec![self.tag.clone(), reply])
    }
}
