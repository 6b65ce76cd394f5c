//! The node's process table as data: its local processes (numbers, registered names,
//! mailbox handles) and the monitors and links between them and remote processes.
//!
//! Every decision a signal takes is made here, with no lock, socket, runtime or clock:
//! [`Table::signal`] reads a peer's `MONITOR`, `DEMONITOR`, `MONITOR_EXIT`, `LINK`,
//! `UNLINK_ID`, `EXIT` or `EXIT2` and returns [`Action`]s (answer the peer, deliver to a
//! mailbox, disconnect the peer for overload); [`Table::node_down`] returns what the
//! local processes must hear when a peer node goes; [`Table::exited`] returns the
//! signals a local process's end sends. The node carries the actions out. The table is
//! generic over the mailbox handle `M`, so that its tests need no channel.

use std::collections::{HashMap, HashSet};

use crate::dist::control::{Control, ProcessRef};
use crate::term::{Atom, Pid, Reference, Term};

/// Well-known local processes the node itself runs.
pub(crate) const NET_KERNEL_ID: u32 = 1;
pub(crate) const RPC_ID: u32 = 2;
pub(crate) const IO_ID: u32 = 3;
/// The first number of a process a user spawns; the node's own run below it, and never
/// exit while it runs.
const FIRST_USER_ID: u32 = 100;

/// Names the node answers for itself.
const RESERVED_NAMES: &[&str] = &["net_kernel"];

/// How many monitors and links one peer node holds at most on one local process (a
/// [`Mailbox`](crate::Mailbox)). A peer whose `MONITOR` or `LINK` would go past it is
/// disconnected with [`Overload::MonitorsAndLinks`](crate::node::Overload); what a peer
/// holds is forgotten when its connection goes down. At about 150 bytes each, one peer
/// holds at most about 2.5 MB on one process.
pub const MAX_MONITORS_AND_LINKS_PER_PEER: usize = 16_384;

/// What a signal from a peer makes the node do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Send this to the peer the signal came from.
    Reply(Control),
    /// Put `message` in the mailbox of local process `id`.
    Deliver {
        id: u32,
        from: Option<Pid>,
        message: Term,
    },
    /// The peer would hold more than [`MAX_MONITORS_AND_LINKS_PER_PEER`] on one process:
    /// disconnect it (which forgets what it held).
    Overloaded,
}

/// Why a process cannot be registered under a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameTaken {
    /// The node answers for that name itself.
    Reserved,
    /// Another process holds it.
    Registered,
}

/// One local process.
struct Process<M> {
    mailbox: M,
    name: Option<Atom>,
    /// Remote monitors on this process: reference -> monitoring pid.
    monitored_by: HashMap<Reference, Pid>,
    /// Remote processes linked to this one.
    links: HashSet<Pid>,
    /// How many of `monitored_by` and `links` each remote node holds.
    held: HashMap<Atom, usize>,
    /// Monitors this process holds on remote processes: reference -> target.
    monitors: HashMap<Reference, Term>,
}

/// What recording a remote monitor or link found.
enum Watched {
    Recorded,
    NoProcess,
    TooMany,
}

impl<M> Process<M> {
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

    fn add_monitor(&mut self, reference: Reference, watcher: Pid) -> Watched {
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

    /// Forgets the monitor `reference` if a process of `node` holds it.
    fn remove_monitor(&mut self, reference: &Reference, node: &Atom) {
        if self
            .monitored_by
            .get(reference)
            .is_some_and(|watcher| &watcher.node == node)
            && let Some(watcher) = self.monitored_by.remove(reference)
        {
            self.release(&watcher.node);
        }
    }

    /// A link this node's side asked for (`local`) is always recorded; one a peer asked
    /// for counts against its limit.
    fn add_link(&mut self, pid: Pid, local: bool) -> Watched {
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

    fn remove_link(&mut self, pid: &Pid) {
        if self.links.remove(pid) {
            self.release(&pid.node);
        }
    }

    /// Forgets every monitor and link processes of `node` hold on this one; returns the
    /// pids that were linked.
    fn forget_node(&mut self, node: &Atom) -> Vec<Pid> {
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
}

/// The local processes of one node incarnation.
pub(crate) struct Table<M> {
    node: Atom,
    creation: u32,
    by_id: HashMap<u32, Process<M>>,
    names: HashMap<Atom, u32>,
    next_id: u32,
}

/// The pid numbered `id` of the node `node`, incarnation `creation`.
pub(crate) fn pid_of(node: &Atom, creation: u32, id: u32) -> Pid {
    Pid {
        node: node.clone(),
        id,
        serial: 0,
        creation,
    }
}

/// The node of a monitor's target: a pid's, or `Node` of `{Name, Node}`.
fn node_of(target: &Term) -> Option<&Atom> {
    match target {
        Term::Pid(p) => Some(&p.node),
        _ => match target.as_tuple()? {
            [_, node] => node.as_atom(),
            _ => None,
        },
    }
}

/// `{'EXIT', From, Reason}`, as a process that traps exits receives it.
pub(crate) fn exit_message(from: &Pid, reason: Term) -> Term {
    Term::Tuple(vec![Term::atom("EXIT"), Term::from(from.clone()), reason])
}

/// `{'DOWN', Ref, process, Target, Reason}`, as a monitoring process receives it.
pub(crate) fn down_message(reference: &Reference, target: Term, reason: Term) -> Term {
    Term::Tuple(vec![
        Term::atom("DOWN"),
        Term::from(reference.clone()),
        Term::atom("process"),
        target,
        reason,
    ])
}

impl<M> Table<M> {
    /// The table of the node `node`, incarnation `creation`.
    pub(crate) fn new(node: Atom, creation: u32) -> Table<M> {
        Table {
            node,
            creation,
            by_id: HashMap::new(),
            names: HashMap::new(),
            next_id: FIRST_USER_ID,
        }
    }

    /// The pid of local process `id`.
    pub(crate) fn pid(&self, id: u32) -> Pid {
        pid_of(&self.node, self.creation, id)
    }

    /// Whether `pid` names a process of this node incarnation.
    pub(crate) fn is_local(&self, pid: &Pid) -> bool {
        pid.node == self.node && pid.creation == self.creation
    }

    /// The process registered under `name`.
    pub(crate) fn whereis(&self, name: &Atom) -> Option<u32> {
        self.names.get(name).copied()
    }

    /// The local process a signal names (by pid of this incarnation, or registered
    /// name), if there is one.
    pub(crate) fn local_id(&self, to: &ProcessRef) -> Option<u32> {
        match to {
            ProcessRef::Pid(p) if self.is_local(p) => Some(p.id),
            ProcessRef::Pid(_) => None,
            ProcessRef::Name(n) if n.as_str() == "net_kernel" => Some(NET_KERNEL_ID),
            ProcessRef::Name(n) => self.whereis(n),
        }
    }

    /// Adds a process, registered under `name` if given; returns its number.
    pub(crate) fn spawn(&mut self, name: Option<Atom>, mailbox: M) -> Result<u32, NameTaken> {
        if let Some(name) = &name {
            if RESERVED_NAMES.contains(&name.as_str()) {
                return Err(NameTaken::Reserved);
            }
            if self.names.contains_key(name) {
                return Err(NameTaken::Registered);
            }
        }
        let id = loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(FIRST_USER_ID);
            if id >= FIRST_USER_ID && !self.by_id.contains_key(&id) {
                break id;
            }
        };
        if let Some(name) = &name {
            self.names.insert(name.clone(), id);
        }
        let process = Process {
            mailbox,
            name,
            monitored_by: HashMap::new(),
            links: HashSet::new(),
            held: HashMap::new(),
            monitors: HashMap::new(),
        };
        self.by_id.insert(id, process);
        Ok(id)
    }

    /// The mailbox handle of process `id`.
    pub(crate) fn mailbox(&self, id: u32) -> Option<&M> {
        self.by_id.get(&id).map(|p| &p.mailbox)
    }

    /// Records that local process `id` monitors the remote `target` under `reference`.
    pub(crate) fn monitor(&mut self, id: u32, reference: Reference, target: Term) {
        if let Some(p) = self.by_id.get_mut(&id) {
            p.monitors.insert(reference, target);
        }
    }

    /// Forgets the monitor `reference` of local process `id`; returns its target.
    pub(crate) fn demonitor(&mut self, id: u32, reference: &Reference) -> Option<Term> {
        self.by_id.get_mut(&id)?.monitors.remove(reference)
    }

    /// Records that local process `id` links the remote `target`.
    pub(crate) fn link(&mut self, id: u32, target: Pid) {
        if let Some(p) = self.by_id.get_mut(&id) {
            p.add_link(target, true);
        }
    }

    /// What a signal from the peer node `peer` does. A signal that names a process of
    /// another node as its sender is ignored (it would make this node hold state, or
    /// send, for a node that did not ask). Control messages that are not signals
    /// between processes do nothing here.
    pub(crate) fn signal(&mut self, peer: &Atom, control: Control, out: &mut Vec<Action>) {
        let sender = match &control {
            Control::Monitor { from, .. }
            | Control::Demonitor { from, .. }
            | Control::Link { from, .. }
            | Control::UnlinkId { from, .. }
            | Control::Exit { from, .. }
            | Control::Exit2 { from, .. } => Some(from),
            _ => None,
        };
        if let Some(from) = sender
            && &from.node != peer
        {
            tracing::debug!(%peer, sender = ?from, "signal naming a process of another node as its sender ignored");
            return;
        }
        match control {
            Control::Monitor {
                from,
                to,
                reference,
            } => {
                let recorded = match self.local_id(&to) {
                    Some(id) if id < FIRST_USER_ID => Watched::Recorded,
                    Some(id) => match self.by_id.get_mut(&id) {
                        Some(p) => p.add_monitor(reference.clone(), from.clone()),
                        None => Watched::NoProcess,
                    },
                    None => Watched::NoProcess,
                };
                match recorded {
                    Watched::Recorded => {}
                    Watched::NoProcess => out.push(Action::Reply(Control::MonitorExit {
                        from: to,
                        to: from,
                        reference,
                        reason: Term::atom("noproc"),
                    })),
                    Watched::TooMany => out.push(Action::Overloaded),
                }
            }
            Control::Demonitor {
                from,
                to,
                reference,
            } => {
                if let Some(id) = self.local_id(&to)
                    && let Some(p) = self.by_id.get_mut(&id)
                {
                    p.remove_monitor(&reference, &from.node);
                }
            }
            Control::MonitorExit {
                from,
                to,
                reference,
                reason,
            } => {
                // Only the node of the monitored process tells of its end.
                let held = self.is_local(&to)
                    && self
                        .by_id
                        .get(&to.id)
                        .and_then(|p| p.monitors.get(&reference))
                        .is_some_and(|target| node_of(target) == Some(peer));
                if !held || self.demonitor(to.id, &reference).is_none() {
                    return;
                }
                let (target, from) = match from {
                    ProcessRef::Pid(p) => (Term::from(p.clone()), Some(p)),
                    ProcessRef::Name(n) => (
                        Term::Tuple(vec![Term::Atom(n), Term::Atom(peer.clone())]),
                        None,
                    ),
                };
                out.push(Action::Deliver {
                    id: to.id,
                    from,
                    message: down_message(&reference, target, reason),
                });
            }
            Control::Link { from, to } => {
                let process = if self.is_local(&to) {
                    self.by_id.get_mut(&to.id)
                } else {
                    None
                };
                let linked = match process {
                    Some(p) => p.add_link(from.clone(), false),
                    None => Watched::NoProcess,
                };
                match linked {
                    Watched::Recorded => {}
                    Watched::NoProcess if to.id >= FIRST_USER_ID => {
                        out.push(Action::Reply(Control::Exit {
                            from: to,
                            to: from,
                            reason: Term::atom("noproc"),
                        }))
                    }
                    Watched::NoProcess => {}
                    Watched::TooMany => out.push(Action::Overloaded),
                }
            }
            Control::UnlinkId { id, from, to } => {
                if self.is_local(&to)
                    && let Some(p) = self.by_id.get_mut(&to.id)
                {
                    p.remove_link(&from);
                }
                out.push(Action::Reply(Control::UnlinkIdAck {
                    id,
                    from: to,
                    to: from,
                }));
            }
            Control::Exit { from, to, reason } | Control::Exit2 { from, to, reason } => {
                if !self.is_local(&to) {
                    return;
                }
                if let Some(p) = self.by_id.get_mut(&to.id) {
                    p.remove_link(&from);
                }
                out.push(Action::Deliver {
                    id: to.id,
                    message: exit_message(&from, reason),
                    from: Some(from),
                });
            }
            _ => {}
        }
    }

    /// The peer node `node` went down: every monitor and link its processes held here
    /// is forgotten, and the local processes that linked or monitored its processes
    /// hear of it (`noconnection`).
    pub(crate) fn node_down(&mut self, node: &Atom, out: &mut Vec<Action>) {
        for (&id, p) in self.by_id.iter_mut() {
            for pid in p.forget_node(node) {
                out.push(Action::Deliver {
                    id,
                    message: exit_message(&pid, Term::atom("noconnection")),
                    from: Some(pid),
                });
            }
            let downs: Vec<Reference> = p
                .monitors
                .iter()
                .filter(|(_, target)| target.as_pid().is_some_and(|t| &t.node == node))
                .map(|(r, _)| r.clone())
                .collect();
            for r in downs {
                let Some(target) = p.monitors.remove(&r) else {
                    continue;
                };
                let from = target.as_pid().cloned();
                out.push(Action::Deliver {
                    id,
                    from,
                    message: down_message(&r, target, Term::atom("noconnection")),
                });
            }
        }
    }

    /// Local process `id` ended with `reason`: it leaves the table (and its name), and
    /// the remote processes that monitored or linked it are to be told, each on its
    /// node's connection: `(node, signal)` pairs.
    pub(crate) fn exited(&mut self, id: u32, reason: &Term) -> Vec<(Atom, Control)> {
        let Some(p) = self.by_id.remove(&id) else {
            return Vec::new();
        };
        if let Some(name) = &p.name {
            self.names.remove(name);
        }
        if p.held.is_empty() {
            return Vec::new();
        }
        let me = self.pid(id);
        let mut outgoing = Vec::with_capacity(p.monitored_by.len() + p.links.len());
        for (reference, watcher) in p.monitored_by {
            let from = match &p.name {
                Some(name) => ProcessRef::Name(name.clone()),
                None => ProcessRef::Pid(me.clone()),
            };
            outgoing.push((
                watcher.node.clone(),
                Control::MonitorExit {
                    from,
                    to: watcher,
                    reference,
                    reason: reason.clone(),
                },
            ));
        }
        for linked in p.links {
            outgoing.push((
                linked.node.clone(),
                Control::Exit {
                    from: me.clone(),
                    to: linked,
                    reason: reason.clone(),
                },
            ));
        }
        outgoing
    }
}

#[cfg(test)]
mod tests;
