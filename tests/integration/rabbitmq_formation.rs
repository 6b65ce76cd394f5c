//! Cluster formation of real RabbitMQ 3.10 nodes (Debian's package) with the
//! [`RabbitMq`] target, and the function choices for 3.12, 3.13 and 4.x against stand-in
//! modules on a real `erl` node (only 3.10 is installable here).
//!
//! RabbitMQ nodes boot slowly (8-25 s each on 2 cores), so each test boots its nodes at
//! once and runs several checks on them, each check setting up the state it needs; the
//! tests that boot RabbitMQ take turns (one lock), so that two sets of nodes never fight
//! for the cores.

#![cfg(feature = "etcd")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use autocluster::backend::etcd::{EtcdBackend, EtcdConfig};
use autocluster::backend::{Backend, MemoryBackend};
use autocluster::formation::{
    Agent, CleanupConfig, CleanupState, ClusterTarget, DataState, FormationConfig, FormationError,
    FormationEvent, Formed, Outcome, RabbitMq, Step,
};
use autocluster::{Cookie, Node, NodeName};

use crate::common::{
    Epmd, ErlNode, ErlOptions, EtcdServer, RabbitNode, RabbitOptions, unique_name,
};

/// RabbitMQ tests take turns: two sets of booting nodes on 2 cores slow both down.
pub static RABBIT_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const COOKIE: &str = "autocluster_rabbit_cookie";

pub(crate) fn quick() -> FormationConfig {
    FormationConfig {
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        max_attempts: 5,
        node_ttl: Duration::from_secs(10),
        lock_ttl: Duration::from_secs(60),
        lock_wait: Duration::from_secs(120),
        ..FormationConfig::default()
    }
}

/// The agents' hidden node, in the nodes' EPMD.
pub(crate) async fn agent_node(epmd_port: u16, host: &str) -> Node {
    Node::builder(
        format!("{}@{host}", unique_name("agent")).parse().unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .epmd_port(epmd_port)
    .start()
    .await
    .expect("the agents' node")
}

pub(crate) fn name(n: &RabbitNode) -> NodeName {
    n.node().parse().unwrap()
}

/// Records an agent's events, each with when it arrived, until formation finishes.
pub(crate) fn timeline(agent: &Agent) -> tokio::task::JoinHandle<Vec<(Instant, FormationEvent)>> {
    let mut events = agent.events();
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(e) = events.recv().await {
            let last = matches!(e, FormationEvent::Finished(_));
            seen.push((Instant::now(), e));
            if last {
                break;
            }
        }
        seen
    })
}

/// The first event of a timeline that `what` accepts: its position and when it arrived.
pub(crate) fn first_event(
    events: &[(Instant, FormationEvent)],
    what: impl Fn(&FormationEvent) -> bool,
) -> Option<(usize, Instant)> {
    events
        .iter()
        .enumerate()
        .find(|(_, (_, e))| what(e))
        .map(|(i, (t, _))| (i, *t))
}

/// Runs one agent per target, all released at the same instant.
pub(crate) async fn run_together(agents: &[Agent]) -> Vec<Result<Formed, FormationError>> {
    let barrier = Arc::new(tokio::sync::Barrier::new(agents.len()));
    let runs: Vec<_> = agents
        .iter()
        .map(|a| {
            let a = a.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                a.run().await
            })
        })
        .collect();
    let mut out = Vec::new();
    for r in runs {
        out.push(r.await.expect("agent task"));
    }
    out
}

/// `rabbitmqctl cluster_status --formatter json`: (disk_nodes, running_nodes, partitions).
pub(crate) async fn cli_status(node: &RabbitNode) -> (Vec<String>, Vec<String>, serde_json::Value) {
    let (ok, out) = node
        .rabbitmqctl(
            &["cluster_status", "--formatter", "json"],
            Duration::from_secs(60),
        )
        .await;
    assert!(ok, "rabbitmqctl cluster_status on {}: {out}", node.node());
    let json = out
        .lines()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in {out}"));
    let v: serde_json::Value = serde_json::from_str(json).expect("cluster_status JSON");
    let names = |key: &str| -> Vec<String> {
        let mut n: Vec<String> = v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} in {v}"))
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    (
        names("disk_nodes"),
        names("running_nodes"),
        v["partitions"].clone(),
    )
}

pub(crate) fn no_partitions(p: &serde_json::Value) -> bool {
    match p {
        serde_json::Value::Object(m) => m.is_empty(),
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Null => true,
        _ => false,
    }
}

pub(crate) async fn queues(node: &RabbitNode) -> String {
    let (ok, out) = node
        .rabbitmqctl(
            &[
                "list_queues",
                "name",
                "messages",
                "--quiet",
                "--no-table-headers",
            ],
            Duration::from_secs(60),
        )
        .await;
    assert!(ok, "list_queues on {}: {out}", node.node());
    out.trim().to_owned()
}

pub(crate) async fn is_running(probe: &Node, node: &NodeName) -> bool {
    probe
        .call(
            node,
            "rabbit",
            "is_running",
            vec![],
            Duration::from_secs(10),
        )
        .await
        .map(|t| t.is_atom("true"))
        .unwrap_or(false)
}

pub(crate) async fn stop_app(probe: &Node, node: &NodeName) {
    let r = probe
        .call(node, "rabbit", "stop", vec![], Duration::from_secs(60))
        .await
        .expect("rabbit:stop()");
    assert!(r.is_atom("ok"), "rabbit:stop() on {node}: {r}");
    assert!(!is_running(probe, node).await);
}

/// The seed scenario: three RabbitMQ 3.10 nodes, registered in etcd, booted together,
/// agents started at the same instant: one cluster, and `rabbitmqctl cluster_status` on
/// every node lists all three as disc and running nodes, with no partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenario_three_rabbitmq_nodes_form_one_cluster() {
    let _turn = RABBIT_TURN.lock().await;
    let started = Instant::now();
    let etcd = EtcdServer::start().await;
    let epmd = Epmd::start().await;
    let nodes = RabbitNode::start_many(3, RabbitOptions::new().epmd_port(epmd.port())).await;
    let booted = started.elapsed();
    let probe = agent_node(epmd.port(), "localhost").await;
    let cluster = unique_name("seed");
    let agents: Vec<Agent> = nodes
        .iter()
        .map(|n| {
            let backend: Arc<dyn Backend> = Arc::new(
                EtcdBackend::new(EtcdConfig::new([etcd.endpoint()]).with_cluster_name(&cluster))
                    .unwrap(),
            );
            let target = Arc::new(RabbitMq::new(probe.clone(), name(n)));
            Agent::new(backend, target, quick())
        })
        .collect();
    let timelines: Vec<_> = agents.iter().map(timeline).collect();
    let formed_at = Instant::now();
    let results = run_together(&agents).await;
    let formed: Vec<Formed> = results
        .into_iter()
        .zip(&nodes)
        .map(|(r, n)| {
            r.unwrap_or_else(|e| panic!("{}: {e}\n--- log ---\n{}", n.node(), n.log_tail()))
        })
        .collect();
    let forming = formed_at.elapsed();
    let outcomes: Vec<&Outcome> = formed.iter().map(|f| &f.outcome).collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| ***o == Outcome::FormedNew)
            .count(),
        1,
        "{outcomes:?}"
    );
    let first = formed
        .iter()
        .find(|f| f.outcome == Outcome::FormedNew)
        .unwrap()
        .node
        .clone();
    // The others joined the first, or the second (when it sorts first): one cluster either
    // way, which the views below check.
    for f in formed.iter().filter(|f| f.node != first) {
        assert!(
            matches!(&f.outcome, Outcome::Joined { seed } if *seed != f.node),
            "{}: {:?}",
            f.node,
            f.outcome
        );
    }

    // The startup lock covers the joins' membership changes, not the application starts:
    // the second joiner took the lock while the first one's application was starting.
    let mut timelines: Vec<(NodeName, Vec<(Instant, FormationEvent)>)> = {
        let mut out = Vec::new();
        for (t, f) in timelines.into_iter().zip(&formed) {
            out.push((f.node.clone(), t.await.expect("event recorder")));
        }
        out
    };
    timelines.retain(|(node, _)| *node != first);
    let at = |events: &[(Instant, FormationEvent)], what: &dyn Fn(&FormationEvent) -> bool| {
        first_event(events, what).map(|(_, t)| t)
    };
    let released = |e: &FormationEvent| *e == FormationEvent::LockReleased;
    let recorded = |e: &FormationEvent| matches!(e, FormationEvent::Decided(Some(_)));
    let acquired = |e: &FormationEvent| matches!(e, FormationEvent::LockAcquired { .. });
    let finished = |e: &FormationEvent| matches!(e, FormationEvent::Finished(_));
    timelines.sort_by_key(|(_, events)| at(events, &released));
    for (node, events) in &timelines {
        let (rec, rel) = (at(events, &recorded), at(events, &released));
        assert!(
            rec.is_some() && rec <= rel,
            "{node}: recorded as a member under the lock: {events:?}"
        );
    }
    let (first_joiner, early) = &timelines[0];
    let (second_joiner, late) = &timelines[1];
    let (started_app, next_lock) = (at(early, &finished).unwrap(), at(late, &acquired).unwrap());
    assert!(
        next_lock < started_app,
        "{second_joiner} took the lock {:?} after {first_joiner}'s application had started",
        next_lock - started_app
    );

    // Registered under RabbitMQ's keys in etcd.
    let listed = agents[0].backend().list_nodes().await.unwrap();
    let mut all: Vec<String> = nodes.iter().map(|n| n.node().to_owned()).collect();
    all.sort();
    let mut registered: Vec<String> = listed.iter().map(|r| r.node.to_string()).collect();
    registered.sort();
    assert_eq!(registered, all);
    let keys: Vec<String> = etcd
        .keys("/rabbitmq/discovery/")
        .await
        .into_iter()
        .filter(|k| k.contains("/nodes/"))
        .collect();
    assert_eq!(keys.len(), 3, "{keys:?}");

    // The library's view and the node's own cluster_status term.
    for a in &agents {
        let m = a.target().membership().await.unwrap();
        let members: Vec<String> = m.members.iter().map(|n| n.to_string()).collect();
        let running: Vec<String> = m.running_members.iter().map(|n| n.to_string()).collect();
        assert_eq!(members, all, "{}", a.node());
        assert_eq!(running, all, "{}", a.node());
        assert!(m.partitions.is_empty());
        // Members of a fresh cluster hold no operator data: nothing a reset would lose
        // besides the membership, which the plan reads from the inspection.
        assert_eq!(a.target().inventory().await.unwrap(), DataState::Empty);
    }
    let status = RabbitMq::new(probe.clone(), name(&nodes[2]))
        .cluster_status()
        .await
        .unwrap();
    eprintln!("cluster_status of {}: {status}", nodes[2].node());

    // The real CLI agrees, on every node.
    for n in &nodes {
        let (disk, running, partitions) = cli_status(n).await;
        assert_eq!(disk, all, "disk_nodes on {}", n.node());
        assert_eq!(running, all, "running_nodes on {}", n.node());
        assert!(
            no_partitions(&partitions),
            "partitions on {}: {partitions}",
            n.node()
        );
    }
    eprintln!(
        "seed scenario: booted 3 nodes in {booted:?}, formed in {forming:?}, total {:?}",
        started.elapsed()
    );

    // Cleanup, enabled and not warn-only, while etcd is down: nothing is forgotten. The
    // victim deregisters and dies, so once etcd is back a successful listing no longer
    // lists it, and it is forgotten after the configured rounds (which shows the
    // check could fail).
    let mut nodes = nodes;
    let mut formed = formed;
    let victim_idx = 2;
    let survivor_idx = 0;
    let victim = name(&nodes[victim_idx]);
    let registration = formed[victim_idx].registration.take().expect("registered");
    registration.deregister().await.unwrap();
    nodes[victim_idx].kill().await;
    let survivor = RabbitMq::new(probe.clone(), name(&nodes[survivor_idx]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while survivor
        .membership()
        .await
        .unwrap()
        .running_members
        .contains(&victim)
    {
        assert!(
            Instant::now() < deadline,
            "the survivor still sees {victim} running"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut etcd = etcd;
    etcd.stop().await;
    let watcher = Agent::new(
        agents[survivor_idx].backend().clone(),
        Arc::new(survivor.clone()),
        FormationConfig {
            cleanup: CleanupConfig {
                enabled: true,
                warn_only: false,
                unreachable_rounds: 2,
                max_share: 0.5,
                // The victim deregistered: missing from the listings for 1 s is enough
                // here (the default waits a node TTL, 61 s on etcd).
                unlisted_for: Some(Duration::from_secs(1)),
                ..CleanupConfig::default()
            },
            ..quick()
        },
    );
    let mut events = watcher.events();
    let mut state = CleanupState::new();
    for _ in 0..4 {
        watcher.watch_round(&mut state, true).await;
    }
    let mut skipped = 0;
    while let Ok(ev) = events.try_recv() {
        match ev {
            FormationEvent::CleanupSkipped(_) => skipped += 1,
            FormationEvent::Forgot(n) => panic!("forgot {n} while etcd was down"),
            _ => {}
        }
    }
    assert_eq!(skipped, 4, "every round was skipped");
    assert!(
        state.unreachable_rounds(&victim) >= 2,
        "the victim counted as unreachable"
    );
    let (disk, _, _) = cli_status(&nodes[survivor_idx]).await;
    assert!(
        disk.contains(&victim.to_string()),
        "still a member: {disk:?}"
    );

    etcd.restart().await;
    let mut forgot = false;
    for _ in 0..6 {
        watcher.watch_round(&mut state, true).await;
        while let Ok(ev) = events.try_recv() {
            if ev == FormationEvent::Forgot(victim.clone()) {
                forgot = true;
            }
        }
        if forgot {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        forgot,
        "with etcd back, the dead unregistered member is forgotten"
    );
    let (disk, _, _) = cli_status(&nodes[survivor_idx]).await;
    assert!(!disk.contains(&victim.to_string()), "forgotten: {disk:?}");
    assert_eq!(watcher.metrics().cleanup_forgotten, 1);
    drop(formed);
}

/// Data safety, crash recovery and leaving, on three nodes: `s` forms, `x` holds a
/// durable queue with a message, `y` has its application stopped as an agent killed
/// mid-join would leave it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_safety_crash_recovery_and_leave_on_rabbitmq() {
    let _turn = RABBIT_TURN.lock().await;
    let started = Instant::now();
    let epmd = Epmd::start().await;
    let nodes = RabbitNode::start_many(3, RabbitOptions::new().epmd_port(epmd.port())).await;
    eprintln!("booted 3 nodes in {:?}", started.elapsed());
    let (s, x, y) = (&nodes[0], &nodes[1], &nodes[2]);
    let probe = agent_node(epmd.port(), "localhost").await;
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let agent = |n: &RabbitNode, config: FormationConfig| {
        Agent::new(
            backend.clone(),
            Arc::new(RabbitMq::new(probe.clone(), name(n))),
            config,
        )
    };

    // s forms the cluster (nothing registered yet).
    let t = Instant::now();
    let formed_s = agent(s, quick()).run().await.expect("s forms");
    assert_eq!(formed_s.outcome, Outcome::FormedNew);
    eprintln!("s formed in {:?}", t.elapsed());

    // 1. Data safety: x holds a durable queue with a persistent message.
    let t = Instant::now();
    let declared = x
        .eval(
            "{new, _} = rabbit_amqqueue:declare(rabbit_misc:r(<<\"/\">>, queue, <<\"orders\">>), \
             true, false, [], none, <<\"test\">>), ok.",
        )
        .await;
    assert_eq!(declared.trim(), "ok");
    // A persistent message where the broker still has rabbit_basic:publish/4 (3.x; 4.x
    // removed it): the queue alone is what a reset would destroy.
    let published = x
        .eval(
            "case erlang:function_exported(rabbit_basic, publish, 4) of \
               true -> rabbit_basic:publish(rabbit_misc:r(<<\"/\">>, exchange, <<>>), \
                 <<\"orders\">>, [{delivery_mode, 2}], <<\"order 1\">>), 1; \
               false -> 0 end.",
        )
        .await;
    let orders = format!("orders\t{}", published.trim());
    assert_eq!(queues(x).await, orders);
    let no_reset = FormationConfig {
        max_attempts: 1,
        ..quick()
    };
    let err = agent(x, no_reset)
        .run()
        .await
        .expect_err("x holds data and reset is not allowed");
    match &err {
        FormationError::DataAtRisk { node, seed, data } => {
            assert_eq!(node, &name(x));
            assert_eq!(seed, &name(s));
            assert_eq!(
                data,
                &DataState::HasData(vec!["1 queue in /: orders".into()]),
                "{err}"
            );
        }
        other => panic!("expected DataAtRisk, got {other}"),
    }
    eprintln!("refused: {err}");
    assert!(err.to_string().contains("orders"), "{err}");
    // Nothing was touched: x still runs standalone with its queue and message.
    assert!(is_running(&probe, &name(x)).await);
    assert_eq!(queues(x).await, orders);
    let (disk, _, _) = cli_status(x).await;
    assert_eq!(disk, vec![x.node().to_owned()]);

    // With the reset allowed, x joins, and the queue is gone: the data really was at risk.
    let allow = FormationConfig {
        allow_reset: true,
        ..quick()
    };
    let resets = x.resets();
    let formed_x = agent(x, allow).run().await.expect("x joins when allowed");
    assert_eq!(formed_x.outcome, Outcome::Joined { seed: name(s) });
    // The reset shows in the log (what the tests of rabbitmq_safety count).
    assert!(x.resets() > resets, "no reset line in x's log");
    assert_eq!(
        queues(x).await,
        "",
        "the queue should be gone after the reset"
    );
    eprintln!("data safety in {:?}", t.elapsed());

    // 2. Crash recovery before the join: y's application stopped, y not yet a member.
    let t = Instant::now();
    stop_app(&probe, &name(y)).await;
    let formed_y = agent(y, quick()).run().await.expect("y recovers and joins");
    // The seed is the alphabetically first of s and x (both registered, both live).
    let first = name(s).min(name(x));
    assert_eq!(
        formed_y.outcome,
        Outcome::Joined {
            seed: first.clone()
        }
    );
    assert!(is_running(&probe, &name(y)).await);
    let mut all: Vec<String> = nodes.iter().map(|n| n.node().to_owned()).collect();
    all.sort();
    let (disk, running, partitions) = cli_status(y).await;
    assert_eq!((disk, running), (all.clone(), all.clone()));
    assert!(no_partitions(&partitions));
    eprintln!("recovery before the join in {:?}", t.elapsed());

    // 3. Crash recovery after the join: x is a member, its application stopped (as
    // between rabbit_mnesia:join_cluster and rabbit:start).
    let t = Instant::now();
    drop(formed_x);
    stop_app(&probe, &name(x)).await;
    let target_x = RabbitMq::new(probe.clone(), name(x));
    let m = target_x.membership().await.unwrap();
    assert!(!m.running, "{m:?}");
    let version = target_x.version(&name(x)).await.unwrap();
    if (version.major, version.minor) >= (4, 3) {
        // A stopped Khepri node answers an empty status: it knows only itself until its
        // application runs again (the plan starts it before deciding).
        assert_eq!(m.members, vec![name(x)], "{m:?}");
    } else {
        // Mnesia's cluster files list the members of a stopped node.
        assert!(m.members.contains(&name(s)), "{m:?}");
    }
    assert!(m.running_members.is_empty(), "{m:?}");
    let formed_x = agent(x, quick()).run().await.expect("x finishes its join");
    let first = name(s).min(name(y));
    assert_eq!(formed_x.outcome, Outcome::Joined { seed: first });
    assert!(is_running(&probe, &name(x)).await);
    let (disk, running, _) = cli_status(s).await;
    assert_eq!((disk, running), (all.clone(), all.clone()));
    eprintln!("recovery after the join in {:?}", t.elapsed());

    // 4. A graceful leave: y deregisters, resets, and runs standalone; the others no
    // longer list it.
    let t = Instant::now();
    let agent_y = agent(y, quick());
    agent_y.leave(formed_y).await.expect("y leaves");
    let listed: Vec<NodeName> = backend
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.node)
        .collect();
    assert!(!listed.contains(&name(y)), "{listed:?}");
    let (disk, running, _) = cli_status(y).await;
    assert_eq!(
        (disk, running),
        (vec![y.node().to_owned()], vec![y.node().to_owned()])
    );
    let (disk, _, _) = cli_status(s).await;
    let mut two = vec![s.node().to_owned(), x.node().to_owned()];
    two.sort();
    assert_eq!(disk, two);
    assert_eq!(
        agent_y.target().inventory().await.unwrap(),
        DataState::Empty
    );
    eprintln!("leave in {:?}", t.elapsed());

    // 5. Each kind of data is named (the real 3.10 shapes of every reader).
    y.eval(
        "R = fun(K, N) -> rabbit_misc:r(<<\"/\">>, K, N) end, \
         rabbit_vhost:add(<<\"prod\">>, <<\"test\">>), \
         rabbit_auth_backend_internal:add_user(<<\"alice\">>, <<\"pw\">>, <<\"test\">>), \
         rabbit_exchange:declare(R(exchange, <<\"logs\">>), fanout, true, false, false, [], <<\"test\">>), \
         rabbit_amqqueue:declare(R(queue, <<\"audit\">>), true, false, [], none, <<\"test\">>), \
         ok = rabbit_binding:add({binding, R(exchange, <<\"logs\">>), <<\"k\">>, R(queue, <<\"audit\">>), []}, <<\"test\">>), \
         ok = rabbit_policy:set(<<\"/\">>, <<\"cap\">>, <<\"^audit$\">>, [{<<\"max-length\">>, 10}], 0, <<\"queues\">>, <<\"test\">>), \
         ok = rabbit_vhost_limit:set(<<\"/\">>, [{<<\"max-connections\">>, 100}], <<\"test\">>), \
         ok = rabbit_nodes:set_cluster_name(<<\"prod-cluster\">>, <<\"test\">>).",
    )
    .await;
    let DataState::HasData(found) = agent_y.target().inventory().await.unwrap() else {
        panic!("y holds data now");
    };
    assert_eq!(
        found,
        [
            "1 vhost besides /: prod",
            "1 user besides guest: alice",
            "1 queue in /: audit",
            "1 exchange in /: logs",
            "1 binding in /: logs -> audit (\"k\")",
            "1 policy in /: cap",
            "1 runtime parameter in /: vhost-limits/limits",
            "1 global parameter: cluster_name",
        ]
    );
    eprintln!("total {:?}", started.elapsed());
    drop((formed_s, formed_x));
}

// ---------------------------------------------------------------------------------------
// Function choices per version, against stand-in modules on a real erl node.
// ---------------------------------------------------------------------------------------

/// Stand-ins for the RabbitMQ modules the target calls. Every call is recorded in the
/// `standin_calls` table; the cluster state lives in `standin_state`.
const STANDINS: &[(&str, &str)] = &[
    (
        "standin",
        r#"-module(standin).
-export([rec/3, sget/1, sput/2, status/0]).
rec(M, F, A) -> ets:insert(standin_calls, {erlang:unique_integer([monotonic]), {M, F, length(A)}}), ok.
sget(K) -> [{K, V}] = ets:lookup(standin_state, K), V.
sput(K, V) -> ets:insert(standin_state, {K, V}), ok.
status() ->
    case sget(running) of
        true -> [{nodes, [{disc, sget(members)}]}, {running_nodes, sget(members)},
                 {cluster_name, <<"standin">>}, {partitions, []}];
        false -> [{nodes, [{disc, sget(members)}]}]
    end.
"#,
    ),
    (
        "rabbit_misc",
        r#"-module(rabbit_misc).
-export([version/0]).
version() -> standin:rec(?MODULE, version, []), ?VSN.
"#,
    ),
    (
        "rabbit",
        r#"-module(rabbit).
-export([is_running/0, start/0, stop/0]).
is_running() -> standin:rec(?MODULE, is_running, []), standin:sget(running).
start() -> standin:rec(?MODULE, start, []), standin:sput(running, true).
stop() -> standin:rec(?MODULE, stop, []), standin:sput(running, false).
"#,
    ),
    (
        "rabbit_mnesia",
        r#"-module(rabbit_mnesia).
-export([status/0, cluster_nodes/1, join_cluster/2, forget_cluster_node/2, reset/0]).
status() -> standin:rec(?MODULE, status, []), standin:status().
cluster_nodes(running) -> standin:rec(?MODULE, cluster_nodes, [running]), standin:sget(members).
join_cluster(Seed, disc) -> standin:rec(?MODULE, join_cluster, [Seed, disc]), join(Seed).
forget_cluster_node(N, false) -> standin:rec(?MODULE, forget_cluster_node, [N, false]),
    standin:sput(members, standin:sget(members) -- [N]).
reset() -> standin:rec(?MODULE, reset, []), standin:sput(members, [node()]).
join(Seed) ->
    case standin:sget(running) of
        true -> {error, mnesia_unexpectedly_running};
        false -> standin:sput(members, lists:sort([Seed | standin:sget(members)]))
    end.
"#,
    ),
    (
        "rabbit_db_cluster",
        r#"-module(rabbit_db_cluster).
-export([cli_cluster_status/0, join/2, forget_member/2]).
cli_cluster_status() -> standin:rec(?MODULE, cli_cluster_status, []), standin:status().
join(Seed, disc) -> standin:rec(?MODULE, join, [Seed, disc]),
    case standin:sget(running) of
        true -> {error, rabbit_unexpectedly_running};
        false -> standin:sput(members, lists:sort([Seed | standin:sget(members)]))
    end.
forget_member(N, false) -> standin:rec(?MODULE, forget_member, [N, false]),
    standin:sput(members, standin:sget(members) -- [N]).
"#,
    ),
    (
        "rabbit_db",
        r#"-module(rabbit_db).
-export([reset/0]).
reset() -> standin:rec(?MODULE, reset, []), standin:sput(members, [node()]).
"#,
    ),
    (
        "rabbit_nodes",
        r#"-module(rabbit_nodes).
-export([list_running/0]).
list_running() -> standin:rec(?MODULE, list_running, []), standin:sget(members).
"#,
    ),
    (
        "rabbit_node_monitor",
        r#"-module(rabbit_node_monitor).
-export([partitions/0]).
partitions() -> standin:rec(?MODULE, partitions, []), [].
"#,
    ),
    (
        "rabbit_vhost",
        r#"-module(rabbit_vhost).
-export([list_names/0]).
list_names() -> standin:rec(?MODULE, list_names, []), [<<"/">>].
"#,
    ),
    (
        "rabbit_auth_backend_internal",
        r#"-module(rabbit_auth_backend_internal).
-export([list_users/0]).
list_users() -> standin:rec(?MODULE, list_users, []), [[{user, <<"guest">>}, {tags, [administrator]}]].
"#,
    ),
    (
        "rabbit_amqqueue",
        r#"-module(rabbit_amqqueue).
-export([list_names/0]).
list_names() -> standin:rec(?MODULE, list_names, []), [].
"#,
    ),
    (
        "rabbit_exchange",
        r#"-module(rabbit_exchange).
-export([list_names/0]).
list_names() -> standin:rec(?MODULE, list_names, []),
    [{resource, <<"/">>, exchange, <<>>}, {resource, <<"/">>, exchange, <<"amq.direct">>}].
"#,
    ),
    (
        "rabbit_binding",
        r#"-module(rabbit_binding).
-export([list/1]).
list(VHost) -> standin:rec(?MODULE, list, [VHost]), [].
"#,
    ),
    (
        "rabbit_policy",
        r#"-module(rabbit_policy).
-export([list/0, list_op/0]).
list() -> standin:rec(?MODULE, list, []), [].
list_op() -> standin:rec(?MODULE, list_op, []), [].
"#,
    ),
    (
        "rabbit_runtime_parameters",
        r#"-module(rabbit_runtime_parameters).
-export([list/0, list_global/0]).
list() -> standin:rec(?MODULE, list, []), [].
list_global() -> standin:rec(?MODULE, list_global, []),
    [[{name, internal_cluster_id}, {value, <<"rabbitmq-cluster-id-x">>}]].
"#,
    ),
];

/// Loads the stand-ins on `node`, reporting `version`, with a fresh state (running,
/// standalone) and an empty call log.
async fn load_standins(node: &mut ErlNode, version: &str) {
    for (module, source) in STANDINS {
        std::fs::write(node.dir().join(format!("{module}.erl")), source).unwrap();
    }
    let dir = node.dir().display().to_string();
    node.eval(&format!(
        "[begin {{ok, M, Bin}} = compile:file(filename:join(\"{dir}\", M0), \
         [binary, return_errors, {{d, 'VSN', \"{version}\"}}]), \
         code:purge(M), {{module, M}} = code:load_binary(M, M0, Bin) end \
         || M0 <- {modules:?}]",
        modules = STANDINS.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
    ))
    .await;
    node.eval(
        "[catch ets:delete(T) || T <- [standin_calls, standin_state]], \
         ets:new(standin_calls, [named_table, public, ordered_set]), \
         ets:new(standin_state, [named_table, public, set]), \
         standin:sput(running, true), standin:sput(members, [node()])",
    )
    .await;
}

/// The calls recorded since the stand-ins were loaded, as `"m:f/a"`.
async fn recorded_calls(node: &mut ErlNode) -> Vec<String> {
    let out = node
        .eval(
            "lists:flatten([io_lib:format(\"~s:~s/~b \", [M, F, A]) \
             || {_, {M, F, A}} <- ets:tab2list(standin_calls)])",
        )
        .await;
    out.trim_matches('"')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Runs every operation of the target against the stand-ins reporting `version`; returns
/// the calls they received.
async fn exercise(node: &mut ErlNode, probe: &Node, version: &str) -> Vec<String> {
    load_standins(node, version).await;
    let me: NodeName = node.name().parse().unwrap();
    let seed: NodeName = format!("seed@{}", me.host()).parse().unwrap();
    let gone: NodeName = format!("gone@{}", me.host()).parse().unwrap();
    let target = RabbitMq::new(probe.clone(), me.clone());
    assert_eq!(target.version(&me).await.unwrap().text, version);

    let status = target.cluster_status().await.unwrap();
    assert!(
        status.to_string().starts_with("[{nodes,[{disc,["),
        "{status}"
    );
    let m = target.membership().await.unwrap();
    assert!(m.running && m.members == vec![me.clone()] && m.running_members == vec![me.clone()]);
    let p = target.probe(&me).await.unwrap();
    assert!(p.live && p.started_at_ms.is_some(), "{p:?}");
    assert_eq!(target.inventory().await.unwrap(), DataState::Empty);

    join(&target, &seed).await.expect("join");
    let m = target.membership().await.unwrap();
    assert!(m.running, "the application runs again after the join");
    assert!(m.members.contains(&seed), "{m:?}");

    node.eval(&format!(
        "standin:sput(members, lists:sort(['{gone}' | standin:sget(members)]))"
    ))
    .await;
    target.forget(&gone).await.expect("forget");
    assert!(!target.membership().await.unwrap().members.contains(&gone));

    target.execute(&Step::Leave).await.expect("leave");
    let m = target.membership().await.unwrap();
    assert!(m.running && m.members == vec![me.clone()], "{m:?}");

    // A stopped application: reported, and the join starts it first.
    node.eval("standin:sput(running, false)").await;
    let m = target.membership().await.unwrap();
    assert!(!m.running && m.running_members.is_empty(), "{m:?}");
    // The plan starts a stopped application first.
    target.execute(&Step::Start).await.expect("start");
    join(&target, &seed)
        .await
        .expect("join from a stopped application");
    assert!(target.membership().await.unwrap().running);

    recorded_calls(node).await
}

/// A join as the agent runs it without a lock: the join step, then what it left.
async fn join(target: &RabbitMq, seed: &NodeName) -> Result<(), FormationError> {
    target
        .execute(&Step::Join {
            seed: seed.clone(),
            reset: false,
        })
        .await?;
    target
        .execute(&Step::Finish {
            seed: Some(seed.clone()),
        })
        .await
        .map(|_| ())
}

fn called(calls: &[String], f: &str) -> bool {
    calls.iter().any(|c| c == f)
}

fn position(calls: &[String], f: &str) -> usize {
    calls
        .iter()
        .position(|c| c == f)
        .unwrap_or_else(|| panic!("{f} not called: {calls:?}"))
}

/// The target picks each version's functions (those `rabbitmqctl` calls), reads the
/// version once, and stops the application around the join, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_function_choices_per_version_against_stand_ins() {
    let epmd = Epmd::start().await;
    let mut node = ErlNode::start(ErlOptions::new(epmd.port()).cookie(COOKIE)).await;
    let host = node.name().split_once('@').unwrap().1.to_owned();
    let probe = agent_node(epmd.port(), &host).await;

    let mnesia = [
        "rabbit_mnesia:status/0",
        "rabbit_mnesia:join_cluster/2",
        "rabbit_mnesia:forget_cluster_node/2",
        "rabbit_mnesia:reset/0",
    ];
    let db = [
        "rabbit_db_cluster:cli_cluster_status/0",
        "rabbit_db_cluster:join/2",
        "rabbit_db_cluster:forget_member/2",
        "rabbit_db:reset/0",
    ];
    for version in ["3.10.8", "3.11.28", "3.12.14", "3.13.7", "4.1.0"] {
        let calls = exercise(&mut node, &probe, version).await;
        let mut distinct = calls.clone();
        distinct.sort();
        distinct.dedup();
        eprintln!("{version}: {}", distinct.join(" "));
        let new = version >= "3.13";
        for f in mnesia {
            assert_eq!(called(&calls, f), !new, "{version}: {f} in {calls:?}");
        }
        for f in db {
            assert_eq!(called(&calls, f), new, "{version}: {f} in {calls:?}");
        }
        assert_eq!(
            called(&calls, "rabbit_mnesia:cluster_nodes/1"),
            version.starts_with("3.10") || version.starts_with("3.11"),
            "{version}: {calls:?}"
        );
        assert_eq!(
            called(&calls, "rabbit_nodes:list_running/0"),
            version.starts_with("3.12"),
            "{version}: {calls:?}"
        );
        assert!(called(&calls, "rabbit_node_monitor:partitions/0"));
        assert_eq!(
            calls
                .iter()
                .filter(|c| *c == "rabbit_misc:version/0")
                .count(),
            1,
            "{version}: the version is read once: {calls:?}"
        );
        // The join is made with the application stopped, and started again after.
        let join = if new {
            "rabbit_db_cluster:join/2"
        } else {
            "rabbit_mnesia:join_cluster/2"
        };
        let j = position(&calls, join);
        let stop = calls[..j].iter().rposition(|c| c == "rabbit:stop/0");
        assert!(
            stop.is_some(),
            "{version}: no rabbit:stop before the join: {calls:?}"
        );
        assert!(
            calls[j..].iter().any(|c| c == "rabbit:start/0"),
            "{version}: no rabbit:start after the join: {calls:?}"
        );
    }

    // A 3.13+ node without the rabbit_db modules (as rabbitmqctl allows for): the mnesia
    // functions are the fallback.
    load_standins(&mut node, "3.13.0").await;
    node.eval("[begin code:purge(M), code:delete(M) end || M <- [rabbit_db_cluster, rabbit_db]]")
        .await;
    let me: NodeName = node.name().parse().unwrap();
    let seed: NodeName = format!("seed@{host}").parse().unwrap();
    let target = RabbitMq::new(probe.clone(), me.clone());
    assert!(target.membership().await.unwrap().running);
    join(&target, &seed)
        .await
        .expect("join through the fallback");
    target
        .execute(&Step::Leave)
        .await
        .expect("leave through the fallback");
    let calls = recorded_calls(&mut node).await;
    for f in [
        "rabbit_mnesia:status/0",
        "rabbit_mnesia:join_cluster/2",
        "rabbit_mnesia:reset/0",
    ] {
        assert!(called(&calls, f), "fallback {f} not called: {calls:?}");
    }

    // 4.3 and later have no rabbit_node_monitor:partitions/0 (Khepri has no partitions),
    // and no rabbit_mnesia: the partitions are empty and nothing falls back.
    load_standins(&mut node, "4.3.0").await;
    node.eval("code:purge(rabbit_node_monitor), code:delete(rabbit_node_monitor), code:purge(rabbit_mnesia), code:delete(rabbit_mnesia)")
        .await;
    let target = RabbitMq::new(probe.clone(), me.clone());
    let m = target.membership().await.unwrap();
    assert!(m.running && m.partitions.is_empty(), "{m:?}");
    join(&target, &seed).await.expect("join on 4.3");
    let calls = recorded_calls(&mut node).await;
    assert!(called(&calls, "rabbit_db_cluster:join/2"), "{calls:?}");
    assert!(
        !calls.iter().any(|c| c.starts_with("rabbit_mnesia:")),
        "{calls:?}"
    );

    // A node that answers but is not RabbitMQ is not live.
    node.eval("code:purge(rabbit), code:delete(rabbit)").await;
    let p = target.probe(&me).await.unwrap();
    assert!(!p.live, "{p:?}");
    assert!(p.reason.unwrap().contains("not a RabbitMQ node"));
}

/// RabbitMQ with TLS distribution (`-proto_dist inet_tls`, mutual TLS) is formed and
/// health-checked the same way, by an agent whose node speaks TLS; plain TCP nodes cannot
/// connect to it (and are told why).
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_over_tls_distribution_forms_and_is_healthy() {
    use autocluster::node::{ConnectError, TlsError};

    use crate::common::Pki;
    let _turn = RABBIT_TURN.lock().await;
    let pki = Pki::generate();
    let optfile = pki.mutual("rabbit_dist.conf", "ca", "node");
    // The broker runs as user `rabbitmq`: it must read the optfile, certificates and key.
    crate::common::peers().chown_rabbitmq(pki.dir.path());
    let epmd = Epmd::start().await;
    let optfile_arg = optfile.display().to_string();
    let tls_args = [
        "-proto_dist",
        "inet_tls",
        "-ssl_dist_optfile",
        optfile_arg.as_str(),
    ];
    let nodes = RabbitNode::start_many(
        2,
        RabbitOptions::new()
            .epmd_port(epmd.port())
            .erl_args(&tls_args),
    )
    .await;
    let probe = Node::builder(
        format!("{}@localhost", unique_name("agent"))
            .parse()
            .unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .epmd_port(epmd.port())
    .tls(pki.config("ca", "node"))
    .start()
    .await
    .unwrap();
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let agents: Vec<Agent> = nodes
        .iter()
        .map(|n| {
            Agent::new(
                backend.clone(),
                Arc::new(RabbitMq::new(probe.clone(), name(n))),
                quick(),
            )
        })
        .collect();
    let formed: Vec<Formed> = run_together(&agents)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        formed
            .iter()
            .filter(|f| f.outcome == Outcome::FormedNew)
            .count(),
        1
    );
    for a in &agents {
        let report = a.health().await;
        assert!(report.healthy, "{report}");
    }
    // The real CLI (itself over TLS distribution) agrees.
    let mut all: Vec<String> = nodes.iter().map(|n| n.node().to_owned()).collect();
    all.sort();
    for n in &nodes {
        let (disk, running, partitions) = cli_status(n).await;
        assert_eq!(disk, all, "{}", n.node());
        assert_eq!(running, all, "{}", n.node());
        assert!(no_partitions(&partitions), "{partitions}");
    }
    // Plain TCP cannot reach a TLS node: a plain Rust node is told the peer uses TLS,
    // and a plain Erlang node gets pang.
    let plain = agent_node(epmd.port(), "localhost").await;
    let err = plain.connect(&name(&nodes[0])).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::Tls {
                kind: TlsError::PeerUsesTls,
                ..
            }
        ),
        "{err}"
    );
    let mut erl = ErlNode::start(ErlOptions::new(epmd.port()).cookie(COOKIE)).await;
    assert_eq!(
        erl.eval(&format!("net_adm:ping('{}')", nodes[0].node()))
            .await,
        "pang"
    );
    drop(formed);
}
