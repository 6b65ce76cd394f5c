//! Hostile peers and bad input.
//!
//! * (Floods of abusive clients, which measure how the node copes, are in the `floods`
//!   test binary: `tests/floods/`.)
//! * A peer that completes the handshake and then misbehaves: garbage frames, undecodable
//!   terms, unknown control messages (the connection survives them and keeps delivering),
//!   a giant frame length (the connection is closed with
//!   [`DisconnectReason::FrameTooLarge`]).
//! * A backend that hangs or answers garbage in the middle of formation: the agent follows
//!   its failure policy, in bounded time, with a typed error.
//! * A wrong cookie, a wrong node name, mixed short and long names, a seed that vanishes
//!   between listing and joining, a seed that refuses the join: a clear error naming the
//!   node and the cause, and the agent follows its failure policy (`Stop` returns the
//!   error, `Ignore` runs standalone with it).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autocluster::backend::{Backend, MemoryBackend, Registration};
use autocluster::epmd::{EpmdServer, EpmdServerConfig};
use autocluster::formation::{
    Agent, ErlangMesh, FailurePolicy, FormationConfig, FormationError, FormationEvent,
    NativeTarget, Outcome,
};
use autocluster::node::DisconnectReason;
use autocluster::term::{Atom, Pid, Term};
use autocluster::{Cookie, Node, NodeName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Epmd, ErlNode, ErlOptions, Hooked, down_reason, raw_peer, unique_name};

const COOKIE: &str = "autocluster_test_cookie";

fn quick() -> FormationConfig {
    FormationConfig {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(300),
        max_attempts: 3,
        node_ttl: Duration::from_secs(5),
        lock_ttl: Duration::from_secs(5),
        lock_wait: Duration::from_secs(20),
        ..FormationConfig::default()
    }
}

fn ignore(cfg: FormationConfig) -> FormationConfig {
    FormationConfig {
        failure: FailurePolicy::Ignore,
        ..cfg
    }
}

fn host_of(node: &str) -> &str {
    node.split_once('@').map(|(_, h)| h).expect("a node name")
}

async fn agent_node(epmd_port: u16, host: &str, cookie: &str) -> Node {
    Node::builder(
        format!("{}@{host}", unique_name("agent")).parse().unwrap(),
        Cookie::new(cookie).unwrap(),
    )
    .epmd_port(epmd_port)
    .start()
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------------------
// A peer that misbehaves after the handshake.

/// A raw connection that completed the handshake with `server`: we write frames by hand.
async fn handshaked_peer(server: &Node) -> (TcpStream, NodeName) {
    let me: NodeName = format!("{}@localhost", unique_name("raw")).parse().unwrap();
    (raw_peer(server, &me, COOKIE, None).await, me)
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn data_frame(control: &Term, message: Option<&Term>) -> Vec<u8> {
    let mut payload = vec![112];
    payload.extend(autocluster::term::encode(control).unwrap());
    if let Some(m) = message {
        payload.extend(autocluster::term::encode(m).unwrap());
    }
    frame(&payload)
}

fn reg_send(from: &NodeName, to: &str, message: &Term) -> Vec<u8> {
    let pid = Term::Pid(Box::new(Pid {
        node: Atom::from(from.as_str()),
        id: 1,
        serial: 0,
        creation: 7,
    }));
    data_frame(
        &Term::Tuple(vec![Term::Integer(6), pid, Term::atom(""), Term::atom(to)]),
        Some(message),
    )
}

#[tokio::test]
async fn a_connected_peer_survives_garbage_frames_and_unknown_controls_but_not_a_giant_frame() {
    let server = Node::builder(
        format!("{}@localhost", unique_name("srv")).parse().unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .listen("127.0.0.1:0".parse().unwrap())
    .register_in_epmd(false)
    .max_frame(1024 * 1024)
    .start()
    .await
    .unwrap();
    let mut inbox = server.register("inbox").unwrap();
    let mut events = server.monitor_nodes();
    let (mut peer, me) = handshaked_peer(&server).await;
    let mut survivable: Vec<(&str, Vec<u8>)> = vec![
        ("a tick", vec![0, 0, 0, 0]),
        (
            "garbage instead of the pass-through tag",
            frame(&[0xde, 0xad, 0xbe, 0xef]),
        ),
        ("an empty pass-through frame", frame(&[112])),
        (
            "an undecodable control term",
            frame(&[112, 131, 255, 1, 2, 3]),
        ),
        (
            "a control term cut short",
            frame(&[112, 131, 104, 4, 97, 6]),
        ),
        (
            "a list claiming 2^31 elements",
            frame(&[112, 131, 108, 0x7f, 0xff, 0xff, 0xff, 106]),
        ),
        (
            "a binary claiming 1 GiB",
            frame(&[112, 131, 109, 0x40, 0, 0, 0, 1, 2]),
        ),
        (
            "an unknown control message",
            data_frame(
                &Term::Tuple(vec![Term::Integer(99), Term::atom("surprise")]),
                None,
            ),
        ),
        (
            "a control that is not a tuple",
            data_frame(&Term::atom("hello"), None),
        ),
        (
            "a SEND to a pid that does not exist",
            data_frame(
                &Term::Tuple(vec![
                    Term::Integer(2),
                    Term::atom(""),
                    Term::Pid(Box::new(Pid {
                        node: Atom::from(server.name().as_str()),
                        id: 999_999,
                        serial: 0,
                        creation: 1,
                    })),
                ]),
                Some(&Term::atom("lost")),
            ),
        ),
    ];
    // Deep nesting: 10,000 nested one-tuples.
    let mut deep = vec![112, 131];
    deep.extend(std::iter::repeat_n([104u8, 1], 10_000).flatten());
    deep.push(106);
    survivable.push(("a term nested 10,000 deep", frame(&deep)));
    for (what, bytes) in &survivable {
        peer.write_all(bytes).await.unwrap();
        // Still delivering: a message to a registered mailbox arrives.
        let marker = Term::Tuple(vec![
            Term::atom("after"),
            Term::atom(what.replace(' ', "_").as_str()),
        ]);
        peer.write_all(&reg_send(&me, "inbox", &marker))
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
            .await
            .unwrap_or_else(|_| panic!("nothing delivered after {what}"))
            .unwrap();
        assert_eq!(got.message, marker, "after {what}");
        assert!(server.is_connected(&me), "disconnected by {what}");
    }
    // A frame longer than the limit: closed at once, with the reason.
    peer.write_all(&[0x7f, 0xff, 0xff, 0xff, 112])
        .await
        .unwrap();
    let down = down_reason(&mut events, &me, Duration::from_secs(5)).await;
    assert_eq!(
        down,
        DisconnectReason::FrameTooLarge {
            len: 0x7fff_ffff,
            max: 1024 * 1024
        }
    );
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match peer.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the socket is closed");
    assert!(!server.is_connected(&me));
}

// ---------------------------------------------------------------------------------------
// Wrong names, vanishing nodes, a seed that refuses (a wrong cookie: formation.rs).

#[tokio::test(flavor = "multi_thread")]
async fn wrong_and_mixed_node_names_are_named_with_the_cause() {
    let epmd = Epmd::start().await;
    let erl = ErlNode::start(ErlOptions::new(epmd.port())).await;
    let host = host_of(erl.name()).to_owned();
    let probe = agent_node(epmd.port(), &host, COOKIE).await;
    let backend = Arc::new(MemoryBackend::new());

    // A name nobody runs under.
    let nosuch: NodeName = format!("{}@{host}", unique_name("nosuch")).parse().unwrap();
    let err = Agent::new(
        backend.clone(),
        Arc::new(ErlangMesh::new(probe.clone(), nosuch.clone())),
        quick(),
    )
    .run()
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains(nosuch.as_str()), "{text}");
    assert!(text.contains("not registered"), "{text}");
    assert!(
        text.contains(erl.name().split('@').next().unwrap()),
        "lists who is there: {text}"
    );

    // A long name given to a short-name agent.
    let long: NodeName = format!("{}@127.0.0.1", unique_name("long"))
        .parse()
        .unwrap();
    let formed = Agent::new(
        backend.clone(),
        Arc::new(ErlangMesh::new(probe.clone(), long.clone())),
        ignore(quick()),
    )
    .run()
    .await
    .unwrap();
    match &formed.outcome {
        Outcome::Standalone { error } => {
            assert!(error.contains(long.as_str()), "{error}");
            assert!(error.contains("long") && error.contains("short"), "{error}");
        }
        other => panic!("{other:?}"),
    }

    // A registered node under a name with the wrong case: EPMD does not know it, the
    // node is proven gone, the agent forms (and says which node it could not find).
    let upper: NodeName = format!(
        "{}@{host}",
        erl.name().split('@').next().unwrap().to_uppercase()
    )
    .parse()
    .unwrap();
    let _r = backend
        .register(Registration::new(upper.clone(), Duration::from_secs(30)))
        .await
        .unwrap();
    let agent = Agent::new(
        backend.clone(),
        Arc::new(ErlangMesh::new(probe.clone(), erl.name().parse().unwrap())),
        quick(),
    );
    let mut events = agent.events();
    let formed = agent.run().await.unwrap();
    assert_eq!(formed.outcome, Outcome::FormedNew);
    let mut probed_down = false;
    while let Ok(ev) = events.try_recv() {
        probed_down |= ev
            == FormationEvent::Probed {
                node: upper.clone(),
                live: false,
            };
    }
    assert!(probed_down);
}

/// Two erl nodes that do not connect to each other by themselves: the seed (first in
/// alphabetical order) and the node whose agent joins it.
async fn seed_and_joiner(epmd: &Epmd) -> (ErlNode, ErlNode) {
    let node = |prefix: &'static str| {
        ErlNode::start(
            ErlOptions::new(epmd.port())
                .name_prefix(prefix)
                .args(["-connect_all", "false"]),
        )
    };
    (node("a_seed").await, node("b_me").await)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_seed_that_vanishes_between_listing_and_joining_is_retried_then_skipped() {
    let epmd = Epmd::start().await;
    let (seed, me) = seed_and_joiner(&epmd).await;
    let seed_name: NodeName = seed.name().parse().unwrap();
    let probe = agent_node(epmd.port(), host_of(seed.name()), COOKIE).await;
    let backend = Arc::new(MemoryBackend::new());
    let _r = backend
        .register(Registration::new(
            seed_name.clone(),
            Duration::from_secs(30),
        ))
        .await
        .unwrap();
    let agent = Agent::new(
        backend.clone(),
        // The seed's node dies right after the agent found it live (it vanishes
        // between listing and joining).
        Arc::new({
            let seed = Mutex::new(Some(seed));
            Hooked::new(
                ErlangMesh::new(probe, me.name().parse().unwrap()),
                "seed-vanishes",
            )
            .on_probe(move |_, probed| {
                if probed.is_some_and(|p| p.live) {
                    drop(seed.lock().unwrap().take());
                }
                None
            })
        }),
        FormationConfig {
            max_attempts: 10,
            ..quick()
        },
    );
    let mut events = agent.events();
    let formed = agent.run().await.unwrap();
    assert_eq!(
        formed.outcome,
        Outcome::FormedNew,
        "the dead seed is skipped once proven gone"
    );
    let mut retried = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if let FormationEvent::Retrying { error, .. } = ev {
            retried.push(error);
        }
    }
    assert!(!retried.is_empty(), "the failed join was retried");
    assert!(retried[0].contains(seed_name.as_str()), "{retried:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erlang_seed_that_refuses_the_join_is_named() {
    let epmd = Epmd::start().await;
    let (seed, me) = seed_and_joiner(&epmd).await;
    let seed_name: NodeName = seed.name().parse().unwrap();
    let me_name: NodeName = me.name().parse().unwrap();
    let probe = agent_node(epmd.port(), host_of(seed.name()), COOKIE).await;
    // The seed lets only the agent in (net_kernel:allow/1): `me` is refused.
    let mut seed = seed;
    assert_eq!(
        seed.eval(&format!("net_kernel:allow(['{}'])", probe.name()))
            .await,
        "ok"
    );
    let backend = Arc::new(MemoryBackend::new());
    let _r = backend
        .register(Registration::new(
            seed_name.clone(),
            Duration::from_secs(30),
        ))
        .await
        .unwrap();
    let target = Arc::new(ErlangMesh::new(probe, me_name.clone()));
    let started = Instant::now();
    let err = Agent::new(backend.clone(), target.clone(), quick())
        .run()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(seed_name.as_str()) && text.contains(me_name.as_str()),
        "{text}"
    );
    assert!(text.contains("connect_node"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(60));
    let formed = Agent::new(backend.clone(), target, ignore(quick()))
        .run()
        .await
        .unwrap();
    assert!(
        matches!(&formed.outcome, Outcome::Standalone { error } if error.contains(seed_name.as_str())),
        "{:?}",
        formed.outcome
    );
    assert!(backend.lock_holder().is_none());
    drop(me);
}

/// A native "seed" that answers the membership question but refuses every join.
#[tokio::test(flavor = "multi_thread")]
async fn a_native_seed_that_refuses_the_join_is_named() {
    let epmd = EpmdServer::bind(EpmdServerConfig::localhost(0))
        .await
        .unwrap();
    let node = |prefix: &str| {
        let name: NodeName = format!("{}@localhost", unique_name(prefix))
            .parse()
            .unwrap();
        Node::builder(name, Cookie::new(COOKIE).unwrap())
            .epmd_port(epmd.port())
            .listen("127.0.0.1:0".parse().unwrap())
            .start()
    };
    let refuser = node("a_refuser").await.unwrap();
    let mut service = refuser
        .register(autocluster::formation::MEMBERSHIP_SERVICE)
        .unwrap();
    let refuser_name = refuser.name().clone();
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = answered.clone();
    tokio::spawn(async move {
        while let Some(env) = service.recv().await {
            let Some(call) = autocluster::node::GenCall::parse(&env.message) else {
                continue;
            };
            let reply = if call.request.is_atom("members") {
                Term::Tuple(vec![
                    Term::atom("seed"),
                    Term::List(vec![Term::atom(refuser_name.as_str())]),
                ])
            } else {
                counter.fetch_add(1, Ordering::SeqCst);
                Term::Tuple(vec![Term::atom("error"), Term::atom("cluster_full")])
            };
            let _ = service.reply(&call, reply).await;
        }
    });
    let backend = Arc::new(MemoryBackend::new());
    let _r = backend
        .register(Registration::new(
            refuser.name().clone(),
            Duration::from_secs(30),
        ))
        .await
        .unwrap();
    let me = NativeTarget::new(node("b_me").await.unwrap()).unwrap();
    let err = Agent::new(backend.clone(), Arc::new(me.clone()), quick())
        .run()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains(refuser.name().as_str()), "{text}");
    assert!(text.contains("cluster_full"), "{text}");
    assert_eq!(answered.load(Ordering::SeqCst), 3, "one join per attempt");
    let formed = Agent::new(backend, Arc::new(me), ignore(quick()))
        .run()
        .await
        .unwrap();
    assert!(
        matches!(formed.outcome, Outcome::Standalone { .. }),
        "{:?}",
        formed.outcome
    );
}

// ---------------------------------------------------------------------------------------
// A backend that misbehaves in the middle of formation.

#[cfg(feature = "etcd")]
mod backend_mid_formation {
    use super::*;
    use crate::common::EtcdServer;
    use autocluster::backend::etcd::{EtcdBackend, EtcdConfig};
    use tokio::net::TcpListener;

    /// What the proxy in front of etcd does.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Mode {
        Pass,
        /// Stop forwarding, keep every connection open.
        Hang,
        /// Answer junk and close.
        Garbage,
    }

    /// A TCP proxy whose behaviour can change while connections are open.
    struct Proxy {
        addr: SocketAddr,
        mode: Arc<Mutex<Mode>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mode: Arc<Mutex<Mode>>,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let now = *mode.lock().unwrap();
            match now {
                Mode::Pass => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                Mode::Hang => {
                    // Forward nothing, hold both ends open.
                    let _keep = (&from, &to);
                    std::future::pending::<()>().await;
                }
                Mode::Garbage => return,
            }
        }
    }

    impl Proxy {
        async fn start(upstream: SocketAddr) -> Proxy {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mode = Arc::new(Mutex::new(Mode::Pass));
            let m = mode.clone();
            let task = tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if *m.lock().unwrap() == Mode::Garbage {
                        // Junk where an HTTP/2 server preface should be, then close.
                        let _ = client
                            .write_all(b"\x00\x00\x12\x04\x00garbage garbage garbage")
                            .await;
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pump(cr, sw, m.clone()));
                    tokio::spawn(pump(sr, cw, m.clone()));
                }
            });
            Proxy { addr, mode, task }
        }

        fn set(&self, mode: Mode) {
            *self.mode.lock().unwrap() = mode;
        }
    }

    /// etcd hangs (accepts, never answers) or answers garbage right after the agent took
    /// the lock and listed the registry: every call fails with a typed error within its
    /// timeout, the agent retries, then follows its failure policy, in bounded time.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_backend_that_hangs_or_answers_garbage_mid_formation_fails_the_agent_in_bounded_time()
    {
        let etcd = EtcdServer::start().await;
        let upstream: SocketAddr = etcd
            .endpoint()
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        let epmd = EpmdServer::bind(EpmdServerConfig::localhost(0))
            .await
            .unwrap();
        for mode in [Mode::Hang, Mode::Garbage] {
            for policy in [FailurePolicy::Stop, FailurePolicy::Ignore] {
                let proxy = Proxy::start(upstream).await;
                let backend: Arc<dyn Backend> = Arc::new(
                    EtcdBackend::new(EtcdConfig {
                        endpoints: vec![format!("http://{}", proxy.addr)],
                        cluster_name: unique_name("hostile"),
                        timeout: Duration::from_secs(1),
                        node_ttl: Duration::from_secs(3),
                        lock_ttl: Duration::from_secs(3),
                        lock_wait: Duration::from_secs(5),
                        ..EtcdConfig::default()
                    })
                    .unwrap(),
                );
                let node = Node::builder(
                    format!("{}@localhost", unique_name("n")).parse().unwrap(),
                    Cookie::new(COOKIE).unwrap(),
                )
                .epmd_port(epmd.port())
                .listen("127.0.0.1:0".parse().unwrap())
                .start()
                .await
                .unwrap();
                // The proxy switches to `mode` once formation is under way: the lock
                // is held and the registry listed, the registration is next.
                let switch = proxy.mode.clone();
                let target = Arc::new(
                    Hooked::new(NativeTarget::new(node).unwrap(), "switch-on-form")
                        .on_form(move || *switch.lock().unwrap() = mode),
                );
                let config = FormationConfig {
                    failure: policy,
                    ..quick()
                };
                let agent = Agent::new(backend.clone(), target, config);
                let mut events = agent.events();
                let started = Instant::now();
                let result = tokio::time::timeout(Duration::from_secs(60), agent.run())
                    .await
                    .unwrap_or_else(|_| panic!("{mode:?}/{policy:?}: the agent hung"));
                let took = started.elapsed();
                let mut retryable = None;
                let error = match (policy, result) {
                    (FailurePolicy::Stop, Err(e)) => {
                        assert!(matches!(e, FormationError::Backend { .. }), "{mode:?}: {e}");
                        retryable = Some(e.is_retryable());
                        e.to_string()
                    }
                    (FailurePolicy::Ignore, Ok(formed)) => match formed.outcome {
                        Outcome::Standalone { error } => error,
                        other => panic!("{mode:?}: {other:?}"),
                    },
                    (p, other) => panic!("{mode:?}/{p:?}: {other:?}"),
                };
                assert!(error.contains("etcd"), "{mode:?}: {error}");
                let mut retries = 0;
                while let Ok(ev) = events.try_recv() {
                    retries += usize::from(matches!(ev, FormationEvent::Retrying { .. }));
                }
                match mode {
                    // A hung etcd is a timeout: transient, so every attempt is made.
                    Mode::Hang => assert_eq!(retries, 2, "{mode:?}: three attempts: {error}"),
                    // Garbage is either a cut connection (transient, retried) or an
                    // answer that makes no sense (not retried): never more than three
                    // attempts, and fewer only when the last error is not transient.
                    _ => {
                        assert!(retries <= 2, "{mode:?}: {retries} retries: {error}");
                        if retries < 2 && retryable.is_some() {
                            assert_eq!(
                                retryable,
                                Some(false),
                                "{mode:?}: gave up after {retries} retries on a transient error: {error}"
                            );
                        }
                    }
                }
                assert!(
                    took < Duration::from_secs(40),
                    "{mode:?}/{policy:?}: {took:?}"
                );
                eprintln!("{mode:?}/{policy:?}: failed after {took:?}: {error}");
                proxy.set(Mode::Pass);
            }
        }
    }
}
