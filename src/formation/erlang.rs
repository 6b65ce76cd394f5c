//! A plain Erlang node as a cluster target: an Erlang "cluster" is a mesh of connected
//! nodes, joined with `net_kernel:connect_node/1` and listed by `nodes()`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::term::Term;
use crate::{Node, NodeName};

use super::FormationError;
use super::target::{
    ClusterTarget, DataState, Membership, MeshSteps, Probe, Stage, Step, execute_mesh,
    worth_one_retry,
};

/// The default limit of each call an agent makes.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A plain Erlang node, managed from this process's (hidden) [`Node`].
///
/// * membership: running members are the node itself and `nodes()` (visible nodes);
///   members are those and every node this target has seen in the mesh since it was
///   made (the seed and the seed's members at the join, any node later seen in
///   `nodes()`), until it is forgotten. Erlang keeps no membership list, so without this
///   memory a member cut off by a partition would simply vanish from the cluster: the
///   watch could neither reconnect it once the network heals, nor cleanup forget it
///   once it is dead and deregistered;
/// * join: `net_kernel:connect_node/1` on the managed node, to the seed and then to each
///   of the seed's other members (which `global` would otherwise do in the background),
///   so the mesh is complete when the join returns;
/// * data: an Erlang node holds no cluster data, but a node already connected to other
///   nodes belongs to another mesh, and merging two meshes is refused unless allowed
///   (their `global` names may clash);
/// * forget: `erlang:disconnect_node/1`, and the member is no longer remembered; leave:
///   disconnect from every node and remember none.
#[derive(Debug, Clone)]
pub struct ErlangMesh {
    probe: Node,
    node: NodeName,
    timeout: Duration,
    /// Members seen (shared by clones).
    known: Arc<Mutex<BTreeSet<NodeName>>>,
}

impl ErlangMesh {
    /// Manages `node` through `probe`, a hidden Rust node holding the same cookie.
    pub fn new(probe: Node, node: NodeName) -> ErlangMesh {
        ErlangMesh {
            probe,
            node,
            timeout: CALL_TIMEOUT,
            known: Arc::default(),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, BTreeSet<NodeName>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, nodes: impl IntoIterator<Item = NodeName>) {
        let mut known = self.known();
        known.extend(nodes.into_iter().filter(|n| *n != self.node));
    }

    /// Sets the limit of each call (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> ErlangMesh {
        self.timeout = timeout;
        self
    }

    async fn call(
        &self,
        step: &'static str,
        on: &NodeName,
        m: &str,
        f: &str,
        args: Vec<Term>,
    ) -> Result<Term, FormationError> {
        self.probe
            .call(on, m, f, args, self.timeout)
            .await
            .map_err(|e| FormationError::rpc(step, on, e))
    }
}

/// Which of a node's connections count as its cluster.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Connections {
    /// `nodes()`: visible nodes, the Erlang mesh.
    Visible,
    /// `nodes(connected)`: hidden nodes too (a hidden member such as this process).
    All,
}

/// Probes an Erlang node: reachable, and its nodes and uptime.
pub(crate) async fn probe_erlang(
    probe: &Node,
    node: &NodeName,
    timeout: Duration,
    which: Connections,
) -> Probe {
    let args = match which {
        Connections::Visible => vec![],
        Connections::All => vec![Term::atom("connected")],
    };
    let nodes = match probe
        .call(node, "erlang", "nodes", args.clone(), timeout)
        .await
    {
        Ok(t) => t,
        Err(e) if worth_one_retry(&e) => {
            match probe.call(node, "erlang", "nodes", args, timeout).await {
                Ok(t) => t,
                Err(e) => return Probe::failed(node.clone(), &e),
            }
        }
        Err(e) => return Probe::failed(node.clone(), &e),
    };
    let Some(members) = node_list(&nodes) else {
        return Probe::down(node.clone(), format!("erlang:nodes() answered {nodes}"));
    };
    let mut members = members;
    members.push(node.clone());
    members.sort();
    let started_at_ms = probe
        .call(
            node,
            "erlang",
            "statistics",
            vec![Term::atom("wall_clock")],
            timeout,
        )
        .await
        .ok()
        .and_then(|t| {
            t.as_tuple()
                .and_then(|f| f.first())
                .and_then(Term::as_integer)
        })
        .and_then(|uptime| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()?
                .as_millis() as u64;
            now.checked_sub(u64::try_from(uptime).ok()?)
        });
    Probe {
        started_at_ms,
        ..Probe::live(node.clone(), Membership::running(members))
    }
}

/// A list of node-name atoms.
pub(crate) fn node_list(t: &Term) -> Option<Vec<NodeName>> {
    t.clone()
        .into_list_elements()?
        .iter()
        .map(|n| n.as_atom().and_then(|a| NodeName::new(a.as_str()).ok()))
        .collect()
}

#[async_trait::async_trait]
impl ClusterTarget for ErlangMesh {
    fn node(&self) -> &NodeName {
        &self.node
    }

    fn kind(&self) -> &'static str {
        "erlang"
    }

    async fn probe(&self, node: &NodeName) -> Result<Probe, FormationError> {
        Ok(probe_erlang(&self.probe, node, self.timeout, Connections::Visible).await)
    }

    async fn membership(&self) -> Result<Membership, FormationError> {
        let p = probe_erlang(&self.probe, &self.node, self.timeout, Connections::Visible).await;
        if !p.live {
            return Err(FormationError::unexpected(
                "reading the membership",
                &self.node,
                p.reason.unwrap_or_else(|| "unreachable".into()),
            ));
        }
        let mut membership = p.membership;
        self.remember(membership.running_members.iter().cloned());
        let mut members: BTreeSet<NodeName> = self.known().clone();
        members.insert(self.node.clone());
        membership.members = members.into_iter().collect();
        Ok(membership)
    }

    async fn inventory(&self) -> Result<DataState, FormationError> {
        let nodes = self
            .call(
                "reading the membership",
                &self.node,
                "erlang",
                "nodes",
                vec![],
            )
            .await?;
        let others = node_list(&nodes).unwrap_or_default();
        Ok(if others.is_empty() {
            DataState::Empty
        } else {
            DataState::OtherCluster(others)
        })
    }

    async fn execute(&self, step: &Step) -> Result<Stage, FormationError> {
        execute_mesh(self, step).await
    }

    async fn reconnect(&self, member: &NodeName) -> Result<bool, FormationError> {
        let r = self
            .call(
                "reconnecting",
                &self.node,
                "net_kernel",
                "connect_node",
                vec![Term::atom(member.as_str())],
            )
            .await?;
        Ok(r.is_atom("true"))
    }

    async fn forget(&self, member: &NodeName) -> Result<(), FormationError> {
        self.call(
            "forgetting",
            &self.node,
            "erlang",
            "disconnect_node",
            vec![Term::atom(member.as_str())],
        )
        .await?;
        self.known().remove(member);
        Ok(())
    }
}

#[async_trait::async_trait]
impl MeshSteps for ErlangMesh {
    async fn form(&self) -> Result<(), FormationError> {
        self.call("checking the node", &self.node, "erlang", "node", vec![])
            .await?;
        Ok(())
    }

    async fn join(&self, seed: &NodeName) -> Result<(), FormationError> {
        let r = self
            .call(
                "joining",
                &self.node,
                "net_kernel",
                "connect_node",
                vec![Term::atom(seed.as_str())],
            )
            .await?;
        if !r.is_atom("true") {
            return Err(FormationError::unexpected(
                "joining",
                &self.node,
                format!(
                    "net_kernel:connect_node({seed}) returned {r}: is the seed reachable from the node, with the same cookie?"
                ),
            ));
        }
        // `global` would mesh the node with the seed's other members in the background;
        // connect them now, so that the cluster is complete when the join returns.
        let members = self
            .call(
                "listing the seed's cluster",
                seed,
                "erlang",
                "nodes",
                vec![],
            )
            .await?;
        let members = node_list(&members).unwrap_or_default();
        // Members from now on, even those not reached yet: the watch reconnects them.
        self.remember(std::iter::once(seed.clone()).chain(members.iter().cloned()));
        for member in members {
            if member != self.node {
                let r = self
                    .call(
                        "joining",
                        &self.node,
                        "net_kernel",
                        "connect_node",
                        vec![Term::atom(member.as_str())],
                    )
                    .await?;
                if !r.is_atom("true") {
                    tracing::warn!(node = %self.node, %member, "cannot connect to a member of the seed's cluster");
                }
            }
        }
        Ok(())
    }

    async fn leave(&self) -> Result<(), FormationError> {
        self.known().clear();
        let nodes = self
            .call("leaving", &self.node, "erlang", "nodes", vec![])
            .await?;
        for n in node_list(&nodes).unwrap_or_default() {
            self.forget(&n).await?;
        }
        Ok(())
    }
}
