//! The backend conformance suite: one set of checks, written once, that every discovery
//! backend passes, so that the formation engine gets the same answers from all of them
//! (the semantics of the [module documentation](super)).
//!
//! Available with the crate feature `testing`. A backend written outside this crate runs
//! the suite from its own tests by enabling the feature in its dev-dependencies:
//!
//! ```toml
//! [dev-dependencies]
//! autocluster = { version = "0.1", features = ["testing"] }
//! ```
//!
//! This module follows semver; the other items that the `testing` feature opens (codec
//! internals) do not, and are hidden from the documentation.
//!
//! # Running it
//!
//! 1. Implement [`ConformanceTarget`] for a small adapter that owns the registry under
//!    test (a server process, an in-test HTTP server, a shared in-memory map) and makes
//!    independent clients of it: [`backend`](ConformanceTarget::backend) returns a NEW
//!    client each call (the lock check makes 20 of them, one per contender), all talking
//!    to the same registry. State the backend's bounds
//!    ([`expiry_bound`](ConformanceTarget::expiry_bound),
//!    [`lock_free_bound`](ConformanceTarget::lock_free_bound),
//!    [`call_bound`](ConformanceTarget::call_bound)) as its documentation states them: the
//!    checks assert them.
//! 2. Implement the optional capabilities the target offers (outage, lock theft, garbage
//!    entries, hung or garbage-speaking endpoints). The default `false` / `None` skips the
//!    corresponding check with a note on stderr.
//! 3. Call [`run`] from a test with a function that makes a fresh target. Every check
//!    gets its own target, so a check never sees another's registrations or lock.
//!
//! A backend without registration or lock passes the checks that need them by returning
//! [`BackendError::Unsupported`] (asserted) and saying so through its capabilities
//! ([`Backend::supports_registration`], [`Backend::supports_lock`]); without a lock it
//! must compute the same [`Backend::deterministic_seed`] on every client.
//!
//! ```no_run
//! use std::time::Duration;
//! use autocluster::backend::conformance::{self, ConformanceTarget};
//! use autocluster::backend::{Backend, MemoryBackend};
//!
//! /// Clients of one in-process registry.
//! struct Target(MemoryBackend);
//!
//! #[async_trait::async_trait]
//! impl ConformanceTarget for Target {
//!     async fn backend(&self) -> Box<dyn Backend> {
//!         Box::new(self.0.clone())
//!     }
//!     fn ttl(&self) -> Duration {
//!         Duration::from_secs(1)
//!     }
//!     fn expiry_bound(&self, ttl: Duration) -> Duration {
//!         ttl
//!     }
//!     fn lock_free_bound(&self, ttl: Duration) -> Duration {
//!         ttl
//!     }
//!     fn call_bound(&self) -> Duration {
//!         Duration::from_millis(500)
//!     }
//! }
//!
//! #[tokio::test]
//! async fn conformance() {
//!     conformance::run(|| async { Target(MemoryBackend::new()) }).await;
//! }
//! ```
//!
//! The checks are also public one by one ([`outage`], [`lock_mutual_exclusion`], ...),
//! to run a single one while working on it.
//!
//! # Failures
//!
//! The checks are test code: a failed check panics with what was expected and what the
//! backend did. [`run`] runs every check, each in its own task, prints one line per
//! check on stderr, and then panics with the list of the checks that failed and why.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{Backend, BackendError, LockRequest, Registration, RegistrationEvent};
use crate::NodeName;

/// Adapts a backend and its server to the suite.
#[async_trait::async_trait]
pub trait ConformanceTarget: Send + Sync {
    /// A new, independent client of the registry under test.
    async fn backend(&self) -> Box<dyn Backend>;

    /// The TTL the checks register and lock with: short, but at least the backend's
    /// minimum.
    fn ttl(&self) -> Duration;

    /// The backend's stated bound: a registrant that stops refreshing is gone from
    /// listings within this long after it stopped.
    fn expiry_bound(&self, ttl: Duration) -> Duration;

    /// The backend's stated bound: a lock holder that stops refreshing frees the lock
    /// within this long after it stopped.
    fn lock_free_bound(&self, ttl: Duration) -> Duration;

    /// How long one call may take when the server is down, hung or answering garbage
    /// (the backend's timeout plus scheduling margin).
    fn call_bound(&self) -> Duration;

    /// Stops the server (an outage). `false`: not supported by this target.
    async fn stop_server(&self) -> bool {
        false
    }

    /// Starts it again after [`stop_server`](Self::stop_server).
    async fn start_server(&self) -> bool {
        false
    }

    /// Removes the lock holder server-side, as an operator deleting the lock would.
    async fn break_lock(&self) -> bool {
        false
    }

    /// Whether the server itself sees the lock free (no holder, no waiter), if the target
    /// can ask it.
    async fn lock_free_on_server(&self) -> Option<bool> {
        None
    }

    /// Writes an entry that is not a valid registration where registrations live.
    async fn write_garbage(&self) -> bool {
        false
    }

    /// A client pointed at an endpoint that accepts connections and never answers.
    async fn hung_backend(&self) -> Option<Box<dyn Backend>> {
        None
    }

    /// A client pointed at an endpoint that answers garbage (HTTP 500 pages, random bytes,
    /// malformed JSON, wrong content type, truncated bodies: whatever the protocol allows).
    async fn garbage_backends(&self) -> Vec<Box<dyn Backend>> {
        Vec::new()
    }
}

fn skip(what: &str) {
    eprintln!("conformance: {what}: not offered by this target, skipped");
}

/// A node name that no other call returns, in this process or another running the suite
/// against the same registry (the process id, a counter and a random part).
pub fn unique_node() -> NodeName {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "c{}_{}_{:08x}@localhost",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    );
    NodeName::new(&name).expect("a generated node name is valid")
}

async fn listed(backend: &dyn Backend, node: &NodeName) -> bool {
    backend
        .list_nodes()
        .await
        .unwrap_or_else(|e| panic!("list_nodes failed: {e}"))
        .iter()
        .any(|n| &n.node == node)
}

/// Polls until `listed == want`, returning how long it took, or panics after `limit`.
async fn wait_listed(
    backend: &dyn Backend,
    node: &NodeName,
    want: bool,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        if listed(backend, node).await == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{node} still {} after {:?}",
            if want { "not listed" } else { "listed" },
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `future`, asserting it ends within `bound`.
async fn bounded<T>(
    what: &str,
    bound: Duration,
    future: impl std::future::Future<Output = T>,
) -> T {
    let start = Instant::now();
    match tokio::time::timeout(bound, future).await {
        Ok(value) => value,
        Err(_) => panic!(
            "{what} did not end within {bound:?} (started {:?} ago)",
            start.elapsed()
        ),
    }
}

/// Capabilities are stated, and calls outside them are `Unsupported`.
pub async fn capabilities(target: &dyn ConformanceTarget) {
    let backend = target.backend().await;
    let node = unique_node();
    if !backend.supports_registration() {
        let result = backend
            .register(Registration::new(node.clone(), target.ttl()))
            .await;
        assert!(
            matches!(result, Err(BackendError::Unsupported { .. })),
            "register on a backend without registration: {result:?}"
        );
    }
    if !backend.supports_lock() {
        let result = backend
            .lock(LockRequest::new(
                node.as_str(),
                target.ttl(),
                Duration::from_millis(100),
            ))
            .await;
        assert!(
            matches!(result, Err(BackendError::Unsupported { .. })),
            "lock on a backend without lock: {:?}",
            result.map(|g| g.fencing_token())
        );
        // Without a lock, a deterministic seed is the way to avoid split clusters, and
        // every node computes the same.
        let seed = backend
            .deterministic_seed(&node)
            .await
            .expect("deterministic_seed");
        let other = target
            .backend()
            .await
            .deterministic_seed(&unique_node())
            .await
            .expect("seed");
        assert_eq!(seed, other, "every node must compute the same seed");
    }
    // A listing works (possibly empty for a fresh registry) and is sorted by order.
    let nodes = backend.list_nodes().await.expect("list_nodes");
    assert!(
        nodes.windows(2).all(|w| w[0].order <= w[1].order),
        "listing not in registration order"
    );
}

/// Register → listed (by another client), in registration order; deregister → gone.
pub async fn register_list_deregister(target: &dyn ConformanceTarget) {
    let a = target.backend().await;
    let observer = target.backend().await;
    if !a.supports_registration() {
        return skip("registration");
    }
    let first = unique_node();
    let second = unique_node();
    let h1 = a
        .register(Registration::new(first.clone(), target.ttl()).with_address("127.0.0.1"))
        .await
        .expect("register");
    let h2 = target
        .backend()
        .await
        .register(Registration::new(second.clone(), target.ttl()))
        .await
        .expect("register");
    assert!(h1.is_active() && h2.is_active());
    let nodes = observer.list_nodes().await.expect("list");
    let position = |n: &NodeName| nodes.iter().position(|r| &r.node == n);
    let (p1, p2) = (
        position(&first).expect("first listed"),
        position(&second).expect("second listed"),
    );
    assert!(p1 < p2, "registration order: {nodes:?}");
    assert!(
        nodes[p1].order < nodes[p2].order,
        "order must grow: {nodes:?}"
    );
    h1.deregister().await.expect("deregister");
    assert!(
        !listed(&*observer, &first).await,
        "deregistered node still listed"
    );
    assert!(listed(&*observer, &second).await);
    // Dropping the last handle deregisters in the background.
    drop(h2);
    wait_listed(&*observer, &second, false, target.call_bound()).await;
}

/// A backend whose listing depends on membership keeps the form gate's candidates apart
/// ([`Backend::candidates`]): a candidate is listed there and not among the members, a
/// member not among the candidates, and both go when deregistered. Skipped for a
/// backend that keeps none (its listing may be membership-free already,
/// [`Backend::lists_contact_points`]).
pub async fn candidates_apart(target: &dyn ConformanceTarget) {
    let backend = target.backend().await;
    if !backend.supports_registration() {
        return skip("registration");
    }
    let Some(candidates) = backend.candidates() else {
        // Without either, the form gate needs `required_contact_points` 1 (it says so).
        return skip("candidates");
    };
    let (member, candidate) = (unique_node(), unique_node());
    let m = backend
        .register(Registration::new(member.clone(), target.ttl()))
        .await
        .expect("register a member");
    let c = candidates
        .register(Registration::new(candidate.clone(), target.ttl()))
        .await
        .expect("register a candidate");
    let observer = target.backend().await;
    assert!(listed(&*observer, &member).await);
    assert!(
        !listed(&*observer, &candidate).await,
        "a candidate among the members"
    );
    let observed = observer
        .candidates()
        .expect("the same backend keeps candidates");
    assert!(listed(&*observed, &candidate).await);
    assert!(
        !listed(&*observed, &member).await,
        "a member among the candidates"
    );
    c.deregister().await.expect("deregister the candidate");
    m.deregister().await.expect("deregister the member");
    assert!(!listed(&*observed, &candidate).await);
    assert!(!listed(&*observer, &member).await);
}

/// A registration outlives several TTLs while its handle lives, and reports refreshes.
pub async fn registration_outlives_ttls(target: &dyn ConformanceTarget) {
    let backend = target.backend().await;
    if !backend.supports_registration() {
        return skip("registration");
    }
    let node = unique_node();
    let ttl = target.ttl();
    let handle = backend
        .register(Registration::new(node.clone(), ttl))
        .await
        .expect("register");
    let mut events = handle.subscribe();
    let start = Instant::now();
    while start.elapsed() < ttl * 3 + ttl / 2 {
        assert!(
            listed(&*backend, &node).await,
            "lost after {:?} (TTL {ttl:?})",
            start.elapsed()
        );
        tokio::time::sleep(ttl / 4).await;
    }
    let mut refreshed = 0;
    while let Ok(event) = events.try_recv() {
        match event {
            RegistrationEvent::Refreshed => refreshed += 1,
            RegistrationEvent::RefreshFailed { error, .. } => panic!("refresh failed: {error}"),
            RegistrationEvent::Lost => panic!("registration lost while refreshed"),
            _ => {}
        }
    }
    assert!(
        refreshed >= 6,
        "expected a refresh every TTL/3, saw {refreshed} in 3.5 TTLs"
    );
    handle.deregister().await.expect("deregister");
}

/// A registrant whose keep-alive stops (a crashed process) disappears within the
/// backend's stated bound, and not before it is abandoned.
pub async fn abandoned_registration_expires(target: &dyn ConformanceTarget) {
    let backend = target.backend().await;
    if !backend.supports_registration() {
        return skip("registration");
    }
    let node = unique_node();
    let ttl = target.ttl();
    let handle = backend
        .register(Registration::new(node.clone(), ttl))
        .await
        .expect("register");
    tokio::time::sleep(ttl / 2).await;
    handle.abandon();
    assert!(
        listed(&*backend, &node).await,
        "abandon must not deregister"
    );
    let bound = target.expiry_bound(ttl);
    let took = wait_listed(&*backend, &node, false, bound + Duration::from_millis(200)).await;
    eprintln!(
        "conformance: abandoned registration gone after {took:?} (TTL {ttl:?}, bound {bound:?})"
    );
}

/// The lock under 20 concurrent contenders, each its own client: never two holders at
/// once (checked by the contenders themselves), everyone served, fencing tokens growing.
pub async fn lock_mutual_exclusion(target: &dyn ConformanceTarget) {
    const CONTENDERS: usize = 20;
    if !target.backend().await.supports_lock() {
        return skip("lock");
    }
    let holders = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ttl = target.ttl();
    let mut tasks = Vec::new();
    for i in 0..CONTENDERS {
        let backend = target.backend().await;
        let (holders, max_seen, tokens) = (holders.clone(), max_seen.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            let request = LockRequest::new(format!("contender-{i}"), ttl, Duration::from_secs(60));
            let guard = backend
                .lock(request)
                .await
                .unwrap_or_else(|e| panic!("contender {i}: {e}"));
            let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
            max_seen.fetch_max(now, Ordering::SeqCst);
            tokens.lock().unwrap().push(guard.fencing_token());
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(
                guard.is_held(),
                "contender {i} lost the lock while holding it"
            );
            holders.fetch_sub(1, Ordering::SeqCst);
            guard
                .release()
                .await
                .unwrap_or_else(|e| panic!("contender {i} release: {e}"));
        }));
    }
    for task in tasks {
        bounded("a contender", Duration::from_secs(90), task)
            .await
            .expect("contender panicked");
    }
    assert_eq!(max_seen.load(Ordering::SeqCst), 1, "two holders at once");
    let tokens = tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), CONTENDERS, "everyone served");
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens must grow: {tokens:?}"
    );
    let distinct: BTreeSet<u64> = tokens.iter().copied().collect();
    assert_eq!(distinct.len(), CONTENDERS);
    if let Some(free) = target.lock_free_on_server().await {
        assert!(
            free,
            "the server still sees a holder or waiter after every release"
        );
    }
}

/// A holder that stops refreshing (crashed) frees the lock within the stated bound, as
/// the server itself sees it, and the next contender gets it.
pub async fn dead_holder_frees_lock(target: &dyn ConformanceTarget) {
    let a = target.backend().await;
    if !a.supports_lock() {
        return skip("lock");
    }
    let ttl = target.ttl();
    let guard = a
        .lock(LockRequest::new("doomed", ttl, Duration::from_secs(5)))
        .await
        .expect("lock");
    let token = guard.fencing_token();
    if let Some(free) = target.lock_free_on_server().await {
        assert!(!free, "the server must see the holder");
    }
    guard.abandon();
    let bound = target.lock_free_bound(ttl);
    let start = Instant::now();
    if target.lock_free_on_server().await.is_some() {
        loop {
            if target.lock_free_on_server().await == Some(true) {
                break;
            }
            assert!(
                start.elapsed() < bound + Duration::from_millis(300),
                "the lock is still held on the server {:?} after its holder died (bound {bound:?})",
                start.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "conformance: dead holder's lock free on the server after {:?} (bound {bound:?})",
            start.elapsed()
        );
    }
    let b = target.backend().await;
    let next = b
        .lock(LockRequest::new(
            "next",
            ttl,
            bound + Duration::from_secs(2),
        ))
        .await
        .expect("the next contender gets the lock");
    assert!(
        start.elapsed() <= bound + target.call_bound(),
        "lock free only after {:?} (bound {bound:?})",
        start.elapsed()
    );
    assert!(next.fencing_token() > token);
    next.release().await.expect("release");
}

/// A lock removed server-side is reported: `lost()` resolves, `release()` says LockLost.
pub async fn stolen_lock_is_reported(target: &dyn ConformanceTarget) {
    let backend = target.backend().await;
    if !backend.supports_lock() {
        return skip("lock");
    }
    let ttl = target.ttl();
    let guard = backend
        .lock(LockRequest::new("victim", ttl, Duration::from_secs(5)))
        .await
        .expect("lock");
    if !target.break_lock().await {
        guard.release().await.expect("release");
        return skip("break_lock");
    }
    bounded(
        "lost() after theft",
        ttl + target.call_bound(),
        guard.lost(),
    )
    .await;
    assert!(!guard.is_held());
    let result = guard.release().await;
    assert!(
        matches!(result, Err(BackendError::LockLost { .. })),
        "release of a stolen lock: {result:?}"
    );
}

/// A holder that stalls past its lease loses the lock to the next contender, and its
/// `release()` reports it.
pub async fn expired_lock_is_reported(target: &dyn ConformanceTarget) {
    let a = target.backend().await;
    if !a.supports_lock() {
        return skip("lock");
    }
    let ttl = target.ttl();
    let stalled = a
        .lock(LockRequest::new("stalled", ttl, Duration::from_secs(5)))
        .await
        .expect("lock");
    stalled.pause_refresh();
    let bound = target.lock_free_bound(ttl);
    let b = target.backend().await;
    let winner = b
        .lock(LockRequest::new("winner", ttl, bound + target.call_bound()))
        .await
        .expect("the lock of a stalled holder expires");
    assert!(winner.fencing_token() > stalled.fencing_token());
    stalled.resume_refresh();
    bounded(
        "lost() after expiry",
        ttl + target.call_bound(),
        stalled.lost(),
    )
    .await;
    let result = stalled.release().await;
    assert!(
        matches!(result, Err(BackendError::LockLost { .. })),
        "release of an expired lock: {result:?}"
    );
    assert!(
        winner.is_held(),
        "the stalled holder's release must not free the winner's lock"
    );
    winner.release().await.expect("release");
}

/// The wait timeout is honoured, and a timed-out waiter leaves no trace in the queue.
pub async fn lock_wait_timeout(target: &dyn ConformanceTarget) {
    let a = target.backend().await;
    if !a.supports_lock() {
        return skip("lock");
    }
    let ttl = target.ttl();
    let holder = a
        .lock(LockRequest::new("holder", ttl * 4, Duration::from_secs(5)))
        .await
        .expect("lock");
    let b = target.backend().await;
    let wait = Duration::from_millis(800);
    let start = Instant::now();
    let result = b.lock(LockRequest::new("impatient", ttl, wait)).await;
    let took = start.elapsed();
    assert!(
        matches!(result, Err(BackendError::LockTimeout { .. })),
        "expected LockTimeout, got {:?}",
        result.map(|g| g.fencing_token())
    );
    assert!(took >= wait, "gave up early, after {took:?}");
    assert!(
        took <= wait + target.call_bound(),
        "gave up late, after {took:?}"
    );
    holder.release().await.expect("release");
    // The timed-out waiter must not block the next one.
    let c = target.backend().await;
    let next = c
        .lock(LockRequest::new("next", ttl, Duration::from_secs(3)))
        .await
        .expect("the lock is free after the holder released and the waiter gave up");
    next.release().await.expect("release");
}

/// The server stopped: typed errors in bounded time (never an empty list, never a hang),
/// and everything works again once it is back, the registration included.
pub async fn outage(target: &dyn ConformanceTarget) {
    let backend = target.backend().await;
    let node = unique_node();
    let handle = if backend.supports_registration() {
        Some(
            backend
                .register(Registration::new(node.clone(), target.ttl()))
                .await
                .expect("register"),
        )
    } else {
        None
    };
    if !target.stop_server().await {
        return skip("stop_server");
    }
    let bound = target.call_bound();
    let result = bounded("list_nodes during an outage", bound, backend.list_nodes()).await;
    match result {
        Ok(nodes) => panic!("list_nodes during an outage must fail, got {nodes:?}"),
        Err(e) => assert!(e.is_transient(), "an outage is transient: {e:?}"),
    }
    let fresh = target.backend().await;
    let result = bounded(
        "list_nodes from a new client during an outage",
        bound,
        fresh.list_nodes(),
    )
    .await;
    assert!(result.is_err(), "new client during an outage: {result:?}");
    if backend.supports_registration() {
        let result = bounded(
            "register during an outage",
            bound * 2,
            backend.register(Registration::new(unique_node(), target.ttl())),
        )
        .await;
        assert!(result.is_err(), "register during an outage must fail");
    }
    if backend.supports_lock() {
        let wait = Duration::from_millis(500);
        let result = bounded(
            "lock during an outage",
            wait + bound * 2,
            backend.lock(LockRequest::new("outage", target.ttl(), wait)),
        )
        .await;
        assert!(result.is_err(), "lock during an outage must fail");
    }
    assert!(target.start_server().await);
    let start = Instant::now();
    loop {
        if backend.list_nodes().await.is_ok() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "backend still failing 15 s after the server came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(handle) = handle {
        assert!(handle.is_active());
        wait_listed(
            &*backend,
            &node,
            true,
            target.expiry_bound(target.ttl()) + Duration::from_secs(5),
        )
        .await;
        handle
            .deregister()
            .await
            .expect("deregister after the outage");
    }
}

/// Garbage where registrations live is an error, never a silently shorter list.
pub async fn garbage_entry_is_an_error(target: &dyn ConformanceTarget) {
    let backend = target.backend().await;
    if !target.write_garbage().await {
        return skip("write_garbage");
    }
    let result = bounded(
        "list_nodes over garbage",
        target.call_bound(),
        backend.list_nodes(),
    )
    .await;
    assert!(
        matches!(result, Err(BackendError::InvalidResponse { .. })),
        "expected InvalidResponse, got {result:?}"
    );
}

/// A server that accepts and never answers: every call ends within the bound with a
/// typed, transient error.
pub async fn hung_server(target: &dyn ConformanceTarget) {
    let Some(backend) = target.hung_backend().await else {
        return skip("hung_backend");
    };
    let bound = target.call_bound();
    let result = bounded(
        "list_nodes against a hung server",
        bound,
        backend.list_nodes(),
    )
    .await;
    match result {
        Err(e @ (BackendError::Timeout { .. } | BackendError::Unavailable { .. })) => {
            assert!(e.is_transient())
        }
        other => panic!("expected Timeout or Unavailable, got {other:?}"),
    }
    if backend.supports_registration() {
        let result = bounded(
            "register against a hung server",
            bound * 2,
            backend.register(Registration::new(unique_node(), target.ttl())),
        )
        .await;
        assert!(matches!(
            result,
            Err(BackendError::Timeout { .. } | BackendError::Unavailable { .. })
        ));
    }
    if backend.supports_lock() {
        let result = bounded(
            "lock against a hung server",
            bound * 2,
            backend.lock(LockRequest::new(
                "hung",
                target.ttl(),
                Duration::from_secs(30),
            )),
        )
        .await;
        assert!(result.is_err());
    }
}

/// Servers answering garbage: typed errors in bounded time, never a panic, never a list.
pub async fn garbage_server(target: &dyn ConformanceTarget) {
    let backends = target.garbage_backends().await;
    if backends.is_empty() {
        return skip("garbage_backends");
    }
    for backend in backends {
        let result = bounded(
            "list_nodes against a garbage server",
            target.call_bound(),
            backend.list_nodes(),
        )
        .await;
        assert!(
            result.is_err(),
            "a garbage server must give an error, got {result:?}"
        );
        eprintln!("conformance: garbage server: {}", result.unwrap_err());
    }
}

/// One check of the suite, as [`run`] calls it.
type CheckFn =
    for<'a> fn(&'a dyn ConformanceTarget) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Every check, by name, in the order [`run`] runs them.
const CHECKS: &[(&str, CheckFn)] = &[
    ("capabilities", |t| Box::pin(capabilities(t))),
    ("register_list_deregister", |t| {
        Box::pin(register_list_deregister(t))
    }),
    ("candidates_apart", |t| Box::pin(candidates_apart(t))),
    ("registration_outlives_ttls", |t| {
        Box::pin(registration_outlives_ttls(t))
    }),
    ("abandoned_registration_expires", |t| {
        Box::pin(abandoned_registration_expires(t))
    }),
    ("lock_mutual_exclusion", |t| {
        Box::pin(lock_mutual_exclusion(t))
    }),
    ("dead_holder_frees_lock", |t| {
        Box::pin(dead_holder_frees_lock(t))
    }),
    ("stolen_lock_is_reported", |t| {
        Box::pin(stolen_lock_is_reported(t))
    }),
    ("expired_lock_is_reported", |t| {
        Box::pin(expired_lock_is_reported(t))
    }),
    ("lock_wait_timeout", |t| Box::pin(lock_wait_timeout(t))),
    ("outage", |t| Box::pin(outage(t))),
    ("garbage_entry_is_an_error", |t| {
        Box::pin(garbage_entry_is_an_error(t))
    }),
    ("hung_server", |t| Box::pin(hung_server(t))),
    ("garbage_server", |t| Box::pin(garbage_server(t))),
];

/// The names of the checks, in the order [`run`] runs them (each is also a public
/// function of this module).
pub fn check_names() -> impl Iterator<Item = &'static str> {
    CHECKS.iter().map(|(name, _)| *name)
}

/// Runs every check, one after the other, each against a fresh target from `make` and in
/// its own task (so a failed check does not stop the others). Prints one line per check
/// on stderr, then panics, if any check failed, with each failed check's name and
/// message. Must be called inside a tokio runtime; the checks spawn tasks and sleep.
pub async fn run<T, F, Fut>(mut make: F)
where
    T: ConformanceTarget + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let mut failures = Vec::new();
    for (name, check) in CHECKS {
        let target = make().await;
        let start = Instant::now();
        let outcome = tokio::spawn(async move { check(&target).await }).await;
        let took = start.elapsed();
        match outcome {
            Ok(()) => eprintln!("conformance: {name}: ok ({took:.1?})"),
            Err(error) => {
                let message = if error.is_panic() {
                    panic_message(error.into_panic())
                } else {
                    error.to_string()
                };
                eprintln!("conformance: {name}: FAILED ({took:.1?}): {message}");
                failures.push(format!("{name}: {message}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} conformance checks failed:\n  {}",
        failures.len(),
        CHECKS.len(),
        failures.join("\n  ")
    );
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(message) => (*message).to_owned(),
            Err(_) => "panicked with a non-string payload".to_owned(),
        },
    }
}
