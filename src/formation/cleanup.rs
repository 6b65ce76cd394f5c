//! Cleanup of dead members: the pure decision, round by round.
//!
//! A member is forgotten only when **all** of these hold:
//!
//! * it has been unreachable (not among the running members) for
//!   [`CleanupConfig::unreachable_rounds`] consecutive rounds;
//! * the backend's listing **succeeded** this round and does not list it (a backend error
//!   is never read as "nobody is registered": during an outage nothing is forgotten);
//! * it is not the local node;
//! * at most [`CleanupConfig::max_share`] of the cluster is forgotten in one round.
//!
//! Cleanup is off by default, and warn-only by default when on: it then only reports
//! what it would forget.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::NodeName;
use crate::backend::RegisteredNode;

use super::target::Membership;

/// How dead members are cleaned up.
#[derive(Debug, Clone, PartialEq)]
pub struct CleanupConfig {
    /// Whether cleanup runs at all (default false).
    pub enabled: bool,
    /// Only log and report what would be forgotten (default true).
    pub warn_only: bool,
    /// Time between rounds (default 60 s).
    pub interval: Duration,
    /// Consecutive unreachable rounds before a member may be forgotten (default 3).
    pub unreachable_rounds: u32,
    /// The largest share of the cluster forgotten in one round (default 0.34: one node
    /// of three); at least one node when any qualifies.
    pub max_share: f64,
}

impl Default for CleanupConfig {
    fn default() -> Self {
        CleanupConfig {
            enabled: false,
            warn_only: true,
            interval: Duration::from_secs(60),
            unreachable_rounds: 3,
            max_share: 0.34,
        }
    }
}

/// What a round decided about one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanupAction {
    /// Forget this member now.
    Forget(NodeName),
    /// Would forget it, but cleanup is warn-only.
    WouldForget(NodeName),
    /// It qualifies but the per-round share is used up; next round.
    Deferred(NodeName),
}

/// Why a round took no action at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanupSkip {
    /// The backend listing failed: nothing is forgotten during an outage.
    BackendError(String),
}

/// Unreachability counts carried from round to round.
#[derive(Debug, Default, Clone)]
pub struct CleanupState {
    unreachable: BTreeMap<NodeName, u32>,
}

impl CleanupState {
    /// A fresh state.
    pub fn new() -> CleanupState {
        CleanupState::default()
    }

    /// How many consecutive rounds `node` has been unreachable.
    pub fn unreachable_rounds(&self, node: &NodeName) -> u32 {
        self.unreachable.get(node).copied().unwrap_or(0)
    }

    /// One round: `membership` is the local node's view, `listing` the backend's answer
    /// this round.
    pub fn round(
        &mut self,
        local: &NodeName,
        membership: &Membership,
        listing: Result<&[RegisteredNode], String>,
        cfg: &CleanupConfig,
    ) -> Result<Vec<CleanupAction>, CleanupSkip> {
        // Count unreachability whatever the backend says.
        self.unreachable
            .retain(|n, _| membership.members.contains(n));
        for member in &membership.members {
            if member == local || membership.lists_running(member) {
                self.unreachable.remove(member);
            } else {
                *self.unreachable.entry(member.clone()).or_insert(0) += 1;
            }
        }
        let listed = listing.map_err(CleanupSkip::BackendError)?;
        let mut candidates: Vec<NodeName> = self
            .unreachable
            .iter()
            .filter(|(n, rounds)| {
                *n != local
                    && **rounds >= cfg.unreachable_rounds.max(1)
                    && !listed.iter().any(|r| &r.node == *n)
            })
            .map(|(n, _)| n.clone())
            .collect();
        candidates.sort();
        let share =
            (membership.members.len() as f64 * cfg.max_share.clamp(0.0, 1.0)).floor() as usize;
        let budget = share.max(1);
        Ok(candidates
            .into_iter()
            .enumerate()
            .map(|(i, node)| {
                if i >= budget {
                    CleanupAction::Deferred(node)
                } else if cfg.warn_only {
                    CleanupAction::WouldForget(node)
                } else {
                    CleanupAction::Forget(node)
                }
            })
            .collect())
    }

    /// Forgets the count of a node that was removed.
    pub fn forgotten(&mut self, node: &NodeName) {
        self.unreachable.remove(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeName {
        s.parse().unwrap()
    }

    fn membership(members: &[&str], running: &[&str]) -> Membership {
        Membership {
            running: true,
            members: members.iter().map(|m| n(m)).collect(),
            running_members: running.iter().map(|m| n(m)).collect(),
            partitions: vec![],
        }
    }

    fn listed(nodes: &[&str]) -> Vec<RegisteredNode> {
        nodes
            .iter()
            .enumerate()
            .map(|(i, s)| RegisteredNode::new(n(s), i as u64))
            .collect()
    }

    fn active() -> CleanupConfig {
        CleanupConfig {
            enabled: true,
            warn_only: false,
            ..Default::default()
        }
    }

    #[test]
    fn forgets_only_after_n_rounds_and_only_when_not_listed() {
        let me = n("r@a");
        let m = membership(&["r@a", "r@b", "r@c"], &["r@a", "r@b"]);
        let mut st = CleanupState::new();
        let reg = listed(&["r@a", "r@b"]);
        for _ in 0..2 {
            assert_eq!(st.round(&me, &m, Ok(&reg), &active()), Ok(vec![]));
        }
        assert_eq!(
            st.round(&me, &m, Ok(&reg), &active()),
            Ok(vec![CleanupAction::Forget(n("r@c"))])
        );
        // Still registered (its TTL has not run out): never forgotten.
        let reg_with_c = listed(&["r@a", "r@b", "r@c"]);
        assert_eq!(st.round(&me, &m, Ok(&reg_with_c), &active()), Ok(vec![]));
    }

    #[test]
    fn a_backend_error_forgets_nothing() {
        let me = n("r@a");
        let m = membership(&["r@a", "r@b", "r@c"], &["r@a"]);
        let mut st = CleanupState::new();
        for _ in 0..10 {
            let r = st.round(&me, &m, Err("etcd unavailable".into()), &active());
            assert_eq!(r, Err(CleanupSkip::BackendError("etcd unavailable".into())));
        }
        assert_eq!(st.unreachable_rounds(&n("r@b")), 10);
    }

    #[test]
    fn a_member_that_comes_back_starts_counting_again() {
        let me = n("r@a");
        let mut st = CleanupState::new();
        let reg = listed(&["r@a"]);
        let down = membership(&["r@a", "r@b"], &["r@a"]);
        let up = membership(&["r@a", "r@b"], &["r@a", "r@b"]);
        st.round(&me, &down, Ok(&reg), &active()).unwrap();
        st.round(&me, &down, Ok(&reg), &active()).unwrap();
        st.round(&me, &up, Ok(&reg), &active()).unwrap();
        assert_eq!(st.unreachable_rounds(&n("r@b")), 0);
        assert_eq!(st.round(&me, &down, Ok(&reg), &active()), Ok(vec![]));
    }

    #[test]
    fn never_self_and_never_more_than_the_share() {
        let me = n("r@a");
        let m = membership(&["r@a", "r@b", "r@c", "r@d", "r@e", "r@f"], &[]);
        let mut st = CleanupState::new();
        let reg = listed(&[]);
        for _ in 0..2 {
            st.round(&me, &m, Ok(&reg), &active()).unwrap();
        }
        let actions = st.round(&me, &m, Ok(&reg), &active()).unwrap();
        assert_eq!(
            actions,
            vec![
                CleanupAction::Forget(n("r@b")),
                CleanupAction::Forget(n("r@c")),
                CleanupAction::Deferred(n("r@d")),
                CleanupAction::Deferred(n("r@e")),
                CleanupAction::Deferred(n("r@f")),
            ]
        );
    }

    #[test]
    fn warn_only_reports_instead_of_forgetting() {
        let me = n("r@a");
        let m = membership(&["r@a", "r@b"], &["r@a"]);
        let mut st = CleanupState::new();
        let cfg = CleanupConfig {
            enabled: true,
            unreachable_rounds: 1,
            ..Default::default()
        };
        assert_eq!(
            st.round(&me, &m, Ok(&listed(&["r@a"])), &cfg),
            Ok(vec![CleanupAction::WouldForget(n("r@b"))])
        );
    }
}
