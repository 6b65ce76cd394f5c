//! RabbitMQ's first boot: an agent started beside its broker decides the broker's
//! cluster while the broker boots for the first time. On 3.10 - 3.12 the agent tells the
//! boot whom to join (`cluster_nodes`, read by the classic config peer discovery) and the
//! broker boots once; on 3.13 and later the boot's own peer discovery chooses the node to
//! join among the ones it is told, by its own order, so the agent waits for the boot and
//! joins by restart. The second test shows why, on every version.

#![cfg(feature = "etcd")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use autocluster::backend::{Backend, MemoryBackend};
use autocluster::formation::{Agent, FormationEvent, Formed, Outcome, RabbitMq, RabbitVersion};

use crate::common::{Epmd, RabbitNode, RabbitOptions, peers, unique_name};
use crate::rabbitmq_formation::{
    RABBIT_TURN, agent_node, cli_status, first_event, name, no_partitions, quick, timeline,
};

/// Agents started with their brokers (as an init system starts them side by side): each
/// agent decides its node's membership while the broker boots for the first time, so every
/// broker boots once. The first forms; the others' boots join it through RabbitMQ's own
/// peer discovery, told the seed by their agents (`cluster_nodes`), and none is stopped and
/// restarted to join. Joining nodes are registered only once their boot has joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_started_with_their_brokers_join_during_the_first_boot() {
    let _turn = RABBIT_TURN.lock().await;
    let started = Instant::now();
    let epmd = Epmd::start().await;
    let options = RabbitOptions::new().epmd_port(epmd.port());
    let launches: Vec<_> = (0..3)
        .map(|_| tokio::spawn(RabbitNode::launch(options.clone())))
        .collect();
    let mut nodes = Vec::new();
    for l in launches {
        nodes.push(l.await.expect("launch"));
    }
    let probe = agent_node(epmd.port(), "localhost").await;
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let agents: Vec<Agent> = nodes
        .iter()
        .map(|n| {
            let target = Arc::new(RabbitMq::new(probe.clone(), name(n)));
            Agent::new(backend.clone(), target, quick())
        })
        .collect();
    let timelines: Vec<_> = agents.iter().map(timeline).collect();
    let runs: Vec<_> = agents
        .iter()
        .map(|a| {
            let a = a.clone();
            tokio::spawn(async move {
                // Each agent starts as soon as its broker answers, mid-boot.
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut booting = false;
                while Instant::now() < deadline {
                    if let Ok(m) = a.target().membership().await {
                        booting = m.booting;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (booting, a.run().await)
            })
        })
        .collect();
    let mut formed = Vec::new();
    for (r, n) in runs.into_iter().zip(&nodes) {
        let (booting, result) = r.await.expect("agent task");
        assert!(booting, "{}: the agent found the broker booting", n.node());
        formed.push(
            result.unwrap_or_else(|e| panic!("{}: {e}\n--- log ---\n{}", n.node(), n.log_tail())),
        );
    }
    eprintln!(
        "launch to one cluster of three, agents mid-boot: {:?}",
        started.elapsed()
    );

    let first: Vec<&Formed> = formed
        .iter()
        .filter(|f| f.outcome == Outcome::FormedNew)
        .collect();
    assert_eq!(first.len(), 1, "{formed:?}");
    let first = first[0].node.clone();
    let mut all: Vec<String> = nodes.iter().map(|n| n.node().to_owned()).collect();
    all.sort();
    for (n, t) in nodes.iter().zip(timelines) {
        let events = t.await.expect("event recorder");
        let me = name(n);
        let decided = events.iter().find_map(|(_, e)| match e {
            FormationEvent::Decided(seed) => Some(seed.clone()),
            _ => None,
        });
        let log = n.log();
        // One boot: `rabbit:start/0` after a stop prints the banner again.
        assert_eq!(
            log.matches("Starting RabbitMQ").count(),
            1,
            "{me} booted once: {events:?}"
        );
        // A forming node is registered under the lock, for the others to join; a joining
        // one only after its boot has joined (a boot that went standalone is never seen).
        let registered = first_event(&events, |e| *e == FormationEvent::Registered).map(|(i, _)| i);
        let released = first_event(&events, |e| *e == FormationEvent::LockReleased).map(|(i, _)| i);
        assert!(registered.is_some(), "{me} registered: {events:?}");
        assert!(released.is_some(), "{me} released the lock: {events:?}");
        if me == first {
            assert!(registered < released, "{me}: {events:?}");
            assert_eq!(decided, Some(None), "{me} decided to form: {events:?}");
        } else {
            assert!(registered > released, "{me}: {events:?}");
            assert!(
                matches!(&decided, Some(Some(seed)) if *seed != me),
                "{me} decided whom to join mid-boot: {events:?}"
            );
            assert!(
                log.contains("Peer nodes we can cluster with"),
                "{me} joined through peer discovery during its boot"
            );
        }
        let (disk, running, partitions) = cli_status(n).await;
        assert_eq!(disk, all, "disk_nodes on {me}");
        assert_eq!(running, all, "running_nodes on {me}");
        assert!(
            no_partitions(&partitions),
            "partitions on {me}: {partitions}"
        );
    }
    let mut registered: Vec<String> = backend
        .list_nodes()
        .await
        .unwrap()
        .iter()
        .map(|r| r.node.to_string())
        .collect();
    registered.sort();
    assert_eq!(registered, all);
    drop(formed);
}

/// A first boot told its seed before it starts (`cluster_formation.classic_config.nodes`,
/// the classic config peer discovery's `cluster_nodes`), whose own VM started before the
/// seed's: 3.10 - 3.12 join the seed during the boot; 3.13 and later boot standalone.
/// From 3.13 the boot's peer discovery (run once, on a virgin node, at its database
/// step) adds the node itself to the list, sorts the reachable nodes by cluster size,
/// then VM start time (oldest first), then name, and a node that comes first proceeds
/// with its boot alone: RabbitMQ 4.3.5, `deps/rabbit/src/rabbit_peer_discovery.erl`,
/// `sort_nodes_and_props/1` (lines 782-792) and `join_selected_node/3` (lines 926-930);
/// `rabbit_peer_discovery_classic_config:list_nodes/0` (`add_this_node/1`). An agent
/// cannot make a 3.13+ first boot join the seed it chose, which is why it joins those
/// brokers by restart.
///
/// On 3.10 - 3.12 n's boot can join the seed in the instant of the seed's own first boot
/// between creating its tables and recording its feature flags: n then syncs too few
/// feature flags and stops with `table_attributes_mismatch` (RabbitMQ's own race
/// between two first boots). Such a run is told apart by that error alone and tried
/// again, at most three times in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_boot_told_its_seed_joins_it_only_before_3_13() {
    let _turn = RABBIT_TURN.lock().await;
    for attempt in 1..=3 {
        if first_boot_told_its_seed().await == Boot::Ran {
            return;
        }
        eprintln!(
            "attempt {attempt}: n joined the seed during the seed's first boot and stopped \
             with table_attributes_mismatch (RabbitMQ {}'s race); again",
            peers().rabbitmq_version()
        );
    }
    panic!("three runs hit RabbitMQ's first-boot race");
}

/// How a run of [`first_boot_told_its_seed`] went.
#[derive(Debug, PartialEq, Eq)]
enum Boot {
    /// The boots finished and the outcome was checked.
    Ran,
    /// 3.10 - 3.12: n joined the seed in the middle of the seed's first boot.
    RacedTheSeedsBoot,
}

async fn first_boot_told_its_seed() -> Boot {
    let epmd = Epmd::start().await;
    let seed_alive = unique_name("seed");
    let seed_node = format!("{seed_alive}@localhost");
    // n boots first, told that its cluster is the seed's, and waits for it (RabbitMQ's
    // discovery retries, here 120 x 500 ms); the seed boots after it, standalone.
    let mut n = RabbitNode::launch(
        RabbitOptions::new()
            .epmd_port(epmd.port())
            .config(format!(
                "cluster_formation.classic_config.nodes.1 = {seed_node}"
            ))
            .config("cluster_formation.discovery_retry_limit = 120")
            .config("cluster_formation.discovery_retry_interval = 500"),
    )
    .await;
    // The seed's VM starts once n's has registered in EPMD, and 1 s later: n's is older.
    let deadline = Instant::now() + Duration::from_secs(60);
    while n.registered().await != Some(true) {
        assert!(Instant::now() < deadline, "n never registered in EPMD");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut seed = RabbitNode::launch(
        RabbitOptions::new()
            .epmd_port(epmd.port())
            .alive(&seed_alive),
    )
    .await;
    seed.wait_booted(Duration::from_secs(120)).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if n.exited() {
            let log = n.log();
            let before_3_13 = RabbitVersion::parse(peers().rabbitmq_version())
                .is_some_and(|v| (v.major, v.minor) < (3, 13));
            if before_3_13 && log.contains("table_attributes_mismatch") {
                return Boot::RacedTheSeedsBoot;
            }
            panic!("n stopped at boot:\n{}", n.log_tail());
        }
        let (booted, _) = n
            .rabbitmqctl(
                &["await_startup", "--timeout", "2"],
                Duration::from_secs(30),
            )
            .await;
        if booted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n did not boot:\n{}",
            n.log_tail()
        );
    }
    let probe = agent_node(epmd.port(), "localhost").await;
    let version = RabbitMq::new(probe.clone(), name(&n))
        .version(&name(&n))
        .await
        .unwrap();
    let (disk, _, _) = cli_status(&n).await;
    let log = n.log();
    if (version.major, version.minor) < (3, 13) {
        let mut both = vec![n.node().to_owned(), seed_node.clone()];
        both.sort();
        assert_eq!(disk, both, "{version}: n joined the seed during its boot");
    } else {
        assert_eq!(
            disk,
            vec![n.node().to_owned()],
            "{version}: n chose itself and booted standalone"
        );
        assert!(
            log.contains("the selected node is this node; proceed with boot"),
            "{version}: n's discovery selected itself\n{}",
            n.log_tail()
        );
    }
    eprintln!("{version} ({}): n's disc nodes {disk:?}", peers().name());
    Boot::Ran
}
