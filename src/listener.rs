//! Connection limits shared by every listening socket of the crate (the embedded EPMD
//! server and the distribution acceptor).
//!
//! A connection is **pending** from the moment it is accepted until it has proven itself
//! (EPMD: it sent a complete request; distribution: it finished its handshake), and
//! **established** afterwards (EPMD: a registered node's open ALIVE2 connection).
//!
//! * A pending connection lives at most [`ListenerLimits::idle_timeout`], counted from
//!   the accept: trickling one byte at a time does not extend it.
//! * When a pending limit is hit (in total, or for one source), the new connection is
//!   admitted and the **oldest pending** connection is evicted instead (the oldest of the
//!   same source when the per-source limit is the one hit). A slowloris flood therefore
//!   cannot lock out well-behaved clients at other addresses: the flood's own address
//!   holds at most `max_pending_per_source` slots, and a newcomer always gets a slot. A
//!   client that shares its address with a flood can still lose its slot between its
//!   connect and the first read of its request, if that many newer connections from
//!   the address are accepted in between.
//! * Connections that have made progress (a handshake whose first message, the peer's
//!   name, has arrived: `ConnectionLimiter::mark_progress`) are evicted only after
//!   every pending connection that has sent nothing complete: a node in the middle of its
//!   handshake keeps its slot through a flood of idle connections from its own address.
//! * Established connections beyond [`ListenerLimits::max_connections`] or
//!   [`ListenerLimits::max_per_source`] are refused at promotion time.
//!
//! So the number of open sockets is bounded by `max_pending + max_connections`.
//!
//! Sources are IP addresses; an IPv4-mapped IPv6 address counts as the IPv4 address, and
//! IPv6 addresses are grouped by their /64 prefix (one host usually owns a whole /64).
//!
//! `ConnectionTable` is the pure state machine (no clock, no I/O: the caller passes
//! `now`), and `ConnectionLimiter` is the small async wrapper a tokio accept loop uses:
//! it hands out an RAII `ConnectionPermit` whose `closed`
//! future fires when the connection is evicted or its pending time is up (the deadlines
//! are kept by one task per limiter, not by a timer per connection).
//!
//! ```
//! use autocluster::listener::ListenerLimits;
//! use autocluster::{Cookie, Node};
//!
//! // At most two connections still in their handshake per source address.
//! let limits = ListenerLimits { max_pending_per_source: 2, ..ListenerLimits::default() };
//! let builder = Node::builder("node@localhost".parse()?, Cookie::new("a long random cookie")?)
//!     .listen("127.0.0.1:0".parse()?)
//!     .limits(limits);
//! # drop(builder);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};

/// Limits applied by a listener to the connections it accepts.
///
/// The defaults suit a host running a handful to a few hundred Erlang nodes: see each
/// field. Every limit is a count of sockets, so memory stays bounded whatever peers do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Most established connections in total (default 1024). For EPMD this is the number
    /// of nodes that can be registered at once.
    pub max_connections: usize,
    /// Most established connections from one source (default 256). EPMD registrations
    /// all come from the local host, so this is also the most nodes one host can register.
    pub max_per_source: usize,
    /// Most pending connections in total (default 512); beyond it the oldest is evicted.
    pub max_pending: usize,
    /// Most pending connections from one source (default 128); beyond it the oldest
    /// pending connection of that source is evicted.
    pub max_pending_per_source: usize,
    /// How long a connection may stay pending, from accept to proving itself
    /// (default 10 s; epmd itself waits 60 s for an idle request, OTP's `net_setuptime`
    /// gives a handshake 7 s).
    pub idle_timeout: Duration,
}

impl ListenerLimits {
    /// Whether these limits admit any connection: a pending limit of 0 refuses all
    /// (`Refusal::NoPendingSlots`).
    pub fn takes_connections(&self) -> bool {
        self.max_pending > 0 && self.max_pending_per_source > 0
    }
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 1024,
            max_per_source: 256,
            max_pending: 512,
            max_pending_per_source: 128,
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// Identifies one admitted connection; identifiers increase with admission order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ConnId(pub u64);

/// Hashes a [`ConnId`]: the table numbers its connections itself (nothing a peer chooses),
/// so a multiply is spread enough, and cheaper than SipHash on every accept and close.
#[derive(Debug, Default)]
struct ConnIdHasher(u64);

impl Hasher for ConnIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A map keyed by connection id.
type ConnMap<V> = HashMap<ConnId, V, BuildHasherDefault<ConnIdHasher>>;

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Why a connection was closed by the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// It stayed pending longer than [`ListenerLimits::idle_timeout`].
    TimedOut,
    /// A newer connection needed its slot: [`ListenerLimits::max_pending`] was reached.
    PendingLimit,
    /// A newer connection from the same source needed its slot:
    /// [`ListenerLimits::max_pending_per_source`] was reached.
    PendingPerSourceLimit,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::TimedOut => "pending for longer than the idle timeout",
            CloseReason::PendingLimit => "evicted: too many pending connections",
            CloseReason::PendingPerSourceLimit => {
                "evicted: too many pending connections from this source"
            }
        })
    }
}

/// One connection the table closed to make room or because its time was up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Eviction {
    /// The connection to close.
    pub id: ConnId,
    /// Why.
    pub reason: CloseReason,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Refusal {
    /// A pending limit is zero: this listener takes no new connections.
    #[error("the listener takes no pending connections (a pending limit is 0)")]
    NoPendingSlots,
}

/// Outcome of [`ConnectionTable::admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Serve the connection; close every connection in `evicted` first.
    Admit {
        /// The new connection's identifier.
        id: ConnId,
        /// When it must have proven itself.
        deadline: Instant,
        /// Connections to close now (timed out, or evicted to make room).
        evicted: Vec<Eviction>,
    },
    /// Close the connection at once.
    Refuse(Refusal),
}

/// Why a pending connection could not become established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PromoteError {
    /// The identifier is unknown (released or evicted already).
    #[error("unknown connection (already closed or evicted)")]
    Unknown,
    /// [`ListenerLimits::max_connections`] established connections exist already.
    #[error("too many established connections (limit {limit})")]
    TooManyConnections {
        /// The limit in force.
        limit: usize,
    },
    /// [`ListenerLimits::max_per_source`] established connections from this source exist.
    #[error("too many established connections from this source (limit {limit})")]
    TooManyFromSource {
        /// The limit in force.
        limit: usize,
    },
}

/// The key connections are counted under: the IPv4 address, or the IPv6 /64 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SourceKey(IpAddr);

impl SourceKey {
    fn of(ip: IpAddr) -> SourceKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => SourceKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                SourceKey(IpAddr::V6(Ipv6Addr::from(bits)))
            }
        }
    }
}

#[derive(Debug)]
enum ConnState {
    /// Admitted, not yet proven (whether it has made progress: see `idle`).
    Pending {
        deadline: Instant,
    },
    Established,
}

#[derive(Debug)]
struct Conn {
    source: SourceKey,
    state: ConnState,
}

#[derive(Debug, Default)]
struct SourceCounts {
    pending: BTreeSet<ConnId>,
    /// The pending connections that have made no progress (a subset of `pending`).
    idle: BTreeSet<ConnId>,
    established: usize,
}

/// The pure bookkeeping behind [`ConnectionLimiter`]: which connections are pending or
/// established, from where, and which to evict. It never reads a clock.
#[derive(Debug)]
pub(crate) struct ConnectionTable {
    limits: ListenerLimits,
    next_id: u64,
    conns: ConnMap<Conn>,
    pending: BTreeSet<ConnId>,
    /// The pending connections that have made no progress (a subset of `pending`).
    idle: BTreeSet<ConnId>,
    /// Seeded per table: sources are the peers' addresses. Bounded in size by the
    /// limits (an entry lives while its source has pending or established connections).
    sources: HashMap<SourceKey, SourceCounts, foldhash::fast::RandomState>,
    established: usize,
}

impl ConnectionTable {
    /// An empty table enforcing `limits`.
    pub fn new(limits: ListenerLimits) -> Self {
        ConnectionTable {
            limits,
            next_id: 0,
            conns: ConnMap::default(),
            pending: BTreeSet::new(),
            idle: BTreeSet::new(),
            sources: HashMap::default(),
            established: 0,
        }
    }

    /// Admits a connection from `source` accepted at `now`, evicting what must go.
    ///
    /// Expired pending connections are evicted first; then, if the source or the whole
    /// listener is at its pending limit, the oldest pending connection (of the source,
    /// resp. overall) that has made no [progress](Self::mark_progress) makes room, or the
    /// oldest pending one when all have: a connection that has sent nothing goes before
    /// one in the middle of its handshake.
    pub fn admit(&mut self, source: IpAddr, now: Instant) -> Decision {
        if !self.limits.takes_connections() {
            return Decision::Refuse(Refusal::NoPendingSlots);
        }
        let mut evicted: Vec<Eviction> = self
            .expire(now)
            .into_iter()
            .map(|id| Eviction {
                id,
                reason: CloseReason::TimedOut,
            })
            .collect();
        let key = SourceKey::of(source);
        let oldest_of_source = self.sources.get(&key).and_then(|counts| {
            (counts.pending.len() >= self.limits.max_pending_per_source)
                .then(|| counts.idle.first().or(counts.pending.first()).copied())
                .flatten()
        });
        if let Some(id) = oldest_of_source {
            self.remove(id);
            evicted.push(Eviction {
                id,
                reason: CloseReason::PendingPerSourceLimit,
            });
        }
        while self.pending.len() >= self.limits.max_pending {
            let Some(id) = self.idle.first().or(self.pending.first()).copied() else {
                break;
            };
            self.remove(id);
            evicted.push(Eviction {
                id,
                reason: CloseReason::PendingLimit,
            });
        }
        let id = ConnId(self.next_id);
        self.next_id += 1;
        let deadline = now + self.limits.idle_timeout;
        self.conns.insert(
            id,
            Conn {
                source: key,
                state: ConnState::Pending { deadline },
            },
        );
        self.pending.insert(id);
        self.idle.insert(id);
        let counts = self.sources.entry(key).or_default();
        counts.pending.insert(id);
        counts.idle.insert(id);
        Decision::Admit {
            id,
            deadline,
            evicted,
        }
    }

    /// Records that a pending connection has made progress (it sent a complete first
    /// message, such as a handshake's name): it is then evicted only after every pending
    /// connection that has not. `false` if `id` is not pending.
    pub fn mark_progress(&mut self, id: ConnId) -> bool {
        let Some(conn) = self.conns.get(&id) else {
            return false;
        };
        if !matches!(conn.state, ConnState::Pending { .. }) {
            return false;
        }
        self.idle.remove(&id);
        if let Some(counts) = self.sources.get_mut(&conn.source) {
            counts.idle.remove(&id);
        }
        true
    }

    /// Marks a pending connection as established (it proved itself).
    ///
    /// Promoting an established connection again is a no-op. On error the connection
    /// stays pending; the caller is expected to close it.
    pub fn promote(&mut self, id: ConnId) -> Result<(), PromoteError> {
        let conn = self.conns.get(&id).ok_or(PromoteError::Unknown)?;
        if matches!(conn.state, ConnState::Established) {
            return Ok(());
        }
        let key = conn.source;
        if self.established >= self.limits.max_connections {
            return Err(PromoteError::TooManyConnections {
                limit: self.limits.max_connections,
            });
        }
        let counts = self.sources.entry(key).or_default();
        if counts.established >= self.limits.max_per_source {
            return Err(PromoteError::TooManyFromSource {
                limit: self.limits.max_per_source,
            });
        }
        counts.pending.remove(&id);
        counts.idle.remove(&id);
        counts.established += 1;
        self.pending.remove(&id);
        self.idle.remove(&id);
        self.established += 1;
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.state = ConnState::Established;
        }
        Ok(())
    }

    /// Forgets a closed connection; `false` if it was unknown (e.g. evicted already).
    pub fn release(&mut self, id: ConnId) -> bool {
        self.remove(id)
    }

    /// Removes and returns the pending connections whose deadline is at or before `now`,
    /// oldest first.
    pub fn expire(&mut self, now: Instant) -> Vec<ConnId> {
        let mut expired = Vec::new();
        // Every connection gets the same timeout, so admission order is deadline order.
        while let Some(&id) = self.pending.first() {
            let overdue = match self.conns.get(&id).map(|c| &c.state) {
                Some(ConnState::Pending { deadline }) => *deadline <= now,
                _ => true, // inconsistent entry: drop it
            };
            if !overdue {
                break;
            }
            self.remove(id);
            expired.push(id);
        }
        expired
    }

    /// The earliest pending deadline, if any connection is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        let id = self.pending.first()?;
        match self.conns.get(id)?.state {
            ConnState::Pending { deadline } => Some(deadline),
            ConnState::Established => None,
        }
    }

    /// Whether `id` is known and established.
    #[cfg(test)]
    pub fn is_established(&self, id: ConnId) -> bool {
        matches!(
            self.conns.get(&id).map(|c| &c.state),
            Some(ConnState::Established)
        )
    }

    /// Whether `id` is known (pending or established).
    #[cfg(test)]
    pub fn contains(&self, id: ConnId) -> bool {
        self.conns.contains_key(&id)
    }

    /// Pending connections in total.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Established connections in total.
    pub fn established(&self) -> usize {
        self.established
    }

    /// Pending connections counted against `source`.
    #[cfg(test)]
    pub fn pending_from(&self, source: IpAddr) -> usize {
        self.sources
            .get(&SourceKey::of(source))
            .map_or(0, |c| c.pending.len())
    }

    /// Established connections counted against `source`.
    #[cfg(test)]
    pub fn established_from(&self, source: IpAddr) -> usize {
        self.sources
            .get(&SourceKey::of(source))
            .map_or(0, |c| c.established)
    }

    fn remove(&mut self, id: ConnId) -> bool {
        let Some(conn) = self.conns.remove(&id) else {
            return false;
        };
        let mut empty = false;
        if let Some(counts) = self.sources.get_mut(&conn.source) {
            match conn.state {
                ConnState::Pending { .. } => {
                    counts.pending.remove(&id);
                    counts.idle.remove(&id);
                }
                ConnState::Established => counts.established -= 1,
            }
            empty = counts.pending.is_empty() && counts.established == 0;
        }
        if empty {
            self.sources.remove(&conn.source);
        }
        match conn.state {
            ConnState::Pending { .. } => {
                self.pending.remove(&id);
                self.idle.remove(&id);
            }
            ConnState::Established => self.established -= 1,
        }
        true
    }
}

/// Counters of a `ConnectionLimiter`, for logs, metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Connections pending now.
    pub pending: usize,
    /// Connections established now.
    pub established: usize,
    /// Connections admitted since the start. (The embedded EPMD answers a query whose
    /// request is there when it accepts the connection without admitting it: such a
    /// connection is never pending.)
    pub admitted: u64,
    /// Pending connections closed because their time was up.
    pub timed_out: u64,
    /// Pending connections evicted to make room for newer ones.
    pub evicted: u64,
    /// Connections refused at admission or promotion.
    pub refused: u64,
}

#[derive(Debug)]
struct LimiterInner {
    table: ConnectionTable,
    signals: ConnMap<oneshot::Sender<CloseReason>>,
    stats: ListenerStats,
    /// Whether the sweeper task (see [`sweep`]) is running.
    sweeping: bool,
}

impl LimiterInner {
    /// Counts the evictions and tells their permits.
    fn evict(&mut self, evicted: impl IntoIterator<Item = Eviction>) {
        for eviction in evicted {
            match eviction.reason {
                CloseReason::TimedOut => self.stats.timed_out += 1,
                _ => self.stats.evicted += 1,
            }
            if let Some(signal) = self.signals.remove(&eviction.id) {
                // The receiver may be gone already; nothing to do then.
                let _ = signal.send(eviction.reason);
            }
        }
    }
}

/// What the clones of a [`ConnectionLimiter`] and its sweeper share.
#[derive(Debug)]
struct Shared {
    state: Mutex<LimiterInner>,
    /// Woken when the sweeper is dropped before it ends by itself (its runtime shut
    /// down): the permits waiting on it start another.
    sweeper_lost: Notify,
}

/// Closes the pending connections whose time is up, for all the permits of a limiter.
///
/// A timer per pending connection would be simpler, but a new timer that falls due
/// before the runtime's next planned wake-up makes the runtime wake its timer thread (a
/// system call and a thread hand-off), on every accepted connection. One task sleeps
/// until the oldest pending deadline instead (every connection gets the same timeout, so
/// that is the next one due), times out what is overdue, and goes back to sleep until the
/// next; it ends when nothing is pending, and the next permit whose
/// [`closed`](ConnectionPermit::closed) is awaited starts it again.
async fn sweep(mut running: Sweeping) {
    loop {
        let Some(shared) = running.0.upgrade() else {
            return;
        };
        let next = {
            let mut inner = lock(&shared.state);
            let now = tokio::time::Instant::now().into_std();
            let expired = inner.table.expire(now);
            inner.evict(expired.into_iter().map(|id| Eviction {
                id,
                reason: CloseReason::TimedOut,
            }));
            match inner.table.next_deadline() {
                Some(next) => next,
                None => {
                    inner.sweeping = false;
                    running.0 = Weak::new();
                    return;
                }
            }
        };
        drop(shared);
        tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
    }
}

/// Owned by the sweeper's future from its spawn (before its first poll): if the future
/// is dropped before the sweeper ends by itself (its runtime shut down while the limiter
/// lives on), clears [`LimiterInner::sweeping`] and wakes the permits that were waiting
/// on it, so that they start another.
struct Sweeping(Weak<Shared>);

impl Drop for Sweeping {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            lock(&shared.state).sweeping = false;
            shared.sweeper_lost.notify_waiters();
        }
    }
}

/// Locks the limiter's state. A panic while holding this lock cannot leave the table
/// half-updated in a way that matters more than refusing all service would, so this
/// recovers from poisoning.
fn lock(state: &Mutex<LimiterInner>) -> MutexGuard<'_, LimiterInner> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The async face of [`ConnectionTable`]: an accept loop calls [`admit`](Self::admit)
/// for each accepted socket and moves the returned permit into the connection's task.
///
/// Cloning is cheap and shares the same table.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionLimiter {
    shared: Arc<Shared>,
}

impl ConnectionLimiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: ListenerLimits) -> Self {
        ConnectionLimiter {
            shared: Arc::new(Shared {
                state: Mutex::new(LimiterInner {
                    table: ConnectionTable::new(limits),
                    signals: ConnMap::default(),
                    stats: ListenerStats::default(),
                    sweeping: false,
                }),
                sweeper_lost: Notify::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LimiterInner> {
        lock(&self.shared.state)
    }

    /// Starts the sweeper unless it runs.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or in one without the time driver, as a timer would.
    fn sweep(&self) {
        let mut inner = self.lock();
        if !inner.sweeping {
            // A runtime without timers panics here, in the caller, rather than in a
            // sweeper that would then be started again and again.
            drop(tokio::time::sleep(Duration::ZERO));
            inner.sweeping = true;
            drop(inner);
            // The guard goes into the future now, so that a sweeper dropped before its
            // first poll also clears the flag.
            tokio::spawn(sweep(Sweeping(Arc::downgrade(&self.shared))));
        }
    }

    /// Current counters.
    pub fn stats(&self) -> ListenerStats {
        let inner = self.lock();
        ListenerStats {
            pending: inner.table.pending(),
            established: inner.table.established(),
            ..inner.stats
        }
    }

    /// Records that the pending connection `id` has made progress (see
    /// [`ConnectionTable::mark_progress`]); for code that holds the limiter but not the
    /// permit, such as a handshake running beside the permit's
    /// [`closed`](ConnectionPermit::closed) future.
    pub fn mark_progress(&self, id: ConnId) -> bool {
        self.lock().table.mark_progress(id)
    }

    /// Admits a connection from `source` (evicting older pending ones if needed, which
    /// are told through their permit's [`closed`](ConnectionPermit::closed) future).
    pub fn admit(&self, source: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let now = tokio::time::Instant::now();
        let mut inner = self.lock();
        match inner.table.admit(source, now.into_std()) {
            Decision::Refuse(refusal) => {
                inner.stats.refused += 1;
                Err(refusal)
            }
            Decision::Admit {
                id,
                deadline,
                evicted,
            } => {
                inner.evict(evicted);
                inner.stats.admitted += 1;
                let (tx, rx) = oneshot::channel();
                inner.signals.insert(id, tx);
                drop(inner);
                Ok(ConnectionPermit {
                    id,
                    deadline: Some(tokio::time::Instant::from_std(deadline)),
                    limiter: self.clone(),
                    signal: Some(rx),
                    closed: None,
                })
            }
        }
    }
}

/// A connection's slot in a [`ConnectionLimiter`]; dropping it releases the slot.
#[derive(Debug)]
pub(crate) struct ConnectionPermit {
    id: ConnId,
    deadline: Option<tokio::time::Instant>,
    limiter: ConnectionLimiter,
    signal: Option<oneshot::Receiver<CloseReason>>,
    closed: Option<CloseReason>,
}

impl ConnectionPermit {
    /// The connection's identifier.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Whether the connection was promoted.
    #[cfg(test)]
    pub fn is_established(&self) -> bool {
        self.deadline.is_none()
    }

    /// Marks the connection established: it is no longer subject to the pending timeout
    /// or to eviction. Fails when the established limits are reached (close it then), or
    /// when the connection was evicted or timed out already ([`PromoteError::Unknown`],
    /// even if [`closed`](Self::closed) has not said so yet: the slot is given up at the
    /// deadline or eviction itself).
    pub fn promote(&mut self) -> Result<(), PromoteError> {
        if self.closed.is_some() {
            return Err(PromoteError::Unknown);
        }
        let mut inner = self.limiter.lock();
        match inner.table.promote(self.id) {
            Ok(()) => {
                inner.signals.remove(&self.id);
                drop(inner);
                self.deadline = None;
                self.signal = None;
                Ok(())
            }
            Err(PromoteError::Unknown) => {
                // Timed out or evicted (counted as such) before this promotion.
                drop(inner);
                if let Some(reason) = self.signal.as_mut().and_then(|rx| rx.try_recv().ok()) {
                    self.signal = None;
                    self.closed = Some(reason);
                }
                Err(PromoteError::Unknown)
            }
            Err(e) => {
                inner.stats.refused += 1;
                Err(e)
            }
        }
    }

    /// Resolves when the limits want this connection closed: evicted by a newer one, or
    /// still pending at its deadline. Never resolves for an established connection.
    ///
    /// Deadlines are kept by one task per limiter, which the first `closed` awaited
    /// starts on the current runtime (and the next one starts again, in a later poll, if
    /// that runtime shuts down while the limiter lives on). A pending connection whose
    /// `closed` is never awaited is still removed from the limiter at its deadline.
    ///
    /// Cancel-safe: use it as a branch of `tokio::select!` around every read and write.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with the time driver enabled.
    pub async fn closed(&mut self) -> CloseReason {
        if let Some(reason) = self.closed {
            return reason;
        }
        let limiter = &self.limiter;
        // Established (or promoted while this waited): never.
        let Some(rx) = self.signal.as_mut() else {
            return std::future::pending().await;
        };
        let reason = loop {
            // Created before the sweeper is checked, so that losing it after the check
            // still wakes this permit.
            let lost = limiter.shared.sweeper_lost.notified();
            // The sweeper tells this permit when its time is up, as eviction does.
            limiter.sweep();
            tokio::select! {
                reason = &mut *rx => match reason {
                    Ok(reason) => break reason,
                    // The limiter forgot the connection without a reason: promoted.
                    Err(_) => return std::future::pending().await,
                },
                () = lost => {
                    // Lost, perhaps at once: a runtime that is shutting down drops a task
                    // spawned on it before its first poll. Start another only in a later
                    // poll, so that a task being shut down is never held in this one.
                    tokio::task::yield_now().await;
                }
            }
        };
        self.signal = None;
        self.closed = Some(reason);
        reason
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        // A connection timed out or evicted is gone from the table already (and counted).
        let mut inner = self.limiter.lock();
        inner.table.release(self.id);
        inner.signals.remove(&self.id);
    }
}

/// Binds a listening socket with a deep accept queue (`backlog`, capped by the kernel's
/// `somaxconn`): under a flood of connections, a shallow queue drops the SYNs of
/// well-behaved clients, which then wait a full second to retry. IPv6 sockets are
/// IPv6-only, so `[::]` and `0.0.0.0` can be bound side by side.
pub(crate) fn bind(
    addr: std::net::SocketAddr,
    backlog: i32,
) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests;
