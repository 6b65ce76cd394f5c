//! A RabbitMQ node as a cluster target: [`RabbitMq`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::rpc::RpcError;
use crate::term::Term;
use crate::{Node, NodeName};

use super::FormationError;
use super::erlang::{CALL_TIMEOUT, node_list};
use super::target::{ClusterTarget, DataState, Membership, Probe, Stage};

/// The default limit of the calls that stop, join, reset or start the application.
const APP_TIMEOUT: Duration = Duration::from_secs(300);

/// How many names one [`DataState::HasData`] entry lists before "and N more".
const MAX_NAMES: usize = 10;

/// Global runtime parameters that RabbitMQ sets itself (not operator data).
const DEFAULT_GLOBAL_PARAMETERS: &[&str] = &[
    "internal_cluster_id",
    "cluster_tags",
    "imported_definition_hash_value",
];

/// A RabbitMQ version, as a node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RabbitVersion {
    /// Major version (3, 4, ...).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version (0 when absent).
    pub patch: u32,
    /// The text the node reported, e.g. `"3.10.8"` or `"4.1.0-rc.1"`.
    pub text: String,
}

impl RabbitVersion {
    /// Parses `MAJOR.MINOR[.PATCH][-suffix|+suffix]`; `None` without a major and minor.
    pub fn parse(text: &str) -> Option<RabbitVersion> {
        let core = text
            .trim()
            .split(['-', '+', ' '])
            .next()
            .unwrap_or_default();
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(RabbitVersion {
            major,
            minor,
            patch,
            text: text.trim().to_owned(),
        })
    }

    fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// Which generation of cluster functions the node has.
    fn family(&self) -> Family {
        if self.at_least(3, 13) {
            Family::Db
        } else if self.at_least(3, 12) {
            Family::Mnesia312
        } else {
            Family::Mnesia
        }
    }
}

impl std::fmt::Display for RabbitVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The generations of RabbitMQ's cluster functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// 3.10, 3.11: `rabbit_mnesia` for everything.
    Mnesia,
    /// 3.12: `rabbit_mnesia`, running nodes from `rabbit_nodes:list_running/0`.
    Mnesia312,
    /// 3.13 and later: `rabbit_db_cluster` / `rabbit_db` (Mnesia or Khepri behind them).
    Db,
}

/// A RabbitMQ node (3.10 through 4.x) as a cluster target, managed by remote calls from
/// this process's hidden [`Node`] (holding the node's cookie), with the functions of the
/// node's own RabbitMQ version.
///
/// # What is called, per version
///
/// The version is read once per node (`rabbit_misc:version/0`, or `rabbit:product_info/0`
/// when that fails) and cached until the connection to the node drops. The functions are
/// the ones `rabbitmqctl` itself calls for the same command:
///
/// | step | 3.10 / 3.11 | 3.12 | 3.13 and later |
/// |---|---|---|---|
/// | running? | `rabbit:is_running/0` | same | same |
/// | booting? | `rabbit_boot_state:get/0` | same | same |
/// | join or form during the first boot | `rabbit_peer_discovery:backend/0`, `application:get_env(rabbit, cluster_nodes)`, `rabbit_mnesia:dir/0`, `filelib:is_regular/1`, `application:set_env(rabbit, cluster_nodes, {Peers, disc})` | same | not taken: join by restart |
/// | cluster status | `rabbit_mnesia:status/0` | same | `rabbit_db_cluster:cli_cluster_status/0` (`rabbit_mnesia:status/0` if undefined) |
/// | running members | `rabbit_mnesia:cluster_nodes(running)` | `rabbit_nodes:list_running/0` | `running_nodes` of the status |
/// | partitions | `rabbit_node_monitor:partitions/0` | same | same (`[]` where undefined: 4.3+, Khepri has none) |
/// | join | `rabbit:stop/0`, `rabbit_mnesia:join_cluster(Seed, disc)`, `rabbit:start/0` | same | `rabbit:stop/0`, `rabbit_db_cluster:join(Seed, disc)`, `rabbit:start/0` |
/// | forget | `rabbit_mnesia:forget_cluster_node(Node, false)` | same | `rabbit_db_cluster:forget_member(Node, false)` |
/// | leave | `rabbit:stop/0`, `rabbit_mnesia:reset/0`, `rabbit:start/0` | same | `rabbit:stop/0`, `rabbit_db:reset/0`, `rabbit:start/0` |
///
/// On 3.13+ each `rabbit_db*` function falls back to its `rabbit_mnesia` counterpart when
/// it is undefined, as `rabbitmqctl` does. A failed join starts the application again
/// before returning the error, and `{error, Reason}` thrown by RabbitMQ is reported like a
/// returned one ([`FormationError::Unexpected`] naming the node, the step and the call).
///
/// Under an [`Agent`](super::Agent), a join runs in two parts
/// ([`ClusterTarget::join_membership`]): stopping the application and the join call run
/// under the startup lock; `rabbit:start/0`, which takes seconds and changes no
/// membership, runs after the lock is released ([`Stage::Recorded`]), so the next node's
/// join overlaps it. The node is registered before the release: the next agent sees it
/// (not yet live, not proven down) and joins a live member.
///
/// # Joining during the first boot
///
/// An agent started beside its broker finds it booting for the first time
/// ([`Membership::booting`]). On 3.10 – 3.12, when the node's database is still empty,
/// its peer discovery backend is the classic config (the default) and no peers are
/// configured, the agent decides under the lock and sets the `rabbit` application's
/// `cluster_nodes` to `{[Seed], disc}` (`{[], disc}` to form): the boot's own peer
/// discovery joins the seed at its database step (with RabbitMQ's discovery retries,
/// 10 × 500 ms by default, while the seed's database comes up), and the broker boots
/// once. [`finish`](ClusterTarget::finish) waits for the boot. A forming node is
/// registered at once ([`Stage::Recorded`]), so that the next nodes join it; a joining
/// node only once its boot has joined ([`Stage::Decided`]): a boot whose discovery gave
/// up starts standalone, unregistered, so nobody joins it, and the agent's next attempt
/// joins the empty node by restart. In every other case (a restart with data, another
/// discovery backend or configured peers, a boot past its database step, 3.13 and later,
/// whose discovery chooses the node to join itself) the agent waits for the boot and
/// joins by restart.
///
/// # What counts as empty
///
/// A freshly booted node holding only its defaults joins without being told twice; its
/// [`DataState`] is `Empty` when all of these hold (each read with the function named):
///
/// * no other cluster members (the cluster status);
/// * the only vhost is the default one (`rabbit_vhost:list_names/0`; the default is the
///   `rabbit` application's `default_vhost`, `/`);
/// * the only user is the default one (`rabbit_auth_backend_internal:list_users/0`; the
///   default is `default_user`, `guest`);
/// * no queues (`rabbit_amqqueue:list_names/0`), durable or not, in any vhost;
/// * no exchanges but the default (`""`) and `amq.*` ones (`rabbit_exchange:list_names/0`);
/// * no bindings from any exchange but the default one (`rabbit_binding:list/1` per vhost);
/// * no policies and no operator policies (`rabbit_policy:list/0`, `list_op/0`);
/// * no vhost runtime parameters (`rabbit_runtime_parameters:list/0`: shovels,
///   federation upstreams, vhost limits, ...) and no global ones but those RabbitMQ sets
///   itself (`list_global/0` minus `internal_cluster_id`, `cluster_tags` and
///   `imported_definition_hash_value`).
///
/// Anything else is [`DataState::HasData`], each entry naming what a reset would destroy
/// (`"1 queue in /: orders"`), or [`DataState::OtherCluster`].
///
/// # A stopped application
///
/// An agent killed between `rabbit:stop/0` and `rabbit:start/0` leaves a VM that answers
/// while its `rabbit` application is stopped. [`membership`](ClusterTarget::membership)
/// reports such a node as not running, with the members its cluster files list;
/// [`form`](ClusterTarget::form) starts the application; and the agent starts it before
/// deciding anything (its data cannot be read while it is stopped): a node that had
/// already joined is then a running member (the join is finished), a node that had not
/// is checked for data and joined as usual. [`join`](ClusterTarget::join) called directly
/// on a stopped node does the same.
///
/// # Leaving
///
/// [`leave`](ClusterTarget::leave) does what RabbitMQ's clustering guide does to remove a
/// node (`rabbitmqctl stop_app`, `reset`, `start_app`): the reset tells the other members
/// to remove it and **wipes the node's own data**, and the node is started again as a
/// standalone, empty broker (a stopped application would look like an interrupted join to
/// the next agent). Stop the node afterwards if it is being scaled down.
///
/// ```no_run
/// use std::sync::Arc;
/// use autocluster::backend::MemoryBackend;
/// use autocluster::formation::{Agent, FormationConfig, RabbitMq};
/// use autocluster::{Cookie, Node};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let probe = Node::builder("agent@localhost".parse()?, Cookie::new("secret")?)
///     .start()
///     .await?;
/// let rabbit = RabbitMq::new(probe, "rabbit@localhost".parse()?);
/// let agent = Agent::new(
///     Arc::new(MemoryBackend::new()), // etcd, Consul, ... in a real deployment
///     Arc::new(rabbit.clone()),
///     FormationConfig::default(),
/// );
/// let formed = agent.run().await?;
/// println!("{}: {}", formed.node, formed.outcome);
/// println!("{}", rabbit.cluster_status().await?);
/// // [{nodes,[{disc,[rabbit@localhost]}]},{running_nodes,[rabbit@localhost]},...]
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RabbitMq {
    probe: Node,
    node: NodeName,
    timeout: Duration,
    app_timeout: Duration,
    versions: Arc<Mutex<HashMap<NodeName, RabbitVersion>>>,
}

impl RabbitMq {
    /// Manages the RabbitMQ node `node` through `probe`, a hidden Rust node holding the
    /// same cookie.
    pub fn new(probe: Node, node: NodeName) -> RabbitMq {
        RabbitMq {
            probe,
            node,
            timeout: CALL_TIMEOUT,
            app_timeout: APP_TIMEOUT,
            versions: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Sets the limit of each call that only reads (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> RabbitMq {
        self.timeout = timeout;
        self
    }

    /// Sets the limit of each call that stops, joins, resets or starts the `rabbit`
    /// application, and of waiting for a booting node (default 300 s: a node whose
    /// cluster peers are down waits up to 5 minutes for their tables).
    pub fn with_app_timeout(mut self, timeout: Duration) -> RabbitMq {
        self.app_timeout = timeout;
        self
    }

    /// The hidden node the calls are made from.
    pub fn probe_node(&self) -> &Node {
        &self.probe
    }

    async fn call(
        &self,
        step: &'static str,
        on: &NodeName,
        (m, f): (&str, &str),
        args: Vec<Term>,
        timeout: Duration,
    ) -> Result<Term, FormationError> {
        tracing::trace!(node = %on, "{m}:{f}/{}", args.len());
        match self.probe.call(on, m, f, args, timeout).await {
            Ok(t) => Ok(t),
            Err(e) => {
                if matches!(e, RpcError::Connect(_) | RpcError::ConnectionLost { .. }) {
                    // The node may come back as another version.
                    self.forget_version(on);
                }
                Err(FormationError::rpc(step, on, e))
            }
        }
    }

    /// Like [`call`](Self::call), but `Ok(None)` when the function is undefined on the
    /// node (another RabbitMQ version).
    async fn call_if_defined(
        &self,
        step: &'static str,
        on: &NodeName,
        (m, f): (&str, &str),
        args: Vec<Term>,
        timeout: Duration,
    ) -> Result<Option<Term>, FormationError> {
        match self.call(step, on, (m, f), args, timeout).await {
            Ok(t) => Ok(Some(t)),
            Err(FormationError::Rpc { source, .. }) if undefined(&source, m, f) => {
                tracing::debug!(node = %on, "{m}:{f} is undefined there");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn forget_version(&self, node: &NodeName) {
        if let Ok(mut cache) = self.versions.lock() {
            cache.remove(node);
        }
    }

    /// The RabbitMQ version of `node` (cached per node until its connection drops).
    pub async fn version(&self, node: &NodeName) -> Result<RabbitVersion, FormationError> {
        if let Some(v) = self.versions.lock().ok().and_then(|c| c.get(node).cloned()) {
            return Ok(v);
        }
        const STEP: &str = "reading the RabbitMQ version";
        let text = match self
            .call_if_defined(STEP, node, ("rabbit_misc", "version"), vec![], self.timeout)
            .await?
        {
            Some(t) => t.as_text().map(|s| s.into_owned()),
            None => None,
        };
        let text = match text {
            Some(text) => text,
            None => {
                let info = self
                    .call(STEP, node, ("rabbit", "product_info"), vec![], self.timeout)
                    .await?;
                ["product_base_version", "product_version", "version"]
                    .iter()
                    .find_map(|k| info.map_get(&Term::atom(*k)))
                    .and_then(|v| v.as_text().map(|s| s.into_owned()))
                    .ok_or_else(|| {
                        FormationError::unexpected(
                            STEP,
                            node,
                            format!("rabbit:product_info() answered {info}: no version in it"),
                        )
                    })?
            }
        };
        let version = RabbitVersion::parse(&text).ok_or_else(|| {
            FormationError::unexpected(STEP, node, format!("cannot parse the version {text:?}"))
        })?;
        tracing::debug!(%node, %version, family = ?version.family(), "RabbitMQ version");
        if let Ok(mut cache) = self.versions.lock() {
            cache.insert(node.clone(), version.clone());
        }
        Ok(version)
    }

    /// Whether the `rabbit` application of `node` is running (booted).
    async fn is_running(&self, node: &NodeName) -> Result<bool, FormationError> {
        let t = self
            .call(
                "checking that RabbitMQ runs",
                node,
                ("rabbit", "is_running"),
                vec![],
                self.timeout,
            )
            .await?;
        t.as_bool().ok_or_else(|| {
            FormationError::unexpected(
                "checking that RabbitMQ runs",
                node,
                format!("rabbit:is_running() answered {t}"),
            )
        })
    }

    /// Whether the `rabbit` application of `node` is booting (`rabbit_boot_state:get/0`;
    /// `false` where it is undefined).
    async fn is_booting(&self, node: &NodeName) -> Result<bool, FormationError> {
        let state = self
            .call_if_defined(
                "reading the boot state",
                node,
                ("rabbit_boot_state", "get"),
                vec![],
                self.timeout,
            )
            .await?;
        Ok(state.is_some_and(|t| t.is_atom("booting")))
    }

    /// Whether the managed node is booting and its boot has yet to choose its cluster:
    /// its database is still empty (RabbitMQ runs peer discovery only then) and its
    /// discovery backend is the classic config, which reads the `rabbit` application's
    /// `cluster_nodes` when the boot reaches its database step.
    async fn boot_undecided(&self, version: &RabbitVersion) -> Result<bool, FormationError> {
        const STEP: &str = "checking whether the boot has chosen its cluster";
        // 3.13 and later choose the node to join themselves among the discovered ones
        // (largest cluster, oldest, name): not told a seed this way.
        if version.family() == Family::Db
            || self.is_running(&self.node).await?
            || !self.is_booting(&self.node).await?
        {
            return Ok(false);
        }
        let backend = self
            .call_if_defined(
                STEP,
                &self.node,
                ("rabbit_peer_discovery", "backend"),
                vec![],
                self.timeout,
            )
            .await?;
        if !backend.is_some_and(|b| b.is_atom("rabbit_peer_discovery_classic_config")) {
            return Ok(false);
        }
        // Peers the operator configured are the boot's to use (and it may be retrying
        // them already): not overridden.
        let no_peers = match self.app_env_term("cluster_nodes").await? {
            None => true,
            Some(value) => match value.as_tuple() {
                Some([peers, _]) => peers.is_nil(),
                _ => value.is_nil(),
            },
        };
        if !no_peers {
            return Ok(false);
        }
        let dir = self
            .call(
                STEP,
                &self.node,
                ("rabbit_mnesia", "dir"),
                vec![],
                self.timeout,
            )
            .await?;
        let dir = dir.as_text().ok_or_else(|| {
            FormationError::unexpected(
                STEP,
                &self.node,
                format!("rabbit_mnesia:dir() answered {dir}"),
            )
        })?;
        let schema = format!("{}/schema.DAT", dir.trim_end_matches('/'));
        let exists = self
            .call(
                STEP,
                &self.node,
                ("filelib", "is_regular"),
                vec![Term::string(&schema)],
                self.timeout,
            )
            .await?;
        Ok(exists.as_bool() == Some(false))
    }

    /// Tells the booting managed node whom to join when its boot reaches peer discovery
    /// (`application:set_env(rabbit, cluster_nodes, {Peers, disc})`; none: form).
    async fn set_boot_peers(&self, peers: &[NodeName]) -> Result<(), FormationError> {
        const STEP: &str = "telling the booting node whom to join";
        let peers = peers.iter().map(|n| Term::atom(n.as_str())).collect();
        let r = self
            .call(
                STEP,
                &self.node,
                ("application", "set_env"),
                vec![
                    Term::atom("rabbit"),
                    Term::atom("cluster_nodes"),
                    Term::tuple(vec![Term::list(peers), Term::atom("disc")]),
                ],
                self.timeout,
            )
            .await?;
        check_ok(
            STEP,
            &self.node,
            "application:set_env(rabbit, cluster_nodes, ...)",
            &r,
        )
    }

    /// The cluster status of the managed node, as the node gives it to
    /// `rabbitmqctl cluster_status`: `[{nodes,[{disc,[...]}]},{running_nodes,[...]},
    /// {cluster_name,<<"...">>},{partitions,[...]}]` (only `nodes` while the
    /// application is stopped on 3.10 - 3.13; `[]` on a stopped Khepri node).
    pub async fn cluster_status(&self) -> Result<Term, FormationError> {
        let version = self.version(&self.node).await?;
        self.status_of(&self.node, &version).await
    }

    async fn status_of(
        &self,
        node: &NodeName,
        version: &RabbitVersion,
    ) -> Result<Term, FormationError> {
        const STEP: &str = "reading the cluster status";
        if version.family() == Family::Db
            && let Some(t) = self
                .call_if_defined(
                    STEP,
                    node,
                    ("rabbit_db_cluster", "cli_cluster_status"),
                    vec![],
                    self.timeout,
                )
                .await?
        {
            return Ok(t);
        }
        self.call(
            STEP,
            node,
            ("rabbit_mnesia", "status"),
            vec![],
            self.timeout,
        )
        .await
    }

    /// The membership of `node` as the node itself reports it.
    async fn read_membership(&self, node: &NodeName) -> Result<Membership, FormationError> {
        let version = self.version(node).await?;
        let running = self.is_running(node).await?;
        if !running && self.is_booting(node).await? {
            // Mid-boot, the cluster status is not there yet (on a first boot, reading it
            // fails: no cluster files).
            return Ok(Membership {
                running: false,
                members: vec![node.clone()],
                running_members: Vec::new(),
                partitions: Vec::new(),
                booting: true,
            });
        }
        let status = self.status_of(node, &version).await?;
        let mut members = status_members(&status).ok_or_else(|| {
            FormationError::unexpected(
                "reading the cluster status",
                node,
                format!("unexpected cluster status {status}"),
            )
        })?;
        if members.is_empty() {
            // A stopped Khepri node answers `[]`: it knows at least itself.
            members.push(node.clone());
        }
        if !running {
            return Ok(Membership {
                running: false,
                members,
                running_members: Vec::new(),
                partitions: Vec::new(),
                booting: false,
            });
        }
        const STEP: &str = "listing the running members";
        let running_members = match version.family() {
            Family::Mnesia => {
                let t = self
                    .call(
                        STEP,
                        node,
                        ("rabbit_mnesia", "cluster_nodes"),
                        vec![Term::atom("running")],
                        self.timeout,
                    )
                    .await?;
                nodes_or_error(STEP, node, "rabbit_mnesia:cluster_nodes(running)", &t)?
            }
            Family::Mnesia312 => {
                let t = self
                    .call(
                        STEP,
                        node,
                        ("rabbit_nodes", "list_running"),
                        vec![],
                        self.timeout,
                    )
                    .await?;
                nodes_or_error(STEP, node, "rabbit_nodes:list_running()", &t)?
            }
            Family::Db => proplist_get(&status, "running_nodes")
                .and_then(node_list)
                .unwrap_or_default(),
        };
        let partitions = match self
            .call_if_defined(
                "reading the partitions",
                node,
                ("rabbit_node_monitor", "partitions"),
                vec![],
                self.timeout,
            )
            .await?
        {
            Some(t) => nodes_or_error(
                "reading the partitions",
                node,
                "rabbit_node_monitor:partitions()",
                &t,
            )?,
            None => Vec::new(),
        };
        Ok(Membership {
            running: true,
            members: sorted(members),
            running_members: sorted(running_members),
            partitions: sorted(partitions),
            booting: false,
        })
    }

    /// Starts the `rabbit` application of the managed node, unless it runs, and waits
    /// until it has booted.
    async fn ensure_running(&self, why: &'static str) -> Result<(), FormationError> {
        if self.is_running(&self.node).await? {
            return Ok(());
        }
        tracing::info!(node = %self.node, "{why}: starting the rabbit application");
        self.start_app().await
    }

    async fn start_app(&self) -> Result<(), FormationError> {
        const STEP: &str = "starting the rabbit application";
        let started = Instant::now();
        let r = self
            .call(
                STEP,
                &self.node,
                ("rabbit", "start"),
                vec![],
                self.app_timeout,
            )
            .await
            .or_else(thrown_error)?;
        check_ok(STEP, &self.node, "rabbit:start()", &r)?;
        // rabbit:start() returns at once when the node is already booting.
        self.wait_booted(started).await
    }

    /// Waits until the managed node's `rabbit` application runs (at most the
    /// application timeout from `started`).
    async fn wait_booted(&self, started: Instant) -> Result<(), FormationError> {
        const STEP: &str = "starting the rabbit application";
        loop {
            match self.is_running(&self.node).await {
                Ok(true) => break,
                Ok(false) => {}
                // A VM that is gone will not finish booting; any other failure (a
                // timeout, a cut connection) may pass: ask again until the deadline.
                Err(FormationError::Rpc { source, .. })
                    if !super::target::proves_not_running(&source) => {}
                Err(e) => return Err(e),
            }
            if started.elapsed() > self.app_timeout {
                return Err(FormationError::unexpected(
                    STEP,
                    &self.node,
                    format!(
                        "the rabbit application did not finish booting within {:?}",
                        self.app_timeout
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!(node = %self.node, elapsed_ms = started.elapsed().as_millis() as u64, "rabbit application started");
        Ok(())
    }

    async fn stop_app(&self) -> Result<(), FormationError> {
        const STEP: &str = "stopping the rabbit application";
        let r = self
            .call(
                STEP,
                &self.node,
                ("rabbit", "stop"),
                vec![],
                self.app_timeout,
            )
            .await
            .or_else(thrown_error)?;
        check_ok(STEP, &self.node, "rabbit:stop()", &r)?;
        tracing::info!(node = %self.node, "rabbit application stopped");
        Ok(())
    }

    /// Calls `db` on 3.13+ (the Khepri-era `rabbit_db*` function) when the node defines
    /// it, else `mnesia`, with the application timeout; `{error, R}` thrown by RabbitMQ is
    /// read as a returned error. Returns the answer and the function that gave it.
    async fn call_db_or_mnesia(
        &self,
        step: &'static str,
        version: &RabbitVersion,
        db: (&'static str, &'static str),
        mnesia: (&'static str, &'static str),
        args: Vec<Term>,
    ) -> Result<(Term, (&'static str, &'static str)), FormationError> {
        if version.family() == Family::Db
            && let Some(r) = self
                .call_if_defined(step, &self.node, db, args.clone(), self.app_timeout)
                .await
                .or_else(|e| thrown_error(e).map(Some))?
        {
            return Ok((r, db));
        }
        let r = self
            .call(step, &self.node, mnesia, args, self.app_timeout)
            .await
            .or_else(thrown_error)?;
        Ok((r, mnesia))
    }

    /// The join call itself, with the application stopped.
    async fn join_call(
        &self,
        seed: &NodeName,
        version: &RabbitVersion,
    ) -> Result<(), FormationError> {
        const STEP: &str = "joining";
        let args = vec![Term::atom(seed.as_str()), Term::atom("disc")];
        let (r, (m, f)) = self
            .call_db_or_mnesia(
                STEP,
                version,
                ("rabbit_db_cluster", "join"),
                ("rabbit_mnesia", "join_cluster"),
                args,
            )
            .await?;
        let called = format!("{m}:{f}");
        if r.is_atom("ok") {
            tracing::info!(node = %self.node, %seed, "{called}({seed}, disc) returned ok");
            return Ok(());
        }
        if let Some([ok, already]) = r.as_tuple()
            && ok.is_atom("ok")
            && already.is_atom("already_member")
        {
            tracing::info!(node = %self.node, %seed, "already a member of the seed's cluster");
            return Ok(());
        }
        Err(FormationError::unexpected(
            STEP,
            &self.node,
            format!("{called}({seed}, disc) returned {r}"),
        ))
    }

    async fn reset_call(&self, version: &RabbitVersion) -> Result<(), FormationError> {
        const STEP: &str = "resetting";
        let (r, (m, f)) = self
            .call_db_or_mnesia(
                STEP,
                version,
                ("rabbit_db", "reset"),
                ("rabbit_mnesia", "reset"),
                vec![],
            )
            .await?;
        check_ok(STEP, &self.node, &format!("{m}:{f}()"), &r)
    }

    /// The `rabbit` application's `key` on the managed node, as text.
    async fn app_env(&self, key: &str) -> Result<Option<String>, FormationError> {
        Ok(self
            .app_env_term(key)
            .await?
            .and_then(|v| v.as_text().map(|s| s.into_owned())))
    }

    /// The `rabbit` application's `key` on the managed node (`None`: unset).
    async fn app_env_term(&self, key: &str) -> Result<Option<Term>, FormationError> {
        let t = self
            .call(
                "reading the rabbit application's environment",
                &self.node,
                ("application", "get_env"),
                vec![Term::atom("rabbit"), Term::atom(key)],
                self.timeout,
            )
            .await?;
        Ok(match t.as_tuple() {
            Some([ok, v]) if ok.is_atom("ok") => Some(v.clone()),
            _ => None,
        })
    }

    /// Calls a function of the managed node that returns a list, for the data check.
    async fn read_list(
        &self,
        (m, f): (&str, &str),
        args: Vec<Term>,
    ) -> Result<Vec<Term>, FormationError> {
        const STEP: &str = "reading the node's data";
        let t = self
            .call(STEP, &self.node, (m, f), args, self.timeout)
            .await?;
        match t {
            Term::List(items) => Ok(items),
            Term::ByteList(b) if b.is_empty() => Ok(Vec::new()),
            other => Err(bad(STEP, &self.node, &format!("{m}:{f}"), &other)),
        }
    }

    /// Reads what a reset would destroy on the managed node (its application running).
    async fn read_data(&self, membership: &Membership) -> Result<DataState, FormationError> {
        const STEP: &str = "reading the node's data";
        let node = &self.node;
        let others: Vec<NodeName> = membership
            .members
            .iter()
            .filter(|m| *m != node)
            .cloned()
            .collect();
        if !others.is_empty() {
            return Ok(DataState::OtherCluster(others));
        }
        if !membership.running {
            return Err(FormationError::unexpected(
                STEP,
                node,
                "the rabbit application is stopped, so its data cannot be read",
            ));
        }
        let unexpected = |called: &str, t: &Term| bad(STEP, node, called, t);
        let default_vhost = self.app_env("default_vhost").await?;
        let default_vhost = default_vhost.as_deref().unwrap_or("/");
        let default_user = self.app_env("default_user").await?;
        let default_user = default_user.as_deref().unwrap_or("guest");
        let mut found = Vec::new();

        let mut vhosts = Vec::new();
        for v in self
            .read_list(("rabbit_vhost", "list_names"), vec![])
            .await?
        {
            let name = v
                .as_text()
                .ok_or_else(|| unexpected("rabbit_vhost:list_names()", &v))?;
            vhosts.push(name.into_owned());
        }
        let extra: Vec<String> = vhosts
            .iter()
            .filter(|v| *v != default_vhost)
            .cloned()
            .collect();
        if !extra.is_empty() {
            let (one, many) = (
                format!("vhost besides {default_vhost}"),
                format!("vhosts besides {default_vhost}"),
            );
            found.push(listing(&one, &many, None, extra));
        }

        let users: Vec<String> = self
            .read_list(("rabbit_auth_backend_internal", "list_users"), vec![])
            .await?
            .iter()
            .map(|u| prop_text(u, "user"))
            .filter(|u| u != default_user)
            .collect();
        if !users.is_empty() {
            let (one, many) = (
                format!("user besides {default_user}"),
                format!("users besides {default_user}"),
            );
            found.push(listing(&one, &many, None, users));
        }

        let mut queues = Vec::new();
        for q in self
            .read_list(("rabbit_amqqueue", "list_names"), vec![])
            .await?
        {
            queues
                .push(resource(&q).ok_or_else(|| unexpected("rabbit_amqqueue:list_names()", &q))?);
        }
        found.extend(per_vhost("queue", "queues", queues));

        let mut exchanges = Vec::new();
        for x in self
            .read_list(("rabbit_exchange", "list_names"), vec![])
            .await?
        {
            let (vhost, name) =
                resource(&x).ok_or_else(|| unexpected("rabbit_exchange:list_names()", &x))?;
            if !name.is_empty() && !name.starts_with("amq.") {
                exchanges.push((vhost, name));
            }
        }
        found.extend(per_vhost("exchange", "exchanges", exchanges));

        let mut bindings = Vec::new();
        for vhost in &vhosts {
            let args = vec![Term::binary(vhost.as_bytes())];
            for b in self.read_list(("rabbit_binding", "list"), args).await? {
                // #binding{source, key, destination, args}
                let parsed = match b.as_tuple() {
                    Some([_, source, key, destination, ..]) => resource(source)
                        .zip(resource(destination))
                        .map(|((_, src), (_, dst))| (src, key, dst)),
                    _ => None,
                };
                let (src, key, dst) =
                    parsed.ok_or_else(|| unexpected("rabbit_binding:list/1", &b))?;
                if !src.is_empty() {
                    // (The default exchange's bindings are implicit.)
                    let key = key.as_text().unwrap_or_default();
                    bindings.push((vhost.clone(), format!("{src} -> {dst} ({key:?})")));
                }
            }
        }
        found.extend(per_vhost("binding", "bindings", bindings));

        for (function, one, many) in [
            ("list", "policy", "policies"),
            ("list_op", "operator policy", "operator policies"),
        ] {
            let named = self
                .read_list(("rabbit_policy", function), vec![])
                .await?
                .iter()
                .map(|p| (prop_text(p, "vhost"), prop_text(p, "name")))
                .collect();
            found.extend(per_vhost(one, many, named));
        }

        let params = self
            .read_list(("rabbit_runtime_parameters", "list"), vec![])
            .await?
            .iter()
            .map(|p| {
                let name = format!("{}/{}", prop_text(p, "component"), prop_text(p, "name"));
                (prop_text(p, "vhost"), name)
            })
            .collect();
        found.extend(per_vhost("runtime parameter", "runtime parameters", params));

        let globals: Vec<String> = self
            .read_list(("rabbit_runtime_parameters", "list_global"), vec![])
            .await?
            .iter()
            .map(|p| prop_text(p, "name"))
            .filter(|n| !DEFAULT_GLOBAL_PARAMETERS.contains(&n.as_str()))
            .collect();
        if !globals.is_empty() {
            found.push(listing(
                "global parameter",
                "global parameters",
                None,
                globals,
            ));
        }

        Ok(if found.is_empty() {
            DataState::Empty
        } else {
            DataState::HasData(found)
        })
    }
}

#[async_trait::async_trait]
impl ClusterTarget for RabbitMq {
    fn node(&self) -> &NodeName {
        &self.node
    }

    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    async fn probe(&self, node: &NodeName) -> Result<Probe, FormationError> {
        match self.is_running(node).await {
            Ok(true) => {}
            Ok(false) => {
                if self.is_booting(node).await.unwrap_or(false) {
                    return Ok(Probe::booting(node.clone()));
                }
                return Ok(Probe::down(
                    node.clone(),
                    "the rabbit application is not running",
                ));
            }
            Err(FormationError::Rpc { source, .. }) if source.is_undef() => {
                return Ok(Probe::down(
                    node.clone(),
                    "not a RabbitMQ node (rabbit:is_running/0 is undefined)",
                ));
            }
            Err(FormationError::Rpc { source, .. }) => {
                return Ok(Probe::failed(node.clone(), &source));
            }
            Err(e) => return Ok(Probe::down(node.clone(), e.to_string())),
        }
        let membership = match self.read_membership(node).await {
            Ok(m) if m.running => m,
            Ok(_) => {
                return Ok(Probe::down(node.clone(), "the rabbit application stopped"));
            }
            Err(e) => return Ok(Probe::down(node.clone(), e.to_string())),
        };
        let started_at_ms = self
            .probe
            .call(
                node,
                "erlang",
                "statistics",
                vec![Term::atom("wall_clock")],
                self.timeout,
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
                    .as_millis();
                u64::try_from(now)
                    .ok()?
                    .checked_sub(u64::try_from(uptime).ok()?)
            });
        Ok(Probe {
            node: node.clone(),
            live: true,
            membership,
            started_at_ms,
            reason: None,
            gone: false,
            booting: false,
        })
    }

    async fn membership(&self) -> Result<Membership, FormationError> {
        self.read_membership(&self.node).await
    }

    async fn data_state(&self) -> Result<DataState, FormationError> {
        let membership = self.read_membership(&self.node).await?;
        self.read_data(&membership).await
    }

    async fn form(&self) -> Result<(), FormationError> {
        match self.form_membership().await? {
            Stage::Complete => Ok(()),
            _ => self.finish(None).await,
        }
    }

    async fn form_membership(&self) -> Result<Stage, FormationError> {
        let version = self.version(&self.node).await?;
        if self.boot_undecided(&version).await? {
            self.set_boot_peers(&[]).await?;
            tracing::info!(node = %self.node, "booting for the first time: its boot forms a new cluster");
            return Ok(Stage::Recorded);
        }
        self.ensure_running("forming a new cluster").await?;
        Ok(Stage::Complete)
    }

    async fn join(&self, seed: &NodeName, reset_allowed: bool) -> Result<(), FormationError> {
        match self.join_membership(seed, reset_allowed).await? {
            Stage::Complete => Ok(()),
            _ => self.finish(Some(seed)).await,
        }
    }

    async fn join_membership(
        &self,
        seed: &NodeName,
        reset_allowed: bool,
    ) -> Result<Stage, FormationError> {
        let version = self.version(&self.node).await?;
        if self.boot_undecided(&version).await? {
            // An empty node in its first boot: its boot joins the seed (RabbitMQ's own
            // peer discovery, with its retries while the seed's database comes up), with
            // nothing to discard and no second boot.
            self.set_boot_peers(std::slice::from_ref(seed)).await?;
            tracing::info!(node = %self.node, %seed, "booting for the first time: its boot joins the seed");
            return Ok(Stage::Decided);
        }
        // The data can only be read, and the join only decided, with the application
        // running: an interrupted join leaves it stopped.
        self.ensure_running("the application is stopped (an interrupted join?)")
            .await?;
        let membership = self.read_membership(&self.node).await?;
        if membership.members.contains(seed) && membership.lists_running(seed) {
            tracing::info!(node = %self.node, %seed, "already a running member of the seed's cluster");
            return Ok(Stage::Complete);
        }
        let data = self.read_data(&membership).await?;
        if data != DataState::Empty {
            if !reset_allowed {
                return Err(FormationError::DataAtRisk {
                    node: self.node.clone(),
                    seed: seed.clone(),
                    data,
                });
            }
            tracing::warn!(node = %self.node, %seed, %data, "joining resets the node and discards this (allowed)");
        }
        self.stop_app().await?;
        if let Err(e) = self.join_call(seed, &version).await {
            // Start again, so that a failed join does not leave the broker stopped.
            if let Err(start) = self.start_app().await {
                tracing::error!(node = %self.node, error = %start, "the application did not start again after a failed join");
            }
            return Err(e);
        }
        // The seed's cluster now lists the node; starting the application (seconds)
        // changes no membership.
        Ok(Stage::Recorded)
    }

    async fn finish(&self, _seed: Option<&NodeName>) -> Result<(), FormationError> {
        if self.is_running(&self.node).await? {
            return Ok(());
        }
        if self.is_booting(&self.node).await? {
            return self.wait_booted(Instant::now()).await;
        }
        self.start_app().await
    }

    async fn reconnect(&self, member: &NodeName) -> Result<bool, FormationError> {
        let r = self
            .call(
                "reconnecting",
                &self.node,
                ("net_kernel", "connect_node"),
                vec![Term::atom(member.as_str())],
                self.timeout,
            )
            .await?;
        Ok(r.is_atom("true"))
    }

    async fn forget(&self, member: &NodeName) -> Result<(), FormationError> {
        const STEP: &str = "forgetting a member";
        let version = self.version(&self.node).await?;
        let args = vec![Term::atom(member.as_str()), Term::atom("false")];
        let (r, (m, f)) = self
            .call_db_or_mnesia(
                STEP,
                &version,
                ("rabbit_db_cluster", "forget_member"),
                ("rabbit_mnesia", "forget_cluster_node"),
                args,
            )
            .await?;
        let called = format!("{m}:{f}");
        check_ok(STEP, &self.node, &format!("{called}({member}, false)"), &r)?;
        tracing::warn!(node = %self.node, %member, "forgot a cluster member");
        Ok(())
    }

    async fn leave(&self) -> Result<(), FormationError> {
        let version = self.version(&self.node).await?;
        self.stop_app().await?;
        let reset = self.reset_call(&version).await;
        let started = self.start_app().await;
        reset?;
        started?;
        tracing::info!(node = %self.node, "left the cluster (reset; running standalone)");
        Ok(())
    }
}

/// Whether `e` says that `m:f` itself is undefined (not some function it called: the
/// top frame of an `undef` stack trace is the missing function).
fn undefined(e: &RpcError, m: &str, f: &str) -> bool {
    if !e.is_undef() {
        return false;
    }
    let RpcError::Exception {
        stacktrace: Some(stack),
        ..
    } = e
    else {
        return true; // `rex` gives no stack trace
    };
    match list_items(stack)
        .and_then(|frames| frames.first())
        .and_then(Term::as_tuple)
    {
        Some([module, function, ..]) => module.is_atom(m) && function.is_atom(f),
        _ => true,
    }
}

/// An exception carrying `{error, Reason}` (RabbitMQ throws those) becomes the value,
/// so that it is reported like a returned error; any other failure stays an error.
fn thrown_error(e: FormationError) -> Result<Term, FormationError> {
    if let FormationError::Rpc { source, .. } = &e
        && let RpcError::Exception {
            class: crate::rpc::ExceptionClass::Throw,
            reason,
            ..
        } = source.as_ref()
        && matches!(reason.as_tuple(), Some([tag, _]) if tag.is_atom("error"))
    {
        return Ok(reason.clone());
    }
    Err(e)
}

fn check_ok(
    step: &'static str,
    node: &NodeName,
    called: &str,
    r: &Term,
) -> Result<(), FormationError> {
    if r.is_atom("ok") {
        Ok(())
    } else {
        Err(FormationError::unexpected(
            step,
            node,
            format!("{called} returned {r}"),
        ))
    }
}

fn bad(step: &'static str, node: &NodeName, called: &str, t: &Term) -> FormationError {
    FormationError::unexpected(step, node, format!("{called} answered {t}"))
}

fn nodes_or_error(
    step: &'static str,
    node: &NodeName,
    called: &str,
    t: &Term,
) -> Result<Vec<NodeName>, FormationError> {
    node_list(t).ok_or_else(|| bad(step, node, called, t))
}

fn sorted(mut nodes: Vec<NodeName>) -> Vec<NodeName> {
    nodes.sort();
    nodes.dedup();
    nodes
}

/// The elements of a proper list (`[]` included).
fn list_items(t: &Term) -> Option<&[Term]> {
    match t {
        Term::List(items) => Some(items),
        Term::ByteList(b) if b.is_empty() => Some(&[]),
        _ => None,
    }
}

/// `Key`'s value in a proplist `[{Key, Value}, ...]`.
fn proplist_get<'a>(list: &'a Term, key: &str) -> Option<&'a Term> {
    list_items(list)?.iter().find_map(|e| match e.as_tuple() {
        Some([k, v]) if k.is_atom(key) => Some(v),
        _ => None,
    })
}

fn prop_text(list: &Term, key: &str) -> String {
    match proplist_get(list, key) {
        Some(v) => match (v.as_atom(), v.as_text()) {
            (Some(a), _) => a.as_str().to_owned(),
            (None, Some(s)) => s.into_owned(),
            _ => v.to_string(),
        },
        None => "?".into(),
    }
}

/// Every member named in a cluster status: `nodes` holds `{disc, [...]}` and
/// `{ram, [...]}`. `None` when the status is not a list.
fn status_members(status: &Term) -> Option<Vec<NodeName>> {
    list_items(status)?;
    let mut members = Vec::new();
    if let Some(nodes) = proplist_get(status, "nodes") {
        for entry in list_items(nodes)? {
            if let Some([_, list]) = entry.as_tuple() {
                members.extend(node_list(list)?);
            }
        }
    }
    Some(sorted(members))
}

/// `#resource{virtual_host, kind, name}` as `(vhost, name)`.
fn resource(t: &Term) -> Option<(String, String)> {
    match t.as_tuple() {
        Some([tag, vhost, _kind, name]) if tag.is_atom("resource") => {
            Some((vhost.as_text()?.into_owned(), name.as_text()?.into_owned()))
        }
        _ => None,
    }
}

/// `"3 queues in /: a, b, c"`, at most [`MAX_NAMES`] names.
fn listing(one: &str, many: &str, vhost: Option<&str>, mut names: Vec<String>) -> String {
    names.sort();
    let n = names.len();
    let what = if n == 1 { one } else { many };
    let place = vhost.map(|v| format!(" in {v}")).unwrap_or_default();
    let shown: Vec<&str> = names.iter().take(MAX_NAMES).map(String::as_str).collect();
    let more = if n > MAX_NAMES {
        format!(" and {} more", n - MAX_NAMES)
    } else {
        String::new()
    };
    format!("{n} {what}{place}: {}{more}", shown.join(", "))
}

/// One [`listing`] per vhost.
fn per_vhost(one: &str, many: &str, items: Vec<(String, String)>) -> Vec<String> {
    let mut by_vhost: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (vhost, name) in items {
        by_vhost.entry(vhost).or_default().push(name);
    }
    by_vhost
        .into_iter()
        .map(|(vhost, names)| listing(one, many, Some(&vhost), names))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::parse_term;

    fn t(s: &str) -> Term {
        parse_term(s).unwrap()
    }

    #[test]
    fn versions_parse_and_pick_their_generation() {
        let v = |s: &str| RabbitVersion::parse(s).unwrap();
        assert_eq!(v("3.10.8").family(), Family::Mnesia);
        assert_eq!(v("3.11.28").family(), Family::Mnesia);
        assert_eq!(v("3.12.14").family(), Family::Mnesia312);
        assert_eq!(v("3.13.7").family(), Family::Db);
        assert_eq!(v("4.1.0").family(), Family::Db);
        assert_eq!(v("4.3.0-alpha.1+abc").family(), Family::Db);
        let rc = v("4.0.0-rc.1");
        assert_eq!((rc.major, rc.minor, rc.patch), (4, 0, 0));
        assert_eq!(rc.text, "4.0.0-rc.1");
        assert_eq!(v("3.13").patch, 0);
        assert!(RabbitVersion::parse("four").is_none());
        assert!(RabbitVersion::parse("4").is_none());
    }

    #[test]
    fn status_members_unions_disc_and_ram() {
        let s = t(
            "[{nodes,[{disc,[b@h,a@h]},{ram,[c@h]}]},{running_nodes,[a@h]},{cluster_name,<<\"x\">>},{partitions,[]}]",
        );
        let names: Vec<String> = status_members(&s)
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["a@h", "b@h", "c@h"]);
        assert_eq!(status_members(&t("[]")).unwrap(), Vec::<NodeName>::new());
        assert!(status_members(&t("{error,x}")).is_none());
    }

    #[test]
    fn resources_and_listings() {
        let r: Option<Vec<_>> = [
            "{resource,<<\"/\">>,queue,<<\"a\">>}",
            "{resource,<<\"v\">>,queue,<<\"b\">>}",
        ]
        .iter()
        .map(|q| resource(&t(q)))
        .collect();
        let r = r.unwrap();
        assert!(resource(&t("{resource,<<\"/\">>,queue}")).is_none());
        assert_eq!(r, vec![("/".into(), "a".into()), ("v".into(), "b".into())]);
        assert_eq!(
            per_vhost(
                "queue",
                "queues",
                vec![
                    ("/".into(), "b".into()),
                    ("/".into(), "a".into()),
                    ("v".into(), "c".into())
                ]
            ),
            vec![
                "2 queues in /: a, b".to_owned(),
                "1 queue in v: c".to_owned()
            ]
        );
        let many: Vec<String> = (0..12).map(|i| format!("q{i:02}")).collect();
        assert!(listing("queue", "queues", Some("/"), many).ends_with("q09 and 2 more"));
    }

    #[test]
    fn only_the_called_function_being_undefined_counts() {
        let node: NodeName = "a@h".parse().unwrap();
        let undef = |stack: &str| RpcError::Exception {
            node: node.clone(),
            module: "rabbit_db_cluster".into(),
            function: "join".into(),
            class: crate::rpc::ExceptionClass::Error,
            reason: Term::atom("undef"),
            stacktrace: Some(t(stack)),
        };
        let missing = undef("[{rabbit_db_cluster,join,[a@h,disc],[]}]");
        assert!(undefined(&missing, "rabbit_db_cluster", "join"));
        let inside = undef("[{rabbit_khepri,add_member,[a,b],[]},{rabbit_db_cluster,join,2,[]}]");
        assert!(!undefined(&inside, "rabbit_db_cluster", "join"));
    }

    #[test]
    fn thrown_errors_become_values() {
        let node: NodeName = "a@h".parse().unwrap();
        let thrown = FormationError::rpc(
            "joining",
            &node,
            RpcError::Exception {
                node: node.clone(),
                module: "rabbit_mnesia".into(),
                function: "join_cluster".into(),
                class: crate::rpc::ExceptionClass::Throw,
                reason: t("{error,{inconsistent_cluster,\"x\"}}"),
                stacktrace: None,
            },
        );
        let v = thrown_error(thrown).unwrap();
        assert_eq!(v.to_string(), "{error,{inconsistent_cluster,\"x\"}}");
    }
}
