//! The node's stop signal and the count of its tasks, so that stopping the node can
//! wait until every task it started has ended.
//!
//! The node's tasks (the accept loop, incoming handshakes, connections with their
//! graceful closes, the notices of an ended mailbox) each hold a [`Tracked`] while they
//! run. They reach the node only through a weak reference, so the count lives apart
//! from it, in [`Tasks`], which they share. A task dropped by its runtime (shut down)
//! leaves the count as one that ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The stop signal and the live-task count of one node.
#[derive(Default)]
pub(crate) struct Tasks {
    live: AtomicUsize,
    /// Woken when the count falls to zero.
    ended: Notify,
    stopped: AtomicBool,
    /// Woken when the node stops.
    stop: Notify,
}

impl Tasks {
    /// Counts one more task until the returned guard is dropped.
    pub(crate) fn track(self: &Arc<Self>) -> Tracked {
        self.live.fetch_add(1, Ordering::SeqCst);
        Tracked(self.clone())
    }

    /// Counts one more task, unless the node has stopped (`None`): a task that starts
    /// after `Node::shutdown` has seen the count fall to zero would outlive it.
    pub(crate) fn track_running(self: &Arc<Self>) -> Option<Tracked> {
        // Counted before the stop flag is read, and `stop` sets the flag before the
        // count is awaited: either this sees the node stopped, or the stop sees this.
        let tracked = self.track();
        (!self.is_stopped()).then_some(tracked)
    }

    /// How many tasks are running.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Resolves once no task is running.
    pub(crate) async fn all_ended(&self) {
        loop {
            let ended = self.ended.notified();
            if self.live() == 0 {
                return;
            }
            ended.await;
        }
    }

    /// Marks the node stopped; `false` when it was already.
    pub(crate) fn stop(&self) -> bool {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.stop.notify_waiters();
        true
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Resolves once the node is stopped.
    pub(crate) async fn stopped(&self) {
        loop {
            let stop = self.stop.notified();
            if self.is_stopped() {
                return;
            }
            stop.await;
        }
    }
}

/// One running task of the node (see [`Tasks::track`]).
pub(crate) struct Tracked(Arc<Tasks>);

impl Tracked {
    /// The node's tasks, this one among them.
    pub(crate) fn tasks(&self) -> &Arc<Tasks> {
        &self.0
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.ended.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn all_ended_waits_for_the_last_task_and_counts_dropped_ones() {
        let tasks = Arc::new(Tasks::default());
        let rt = crate::test_support::runtime(true);
        rt.block_on(tasks.all_ended());
        let quick = tasks.track();
        let slow = tasks.track();
        let other = crate::test_support::runtime(true);
        other.spawn(async move {
            let _slow = slow;
            std::future::pending::<()>().await
        });
        rt.block_on(async {
            drop(quick);
            assert_eq!(tasks.live(), 1);
            let waited = tokio::time::timeout(Duration::from_secs(1), tasks.all_ended()).await;
            assert!(waited.is_err(), "one task still runs");
        });
        // A task that its runtime drops ends with it.
        drop(other);
        let waited = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), tasks.all_ended()).await
        });
        assert!(waited.is_ok());
        assert_eq!(tasks.live(), 0);
    }

    #[tokio::test]
    async fn stopped_resolves_once_and_stays_resolved() {
        let tasks = Arc::new(Tasks::default());
        let t = tasks.clone();
        let waiter = tokio::spawn(async move { t.stopped().await });
        tokio::task::yield_now().await;
        assert!(tasks.stop());
        assert!(!tasks.stop());
        waiter.await.unwrap();
        tasks.stopped().await;
    }
}
