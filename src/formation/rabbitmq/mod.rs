//! A RabbitMQ node as a cluster target: [`RabbitMq`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::rpc::RpcError;
use crate::term::Term;
use crate::{Node, NodeName};

use super::FormationError;
use super::erlang::{CALL_TIMEOUT, node_list};
use super::target::{
    ClusterTarget, DataState, Inspection, Membership, MetadataStore, Probe, Stage, Step,
};

mod generation;
mod inventory;
mod reply;

use generation::{Generation, Mfa, StoreFact};
use reply::{
    check_ok, inconsistent_cluster, node_list_or_error, proplist_get, replica_failures, sorted,
    status_members, thrown_error, undefined,
};

/// How long a join or leave waits for the node's VM to finish its own boot before it
/// stops the application (see `wait_vm_started`).
const VM_BOOT_WAIT: Duration = Duration::from_secs(5);

/// The default limit of the calls that stop, join, reset or start the application.
const APP_TIMEOUT: Duration = Duration::from_secs(300);

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

    /// The generation of cluster functions the node has.
    pub(crate) fn generation(&self) -> &'static Generation {
        Generation::of(self)
    }
}

impl std::fmt::Display for RabbitVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
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
/// Every generation checks whether the application runs with `rabbit:is_running/0` and
/// whether it boots with `rabbit_boot_state:get/0`. Joining stops the application
/// (`rabbit:stop/0`) before the join call and starts it again (`rabbit:start/0`) after;
/// leaving stops it, resets and starts it again. The version maps to one generation, and
/// each generation names its functions (this table is rendered from that data, and a test
/// keeps the two the same):
///
/// | operation | 3.10 - 3.11 | 3.12 | 3.13 - 4.2 | 4.3 and later |
/// |---|---|---|---|---|
/// | cluster status | `rabbit_mnesia:status()` | `rabbit_mnesia:status()` | `rabbit_db_cluster:cli_cluster_status()` (else `rabbit_mnesia:status()`) | `rabbit_db_cluster:cli_cluster_status()` |
/// | running members | `rabbit_mnesia:cluster_nodes(running)` | `rabbit_nodes:list_running()` | `running_nodes` of the status | `running_nodes` of the status |
/// | partitions | `rabbit_node_monitor:partitions()` (`[]` where undefined) | `rabbit_node_monitor:partitions()` (`[]` where undefined) | `rabbit_node_monitor:partitions()` (`[]` where undefined) | none (not read) |
/// | join | `rabbit_mnesia:join_cluster(Seed, disc)` | `rabbit_mnesia:join_cluster(Seed, disc)` | `rabbit_db_cluster:join(Seed, disc)` (else `rabbit_mnesia:join_cluster(Seed, disc)`) | `rabbit_db_cluster:join(Seed, disc)` |
/// | forget | `rabbit_mnesia:forget_cluster_node(Node, false)`, then `rabbit_quorum_queue:shrink_all(Node)` | `rabbit_mnesia:forget_cluster_node(Node, false)`, then `rabbit_quorum_queue:shrink_all(Node)` | `rabbit_db_cluster:forget_member(Node, false)` (else `rabbit_mnesia:forget_cluster_node(Node, false)`), then `rabbit_quorum_queue:shrink_all(Node)`, `rabbit_stream_queue:delete_all_replicas(Node)`, `rabbit_stream_coordinator:forget_node(Node)` | `rabbit_db_cluster:forget_member(Node, false)`, then `rabbit_quorum_queue:shrink_all(Node)`, `rabbit_stream_queue:delete_all_replicas(Node)`, `rabbit_stream_coordinator:forget_node(Node)` |
/// | reset | `rabbit_mnesia:reset()` | `rabbit_mnesia:reset()` | `rabbit_db:reset()` (else `rabbit_mnesia:reset()`) | `rabbit_db:reset()` |
/// | first-boot join | `application:set_env(rabbit, cluster_nodes, {[Seed], disc})` | `application:set_env(rabbit, cluster_nodes, {[Seed], disc})` | none: joined by restart | none: joined by restart |
/// | members of a booting node | itself only | itself only | `rabbit_khepri:locally_known_nodes()` | `rabbit_khepri:locally_known_nodes()` |
/// | metadata store | Mnesia | Mnesia | Khepri if `rabbit_khepri:is_enabled()` is `true` | Khepri |
///
/// A first boot is told whom to join only when `rabbit_peer_discovery:backend/0` is the
/// classic config, `application:get_env(rabbit, cluster_nodes)` names no peers and the
/// database is empty (`rabbit_mnesia:dir/0`, `filelib:is_regular/1` of its
/// `schema.DAT`). A failed join starts the application again before returning the error,
/// and `{error, Reason}` thrown by RabbitMQ is reported like a returned one
/// ([`FormationError::Unexpected`] naming the node, the step and the call).
///
/// A member of the seed's cluster is never joined again, whatever it lists as running: a
/// Khepri join resets the node even when it is a member already. The metadata store is
/// an inspection fact ([`Inspection::store`]) that the plan, not the version, reads: a
/// Khepri member whose cluster has lost its majority (one of three running) is not a
/// cluster of one, and is neither formed from nor reset
/// ([`FormationError::MajorityLost`]; health reports `majority lost: 1 of 3 members
/// running`).
///
/// Under an [`Agent`](super::Agent), a join runs in two parts
/// ([`Stage::Recorded`]): stopping the application and the join call run
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
/// once. [`Step::Finish`] waits for the boot. A forming node is
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
/// reports such a node as not running, with the members its cluster files list; the plan
/// has it started ([`Step::Start`]) before deciding anything (its data cannot be read
/// while it is stopped): a node that had already joined is then a running member (the
/// join is finished), a node that had not is checked for data and joined as usual.
///
/// # Leaving
///
/// [`Step::Leave`] does what RabbitMQ's clustering guide does to remove a
/// node (`rabbitmqctl stop_app`, `reset`, `start_app`): the reset tells the other members
/// to remove it and **wipes the node's own data**, and the node is started again as a
/// standalone, empty broker (a stopped application would look like an interrupted join to
/// the next agent). On 3.10 - 3.12 the application's `cluster_nodes` is set to
/// `{[], disc}` before the start, as a first boot joined by the agent still names its
/// seed there; a node that starts as a member again all the same is an error. Stop the
/// node afterwards if it is being scaled down.
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
        tracing::debug!(%node, %version, generation = version.generation().versions, "RabbitMQ version");
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
    /// `cluster_nodes` when the boot reaches its database step. Asked only of a node whose
    /// membership was just read as booting ([`inspect`](ClusterTarget::inspect)).
    async fn boot_undecided(&self, version: &RabbitVersion) -> Result<bool, FormationError> {
        const STEP: &str = "checking whether the boot has chosen its cluster";
        // 3.13 and later choose the node to join themselves among the discovered ones
        // (largest cluster, oldest, name): not told a seed this way.
        if !version.generation().first_boot_join {
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
        let generation = version.generation();
        self.call_generation(
            STEP,
            node,
            generation,
            generation.status,
            vec![],
            self.timeout,
        )
        .await
        .map(|(t, _)| t)
    }

    /// Calls `own`, a function of `generation`; where the generation falls back to
    /// `rabbit_mnesia` and the node does not define `own`, its counterpart. Returns the
    /// answer and the function that gave it.
    async fn call_generation(
        &self,
        step: &'static str,
        node: &NodeName,
        generation: &Generation,
        own: Mfa,
        args: Vec<Term>,
        timeout: Duration,
    ) -> Result<(Term, Mfa), FormationError> {
        if let Some(mnesia) = generation.fallback(own) {
            if let Some(r) = self
                .call_if_defined(step, node, own, args.clone(), timeout)
                .await?
            {
                return Ok((r, own));
            }
            return Ok((self.call(step, node, mnesia, args, timeout).await?, mnesia));
        }
        Ok((self.call(step, node, own, args, timeout).await?, own))
    }

    /// [`call_generation`](Self::call_generation) on `node` (the managed node, or the
    /// seed for a forget there) for a call that changes its cluster (join, forget,
    /// reset), with the application timeout; `{error, R}` thrown by RabbitMQ is read as
    /// a returned error.
    async fn change(
        &self,
        step: &'static str,
        node: &NodeName,
        generation: &Generation,
        own: Mfa,
        args: Vec<Term>,
    ) -> Result<(Term, Mfa), FormationError> {
        match self
            .call_generation(step, node, generation, own, args, self.app_timeout)
            .await
        {
            Err(e) => thrown_error(e).map(|t| (t, own)),
            ok => ok,
        }
    }

    /// The membership of `node` as the node itself reports it.
    async fn read_membership(&self, node: &NodeName) -> Result<Membership, FormationError> {
        let version = self.version(node).await?;
        let running = self.is_running(node).await?;
        if !running && self.is_booting(node).await? {
            // Mid-boot, the cluster status is not there yet (on a first boot, reading it
            // fails: no cluster files). Where the generation can say, the members the
            // node still knows of (a Khepri member waiting for its leader); anything
            // else, an error included, leaves only the node itself.
            let mut members = vec![node.clone()];
            if let Some((m, f)) = version.generation().booting_members
                && let Ok(Some(t)) = self
                    .call_if_defined(
                        "reading a booting node's members",
                        node,
                        (m, f),
                        vec![],
                        self.timeout,
                    )
                    .await
                && let Some(known) = node_list(&t)
            {
                members.extend(known);
            }
            return Ok(Membership {
                running: false,
                members: sorted(members),
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
        let generation = version.generation();
        let running_members = match generation.running_members {
            Some(((m, f), atoms)) => {
                let args = atoms.iter().map(|a| Term::atom(*a)).collect();
                let t = self.call(STEP, node, (m, f), args, self.timeout).await?;
                node_list_or_error(STEP, node, &format!("{m}:{f}({})", atoms.join(", ")), &t)?
            }
            None => proplist_get(&status, "running_nodes")
                .and_then(node_list)
                .unwrap_or_default(),
        };
        const PARTITIONS: &str = "reading the partitions";
        let partitions = match generation.partitions {
            Some((m, f)) => match self
                .call_if_defined(PARTITIONS, node, (m, f), vec![], self.timeout)
                .await?
            {
                Some(t) => node_list_or_error(PARTITIONS, node, &format!("{m}:{f}()"), &t)?,
                None => Vec::new(),
            },
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

    /// Waits until the managed node's VM has finished its own boot (`init:get_status()`
    /// is `{started, _}`): the broker runs `rabbit:start_it/1` from the VM's boot, and
    /// that function exits, halting the VM, when the application is stopped before it has
    /// returned, even though `rabbit:is_running()` already answers `true` (seen on 4.x).
    /// A VM whose boot never returns (started with a command that keeps running) is not
    /// waited for past [`VM_BOOT_WAIT`].
    async fn wait_vm_started(&self) -> Result<(), FormationError> {
        const STEP: &str = "waiting for the node's VM to finish booting";
        let started = Instant::now();
        loop {
            let status = self
                .call(
                    STEP,
                    &self.node,
                    ("init", "get_status"),
                    vec![],
                    self.timeout,
                )
                .await?;
            match status.as_tuple() {
                Some([internal, _]) if internal.is_atom("started") => return Ok(()),
                Some([internal, _]) if internal.is_atom("starting") => {}
                _ => {
                    return Err(FormationError::unexpected(
                        STEP,
                        &self.node,
                        format!("init:get_status() answered {status}"),
                    ));
                }
            }
            if started.elapsed() > VM_BOOT_WAIT {
                tracing::warn!(node = %self.node, "the VM's boot has not returned after {VM_BOOT_WAIT:?}: stopping the application all the same");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop_app(&self) -> Result<(), FormationError> {
        const STEP: &str = "stopping the rabbit application";
        self.wait_vm_started().await?;
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

    /// The join call itself, with the application stopped.
    async fn join_call(
        &self,
        seed: &NodeName,
        version: &RabbitVersion,
    ) -> Result<(), FormationError> {
        const STEP: &str = "joining";
        let args = vec![Term::atom(seed.as_str()), Term::atom("disc")];
        let generation = version.generation();
        let (mut r, (m, f)) = self
            .change(STEP, &self.node, generation, generation.join, args.clone())
            .await?;
        let called = format!("{m}:{f}");
        if inconsistent_cluster(&r) {
            // The seed's cluster still lists this node from a join cut short (the node
            // killed once the seed had recorded it): the node is being joined, so it
            // holds nothing the plan did not allow to discard. Forget that record on
            // the seed, as RabbitMQ's clustering guide says, and join once more.
            tracing::warn!(node = %self.node, %seed, "the seed's cluster lists this node from an interrupted join: forgetting it there and joining again");
            self.forget_on(seed, &self.node).await?;
            r = self
                .change(STEP, &self.node, generation, generation.join, args)
                .await?
                .0;
        }
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

    /// Forgets `member` from the cluster of `on` (`Forget(Member, false)` called on
    /// `on`); returns `on`'s generation.
    async fn forget_on(
        &self,
        on: &NodeName,
        member: &NodeName,
    ) -> Result<&'static Generation, FormationError> {
        const STEP: &str = "forgetting a member";
        let generation = self.version(on).await?.generation();
        let args = vec![Term::atom(member.as_str()), Term::atom("false")];
        let (r, (m, f)) = self
            .change(STEP, on, generation, generation.forget, args)
            .await?;
        check_ok(STEP, on, &format!("{m}:{f}({member}, false)"), &r)?;
        tracing::warn!(node = %on, %member, "forgot a cluster member");
        Ok(generation)
    }

    async fn reset_call(&self, version: &RabbitVersion) -> Result<(), FormationError> {
        const STEP: &str = "resetting";
        let generation = version.generation();
        let (r, (m, f)) = self
            .change(STEP, &self.node, generation, generation.reset, vec![])
            .await?;
        check_ok(STEP, &self.node, &format!("{m}:{f}()"), &r)
    }

    /// Calls each of `calls` with the forgotten `member`, as `rabbitmqctl
    /// forget_cluster_node` does once the member is forgotten (its quorum queue and stream
    /// replicas); a function the node does not define is skipped. The member is gone
    /// whatever they answer: a failure (an error, a timeout, a queue that could not be
    /// shrunk) is logged, for an operator to finish by hand.
    async fn forget_replicas(&self, member: &NodeName, calls: &[Mfa]) {
        const STEP: &str = "removing a forgotten member's replicas";
        for &(m, f) in calls {
            let args = vec![Term::atom(member.as_str())];
            let answer = self
                .call_if_defined(STEP, &self.node, (m, f), args, self.app_timeout)
                .await
                .or_else(|e| thrown_error(e).map(Some));
            match answer {
                Ok(None) => {}
                Ok(Some(t)) => match replica_failures(&t) {
                    failures if failures.is_empty() => {
                        tracing::info!(node = %self.node, %member, "{m}:{f}({member}) returned {t}")
                    }
                    failures => {
                        tracing::warn!(node = %self.node, %member, ?failures, "{m}:{f}({member}) failed in part: remove these replicas by hand")
                    }
                },
                Err(e) => {
                    tracing::warn!(node = %self.node, %member, error = %e, "{m}:{f}({member}) failed: remove the member's replicas by hand")
                }
            }
        }
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
            started_at_ms,
            ..Probe::live(node.clone(), membership)
        })
    }

    async fn membership(&self) -> Result<Membership, FormationError> {
        self.read_membership(&self.node).await
    }

    async fn inspect(&self) -> Result<Inspection, FormationError> {
        let version = self.version(&self.node).await?;
        let membership = self.read_membership(&self.node).await?;
        let boot_joinable = membership.booting && self.boot_undecided(&version).await?;
        let others: Vec<NodeName> = membership
            .members
            .iter()
            .filter(|m| **m != self.node)
            .cloned()
            .collect();
        if others.is_empty() || !membership.running {
            // The store matters only to a running member (whether it may be joined
            // again); it is not read from a node that is booting or stopped.
            return Ok(Inspection::of(membership).with_boot_joinable(boot_joinable));
        }
        let store = match version.generation().store {
            StoreFact::Fixed(store) => store,
            StoreFact::Ask(mfa) => {
                let khepri = self
                    .call_if_defined(
                        "reading the metadata store",
                        &self.node,
                        mfa,
                        vec![],
                        self.timeout,
                    )
                    .await?;
                if khepri.is_some_and(|t| t.as_bool() == Some(true)) {
                    MetadataStore::Khepri
                } else {
                    MetadataStore::Mnesia
                }
            }
        };
        // A member of a cluster: what a join would discard is that membership, known
        // without an inventory.
        Ok(Inspection::of(membership)
            .with_boot_joinable(boot_joinable)
            .with_store(store)
            .with_data(DataState::OtherCluster(others)))
    }

    async fn inventory(&self) -> Result<DataState, FormationError> {
        self.read_data().await
    }

    async fn execute(&self, step: &Step) -> Result<Stage, FormationError> {
        match step {
            Step::Form => {
                self.ensure_running("forming a new cluster").await?;
                Ok(Stage::Complete)
            }
            Step::Start => {
                self.ensure_running("the application is not running (an interrupted join?)")
                    .await?;
                Ok(Stage::Complete)
            }
            Step::BootJoin { seed } => {
                let peers: Vec<NodeName> = seed.iter().cloned().collect();
                self.set_boot_peers(&peers).await?;
                match seed {
                    // Its boot joins the seed (RabbitMQ's own peer discovery, with its
                    // retries while the seed's database comes up): a member only once
                    // the boot has joined.
                    Some(seed) => {
                        tracing::info!(node = %self.node, %seed, "booting for the first time: its boot joins the seed");
                        Ok(Stage::Decided)
                    }
                    None => {
                        tracing::info!(node = %self.node, "booting for the first time: its boot forms a new cluster");
                        Ok(Stage::Recorded)
                    }
                }
            }
            Step::Join { seed, reset } => {
                if *reset {
                    tracing::warn!(node = %self.node, %seed, "joining resets the node and discards its data (allowed)");
                }
                let version = self.version(&self.node).await?;
                self.stop_app().await?;
                if let Err(e) = self.join_call(seed, &version).await {
                    // Start again, so that a failed join does not leave the broker
                    // stopped.
                    if let Err(start) = self.start_app().await {
                        tracing::error!(node = %self.node, error = %start, "the application did not start again after a failed join");
                    }
                    return Err(e);
                }
                // The seed's cluster now lists the node; starting the application
                // (seconds) changes no membership.
                Ok(Stage::Recorded)
            }
            Step::Finish { .. } => {
                if self.is_running(&self.node).await? {
                    return Ok(Stage::Complete);
                }
                if self.is_booting(&self.node).await? {
                    self.wait_booted(Instant::now()).await?;
                } else {
                    self.start_app().await?;
                }
                Ok(Stage::Complete)
            }
            Step::Leave => {
                let version = self.version(&self.node).await?;
                self.stop_app().await?;
                let reset = self.reset_call(&version).await;
                // Where a first boot was told whom to join (3.10 - 3.12), the running
                // VM still says so, and the reset node's start would join that cluster
                // again: it starts alone.
                let cleared = if reset.is_ok() && version.generation().first_boot_join {
                    self.set_boot_peers(&[]).await
                } else {
                    Ok(())
                };
                let started = self.start_app().await;
                reset?;
                cleared?;
                started?;
                let m = self.read_membership(&self.node).await?;
                if m.members.iter().any(|n| n != &self.node) {
                    return Err(FormationError::unexpected(
                        "leaving",
                        &self.node,
                        format!(
                            "reset, the node started as a member of {:?} again (its \
                             configuration names peers to join at boot)",
                            m.members
                        ),
                    ));
                }
                tracing::info!(node = %self.node, "left the cluster (reset; running standalone)");
                Ok(Stage::Complete)
            }
        }
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
        let generation = self.forget_on(&self.node, member).await?;
        self.forget_replicas(member, generation.forget_after).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        let v = |s: &str| RabbitVersion::parse(s).unwrap();
        let rc = v("4.0.0-rc.1");
        assert_eq!((rc.major, rc.minor, rc.patch), (4, 0, 0));
        assert_eq!(rc.text, "4.0.0-rc.1");
        assert_eq!(v("3.13").patch, 0);
        assert!(RabbitVersion::parse("four").is_none());
        assert!(RabbitVersion::parse("4").is_none());
    }
}
