//! Splits: registered live nodes in clusters that do not overlap, and which side moves.
//!
//! Pure functions that the agent's watch calls with what it read (the managed node's
//! [`Membership`] and the probes of the registered nodes outside its running members).
//!
//! A split the lock cannot prevent: a node forms a cluster and registers, its broker
//! dies before anybody joins it, and the nodes that boot meanwhile prove it down and form
//! a cluster without it; back with its data, it is a cluster of one beside theirs. The
//! rule that mends it moves as little as possible:
//!
//! * the cluster that stays is the largest, and among equals the one holding the
//!   alphabetically first node, so every node that sees the same groups agrees;
//! * only a cluster of one moves (a node that records no other member): a cluster of
//!   several is reported, never taken apart;
//! * the node that moves joins the first node of the cluster that stays, under the
//!   startup lock, after reading the facts again, and only when it holds nothing
//!   ([`DataState::Empty`](super::DataState::Empty)), whatever
//!   [`FormationConfig::allow_reset`](super::FormationConfig::allow_reset) says: a node
//!   holding data is reported, for an operator to decide.
//!
//! ```
//! use autocluster::formation::split::{Verdict, verdict};
//! use autocluster::formation::Membership;
//! use autocluster::NodeName;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (a, b, c): (NodeName, NodeName, NodeName) = ("rabbit@a".parse()?, "rabbit@b".parse()?, "rabbit@c".parse()?);
//! // `a` came back alone beside `b` and `c`, who formed without it.
//! let alone = Membership::running(vec![a.clone()]);
//! let groups = vec![vec![a.clone()], vec![b.clone(), c.clone()]];
//! assert_eq!(verdict(&a, &alone, &groups), Verdict::Rejoin { seed: b.clone() });
//! // `b`'s cluster stays.
//! let two = Membership::running(vec![b.clone(), c.clone()]);
//! let groups = vec![vec![b.clone(), c], vec![a]];
//! assert_eq!(verdict(&b, &two, &groups), Verdict::Stay);
//! # Ok(()) }
//! ```

use crate::NodeName;

use super::target::{Membership, Probe};

/// What the watch found among the registered nodes outside the managed node's running
/// members.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Survey {
    /// Members of the managed node's cluster that it does not see running: reconnect
    /// them.
    pub ours: Vec<NodeName>,
    /// The clusters of the live registered nodes, each sorted, the managed node's first;
    /// more than one is a split.
    pub groups: Vec<Vec<NodeName>>,
}

/// Sorts the registered nodes outside `me`'s running members into `me`'s own (to
/// reconnect) and other clusters. `probes` holds each such node once, with its probe
/// when it is live (`None`: not live, or not answering).
///
/// A node is `me`'s when `me` records it as a member, or when it runs with one of
/// `me`'s running members (an Erlang mesh forgets a lost node, RabbitMQ does not).
pub fn survey(
    me: &NodeName,
    membership: &Membership,
    probes: &[(NodeName, Option<Probe>)],
) -> Survey {
    let mut mine = membership.running_members.clone();
    if !mine.contains(me) {
        mine.push(me.clone());
    }
    mine.sort();
    mine.dedup();
    let mut survey = Survey {
        ours: Vec::new(),
        groups: vec![mine.clone()],
    };
    for (node, probe) in probes {
        if mine.contains(node) {
            continue;
        }
        let ours = membership.members.contains(node)
            || probe.as_ref().is_some_and(|p| {
                p.membership
                    .running_members
                    .iter()
                    .any(|m| m != node && mine.contains(m))
            });
        if ours {
            survey.ours.push(node.clone());
            continue;
        }
        if let Some(p) = probe
            && !survey.groups.iter().any(|g| g.contains(node))
        {
            let mut group = p.membership.running_members.clone();
            if !group.contains(node) {
                group.push(node.clone());
            }
            group.sort();
            group.dedup();
            survey.groups.push(group);
        }
    }
    survey
}

/// What the managed node does about the groups a [`Survey`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// One cluster: nothing to do.
    United,
    /// A split where the managed node's cluster stays (the largest, or the first among
    /// equals), or one of several members that never moves by itself: report it.
    Stay,
    /// A split where the managed node is a cluster of one beside the cluster that stays:
    /// it joins `seed`, that cluster's first node, if it holds nothing.
    Rejoin {
        /// The first node of the cluster that stays.
        seed: NodeName,
    },
}

/// Decides which side of a split moves; `groups[0]` is the managed node's cluster (as
/// [`survey`] returns them). See the [module documentation](self).
pub fn verdict(me: &NodeName, membership: &Membership, groups: &[Vec<NodeName>]) -> Verdict {
    if groups.len() < 2 {
        return Verdict::United;
    }
    // The largest cluster stays; among equals, the one with the first node.
    let Some(stays) = groups
        .iter()
        .filter(|g| !g.is_empty())
        .max_by(|a, b| a.len().cmp(&b.len()).then_with(|| b[0].cmp(&a[0])))
    else {
        return Verdict::United;
    };
    if stays.contains(me) {
        return Verdict::Stay;
    }
    let alone = membership.members.iter().all(|n| n == me)
        && membership.running_members.iter().all(|n| n == me);
    if membership.running && alone {
        Verdict::Rejoin {
            seed: stays[0].clone(),
        }
    } else {
        Verdict::Stay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeName {
        s.parse().unwrap()
    }

    fn names(list: &[&str]) -> Vec<NodeName> {
        list.iter().map(|s| n(s)).collect()
    }

    fn live(node: &str, running: &[&str]) -> (NodeName, Option<Probe>) {
        (
            n(node),
            Some(Probe::live(n(node), Membership::running(names(running)))),
        )
    }

    #[test]
    fn the_largest_cluster_stays_and_a_cluster_of_one_beside_it_joins_its_first_node() {
        let alone = Membership::running(names(&["r@a"]));
        let groups = vec![names(&["r@a"]), names(&["r@b", "r@c"])];
        assert_eq!(
            verdict(&n("r@a"), &alone, &groups),
            Verdict::Rejoin { seed: n("r@b") }
        );
        let pair = Membership::running(names(&["r@b", "r@c"]));
        let groups = vec![names(&["r@b", "r@c"]), names(&["r@a"])];
        assert_eq!(verdict(&n("r@b"), &pair, &groups), Verdict::Stay);
    }

    #[test]
    fn among_equal_clusters_the_one_with_the_first_node_stays() {
        let b = Membership::running(names(&["r@b"]));
        let groups = vec![names(&["r@b"]), names(&["r@a"])];
        assert_eq!(
            verdict(&n("r@b"), &b, &groups),
            Verdict::Rejoin { seed: n("r@a") }
        );
        let a = Membership::running(names(&["r@a"]));
        let groups = vec![names(&["r@a"]), names(&["r@b"])];
        assert_eq!(verdict(&n("r@a"), &a, &groups), Verdict::Stay);
    }

    #[test]
    fn a_cluster_of_several_never_moves_by_itself() {
        let pair = Membership::running(names(&["r@c", "r@d"]));
        let groups = vec![names(&["r@c", "r@d"]), names(&["r@a", "r@b", "r@e"])];
        assert_eq!(verdict(&n("r@c"), &pair, &groups), Verdict::Stay);
        // A node that records members it does not see running is not alone either.
        let lost = Membership {
            members: names(&["r@c", "r@d"]),
            running_members: names(&["r@c"]),
            ..Membership::running(vec![])
        };
        let groups = vec![names(&["r@c"]), names(&["r@a", "r@b"])];
        assert_eq!(verdict(&n("r@c"), &lost, &groups), Verdict::Stay);
        // Nor is a stopped node.
        let stopped = Membership {
            running: false,
            ..Membership::running(names(&["r@c"]))
        };
        assert_eq!(verdict(&n("r@c"), &stopped, &groups), Verdict::Stay);
    }

    #[test]
    fn one_cluster_is_united() {
        let me = Membership::running(names(&["r@a", "r@b"]));
        assert_eq!(
            verdict(&n("r@a"), &me, &[names(&["r@a", "r@b"])]),
            Verdict::United
        );
    }

    #[test]
    fn a_survey_reconnects_members_and_groups_other_clusters() {
        // `a` records `b` (cut off): ours; `e` runs with `a`'s running member `f`: ours
        // (a mesh that forgot `e`); `c` and `d` run together: another cluster.
        let me = Membership {
            members: names(&["r@a", "r@b", "r@f"]),
            running_members: names(&["r@a", "r@f"]),
            ..Membership::running(vec![])
        };
        let probes = vec![
            (n("r@b"), None),
            live("r@c", &["r@c", "r@d"]),
            live("r@d", &["r@c", "r@d"]),
            live("r@e", &["r@e", "r@f"]),
            (n("r@f"), None),
            (n("r@g"), None),
        ];
        let s = survey(&n("r@a"), &me, &probes);
        assert_eq!(s.ours, names(&["r@b", "r@e"]));
        assert_eq!(
            s.groups,
            vec![names(&["r@a", "r@f"]), names(&["r@c", "r@d"])]
        );
        assert_eq!(verdict(&n("r@a"), &me, &s.groups), Verdict::Stay);
    }

    #[test]
    fn a_dead_or_silent_registered_node_is_no_cluster() {
        let alone = Membership::running(names(&["r@b"]));
        let s = survey(&n("r@b"), &alone, &[(n("r@a"), None)]);
        assert_eq!(s.groups, vec![names(&["r@b"])]);
        assert_eq!(verdict(&n("r@b"), &alone, &s.groups), Verdict::United);
    }
}
