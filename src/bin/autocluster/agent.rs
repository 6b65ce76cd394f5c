//! `autocluster agent`: one process beside each broker. It forms at start, then keeps the
//! registration alive, reconnects members, reports (and mends) splits, runs cleanup when
//! enabled, and serves readiness; on SIGTERM or SIGINT it stops the watch, deregisters
//! (within 5 s), shuts its node down and exits 0. It never leaves the cluster on the way
//! out: a pod restarted with its data rejoins as a no-op.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autocluster::backend::Backend;
use autocluster::conf::RabbitmqConf;
use autocluster::formation::{
    Agent, FormationConfig, FormationError, FormationEvent, Outcome, RabbitMq,
};
use autocluster::health::{self, CheckOptions};
use autocluster::{Cookie, Node, NodeName};
use tokio::sync::{broadcast, watch};

use crate::Failure;
use crate::http::{self, Readiness, State};
use crate::metrics::{LastGood, Metrics, Observed};

/// How long deregistration may take on the way out.
pub const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// What `autocluster agent` was told.
#[derive(Debug)]
pub struct Options {
    pub node: NodeName,
    pub cookie: Cookie,
    pub conf: RabbitmqConf,
    pub epmd_port: Option<u16>,
    pub http: Option<SocketAddr>,
    pub once: bool,
    pub formation: FormationConfig,
    pub readiness_interval: Duration,
}

/// Whether a formation error is a refusal that restarting the agent cannot change: the
/// node holds data that joining would discard, or its cluster forgot it. The agent
/// exits 3 for these, so that a supervisor can tell them from failures worth a restart.
pub fn needs_operator(e: &FormationError) -> bool {
    matches!(
        e,
        FormationError::DataAtRisk { .. } | FormationError::Forgotten { .. }
    )
}

/// The label `/metrics` gives an outcome.
pub fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::FormedNew => "formed",
        Outcome::Joined { .. } => "joined",
        Outcome::AlreadyMember { .. } => "already_member",
        Outcome::Standalone { .. } => "standalone",
        _ => "other",
    }
}

/// The node the agent probes and calls from: hidden, not registered in EPMD, named
/// after this process, on the managed node's host.
/// The start of an agent's node name: `leave` tells an agent's connection from a
/// tool's.
pub const AGENT_PREFIX: &str = "autocluster_agent_";

/// Who the hidden node is for.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// `autocluster agent`.
    Agent,
    /// A one-off command (`health`, `call`, `leave`).
    Tool,
}

pub async fn probe_node(
    managed: &NodeName,
    cookie: &Cookie,
    epmd_port: Option<u16>,
    role: Role,
) -> Result<Node, String> {
    let prefix = match role {
        Role::Agent => AGENT_PREFIX,
        Role::Tool => "autocluster_",
    };
    let name = NodeName::from_parts(&format!("{prefix}{}", std::process::id()), managed.host())
        .map_err(|e| e.to_string())?;
    let mut builder = Node::builder(name, cookie.clone()).register_in_epmd(false);
    if let Some(port) = epmd_port {
        builder = builder.epmd_port(port);
    }
    builder
        .start()
        .await
        .map_err(|e| format!("cannot start the agent's node: {e}"))
}

/// Resolves on SIGTERM or SIGINT.
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = int.recv() => tracing::info!("SIGINT: stopping"),
            }
        }
        _ => {
            tracing::error!("cannot watch SIGTERM/SIGINT: stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn not_ready(why: &str) -> Readiness {
    Readiness {
        ready: false,
        body: serde_json::json!({ "healthy": false, "status": "FAILURE", "problems": [why] }),
    }
}

/// Runs the agent until a stop signal (or, with `--once`, until formation ends).
pub async fn run(o: Options) -> Result<(), Failure> {
    let metrics = Arc::new(Metrics::new());
    let backend: Arc<dyn Backend> = Arc::from(o.conf.backend().map_err(|e| e.to_string())?);
    let observed: Arc<dyn Backend> = Arc::new(Observed {
        inner: backend,
        metrics: metrics.clone(),
    });
    let (ready_tx, ready_rx) = watch::channel(not_ready("formation has not finished"));
    let server = match o.http {
        Some(addr) => {
            let listener = http::bind(addr).await?;
            tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
            Some(tokio::spawn(http::serve(
                listener,
                Arc::new(State {
                    readiness: ready_rx,
                    metrics: metrics.clone(),
                }),
            )))
        }
        None => None,
    };
    let probe = probe_node(&o.node, &o.cookie, o.epmd_port, Role::Agent).await?;
    let target = Arc::new(RabbitMq::new(probe.clone(), o.node.clone()));
    let agent = Agent::new(observed.clone(), target.clone(), o.formation.clone());
    let mut events = agent.events();
    let mut stop = Box::pin(stop_signal());
    let started = Instant::now();
    let result = tokio::select! {
        r = agent.run() => r,
        _ = &mut stop => {
            tracing::info!("stopped before formation finished");
            probe.shutdown().await;
            return Ok(());
        }
    };
    let formed = match result {
        Ok(formed) => formed,
        Err(e) => {
            metrics.formation("failed", started.elapsed());
            probe.shutdown().await;
            let message = format!("formation failed: {e}");
            return Err(if needs_operator(&e) {
                Failure::NeedsOperator(message)
            } else {
                Failure::Failed(message)
            });
        }
    };
    metrics.formation(outcome_label(&formed.outcome), formed.elapsed);
    metrics.sync(&agent.metrics());
    tracing::info!(outcome = %formed.outcome, elapsed_ms = formed.elapsed.as_millis() as u64, "formed");
    println!("{}: {}", o.node, formed.outcome);
    let watch = (!o.once).then(|| agent.watch(&formed));
    let last_good = LastGood {
        inner: observed.clone(),
        last: Mutex::new(None),
    };
    let options = CheckOptions::default().seed_order(o.formation.seed_order);
    let mut tick = tokio::time::interval(o.readiness_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events_open = true;
    if !o.once {
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {
                    let check = health::check(target.as_ref(), Some(&last_good), &options);
                    let report = tokio::select! {
                        report = check => report,
                        _ = &mut stop => break,
                    };
                    metrics.health(report.healthy, report.members.len(), report.running.len(), report.seed.as_ref());
                    metrics.sync(&agent.metrics());
                    if report.healthy != ready_tx.borrow().ready {
                        tracing::info!(ready = report.healthy, summary = %report.summary, "readiness changed");
                    }
                    ready_tx.send_replace(Readiness { ready: report.healthy, body: report.to_json() });
                }
                event = events.recv(), if events_open => match event {
                    Ok(FormationEvent::SplitMended(_)) => metrics.mended(),
                    Err(broadcast::error::RecvError::Closed) => events_open = false,
                    _ => {}
                },
            }
        }
    }
    // The way out: no leave (that would reset the broker), only the registration goes.
    drop(watch);
    ready_tx.send_replace(not_ready("the agent is stopping"));
    if let Some(registration) = formed.registration {
        match tokio::time::timeout(DEREGISTER_TIMEOUT, registration.deregister()).await {
            Ok(Ok(())) => tracing::info!("deregistered"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "deregistering failed: the registration expires with its TTL")
            }
            Err(_) => tracing::warn!(
                "deregistering took longer than 5 s: the registration expires with its TTL"
            ),
        }
    }
    probe.shutdown().await;
    if let Some(server) = server {
        server.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_have_stable_labels() {
        assert_eq!(outcome_label(&Outcome::FormedNew), "formed");
        assert_eq!(
            outcome_label(&Outcome::Joined {
                seed: "rabbit@a".parse().unwrap()
            }),
            "joined"
        );
    }

    #[test]
    fn only_refusals_about_the_nodes_data_need_an_operator() {
        let node: NodeName = "rabbit@b".parse().unwrap();
        let seed: NodeName = "rabbit@a".parse().unwrap();
        let data = FormationError::DataAtRisk {
            node: node.clone(),
            seed: seed.clone(),
            data: autocluster::formation::DataState::HasData(vec!["1 queue: / q".into()]),
        };
        let forgotten = FormationError::Forgotten {
            node: node.clone(),
            seed,
        };
        assert!(needs_operator(&data) && needs_operator(&forgotten));
        let transient = FormationError::MaybeAlive {
            nodes: vec![(node.clone(), "timeout".into())],
        };
        let refused = FormationError::FormRefused {
            node,
            reason: "forming is switched off".into(),
        };
        assert!(!needs_operator(&transient) && !needs_operator(&refused));
    }
}
