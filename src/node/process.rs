//! Local processes: mailboxes with pids, registered names, and the monitors and links
//! remote processes hold on them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::term::{Atom, Pid, Reference, Term};

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

/// Well-known local processes the node itself runs.
pub(crate) const NET_KERNEL_ID: u32 = 1;
pub(crate) const RPC_ID: u32 = 2;
pub(crate) const IO_ID: u32 = 3;
const FIRST_USER_ID: u32 = 100;

/// How many monitors and links one peer node holds at most on one local process (a
/// [`Mailbox`](crate::Mailbox)). A peer whose `MONITOR` or `LINK` would go past it is
/// disconnected with [`Overload::MonitorsAndLinks`](crate::node::Overload); what a peer
/// holds is forgotten when its connection goes down. At about 150 bytes each, one peer
/// holds at most about 2.5 MB on one process.
pub const MAX_MONITORS_AND_LINKS_PER_PEER: usize = 16_384;

/// What recording a remote monitor or link found.
pub(crate) enum Watched {
    Recorded,
    NoProcess,
    /// The peer holds [`MAX_MONITORS_AND_LINKS_PER_PEER`] on the process already.
    TooMany,
}

/// Names the node answers for itself.
pub(crate) const RESERVED_NAMES: &[&str] = &["net_kernel"];

pub(crate) struct LocalProcess {
    pub(crate) tx: mpsc::Sender<Envelope>,
    pub(crate) name: Option<Atom>,
    /// Remote monitors on this process: reference -> monitoring pid. Changed only
    /// through the methods below, which keep `held` in step.
    monitored_by: HashMap<Reference, Pid>,
    /// Remote processes linked to this one (changed only through the methods below).
    links: HashSet<Pid>,
    /// How many of `monitored_by` and `links` each remote node holds.
    held: HashMap<Atom, usize>,
    /// Monitors this process holds on remote processes: reference -> (target, node).
    pub(crate) monitors: HashMap<Reference, Term>,
}

impl LocalProcess {
    /// Whether `node` may hold one more monitor or link on this process.
    fn has_room_for(&self, node: &Atom) -> bool {
        self.held.get(node).copied().unwrap_or(0) < MAX_MONITORS_AND_LINKS_PER_PEER
    }

    fn hold(&mut self, node: &Atom) {
        *self.held.entry(node.clone()).or_default() += 1;
    }

    fn release(&mut self, node: &Atom) {
        if let Some(n) = self.held.get_mut(node) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(node);
            }
        }
    }

    /// Records that the remote `watcher` monitors this process under `reference`.
    pub(crate) fn add_monitor(&mut self, reference: Reference, watcher: Pid) -> Watched {
        if self.monitored_by.contains_key(&reference) {
            return Watched::Recorded;
        }
        if !self.has_room_for(&watcher.node) {
            return Watched::TooMany;
        }
        self.hold(&watcher.node);
        self.monitored_by.insert(reference, watcher);
        Watched::Recorded
    }

    /// Forgets the remote monitor `reference`.
    pub(crate) fn remove_monitor(&mut self, reference: &Reference) {
        if let Some(watcher) = self.monitored_by.remove(reference) {
            self.release(&watcher.node);
        }
    }

    /// Records a link with the remote process `pid`. A link this node's side asked for
    /// (`local`) is always recorded; one a peer asked for counts against its limit.
    pub(crate) fn add_link(&mut self, pid: Pid, local: bool) -> Watched {
        if self.links.contains(&pid) {
            return Watched::Recorded;
        }
        if !local && !self.has_room_for(&pid.node) {
            return Watched::TooMany;
        }
        self.hold(&pid.node);
        self.links.insert(pid);
        Watched::Recorded
    }

    /// Forgets the link with `pid`.
    pub(crate) fn remove_link(&mut self, pid: &Pid) {
        if self.links.remove(pid) {
            self.release(&pid.node);
        }
    }

    /// Forgets every monitor and link that processes of `node` hold; returns the pids
    /// that were linked.
    pub(crate) fn forget_node(&mut self, node: &Atom) -> Vec<Pid> {
        if self.held.remove(node).is_none() {
            return Vec::new();
        }
        self.monitored_by.retain(|_, pid| &pid.node != node);
        let linked: Vec<Pid> = self
            .links
            .iter()
            .filter(|p| &p.node == node)
            .cloned()
            .collect();
        for pid in &linked {
            self.links.remove(pid);
        }
        linked
    }

    /// Whether any remote process monitors or links this one.
    pub(crate) fn is_watched(&self) -> bool {
        !self.held.is_empty()
    }

    /// The remote monitors and links, taken when the process ends.
    pub(crate) fn into_watchers(self) -> (HashMap<Reference, Pid>, HashSet<Pid>) {
        (self.monitored_by, self.links)
    }
}

/// The node's process table.
pub(crate) struct Processes {
    pub(crate) node: Atom,
    pub(crate) creation: u32,
    next_id: AtomicU32,
    next_ref: AtomicU64,
    pub(crate) table: std::sync::Mutex<Table>,
    pub(crate) capacity: usize,
}

#[derive(Default)]
pub(crate) struct Table {
    pub(crate) by_id: HashMap<u32, LocalProcess>,
    pub(crate) names: HashMap<Atom, u32>,
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
            node,
            creation,
            next_id: AtomicU32::new(FIRST_USER_ID),
            next_ref: AtomicU64::new(1),
            table: std::sync::Mutex::new(Table::default()),
            capacity,
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pid of this node with the given number.
    pub(crate) fn pid(&self, id: u32) -> Pid {
        Pid {
            node: self.node.clone(),
            id,
            serial: 0,
            creation: self.creation,
        }
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
        let mut t = self.lock();
        if let Some(name) = &name {
            if RESERVED_NAMES.contains(&name.as_str()) {
                return Err(super::RegisterError::Reserved(name.to_string()));
            }
            if t.names.contains_key(name) {
                return Err(super::RegisterError::AlreadyRegistered(name.to_string()));
            }
        }
        let id = loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id >= FIRST_USER_ID && !t.by_id.contains_key(&id) {
                break id;
            }
        };
        if let Some(name) = &name {
            t.names.insert(name.clone(), id);
        }
        t.by_id.insert(
            id,
            LocalProcess {
                tx,
                name,
                monitored_by: HashMap::new(),
                links: HashSet::new(),
                held: HashMap::new(),
                monitors: HashMap::new(),
            },
        );
        Ok((self.pid(id), rx))
    }

    /// The process id registered under `name`.
    pub(crate) fn whereis(&self, name: &Atom) -> Option<u32> {
        self.lock().names.get(name).copied()
    }

    /// Queues `envelope` for process `id` without waiting.
    pub(crate) fn deliver(&self, id: u32, envelope: Envelope) -> Delivery {
        let t = self.lock();
        let Some(p) = t.by_id.get(&id) else {
            return Delivery::NoProcess;
        };
        match p.tx.try_send(envelope) {
            Ok(()) => Delivery::Delivered,
            Err(mpsc::error::TrySendError::Full(_)) => Delivery::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::NoProcess,
        }
    }

    /// Records that the remote process `pid` links process `id` (see
    /// [`LocalProcess::add_link`]).
    pub(crate) fn add_link(&self, id: u32, pid: Pid) -> Watched {
        match self.lock().by_id.get_mut(&id) {
            Some(p) => p.add_link(pid, false),
            None => Watched::NoProcess,
        }
    }

    /// Records that the remote `watcher` monitors process `id`.
    pub(crate) fn add_monitor(&self, id: u32, reference: Reference, watcher: Pid) -> Watched {
        match self.lock().by_id.get_mut(&id) {
            Some(p) => p.add_monitor(reference, watcher),
            None => Watched::NoProcess,
        }
    }

    /// Removes process `id`; returns who must hear of its exit.
    pub(crate) fn remove(&self, id: u32) -> Option<LocalProcess> {
        let mut t = self.lock();
        let p = t.by_id.remove(&id)?;
        if let Some(name) = &p.name {
            t.names.remove(name);
        }
        Some(p)
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
