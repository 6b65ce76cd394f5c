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

    /// A live node with `membership`, its start time unknown.
    pub fn live(node: NodeName, membership: Membership) -> Probe {
        Probe {
            node,
            live: true,
            membership,
            started_at_ms: None,
            reason: None,
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
    /// known yet (`members` holds the node alone), and its data cannot be read: the plan
    /// tells a joinable first boot whom to join ([`Step::BootJoin`]), and waits for any
    /// other boot to finish ([`Step::Start`]) before deciding.
    pub booting: bool,
}

impl Membership {
    /// A running node whose `members` all run, with no partitions.
    pub fn running(members: Vec<NodeName>) -> Membership {
        Membership {
            running: true,
            running_members: members.clone(),
            members,
            partitions: Vec::new(),
            booting: false,
        }
    }

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

/// The metadata store a RabbitMQ node keeps its cluster membership in. It decides
/// whether joining is idempotent: a Mnesia node asked to join a cluster it belongs to
/// answers "already a member"; a Khepri node resets itself and is added again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataStore {
    /// Mnesia (RabbitMQ 3.x, and 4.0 - 4.2 unless Khepri is enabled).
    Mnesia,
    /// Khepri (RabbitMQ 4.x with `khepri_db` enabled; the only store from 4.3).
    Khepri,
}

/// What one inspection of the managed node found: the facts the
/// [formation plan](super::plan) decides from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Inspection {
    /// The node's own view of its cluster.
    pub membership: Membership,
    /// For a node in its first boot ([`Membership::booting`]): whether the boot can still
    /// be told whom to join ([`Step::BootJoin`]): RabbitMQ 3.10 - 3.12 with the classic
    /// config discovery, no configured peers and an empty database.
    pub boot_joinable: bool,
    /// The metadata store, for targets that have one (RabbitMQ).
    pub store: Option<MetadataStore>,
    /// What joining would discard: filled in from [`ClusterTarget::inventory`] when the
    /// plan asks for it ([`Decision::Inventory`](super::plan::Decision::Inventory)).
    pub data: Option<DataState>,
}

impl Inspection {
    /// For a member of a Khepri cluster whose majority is not running: its running,
    /// non-partitioned members (itself included) and its members. Khepri needs a majority
    /// of its members to change anything: such a node is not a cluster of one.
    pub fn majority_lost(&self) -> Option<(usize, usize)> {
        let m = &self.membership;
        if self.store != Some(MetadataStore::Khepri) || m.members.len() < 2 {
            return None;
        }
        let running = m.members.iter().filter(|n| m.lists_running(n)).count();
        (running * 2 <= m.members.len()).then_some((running, m.members.len()))
    }

    /// An inspection that found `membership` and nothing else.
    pub fn of(membership: Membership) -> Inspection {
        Inspection {
            membership,
            ..Inspection::default()
        }
    }

    /// The same inspection, with the boot found joinable or not.
    pub fn with_boot_joinable(mut self, joinable: bool) -> Inspection {
        self.boot_joinable = joinable;
        self
    }

    /// The same inspection, with the node's metadata store.
    pub fn with_store(mut self, store: MetadataStore) -> Inspection {
        self.store = Some(store);
        self
    }

    /// The same inspection, with the node's data already read.
    pub fn with_data(mut self, data: DataState) -> Inspection {
        self.data = Some(data);
        self
    }
}

/// A step the [formation plan](super::plan) gives a target to carry out
/// ([`ClusterTarget::execute`]); one step may be several calls on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Make the managed node the first member of a new cluster (e.g. make sure its
    /// application runs).
    Form,
    /// Start a stopped application, or wait for a boot to finish; the agent then
    /// inspects the node again.
    Start,
    /// Join `seed`'s cluster. `reset` is true only when the node holds data or belongs
    /// to another cluster and the configuration allowed discarding it. The flag records
    /// the plan's decision, taken on the inventory: a target does not check the data
    /// again, and carrying out a join may discard it whatever the flag says (RabbitMQ's
    /// join resets the node), so a direct caller reads [`ClusterTarget::inventory`] first.
    Join {
        /// The node to join.
        seed: NodeName,
        /// Whether the join discards the node's data (allowed by the configuration).
        reset: bool,
    },
    /// Tell a first boot whom its own peer discovery joins (`None`: it forms a new
    /// cluster); only given when [`Inspection::boot_joinable`] is true.
    BootJoin {
        /// The node the boot joins.
        seed: Option<NodeName>,
    },
    /// Finish what a step left at [`Stage::Recorded`] or [`Stage::Decided`], after the
    /// startup lock is released (`seed`: the node joined; `None` when forming).
    Finish {
        /// The seed joined, if any.
        seed: Option<NodeName>,
    },
    /// Leave the cluster cleanly (scale-down).
    Leave,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Form => f.write_str("form a new cluster"),
            Step::Start => f.write_str("start the application"),
            Step::Join { seed, reset: false } => write!(f, "join {seed}"),
            Step::Join { seed, reset: true } => write!(f, "reset and join {seed}"),
            Step::BootJoin { seed: Some(seed) } => write!(f, "tell the boot to join {seed}"),
            Step::BootJoin { seed: None } => f.write_str("tell the boot to form a new cluster"),
            Step::Finish { .. } => f.write_str("finish"),
            Step::Leave => f.write_str("leave the cluster"),
        }
    }
}

/// How far [`ClusterTarget::execute`] took the managed node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Done: the node runs as the first member of a new cluster, or as a member of the
    /// seed's cluster.
    Complete,
    /// The node's membership is settled and nothing left changes it: a recorded member
    /// of the seed's cluster whose application still has to start, or a booting node
    /// whose boot forms a new cluster. The agent registers it, releases the startup lock
    /// and then runs [`Step::Finish`].
    Recorded,
    /// The node's boot has been told whom to join, and it is a member only once its boot
    /// has joined. The agent releases the startup lock, runs [`Step::Finish`], checks the
    /// membership, and registers the node only then: a boot that could not join (and
    /// started standalone) is never registered, so no other node joins it.
    Decided,
}

/// What a formation agent acts on: the node being clustered.
///
/// A target reports facts ([`probe`](Self::probe), [`inspect`](Self::inspect),
/// [`inventory`](Self::inventory)) and carries out the [`Step`]s it is given
/// ([`execute`](Self::execute)); it decides nothing. What to do with the facts is the
/// [formation plan](super::plan)'s decision alone.
///
/// The crate provides targets for a plain Erlang node ([`super::ErlangMesh`]), a RabbitMQ
/// node ([`super::RabbitMq`]), this Rust process itself ([`super::LocalTarget`]) and a
/// cluster of Rust processes ([`super::NativeTarget`]); implement it to cluster something
/// else that speaks Erlang distribution.
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

    /// The managed node's own view of its cluster (read by health checks, by the watch,
    /// and to verify a finished step).
    async fn membership(&self) -> Result<Membership, FormationError>;

    /// What the plan decides from: the membership and, for targets that have them, the
    /// boot and metadata-store facts. One membership read. The default reports
    /// [`membership`](Self::membership) alone.
    async fn inspect(&self) -> Result<Inspection, FormationError> {
        Ok(Inspection::of(self.membership().await?))
    }

    /// What joining another cluster would discard on the managed node (read only when
    /// the plan asks for it, at most once per join).
    async fn inventory(&self) -> Result<DataState, FormationError>;

    /// Carries out `step` on the managed node and says how far it got. A step the target
    /// does not support is a [`FormationError::Config`] naming it.
    ///
    /// A target that returns [`Stage::Recorded`] or [`Stage::Decided`] must leave a node
    /// that the next agent can finish if [`Step::Finish`] never comes (the agent died):
    /// a stopped application is started by [`Step::Start`] and found a member; a boot
    /// finishes by itself.
    async fn execute(&self, step: &Step) -> Result<Stage, FormationError>;

    /// Re-establishes the distribution connection from the managed node to `member`
    /// (after formation, when a registered member is disconnected).
    async fn reconnect(&self, member: &NodeName) -> Result<bool, FormationError>;

    /// Removes a dead `member` from the managed node's cluster (cleanup).
    async fn forget(&self, member: &NodeName) -> Result<(), FormationError>;
}

/// The error of a target asked for a step it does not carry out.
pub(crate) fn unsupported(kind: &str, step: &Step) -> FormationError {
    FormationError::Config(format!("the {kind} target cannot {step}"))
}

/// The steps of a target whose node runs whenever it answers and which has no boot to
/// tell (the crate's Erlang mesh, local and native targets).
#[async_trait::async_trait]
pub(crate) trait MeshSteps: ClusterTarget {
    /// Becomes the first member of a new cluster.
    async fn form(&self) -> Result<(), FormationError>;
    /// Joins `seed`'s cluster.
    async fn join(&self, seed: &NodeName) -> Result<(), FormationError>;
    /// Leaves the cluster.
    async fn leave(&self) -> Result<(), FormationError>;
}

/// [`ClusterTarget::execute`] for a [`MeshSteps`] target: `Start` and `Finish` have
/// nothing to do, `BootJoin` is not supported; every step completes at once.
pub(crate) async fn execute_mesh<T: MeshSteps>(
    target: &T,
    step: &Step,
) -> Result<Stage, FormationError> {
    match step {
        Step::Form => target.form().await?,
        Step::Join { seed, .. } => target.join(seed).await?,
        Step::Leave => target.leave().await?,
        Step::Start | Step::Finish { .. } => {}
        step => return Err(unsupported(target.kind(), step)),
    }
    Ok(Stage::Complete)
}
