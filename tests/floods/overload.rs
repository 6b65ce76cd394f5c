//! Work a peer provokes is bounded: a connected peer that floods the node with requests
//! and reads the replies slowly, or not at all, makes the node stop reading from it
//! (backpressure) instead of spawning a task per reply; a peer that monitors or links one
//! process past the limit is disconnected with a typed reason, and signals naming another
//! node's process as their sender are ignored. Throughout, the node's other connections
//! keep serving calls, its task count stays flat and its memory bounded.

use std::time::{Duration, Instant};

use autocluster::node::{DisconnectReason, MAX_MONITORS_AND_LINKS_PER_PEER, Overload};
use autocluster::term::{Atom, Pid, Reference, Term};
use autocluster::{Cookie, Node, NodeName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Epmd, ErlNode, ErlOptions, down_reason, raw_peer, rss_kib, unique_name};

const COOKIE: &str = "autocluster_test_cookie";

/// How long each flood may write for: a node that applies backpressure makes a peer
/// that does not read block long before it has sent everything.
const FLOOD_FOR: Duration = Duration::from_secs(4);

/// The most tasks the flood may add to the runtime (the flooding peer's connection
/// and the linger clock, with room to spare); a task per reply would add thousands.
const EXTRA_TASKS: usize = 8;

/// The most memory the flood may add to this test process.
const EXTRA_RSS_MIB: u64 = 64;

/// The node under test (listening, not in EPMD) and a real `erl` node it calls.
async fn server_and_erl(epmd: &Epmd) -> (Node, ErlNode, NodeName) {
    let erl = ErlNode::start(ErlOptions::new(epmd.port())).await;
    let host = erl.name().split_once('@').unwrap().1.to_owned();
    let server = Node::builder(
        format!("{}@{host}", unique_name("srv")).parse().unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .epmd_port(epmd.port())
    .listen("127.0.0.1:0".parse().unwrap())
    .register_in_epmd(false)
    .start()
    .await
    .unwrap();
    let peer: NodeName = erl.name().parse().unwrap();
    // The connection to the `erl` node is up before the flood starts.
    server
        .call(&peer, "erlang", "node", vec![], Duration::from_secs(5))
        .await
        .unwrap();
    (server, erl, peer)
}

/// A raw peer connected to `server` through a real handshake, with a small receive
/// buffer so that replies it does not read back up into the node quickly.
async fn flooding_peer(server: &Node) -> (TcpStream, NodeName) {
    let host = server.name().as_str().split_once('@').unwrap().1.to_owned();
    let me: NodeName = format!("{}@{host}", unique_name("flood")).parse().unwrap();
    (flooding_peer_named(server, &me).await, me)
}

async fn flooding_peer_named(server: &Node, me: &NodeName) -> TcpStream {
    raw_peer(server, me, COOKIE, Some(4096)).await
}

/// A pid of node `node`.
fn pid_of(node: &NodeName, id: u32) -> Term {
    Term::Pid(Box::new(Pid {
        node: Atom::from(node.as_str()),
        id,
        serial: 0,
        creation: 7,
    }))
}

/// `MONITOR_P` (19) from a process of `from` of the process `target`, as one frame.
fn monitor_frame(from: &NodeName, target: Term, n: u32) -> Vec<u8> {
    let reference = Term::Reference(Box::new(Reference {
        node: Atom::from(from.as_str()),
        creation: 7,
        id: vec![n, 1, 2],
    }));
    let control = Term::Tuple(vec![Term::Integer(19), pid_of(from, 1), target, reference]);
    control_frame(&control)
}

/// `LINK` (1) from process number `n` of `from` to the process `target`, as one frame.
fn link_frame(from: &NodeName, target: Term, n: u32) -> Vec<u8> {
    control_frame(&Term::Tuple(vec![
        Term::Integer(1),
        pid_of(from, n),
        target,
    ]))
}

fn control_frame(control: &Term) -> Vec<u8> {
    let mut payload = vec![112];
    payload.extend(autocluster::term::encode(control).unwrap());
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend(payload);
    frame
}

/// What was seen while a flood ran.
#[derive(Debug, Default)]
struct Seen {
    sent: u32,
    max_tasks: usize,
    max_rss_growth_mib: u64,
    calls: u32,
    slowest_call: Duration,
}

/// Writes up to `count` frames made by `frame` for at most [`FLOOD_FOR`], while calling
/// the `erl` node on the other connection (every call must be answered within its 5 s
/// timeout) and sampling the runtime's task count and the process's memory.
async fn flood(
    server: &Node,
    erl: &NodeName,
    write: &mut (impl AsyncWriteExt + Unpin),
    count: u32,
    frame: impl Fn(u32) -> Vec<u8>,
) -> Seen {
    let metrics = tokio::runtime::Handle::current().metrics();
    let rss_before = rss_kib();
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + FLOOD_FOR;
    let mut sent = 0u32;
    let writing = async {
        // A few frames per write, as a peer in a hurry would send them.
        while sent < count {
            let batch: Vec<u8> = (sent..count.min(sent + 16)).flat_map(&frame).collect();
            if write.write_all(&batch).await.is_err() {
                return;
            }
            sent = count.min(sent + 16);
        }
    };
    let mut sampling = Box::pin(async {
        loop {
            seen.max_tasks = seen.max_tasks.max(metrics.num_alive_tasks());
            let growth = rss_kib().saturating_sub(rss_before) / 1024;
            seen.max_rss_growth_mib = seen.max_rss_growth_mib.max(growth);
            let started = Instant::now();
            let answer = server
                .call(erl, "erlang", "node", vec![], Duration::from_secs(5))
                .await;
            assert_eq!(answer.unwrap(), Term::atom(erl.as_str()));
            seen.calls += 1;
            seen.slowest_call = seen.slowest_call.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    tokio::select! {
        () = writing => {}
        () = &mut sampling => unreachable!(),
        () = tokio::time::sleep_until(deadline) => {}
    }
    // The replies already provoked are still being handled: keep sampling a moment.
    let _ = tokio::time::timeout(Duration::from_millis(500), &mut sampling).await;
    drop(sampling);
    seen.sent = sent;
    seen
}

/// How the flooding peer reads the replies.
#[derive(Clone, Copy, Debug)]
enum Reads {
    Never,
    OneKibPerSecond,
}

async fn monitors_of_a_missing_process_are_answered_with_backpressure(reads: Reads) {
    let _alone = crate::common::flood_alone().await;
    let epmd = Epmd::start().await;
    let (server, _erl_node, erl) = server_and_erl(&epmd).await;
    let (raw, me) = flooding_peer(&server).await;
    let (mut read, mut write) = raw.into_split();
    let reader = match reads {
        Reads::Never => None,
        Reads::OneKibPerSecond => Some(tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })),
    };
    // Settle, then count what runs before the flood (this test's own tasks included).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let missing = Term::Pid(Box::new(Pid {
        node: Atom::from(server.name().as_str()),
        id: 999_999,
        serial: 0,
        creation: server.creation(),
    }));
    for count in [10_000, 100_000] {
        let seen = flood(&server, &erl, &mut write, count, |n| {
            monitor_frame(&me, missing.clone(), n)
        })
        .await;
        eprintln!("{reads:?}, {count} MONITORs: baseline {baseline} tasks; {seen:?}");
        assert!(
            seen.max_tasks <= baseline + EXTRA_TASKS,
            "{reads:?}, {count} MONITORs: {} tasks alive, {baseline} before the flood",
            seen.max_tasks
        );
        assert!(
            seen.max_rss_growth_mib <= EXTRA_RSS_MIB,
            "{reads:?}, {count} MONITORs: memory grew by {} MiB",
            seen.max_rss_growth_mib
        );
        assert!(seen.calls > 0);
    }
    // The peer is still connected: backpressure, not a disconnection, within the
    // write timeout (`net_ticktime`, 60 s).
    assert!(server.is_connected(&me));
    if let Some(reader) = reader {
        reader.abort();
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_its_replies_is_backpressured_not_served_by_new_tasks() {
    monitors_of_a_missing_process_are_answered_with_backpressure(Reads::Never).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_reads_its_replies_at_one_kib_per_second_is_backpressured() {
    monitors_of_a_missing_process_are_answered_with_backpressure(Reads::OneKibPerSecond).await;
}

/// What a peer sends to watch one live process 100,000 times.
#[derive(Clone, Copy, Debug)]
enum Watch {
    Monitors,
    Links,
}

fn watch_frame(watch: Watch, from: &NodeName, target: Term, n: u32) -> Vec<u8> {
    match watch {
        Watch::Monitors => monitor_frame(from, target, n),
        Watch::Links => link_frame(from, target, n),
    }
}

async fn a_peer_watching_one_process_past_the_limit_is_disconnected(watch: Watch) {
    let _alone = crate::common::flood_alone().await;
    let epmd = Epmd::start().await;
    let (server, _erl_node, erl) = server_and_erl(&epmd).await;
    let mailbox = server.register("watched").unwrap();
    let mut events = server.monitor_nodes();
    let (raw, me) = flooding_peer(&server).await;
    // This peer reads (and drops) everything: only what it asks the node to hold counts.
    let (mut read, mut write) = raw.into_split();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    let target = Term::Pid(Box::new(mailbox.pid().clone()));
    let seen = flood(&server, &erl, &mut write, 100_000, |n| {
        watch_frame(watch, &me, target.clone(), n)
    })
    .await;
    eprintln!("100,000 {watch:?} of one process: {seen:?}");
    let reason = down_reason(&mut events, &me, Duration::from_secs(10)).await;
    assert_eq!(
        reason,
        DisconnectReason::Overloaded(Overload::MonitorsAndLinks {
            max: MAX_MONITORS_AND_LINKS_PER_PEER
        })
    );
    assert!(seen.max_rss_growth_mib <= EXTRA_RSS_MIB, "{seen:?}");
    assert!(seen.calls > 0, "{seen:?}");
    // The node serves on, and what the peer held went with its connection: back under
    // the same name, it may watch the process again.
    let raw = flooding_peer_named(&server, &me).await;
    let (_read, mut write) = raw.into_split();
    write
        .write_all(&watch_frame(watch, &me, target.clone(), 1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.is_connected(&me));
    reader.abort();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_monitoring_one_process_past_the_limit_is_disconnected_as_overloaded() {
    a_peer_watching_one_process_past_the_limit_is_disconnected(Watch::Monitors).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_linking_one_process_past_the_limit_is_disconnected_as_overloaded() {
    a_peer_watching_one_process_past_the_limit_is_disconnected(Watch::Links).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_and_links_naming_another_nodes_process_as_sender_are_ignored() {
    let _alone = crate::common::flood_alone().await;
    let epmd = Epmd::start().await;
    let (server, _erl_node, erl) = server_and_erl(&epmd).await;
    let mailbox = server.register("watched").unwrap();
    let (raw, me) = flooding_peer(&server).await;
    let (mut read, mut write) = raw.into_split();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    // Forged senders (more than the limit): processes of a node that is not this peer. Held for that node,
    // they would have gone past its limit (and outlived this connection).
    let other: NodeName = "elsewhere@nohost".parse().unwrap();
    let target = Term::Pid(Box::new(mailbox.pid().clone()));
    for watch in [Watch::Monitors, Watch::Links] {
        let seen = flood(&server, &erl, &mut write, 20_000, |n| {
            watch_frame(watch, &other, target.clone(), n)
        })
        .await;
        eprintln!("20,000 forged {watch:?}: {seen:?}");
        assert_eq!(seen.sent, 20_000, "{watch:?}: {seen:?}");
        assert!(seen.max_rss_growth_mib <= EXTRA_RSS_MIB, "{seen:?}");
    }
    // Ignored, not held: the peer is still connected.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.is_connected(&me));
    reader.abort();
    server.shutdown().await;
}
