//! The calls in flight: which reply, spawn reply or monitor signal answers which waiting
//! caller, and when an entry is dropped.
//!
//! [`CallTable`] is pure data with the time passed in: it holds each call's waiter (of
//! any type: the node's is a oneshot sender, the tests' a number), and every signal it
//! is shown returns an [`Answer`] saying what to do. [`Calls`] is the node's shell
//! around it: a lock, the runtime's clock, and the waking of callers.
//!
//! Deadlines are data: every entry expires a grace period after its caller's deadline,
//! whether or not the caller is still there, so a peer that never answers (or a caller
//! whose task was dropped) leaves nothing behind. An `erpc` call abandoned before its
//! worker started waits at most [`SPAWN_WAIT`] for the spawn reply, to kill the worker.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::NodeName;
use crate::term::{Pid, Reference, Term};

use super::DisconnectReason;
use super::connection::now;

/// An entry outlives its caller's deadline by this much: a reply that late is dropped.
pub(crate) const GRACE: Duration = Duration::from_secs(5);

/// How long an `erpc` call abandoned before its worker started waits for the spawn reply
/// that names the worker to kill.
pub(crate) const SPAWN_WAIT: Duration = Duration::from_secs(30);

/// What answers a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A `SPAWN_REQUEST` with a monitor: a `SPAWN_REPLY`, then the monitor's exit signal.
    Erpc,
    /// A message `{Ref, Reply}` (a `gen:call` answer).
    Reply,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// The erpc worker's exit reason.
    Exited(Term),
    /// The spawn was refused.
    SpawnFailed(Term),
    /// `{Ref, Reply}` arrived.
    Reply(Term),
    /// The connection went down.
    Lost(DisconnectReason),
}

/// What to do after the table saw a signal.
#[derive(Debug, PartialEq)]
pub(crate) enum Answer<W> {
    /// Not a call's signal: the node handles it as any other.
    NotACall,
    /// A call's, and nothing to do (its caller gave up, or it only moved the call on).
    Nothing,
    /// Wake this caller with this outcome.
    Wake(W, Outcome),
    /// Kill this worker: its caller gave up before it started.
    Kill(Pid),
}

#[derive(Debug)]
struct Entry<W> {
    peer: NodeName,
    kind: Kind,
    /// `None` once the caller gave up.
    waiter: Option<W>,
    /// The erpc worker, once the spawn reply named it.
    worker: Option<Pid>,
    /// When the entry is dropped, answered or not.
    expires: Instant,
}

/// The calls in flight, keyed by their request reference.
#[derive(Debug)]
pub(crate) struct CallTable<W> {
    /// Keyed by references this node made: a fast hasher is safe.
    map: HashMap<Reference, Entry<W>, foldhash::fast::RandomState>,
    /// No entry expires before this.
    next_expiry: Option<Instant>,
}

impl<W> Default for CallTable<W> {
    fn default() -> Self {
        CallTable {
            map: HashMap::default(),
            next_expiry: None,
        }
    }
}

impl<W> CallTable<W> {
    /// A call to `peer` whose caller waits until `deadline`.
    pub(crate) fn register(
        &mut self,
        now: Instant,
        reference: Reference,
        peer: NodeName,
        kind: Kind,
        deadline: Instant,
        waiter: W,
    ) {
        self.expire(now);
        let expires = deadline + GRACE;
        self.next_expiry = Some(self.next_expiry.map_or(expires, |t| t.min(expires)));
        self.map.insert(
            reference,
            Entry {
                peer,
                kind,
                waiter: Some(waiter),
                worker: None,
                expires,
            },
        );
    }

    /// The request could not be sent: the call is forgotten.
    pub(crate) fn remove(&mut self, reference: &Reference) {
        self.map.remove(reference);
    }

    /// The caller gave up at `now`. Returns the worker to kill, when known; an erpc call
    /// whose worker is not known yet stays (without its caller) until the spawn reply
    /// names the worker, or [`SPAWN_WAIT`] passes.
    pub(crate) fn abandon(&mut self, now: Instant, reference: &Reference) -> Option<Pid> {
        self.expire(now);
        let entry = self.map.get_mut(reference)?;
        match entry.worker.take() {
            Some(pid) => {
                self.map.remove(reference);
                Some(pid)
            }
            None if entry.kind == Kind::Erpc => {
                entry.waiter = None;
                entry.expires = now + SPAWN_WAIT;
                self.next_expiry = Some(
                    self.next_expiry
                        .map_or(entry.expires, |t| t.min(entry.expires)),
                );
                None
            }
            None => {
                self.map.remove(reference);
                None
            }
        }
    }

    /// A `SPAWN_REPLY` arrived: the worker is noted, or the spawn failed, or the caller
    /// is gone and the worker must be killed.
    pub(crate) fn on_spawn_reply(&mut self, req_id: &Reference, result: Term) -> Answer<W> {
        let Some(entry) = self.map.get_mut(req_id) else {
            return Answer::NotACall;
        };
        match (result, entry.waiter.is_some()) {
            (Term::Pid(pid), true) => {
                entry.worker = Some(*pid);
                Answer::Nothing
            }
            (Term::Pid(pid), false) => {
                self.map.remove(req_id);
                Answer::Kill(*pid)
            }
            (reason, _) => self.finish(req_id, Outcome::SpawnFailed(reason)),
        }
    }

    /// A monitor's exit signal arrived: the erpc worker of a call exited.
    pub(crate) fn on_monitor_exit(&mut self, reference: &Reference, reason: Term) -> Answer<W> {
        if !self.map.contains_key(reference) {
            return Answer::NotACall;
        }
        self.finish(reference, Outcome::Exited(reason))
    }

    /// A message to the node's call process, or to an alias: `{Ref, Reply}` answers the
    /// `gen:call` registered under `Ref`. Anything else is not a call's.
    pub(crate) fn on_reply(&mut self, message: Term) -> Answer<W> {
        let Term::Tuple(mut fields) = message else {
            return Answer::NotACall;
        };
        let reference = match fields.as_slice() {
            [Term::Reference(r), _] => r.clone(),
            _ => return Answer::NotACall,
        };
        if !self
            .map
            .get(&reference)
            .is_some_and(|e| e.kind == Kind::Reply)
        {
            return Answer::NotACall;
        }
        let reply = fields.pop().unwrap_or_else(Term::nil);
        self.finish(&reference, Outcome::Reply(reply))
    }

    /// The connection to `peer` went down: every call to it ends.
    pub(crate) fn on_connection_lost(
        &mut self,
        peer: &NodeName,
        reason: &DisconnectReason,
    ) -> Vec<(W, Outcome)> {
        let mut lost = Vec::new();
        self.map.retain(|_, e| {
            if &e.peer != peer {
                return true;
            }
            if let Some(w) = e.waiter.take() {
                lost.push((w, Outcome::Lost(reason.clone())));
            }
            false
        });
        lost
    }

    /// Drops the entries that expired by `now` (their waiters with them).
    pub(crate) fn expire(&mut self, now: Instant) {
        if self.next_expiry.is_none_or(|t| now < t) {
            return;
        }
        self.map.retain(|_, e| e.expires > now);
        self.next_expiry = self.map.values().map(|e| e.expires).min();
    }

    /// The number of calls in the table.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    fn finish(&mut self, reference: &Reference, outcome: Outcome) -> Answer<W> {
        match self.map.remove(reference).and_then(|e| e.waiter) {
            Some(w) => Answer::Wake(w, outcome),
            None => Answer::Nothing,
        }
    }
}

/// The node's calls in flight: the table behind a lock, with the runtime's clock, and
/// callers woken through oneshot channels.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    table: std::sync::Mutex<CallTable<oneshot::Sender<Outcome>>>,
}

/// The deadline `timeout` from now, on tokio's clock; a timeout too long to add (such as
/// `Duration::MAX`, "wait for ever") gives a deadline thirty years away.
pub(crate) fn deadline_after(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}

impl Calls {
    fn lock(&self) -> std::sync::MutexGuard<'_, CallTable<oneshot::Sender<Outcome>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a call to `peer` whose caller waits until `deadline` (on tokio's clock);
    /// the receiver gets its outcome (or an error once the entry is dropped unanswered,
    /// a grace period after that deadline).
    pub(crate) fn register(
        &self,
        reference: Reference,
        peer: NodeName,
        kind: Kind,
        deadline: tokio::time::Instant,
    ) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.lock()
            .register(now(), reference, peer, kind, deadline.into_std(), tx);
        rx
    }

    /// See [`CallTable::remove`].
    pub(crate) fn remove(&self, reference: &Reference) {
        self.lock().remove(reference);
    }

    /// See [`CallTable::abandon`].
    pub(crate) fn abandon(&self, reference: &Reference) -> Option<Pid> {
        self.lock().abandon(now(), reference)
    }

    /// Carries out what the table answered: wakes the caller. Returns whether the signal
    /// was a call's, and the worker to kill, if any.
    fn settle(answer: Answer<oneshot::Sender<Outcome>>) -> (bool, Option<Pid>) {
        match answer {
            Answer::NotACall => (false, None),
            Answer::Nothing => (true, None),
            Answer::Wake(tx, outcome) => {
                let _ = tx.send(outcome);
                (true, None)
            }
            Answer::Kill(worker) => (true, Some(worker)),
        }
    }

    /// A `SPAWN_REPLY` arrived. Returns the worker it names when the caller gave up
    /// before the worker started: it is to be killed.
    pub(crate) fn spawn_reply(&self, req_id: &Reference, result: Term) -> Option<Pid> {
        let answer = self.lock().on_spawn_reply(req_id, result);
        Self::settle(answer).1
    }

    /// A monitor's exit signal arrived; returns whether it belonged to a call.
    pub(crate) fn monitor_exit(&self, reference: &Reference, reason: Term) -> bool {
        let answer = self.lock().on_monitor_exit(reference, reason);
        Self::settle(answer).0
    }

    /// A message to the node's call process or an alias: `{Ref, Reply}`. Returns
    /// whether it answered a call.
    pub(crate) fn deliver_reply(&self, message: Term) -> bool {
        let answer = self.lock().on_reply(message);
        Self::settle(answer).0
    }

    /// The connection to `peer` went down: every call to it fails.
    pub(crate) fn connection_lost(&self, peer: &NodeName, reason: &DisconnectReason) {
        let lost = self.lock().on_connection_lost(peer, reason);
        for (tx, outcome) in lost {
            let _ = tx.send(outcome);
        }
    }
}

#[cfg(test)]
mod tests;
