//! This Rust process itself as a cluster target.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::term::Term;
use crate::{Node, NodeName};

use super::FormationError;
use super::erlang::{CALL_TIMEOUT, Connections, node_list, probe_erlang};
use super::target::{
    ClusterTarget, DataState, Membership, MeshSteps, Probe, Stage, Step, execute_mesh,
};

/// This Rust process joining an Erlang cluster: it dials every member of the seed's
/// cluster.
///
/// The node must be **hidden**. A published node appears in `nodes()` on its peers, and
/// `global` on every one of them then starts its name-synchronisation protocol with it
/// and waits for an answer that a process without `global` never gives: `global:sync()`
/// hangs on the whole cluster (OTP 25, `prevent_overlapping_partitions` on). A hidden
/// node stays out of `global`, can still call and message every member, and is listed
/// by `nodes(hidden)`. A Rust process registers no names in `global`, so being
/// published would gain it nothing.
///
/// Membership counts the members this target joined (and that are still connected),
/// not every connection the node holds: probing a node connects to it without making
/// it a member.
#[derive(Debug, Clone)]
pub struct LocalTarget {
    node: Node,
    timeout: Duration,
    joined: Arc<Mutex<BTreeSet<NodeName>>>,
}

impl LocalTarget {
    /// This process's node as a target. Fails for a published node (see above).
    pub fn new(node: Node) -> Result<LocalTarget, FormationError> {
        if !node.config().hidden {
            return Err(FormationError::Config(format!(
                "{} is published: `global` on the Erlang nodes would wait for it forever \
                 (global:sync() hangs); build the node hidden to cluster it",
                node.name()
            )));
        }
        Ok(LocalTarget {
            node,
            timeout: CALL_TIMEOUT,
            joined: Arc::default(),
        })
    }

    fn joined(&self) -> std::sync::MutexGuard<'_, BTreeSet<NodeName>> {
        self.joined.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node.
    pub fn local_node(&self) -> &Node {
        &self.node
    }
}

#[async_trait::async_trait]
impl ClusterTarget for LocalTarget {
    fn node(&self) -> &NodeName {
        self.node.name()
    }

    fn kind(&self) -> &'static str {
        "local"
    }

    async fn probe(&self, node: &NodeName) -> Result<Probe, FormationError> {
        // Members list this hidden node among their connected nodes, not in `nodes()`.
        Ok(probe_erlang(&self.node, node, self.timeout, Connections::All).await)
    }

    async fn membership(&self) -> Result<Membership, FormationError> {
        let joined = self.joined().clone();
        let me = self.node.name().clone();
        let mut running: Vec<NodeName> = self
            .node
            .connected_nodes()
            .into_iter()
            .filter(|n| joined.contains(n))
            .collect();
        running.push(me.clone());
        running.sort();
        let mut members: Vec<NodeName> = joined.into_iter().collect();
        members.push(me);
        members.sort();
        Ok(Membership {
            running: true,
            members,
            running_members: running,
            partitions: Vec::new(),
            booting: false,
        })
    }

    async fn inventory(&self) -> Result<DataState, FormationError> {
        Ok(DataState::Empty)
    }

    async fn execute(&self, step: &Step) -> Result<Stage, FormationError> {
        execute_mesh(self, step).await
    }

    async fn reconnect(&self, member: &NodeName) -> Result<bool, FormationError> {
        Ok(self.node.connect(member).await.is_ok())
    }

    async fn forget(&self, member: &NodeName) -> Result<(), FormationError> {
        self.joined().remove(member);
        self.node.disconnect(member);
        Ok(())
    }
}

#[async_trait::async_trait]
impl MeshSteps for LocalTarget {
    async fn form(&self) -> Result<(), FormationError> {
        Ok(())
    }

    async fn join(&self, seed: &NodeName) -> Result<(), FormationError> {
        let members = self
            .node
            .call(seed, "erlang", "nodes", vec![], self.timeout)
            .await
            .map_err(|e| FormationError::rpc("listing the seed's cluster", seed, e))?;
        self.joined().insert(seed.clone());
        for member in node_list(&members).unwrap_or_default() {
            if &member == self.node.name() {
                continue;
            }
            match self.node.connect(&member).await {
                Ok(()) => {
                    self.joined().insert(member);
                }
                Err(e) => {
                    tracing::warn!(%member, error = %e, "cannot reach a member of the seed's cluster")
                }
            }
        }
        Ok(())
    }

    async fn leave(&self) -> Result<(), FormationError> {
        let members: Vec<NodeName> = std::mem::take(&mut *self.joined()).into_iter().collect();
        for n in members {
            self.node.disconnect(&n);
        }
        Ok(())
    }
}

impl LocalTarget {
    /// Calls `erlang:nodes()` on `member`, to compare views.
    pub async fn members_of(&self, member: &NodeName) -> Result<Vec<NodeName>, FormationError> {
        let t: Term = self
            .node
            .call(member, "erlang", "nodes", vec![], self.timeout)
            .await
            .map_err(|e| FormationError::rpc("listing members", member, e))?;
        Ok(node_list(&t).unwrap_or_default())
    }
}
