//! What a formation agent clusters: the [`ClusterTarget`] trait and what it reports.

use std::fmt;

use crate::rpc::RpcError;
use crate::{Fault, NodeName};

use super::FormationError;

/// Whether a failed call proves that the node called is not running: EPMD on its host
/// answered and does not know it, or its distribution port refused the TCP connection
/// (after a fresh EPMD lookup: the caller retries a refused cached port once). Timeouts,
/// connections cut during the handshake, refused handshakes, unreachable or unresolvable
/// hosts prove nothing.
pub(crate) fn proves_not_running(error: &RpcError) -> bool {
    error.fault() == Some(Fault::NotRunning)
}

/// Whether a failed call is worth one immediate retry before reading anything into it: a
/// connection that failed fast for a reason that may be gone at once (cut during its
/// handshake, a port remembered from an earlier EPMD lookup refused, which the retry
/// looks up afresh, a simultaneous connect). Slow failures (timeouts) and failures that a
/// retry repeats (rejections, incompatible or misbehaving peers) are not retried.
pub(crate) fn worth_one_retry(error: &RpcError) -> bool {
    matches!(error, RpcError::Connect(_))
        && matches!(
            error.fault(),
            Some(Fault::NotRunning | Fault::Unreachable | Fault::Contention)
        )
}

/// What a probe of a node found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The node probed.
    pub node: NodeName,
    /// Whether the node is up and running its cluster software (for RabbitMQ: the
    /// `rabbit` application is running).
    pub live: bool,
    /// The node's own view of its cluster (empty when not live).
    pub membership: Membership,
    /// When the node started, in milliseconds since the Unix epoch, when known (used by
    /// the "longest running" seed order).
    pub started_at_ms: Option<u64>,
    /// Why the node is not live, when it is not.
    pub reason: Option<String>,
    /// For a node that is not live: whether the probe **proves** it is not running (EPMD
    /// on its host answered that it does not know the node, or nothing listens on its
    /// distribution port), as opposed to a failure that leaves it unknown (a timeout, a
    /// connection cut during the handshake, a refused handshake, an application
    /// stopped). The agent never forms a new cluster beside a registered node that may
    /// be alive: that is how a transient failure becomes a split.
    pub gone: bool,
    /// For a node that is not live: it is booting (RabbitMQ: the `rabbit` application is
    /// starting). A registered booting node is the seed of a managed node that is itself
    /// booting when no registered node is live yet: both boots then form one cluster.
    pub booting: bool,
}

impl Probe {
    /// A node that is not live, or could not be reached: it may still be alive.
    pub fn down(node: NodeName, reason: impl Into<String>) -> Probe {
        Probe {
            node,
            live: false,
            membership: Membership::default(),
            started_at_ms: None,
            reason: Some(reason.into()),
            gone: false,
            booting: false,
        }
    }

    /// A node that is booting (see [`booting`](Self::booting)).
    pub fn booting(node: NodeName) -> Probe {
        Probe {
            booting: true,
            ..Probe::down(node, "booting")
        }
    }

    /// A node proven not to run (see [`gone`](Self::gone)).
    pub fn gone(node: NodeName, reason: impl Into<String>) -> Probe {
        Probe {
            gone: true,
            ..Probe::down(node, reason)
        }
    }

    /// A node a call to which failed with `error`: [`gone`](Self::gone) when the error
    /// proves the node is not running, [`down`](Self::down) otherwise.
    pub fn failed(node: NodeName, error: &RpcError) -> Probe {
        if proves_not_running(error) {
            Probe::gone(node, error.to_string())
        } else {
            Probe::down(node, error.to_string())
        }
    }

    /// The size of the node's cluster (1 for a standalone node).
    pub fn cluster_size(&self) -> usize {
        self.membership.members.len().max(usize::from(self.live))
    }
}

/// The cluster membership of the managed node, as the node itself reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Membership {
    /// Whether the node (its cluster software) is running.
    pub running: bool,
    /// Every member of its cluster, itself included (RabbitMQ: `nodes`; Erlang mesh:
    /// itself and `nodes()`).
    pub members: Vec<NodeName>,
    /// The members currently running (RabbitMQ: `running_nodes`).
    pub running_members: Vec<NodeName>,
    /// Nodes it considers partitioned away (RabbitMQ: `partitions`).
    pub partitions: Vec<NodeName>,
    /// Not running yet but starting: its cluster software is booting (RabbitMQ: the
    /// `rabbit` application's boot has not finished). A booting node's members are not
    /// known yet (`members` holds the node alone). The agent cannot read a booting node's
    /// data: a target that reports booting nodes checks their data itself in
    /// [`ClusterTarget::join_membership`].
    pub booting: bool,
}

impl Membership {
    /// Whether `node` is a running member that is not partitioned.
    pub fn lists_running(&self, node: &NodeName) -> bool {
        self.running_members.contains(node) && !self.partitions.contains(node)
    }
}

/// Whether joining another cluster would throw something away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataState {
    /// Nothing but defaults: safe to reset and join.
    Empty,
    /// The node holds data that a reset would destroy; each entry names what (e.g.
    /// `"1 queue: / durable_q"`).
    HasData(Vec<String>),
    /// The node is a member of another cluster, with these other members.
    OtherCluster(Vec<NodeName>),
}

impl fmt::Display for DataState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataState::Empty => f.write_str("no data"),
            DataState::HasData(what) => write!(f, "data: {}", what.join("; ")),
            DataState::OtherCluster(members) => {
                let names: Vec<&str> = members.iter().map(NodeName::as_str).collect();
                write!(f, "membership of another cluster with {}", names.join(", "))
            }
        }
    }
}

/// How far [`ClusterTarget::form_membership`] or [`ClusterTarget::join_membership`] took
/// the managed node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Done: the node runs as the first member of a new cluster, or as a member of the
    /// seed's cluster.
    Complete,
    /// The node's membership is settled and nothing left changes it: a recorded member
    /// of the seed's cluster whose application still has to start, or a booting node
    /// whose boot forms a new cluster. The agent registers it, releases the startup lock
    /// and then runs [`ClusterTarget::finish`].
    Recorded,
    /// The node's boot has been told whom to join, and it is a member only once its boot
    /// has joined. The agent releases the startup lock, runs [`ClusterTarget::finish`],
    /// checks the membership, and registers the node only then: a boot that could not
    /// join (and started standalone) is never registered, so no other node joins it.
    Decided,
}

/// What a formation agent acts on: the node being clustered.
///
/// The crate provides targets for a plain Erlang node ([`super::ErlangMesh`]), a RabbitMQ
/// node ([`super::RabbitMq`]) and this Rust process itself ([`super::LocalTarget`]);
/// implement it to cluster something else that speaks Erlang distribution.
#[async_trait::async_trait]
pub trait ClusterTarget: Send + Sync + fmt::Debug {
    /// The managed node's name: what is registered and what others join.
    fn node(&self) -> &NodeName;

    /// A short name for logs (`"erlang"`, `"rabbitmq"`, `"local"`).
    fn kind(&self) -> &'static str;

    /// Checks whether another node is live, from the outside (as a hidden node): connect
    /// and call. An unreachable node is `Ok` with `live: false`; `Err` only for errors
    /// that make probing itself impossible (e.g. the local node stopped).
    async fn probe(&self, node: &NodeName) -> Result<Probe, FormationError>;

    /// The managed node's own view of its cluster.
    async fn membership(&self) -> Result<Membership, FormationError>;

    /// Whether joining another cluster would discard anything on the managed node.
    async fn data_state(&self) -> Result<DataState, FormationError>;

    /// Makes the managed node the first member of a new cluster (e.g. make sure its
    /// application runs). The agent also calls it before joining when
    /// [`membership`](Self::membership) reports the node not running, to start a
    /// stopped application.
    async fn form(&self) -> Result<(), FormationError>;

    /// Joins the managed node to `seed`'s cluster. `reset_allowed` is true only when the
    /// caller explicitly allowed discarding the node's data.
    async fn join(&self, seed: &NodeName, reset_allowed: bool) -> Result<(), FormationError>;

    /// The part of a join that decides the managed node's membership; the agent runs it
    /// under the startup lock. Returns [`Stage::Recorded`] or [`Stage::Decided`] when
    /// work is left that changes no membership (RabbitMQ: starting the application, or
    /// the rest of a first boot; seconds): the agent then releases the lock, so that the
    /// next node's join overlaps that work, and calls [`finish`](Self::finish).
    ///
    /// The agent calls it without reading [`data_state`](Self::data_state) first when
    /// [`membership`](Self::membership) reports the node [booting](Membership::booting)
    /// (its data cannot be read yet): a target that reports booting nodes checks their
    /// data itself, with `reset_allowed` as configured.
    ///
    /// The default runs the whole [`join`](Self::join) and returns [`Stage::Complete`].
    /// A target that returns another stage must leave a node that the next agent can
    /// finish if `finish` is never called (the agent died): a stopped application is
    /// started by [`form`](Self::form) and found a member; a boot finishes by itself.
    async fn join_membership(
        &self,
        seed: &NodeName,
        reset_allowed: bool,
    ) -> Result<Stage, FormationError> {
        self.join(seed, reset_allowed).await?;
        Ok(Stage::Complete)
    }

    /// The part of forming a new cluster that decides the managed node's membership, under
    /// the startup lock (see [`join_membership`](Self::join_membership)). The default runs
    /// [`form`](Self::form) and returns [`Stage::Complete`].
    async fn form_membership(&self) -> Result<Stage, FormationError> {
        self.form().await?;
        Ok(Stage::Complete)
    }

    /// Finishes what [`form_membership`](Self::form_membership) (`seed` is `None`) or
    /// [`join_membership`](Self::join_membership) left [`Stage::Recorded`] or
    /// [`Stage::Decided`], after the startup lock is released; the agent then checks the
    /// membership. The default does nothing.
    async fn finish(&self, seed: Option<&NodeName>) -> Result<(), FormationError> {
        let _ = seed;
        Ok(())
    }

    /// Re-establishes the distribution connection from the managed node to `member`
    /// (after formation, when a registered member is disconnected).
    async fn reconnect(&self, member: &NodeName) -> Result<bool, FormationError>;

    /// Removes a dead `member` from the managed node's cluster (cleanup).
    async fn forget(&self, member: &NodeName) -> Result<(), FormationError>;

    /// Leaves the cluster cleanly (scale-down).
    async fn leave(&self) -> Result<(), FormationError>;
}
