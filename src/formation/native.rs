//! A cluster of Rust processes: autocluster nodes forming a star around their seed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::node::{GenCall, NodeEvent};
use crate::term::Term;
use crate::{Node, NodeName};

use super::FormationError;
use super::erlang::{CALL_TIMEOUT, node_list};
use super::target::{
    ClusterTarget, DataState, Membership, MeshSteps, Probe, Stage, Step, execute_mesh,
    worth_one_retry,
};

/// The registered name of the membership service every [`NativeTarget`] runs.
pub const MEMBERSHIP_SERVICE: &str = "autocluster_membership";

/// A Rust-native cluster member: an autocluster [`Node`] (with its own listener) whose
/// cluster is a **star** around the seed. Members connect to the seed, never to each
/// other, so a cluster of hundreds of nodes costs each member one connection.
///
/// Each target runs a small membership service on its node, a mailbox registered as
/// [`MEMBERSHIP_SERVICE`] answering `gen:call`s:
///
/// * `members` → `{seed, Members}` from a seed (itself and the members that joined it and
///   are still connected), `{member, Seed, LastView}` from a member;
/// * `{join, Node}` → `ok`, or `{redirect, Seed}` when asked of a member rather than a seed;
/// * `{leave, Node}` → `ok`.
///
/// A member's membership is its seed's answer, so every member of a formed cluster
/// reports the same view. A probe is a `members` call: only autocluster nodes running
/// this service are live to it (use [`super::ErlangMesh`] for Erlang nodes).
#[derive(Debug, Clone)]
pub struct NativeTarget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node: Node,
    state: Arc<Mutex<State>>,
    timeout_ms: std::sync::atomic::AtomicU64,
    service: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.service.abort();
    }
}

#[derive(Debug, Default)]
struct State {
    /// `Some(seed)` once this node joined a seed; `None` while it is (or may become) one.
    seed: Option<NodeName>,
    /// As a seed: the members that joined.
    members: BTreeSet<NodeName>,
    /// As a member: the view last read from the seed.
    last_view: Vec<NodeName>,
    /// Nodes probed: their connections are closed once the node has joined or formed,
    /// so that a member keeps exactly one connection, to its seed.
    probed: BTreeSet<NodeName>,
}

fn atoms(nodes: impl IntoIterator<Item = NodeName>) -> Term {
    Term::List(nodes.into_iter().map(|n| Term::atom(n.as_str())).collect())
}

impl NativeTarget {
    /// Makes `node` a cluster target and starts its membership service. Fails when the
    /// service name is taken on the node (one target per node).
    pub fn new(node: Node) -> Result<NativeTarget, FormationError> {
        let mut mailbox = node
            .register(MEMBERSHIP_SERVICE)
            .map_err(|e| FormationError::Config(format!("{}: {e}", node.name())))?;
        let mut events = node.monitor_nodes();
        let state = Arc::new(Mutex::new(State::default()));
        let me = node.name().clone();
        let shared = state.clone();
        let service = tokio::spawn(async move {
            loop {
                tokio::select! {
                    envelope = mailbox.recv() => {
                        let Some(envelope) = envelope else { return };
                        let Some(call) = GenCall::parse(&envelope.message) else { continue };
                        let reply = answer(&me, &shared, &call.request);
                        if let Err(e) = mailbox.reply(&call, reply).await {
                            tracing::debug!(error = %e, "membership service: cannot reply");
                        }
                    }
                    event = events.recv() => match event {
                        Ok(NodeEvent::Down { node, .. }) => {
                            lock(&shared).members.remove(&node);
                        }
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return,
                    },
                }
            }
        });
        Ok(NativeTarget {
            inner: Arc::new(Inner {
                node,
                state,
                timeout_ms: std::sync::atomic::AtomicU64::new(CALL_TIMEOUT.as_millis() as u64),
                service,
            }),
        })
    }

    /// Sets the limit of each call (default 10 s).
    pub fn with_timeout(self, timeout: Duration) -> NativeTarget {
        self.inner.timeout_ms.store(
            timeout.as_millis().max(1) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        self
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(
            self.inner
                .timeout_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The node.
    pub fn local_node(&self) -> &Node {
        &self.inner.node
    }

    /// The seed this node joined, if it joined one.
    pub fn seed(&self) -> Option<NodeName> {
        lock(&self.inner.state).seed.clone()
    }

    fn close_probes(&self, keep: Option<&NodeName>) {
        let probed = std::mem::take(&mut lock(&self.inner.state).probed);
        for node in probed.iter().filter(|n| Some(*n) != keep) {
            self.inner.node.disconnect(node);
        }
    }

    async fn call(&self, node: &NodeName, request: Term) -> Result<Term, crate::rpc::RpcError> {
        self.inner
            .node
            .gen_call(node, MEMBERSHIP_SERVICE, request, self.timeout())
            .await
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn answer(me: &NodeName, state: &Mutex<State>, request: &Term) -> Term {
    let mut st = lock(state);
    if request.is_atom("members") {
        return match &st.seed {
            Some(seed) => Term::Tuple(vec![
                Term::atom("member"),
                Term::atom(seed.as_str()),
                atoms(st.last_view.clone()),
            ]),
            None => {
                let mut all: Vec<NodeName> = st.members.iter().cloned().collect();
                all.push(me.clone());
                all.sort();
                Term::Tuple(vec![Term::atom("seed"), atoms(all)])
            }
        };
    }
    match request.as_tuple() {
        Some([op, node]) if op.is_atom("join") || op.is_atom("leave") => {
            let Some(node) = node.as_atom().and_then(|a| NodeName::new(a.as_str()).ok()) else {
                return Term::Tuple(vec![Term::atom("error"), Term::atom("badarg")]);
            };
            if op.is_atom("leave") {
                st.members.remove(&node);
                return Term::atom("ok");
            }
            match &st.seed {
                Some(seed) => Term::Tuple(vec![Term::atom("redirect"), Term::atom(seed.as_str())]),
                None => {
                    st.members.insert(node);
                    Term::atom("ok")
                }
            }
        }
        _ => Term::Tuple(vec![Term::atom("error"), Term::atom("unknown_request")]),
    }
}

/// Reads a `members` answer: the seed and the members.
fn read_view(node: &NodeName, reply: &Term) -> Option<(NodeName, Vec<NodeName>)> {
    match reply.as_tuple()? {
        [kind, members] if kind.is_atom("seed") => Some((node.clone(), node_list(members)?)),
        [kind, seed, view] if kind.is_atom("member") => {
            let seed = NodeName::new(seed.as_atom()?.as_str()).ok()?;
            Some((seed, node_list(view)?))
        }
        _ => None,
    }
}

#[async_trait::async_trait]
impl ClusterTarget for NativeTarget {
    fn node(&self) -> &NodeName {
        self.inner.node.name()
    }

    fn kind(&self) -> &'static str {
        "native"
    }

    async fn probe(&self, node: &NodeName) -> Result<Probe, FormationError> {
        lock(&self.inner.state).probed.insert(node.clone());
        let reply = match self.call(node, Term::atom("members")).await {
            Ok(r) => r,
            Err(e) if worth_one_retry(&e) => match self.call(node, Term::atom("members")).await {
                Ok(r) => r,
                Err(e) => return Ok(Probe::failed(node.clone(), &e)),
            },
            Err(e) => return Ok(Probe::failed(node.clone(), &e)),
        };
        let Some((_, members)) = read_view(node, &reply) else {
            return Ok(Probe::down(
                node.clone(),
                format!("unexpected membership answer {reply}"),
            ));
        };
        Ok(Probe::live(node.clone(), Membership::running(members)))
    }

    async fn membership(&self) -> Result<Membership, FormationError> {
        let me = self.node().clone();
        let seed = lock(&self.inner.state).seed.clone();
        let Some(seed) = seed else {
            let connected = self.inner.node.connected_nodes();
            let st = lock(&self.inner.state);
            let mut members: Vec<NodeName> = st
                .members
                .iter()
                .filter(|m| connected.contains(m))
                .cloned()
                .collect();
            members.push(me);
            members.sort();
            return Ok(Membership {
                running: true,
                members: members.clone(),
                running_members: members,
                partitions: Vec::new(),
                booting: false,
            });
        };
        match self.call(&seed, Term::atom("members")).await {
            Ok(reply) => {
                let view = read_view(&seed, &reply).map(|(_, v)| v).unwrap_or_default();
                lock(&self.inner.state).last_view = view.clone();
                let running = if view.contains(&me) {
                    view.clone()
                } else {
                    vec![me]
                };
                Ok(Membership {
                    running: true,
                    members: view,
                    running_members: running,
                    partitions: Vec::new(),
                    booting: false,
                })
            }
            Err(e) => {
                tracing::debug!(%seed, error = %e, "seed unreachable");
                let mut members = lock(&self.inner.state).last_view.clone();
                if !members.contains(&me) {
                    members.push(me.clone());
                    members.sort();
                }
                Ok(Membership {
                    running: true,
                    members,
                    running_members: vec![me],
                    partitions: Vec::new(),
                    booting: false,
                })
            }
        }
    }

    async fn inventory(&self) -> Result<DataState, FormationError> {
        let st = lock(&self.inner.state);
        Ok(match &st.seed {
            Some(seed) => DataState::OtherCluster(vec![seed.clone()]),
            None if !st.members.is_empty() => {
                DataState::OtherCluster(st.members.iter().cloned().collect())
            }
            None => DataState::Empty,
        })
    }

    async fn execute(&self, step: &Step) -> Result<Stage, FormationError> {
        execute_mesh(self, step).await
    }

    async fn reconnect(&self, member: &NodeName) -> Result<bool, FormationError> {
        let seed = lock(&self.inner.state).seed.clone();
        if seed.as_ref() == Some(member) {
            let me = Term::atom(self.node().as_str());
            return Ok(self
                .call(member, Term::Tuple(vec![Term::atom("join"), me]))
                .await
                .is_ok_and(|r| r.is_atom("ok")));
        }
        Ok(self.inner.node.connect(member).await.is_ok())
    }

    async fn forget(&self, member: &NodeName) -> Result<(), FormationError> {
        lock(&self.inner.state).members.remove(member);
        Ok(())
    }
}

#[async_trait::async_trait]
impl MeshSteps for NativeTarget {
    async fn form(&self) -> Result<(), FormationError> {
        lock(&self.inner.state).seed = None;
        self.close_probes(None);
        Ok(())
    }

    async fn join(&self, seed: &NodeName) -> Result<(), FormationError> {
        let me = Term::atom(self.node().as_str());
        let mut target = seed.clone();
        // One redirect at most: a member names its own seed.
        for _ in 0..2 {
            let reply = self
                .call(&target, Term::Tuple(vec![Term::atom("join"), me.clone()]))
                .await
                .map_err(|e| FormationError::rpc("joining", &target, e))?;
            if reply.is_atom("ok") {
                {
                    let mut st = lock(&self.inner.state);
                    st.seed = Some(target.clone());
                    st.members.clear();
                }
                self.close_probes(Some(&target));
                // Read the view once, so that the membership answers at once.
                let _ = self.membership().await;
                return Ok(());
            }
            match reply.as_tuple() {
                Some([kind, next]) if kind.is_atom("redirect") => {
                    target = next
                        .as_atom()
                        .and_then(|a| NodeName::new(a.as_str()).ok())
                        .ok_or_else(|| {
                            FormationError::unexpected(
                                "joining",
                                seed,
                                format!("bad redirect {reply}"),
                            )
                        })?;
                }
                _ => {
                    return Err(FormationError::unexpected(
                        "joining",
                        &target,
                        format!("answered {reply}"),
                    ));
                }
            }
        }
        Err(FormationError::unexpected(
            "joining",
            seed,
            "redirected more than once",
        ))
    }

    async fn leave(&self) -> Result<(), FormationError> {
        let seed = lock(&self.inner.state).seed.take();
        if let Some(seed) = seed {
            let me = Term::atom(self.node().as_str());
            let _ = self
                .call(&seed, Term::Tuple(vec![Term::atom("leave"), me]))
                .await;
            self.inner.node.disconnect(&seed);
        }
        Ok(())
    }
}
