//! One clock for all the graceful closes of a node.
//!
//! A connection this node closes lingers until the peer has closed its side too, for at
//! most [`LINGER`] (see `connection::close_gracefully`). A timer per closing connection
//! would be simple, but every new timer that falls due before the runtime's next planned
//! wake-up makes the runtime wake its timer thread (a system call and a thread hand-off),
//! and a node that connects and disconnects in a loop would pay that on every
//! connection. Instead, one clock task ticks every [`TICK`] while any close is in
//! progress (or began during the last tick), and each close gives up after
//! [`TICKS`] ticks. The clock task exists only while there are closes to bound: it is
//! started by the first one and ends after a tick with none.
//!
//! A clock task can be lost: dropped by a runtime that is shutting down (tokio drops a
//! task spawned on such a runtime at once, before its first poll) while the node lives
//! on. Every close in progress then gives up its wait (the peer is not waited for, the
//! socket is closed all the same) instead of starting another clock: a close polled on
//! a runtime that is going away must end in that poll, not spawn clock after clock.
//! A close that begins later starts a new clock.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::tasks::{Tasks, Tracked};

/// The longest a close waits for the peer. It waits between `LINGER - TICK` and
/// `LINGER` (500–750 ms), depending on where in a tick it began.
pub(crate) const LINGER: Duration = Duration::from_millis(750);

/// How many ticks a close waits for the peer, counted from the tick it started in.
pub(crate) const TICKS: u64 = 3;

/// How often the clock ticks while closes are in progress.
pub(crate) const TICK: Duration = Duration::from_millis(LINGER.as_millis() as u64 / TICKS);

/// The shared clock of a node's graceful closes.
#[derive(Default)]
pub(crate) struct Linger {
    /// Ticks so far.
    epoch: AtomicU64,
    /// Woken on every tick.
    tick: Notify,
    /// Closes in progress.
    active: AtomicUsize,
    /// Whether a close began since the last tick.
    began: AtomicBool,
    /// Whether the clock task is running.
    running: AtomicBool,
    /// How many clock tasks were lost (dropped before they stopped by themselves).
    lost: AtomicU64,
    /// Set when the node stops: the clock then ends as soon as no close is left,
    /// instead of after one more tick.
    stopping: AtomicBool,
    /// Woken, once stopping, when the last close ends.
    quiet: Notify,
    /// The node's tasks, which count the clock task among them.
    tasks: Option<Arc<Tasks>>,
}

impl Linger {
    /// A clock whose task counts among `tasks`.
    pub(crate) fn counted_in(tasks: Arc<Tasks>) -> Linger {
        Linger {
            tasks: Some(tasks),
            ..Linger::default()
        }
    }

    /// The node stops: from now on the clock task ends as soon as no close is left.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.quiet.notify_one();
    }

    /// Runs `close` until it finishes or its time is up (`None`). Also `None` at once
    /// when the clock is lost while it waits (see the module's documentation).
    pub(crate) async fn bound<F: Future>(self: &Arc<Self>, close: F) -> Option<F::Output> {
        self.active.fetch_add(1, Ordering::SeqCst);
        let _done = Active(self);
        self.began.store(true, Ordering::SeqCst);
        let start = self.epoch.load(Ordering::SeqCst);
        let lost = self.lost.load(Ordering::SeqCst);
        let mut close = std::pin::pin!(close);
        loop {
            let ticked = self.tick.notified();
            // Started by the first close, and by the first close after the clock
            // stopped or was lost.
            if !self.running.swap(true, Ordering::SeqCst) {
                let running = Running {
                    linger: self.clone(),
                    stopped: false,
                    _tracked: self.tasks.as_ref().map(|t| t.track()),
                };
                tokio::spawn(clock(running));
            }
            let expired = self.epoch.load(Ordering::SeqCst).wrapping_sub(start) >= TICKS;
            if expired || self.lost.load(Ordering::SeqCst) != lost {
                return None;
            }
            tokio::select! {
                biased;
                out = &mut close => return Some(out),
                () = ticked => {}
            }
        }
    }

    /// Whether the clock should stop now (after a tick, or woken once stopping with no
    /// close left); clears `running` when it does. After a tick, a close that began
    /// during it keeps the clock for one more.
    fn idle(&self, ticked: bool) -> bool {
        if self.active.load(Ordering::SeqCst) > 0
            || (ticked && self.began.swap(false, Ordering::SeqCst))
        {
            return false;
        }
        self.running.store(false, Ordering::SeqCst);
        // A close that began just now saw `running` still set and started no clock:
        // keep this one going for it.
        if self.active.load(Ordering::SeqCst) > 0 && !self.running.swap(true, Ordering::SeqCst) {
            return false;
        }
        true
    }
}

/// Counts a close in progress until dropped.
struct Active<'a>(&'a Linger);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1
            && self.0.stopping.load(Ordering::SeqCst)
        {
            self.0.quiet.notify_one();
        }
    }
}

async fn clock(mut running: Running) {
    let linger = &running.linger;
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stop = tokio::select! {
            _ = interval.tick() => {
                linger.epoch.fetch_add(1, Ordering::SeqCst);
                linger.tick.notify_waiters();
                linger.idle(true)
            }
            () = linger.quiet.notified() => {
                linger.stopping.load(Ordering::SeqCst) && linger.idle(false)
            }
        };
        if stop {
            running.stopped = true;
            return;
        }
    }
}

/// Owned by the clock task's future from its spawn (before its first poll). If the task
/// is dropped before it stops by itself (its runtime shut down, or is shutting down,
/// while the node lives on), the closes waiting for its ticks are woken and give up
/// instead of waiting for ticks that never come; the next close starts a new clock.
struct Running {
    linger: Arc<Linger>,
    stopped: bool,
    _tracked: Option<Tracked>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.stopped {
            self.linger.lost.fetch_add(1, Ordering::SeqCst);
            self.linger.running.store(false, Ordering::SeqCst);
            self.linger.tick.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::runtime;

    #[tokio::test(start_paused = true)]
    async fn a_close_that_finishes_returns_its_output() {
        let linger = Arc::new(Linger::default());
        assert_eq!(linger.bound(async { 7 }).await, Some(7));
        assert_eq!(linger.active.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_close_that_never_finishes_gives_up_within_the_linger_time() {
        let linger = Arc::new(Linger::default());
        let started = tokio::time::Instant::now();
        let out = linger.bound(std::future::pending::<()>()).await;
        let waited = started.elapsed();
        assert_eq!(out, None);
        assert!(waited >= LINGER - TICK, "gave up after {waited:?}");
        assert!(waited <= LINGER, "gave up after {waited:?}");
        assert_eq!(linger.active.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_stops_once_no_close_is_left_and_starts_again_for_the_next() {
        let linger = Arc::new(Linger::default());
        assert_eq!(linger.bound(std::future::pending::<()>()).await, None);
        // One tick with no close in progress, then the clock task ends.
        tokio::time::sleep(TICK * 3).await;
        assert!(!linger.running.load(Ordering::SeqCst));
        let epoch = linger.epoch.load(Ordering::SeqCst);
        tokio::time::sleep(TICK * 4).await;
        assert_eq!(
            linger.epoch.load(Ordering::SeqCst),
            epoch,
            "an idle clock ticked"
        );
        // The next close starts it again, and is bounded as the first was.
        let started = tokio::time::Instant::now();
        assert_eq!(linger.bound(std::future::pending::<()>()).await, None);
        assert!(started.elapsed() <= LINGER);
    }

    #[test]
    fn a_clock_lost_with_its_runtime_is_started_again_by_the_next_close() {
        let linger = Arc::new(Linger::default());
        let first = runtime(true);
        // A close in progress when the runtime goes: its clock task is dropped mid-tick.
        let l = linger.clone();
        first.spawn(async move { l.bound(std::future::pending::<()>()).await });
        first.block_on(async { tokio::time::sleep(TICK / 2).await });
        drop(first);
        assert!(!linger.running.load(Ordering::SeqCst));
        let second = runtime(true);
        let out = second.block_on(linger.bound(std::future::pending::<()>()));
        assert_eq!(out, None);
    }

    #[tokio::test(start_paused = true)]
    async fn many_closes_share_one_clock() {
        let linger = Arc::new(Linger::default());
        let closes: Vec<_> = (0..50)
            .map(|i| {
                let linger = linger.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(10 * i)).await;
                    let started = tokio::time::Instant::now();
                    let out = linger.bound(std::future::pending::<()>()).await;
                    (out, started.elapsed())
                })
            })
            .collect();
        for c in closes {
            let (out, waited) = c.await.unwrap();
            assert_eq!(out, None);
            assert!(waited <= LINGER && waited >= LINGER - TICK, "{waited:?}");
        }
        // 50 closes over half a second: the clock ticked about as often as one close
        // needs, not once per close.
        let epoch = linger.epoch.load(Ordering::SeqCst);
        assert!(epoch <= 6, "{epoch} ticks");
    }

    #[test]
    fn a_clock_dropped_before_it_ever_ran_is_started_again() {
        let linger = Arc::new(Linger::default());
        let first = runtime(true);
        // One poll of a close spawns the clock; the runtime goes before running it.
        first.block_on(async {
            let close = linger.bound(std::future::pending::<()>());
            assert!(tokio::time::timeout(Duration::ZERO, close).await.is_err());
        });
        drop(first);
        assert!(!linger.running.load(Ordering::SeqCst));
        let out = runtime(true).block_on(async {
            let close = linger.bound(std::future::pending::<()>());
            tokio::time::timeout(Duration::from_secs(60), close).await
        });
        assert_eq!(out, Ok(None));
    }

    #[tokio::test(start_paused = true)]
    async fn once_stopping_the_clock_task_ends_with_the_last_close() {
        let tasks = Arc::new(Tasks::default());
        let linger = Arc::new(Linger::counted_in(tasks.clone()));
        // A close that ends at once still started the clock, which counts as a task.
        assert_eq!(linger.bound(async { 7 }).await, Some(7));
        assert_eq!(tasks.live(), 1);
        // Stopping with no close left ends it without waiting for a tick.
        linger.stop();
        let ended = tokio::time::timeout(TICK / 10, tasks.all_ended()).await;
        assert!(ended.is_ok(), "the clock outlived the stop");
        // A close in progress when the node stops: the clock ends when it does.
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let l = linger.clone();
        let close = tokio::spawn(async move { l.bound(finished).await });
        tokio::task::yield_now().await;
        assert_eq!(tasks.live(), 1);
        finish.send(()).unwrap();
        assert!(close.await.unwrap().is_some());
        let ended = tokio::time::timeout(TICK / 10, tasks.all_ended()).await;
        assert!(ended.is_ok(), "the clock outlived the last close");
    }

    fn multi_thread_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Runs `f` on a thread of its own and waits at most `limit` for it; `None` when it
    /// did not finish by then (the thread is left to run).
    fn within<T: Send + 'static>(
        limit: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(f());
        });
        finished.recv_timeout(limit).ok()
    }

    #[test]
    fn one_poll_of_a_close_on_a_dropped_multi_thread_runtime_returns() {
        let rt = multi_thread_runtime();
        let handle = rt.handle().clone();
        drop(rt);
        let linger = Arc::new(Linger::default());
        let polled = within(Duration::from_secs(1), move || {
            let _entered = handle.enter();
            let close = linger.bound(std::future::pending::<()>());
            let mut close = std::pin::pin!(close);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            close.as_mut().poll(&mut cx).is_ready()
        });
        let ready =
            polled.expect("one poll of a close on a dropped runtime did not return within 1 s");
        assert!(ready, "a close whose clock cannot run gives up");
    }

    #[test]
    fn dropping_a_multi_thread_runtime_with_lingering_closes_always_finishes() {
        for round in 0..1_000 {
            let linger = Arc::new(Linger::default());
            let rt = multi_thread_runtime();
            for _ in 0..100 {
                let linger = linger.clone();
                rt.spawn(async move { linger.bound(std::future::pending::<()>()).await });
            }
            // The closes start, the clock with them.
            rt.block_on(tokio::task::yield_now());
            let dropped = within(LINGER + Duration::from_secs(1), move || drop(rt));
            assert!(
                dropped.is_some(),
                "round {round}: dropping the runtime did not finish within {:?}",
                LINGER + Duration::from_secs(1)
            );
        }
    }

    #[test]
    fn a_close_waiting_on_a_clock_that_is_lost_gives_up() {
        let linger = Arc::new(Linger::default());
        // The clock runs on the first runtime, which then stops being driven.
        let first = runtime(false);
        first.block_on(async {
            let close = linger.bound(std::future::pending::<()>());
            assert!(
                tokio::time::timeout(Duration::from_millis(10), close)
                    .await
                    .is_err()
            );
        });
        // A close on another runtime waits for that clock's ticks...
        let l = linger.clone();
        let other = std::thread::spawn(move || {
            runtime(false).block_on(async {
                let started = tokio::time::Instant::now();
                let close = l.bound(std::future::pending::<()>());
                let out = tokio::time::timeout(Duration::from_secs(10), close).await;
                (out, started.elapsed())
            })
        });
        // ...and the clock goes with its runtime before that close is bounded.
        std::thread::sleep(Duration::from_millis(50));
        drop(first);
        let (out, waited) = other.join().unwrap();
        assert_eq!(out, Ok(None));
        assert!(waited <= LINGER + Duration::from_millis(500), "{waited:?}");
    }
}
