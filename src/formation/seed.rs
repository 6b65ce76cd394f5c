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

/// Everything that decides which node is the seed, besides the probes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeedPolicy {
    /// How live registered nodes are ordered.
    pub order: SeedOrder,
    /// The seed a backend without a startup lock names for every node alike (the static
    /// list's `seed` or first node, a StatefulSet's ordinal 0, DNS's alphabetically first
    /// address): `None` with a lock.
    pub deterministic: Option<NodeName>,
}

impl SeedPolicy {
    /// The policy for `order`, with the backend's deterministic seed, if any.
    pub fn new(order: SeedOrder, deterministic: Option<NodeName>) -> SeedPolicy {
        SeedPolicy {
            order,
            deterministic,
        }
    }
}

/// What the selector concluded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeedChoice {
    /// The seed: the node to join (or, for a health check, to be clustered with).
    /// `None`: no registered node is live.
    pub seed: Option<NodeName>,
    /// Registered nodes found booting, in probe order.
    pub booting: Vec<NodeName>,
    /// Registered nodes that did not answer, with nothing proving them down, each with
    /// why: forming beside them could split a cluster they run.
    pub unknown: Vec<(NodeName, String)>,
    /// Without a lock: the deterministic seed, when it is not live and no other live
    /// cluster was found to join (the node waits for it, unless it is the seed itself).
    pub waiting_for: Option<NodeName>,
    /// The seed's own members, as its probe reported them (empty when there is no seed,
    /// or it was not probed): a node that lists the seed as a member while the seed does
    /// not list it was forgotten by the cluster.
    pub seed_members: Vec<NodeName>,
}

/// The seed selector: which nodes to probe, in which order, and which one is the seed.
/// Pure: the caller probes the node [`next_probe`](Self::next_probe) names and hands the result to
/// [`record`](Self::record) until `next` says `None`, then reads [`choice`](Self::choice).
///
/// [`Agent::run`](super::Agent::run) and [`health::check`](crate::health::check) both
/// use it, so that a health check names the seed that formation chose:
///
/// * [`SeedOrder::Alphabetical`]: the registered nodes in name order, up to the first
///   live one;
/// * [`SeedOrder::LargestCluster`]: every registered node, then the largest cluster, the
///   longest running, the first name;
/// * a deterministic seed (backends without a lock): the seed when it is live; else the
///   first live node of a cluster of two or more (a cluster formed while the seed was
///   away); else none (the seed itself forms the cluster; any other node waits).
///
/// The managed node is a candidate only when its own probe is given ([`new`](Self::new)):
/// a health check counts its node, an agent forming it does not (it is not registered yet,
/// and never picks itself merely because its name sorts first).
///
/// ```
/// use autocluster::backend::RegisteredNode;
/// use autocluster::formation::seed::{SeedPolicy, Selector};
/// use autocluster::formation::{Probe, SeedOrder};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registered = vec![
///     RegisteredNode::new("rabbit@b".parse()?, 0),
///     RegisteredNode::new("rabbit@a".parse()?, 0),
/// ];
/// let mut selector = Selector::new(
///     SeedPolicy::new(SeedOrder::Alphabetical, None),
///     &"rabbit@c".parse()?,
///     &registered,
///     None,
/// );
/// assert_eq!(selector.next_probe().map(|n| n.as_str().to_owned()), Some("rabbit@a".into()));
/// selector.record(Probe::gone("rabbit@a".parse()?, "connection refused"));
/// assert_eq!(selector.next_probe().map(|n| n.as_str().to_owned()), Some("rabbit@b".into()));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Selector {
    policy: SeedPolicy,
    local: NodeName,
    /// The nodes in the order they are probed.
    order: Vec<NodeName>,
    /// Probes so far, in `order`.
    probes: Vec<Probe>,
    /// The managed node's own probe, when it is a candidate.
    local_probe: Option<Probe>,
}

impl Selector {
    /// A selector over `registered` for the managed node `local`; `local_probe` makes the
    /// managed node a candidate (health checks).
    pub fn new(
        policy: SeedPolicy,
        local: &NodeName,
        registered: &[RegisteredNode],
        local_probe: Option<Probe>,
    ) -> Selector {
        let mut names: Vec<NodeName> = registered.iter().map(|r| r.node.clone()).collect();
        if local_probe.is_some() {
            names.push(local.clone());
        }
        names.sort();
        names.dedup();
        if local_probe.is_none() {
            names.retain(|n| n != local);
        }
        if let Some(det) = &policy.deterministic {
            // The deterministic seed first, whether registered or not.
            names.retain(|n| n != det);
            if det != local || local_probe.is_some() {
                names.insert(0, det.clone());
            }
        }
        Selector {
            policy,
            local: local.clone(),
            order: names,
            probes: Vec::new(),
            local_probe,
        }
    }

    /// The next node to probe; `None` once the choice is made. The managed node itself,
    /// when it is a candidate, is never named: its probe was given.
    pub fn next_probe(&mut self) -> Option<NodeName> {
        loop {
            if self.decided() {
                return None;
            }
            let node = self.order.get(self.probes.len())?.clone();
            if node == self.local
                && let Some(p) = self.local_probe.clone()
            {
                self.probes.push(p);
                continue;
            }
            return Some(node);
        }
    }

    /// Records the probe of the node [`next_probe`](Self::next_probe) named.
    pub fn record(&mut self, probe: Probe) {
        self.probes.push(probe);
    }

    /// The probes made so far, in the order they were made.
    pub fn probes(&self) -> &[Probe] {
        &self.probes
    }

    /// Whether the probes so far decide the seed.
    fn decided(&self) -> bool {
        let Some(last) = self.probes.last() else {
            return false;
        };
        match &self.policy.deterministic {
            // The seed is probed first; past it, the first live cluster of two or more.
            Some(det) => last.live && (&last.node == det || last.cluster_size() >= 2),
            None => self.policy.order == SeedOrder::Alphabetical && last.live,
        }
    }

    /// The seed, and what the probes found on the way.
    pub fn choice(&self) -> SeedChoice {
        let unknown = self
            .probes
            .iter()
            .filter(|p| !p.live && !p.gone)
            .map(|p| (p.node.clone(), p.reason.clone().unwrap_or_default()))
            .collect();
        let booting = self
            .probes
            .iter()
            .filter(|p| !p.live && p.booting)
            .map(|p| p.node.clone())
            .collect();
        let (seed, waiting_for) = match &self.policy.deterministic {
            Some(det) => {
                let det_live = self.probes.iter().any(|p| &p.node == det && p.live);
                let other_cluster = self
                    .probes
                    .iter()
                    .find(|p| &p.node != det && p.live && p.cluster_size() >= 2)
                    .map(|p| p.node.clone());
                if det_live {
                    (Some(det.clone()), None)
                } else if other_cluster.is_some() {
                    (other_cluster, None)
                } else if det == &self.local {
                    (None, None)
                } else {
                    (None, Some(det.clone()))
                }
            }
            None => (choose(&self.probes, self.policy.order), None),
        };
        let seed_members = seed
            .as_ref()
            // Only a seed whose application runs, in a cluster of several, is believed:
            // a seed restarting (its application stopped, probed live all the same)
            // lists only what it knows of itself.
            .and_then(|s| {
                self.probes.iter().find(|p| {
                    p.live
                        && &p.node == s
                        && p.membership.running
                        && p.membership.running_members.contains(s)
                        && p.membership.members.len() > 1
                })
            })
            .map(|p| p.membership.members.clone())
            .unwrap_or_default();
        SeedChoice {
            seed,
            booting,
            unknown,
            waiting_for,
            seed_members,
        }
    }
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

    /// Drives a selector, answering probes from `probes` (a node absent from it is down).
    fn select(mut selector: Selector, probes: &[Probe]) -> Option<NodeName> {
        while let Some(node) = selector.next_probe() {
            let p = probes
                .iter()
                .find(|p| p.node == node)
                .cloned()
                .unwrap_or_else(|| Probe::down(node, "refused"));
            selector.record(p);
        }
        selector.choice().seed
    }

    /// The agent of a new node and the health check of a member, given the same listing
    /// and probes, name the same seed, for every policy.
    #[test]
    fn formation_and_health_name_the_same_seed() {
        // Five registered nodes; the first (by name and by ordinal) is down; the others
        // run one cluster, and the fourth runs alone (a node that has not joined yet).
        let names = ["rabbit-0@h", "rabbit-1@h", "rabbit-2@h", "rabbit-3@h"];
        let registered: Vec<RegisteredNode> = names
            .iter()
            .enumerate()
            .map(|(i, s)| RegisteredNode::new(n(s), i as u64))
            .collect();
        let cluster = ["rabbit-1@h", "rabbit-2@h"];
        let probes = vec![
            Probe::gone(n("rabbit-0@h"), "refused"),
            live("rabbit-1@h", &cluster, 50),
            live("rabbit-2@h", &cluster, 40),
            live("rabbit-3@h", &["rabbit-3@h"], 10),
        ];
        let newcomer = n("rabbit-9@h");
        let member = n("rabbit-2@h");
        let member_probe = probes.iter().find(|p| p.node == member).cloned();
        let cases: [(&str, SeedPolicy, &str); 6] = [
            (
                "alphabetical",
                SeedPolicy::new(SeedOrder::Alphabetical, None),
                "rabbit-1@h",
            ),
            (
                "largest cluster, then longest running",
                SeedPolicy::new(SeedOrder::LargestCluster, None),
                "rabbit-2@h",
            ),
            // A static list with `seed` set: that node, when live.
            (
                "static list with a seed",
                SeedPolicy::new(SeedOrder::Alphabetical, Some(n("rabbit-2@h"))),
                "rabbit-2@h",
            ),
            // A static list without one: its first node, down here, so the first live
            // cluster of two or more formed while it was away.
            (
                "static list without a seed",
                SeedPolicy::new(SeedOrder::Alphabetical, Some(n("rabbit-0@h"))),
                "rabbit-1@h",
            ),
            // A StatefulSet: ordinal 0, live in this variant.
            (
                "Kubernetes ordinal 0",
                SeedPolicy::new(SeedOrder::Alphabetical, Some(n("rabbit-3@h"))),
                "rabbit-3@h",
            ),
            // DNS: the alphabetically first address's node.
            (
                "DNS",
                SeedPolicy::new(SeedOrder::LargestCluster, Some(n("rabbit-1@h"))),
                "rabbit-1@h",
            ),
        ];
        for (what, policy, expected) in cases {
            let agent = select(
                Selector::new(policy.clone(), &newcomer, &registered, None),
                &probes,
            );
            let health = select(
                Selector::new(policy, &member, &registered, member_probe.clone()),
                &probes,
            );
            assert_eq!(agent, Some(n(expected)), "{what}: the agent");
            assert_eq!(health, agent, "{what}: health and formation disagree");
        }
    }

    #[test]
    fn alphabetical_stops_at_the_first_live_node_and_never_probes_itself() {
        let registered: Vec<RegisteredNode> = ["rabbit@a", "rabbit@b", "rabbit@c", "rabbit@d"]
            .iter()
            .map(|s| RegisteredNode::new(n(s), 0))
            .collect();
        let mut selector = Selector::new(SeedPolicy::default(), &n("rabbit@b"), &registered, None);
        let mut asked = Vec::new();
        while let Some(node) = selector.next_probe() {
            asked.push(node.clone());
            selector.record(if node.as_str() == "rabbit@c" {
                live("rabbit@c", &["rabbit@c"], 0)
            } else {
                Probe::down(node, "timeout")
            });
        }
        assert_eq!(asked, vec![n("rabbit@a"), n("rabbit@c")]);
        let choice = selector.choice();
        assert_eq!(choice.seed, Some(n("rabbit@c")));
        assert_eq!(choice.unknown, vec![(n("rabbit@a"), "timeout".to_owned())]);
    }

    #[test]
    fn a_deterministic_seed_that_is_down_is_waited_for_except_by_itself() {
        let registered: Vec<RegisteredNode> = ["rabbit@a", "rabbit@b"]
            .iter()
            .map(|s| RegisteredNode::new(n(s), 0))
            .collect();
        let policy = SeedPolicy::new(SeedOrder::Alphabetical, Some(n("rabbit@a")));
        let mut other = Selector::new(policy.clone(), &n("rabbit@b"), &registered, None);
        while let Some(node) = other.next_probe() {
            other.record(Probe::gone(node, "refused"));
        }
        assert_eq!(other.choice().seed, None);
        assert_eq!(other.choice().waiting_for, Some(n("rabbit@a")));
        // The seed itself probes the others (for a cluster formed while it was away),
        // never itself, and forms when none runs.
        let mut seed = Selector::new(policy, &n("rabbit@a"), &registered, None);
        let mut asked = Vec::new();
        while let Some(node) = seed.next_probe() {
            asked.push(node.clone());
            seed.record(live(node.as_str(), &[node.as_str()], 0));
        }
        assert_eq!(asked, vec![n("rabbit@b")]);
        assert_eq!(seed.choice(), SeedChoice::default());
    }
}
