//! What formation must never do to a RabbitMQ broker that holds data, proven on real
//! brokers (the host's 3.10; `scripts/peers-matrix` runs the same tests on 4.0 and 4.3,
//! and the Khepri variants with `--ignored`): a member of the seed's cluster is never
//! joined again, an agent killed in the middle of a join is finished by the next one, a
//! survivor of a lost Khepri majority is neither formed from nor reset, a forgotten
//! broker leaves no replica behind, and a broker that formed alone and died before anybody
//! joined it is brought into the cluster formed without it only while it holds nothing.
//!
//! What counts as proof: persistent, publisher-confirmed messages in a durable classic
//! queue and a quorum queue on a member that is not the seed, all counted afterwards; no
//! reset (no `DB: resetting node` line, logged at debug level, which the harness turns
//! on; `Resetting Rabbit` before 3.13); no start of the `rabbit` application but the
//! test's own (`Starting RabbitMQ` lines).

#![cfg(feature = "etcd")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use autocluster::backend::{Backend, MemoryBackend};
use autocluster::formation::{
    Agent, CleanupState, ClusterTarget, FormationConfig, FormationError, FormationEvent, Formed,
    Outcome, Probe, RabbitMq,
};
use autocluster::{Node, NodeName};

use crate::common::{Epmd, RabbitNode, RabbitOptions};
use crate::rabbitmq_formation::{
    RABBIT_TURN, agent_node, cli_status, is_running, name, quick, stop_app,
};

/// Messages published into each queue.
const MESSAGES: u64 = 100;
/// The durable classic queue and the quorum queue.
const QUEUES: [(&str, &str); 2] = [("orders", "classic"), ("orders-qq", "quorum")];

/// Persistent, publisher-confirmed messages in both queues, declared on `node`.
async fn publish(node: &RabbitNode) {
    for (queue, kind) in QUEUES {
        node.publish_confirmed(queue, kind, MESSAGES as u32).await;
    }
}

/// Every message is still there (a restarted broker recovers its queues in the
/// background: its counts are waited for, 30 s at most).
async fn assert_every_message(node: &RabbitNode) {
    for (queue, _) in QUEUES {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let count = node.message_count(queue).await;
            if count == Some(MESSAGES) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{queue} on {}: {count:?} of {MESSAGES} messages\n{}",
                node.node(),
                node.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Resets and application starts so far, per broker.
fn history(nodes: &[RabbitNode]) -> Vec<(usize, usize)> {
    nodes.iter().map(|n| (n.resets(), n.starts())).collect()
}

/// Every broker lists all of them as disc and running nodes.
async fn assert_all_members(nodes: &[RabbitNode]) {
    let mut all: Vec<String> = nodes.iter().map(|n| n.node().to_owned()).collect();
    all.sort();
    for n in nodes {
        let (disk, running, _) = cli_status(n).await;
        assert_eq!(
            (disk, running),
            (all.clone(), all.clone()),
            "on {}",
            n.node()
        );
    }
}

/// Every broker lists all of them as disc and running nodes; the messages on
/// `nodes[member]` are all there; the first two brokers (the members before the joins)
/// were neither reset nor restarted since `before`.
async fn assert_joined_and_nothing_lost(
    nodes: &[RabbitNode],
    member: usize,
    before: &[(usize, usize)],
) {
    assert_all_members(nodes).await;
    assert_every_message(&nodes[member]).await;
    assert_eq!(
        history(nodes)[..2],
        before[..2],
        "(resets, starts) of the first two members"
    );
}

/// Forms `nodes` one agent after another (the first forms, the others join): what each
/// agent returned (held to keep the registrations).
async fn form_in_turn(backend: &Arc<dyn Backend>, probe: &Node, nodes: &[NodeName]) -> Vec<Formed> {
    let mut formed = Vec::new();
    for n in nodes {
        let agent = Agent::new(
            backend.clone(),
            Arc::new(RabbitMq::new(probe.clone(), n.clone())),
            quick(),
        );
        formed.push(agent.run().await.expect("formation"));
    }
    formed
}

/// The first two of `nodes` formed, and messages published on the one that is not the
/// seed: what the agents returned, the seed, the index of that member, and the brokers'
/// history then.
async fn two_members_holding_messages(
    nodes: &[RabbitNode],
    backend: &Arc<dyn Backend>,
    probe: &Node,
) -> (Vec<Formed>, NodeName, usize, Vec<(usize, usize)>) {
    let names: Vec<NodeName> = nodes[..2].iter().map(name).collect();
    let formed = form_in_turn(backend, probe, &names).await;
    let seed = names[0].clone().min(names[1].clone());
    let member = if seed == names[0] { 1 } else { 0 };
    publish(&nodes[member]).await;
    (formed, seed, member, history(nodes))
}

/// Enables Khepri on brokers that have it as an experimental flag (3.13 - 4.2).
pub(crate) async fn enable_khepri(nodes: &[RabbitNode]) {
    for n in nodes {
        let (ok, out) = n
            .rabbitmqctl(
                &["enable_feature_flag", "--experimental", "khepri_db"],
                Duration::from_secs(120),
            )
            .await;
        assert!(ok, "enabling khepri_db on {}: {out}", n.node());
    }
}

/// A member of the seed's cluster is never joined again, whatever it lists as running:
/// on the formed cluster, while the seed's application is stopped (the seed restarting,
/// probed live all the same), and after the member's own application restarted with its
/// data; with `allow_reset` false and true. Its queue survives and its application is not
/// restarted by the agent. On Khepri (4.3+, or 4.0 - 4.2 with `khepri_db` enabled), a
/// survivor whose two peers are stopped is neither formed from nor reset, and health
/// reports the lost majority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_never_joined_again_and_a_lost_majority_is_reported() {
    never_joined_again(false).await;
}

/// The same on RabbitMQ 3.13 - 4.2 with Khepri enabled on every broker before formation
/// (`rabbitmqctl enable_feature_flag --experimental khepri_db`). The host's 3.10 has no
/// Khepri; `scripts/peers-matrix` runs it on 4.0 (and on 4.3, where Khepri is the only
/// store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ 3.13 or later: scripts/peers-matrix runs it on 4.0 and 4.3"]
async fn members_are_never_joined_again_on_khepri() {
    never_joined_again(true).await;
}

async fn never_joined_again(khepri: bool) {
    use autocluster::formation::MetadataStore;
    use autocluster::health::{self, CheckOptions};

    use crate::common::Hooked;

    let _turn = RABBIT_TURN.lock().await;
    let epmd = Epmd::start().await;
    let mut nodes = RabbitNode::start_many(3, RabbitOptions::new().epmd_port(epmd.port())).await;
    let probe = agent_node(epmd.port(), "localhost").await;
    if khepri {
        enable_khepri(&nodes).await;
    }
    let (s, x, y) = (name(&nodes[0]), name(&nodes[1]), name(&nodes[2]));
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let registrations = form_in_turn(&backend, &probe, &[s.clone(), x.clone(), y.clone()]).await;
    let mut all: Vec<String> = nodes.iter().map(|n| n.node().to_owned()).collect();
    all.sort();
    assert_eq!(cli_status(&nodes[2]).await.0, all);
    // y (not the seed) holds the messages: a reset of y would take them.
    publish(&nodes[2]).await;
    let before = history(&nodes);

    // An agent for y whose probes find the seed live whatever its application does, and
    // whose backend lists the seed only.
    let only_seed: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let _seed_registered = only_seed
        .register(autocluster::backend::Registration::new(
            s.clone(),
            Duration::from_secs(60),
        ))
        .await
        .unwrap();
    let run_y = |allow_reset: bool| {
        let seed = s.clone();
        let target = Hooked::new(RabbitMq::new(probe.clone(), y.clone()), "rabbitmq").on_probe(
            move |node, probed| {
                let p = probed?;
                (*node == seed && !p.live).then(|| {
                    Probe::live(
                        node.clone(),
                        autocluster::formation::Membership::running(vec![node.clone()]),
                    )
                })
            },
        );
        let agent = Agent::new(
            only_seed.clone(),
            Arc::new(target),
            FormationConfig {
                allow_reset,
                max_attempts: 1,
                register: false,
                ..quick()
            },
        );
        async move { agent.run().await }
    };
    let member = Outcome::AlreadyMember { seed: s.clone() };

    // 1. On the formed cluster.
    for allow_reset in [false, true] {
        assert_eq!(run_y(allow_reset).await.expect("y").outcome, member);
    }
    // 2. While the seed's application is stopped: y does not list it as running.
    stop_app(&probe, &s).await;
    let m = RabbitMq::new(probe.clone(), y.clone())
        .membership()
        .await
        .unwrap();
    assert!(
        m.members.contains(&s) && !m.running_members.contains(&s),
        "{m:?}"
    );
    for allow_reset in [false, true] {
        assert_eq!(run_y(allow_reset).await.expect("y").outcome, member);
    }
    let started = probe
        .call(&s, "rabbit", "start", vec![], Duration::from_secs(120))
        .await
        .expect("rabbit:start() on the seed");
    assert!(started.is_atom("ok"), "{started}");
    // 3. After y's broker was killed and restarted with its data.
    nodes[2].kill().await;
    nodes[2].restart().await;
    nodes[2].wait_booted(Duration::from_secs(120)).await;
    for allow_reset in [false, true] {
        let outcome = run_y(allow_reset).await.expect("y").outcome;
        assert!(
            matches!(&outcome, Outcome::AlreadyMember { .. }),
            "{outcome}"
        );
    }
    // Nothing was reset, and nothing restarted but the seed's application and y's broker.
    assert_every_message(&nodes[2]).await;
    let expected: Vec<(usize, usize)> = before
        .iter()
        .zip([1, 0, 1])
        .map(|(&(resets, starts), restarted)| (resets, starts + restarted))
        .collect();
    assert_eq!(history(&nodes), expected, "(resets, starts) of s, x, y");
    assert_eq!(cli_status(&nodes[0]).await.0, all);

    // 4. Majority lost, where the store is Khepri.
    let target_s = RabbitMq::new(probe.clone(), s.clone());
    let store = target_s.inspect().await.unwrap().store;
    if khepri {
        assert_eq!(store, Some(MetadataStore::Khepri));
    }
    if store != Some(MetadataStore::Khepri) {
        eprintln!(
            "{store:?}: the lost-majority part needs Khepri \
             (the _on_khepri variant runs it on 4.0, and this test on 4.3)"
        );
        return;
    }
    stop_app(&probe, &x).await;
    stop_app(&probe, &y).await;
    let report = health::check(&target_s, Some(backend.as_ref()), &CheckOptions::default()).await;
    assert!(!report.healthy, "{report}");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p == "majority lost: 1 of 3 members running"),
        "{report}"
    );
    let lone: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let err = Agent::new(
        lone,
        Arc::new(RabbitMq::new(probe.clone(), s.clone())),
        FormationConfig {
            max_attempts: 1,
            ..quick()
        },
    )
    .run()
    .await
    .expect_err("a survivor is not formed from");
    assert!(
        matches!(
            err,
            FormationError::MajorityLost {
                running: 1,
                members: 3,
                ..
            }
        ),
        "{err}"
    );
    for n in [&x, &y] {
        let started = probe
            .call(n, "rabbit", "start", vec![], Duration::from_secs(120))
            .await
            .expect("rabbit:start()");
        assert!(started.is_atom("ok"), "{started}");
    }
    assert_eq!(cli_status(&nodes[0]).await.0, all);
    assert_every_message(&nodes[2]).await;
    let resets: Vec<usize> = nodes.iter().map(RabbitNode::resets).collect();
    let before: Vec<usize> = before.iter().map(|(r, _)| *r).collect();
    assert_eq!(resets, before, "resets of s, x, y");
    drop(registrations);
}

/// Agents killed in the middle of their joins (their runtimes dropped as in a crash), then
/// run again: one right after it stopped its broker's application to join, one once the
/// seed lists its broker as a member but before the application runs again (the join
/// call itself may be cut short: the broker ends a call whose caller's node is gone).
/// The next agent finishes each join (joining again where the victim's broker does not
/// list the seed: it held nothing); the members' messages are all there, and no member
/// was reset or restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_join_is_finished_by_the_next() {
    killed_mid_join(false).await;
}

/// The same with Khepri enabled on every broker before formation (3.13 - 4.2; 4.3 has
/// only Khepri). Ignored on the host's 3.10; `scripts/peers-matrix` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ 3.13 or later: scripts/peers-matrix runs it on 4.0 and 4.3"]
async fn an_agent_killed_mid_join_is_finished_by_the_next_on_khepri() {
    killed_mid_join(true).await;
}

/// Where a victim agent is killed.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// Its broker's application stopped for the join.
    Stopped,
    /// The seed lists its broker as a member; the application is not running yet.
    Joined,
}

async fn killed_mid_join(khepri: bool) {
    let _turn = RABBIT_TURN.lock().await;
    let epmd = Epmd::start().await;
    let nodes = RabbitNode::start_many(4, RabbitOptions::new().epmd_port(epmd.port())).await;
    let probe = agent_node(epmd.port(), "localhost").await;
    if khepri {
        enable_khepri(&nodes).await;
    }
    let names: Vec<_> = nodes.iter().map(name).collect();
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let (mut formed, seed, member, before) =
        two_members_holding_messages(&nodes, &backend, &probe).await;
    let config = FormationConfig {
        lock_ttl: Duration::from_secs(5),
        ..quick()
    };
    let seed_target = RabbitMq::new(probe.clone(), seed.clone());

    for (victim_node, at) in [(&names[2], KillAt::Stopped), (&names[3], KillAt::Joined)] {
        // The victim's agent runs in a runtime of its own, dropped at the kill point.
        let victim = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (port, b, target, c) = (
            epmd.port(),
            backend.clone(),
            victim_node.clone(),
            config.clone(),
        );
        victim.spawn(async move {
            let probe = agent_node(port, "localhost").await;
            let _ = Agent::new(b, Arc::new(RabbitMq::new(probe, target)), c)
                .run()
                .await;
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let stopped = !is_running(&probe, victim_node).await;
            let reached = match at {
                KillAt::Stopped => stopped,
                KillAt::Joined => {
                    stopped
                        && seed_target
                            .membership()
                            .await
                            .is_ok_and(|m| m.members.contains(victim_node))
                }
            };
            if reached {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{victim_node}'s agent never reached {at:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        victim.shutdown_background();
        eprintln!("{victim_node}'s agent killed at {at:?}");

        // The next agent finishes the join.
        let next = Agent::new(
            backend.clone(),
            Arc::new(RabbitMq::new(probe.clone(), victim_node.clone())),
            config.clone(),
        )
        .run()
        .await
        .expect("the next agent finishes the join");
        assert!(
            matches!(
                &next.outcome,
                Outcome::Joined { seed: j } | Outcome::AlreadyMember { seed: j } if *j == seed
            ),
            "{at:?}: {}",
            next.outcome
        );
        eprintln!("then: {}", next.outcome);
        formed.push(next);
    }
    // The members were neither reset nor restarted (the joiners held nothing).
    assert_joined_and_nothing_lost(&nodes, member, &before).await;
    drop(formed);
}

/// Every queue of `node` with its replicas (`rabbitmqctl list_queues name members`).
async fn queue_members(node: &RabbitNode) -> String {
    let (ok, out) = node
        .rabbitmqctl(
            &[
                "list_queues",
                "name",
                "members",
                "--quiet",
                "--no-table-headers",
            ],
            Duration::from_secs(60),
        )
        .await;
    assert!(ok, "{out}");
    out
}

/// Forgetting a dead broker removes it from the cluster and from the replicas of a quorum
/// queue (and, on 3.13 and later, of a stream) that it held, as `rabbitmqctl
/// forget_cluster_node` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_removes_a_dead_member_and_its_replicas() {
    let _turn = RABBIT_TURN.lock().await;
    let epmd = Epmd::start().await;
    let mut nodes = RabbitNode::start_many(3, RabbitOptions::new().epmd_port(epmd.port())).await;
    let probe = agent_node(epmd.port(), "localhost").await;
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let names: Vec<NodeName> = nodes.iter().map(name).collect();
    let formed = form_in_turn(&backend, &probe, &names).await;
    let (s, gone) = (name(&nodes[0]), name(&nodes[2]));
    let target = RabbitMq::new(probe.clone(), s.clone());
    let version = target.version(&s).await.unwrap();
    let streams = (version.major, version.minor) >= (3, 13);
    let mut declare = vec![("qq", "quorum")];
    if streams {
        declare.push(("st", "stream"));
    }
    for (queue, kind) in &declare {
        let declared = nodes[0]
            .eval(&format!(
                "{{new, _}} = rabbit_amqqueue:declare(rabbit_misc:r(<<\"/\">>, queue, <<\"{queue}\">>), \
                 true, false, [{{<<\"x-queue-type\">>, longstr, <<\"{kind}\">>}}], none, <<\"test\">>), ok."
            ))
            .await;
        assert_eq!(declared.trim(), "ok", "{queue}");
    }
    let before = queue_members(&nodes[0]).await;
    // Every queue has a replica on the broker that will die.
    for line in before.lines() {
        assert!(line.contains(gone.as_str()), "{line} (of {before})");
    }

    nodes[2].kill().await;
    // Forgotten once the survivors see it down (a running member is not forgotten).
    let deadline = Instant::now() + Duration::from_secs(60);
    while target
        .membership()
        .await
        .is_ok_and(|m| m.running_members.contains(&gone))
    {
        assert!(
            Instant::now() < deadline,
            "the survivors still see {gone} running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    target.forget(&gone).await.expect("forget");

    let (disk, _, _) = cli_status(&nodes[0]).await;
    assert!(!disk.contains(&gone.to_string()), "{disk:?}");
    let after = queue_members(&nodes[0]).await;
    for line in after.lines() {
        assert!(!line.contains(gone.as_str()), "{line} (of {after})");
    }
    assert_eq!(after.lines().count(), declare.len(), "{after}");
    drop(formed);
}

/// A broker killed (SIGKILL) the moment the seed's cluster lists it as a member, in the
/// middle of its agent's join, and restarted with its data: on Khepri (4.3) the restarted
/// broker may come up alone while the seed still lists it, or halt at boot (its store
/// elected itself in the term of the real leader: `leader_saw_append_entries_rpc_in_same_term`),
/// and is then restarted again, as a container runtime would. The next agent finishes the
/// join; the members' messages are all there, and they were neither reset nor restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_once_the_seed_accepted_its_join_is_joined_by_the_next_agent() {
    let _turn = RABBIT_TURN.lock().await;
    let epmd = Epmd::start().await;
    let mut nodes = RabbitNode::start_many(3, RabbitOptions::new().epmd_port(epmd.port())).await;
    let probe = agent_node(epmd.port(), "localhost").await;
    let names: Vec<_> = nodes.iter().map(name).collect();
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let (formed, seed, member, before) =
        two_members_holding_messages(&nodes, &backend, &probe).await;
    let seed_target = RabbitMq::new(probe.clone(), seed.clone());
    let y = names[2].clone();
    let agent = Agent::new(
        backend.clone(),
        Arc::new(RabbitMq::new(probe.clone(), y.clone())),
        quick(),
    );
    let run = tokio::spawn(async move { agent.run().await });
    let deadline = Instant::now() + Duration::from_secs(120);
    while !seed_target
        .membership()
        .await
        .is_ok_and(|m| m.members.contains(&y))
    {
        assert!(Instant::now() < deadline, "the seed never listed {y}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    run.abort();
    nodes[2].kill().await;
    // Restarted with its data, and again whenever it halts at boot.
    let mut halts = 0;
    nodes[2].restart().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !is_running(&probe, &y).await {
        if nodes[2].exited() {
            halts += 1;
            assert!(
                halts <= 3,
                "{y} halted at boot {halts} times\n{}",
                nodes[2].log_tail()
            );
            nodes[2].restart().await;
        }
        assert!(
            Instant::now() < deadline,
            "{y} did not boot again\n{}",
            nodes[2].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = RabbitMq::new(probe.clone(), y.clone()).membership().await;
    eprintln!("{y} restarted ({halts} halt(s) at boot): its view {seen:?}");

    let next = Agent::new(
        backend.clone(),
        Arc::new(RabbitMq::new(probe.clone(), y.clone())),
        quick(),
    )
    .run()
    .await
    .expect("the next agent finishes the join");
    assert!(
        matches!(
            &next.outcome,
            Outcome::Joined { seed: j } | Outcome::AlreadyMember { seed: j } if *j == seed
        ),
        "{}",
        next.outcome
    );
    eprintln!("then: {}", next.outcome);
    // The members were neither reset nor restarted (the joiners held nothing).
    assert_joined_and_nothing_lost(&nodes, member, &before).await;
    drop((formed, next));
}

/// Restarts `nodes[i]` with its data and waits until its application runs (restarting it
/// again when it halts at boot, as a container runtime would; 3 times at most).
async fn restart_until_running(nodes: &mut [RabbitNode], i: usize, probe: &Node) {
    let node = name(&nodes[i]);
    nodes[i].restart().await;
    let mut halts = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !is_running(probe, &node).await {
        if nodes[i].exited() {
            halts += 1;
            assert!(halts <= 3, "{node} halted at boot {halts} times");
            nodes[i].restart().await;
        }
        assert!(
            Instant::now() < deadline,
            "{node} did not boot again\n{}",
            nodes[i].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One watch round of `agent`: whether it reported a split, and the seed it joined to
/// mend one, if it did.
async fn watch_once(agent: &Agent) -> (bool, Option<NodeName>) {
    let mut events = agent.events();
    agent.watch_round(&mut CleanupState::new(), false).await;
    let (mut split, mut mended) = (false, None);
    while let Ok(event) = events.try_recv() {
        match event {
            FormationEvent::SplitDetected(_) => split = true,
            FormationEvent::SplitMended(seed) => mended = Some(seed),
            _ => {}
        }
    }
    (split, mended)
}

/// The split a lock cannot prevent: the broker that sorts first forms alone and
/// registers, and is killed before anybody joins it; the other two prove it down and form
/// a cluster without it; it is restarted with its data, a cluster of one, still
/// registered. While it holds messages, its agent's watch reports the split and moves
/// nothing, `allow_reset` or not. Once its queues are deleted, the next round joins it to
/// the other cluster: three members, the other cluster's messages all there, and its two
/// members neither reset nor restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_formed_and_died_before_anybody_joined_is_brought_in_only_when_empty() {
    let _turn = RABBIT_TURN.lock().await;
    let epmd = Epmd::start().await;
    let mut nodes = RabbitNode::start_many(3, RabbitOptions::new().epmd_port(epmd.port())).await;
    let probe = agent_node(epmd.port(), "localhost").await;
    let names: Vec<NodeName> = nodes.iter().map(name).collect();
    let first = (0..3).min_by_key(|&i| names[i].clone()).unwrap_or(0);
    let others: Vec<usize> = (0..3).filter(|&i| i != first).collect();
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let lone = Agent::new(
        backend.clone(),
        Arc::new(RabbitMq::new(probe.clone(), names[first].clone())),
        FormationConfig {
            allow_reset: true,
            ..quick()
        },
    );
    let lone_formed = lone.run().await.expect("the first broker forms");
    assert_eq!(lone_formed.outcome, Outcome::FormedNew);
    nodes[first].kill().await;

    let pair: Vec<NodeName> = others.iter().map(|&i| names[i].clone()).collect();
    let formed = form_in_turn(&backend, &probe, &pair).await;
    assert_eq!(
        formed[0].outcome,
        Outcome::FormedNew,
        "the first broker, proven down, is no seed"
    );
    let pair_seed = pair[0].clone().min(pair[1].clone());
    let member = others
        .iter()
        .copied()
        .find(|&i| names[i] != pair_seed)
        .unwrap_or(others[1]);
    publish(&nodes[member]).await;

    restart_until_running(&mut nodes, first, &probe).await;
    publish(&nodes[first]).await;
    let before = history(&nodes);
    let (split, mended) = watch_once(&lone).await;
    assert!(split, "the split is reported");
    assert_eq!(mended, None, "a broker holding messages is not moved");
    assert_every_message(&nodes[first]).await;
    assert_eq!(history(&nodes), before, "nobody reset or restarted");

    for (queue, _) in QUEUES {
        let (ok, out) = nodes[first]
            .rabbitmqctl(&["delete_queue", queue], Duration::from_secs(60))
            .await;
        assert!(ok, "deleting {queue}: {out}");
    }
    let (split, mended) = watch_once(&lone).await;
    assert!(split);
    assert_eq!(
        mended,
        Some(pair_seed),
        "the empty broker joins the larger cluster"
    );
    assert_all_members(&nodes).await;
    assert_every_message(&nodes[member]).await;
    let after = history(&nodes);
    for &i in &others {
        assert_eq!(after[i], before[i], "(resets, starts) of {}", names[i]);
    }
    let (split, mended) = watch_once(&lone).await;
    assert_eq!((split, mended), (false, None), "one cluster afterwards");
    drop((lone_formed, formed));
}
