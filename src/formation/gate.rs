//! When a node may form a new cluster: the gate in front of every
//! [`Step::Form`](super::Step::Form), as Pekko's Cluster Bootstrap has it.
//!
//! Under the startup lock, the plan decides to form only when no registered node is live.
//! That is not enough when the registry is young or was lost: a node that boots a few
//! seconds before its peers, or beside a cluster whose registrations expired, would
//! form a cluster of its own. [`FormGate`] adds four conditions, each a setting:
//!
//! * (a) probing every contact point found no existing cluster (a contact point running
//!   with other members);
//! * (b) at least [`required_contact_points`](FormGate::required_contact_points)
//!   answered (live or booting), the node itself included;
//! * (c) the set of contact points has not changed for
//!   [`stable_margin`](FormGate::stable_margin), counted from the agent's start;
//! * (d) [`new_cluster_enabled`](FormGate::new_cluster_enabled): operators switch it off
//!   once the cluster exists, and a node then only ever joins.
//!
//! Contact points come from a listing that does not depend on membership: a backend
//! that [lists its nodes whatever their membership](crate::backend::Backend::lists_contact_points)
//! (static list, DNS, Kubernetes) as it is; with etcd, Consul or the memory backend,
//! every agent first registers as a [candidate](crate::backend::Backend::candidates),
//! under keys RabbitMQ's own discovery does not read.
//!
//! [`check`] is the pure decision; the agent gathers a [`ContactView`] and calls it. A
//! refusal is [`FormationError::FormRefused`](super::FormationError::FormRefused),
//! retried like any other transient failure.
//!
//! ```
//! use std::time::Duration;
//! use autocluster::formation::FormGate;
//! use autocluster::formation::gate::{check, ContactView};
//!
//! let gate = FormGate::safe();
//! let view = ContactView {
//!     answered: vec!["rabbit@a".parse().unwrap()],
//!     clustered: None,
//!     stable_for: Duration::from_secs(10),
//! };
//! // Only the node itself answered: two are required.
//! assert!(check(&gate, &view).unwrap_err().contains("1 of 2"));
//! ```

use std::time::Duration;

use crate::NodeName;

/// When a node may form a new cluster. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormGate {
    /// (d) Whether a node may form a new cluster at all (default true). Off, a node that
    /// finds no cluster to join waits (retries) and never forms one.
    pub new_cluster_enabled: bool,
    /// (b) Contact points that must have answered, the node itself included (default 1:
    /// the node alone suffices).
    pub required_contact_points: usize,
    /// (c) How long the contact points must have stayed the same, counted from the
    /// agent's start (default zero).
    pub stable_margin: Duration,
}

impl Default for FormGate {
    /// No condition beyond the plan's: the library's default, for embedders that form
    /// nodes one by one.
    fn default() -> Self {
        FormGate {
            new_cluster_enabled: true,
            required_contact_points: 1,
            stable_margin: Duration::ZERO,
        }
    }
}

impl FormGate {
    /// The `autocluster agent`'s defaults: two contact points, stable for 5 s, forming
    /// enabled.
    pub fn safe() -> FormGate {
        FormGate {
            new_cluster_enabled: true,
            required_contact_points: 2,
            stable_margin: Duration::from_secs(5),
        }
    }

    /// Whether contact points are needed at all (more than the node itself, or a
    /// stable margin).
    pub fn needs_contact_points(&self) -> bool {
        self.required_contact_points > 1 || !self.stable_margin.is_zero()
    }
}

/// What the agent found among the contact points, right before forming.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContactView {
    /// The contact points that answered (live or booting), the node itself included.
    pub answered: Vec<NodeName>,
    /// A contact point running in a cluster with others, and that cluster's size.
    pub clustered: Option<(NodeName, usize)>,
    /// How long the set of contact points has stayed the same (at most the agent's age).
    pub stable_for: Duration,
}

/// Whether the gate lets the node form; the refusal says why, for
/// [`FormationError::FormRefused`](super::FormationError::FormRefused).
pub fn check(gate: &FormGate, view: &ContactView) -> Result<(), String> {
    if !gate.new_cluster_enabled {
        return Err(
            "forming a new cluster is switched off (new_cluster_enabled = false): \
                    waiting for a cluster to join"
                .into(),
        );
    }
    if let Some((node, size)) = &view.clustered {
        return Err(format!(
            "contact point {node} runs in a cluster of {size}: not forming another beside it \
             (it is joined once it is registered)"
        ));
    }
    if view.answered.len() < gate.required_contact_points {
        return Err(format!(
            "{} of {} required contact points answered ({}): waiting for more",
            view.answered.len(),
            gate.required_contact_points,
            view.answered
                .iter()
                .map(NodeName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if view.stable_for < gate.stable_margin {
        return Err(format!(
            "the contact points changed {} ms ago: waiting until they are stable for {} ms",
            view.stable_for.as_millis(),
            gate.stable_margin.as_millis()
        ));
    }
    Ok(())
}

/// The set of contact points over time: when it last changed.
#[derive(Debug, Clone)]
pub(crate) struct History {
    started: std::time::Instant,
    last: Option<(Vec<NodeName>, std::time::Instant)>,
}

impl History {
    pub(crate) fn new(started: std::time::Instant) -> History {
        History {
            started,
            last: None,
        }
    }

    /// Records the contact points seen at `now`; how long they have been the same
    /// (counted from the agent's start at most).
    pub(crate) fn observe(&mut self, mut seen: Vec<NodeName>, now: std::time::Instant) -> Duration {
        seen.sort();
        seen.dedup();
        match &self.last {
            Some((last, since)) if *last == seen => now.saturating_duration_since(*since),
            _ => {
                let since = if self.last.is_none() {
                    self.started
                } else {
                    now
                };
                self.last = Some((seen, since));
                now.saturating_duration_since(since)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn n(s: &str) -> NodeName {
        s.parse().unwrap()
    }

    fn view(answered: &[&str], stable: u64) -> ContactView {
        ContactView {
            answered: answered.iter().map(|s| n(s)).collect(),
            clustered: None,
            stable_for: Duration::from_secs(stable),
        }
    }

    #[test]
    fn each_condition_refuses_on_its_own() {
        let gate = FormGate::safe();
        assert_eq!(check(&gate, &view(&["r@a", "r@b"], 5)), Ok(()));
        // (b)
        assert!(
            check(&gate, &view(&["r@a"], 60))
                .unwrap_err()
                .contains("1 of 2")
        );
        // (c)
        assert!(
            check(&gate, &view(&["r@a", "r@b"], 4))
                .unwrap_err()
                .contains("stable")
        );
        // (a)
        let clustered = ContactView {
            clustered: Some((n("r@c"), 2)),
            ..view(&["r@a", "r@b", "r@c"], 60)
        };
        assert!(
            check(&gate, &clustered)
                .unwrap_err()
                .contains("cluster of 2")
        );
        // (d)
        let off = FormGate {
            new_cluster_enabled: false,
            ..FormGate::safe()
        };
        assert!(
            check(&off, &view(&["r@a", "r@b"], 60))
                .unwrap_err()
                .contains("switched off")
        );
    }

    #[test]
    fn the_default_gate_lets_a_lone_node_form_at_once() {
        let gate = FormGate::default();
        assert!(!gate.needs_contact_points());
        assert_eq!(check(&gate, &view(&["r@a"], 0)), Ok(()));
        assert!(FormGate::safe().needs_contact_points());
    }

    #[test]
    fn stability_counts_from_the_agent_start_and_restarts_on_a_change() {
        let t0 = Instant::now();
        let mut h = History::new(t0);
        let s = Duration::from_secs;
        assert_eq!(h.observe(vec![n("r@a"), n("r@b")], t0 + s(3)), s(3));
        assert_eq!(h.observe(vec![n("r@b"), n("r@a")], t0 + s(6)), s(6));
        assert_eq!(h.observe(vec![n("r@a")], t0 + s(7)), s(0));
        assert_eq!(h.observe(vec![n("r@a")], t0 + s(9)), s(2));
    }
}
