//! Cleanup of dead members: the pure decision, round by round.
//!
//! A member is forgotten only when **all** of these hold:
//!
//! * it has been unreachable (not among the running members) for
//!   [`CleanupConfig::unreachable_rounds`] consecutive rounds;
//! * the backend's listing **succeeded** this round and does not list it (a backend error
//!   is never read as "nobody is registered": during an outage nothing is forgotten);
//! * it has been missing from every successful listing for at least
//!   [`CleanupConfig::unlisted_for`] (by default the node TTL), with no failed listing in
//!   between: a live member whose registration lapsed while the backend was unreachable
//!   registers again within its TTL once the backend is back, and must not be forgotten
//!   in the first round after the outage;
//! * it is not the local node;
//! * at most [`CleanupConfig::max_share`] of the cluster is forgotten in one round.
//!
//! Cleanup is off by default, and warn-only by default when on: it then only reports
//! what it would forget.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
    /// How long a member must have been missing from every successful listing, with no
    /// failed listing in between, before it may be forgotten. `None` (default): the
    /// agent uses the node TTL, within which every live member registers again after an
    /// outage; [`CleanupState::round`] reads `None` as zero.
    pub unlisted_for: Option<Duration>,
}

impl Default for CleanupConfig {
    fn default() -> Self {
        CleanupConfig {
            enabled: false,
            warn_only: true,
            interval: Duration::from_secs(60),
            unreachable_rounds: 3,
            max_share: 0.34,
            unlisted_for: None,
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
    /// Since when each member has been missing from the successful listings.
    unlisted_since: BTreeMap<NodeName, Instant>,
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

    /// One round at `now`: `membership` is the local node's view, `listing` the
    /// backend's answer this round.
    pub fn round(
        &mut self,
        local: &NodeName,
        membership: &Membership,
        listing: Result<&[RegisteredNode], String>,
        cfg: &CleanupConfig,
        now: Instant,
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
        let listed = match listing {
            Ok(listed) => listed,
            Err(e) => {
                // After an outage, absence from the registry is measured afresh.
                self.unlisted_since.clear();
                return Err(CleanupSkip::BackendError(e));
            }
        };
        self.unlisted_since
            .retain(|n, _| membership.members.contains(n));
        for member in &membership.members {
            if listed.iter().any(|r| &r.node == member) {
                self.unlisted_since.remove(member);
            } else {
                self.unlisted_since.entry(member.clone()).or_insert(now);
            }
        }
        let grace = cfg.unlisted_for.unwrap_or(Duration::ZERO);
        let mut candidates: Vec<NodeName> = self
            .unreachable
            .iter()
            .filter(|(n, rounds)| {
                *n != local
                    && **rounds >= cfg.unreachable_rounds.max(1)
                    && !listed.iter().any(|r| &r.node == *n)
                    && self
                        .unlisted_since
                        .get(*n)
                        .is_some_and(|since| now.saturating_duration_since(*since) >= grace)
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
        self.unlisted_since.remove(node);
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
            booting: false,
        }
    }

    fn listed(nodes: &[&str]) -> Vec<RegisteredNode> {
        nodes
            .iter()
            .enumerate()
            .map(|(i, s)| RegisteredNode::new(n(s), i as u64))
            .collect()
    }

    fn now() -> Instant {
        Instant::now()
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
            assert_eq!(st.round(&me, &m, Ok(&reg), &active(), now()), Ok(vec![]));
        }
        assert_eq!(
            st.round(&me, &m, Ok(&reg), &active(), now()),
            Ok(vec![CleanupAction::Forget(n("r@c"))])
        );
        // Still registered (its TTL has not run out): never forgotten.
        let reg_with_c = listed(&["r@a", "r@b", "r@c"]);
        assert_eq!(
            st.round(&me, &m, Ok(&reg_with_c), &active(), now()),
            Ok(vec![])
        );
    }

    #[test]
    fn a_backend_error_forgets_nothing() {
        let me = n("r@a");
        let m = membership(&["r@a", "r@b", "r@c"], &["r@a"]);
        let mut st = CleanupState::new();
        for _ in 0..10 {
            let r = st.round(&me, &m, Err("etcd unavailable".into()), &active(), now());
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
        st.round(&me, &down, Ok(&reg), &active(), now()).unwrap();
        st.round(&me, &down, Ok(&reg), &active(), now()).unwrap();
        st.round(&me, &up, Ok(&reg), &active(), now()).unwrap();
        assert_eq!(st.unreachable_rounds(&n("r@b")), 0);
        assert_eq!(st.round(&me, &down, Ok(&reg), &active(), now()), Ok(vec![]));
    }

    #[test]
    fn never_self_and_never_more_than_the_share() {
        let me = n("r@a");
        let m = membership(&["r@a", "r@b", "r@c", "r@d", "r@e", "r@f"], &[]);
        let mut st = CleanupState::new();
        let reg = listed(&[]);
        for _ in 0..2 {
            st.round(&me, &m, Ok(&reg), &active(), now()).unwrap();
        }
        let actions = st.round(&me, &m, Ok(&reg), &active(), now()).unwrap();
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
            st.round(&me, &m, Ok(&listed(&["r@a"])), &cfg, now()),
            Ok(vec![CleanupAction::WouldForget(n("r@b"))])
        );
    }

    #[test]
    fn a_member_whose_registration_lapsed_during_an_outage_gets_a_ttl_to_register_again() {
        // Regression (found by the etcd-down-cleanup trials): r@b is alive but cut off
        // from r@a while the backend is down for longer than the node TTL, so its
        // registration lapses. The rounds during the outage count it unreachable; the
        // first successful listing after the outage does not list it yet. It must not be
        // forgotten before it has had a node TTL to register again.
        let me = n("r@a");
        let ttl = Duration::from_secs(3);
        let cfg = CleanupConfig {
            unlisted_for: Some(ttl),
            ..active()
        };
        let m = membership(&["r@a", "r@b"], &["r@a"]);
        let mut st = CleanupState::new();
        let t0 = Instant::now();
        assert_eq!(
            st.round(&me, &m, Ok(&listed(&["r@a", "r@b"])), &cfg, t0),
            Ok(vec![])
        );
        for i in 1..=5 {
            let r = st.round(&me, &m, Err("down".into()), &cfg, t0 + ttl * i);
            assert!(r.is_err());
        }
        // Back: r@b not listed yet, unreachable for 6 rounds, missing for a long time, but
        // the absence counts only from the first successful listing.
        let back = t0 + ttl * 6;
        let only_a = listed(&["r@a"]);
        assert_eq!(st.round(&me, &m, Ok(&only_a), &cfg, back), Ok(vec![]));
        assert_eq!(
            st.round(&me, &m, Ok(&only_a), &cfg, back + ttl / 2),
            Ok(vec![])
        );
        // It registered again: never forgotten.
        let both = listed(&["r@a", "r@b"]);
        assert_eq!(st.round(&me, &m, Ok(&both), &cfg, back + ttl), Ok(vec![]));
        // A member that stays unlisted for the whole grace is forgotten.
        let mut st = CleanupState::new();
        st.round(&me, &m, Ok(&only_a), &cfg, t0).unwrap();
        st.round(&me, &m, Ok(&only_a), &cfg, t0 + ttl / 2).unwrap();
        assert_eq!(
            st.round(&me, &m, Ok(&only_a), &cfg, t0 + ttl),
            Ok(vec![CleanupAction::Forget(n("r@b"))])
        );
    }
}
