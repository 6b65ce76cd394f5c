//! The health report: "is this node properly clustered?", answered in milliseconds.
//!
//! Like rabbitmq-autocluster's `cluster_health_check_report`, and without taking the
//! startup lock:
//!
//! 1. find the seed with formation's own [seed selector](crate::formation::seed::Selector),
//!    so that the check names the seed formation chose: the alphabetically first **live**
//!    registered node, the checked node included, or the node of the largest cluster
//!    ([`SeedOrder::LargestCluster`]), or the backend's deterministic seed (static list,
//!    StatefulSet, DNS) when it is live (without a backend: the alphabetically first
//!    running member of the node's own cluster);
//! 2. when the node is not the seed: check **both ways** that the node and the seed list
//!    each other among their running, non-partitioned members;
//! 3. when the node is the seed: check that every other live registered node and the
//!    node list each other — a standalone seed beside unjoined registered nodes is a
//!    failure;
//! 4. any partition reported by the node is a failure, and so is a Khepri cluster whose
//!    majority is not running (`majority lost: 1 of 3 members running`).
//!
//! The [`HealthReport`] prints as the familiar `SUCCESS: ...` / `FAILURE: ...` line,
//! serialises to JSON for machines, and gives an exit code for a Kubernetes probe.
//!
//! ```no_run
//! use std::sync::Arc;
//! use autocluster::backend::MemoryBackend;
//! use autocluster::formation::ErlangMesh;
//! use autocluster::{Cookie, Node, health};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let probe = Node::builder("probe@localhost".parse()?, Cookie::from_default_file()?).start().await?;
//! let target = ErlangMesh::new(probe, "app@localhost".parse()?);
//! let backend = MemoryBackend::new();
//! let report = health::check(&target, Some(&backend), &health::CheckOptions::default()).await;
//! println!("{report}");
//! std::process::exit(report.exit_code());
//! # }
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use crate::NodeName;
use crate::backend::Backend;
use crate::formation::seed::{SeedOrder, Selector};
use crate::formation::{ClusterTarget, FormationConfig, Membership, Probe};

/// How a health check chooses the seed and what it requires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckOptions {
    /// The seed order formation uses ([`FormationConfig::seed_order`]).
    pub seed_order: SeedOrder,
    /// Without a backend: the number of running, non-partitioned members required.
    pub expect_nodes: Option<usize>,
}

impl CheckOptions {
    /// The same options with `order`.
    pub fn seed_order(mut self, order: SeedOrder) -> CheckOptions {
        self.seed_order = order;
        self
    }

    /// The same options, requiring `n` running, non-partitioned members (without a
    /// backend).
    pub fn expect_nodes(mut self, n: usize) -> CheckOptions {
        self.expect_nodes = Some(n);
        self
    }
}

impl From<&FormationConfig> for CheckOptions {
    fn from(config: &FormationConfig) -> CheckOptions {
        CheckOptions::default().seed_order(config.seed_order)
    }
}

/// The verdict on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// The node checked.
    pub node: NodeName,
    /// Whether it is properly clustered.
    pub healthy: bool,
    /// The seed it was checked against, when one was found.
    pub seed: Option<NodeName>,
    /// One-line summary (what the `SUCCESS:`/`FAILURE:` line says).
    pub summary: String,
    /// Every problem found (empty when healthy).
    pub problems: Vec<String>,
    /// The node's cluster members, as it reports them.
    pub members: Vec<NodeName>,
    /// Its running members.
    pub running: Vec<NodeName>,
    /// The nodes it reports partitioned.
    pub partitions: Vec<NodeName>,
    /// The registered nodes, when a backend was asked.
    pub registered: Option<Vec<NodeName>>,
    /// How long the check took.
    pub elapsed: Duration,
}

impl HealthReport {
    /// 0 when healthy, 1 otherwise (for probes and scripts).
    pub fn exit_code(&self) -> i32 {
        if self.healthy { 0 } else { 1 }
    }

    /// The report as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let names = |v: &[NodeName]| v.iter().map(|n| n.as_str().to_owned()).collect::<Vec<_>>();
        serde_json::json!({
            "node": self.node.as_str(),
            "status": if self.healthy { "SUCCESS" } else { "FAILURE" },
            "healthy": self.healthy,
            "seed": self.seed.as_ref().map(NodeName::as_str),
            "summary": self.summary,
            "problems": self.problems,
            "members": names(&self.members),
            "running": names(&self.running),
            "partitions": names(&self.partitions),
            "registered": self.registered.as_deref().map(names),
            "elapsed_ms": self.elapsed.as_millis() as u64,
        })
    }
}

impl fmt::Display for HealthReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.healthy { "SUCCESS" } else { "FAILURE" };
        write!(f, "{status}: {}", self.summary)
    }
}

struct Builder {
    node: NodeName,
    started: Instant,
    seed: Option<NodeName>,
    problems: Vec<String>,
    membership: Membership,
    registered: Option<Vec<NodeName>>,
}

impl Builder {
    fn finish(self, success_summary: String) -> HealthReport {
        let healthy = self.problems.is_empty();
        let summary = if healthy {
            success_summary
        } else {
            self.problems.join("; ")
        };
        HealthReport {
            node: self.node,
            healthy,
            seed: self.seed,
            summary,
            problems: self.problems,
            members: self.membership.members,
            running: self.membership.running_members,
            partitions: self.membership.partitions,
            registered: self.registered,
            elapsed: self.started.elapsed(),
        }
    }
}

/// Checks the node `target` manages. With `backend`, the seed is the one formation
/// chooses with `options.seed_order` and the backend (see the [module
/// documentation](self)); without, it is the first running member of the node's own
/// cluster and [`CheckOptions::expect_nodes`] (when given) is the number of running,
/// non-partitioned members required. [`Agent::health`](crate::formation::Agent::health)
/// checks with the agent's own configuration.
pub async fn check(
    target: &dyn ClusterTarget,
    backend: Option<&dyn Backend>,
    options: &CheckOptions,
) -> HealthReport {
    let expect_nodes = options.expect_nodes;
    let me = target.node().clone();
    let mut b = Builder {
        node: me.clone(),
        started: Instant::now(),
        seed: None,
        problems: Vec::new(),
        membership: Membership::default(),
        registered: None,
    };
    let inspection = match target.inspect().await {
        Ok(inspection) => inspection,
        Err(e) => {
            b.problems.push(format!("{me} cannot be checked: {e}"));
            return b.finish(String::new());
        }
    };
    b.membership = inspection.membership.clone();
    if !b.membership.running {
        b.problems
            .push(format!("{me} is not running its cluster application"));
        return b.finish(String::new());
    }
    if let Some((running, members)) = inspection.majority_lost() {
        b.problems.push(format!(
            "majority lost: {running} of {members} members running"
        ));
    }
    if !b.membership.partitions.is_empty() {
        let p: Vec<&str> = b
            .membership
            .partitions
            .iter()
            .map(NodeName::as_str)
            .collect();
        b.problems
            .push(format!("{me} reports partitions with {}", p.join(", ")));
    }
    let running_count = b
        .membership
        .running_members
        .iter()
        .filter(|n| !b.membership.partitions.contains(n))
        .count();

    let Some(backend) = backend else {
        // The node's own cluster decides the seed.
        let mut running = b.membership.running_members.clone();
        running.sort();
        let seed = running.first().cloned().unwrap_or_else(|| me.clone());
        b.seed = Some(seed.clone());
        if let Some(n) = expect_nodes
            && running_count != n
        {
            b.problems.push(format!(
                "{me} has {running_count} running, non-partitioned members, expected {n}"
            ));
        }
        if seed != me {
            check_pair(target, &me, &b.membership.clone(), &seed, &mut b.problems).await;
        }
        let summary =
            format!("{me} is clustered with seed {seed}: {running_count} running members");
        return b.finish(summary);
    };

    let listing = match backend.list_nodes().await {
        Ok(l) => l,
        Err(e) => {
            b.problems.push(format!(
                "the {} backend failed, so the seed is unknown: {e}",
                backend.name()
            ));
            return b.finish(String::new());
        }
    };
    let mut registered: Vec<NodeName> = listing.iter().map(|r| r.node.clone()).collect();
    if !registered.contains(&me) {
        registered.push(me.clone());
    }
    registered.sort();
    registered.dedup();
    b.registered = Some(registered.clone());

    let policy = match crate::formation::seed_policy(backend, options.seed_order, &me).await {
        Ok(policy) => policy,
        Err(e) => {
            b.problems.push(format!(
                "the {} backend failed, so the seed is unknown: {e}",
                backend.name()
            ));
            return b.finish(String::new());
        }
    };
    // The node is a candidate, live with its own view (and its start time, which the
    // largest-cluster order compares).
    let own = match options.seed_order {
        SeedOrder::LargestCluster => target.probe(&me).await.ok().filter(|p| p.live),
        SeedOrder::Alphabetical => None,
    };
    let own = own.unwrap_or_else(|| Probe::live(me.clone(), b.membership.clone()));
    let mut selector = Selector::new(policy, &me, &listing, Some(own));
    while let Some(node) = selector.next_probe() {
        let probe = match target.probe(&node).await {
            Ok(p) => p,
            Err(e) => Probe::down(node, e.to_string()),
        };
        selector.record(probe);
    }
    let choice = selector.choice();
    let Some(seed) = choice.seed else {
        let det = choice.waiting_for.unwrap_or_else(|| me.clone());
        b.seed = Some(det.clone());
        b.problems.push(format!(
            "the seed {det} is not live, and no other live cluster is registered"
        ));
        return b.finish(String::new());
    };
    let seed_probe = selector
        .probes()
        .iter()
        .find(|p| p.node == seed && p.node != me && p.live)
        .cloned();
    b.seed = Some(seed.clone());

    if seed == me {
        // The seed must be clustered with every other live registered node.
        let mut live_others = 0;
        for node in registered.iter().filter(|n| **n != me) {
            let probed = selector.probes().iter().find(|p| &p.node == node).cloned();
            let p = match probed {
                Some(p) => p,
                None => match target.probe(node).await {
                    Ok(p) => p,
                    Err(_) => continue,
                },
            };
            if !p.live {
                continue;
            }
            live_others += 1;
            if !b.membership.lists_running(node) {
                b.problems.push(format!("{me} (the seed) does not list the live registered node {node} as a running member"));
            }
            if !p.membership.lists_running(&me) {
                b.problems.push(format!("the live registered node {node} does not list {me} (the seed) as a running member"));
            }
        }
        let summary = format!(
            "{me} is the seed, clustered with all {live_others} other live registered nodes"
        );
        return b.finish(summary);
    }

    let self_view = b.membership.clone();
    if !self_view.lists_running(&seed) {
        b.problems.push(format!(
            "{me} does not list the seed {seed} as a running, non-partitioned member"
        ));
    }
    match seed_probe {
        Some(p) if p.membership.lists_running(&me) => {}
        Some(_) => b.problems.push(format!(
            "the seed {seed} does not list {me} as a running, non-partitioned member"
        )),
        None => b
            .problems
            .push(format!("the seed {seed} could not be checked")),
    }
    let summary =
        format!("{me} is clustered with seed {seed} both ways: {running_count} running members");
    b.finish(summary)
}

async fn check_pair(
    target: &dyn ClusterTarget,
    me: &NodeName,
    mine: &Membership,
    seed: &NodeName,
    problems: &mut Vec<String>,
) {
    if !mine.lists_running(seed) {
        problems.push(format!(
            "{me} does not list the seed {seed} as a running, non-partitioned member"
        ));
    }
    match target.probe(seed).await {
        Ok(p) if p.live && p.membership.lists_running(me) => {}
        Ok(p) if p.live => problems.push(format!(
            "the seed {seed} does not list {me} as a running, non-partitioned member"
        )),
        Ok(p) => problems.push(format!(
            "the seed {seed} is not live: {}",
            p.reason.unwrap_or_else(|| "unknown".into())
        )),
        Err(e) => problems.push(format!("the seed {seed} could not be checked: {e}")),
    }
}
