//! `autocluster`: the agent an operator runs beside each RabbitMQ broker
//! (`autocluster agent`), and the tools around it: `health`, `discover`, `call`,
//! `leave`. Exit codes: 0 success, 1 failure, 2 usage, 3 a refusal an operator must
//! resolve (`agent`: data a join would discard, a forgotten node). See `docs/agent.md`.

mod agent;
mod http;
mod metrics;
mod settings;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use autocluster::backend::Backend;
use autocluster::formation::{ClusterTarget, FormGate, FormationConfig, RabbitMq, Step};
use autocluster::health::{self, CheckOptions};
use autocluster::term::{Term, parse_term};
use autocluster::{Cookie, NodeName};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Forms and watches RabbitMQ and Erlang clusters through etcd, Consul, Kubernetes, DNS
/// or a static list, speaking the Erlang distribution protocol itself.
#[derive(Debug, Parser)]
#[command(name = "autocluster", version, propagate_version = true)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, global = true, default_value = "plain")]
    log_format: LogFormat,
    /// Log filter (tracing's EnvFilter syntax: `info`, `autocluster=debug`, ...).
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// One line of text per event.
    Plain,
    /// One JSON object per event.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run beside a broker: form at start, then keep the registration alive, watch the
    /// cluster and serve /healthz, /readyz and /metrics, until SIGTERM. Exits 3 when it
    /// refuses the node (data a join would discard, a node its cluster forgot).
    Agent(AgentArgs),
    /// Check that the node is clustered with the seed both ways, with no partitions
    /// (exit 0 healthy, 1 not).
    Health(HealthArgs),
    /// List the nodes the backend has registered.
    Discover(DiscoverArgs),
    /// Call MODULE:FUNCTION(ARGS) on the node and print the result.
    Call(CallArgs),
    /// Remove the node from its cluster for good (scale-down): this RESETS the broker
    /// and WIPES ITS DATA (its messages, queues, users and definitions).
    Leave(LeaveArgs),
}

/// The managed node and how to reach it.
#[derive(Debug, Args)]
struct NodeArgs {
    /// The managed node. Default: $RABBITMQ_NODENAME, then NODENAME in
    /// rabbitmq-env.conf ($RABBITMQ_CONF_ENV_FILE or /etc/rabbitmq/rabbitmq-env.conf),
    /// then rabbit@<short host name>.
    #[arg(long)]
    node: Option<String>,
    /// The Erlang cookie (visible to other users in the process list: prefer
    /// --cookie-file).
    #[arg(long, conflicts_with = "cookie_file")]
    cookie: Option<String>,
    /// The file holding the Erlang cookie. Default: /var/lib/rabbitmq/.erlang.cookie,
    /// then $HOME/.erlang.cookie.
    #[arg(long)]
    cookie_file: Option<PathBuf>,
    /// EPMD's port on the node's host (default: $ERL_EPMD_PORT, else 4369).
    #[arg(long, env = "ERL_EPMD_PORT")]
    epmd_port: Option<u16>,
}

impl NodeArgs {
    fn resolve(&self) -> Result<(NodeName, Cookie), String> {
        let node = settings::resolve_node(self.node.as_deref())?;
        let cookie = settings::resolve_cookie(self.cookie.as_deref(), self.cookie_file.as_deref())?;
        Ok((node, cookie))
    }
}

#[derive(Debug, Args)]
struct AgentArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// RabbitMQ's configuration file (rabbitmq.conf): its cluster_formation.* keys
    /// configure the backend and formation; other keys are ignored.
    #[arg(long)]
    config: PathBuf,
    /// Serve /healthz, /readyz and /metrics on ADDR:PORT.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Validate the configuration file, the node name and the cookie (read, never
    /// printed), then exit without connecting to anything.
    #[arg(long)]
    check_config: bool,
    /// Form, then exit (an init container).
    #[arg(long)]
    once: bool,
    /// Allow resetting a node that holds data (or belongs to another cluster) to join.
    /// Off by default: such a node is refused, naming what would be lost.
    #[arg(long)]
    allow_reset: bool,
    /// Seconds between readiness checks.
    #[arg(long, default_value_t = 5.0)]
    readiness_interval: f64,
    /// Whether this node may form a new cluster when it finds none to join. Switch it
    /// off once the cluster exists: a node then only ever joins.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    new_cluster_enabled: bool,
    /// Contact points (this node included) that must answer before a new cluster is
    /// formed.
    #[arg(long, default_value_t = 2)]
    required_contact_points: usize,
    /// Seconds the contact points must stay the same, from the agent's start, before a
    /// new cluster is formed.
    #[arg(long, default_value_t = 5.0)]
    stable_margin: f64,
}

#[derive(Debug, Args)]
struct HealthArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// rabbitmq.conf: compare with the seed among the registered nodes.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Fail unless the cluster has at least this many running members.
    #[arg(long)]
    expect_nodes: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct DiscoverArgs {
    /// rabbitmq.conf with the backend's cluster_formation.* keys.
    #[arg(long)]
    config: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CallArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Seconds the call may take.
    #[arg(long, default_value_t = 15.0)]
    timeout: f64,
    /// The module.
    module: String,
    /// The function.
    function: String,
    /// The arguments, as an Erlang list (`'[1, foo, <<"bin">>]'`).
    args: Option<String>,
}

#[derive(Debug, Args)]
struct LeaveArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Confirms that the broker is to be reset and its data wiped.
    #[arg(long)]
    confirm_reset: bool,
}

fn init_logging(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("--log {filter:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn seconds(flag: &str, v: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{flag}: {v} is not a positive number of seconds"))
}

/// A failure (exit 1), a usage error (exit 2), or a refusal that no restart can
/// change (exit 3: the node's data needs an operator's decision).
pub(crate) enum Failure {
    Failed(String),
    Usage(String),
    NeedsOperator(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Failed(s)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_format, &cli.log) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command));
    // Stopping must finish whatever is in flight.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(code) => code,
        Err(Failure::Failed(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(Failure::NeedsOperator(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(3)
        }
    }
}

async fn run(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Agent(a) => agent(a).await,
        Command::Health(h) => health(h).await,
        Command::Discover(d) => discover(d).await,
        Command::Call(c) => call(c).await,
        Command::Leave(l) => leave(l).await,
    }
}

async fn agent(a: AgentArgs) -> Result<ExitCode, Failure> {
    let conf = settings::read_config(&a.config).map_err(Failure::Usage)?;
    let stable_margin = Duration::try_from_secs_f64(a.stable_margin).map_err(|_| {
        Failure::Usage(format!(
            "--stable-margin: {} is not a number of seconds",
            a.stable_margin
        ))
    })?;
    let formation = conf
        .formation(FormationConfig {
            allow_reset: a.allow_reset,
            form_gate: FormGate {
                new_cluster_enabled: a.new_cluster_enabled,
                required_contact_points: a.required_contact_points.max(1),
                stable_margin,
            },
            ..FormationConfig::default()
        })
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let backend = conf.backend().map_err(|e| Failure::Usage(e.to_string()))?;
    let readiness_interval =
        seconds("--readiness-interval", a.readiness_interval).map_err(Failure::Usage)?;
    let (node, cookie) = a.node.resolve().map_err(Failure::Usage)?;
    if a.check_config {
        println!(
            "{}: ok ({} backend, {} cluster_formation keys; node {node}, cookie read)",
            conf.file(),
            backend.name(),
            conf.entries().len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    drop(backend);
    agent::run(agent::Options {
        node,
        cookie,
        conf,
        epmd_port: a.node.epmd_port,
        http: a.http,
        once: a.once,
        formation,
        readiness_interval,
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

async fn health(h: HealthArgs) -> Result<ExitCode, Failure> {
    let backend: Option<Box<dyn Backend>> = match &h.config {
        Some(path) => Some(
            settings::read_config(path)
                .and_then(|c| c.backend().map_err(|e| e.to_string()))
                .map_err(Failure::Usage)?,
        ),
        None => None,
    };
    let (node, cookie) = h.node.resolve().map_err(Failure::Usage)?;
    let probe = agent::probe_node(&node, &cookie, h.node.epmd_port, agent::Role::Tool).await?;
    let target = RabbitMq::new(probe.clone(), node);
    let mut options = CheckOptions::default();
    if let Some(n) = h.expect_nodes {
        options = options.expect_nodes(n);
    }
    let report = health::check(&target, backend.as_deref(), &options).await;
    if h.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    probe.shutdown().await;
    Ok(ExitCode::from(u8::from(!report.healthy)))
}

async fn discover(d: DiscoverArgs) -> Result<ExitCode, Failure> {
    let backend = settings::read_config(&d.config)
        .and_then(|c| c.backend().map_err(|e| e.to_string()))
        .map_err(Failure::Usage)?;
    let nodes = backend
        .list_nodes()
        .await
        .map_err(|e| format!("listing the registered nodes: {e}"))?;
    if d.json {
        let names: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
        println!(
            "{}",
            serde_json::json!({ "backend": backend.name(), "nodes": names })
        );
    } else {
        for n in &nodes {
            println!("{}", n.node);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn call(c: CallArgs) -> Result<ExitCode, Failure> {
    let args = match &c.args {
        Some(text) => parse_term(text)
            .map_err(|e| Failure::Usage(format!("ARGS: {e}")))?
            .into_list_elements()
            .ok_or_else(|| Failure::Usage("ARGS must be an Erlang list, e.g. '[1, foo]'".into()))?,
        None => Vec::new(),
    };
    let timeout = seconds("--timeout", c.timeout).map_err(Failure::Usage)?;
    let (node, cookie) = c.node.resolve().map_err(Failure::Usage)?;
    let probe = agent::probe_node(&node, &cookie, c.node.epmd_port, agent::Role::Tool).await?;
    let result = probe
        .call(&node, &c.module, &c.function, args, timeout)
        .await;
    probe.shutdown().await;
    let term = result.map_err(|e| format!("{}:{} on {node}: {e}", c.module, c.function))?;
    println!("{term}");
    Ok(ExitCode::SUCCESS)
}

async fn leave(l: LeaveArgs) -> Result<ExitCode, Failure> {
    let (node, cookie) = l.node.resolve().map_err(Failure::Usage)?;
    if !l.confirm_reset {
        return Err(Failure::Usage(format!(
            "leaving resets {node} and wipes its data (messages, queues, users, definitions); \
             stop its agent first, then run again with --confirm-reset"
        )));
    }
    let probe = agent::probe_node(&node, &cookie, l.node.epmd_port, agent::Role::Tool).await?;
    // An agent still running beside the node would join it back, empty, to its
    // cluster: it must be stopped first.
    let agents = match probe
        .call(
            &node,
            "erlang",
            "nodes",
            vec![Term::atom("hidden")],
            Duration::from_secs(15),
        )
        .await
    {
        Ok(t) => running_agents(t),
        Err(e) => {
            probe.shutdown().await;
            return Err(Failure::Failed(format!(
                "{node}: listing its connections: {e}"
            )));
        }
    };
    if !agents.is_empty() {
        probe.shutdown().await;
        return Err(Failure::Failed(format!(
            "an agent is connected to {node} ({}): stop it first, or it would join the \
             node back to its cluster once reset; nothing was changed",
            agents.join(", ")
        )));
    }
    let target = Arc::new(RabbitMq::new(probe.clone(), node.clone()));
    let result = target.execute(&Step::Leave).await;
    probe.shutdown().await;
    result.map_err(|e| format!("leaving: {e}"))?;
    println!("{node} left its cluster: it was reset and runs alone, empty");
    Ok(ExitCode::SUCCESS)
}

/// The agents among a node's hidden connections (`erlang:nodes(hidden)`).
fn running_agents(hidden: Term) -> Vec<String> {
    hidden
        .into_list_elements()
        .unwrap_or_default()
        .iter()
        .filter_map(Term::as_atom)
        .map(|a| a.as_str().to_owned())
        .filter(|n| n.starts_with(agent::AGENT_PREFIX))
        .collect()
}
