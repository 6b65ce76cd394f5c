//! The formation plan: the one place that decides what happens to the managed node.
//!
//! [`plan`] is a pure function. It takes what the agent found (the seed selector's
//! [`SeedChoice`] from the probes, the target's [`Inspection`], the registered nodes) and
//! the configuration, and returns a [`Decision`]: a [`Step`] for the target to carry
//! out, a request for more facts, or a typed refusal. Targets never decide: whether data
//! may be discarded, whether a booting node is told whom to join, whether a recorded
//! member may be joined again, all of it is here, and tested here without I/O.
//!
//! The agent calls it in a loop of at most a few rounds per attempt:
//!
//! 1. [`Decision::Inventory`]: read [`ClusterTarget::inventory`](super::ClusterTarget::inventory)
//!    once, put it in [`Inspection::data`], plan again;
//! 2. [`Decision::Prepare`]: carry out the step ([`Step::Start`]), inspect again, plan
//!    again with [`Facts::resumed`] set;
//! 3. [`Decision::Execute`]: carry out the step; the plan is done;
//! 4. [`Decision::Done`]: nothing to do;
//! 5. [`Decision::WaitForSeed`]: without a lock, wait for the deterministic seed.
//!
//! ```
//! use autocluster::formation::plan::{Decision, Facts, plan};
//! use autocluster::formation::seed::SeedChoice;
//! use autocluster::formation::{Inspection, Membership, Step};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let me = "rabbit@b".parse()?;
//! let seed = "rabbit@a".parse()?;
//! let choice = SeedChoice { seed: Some(seed), ..SeedChoice::default() };
//! let running = Membership { running: true, ..Membership::default() };
//! let inspection = Inspection::of(running);
//! let facts = Facts::new(&me, &choice, &inspection);
//! // Before joining, the plan wants to know what a join would discard.
//! assert_eq!(plan(&facts)?, Decision::Inventory);
//! # Ok(()) }
//! ```

use crate::NodeName;

use super::seed::SeedChoice;
use super::target::{DataState, Inspection, Step};
use super::{FormationError, Outcome};

/// What the plan decides from.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Facts<'a> {
    /// The managed node.
    pub node: &'a NodeName,
    /// What the seed selector concluded from the probes.
    pub choice: &'a SeedChoice,
    /// What the target reported about the managed node.
    pub inspection: &'a Inspection,
    /// The registered nodes (used without a lock, where a node already in a cluster with
    /// one of them stays there).
    pub registered: &'a [NodeName],
    /// The backend's deterministic seed (`None` with a startup lock).
    pub deterministic: Option<&'a NodeName>,
    /// Whether resetting a node that holds data or belongs to another cluster is allowed
    /// ([`FormationConfig::allow_reset`](super::FormationConfig::allow_reset)).
    pub allow_reset: bool,
    /// Whether this attempt already started the managed node's application
    /// ([`Decision::Prepare`]).
    pub resumed: bool,
    /// Whether the managed node was booting when this attempt first inspected it (its
    /// boot may have finished since, while the agent waited for it).
    pub was_booting: bool,
}

impl<'a> Facts<'a> {
    /// Facts with a startup lock, no registered node, reset not allowed, not resumed.
    pub fn new(
        node: &'a NodeName,
        choice: &'a SeedChoice,
        inspection: &'a Inspection,
    ) -> Facts<'a> {
        Facts {
            node,
            choice,
            inspection,
            registered: &[],
            deterministic: None,
            allow_reset: false,
            resumed: false,
            was_booting: false,
        }
    }

    /// The same facts with the registered nodes.
    pub fn registered(mut self, registered: &'a [NodeName]) -> Facts<'a> {
        self.registered = registered;
        self
    }

    /// The same facts for a backend without a lock, whose deterministic seed is `seed`.
    pub fn deterministic(mut self, seed: Option<&'a NodeName>) -> Facts<'a> {
        self.deterministic = seed;
        self
    }

    /// The same facts with resetting allowed or not.
    pub fn allow_reset(mut self, allow: bool) -> Facts<'a> {
        self.allow_reset = allow;
        self
    }

    /// The same facts, after the application was started this attempt.
    pub fn resumed(mut self, resumed: bool) -> Facts<'a> {
        self.resumed = resumed;
        self
    }

    /// The same facts, for a node that was booting when first inspected.
    pub fn was_booting(mut self, was_booting: bool) -> Facts<'a> {
        self.was_booting = was_booting;
        self
    }
}

/// What the plan decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Carry out this step; it decides the managed node's membership.
    Execute(Step),
    /// Carry out this step first, then inspect the node again and plan again.
    Prepare(Step),
    /// Read what joining would discard, then plan again.
    Inventory,
    /// Nothing to carry out: the node is where it belongs.
    Done(Outcome),
    /// Without a lock: the deterministic seed is not live and no other cluster was found;
    /// wait for it and try again.
    WaitForSeed(NodeName),
}

/// Decides what happens to the managed node. See the [module documentation](self).
pub fn plan(facts: &Facts<'_>) -> Result<Decision, FormationError> {
    let me = facts.node;
    let m = &facts.inspection.membership;
    if let Some(det) = facts.deterministic
        && m.members.len() > 1
        && let Some(seed) = m
            .members
            .iter()
            .filter(|n| *n != me && m.lists_running(n))
            .find(|n| *n == det || facts.registered.contains(n))
    {
        // Without a lock, a node in a cluster with the seed or a registered node stays.
        return Ok(Decision::Done(Outcome::AlreadyMember {
            seed: seed.clone(),
        }));
    }
    let seed = match &facts.choice.seed {
        Some(seed) => Some(seed.clone()),
        // No registered node is live yet, but some are booting: nodes whose boot forms a
        // new cluster (a node whose boot joins one registers only once it has joined) or
        // members restarting. A managed node that is booting too joins the first of them,
        // and the boots form one cluster (a running node waits for a live seed instead:
        // it can only join a cluster whose database is up). A boot waited for this attempt
        // keeps that seed.
        None if facts.deterministic.is_none()
            && ((m.booting && !m.running) || facts.was_booting) =>
        {
            facts.choice.booting.first().cloned()
        }
        None => None,
    };
    match seed {
        Some(seed) => join(facts, seed),
        None => {
            if let Some(det) = &facts.choice.waiting_for {
                return Ok(Decision::WaitForSeed(det.clone()));
            }
            if facts.deterministic.is_none() && !facts.choice.unknown.is_empty() {
                // Forming now could start a second cluster beside a live one that a
                // timeout or a connection cut hid: retry instead. A dead node stops being
                // registered within its TTL.
                return Err(FormationError::MaybeAlive {
                    nodes: facts.choice.unknown.clone(),
                });
            }
            form(facts)
        }
    }
}

/// No registered node is live: form a new cluster, unless the node already runs in one.
fn form(facts: &Facts<'_>) -> Result<Decision, FormationError> {
    let m = &facts.inspection.membership;
    if let Some((running, members)) = facts.inspection.majority_lost() {
        // A Khepri survivor is not a cluster of one: never formed from, never reset.
        return Err(FormationError::MajorityLost {
            node: facts.node.clone(),
            running,
            members,
        });
    }
    // A node already clustered with running peers (an existing cluster whose
    // registrations expired, or nodes given to a fresh registry) keeps its cluster.
    if m.running
        && m.running_members.iter().any(|n| n != facts.node)
        && let Some(seed) = m.running_members.iter().min()
    {
        return Ok(Decision::Done(Outcome::AlreadyMember {
            seed: seed.clone(),
        }));
    }
    if m.booting && !m.running && facts.inspection.boot_joinable {
        return Ok(Decision::Execute(Step::BootJoin { seed: None }));
    }
    Ok(Decision::Execute(Step::Form))
}

/// `seed` is live: join its cluster, unless the node is a member already or joining
/// would discard what is not allowed to go.
fn join(facts: &Facts<'_>, seed: NodeName) -> Result<Decision, FormationError> {
    let me = facts.node;
    let inspection = facts.inspection;
    let m = &inspection.membership;
    if m.members.contains(&seed)
        && !facts.choice.seed_members.is_empty()
        && !facts.choice.seed_members.contains(me)
    {
        // The node lists the seed, the seed does not list it: the cluster forgot it
        // (cleanup, forget_cluster_node) while it was away. Its data belongs to a
        // cluster that no longer has it; only an operator may discard it. Running,
        // stopped or booting alike: a forgotten Khepri member's boot waits minutes for
        // a leader among members that no longer have it, and starting a stopped one
        // would do the same.
        return Err(FormationError::Forgotten {
            node: me.clone(),
            seed,
        });
    }
    if !m.running {
        if m.booting && inspection.boot_joinable {
            // An empty node in its first boot: its boot joins the seed (RabbitMQ's own
            // peer discovery, with its retries), with nothing to discard and no second
            // boot.
            return Ok(Decision::Execute(Step::BootJoin { seed: Some(seed) }));
        }
        if facts.resumed {
            return Err(FormationError::unexpected(
                "joining",
                me,
                "the application is still not running after it was started",
            ));
        }
        // A stopped application (an agent killed between stopping and starting it) or a
        // boot past the point where it can be told whom to join: its data cannot be read
        // until it runs. A node that had already joined is then a running member.
        return Ok(Decision::Prepare(Step::Start));
    }
    if m.members.contains(&seed) {
        // A member of the seed's cluster stays one, whatever it lists as running (the
        // seed restarting, a partition): joining again would, on Khepri, reset it and add
        // it again, and is never needed. The watch reconnects it; health reports it. A
        // node whose boot was only waited for (a restart with its data) was a member all
        // along; one whose stopped application was started finishes an interrupted join.
        return Ok(Decision::Done(if facts.resumed && !facts.was_booting {
            Outcome::Joined { seed }
        } else {
            Outcome::AlreadyMember { seed }
        }));
    }
    if let Some((running, members)) = inspection.majority_lost() {
        // Joining another cluster would reset a Khepri survivor: never, reset allowed
        // or not.
        return Err(FormationError::MajorityLost {
            node: me.clone(),
            running,
            members,
        });
    }
    match &inspection.data {
        None => Ok(Decision::Inventory),
        Some(DataState::Empty) => Ok(Decision::Execute(Step::Join { seed, reset: false })),
        Some(_) if facts.allow_reset => Ok(Decision::Execute(Step::Join { seed, reset: true })),
        Some(data) => Err(FormationError::DataAtRisk {
            node: me.clone(),
            seed,
            data: data.clone(),
        }),
    }
}

#[cfg(test)]
mod tests;
