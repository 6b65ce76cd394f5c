use super::*;
use crate::test_support::runtime;
use std::net::Ipv4Addr;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn limits(pending: usize, per_source: usize) -> ListenerLimits {
    ListenerLimits {
        max_connections: 3,
        max_per_source: 2,
        max_pending: pending,
        max_pending_per_source: per_source,
        idle_timeout: Duration::from_secs(5),
    }
}

fn admit(t: &mut ConnectionTable, src: IpAddr, now: Instant) -> (ConnId, Vec<Eviction>) {
    match t.admit(src, now) {
        Decision::Admit { id, evicted, .. } => (id, evicted),
        Decision::Refuse(r) => panic!("refused: {r}"),
    }
}

#[test]
fn per_source_limit_evicts_the_oldest_of_that_source_only() {
    let now = Instant::now();
    let mut t = ConnectionTable::new(limits(10, 2));
    let (other, _) = admit(&mut t, ip(9), now);
    let (a, _) = admit(&mut t, ip(1), now);
    let (b, ev) = admit(&mut t, ip(1), now);
    assert!(ev.is_empty());
    let (c, ev) = admit(&mut t, ip(1), now);
    assert_eq!(
        ev,
        vec![Eviction {
            id: a,
            reason: CloseReason::PendingPerSourceLimit
        }]
    );
    assert!(t.contains(other) && t.contains(b) && t.contains(c) && !t.contains(a));
    assert_eq!(t.pending_from(ip(1)), 2);
    assert_eq!(t.pending(), 3);
}

#[test]
fn connections_that_made_progress_are_evicted_last() {
    let now = Instant::now();
    let mut t = ConnectionTable::new(limits(10, 3));
    let (a, _) = admit(&mut t, ip(1), now);
    let (b, _) = admit(&mut t, ip(1), now);
    let (c, _) = admit(&mut t, ip(1), now);
    assert!(t.mark_progress(a));
    // The source is full: the oldest idle one goes, not the older one in progress.
    let (_, ev) = admit(&mut t, ip(1), now);
    assert_eq!(ev.iter().map(|e| e.id).collect::<Vec<_>>(), vec![b]);
    let (_, ev) = admit(&mut t, ip(1), now);
    assert_eq!(ev.iter().map(|e| e.id).collect::<Vec<_>>(), vec![c]);
    // Once every pending connection has made progress, the oldest goes again.
    let pending: Vec<ConnId> = t.pending.iter().copied().collect();
    for id in &pending {
        t.mark_progress(*id);
    }
    let (_, ev) = admit(&mut t, ip(1), now);
    assert_eq!(ev.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a]);
    // The same order applies to the total limit.
    let mut t = ConnectionTable::new(limits(3, 10));
    let (a, _) = admit(&mut t, ip(1), now);
    let (b, _) = admit(&mut t, ip(2), now);
    let (_, _) = admit(&mut t, ip(3), now);
    t.mark_progress(a);
    let (_, ev) = admit(&mut t, ip(4), now);
    assert_eq!(ev.iter().map(|e| e.id).collect::<Vec<_>>(), vec![b]);
    assert!(t.contains(a));
    // Progress is only for pending connections, and leaves no trace once released.
    t.promote(a).unwrap();
    assert!(!t.mark_progress(a));
    assert!(!t.mark_progress(ConnId(999)));
    let all: Vec<ConnId> = t.conns.keys().copied().collect();
    for id in all {
        t.release(id);
    }
    assert!(t.idle.is_empty() && t.sources.is_empty(), "{t:?}");
}

#[test]
fn total_limit_evicts_the_globally_oldest() {
    let now = Instant::now();
    let mut t = ConnectionTable::new(limits(3, 3));
    let (a, _) = admit(&mut t, ip(1), now);
    let (_b, _) = admit(&mut t, ip(2), now);
    let (_c, _) = admit(&mut t, ip(3), now);
    let (_d, ev) = admit(&mut t, ip(4), now);
    assert_eq!(
        ev,
        vec![Eviction {
            id: a,
            reason: CloseReason::PendingLimit
        }]
    );
    assert_eq!(t.pending(), 3);
    assert_eq!(t.pending_from(ip(1)), 0);
}

#[test]
fn a_flood_never_locks_out_a_newcomer() {
    let now = Instant::now();
    let mut t = ConnectionTable::new(limits(100, 10));
    for i in 0..5000u32 {
        let src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i % 50)));
        admit(&mut t, src, now);
        assert!(t.pending() <= 100);
    }
    let (good, _) = admit(&mut t, ip(200), now);
    t.promote(good).unwrap();
    assert!(t.is_established(good));
    assert_eq!(t.pending(), 99);
}

#[test]
fn expired_connections_go_first_and_in_order() {
    let now = Instant::now();
    let mut t = ConnectionTable::new(limits(10, 10));
    let (a, _) = admit(&mut t, ip(1), now);
    let (b, _) = admit(&mut t, ip(2), now + Duration::from_secs(1));
    assert_eq!(t.next_deadline(), Some(now + Duration::from_secs(5)));
    assert!(t.expire(now + Duration::from_secs(4)).is_empty());
    let (_c, ev) = admit(&mut t, ip(3), now + Duration::from_secs(5));
    assert_eq!(
        ev,
        vec![Eviction {
            id: a,
            reason: CloseReason::TimedOut
        }]
    );
    assert_eq!(t.expire(now + Duration::from_secs(6)), vec![b]);
    assert_eq!(t.pending(), 1);
}

#[test]
fn established_connections_are_limited_and_never_evicted() {
    let now = Instant::now();
    let mut t = ConnectionTable::new(limits(2, 2));
    let (a, _) = admit(&mut t, ip(1), now);
    let (b, _) = admit(&mut t, ip(1), now);
    t.promote(a).unwrap();
    t.promote(b).unwrap();
    t.promote(b).unwrap(); // idempotent
    let (c, _) = admit(&mut t, ip(1), now);
    assert_eq!(
        t.promote(c),
        Err(PromoteError::TooManyFromSource { limit: 2 })
    );
    let (d, _) = admit(&mut t, ip(2), now);
    t.promote(d).unwrap();
    let (e, _) = admit(&mut t, ip(3), now);
    assert_eq!(
        t.promote(e),
        Err(PromoteError::TooManyConnections { limit: 3 })
    );
    // A flood of pending connections and a long wait leave them alone.
    for _ in 0..10 {
        admit(&mut t, ip(1), now + Duration::from_secs(60));
    }
    assert!(t.is_established(a) && t.is_established(b) && t.is_established(d));
    assert_eq!(t.established_from(ip(1)), 2);
    assert!(t.release(a));
    assert!(!t.release(a));
    assert_eq!(t.established(), 2);
    assert_eq!(t.promote(a), Err(PromoteError::Unknown));
}

#[test]
fn zero_pending_limit_refuses() {
    let mut t = ConnectionTable::new(limits(0, 1));
    assert_eq!(
        t.admit(ip(1), Instant::now()),
        Decision::Refuse(Refusal::NoPendingSlots)
    );
}

#[test]
fn sources_are_canonical_and_ipv6_grouped_by_prefix() {
    let now = Instant::now();
    let mut t = ConnectionTable::new(limits(10, 2));
    let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
    admit(&mut t, mapped, now);
    assert_eq!(t.pending_from(ip(1)), 1);
    let a: IpAddr = "2001:db8::1".parse().unwrap();
    let b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
    admit(&mut t, a, now);
    admit(&mut t, b, now);
    let (_, ev) = admit(&mut t, "2001:db8::3".parse().unwrap(), now);
    assert_eq!(ev.len(), 1);
    assert_eq!(t.pending_from(a), 2);
    assert_eq!(t.pending_from("2001:db9::1".parse().unwrap()), 0);
}

#[test]
fn released_sources_leave_no_trace() {
    let now = Instant::now();
    let mut t = ConnectionTable::new(limits(10, 10));
    let ids: Vec<_> = (0..50).map(|i| admit(&mut t, ip(i), now).0).collect();
    for id in ids {
        t.release(id);
    }
    assert!(t.sources.is_empty() && t.conns.is_empty() && t.pending.is_empty());
}

#[tokio::test(start_paused = true)]
async fn permits_signal_eviction_and_timeout() {
    let limiter = ConnectionLimiter::new(limits(10, 1));
    let mut first = limiter.admit(ip(1)).unwrap();
    let mut second = limiter.admit(ip(1)).unwrap();
    assert_eq!(first.closed().await, CloseReason::PendingPerSourceLimit);
    assert_eq!(first.closed().await, CloseReason::PendingPerSourceLimit);
    assert_eq!(first.promote(), Err(PromoteError::Unknown));
    let start = tokio::time::Instant::now();
    assert_eq!(second.closed().await, CloseReason::TimedOut);
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    drop(second);
    let stats = limiter.stats();
    assert_eq!((stats.pending, stats.evicted, stats.timed_out), (0, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn promoted_permits_are_not_closed_by_time() {
    let limiter = ConnectionLimiter::new(limits(10, 10));
    let mut p = limiter.admit(ip(1)).unwrap();
    p.promote().unwrap();
    assert!(p.is_established());
    let waited = tokio::time::timeout(Duration::from_secs(3600), p.closed()).await;
    assert!(waited.is_err());
    assert_eq!(limiter.stats().established, 1);
    drop(p);
    assert_eq!(limiter.stats().established, 0);
}

#[tokio::test(start_paused = true)]
async fn permits_admitted_over_time_each_time_out_at_their_own_deadline() {
    let limiter = ConnectionLimiter::new(limits(100, 100));
    let waits: Vec<_> = (0..20u64)
        .map(|i| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300 * i)).await;
                let mut permit = limiter.admit(ip(1)).unwrap();
                let admitted = tokio::time::Instant::now();
                let reason = permit.closed().await;
                (reason, admitted.elapsed())
            })
        })
        .collect();
    for wait in waits {
        let (reason, waited) = wait.await.unwrap();
        assert_eq!(reason, CloseReason::TimedOut);
        assert_eq!(waited, Duration::from_secs(5));
    }
    let stats = limiter.stats();
    assert_eq!((stats.pending, stats.timed_out), (0, 20));
    // Nothing pending: the sweeper ends once it sees that.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!limiter.lock().sweeping);
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_leaves_finished_connections_alone_and_stops_when_idle() {
    let limiter = ConnectionLimiter::new(limits(100, 100));
    let mut early = limiter.admit(ip(1)).unwrap();
    // Awaited once, so the sweeper runs; then the connection finishes in time.
    let waited = tokio::time::timeout(Duration::from_secs(1), early.closed()).await;
    assert!(waited.is_err());
    assert!(limiter.lock().sweeping);
    drop(early);
    let mut late = limiter.admit(ip(1)).unwrap();
    late.promote().unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let stats = limiter.stats();
    assert_eq!((stats.established, stats.timed_out), (1, 0));
    assert!(!limiter.lock().sweeping);
    let waited = tokio::time::timeout(Duration::from_secs(60), late.closed()).await;
    assert!(waited.is_err(), "an established connection never times out");
}

#[test]
fn a_sweeper_lost_with_its_runtime_is_started_again_by_the_next_permit() {
    let limiter = ConnectionLimiter::new(limits(10, 10));
    let first = runtime(true);
    let mut lost = limiter.admit(ip(1)).unwrap();
    first.block_on(async {
        let waited = tokio::time::timeout(Duration::from_secs(1), lost.closed()).await;
        assert!(waited.is_err());
    });
    assert!(limiter.lock().sweeping);
    // The runtime goes with the sweeper in it; the limiter and its permits live on.
    drop(first);
    assert!(!limiter.lock().sweeping);
    let second = runtime(true);
    let mut next = limiter.admit(ip(2)).unwrap();
    let both = second.block_on(async {
        let both = async { tokio::join!(lost.closed(), next.closed()) };
        tokio::time::timeout(Duration::from_secs(60), both).await
    });
    assert_eq!(both, Ok((CloseReason::TimedOut, CloseReason::TimedOut)));
}

#[test]
fn a_sweeper_dropped_before_it_ever_ran_is_started_again() {
    let limiter = ConnectionLimiter::new(limits(10, 10));
    let first = runtime(true);
    let mut permit = limiter.admit(ip(1)).unwrap();
    // One poll of `closed` spawns the sweeper; the runtime goes before running it.
    first.block_on(async {
        let waited = tokio::time::timeout(Duration::ZERO, permit.closed()).await;
        assert!(waited.is_err());
    });
    drop(first);
    assert!(!limiter.lock().sweeping);
    let second = runtime(true);
    let reason = second
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), permit.closed()).await });
    assert_eq!(reason, Ok(CloseReason::TimedOut));
}

#[test]
fn one_poll_of_closed_on_a_dropped_multi_thread_runtime_returns() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    drop(rt);
    let limiter = ConnectionLimiter::new(limits(10, 10));
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _entered = handle.enter();
        let mut permit = limiter.admit(ip(1)).unwrap();
        let closed = permit.closed();
        let mut closed = std::pin::pin!(closed);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = done.send(closed.as_mut().poll(&mut cx).is_pending());
    });
    let pending = finished
        .recv_timeout(Duration::from_secs(1))
        .expect("one poll of `closed` on a dropped runtime did not return within 1 s");
    assert!(pending, "the deadline is not up");
}

#[test]
fn a_permit_waiting_on_a_sweeper_that_is_lost_starts_another() {
    let limiter = ConnectionLimiter::new(ListenerLimits {
        idle_timeout: Duration::from_millis(300),
        ..limits(10, 10)
    });
    // The sweeper runs on the first runtime, which then stops being driven.
    let first = runtime(false);
    let mut early = limiter.admit(ip(1)).unwrap();
    first.block_on(async {
        let waited = tokio::time::timeout(Duration::from_millis(10), early.closed()).await;
        assert!(waited.is_err());
    });
    assert!(limiter.lock().sweeping);
    // A permit on another runtime waits on that sweeper...
    let mut waiting = limiter.admit(ip(2)).unwrap();
    let other = std::thread::spawn(move || {
        runtime(false).block_on(async {
            let started = tokio::time::Instant::now();
            let reason = tokio::time::timeout(Duration::from_secs(10), waiting.closed()).await;
            (reason, started.elapsed())
        })
    });
    // ...which goes with its runtime before that permit's deadline.
    std::thread::sleep(Duration::from_millis(50));
    drop(first);
    let (reason, waited) = other.join().unwrap();
    assert_eq!(reason, Ok(CloseReason::TimedOut));
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    drop(early);
}

#[tokio::test(start_paused = true)]
async fn a_promotion_after_the_deadline_fails_and_counts_as_a_timeout_only() {
    let limiter = ConnectionLimiter::new(limits(10, 10));
    let mut waiter = limiter.admit(ip(1)).unwrap();
    let mut late = limiter.admit(ip(2)).unwrap();
    // The sweeper (started by the first permit) times both out at their deadline,
    // before the second one's holder has looked.
    assert_eq!(waiter.closed().await, CloseReason::TimedOut);
    assert_eq!(late.promote(), Err(PromoteError::Unknown));
    assert_eq!(late.closed().await, CloseReason::TimedOut);
    let stats = limiter.stats();
    assert_eq!((stats.timed_out, stats.refused), (2, 0));
}
