//! Choosing the seed: pure functions every agent applies to the same registry, so that
//! every agent that sees the same registry picks the same node.

use std::cmp::Reverse;

use crate::NodeName;
use crate::backend::RegisteredNode;

use super::target::Probe;

/// How the seed is chosen among the live registered nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeedOrder {
    /// The alphabetically first live node (byte order of the full node name, as Erlang
    /// orders atoms). Probing walks the registry in that order and stops at the first
    /// live node, so it costs one probe when the first node is up.
    #[default]
    Alphabetical,
    /// RabbitMQ 3.13's order: the node of the largest existing cluster, then the longest
    /// running, then the alphabetically first. Every live node is probed.
    LargestCluster,
}

/// The registered nodes other than `local`, each once, alphabetically: the order in
/// which they are probed.
pub fn probe_order(registered: &[RegisteredNode], local: &NodeName) -> Vec<NodeName> {
    let mut names: Vec<NodeName> = registered
        .iter()
        .map(|r| r.node.clone())
        .filter(|n| n != local)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The seed among probe results, by `order`; `None` when no node is live.
pub fn choose(probes: &[Probe], order: SeedOrder) -> Option<NodeName> {
    let live = probes.iter().filter(|p| p.live);
    match order {
        SeedOrder::Alphabetical => live.map(|p| &p.node).min().cloned(),
        SeedOrder::LargestCluster => live
            .max_by_key(|p| {
                (
                    p.cluster_size(),
                    Reverse(p.started_at_ms.unwrap_or(u64::MAX)),
                    Reverse(p.node.clone()),
                )
            })
            .map(|p| p.node.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formation::Membership;

    fn n(s: &str) -> NodeName {
        s.parse().unwrap()
    }

    fn live(node: &str, members: &[&str], started: u64) -> Probe {
        Probe {
            node: n(node),
            live: true,
            membership: Membership {
                running: true,
                members: members.iter().map(|m| n(m)).collect(),
                running_members: members.iter().map(|m| n(m)).collect(),
                partitions: vec![],
                booting: false,
            },
            started_at_ms: Some(started),
            reason: None,
            gone: false,
            booting: false,
        }
    }

    #[test]
    fn probe_order_excludes_self_and_duplicates_and_sorts_by_name() {
        let reg: Vec<RegisteredNode> = ["rabbit@c", "rabbit@a", "rabbit@b", "rabbit@a"]
            .iter()
            .enumerate()
            .map(|(i, s)| RegisteredNode::new(n(s), i as u64))
            .collect();
        assert_eq!(
            probe_order(&reg, &n("rabbit@b")),
            vec![n("rabbit@a"), n("rabbit@c")]
        );
    }

    #[test]
    fn alphabetical_picks_the_first_live_never_a_dead_one() {
        let probes = vec![
            Probe::down(n("rabbit@a"), "refused"),
            live("rabbit@c", &["rabbit@c"], 1),
            live("rabbit@b", &["rabbit@b"], 2),
        ];
        assert_eq!(
            choose(&probes, SeedOrder::Alphabetical),
            Some(n("rabbit@b"))
        );
        assert_eq!(
            choose(&[Probe::down(n("x@a"), "down")], SeedOrder::Alphabetical),
            None
        );
    }

    #[test]
    fn largest_cluster_then_longest_running_then_name() {
        let probes = vec![
            live("rabbit@a", &["rabbit@a"], 1),
            live("rabbit@b", &["rabbit@b", "rabbit@c"], 50),
            live("rabbit@c", &["rabbit@b", "rabbit@c"], 40),
        ];
        assert_eq!(
            choose(&probes, SeedOrder::LargestCluster),
            Some(n("rabbit@c"))
        );
        let tie = vec![
            live("rabbit@b", &["rabbit@b"], 5),
            live("rabbit@a", &["rabbit@a"], 5),
        ];
        assert_eq!(choose(&tie, SeedOrder::LargestCluster), Some(n("rabbit@a")));
    }

    #[test]
    fn every_agent_seeing_the_same_registry_chooses_the_same_seed() {
        // Agents differ only in which node they are; the probes of the others agree.
        let all = ["rabbit@n3", "rabbit@n1", "rabbit@n2", "rabbit@n4"];
        let reg: Vec<RegisteredNode> = all
            .iter()
            .enumerate()
            .map(|(i, s)| RegisteredNode::new(n(s), i as u64))
            .collect();
        let mut seeds = Vec::new();
        for me in ["rabbit@n5", "rabbit@n6", "rabbit@n7"] {
            let probes: Vec<Probe> = probe_order(&reg, &n(me))
                .into_iter()
                .map(|node| {
                    if node.as_str() == "rabbit@n1" {
                        Probe::down(node, "dead")
                    } else {
                        live(node.as_str(), &[node.as_str()], 0)
                    }
                })
                .collect();
            seeds.push(choose(&probes, SeedOrder::Alphabetical));
        }
        assert!(
            seeds.iter().all(|s| s == &Some(n("rabbit@n2"))),
            "{seeds:?}"
        );
    }
}
