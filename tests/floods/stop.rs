//! Stopping a node: `Node::shutdown().await` returns once every task of the node has
//! ended, graceful closes that wait for a peer included; dropping the runtime of a busy
//! node (connections both ways, closes lingering, calls pending, registrations kept
//! alive) always finishes.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use autocluster::backend::{Backend, MemoryBackend, Registration};
use autocluster::handshake::{AcceptorConfig, DistFlags, LengthPrefix, StatusDecision};
use autocluster::node::DisconnectReason;
use autocluster::rpc::RpcError;
use autocluster::term::Term;
use autocluster::{Cookie, Node, NodeName};
use tokio::net::TcpListener;

use crate::common::{Epmd, ErlNode, ErlOptions, initiator_config, unique_name};

const COOKIE: &str = "autocluster_test_cookie";

/// How long a graceful close waits for the peer at most (the crate's linger bound).
const LINGER: Duration = Duration::from_millis(750);

/// Peers that complete the handshake as acceptors and then hold their connections
/// open, never reading and never closing: a graceful close towards them waits the whole
/// linger bound. They run on a thread and runtime of their own, so that their tasks are
/// not counted with the node's.
struct StubbornPeers {
    peers: Vec<(NodeName, SocketAddr)>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl StubbornPeers {
    fn start(host: &str, count: usize) -> StubbornPeers {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (peers_tx, peers_rx) = mpsc::channel();
        let names: Vec<NodeName> = (0..count)
            .map(|_| {
                format!("{}@{host}", unique_name("stubborn"))
                    .parse()
                    .unwrap()
            })
            .collect();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut listeners = Vec::new();
                for name in names {
                    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                    listeners.push((name, listener));
                }
                let addrs = listeners
                    .iter()
                    .map(|(n, l)| (n.clone(), l.local_addr().unwrap()))
                    .collect();
                peers_tx.send(addrs).unwrap();
                for (name, listener) in listeners {
                    tokio::spawn(hold_connections(name, listener));
                }
                let _ = stopped.await;
            });
        });
        StubbornPeers {
            peers: peers_rx.recv().unwrap(),
            _stop: stop,
        }
    }
}

/// Accepts connections as `name` and holds every one that completes the handshake.
async fn hold_connections(name: NodeName, listener: TcpListener) {
    let mut held = Vec::new();
    loop {
        let Ok((mut stream, addr)) = listener.accept().await else {
            return;
        };
        let cfg = AcceptorConfig {
            local: name.clone(),
            creation: 9,
            flags: DistFlags::OURS,
            required: DistFlags::REQUIRED,
            cookie: Cookie::new(COOKIE).unwrap(),
        };
        let label = addr.to_string();
        let shaken = autocluster::handshake::accept(
            &mut stream,
            LengthPrefix::U16,
            cfg,
            Duration::from_secs(5),
            &label,
            |_| StatusDecision::Ok,
        )
        .await;
        if shaken.is_ok() {
            held.push(stream);
        }
    }
}

fn host_of(node: &str) -> String {
    node.split_once('@').unwrap().1.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_once_every_connection_task_has_ended_lingering_closes_included() {
    let _alone = crate::common::flood_alone().await;
    let epmd = Epmd::start().await;
    let erl = ErlNode::start(ErlOptions::new(epmd.port())).await;
    let erl_name: NodeName = erl.name().parse().unwrap();
    let host = host_of(erl.name());
    let stubborn = StubbornPeers::start(&host, 3);
    // The harness's own tasks (reading the erl node's output).
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();

    // A node with no listener: every task it has is a connection's.
    let node = Node::builder(
        format!("{}@{host}", unique_name("stopping"))
            .parse()
            .unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .epmd_port(epmd.port())
    .start()
    .await
    .unwrap();
    let pong = node
        .call(&erl_name, "erlang", "node", vec![], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(pong, Term::atom(erl.name()));
    let held: Vec<NodeName> = stubborn.peers.iter().map(|(n, _)| n.clone()).collect();
    for (peer, addr) in &stubborn.peers {
        node.connect_to(peer, *addr).await.unwrap();
    }
    // A call in flight when the node stops.
    let caller = node.clone();
    let peer = erl_name.clone();
    let pending = tokio::spawn(async move {
        let args = vec![Term::Integer(10_000)];
        caller
            .call(&peer, "timer", "sleep", args, Duration::from_secs(30))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A graceful close in progress: the peer never closes its side.
    assert!(node.disconnect(&held[0]));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        metrics.num_alive_tasks() >= baseline + 5,
        "connections and the call"
    );

    let started = Instant::now();
    node.shutdown().await;
    let took = started.elapsed();
    eprintln!("shutdown took {took:?}");

    match pending.await.unwrap() {
        Err(RpcError::ConnectionLost { reason, .. }) => {
            assert_eq!(reason, DisconnectReason::NodeStopped);
        }
        other => panic!("a call pending at shutdown: {other:?}"),
    }
    // Each task of the node has run its last line; the runtime may still be removing
    // the last one from its list, on another worker, for a moment.
    let settled = async {
        while metrics.num_alive_tasks() > baseline {
            tokio::task::yield_now().await;
        }
    };
    assert!(
        tokio::time::timeout(Duration::from_millis(100), settled)
            .await
            .is_ok(),
        "a task of the node outlived its shutdown: {} tasks, {baseline} before the node",
        metrics.num_alive_tasks()
    );
    // The closes towards the stubborn peers waited for them, up to the bound.
    assert!(took >= LINGER / 2, "shutdown took {took:?}");
    assert!(
        took < LINGER + Duration::from_millis(100),
        "shutdown took {took:?}"
    );
    assert!(node.connected_nodes().is_empty());
}

#[test]
fn dropping_the_runtime_of_a_busy_node_always_finishes() {
    // The real peers live in a runtime of their own, which outlives the rounds.
    let harness = tokio::runtime::Runtime::new().unwrap();
    let _alone = harness.block_on(crate::common::flood_alone());
    let (epmd, erl) = harness.block_on(async {
        let epmd = Epmd::start().await;
        let erl = ErlNode::start(ErlOptions::new(epmd.port())).await;
        (epmd, erl)
    });
    let erl_name: NodeName = erl.name().parse().unwrap();
    let host = host_of(erl.name());
    let stubborn = StubbornPeers::start(&host, 60);
    let mut stubborn_peers = stubborn.peers.chunks(3);
    let backend = MemoryBackend::new();
    for round in 0..20 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let node = rt.block_on(async {
            let node = Node::builder(
                format!("{}@{host}", unique_name("dropped"))
                    .parse()
                    .unwrap(),
                Cookie::new(COOKIE).unwrap(),
            )
            .epmd_port(epmd.port())
            .listen("127.0.0.1:0".parse().unwrap())
            .start()
            .await
            .unwrap();
            // Outgoing: the erl node, with a call pending, and stubborn peers, one of
            // them closing.
            node.connect(&erl_name).await.unwrap();
            let caller = node.clone();
            let peer = erl_name.clone();
            tokio::spawn(async move {
                let args = vec![Term::Integer(10_000)];
                let _ = caller
                    .call(&peer, "timer", "sleep", args, Duration::from_secs(30))
                    .await;
            });
            let held = stubborn_peers.next().unwrap();
            for (peer, addr) in held {
                node.connect_to(peer, *addr).await.unwrap();
            }
            node.disconnect(&held[0].0);
            // Incoming: a raw peer that never closes.
            let me: NodeName = format!("{}@{host}", unique_name("raw")).parse().unwrap();
            let mut raw = tokio::net::TcpStream::connect(node.local_addr().unwrap())
                .await
                .unwrap();
            autocluster::handshake::initiate(
                &mut raw,
                LengthPrefix::U16,
                initiator_config(&me, &node, COOKIE),
                Duration::from_secs(5),
                || true,
            )
            .await
            .unwrap();
            std::mem::forget(raw);
            // A registration kept alive in the background.
            let registration = backend
                .register(Registration::new(
                    node.name().clone(),
                    Duration::from_secs(5),
                ))
                .await
                .unwrap();
            std::mem::forget(registration);
            // Half the rounds stop the node too, without waiting.
            if round % 2 == 0 {
                let n = node.clone();
                tokio::spawn(async move { n.shutdown().await });
            }
            tokio::task::yield_now().await;
            node
        });
        let limit = LINGER + Duration::from_secs(1);
        let (done, dropped) = mpsc::channel();
        std::thread::spawn(move || {
            drop(rt);
            let _ = done.send(());
        });
        assert!(
            dropped.recv_timeout(limit).is_ok(),
            "round {round}: dropping the runtime did not finish within {limit:?}"
        );
        drop(node);
    }
    drop(harness);
}
