//! [`MemoryBackend`]: an in-process registry with the full semantics (TTL expiry, a lock
//! with a lease and fencing tokens, FIFO waiting).
//!
//! It is the reference implementation for the conformance suite and the embedded default
//! for examples and tests: clones share one registry, so several "nodes" in one process
//! see each other. Time is tokio time, so tests may run it with paused time.
//!
//! Expiry is exact: a registration or lock whose TTL has passed without a refresh is gone
//! at that instant (the stated bound is the TTL itself).
//!
//! For tests and trials it can simulate an outage ([`MemoryBackend::set_available`]) and
//! a stolen lock ([`MemoryBackend::break_lock`]).
//!
//! ```
//! use std::time::Duration;
//! use autocluster::backend::{Backend, LockRequest, MemoryBackend, Registration};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = MemoryBackend::new();
//! let node_a = registry.clone(); // shares the registry
//! let _a = node_a
//!     .register(Registration::new("rabbit@a".parse()?, Duration::from_secs(10)))
//!     .await?;
//! let listed = registry.list_nodes().await?;
//! assert_eq!(listed[0].node.as_str(), "rabbit@a");
//!
//! let guard = registry
//!     .lock(LockRequest::new("rabbit@a", Duration::from_secs(10), Duration::from_secs(5)))
//!     .await?;
//! assert!(guard.fencing_token() > 0);
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Configuration
//!
//! | map key | environment | meaning | default |
//! |---|---|---|---|
//! | `backend` / `cluster_formation.peer_discovery_backend` | `AUTOCLUSTER_TYPE` | `memory` | |
//! | `lock_wait_time` | `LOCK_WAIT_TIME`, `AUTOCLUSTER_LOCK_WAIT_TIME` | lock wait, seconds ([`Timings`]) | engine's |
//! | `memory_node_ttl` | `AUTOCLUSTER_MEMORY_NODE_TTL` | node TTL, seconds ([`Timings`]) | engine's |
//! | `memory_lock_ttl` | `AUTOCLUSTER_MEMORY_LOCK_TTL` | lock lease TTL, seconds ([`Timings`]) | engine's |

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::{self, Setting};
use super::{
    Backend, BackendError, KeepAliveOptions, LockGuard, LockRequest, LockSession, Refresh,
    RegisteredNode, Registration, RegistrationHandle, RegistrationSession, Timings,
};
use crate::NodeName;

const NAME: &str = "memory";

/// The registry's entry: always built.
pub(crate) const KIND: super::registry::BackendKind = super::registry::BackendKind {
    name: NAME,
    aliases: &["in_memory", "in-memory"],
    feature: None,
    settings: SETTINGS,
    build: Some(|values| Ok(Box::new(MemoryBackend::from_values(values)?))),
};

pub(crate) const SETTINGS: &[Setting] = &[
    Setting::new(
        "lock_wait_time",
        &["LOCK_WAIT_TIME", "AUTOCLUSTER_LOCK_WAIT_TIME"],
        &[],
    ),
    Setting::new("memory_node_ttl", &["AUTOCLUSTER_MEMORY_NODE_TTL"], &[]),
    Setting::new("memory_lock_ttl", &["AUTOCLUSTER_MEMORY_LOCK_TTL"], &[]),
];

#[derive(Debug)]
struct Entry {
    id: u64,
    order: u64,
    address: Option<String>,
    metadata: BTreeMap<String, String>,
    expires: Instant,
}

#[derive(Debug)]
struct Holder {
    id: u64,
    owner: String,
    token: u64,
    expires: Instant,
}

#[derive(Debug)]
struct State {
    next_id: u64,
    next_order: u64,
    next_token: u64,
    nodes: BTreeMap<NodeName, Entry>,
    holder: Option<Holder>,
    /// Tickets of the contenders waiting for the lock, first come first served.
    queue: VecDeque<u64>,
    available: bool,
}

impl State {
    fn purge(&mut self, now: Instant) {
        self.nodes.retain(|_, e| e.expires > now);
        if self.holder.as_ref().is_some_and(|h| h.expires <= now) {
            self.holder = None;
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn check_available(&self) -> Result<(), BackendError> {
        if self.available {
            Ok(())
        } else {
            Err(BackendError::Unavailable {
                backend: NAME,
                endpoint: "in-process registry".into(),
                detail: "simulated outage (MemoryBackend::set_available(false))".into(),
            })
        }
    }
}

struct Inner {
    state: Mutex<State>,
    changed: Notify,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The in-process backend. Cheap to clone; clones share one registry.
#[derive(Clone)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
    keepalive: KeepAliveOptions,
    timings: Timings,
    /// The registry of candidates ([`Backend::candidates`]), shared by clones.
    candidates: Arc<std::sync::OnceLock<MemoryBackend>>,
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("MemoryBackend")
            .field("nodes", &state.nodes.len())
            .field("locked", &state.holder.is_some())
            .field("available", &state.available)
            .finish()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::new()
    }
}

impl MemoryBackend {
    /// An empty registry.
    pub fn new() -> MemoryBackend {
        MemoryBackend {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    next_id: 0,
                    next_order: 0,
                    next_token: 0,
                    nodes: BTreeMap::new(),
                    holder: None,
                    queue: VecDeque::new(),
                    available: true,
                }),
                changed: Notify::new(),
            }),
            keepalive: KeepAliveOptions::default(),
            timings: Timings::default(),
            candidates: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Sets how registrations and locks are refreshed.
    pub fn with_keepalive(mut self, keepalive: KeepAliveOptions) -> MemoryBackend {
        self.keepalive = keepalive;
        self
    }

    /// Sets the timings reported by [`Backend::timings`].
    pub fn with_timings(mut self, timings: Timings) -> MemoryBackend {
        self.timings = timings;
        self
    }

    config::settings_constructors!(MemoryBackend, "A new registry");

    fn from_values(values: config::Values) -> Result<MemoryBackend, BackendError> {
        Ok(MemoryBackend::new().with_timings(Timings {
            node_ttl: values.seconds("memory_node_ttl")?,
            lock_ttl: values.seconds("memory_lock_ttl")?,
            lock_wait: values.seconds("lock_wait_time")?,
        }))
    }

    /// Simulates an outage (`false`): every operation fails with
    /// [`BackendError::Unavailable`], and nothing is refreshed, so registrations and the
    /// lock expire as they would on a real backend that its clients cannot reach.
    pub fn set_available(&self, available: bool) {
        self.inner.lock().available = available;
        self.inner.changed.notify_waiters();
    }

    /// Removes the current lock holder, as an operator deleting the lock key would
    /// (the holder's refresh and release then report the lock lost). Returns whether the
    /// lock was held.
    pub fn break_lock(&self) -> bool {
        let mut state = self.inner.lock();
        state.purge(Instant::now());
        let was_held = state.holder.take().is_some();
        drop(state);
        self.inner.changed.notify_waiters();
        was_held
    }

    /// The current lock holder's owner and fencing token, if the lock is held.
    pub fn lock_holder(&self) -> Option<(String, u64)> {
        let mut state = self.inner.lock();
        state.purge(Instant::now());
        state.holder.as_ref().map(|h| (h.owner.clone(), h.token))
    }
}

#[derive(Debug)]
struct MemoryRegistration {
    inner: Arc<Inner>,
    node: NodeName,
    ttl: Duration,
    address: Option<String>,
    metadata: BTreeMap<String, String>,
    id: AtomicU64,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Inner")
    }
}

impl MemoryRegistration {
    /// Writes the entry; keeps the order of a live entry for the same node.
    fn put(&self) -> Result<(), BackendError> {
        let now = Instant::now();
        let mut state = self.inner.lock();
        state.check_available()?;
        state.purge(now);
        let id = state.next_id();
        let order = match state.nodes.get(&self.node) {
            Some(existing) => existing.order,
            None => {
                state.next_order += 1;
                state.next_order
            }
        };
        state.nodes.insert(
            self.node.clone(),
            Entry {
                id,
                order,
                address: self.address.clone(),
                metadata: self.metadata.clone(),
                expires: now + self.ttl,
            },
        );
        self.id.store(id, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait::async_trait]
impl RegistrationSession for MemoryRegistration {
    async fn refresh(&self) -> Result<Refresh, BackendError> {
        let now = Instant::now();
        let mut state = self.inner.lock();
        state.check_available()?;
        state.purge(now);
        let id = self.id.load(Ordering::SeqCst);
        match state.nodes.get_mut(&self.node) {
            Some(entry) if entry.id == id => {
                entry.expires = now + self.ttl;
                Ok(Refresh::Alive)
            }
            _ => Ok(Refresh::Lost),
        }
    }

    async fn reregister(&self) -> Result<(), BackendError> {
        self.put()
    }

    async fn deregister(&self) -> Result<(), BackendError> {
        let mut state = self.inner.lock();
        state.check_available()?;
        let id = self.id.load(Ordering::SeqCst);
        if state.nodes.get(&self.node).is_some_and(|e| e.id == id) {
            state.nodes.remove(&self.node);
        }
        Ok(())
    }
}

#[derive(Debug)]
struct MemoryLock {
    inner: Arc<Inner>,
    id: u64,
    ttl: Duration,
}

#[async_trait::async_trait]
impl LockSession for MemoryLock {
    async fn refresh(&self) -> Result<Refresh, BackendError> {
        let now = Instant::now();
        let mut state = self.inner.lock();
        state.check_available()?;
        state.purge(now);
        match &mut state.holder {
            Some(holder) if holder.id == self.id => {
                holder.expires = now + self.ttl;
                Ok(Refresh::Alive)
            }
            _ => Ok(Refresh::Lost),
        }
    }

    async fn release(&self) -> Result<(), BackendError> {
        let now = Instant::now();
        let mut state = self.inner.lock();
        state.check_available()?;
        state.purge(now);
        match &state.holder {
            Some(holder) if holder.id == self.id => {
                state.holder = None;
                drop(state);
                self.inner.changed.notify_waiters();
                Ok(())
            }
            _ => Err(BackendError::LockLost {
                backend: NAME,
                detail: "the lock had expired or been taken over before release".into(),
            }),
        }
    }
}

/// Removes a waiter's ticket from the queue however the wait ends (acquired, timed out,
/// cancelled).
struct Ticket<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        state.queue.retain(|t| *t != self.id);
        drop(state);
        self.inner.changed.notify_waiters();
    }
}

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn supports_registration(&self) -> bool {
        true
    }

    fn supports_lock(&self) -> bool {
        true
    }

    async fn list_nodes(&self) -> Result<Vec<RegisteredNode>, BackendError> {
        let mut state = self.inner.lock();
        state.check_available()?;
        state.purge(Instant::now());
        let mut nodes: Vec<RegisteredNode> = state
            .nodes
            .iter()
            .map(|(node, e)| RegisteredNode {
                node: node.clone(),
                order: e.order,
                address: e.address.clone(),
                metadata: e.metadata.clone(),
            })
            .collect();
        super::sort_nodes(&mut nodes);
        Ok(nodes)
    }

    async fn register(
        &self,
        registration: Registration,
    ) -> Result<RegistrationHandle, BackendError> {
        if registration.ttl.is_zero() {
            return Err(BackendError::config(
                "ttl",
                "the registration TTL must be positive",
            ));
        }
        let session = Arc::new(MemoryRegistration {
            inner: self.inner.clone(),
            node: registration.node.clone(),
            ttl: registration.ttl,
            address: registration.address,
            metadata: registration.metadata,
            id: AtomicU64::new(0),
        });
        session.put()?;
        Ok(RegistrationHandle::spawn(
            NAME,
            registration.node,
            registration.ttl,
            session,
            self.keepalive.clone(),
        ))
    }

    async fn lock(&self, request: LockRequest) -> Result<LockGuard, BackendError> {
        if request.ttl.is_zero() {
            return Err(BackendError::config("ttl", "the lock TTL must be positive"));
        }
        let deadline = Instant::now() + request.wait;
        let ticket = {
            let mut state = self.inner.lock();
            state.check_available()?;
            let id = state.next_id();
            state.queue.push_back(id);
            Ticket {
                inner: &self.inner,
                id,
            }
        };
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wake = {
                let now = Instant::now();
                let mut state = self.inner.lock();
                state.check_available()?;
                state.purge(now);
                let first = state.queue.front() == Some(&ticket.id);
                match state.holder.as_ref().map(|h| h.expires) {
                    None if first => {
                        state.next_token += 1;
                        let token = state.next_token;
                        let id = ticket.id;
                        state.holder = Some(Holder {
                            id,
                            owner: request.owner.clone(),
                            token,
                            expires: now + request.ttl,
                        });
                        drop(state);
                        drop(ticket);
                        let session = Arc::new(MemoryLock {
                            inner: self.inner.clone(),
                            id,
                            ttl: request.ttl,
                        });
                        return Ok(LockGuard::spawn(
                            NAME,
                            request.owner,
                            token,
                            request.ttl,
                            session,
                            self.keepalive.clone(),
                        ));
                    }
                    None => deadline,
                    Some(expires) => expires.min(deadline),
                }
            };
            if Instant::now() >= deadline {
                return Err(BackendError::LockTimeout {
                    backend: NAME,
                    waited: request.wait,
                });
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// A second registry, shared by this backend's clones.
    fn candidates(&self) -> Option<Arc<dyn Backend>> {
        let registry = self.candidates.get_or_init(|| {
            MemoryBackend::new()
                .with_keepalive(self.keepalive.clone())
                .with_timings(self.timings)
        });
        Some(Arc::new(registry.clone()))
    }

    fn timings(&self) -> Timings {
        self.timings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::RegistrationEvent;

    fn node(s: &str) -> NodeName {
        s.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn registrations_live_while_refreshed_and_expire_when_abandoned() {
        let backend = MemoryBackend::new();
        let ttl = Duration::from_secs(3);
        let a = backend
            .register(Registration::new(node("a@h"), ttl))
            .await
            .unwrap();
        let b = backend
            .register(Registration::new(node("b@h"), ttl))
            .await
            .unwrap();
        tokio::time::sleep(ttl * 5).await;
        let names: Vec<String> = backend
            .list_nodes()
            .await
            .unwrap()
            .iter()
            .map(|n| n.node.to_string())
            .collect();
        assert_eq!(names, ["a@h", "b@h"]);
        b.abandon();
        tokio::time::sleep(ttl + Duration::from_millis(1)).await;
        let names: Vec<String> = backend
            .list_nodes()
            .await
            .unwrap()
            .iter()
            .map(|n| n.node.to_string())
            .collect();
        assert_eq!(names, ["a@h"]);
        a.deregister().await.unwrap();
        assert!(backend.list_nodes().await.unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn outage_then_reregistration() {
        let backend = MemoryBackend::new();
        let ttl = Duration::from_secs(3);
        let handle = backend
            .register(Registration::new(node("a@h"), ttl))
            .await
            .unwrap();
        let mut events = handle.subscribe();
        backend.set_available(false);
        assert!(matches!(
            backend.list_nodes().await,
            Err(BackendError::Unavailable { .. })
        ));
        tokio::time::sleep(ttl * 2).await;
        backend.set_available(true);
        assert!(
            backend.list_nodes().await.unwrap().is_empty(),
            "expired during the outage"
        );
        tokio::time::sleep(ttl).await;
        assert_eq!(
            backend.list_nodes().await.unwrap().len(),
            1,
            "registered again"
        );
        let mut seen_failure = false;
        let mut seen_reregistered = false;
        while let Ok(event) = events.try_recv() {
            match event {
                RegistrationEvent::RefreshFailed { .. } => seen_failure = true,
                RegistrationEvent::Reregistered => seen_reregistered = true,
                _ => {}
            }
        }
        assert!(seen_failure && seen_reregistered);
        assert!(handle.is_active());
        drop(handle);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            backend.list_nodes().await.unwrap().is_empty(),
            "drop deregisters"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lock_tokens_fifo_theft_and_expiry() {
        let backend = MemoryBackend::new();
        let ttl = Duration::from_secs(2);
        let first = backend
            .lock(LockRequest::new("a", ttl, Duration::from_secs(1)))
            .await
            .unwrap();
        assert!(matches!(
            backend
                .lock(LockRequest::new("b", ttl, Duration::from_secs(1)))
                .await,
            Err(BackendError::LockTimeout { .. })
        ));
        let token = first.fencing_token();
        first.release().await.unwrap();
        let second = backend
            .lock(LockRequest::new("b", ttl, Duration::from_secs(1)))
            .await
            .unwrap();
        assert!(second.fencing_token() > token);
        assert!(backend.break_lock());
        assert!(matches!(
            second.release().await,
            Err(BackendError::LockLost { .. })
        ));

        let stalled = backend
            .lock(LockRequest::new("c", ttl, Duration::from_secs(1)))
            .await
            .unwrap();
        stalled.pause_refresh();
        let waiter = backend
            .lock(LockRequest::new("d", ttl, Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(backend.lock_holder().unwrap().0, "d");
        stalled.resume_refresh();
        tokio::time::timeout(Duration::from_secs(1), stalled.lost())
            .await
            .unwrap();
        assert!(!stalled.is_held());
        assert!(matches!(
            stalled.release().await,
            Err(BackendError::LockLost { .. })
        ));
        assert!(waiter.is_held());
        waiter.abandon();
        tokio::time::sleep(ttl).await;
        assert!(backend.lock_holder().is_none());
    }
}
