//! The local node against real OTP 25 nodes: connections in both directions, remote
//! calls with every kind of term, messages, errors a user can act on, ticks, IPv6.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use autocluster::handshake::HandshakeError;
use autocluster::node::{ClientStartError, ConnectError, DisconnectReason, NodeEvent, RpcMethod};
use autocluster::rpc::{ExceptionClass, RpcError};
use autocluster::term::{Term, parse_term};
use autocluster::{Cookie, Fault, Node, NodeName};

use crate::common::{Epmd, ErlNode, ErlOptions, initiator_config, limited_server, unique_name};

const COOKIE: &str = "autocluster_test_cookie";

fn host_of(node: &str) -> &str {
    node.split_once('@').map(|(_, h)| h).expect("a node name")
}

/// A Rust node named `rust_N@<host of peer>`.
fn rust_name(peer: &str) -> NodeName {
    format!("{}@{}", unique_name("rust"), host_of(peer))
        .parse()
        .unwrap()
}

async fn client_node(epmd: &Epmd, peer: &str) -> Node {
    Node::builder(rust_name(peer), Cookie::new(COOKIE).unwrap())
        .epmd_port(epmd.port())
        .start()
        .await
        .unwrap()
}

async fn listening_node(epmd: &Epmd, peer: &str) -> Node {
    Node::builder(rust_name(peer), Cookie::new(COOKIE).unwrap())
        .epmd_port(epmd.port())
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

fn t(text: &str) -> Term {
    parse_term(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

const SECS5: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread")]
async fn rpc_returns_every_kind_of_term() {
    let epmd = Epmd::start().await;
    let mut erl = ErlNode::start(ErlOptions::new(epmd.port())).await;
    let peer: NodeName = erl.name().parse().unwrap();
    let node = client_node(&epmd, erl.name()).await;

    let r = node
        .call(&peer, "erlang", "node", vec![], SECS5)
        .await
        .unwrap();
    assert_eq!(r, Term::atom(erl.name()));

    // Values built on the Erlang side and checked on ours.
    for expr in [
        "42",
        "-7",
        "255",
        "256",
        "-2147483648",
        "2147483648",
        "123456789012345678901234567890",
        "-98765432109876543210",
        "3.25",
        "-0.5",
        "1.0e300",
        "foo",
        "'with space'",
        "'ünï'",
        "<<\"bin\">>",
        "<<1:3>>",
        "[]",
        "[1,2,3]",
        "[-1,-2]",
        "[256,1]",
        "\"text\"",
        "[a|b]",
        "{ok,{nested,[1.5]}}",
        "#{a => 1, <<\"k\">> => [x]}",
        "{}",
    ] {
        let r = node
            .call(
                &peer,
                "erl_scan",
                "string",
                vec![Term::string(&format!("{expr}."))],
                SECS5,
            )
            .await
            .unwrap();
        let tokens = r.as_tuple().unwrap()[1].clone();
        let parsed = node
            .call(&peer, "erl_parse", "parse_term", vec![tokens], SECS5)
            .await
            .unwrap();
        let value = parsed.as_tuple().unwrap()[1].clone();
        assert_eq!(value, t(expr), "{expr}");
    }

    // Values sent from our side come back identical, and Erlang sees what we meant.
    for expr in [
        "[-1,-2]",
        "-1",
        "18446744073709551616",
        "-18446744073709551616",
        "[1,2,3]",
        "\"héllo\"",
        "#{1 => {a,b}, [] => <<>>}",
        "{[a|b], 2.5, 'Quoted Atom'}",
    ] {
        let term = t(expr);
        let back = node
            .call(
                &peer,
                "erlang",
                "hd",
                vec![Term::List(vec![term.clone()])],
                SECS5,
            )
            .await
            .unwrap();
        assert_eq!(back, term, "{expr} round trip");
        let printed = node
            .call(
                &peer,
                "io_lib",
                "format",
                vec![Term::string("~0p"), Term::List(vec![term.clone()])],
                SECS5,
            )
            .await
            .unwrap();
        let printed = node
            .call(&peer, "lists", "flatten", vec![printed], SECS5)
            .await
            .unwrap();
        assert_eq!(
            printed,
            Term::string(&term.to_string()),
            "{expr} printed by Erlang"
        );
    }
    let r = node
        .call(
            &peer,
            "erlang",
            "length",
            vec![t("[[-1,-2]]").into_list_elements().unwrap()[0].clone()],
            SECS5,
        )
        .await;
    assert_eq!(r.unwrap(), Term::Integer(2));
    let r = node
        .call(&peer, "lists", "sum", vec![t("[-1,-2]")], SECS5)
        .await
        .unwrap();
    assert_eq!(r, Term::Integer(-3));

    // A 1 MiB binary both ways.
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let r = node
        .call(
            &peer,
            "erlang",
            "iolist_to_binary",
            vec![Term::List(vec![Term::binary(big.clone())])],
            SECS5,
        )
        .await
        .unwrap();
    assert_eq!(r.as_binary().unwrap(), &big[..]);
    let r = node
        .call(&peer, "erlang", "byte_size", vec![Term::binary(big)], SECS5)
        .await
        .unwrap();
    assert_eq!(r, Term::Integer(1024 * 1024));

    // Pids and references made by Erlang.
    let pid = node
        .call(&peer, "erlang", "whereis", vec![Term::atom("init")], SECS5)
        .await
        .unwrap();
    let pid = pid.as_pid().expect("init's pid").clone();
    assert_eq!(pid.node.as_str(), erl.name());
    let alive = node
        .call(
            &peer,
            "erlang",
            "is_process_alive",
            vec![Term::from(pid.clone())],
            SECS5,
        )
        .await
        .unwrap();
    assert_eq!(alive, Term::atom("true"));
    let r = node
        .call(&peer, "erlang", "make_ref", vec![], SECS5)
        .await
        .unwrap();
    let reference = r.as_reference().expect("a reference").clone();
    let is_ref = node
        .call(
            &peer,
            "erlang",
            "is_reference",
            vec![Term::from(reference)],
            SECS5,
        )
        .await
        .unwrap();
    assert_eq!(is_ref, Term::atom("true"));
    assert!(
        erl.eval("nodes(hidden)")
            .await
            .contains(node.name().as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rpc_errors_are_typed() {
    let epmd = Epmd::start().await;
    let erl = ErlNode::start(ErlOptions::new(epmd.port())).await;
    let peer: NodeName = erl.name().parse().unwrap();
    let node = client_node(&epmd, erl.name()).await;

    let err = node
        .call(&peer, "no_such_module", "f", vec![], SECS5)
        .await
        .unwrap_err();
    assert!(err.is_undef(), "{err}");
    assert!(
        matches!(err, RpcError::Exception { class: ExceptionClass::Error, ref stacktrace, .. } if stacktrace.is_some())
    );

    let err = node
        .call(&peer, "erlang", "throw", vec![Term::atom("oops")], SECS5)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RpcError::Exception { class: ExceptionClass::Throw, ref reason, .. } if reason.is_atom("oops")),
        "{err}"
    );
    let err = node
        .call(&peer, "erlang", "exit", vec![Term::atom("bye")], SECS5)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RpcError::Exception { class: ExceptionClass::Exit, ref reason, .. } if reason.is_atom("bye")),
        "{err}"
    );
    let err = node
        .call(
            &peer,
            "erlang",
            "binary_to_list",
            vec![Term::atom("x")],
            SECS5,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RpcError::Exception { class: ExceptionClass::Error, ref reason, .. } if reason.is_atom("badarg")),
        "{err}"
    );
    assert_eq!(err.fault(), None, "the peer answered");

    // The same through rex: {badrpc, Reason}.
    let rex = Node::builder(rust_name(erl.name()), Cookie::new(COOKIE).unwrap())
        .epmd_port(epmd.port())
        .rpc_method(RpcMethod::Rex)
        .start()
        .await
        .unwrap();
    let ok = rex
        .call(&peer, "erlang", "node", vec![], SECS5)
        .await
        .unwrap();
    assert_eq!(ok, Term::atom(erl.name()));
    let err = rex
        .call(&peer, "no_such_module", "f", vec![], SECS5)
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::BadRpc { .. }), "{err}");
    assert!(err.is_undef(), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn many_calls_in_flight_and_a_timeout_spares_the_others() {
    let epmd = Epmd::start().await;
    let mut erl = ErlNode::start(ErlOptions::new(epmd.port())).await;
    let peer: NodeName = erl.name().parse().unwrap();
    let node = client_node(&epmd, erl.name()).await;
    node.connect(&peer).await.unwrap();

    // A slow call times out while 200 fast ones complete on the same connection.
    let slow = {
        let node = node.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            node.call(
                &peer,
                "timer",
                "sleep",
                vec![Term::Integer(5_000)],
                Duration::from_millis(300),
            )
            .await
        })
    };
    let mut fast = Vec::new();
    for i in 0..200i64 {
        let node = node.clone();
        let peer = peer.clone();
        fast.push(tokio::spawn(async move {
            node.call(&peer, "erlang", "abs", vec![Term::Integer(-i)], SECS5)
                .await
        }));
    }
    for (i, f) in fast.into_iter().enumerate() {
        assert_eq!(f.await.unwrap().unwrap(), Term::Integer(i as i64));
    }
    let err = slow.await.unwrap().unwrap_err();
    assert!(matches!(err, RpcError::Timeout { .. }), "{err}");
    // The connection survived and the timed-out worker was killed.
    assert!(node.is_connected(&peer));
    let r = node
        .call(&peer, "erlang", "node", vec![], SECS5)
        .await
        .unwrap();
    assert_eq!(r, Term::atom(erl.name()));
    let sleepers = erl
        .eval("length([P || P <- processes(), {current_function, {timer, sleep, 1}} == process_info(P, current_function)])")
        .await;
    assert_eq!(sleepers, "0", "the abandoned call's process was killed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_that_prints_does_not_hang_the_call() {
    let epmd = Epmd::start().await;
    let erl = ErlNode::start(ErlOptions::new(epmd.port())).await;
    let peer: NodeName = erl.name().parse().unwrap();
    for method in [RpcMethod::Erpc, RpcMethod::Rex] {
        let node = Node::builder(rust_name(erl.name()), Cookie::new(COOKIE).unwrap())
            .epmd_port(epmd.port())
            .rpc_method(method)
            .start()
            .await
            .unwrap();
        let r = node
            .call(
                &peer,
                "io",
                "format",
                vec![Term::string("hello ~p~n"), t("[world]")],
                SECS5,
            )
            .await
            .unwrap();
        assert_eq!(r, Term::atom("ok"), "{method:?}");
        let r = node
            .call(
                &peer,
                "io",
                "put_chars",
                vec![Term::binary(b"raw\n".to_vec())],
                SECS5,
            )
            .await
            .unwrap();
        assert_eq!(r, Term::atom("ok"), "{method:?}");
        // Reading input gets eof instead of blocking.
        let r = node
            .call(&peer, "io", "get_line", vec![Term::string("> ")], SECS5)
            .await
            .unwrap();
        assert_eq!(r, Term::atom("eof"), "{method:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn erlang_pings_and_messages_a_rust_node() {
    let epmd = Epmd::start().await;
    let mut erl = ErlNode::start(ErlOptions::new(epmd.port())).await;
    let node = listening_node(&epmd, erl.name()).await;
    let mut mailbox = node.register("inbox").unwrap();
    let mut events = node.monitor_nodes();
    let me = node.name().to_string();

    assert_eq!(erl.eval(&format!("net_adm:ping('{me}')")).await, "pong");
    match events.recv().await.unwrap() {
        NodeEvent::Up { node: n, hidden } => {
            assert_eq!(n.as_str(), erl.name());
            assert!(hidden, "the Rust node is hidden by default");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        erl.eval("nodes()").await,
        "[]",
        "hidden nodes are not in nodes()"
    );
    assert!(erl.eval("nodes(hidden)").await.contains(&me));

    erl.eval(&format!(
        "{{inbox, '{me}'}} ! {{self(), hello, [-1, 2], <<\"data\">>}}"
    ))
    .await;
    let got = tokio::time::timeout(SECS5, mailbox.recv())
        .await
        .unwrap()
        .unwrap();
    let fields = got.message.as_tuple().unwrap();
    assert_eq!(fields[1], Term::atom("hello"));
    assert_eq!(fields[2], t("[-1,2]"));
    let sender = fields[0].as_pid().unwrap().clone();
    assert_eq!(
        got.from.as_ref(),
        Some(&sender),
        "REG_SEND carries the sender"
    );

    // Reply to the Erlang shell process and see it arrive.
    mailbox.send(&sender, t("{reply, 42}")).await.unwrap();
    assert_eq!(
        erl.eval("receive {reply, X} -> X after 5000 -> timeout end")
            .await,
        "42"
    );

    // An Erlang gen:call to the Rust mailbox, answered through the OTP 24+ alias.
    let me2 = me.clone();
    let caller = tokio::spawn(async move {
        let me = me2;
        let r = erl
            .eval(&format!(
                "gen:call({{inbox, '{me}'}}, '$gen_call', {{double, 21}}, 5000)"
            ))
            .await;
        (r, erl)
    });
    let call_msg = tokio::time::timeout(SECS5, mailbox.recv())
        .await
        .unwrap()
        .unwrap();
    let call = autocluster::node::GenCall::parse(&call_msg.message).expect("a gen:call");
    assert_eq!(call.request, t("{double, 21}"));
    mailbox.reply(&call, Term::Integer(42)).await.unwrap();
    let (r, mut erl) = caller.await.unwrap();
    assert_eq!(r, "{ok,42}");

    // A monitor from Erlang on the mailbox fires when it is dropped. The message sent
    // after it arrives after it (signals between two processes keep their order), so
    // once it is here the monitor is in place.
    let reference = erl
        .eval(&format!(
            "put(mref, erlang:monitor(process, {{inbox, '{me}'}})), {{inbox, '{me}'}} ! monitored, ok"
        ))
        .await;
    assert_eq!(reference, "ok");
    let sync = tokio::time::timeout(SECS5, mailbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sync.message, Term::atom("monitored"));
    drop(mailbox);
    let down = erl
        .eval("receive {'DOWN', _, process, _, R} -> R after 5000 -> timeout end")
        .await;
    assert_eq!(down, "normal");
    // And a monitor on a name nobody holds fires at once.
    let noproc = erl
        .eval(&format!("erlang:monitor(process, {{nobody, '{me}'}}), receive {{'DOWN', _, process, _, R}} -> R after 5000 -> timeout end"))
        .await;
    assert_eq!(noproc, "noproc");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_cookie_is_named_in_both_directions() {
    let epmd = Epmd::start().await;
    let mut erl = ErlNode::start(ErlOptions::new(epmd.port()).cookie("another_cookie")).await;
    let peer: NodeName = erl.name().parse().unwrap();
    let node = listening_node(&epmd, erl.name()).await;

    let started = Instant::now();
    let err = node.connect(&peer).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::Handshake(HandshakeError::CookieRejected { .. })
        ),
        "{err}"
    );
    assert!(started.elapsed() < SECS5);
    assert!(!err.to_string().contains(COOKIE) && !err.to_string().contains("another_cookie"));
    assert_eq!(err.fault(), Fault::Rejected);
    assert!(!err.is_transient());

    // Erlang with the wrong cookie dialling us: pang, and no connection on our side.
    let me = node.name().to_string();
    assert_eq!(erl.eval(&format!("net_adm:ping('{me}')")).await, "pang");
    assert!(node.connected_nodes().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn name_errors_explain_themselves() {
    let epmd = Epmd::start().await;
    let mut erl = ErlNode::start(ErlOptions::new(epmd.port())).await;
    let node = client_node(&epmd, erl.name()).await;

    // Not registered: the error lists what EPMD knows.
    let ghost: NodeName = format!("ghost@{}", host_of(erl.name())).parse().unwrap();
    let err = node.connect(&ghost).await.unwrap_err();
    match &err {
        ConnectError::NotRegistered { known, .. } => {
            assert!(known.iter().any(|k| k == erl.alive()), "{err}")
        }
        other => panic!("{other}"),
    }
    assert_eq!(err.fault(), Fault::NotRunning);
    assert!(err.is_transient());

    // Dialling the right port under the wrong name: the peer is not who we asked for.
    let port = erl.dist_port().await;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let wrong: NodeName = format!("{}_x@{}", erl.alive(), host_of(erl.name()))
        .parse()
        .unwrap();
    let err = node.connect_to(&wrong, addr).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::Handshake(HandshakeError::NameMismatch { .. })
        ),
        "{err}"
    );
    assert_eq!(err.fault(), Fault::Rejected);

    // Short vs long: refused before any socket is opened.
    let long: NodeName = format!("{}@127.0.0.1", erl.alive()).parse().unwrap();
    let err = node.connect(&long).await.unwrap_err();
    assert!(matches!(err, ConnectError::NameKind(_)), "{err}");
    assert!(err.to_string().contains("-sname"), "{err}");
    assert_eq!(err.fault(), Fault::PeerIncompatible);

    // Nothing listening.
    let err = node
        .connect_to(&wrong, "127.0.0.1:1".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Refused { .. }), "{err}");
    assert_eq!(err.fault(), Fault::NotRunning);

    // No EPMD at all on that port.
    let lonely = Node::builder(rust_name(erl.name()), Cookie::new(COOKIE).unwrap())
        .epmd_port(1)
        .start()
        .await
        .unwrap();
    let err = lonely
        .connect(&erl.name().parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::EpmdUnreachable { .. }), "{err}");
    assert_eq!(err.fault(), Fault::Unreachable);
    let err = RpcError::from(err);
    assert_eq!(err.fault(), Some(Fault::Unreachable));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_peer_times_out_in_bounded_time() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let node = Node::builder(
        "rust@localhost".parse().unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .handshake_timeout(Duration::from_millis(500))
    .start()
    .await
    .unwrap();
    let started = Instant::now();
    let err = node
        .connect_to(&"silent@localhost".parse().unwrap(), addr)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::Handshake(HandshakeError::Timeout {
                step: autocluster::handshake::HandshakeStep::AwaitStatus,
                ..
            })
        ),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    hold.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_hidden_connection_survives_three_tick_times() {
    let epmd = Epmd::start().await;
    let mut erl =
        ErlNode::start(ErlOptions::new(epmd.port()).args(["-kernel", "net_ticktime", "2"])).await;
    let peer: NodeName = erl.name().parse().unwrap();
    let node = Node::builder(rust_name(erl.name()), Cookie::new(COOKIE).unwrap())
        .epmd_port(epmd.port())
        .net_ticktime(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let mut events = node.monitor_nodes();
    node.connect(&peer).await.unwrap();
    let _ = events.recv().await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(node.is_connected(&peer));
    assert!(events.try_recv().is_err(), "no node event while idle");
    assert!(
        erl.eval("nodes(hidden)")
            .await
            .contains(node.name().as_str())
    );

    // When the peer dies, the tick timeout reports it.
    drop(erl);
    let down = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(down, NodeEvent::Down { .. }), "{down:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_peer_is_reported_down_with_a_reason() {
    let epmd = Epmd::start().await;
    let mut erl = ErlNode::start(ErlOptions::new(epmd.port())).await;
    let peer: NodeName = erl.name().parse().unwrap();
    let node = client_node(&epmd, erl.name()).await;
    let mut events = node.monitor_nodes();
    node.connect(&peer).await.unwrap();
    assert!(matches!(events.recv().await.unwrap(), NodeEvent::Up { .. }));
    erl.eval(&format!("erlang:disconnect_node('{}')", node.name()))
        .await;
    match tokio::time::timeout(SECS5, events.recv())
        .await
        .unwrap()
        .unwrap()
    {
        NodeEvent::Down { node: n, reason } => {
            assert_eq!(n, peer);
            assert_eq!(reason, DisconnectReason::ClosedByPeer);
        }
        other => panic!("{other:?}"),
    }
    assert!(!node.is_connected(&peer));
    // The next call reconnects.
    let r = node
        .call(&peer, "erlang", "node", vec![], SECS5)
        .await
        .unwrap();
    assert_eq!(r, Term::atom(erl.name()));
}

#[tokio::test(flavor = "multi_thread")]
async fn simultaneous_connects_end_in_one_connection() {
    let epmd = Epmd::start().await;
    let mut erl = ErlNode::start(ErlOptions::new(epmd.port())).await;
    let peer: NodeName = erl.name().parse().unwrap();
    for round in 0..10 {
        let node = listening_node(&epmd, erl.name()).await;
        let me = node.name().to_string();
        let ours = {
            let node = node.clone();
            let peer = peer.clone();
            tokio::spawn(async move { node.connect(&peer).await })
        };
        let theirs = erl.eval(&format!("net_kernel:connect_node('{me}')")).await;
        ours.await
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(theirs, "true", "round {round}");
        assert_eq!(node.connected_nodes(), vec![peer.clone()]);
        let r = node
            .call(&peer, "erlang", "node", vec![], SECS5)
            .await
            .unwrap();
        assert_eq!(r, Term::atom(erl.name()));
        let links = erl
            .eval(&format!("length([N || N <- nodes(hidden), N == '{me}'])"))
            .await;
        assert_eq!(links, "1", "round {round}");
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_nodes_connect_to_each_other_simultaneously() {
    let epmd = Epmd::start().await;
    for _ in 0..20 {
        let a = Node::builder(
            format!("{}@localhost", unique_name("a")).parse().unwrap(),
            Cookie::new(COOKIE).unwrap(),
        )
        .epmd_port(epmd.port())
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
        let b = Node::builder(
            format!("{}@localhost", unique_name("b")).parse().unwrap(),
            Cookie::new(COOKIE).unwrap(),
        )
        .epmd_port(epmd.port())
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
        let (ra, rb) = tokio::join!(a.connect(b.name()), b.connect(a.name()));
        ra.unwrap();
        rb.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(a.connected_nodes(), vec![b.name().clone()]);
        assert_eq!(b.connected_nodes(), vec![a.name().clone()]);
        a.ping(b.name(), SECS5).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_end_to_end() {
    let epmd_server =
        autocluster::epmd::EpmdServer::bind(autocluster::epmd::EpmdServerConfig::localhost(0))
            .await
            .unwrap();
    let port = epmd_server.port();
    let mut erl = ErlNode::start(ErlOptions::new(port).long_names().inet6()).await;
    assert!(erl.name().ends_with("@::1"), "{}", erl.name());
    let peer: NodeName = erl.name().parse().unwrap();
    let node = Node::builder(
        format!("{}@::1", unique_name("rust")).parse().unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .epmd_port(port)
    .listen("[::1]:0".parse().unwrap())
    .start()
    .await
    .unwrap();
    let r = node
        .call(&peer, "erlang", "node", vec![], SECS5)
        .await
        .unwrap();
    assert_eq!(r, Term::atom(erl.name()));
    node.disconnect(&peer);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        erl.eval(&format!("net_adm:ping('{}')", node.name())).await,
        "pong"
    );
}

/// An embedded EPMD, and a node `srv_…@host` listening on 127.0.0.1 registered in it.
async fn server_behind_embedded_epmd(host: &str) -> (autocluster::epmd::EpmdServer, Node) {
    let epmd_server =
        autocluster::epmd::EpmdServer::bind(autocluster::epmd::EpmdServerConfig::localhost(0))
            .await
            .unwrap();
    let server = Node::builder(
        format!("{}@{host}", unique_name("srv")).parse().unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .epmd_port(epmd_server.port())
    .listen("127.0.0.1:0".parse().unwrap())
    .start()
    .await
    .unwrap();
    assert!(server.is_registered());
    (epmd_server, server)
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_to_rust_through_the_embedded_epmd() {
    let (epmd_server, server) = server_behind_embedded_epmd("localhost").await;
    let port = epmd_server.port();
    let mut inbox = server.register("inbox").unwrap();
    let client = Node::builder(
        format!("{}@localhost", unique_name("cli")).parse().unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .epmd_port(port)
    .start()
    .await
    .unwrap();
    client.ping(server.name(), SECS5).await.unwrap();
    client
        .send_named(server.name(), "inbox", t("{hi, [-1]}"))
        .await
        .unwrap();
    let got = tokio::time::timeout(SECS5, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message, t("{hi, [-1]}"));
    // A Rust node runs no Erlang code: calls are refused with a typed error.
    let err = client
        .call(server.name(), "erlang", "node", vec![], SECS5)
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::SpawnFailed { .. }), "{err}");
    server.shutdown().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!client.is_connected(server.name()));
}

/// What was sent before a disconnect reaches the peer: the frames still queued in the
/// connection's handle and engine are written before its FIN.
#[tokio::test(flavor = "multi_thread")]
async fn messages_sent_before_a_disconnect_all_arrive() {
    let (epmd_server, server) = server_behind_embedded_epmd("localhost").await;
    let mut inbox = server.register("inbox").unwrap();
    let client = Node::builder(
        format!("{}@localhost", unique_name("cli")).parse().unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .epmd_port(epmd_server.port())
    .start()
    .await
    .unwrap();
    client.ping(server.name(), SECS5).await.unwrap();
    // About 2 MB: more than a connection writes at once, so much of it is still queued
    // when the disconnect comes.
    const N: i64 = 500;
    for i in 0..N {
        let message = Term::Tuple(vec![Term::from(i), Term::Binary(vec![7; 4096])]);
        client
            .send_named(server.name(), "inbox", message)
            .await
            .unwrap();
    }
    assert!(client.disconnect(server.name()));
    for i in 0..N {
        let got = tokio::time::timeout(SECS5, inbox.recv())
            .await
            .unwrap_or_else(|_| panic!("message {i} of {N} never arrived"))
            .unwrap();
        let first = got.message.as_tuple().and_then(|t| t.first().cloned());
        assert_eq!(first, Some(Term::from(i)), "in order");
    }
    client.shutdown().await;
    server.shutdown().await;
}

/// A host the resolver does not know is reached through an address given to the
/// builder; without it, the same connect fails with a resolve error naming the node.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_address_given_to_the_builder_replaces_the_resolver() {
    // `.invalid` never resolves (RFC 6761).
    let (epmd_server, server) = server_behind_embedded_epmd("rabbit-0.example.invalid").await;
    let port = epmd_server.port();
    let client = |pinned: bool| {
        let mut builder = Node::builder(
            format!("{}@tool.example.invalid", unique_name("cli"))
                .parse()
                .unwrap(),
            Cookie::new(COOKIE).unwrap(),
        )
        .epmd_port(port);
        if pinned {
            builder =
                builder.host_address("rabbit-0.example.invalid", "127.0.0.1".parse().unwrap());
        }
        builder.start()
    };
    let unpinned = client(false).await.unwrap();
    let err = unpinned.connect(server.name()).await.unwrap_err();
    assert!(matches!(err, ConnectError::Resolve { .. }), "{err}");
    assert!(err.to_string().contains(server.name().as_str()), "{err}");
    let pinned = client(true).await.unwrap();
    pinned.ping(server.name(), SECS5).await.unwrap();
    assert!(pinned.is_connected(server.name()));
    server.shutdown().await;
}

/// Dynamic node names (OTP 23+): an initiator that sends only its host is named by the
/// Erlang node it connects to.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_erlang_node_names_a_dynamic_initiator() {
    use autocluster::handshake::{self, DistFlags, InitiatorConfig, LengthPrefix, LocalName};
    let epmd = Epmd::start().await;
    let mut erl = ErlNode::start(ErlOptions::new(epmd.port())).await;
    let port = erl.dist_port().await;
    let host = host_of(erl.name()).to_owned();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let cfg = InitiatorConfig {
        local: LocalName::Dynamic { host: host.clone() },
        creation: 0,
        flags: DistFlags::OURS,
        required: DistFlags::REQUIRED,
        cookie: Cookie::new(COOKIE).unwrap(),
        peer: erl.name().parse().unwrap(),
    };
    let outcome = handshake::initiate(&mut stream, LengthPrefix::U16, cfg, SECS5, || true)
        .await
        .unwrap();
    let named = outcome.handshaked.local;
    assert_eq!(named.host(), host);
    assert!(outcome.handshaked.local_creation > 3);
    // OTP sends its challenge acknowledgement before its net_kernel marks the node up:
    // under load the node shows in nodes(hidden) a little after the handshake ends.
    let deadline = Instant::now() + SECS5;
    loop {
        let seen = erl.eval("nodes(hidden)").await;
        if seen.contains(named.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "{seen} lacks {named}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_port_cache_is_used_and_a_refused_port_is_looked_up_again() {
    let epmd_server =
        autocluster::epmd::EpmdServer::bind(autocluster::epmd::EpmdServerConfig::localhost(0))
            .await
            .unwrap();
    let port = epmd_server.port();
    let name: NodeName = format!("{}@localhost", unique_name("srv")).parse().unwrap();
    let server = |name: NodeName| {
        Node::builder(name, Cookie::new(COOKIE).unwrap())
            .epmd_port(port)
            .listen("127.0.0.1:0".parse().unwrap())
            .start()
    };
    let first = server(name.clone()).await.unwrap();
    let client = Node::builder(
        format!("{}@localhost", unique_name("cli")).parse().unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .epmd_port(port)
    .start()
    .await
    .unwrap();

    client.connect(&name).await.unwrap();
    assert!(client.disconnect(&name));
    client.connect(&name).await.unwrap();
    let stats = client.dial_stats();
    assert_eq!((stats.epmd_lookups, stats.port_cache_hits), (1, 1));
    assert_eq!(
        stats.alive_answers, 0,
        "a closed connection is gone before the next"
    );

    // The peer restarts on another port: the cached one is refused, forgotten, and
    // EPMD is asked again within the same connect.
    let old_port = first.local_addr().unwrap().port();
    first.shutdown().await;
    drop(first);
    let deadline = Instant::now() + SECS5;
    let second = loop {
        match server(name.clone()).await {
            Ok(node) => break node,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("restart: {e}"),
        }
    };
    assert_ne!(second.local_addr().unwrap().port(), old_port);
    tokio::time::timeout(SECS5, async {
        while client.is_connected(&name) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    client.connect(&name).await.unwrap();
    let stats = client.dial_stats();
    assert_eq!(stats.port_cache_invalidations, 1);
    assert_eq!(stats.epmd_lookups, 2);
    client.ping(&name, SECS5).await.unwrap();

    // Without the cache every dial asks EPMD.
    let uncached = Node::builder(
        format!("{}@localhost", unique_name("cli")).parse().unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .epmd_port(port)
    .port_cache(false)
    .start()
    .await
    .unwrap();
    for _ in 0..2 {
        uncached.connect(&name).await.unwrap();
        uncached.disconnect(&name);
    }
    let stats = uncached.dial_stats();
    assert_eq!((stats.epmd_lookups, stats.port_cache_hits), (2, 0));
}

/// The peer's atom count (`erlang:system_info(atom_count)`), read through `observer`.
async fn atom_count(observer: &Node, peer: &NodeName) -> i64 {
    observer
        .call(
            peer,
            "erlang",
            "system_info",
            vec![Term::atom("atom_count")],
            SECS5,
        )
        .await
        .unwrap()
        .as_integer()
        .expect("an integer")
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_of_a_tool_reuse_a_pool_of_names_and_leave_no_atoms_behind() {
    let epmd = Epmd::start().await;
    let mut erl = ErlNode::start(ErlOptions::new(epmd.port())).await;
    let peer: NodeName = erl.name().parse().unwrap();
    let observer = client_node(&epmd, erl.name()).await;
    let tool = rust_name(erl.name());
    const RUNS: i64 = 20;
    const POOL: u16 = 4;
    // The peer loads code lazily: the first connection, call and disconnect of a tool
    // load modules whose atoms are not the tool's doing. Measure from after one run.
    let mut before = 0;
    let mut loaded_before = String::new();
    for run in 0..=RUNS {
        if run == 1 {
            loaded_before = erl.eval(LOADED_MODULES).await;
            before = atom_count(&observer, &peer).await;
        }
        let node = Node::builder(tool.clone(), Cookie::new(COOKIE).unwrap())
            .epmd_port(epmd.port())
            .start_client(&peer, POOL)
            .await
            .unwrap();
        assert!(
            node.name().alive().starts_with(tool.alive()),
            "{}",
            node.name()
        );
        let r = node
            .call(&peer, "erlang", "node", vec![], SECS5)
            .await
            .unwrap();
        assert_eq!(r, Term::atom(erl.name()));
        node.shutdown().await;
    }
    let grown = atom_count(&observer, &peer).await - before;
    // One atom per name of the pool at most, where a fresh name per run costs one per run.
    if grown > i64::from(POOL) {
        let loaded_after = erl.eval(LOADED_MODULES).await;
        panic!(
            "{RUNS} runs grew the peer's atom table by {grown}; modules loaded before: \
             {loaded_before}, after: {loaded_after}; the peer's output:\n{}",
            erl.output()
        );
    }
}

/// The modules an `erl` node has loaded, sorted.
const LOADED_MODULES: &str = "lists:sort([M || {M, _} <- code:all_loaded()])";

#[tokio::test(flavor = "multi_thread")]
async fn clients_sharing_a_name_pool_never_cut_each_others_connections() {
    let epmd = Epmd::start().await;
    let erl = ErlNode::start(ErlOptions::new(epmd.port())).await;
    let peer: NodeName = erl.name().parse().unwrap();
    let tool = rust_name(erl.name());
    let builder = Node::builder(tool.clone(), Cookie::new(COOKIE).unwrap()).epmd_port(epmd.port());

    let first = builder.clone().start_client(&peer, 2).await.unwrap();
    assert_eq!(first.name(), &tool);
    let mut first_events = first.monitor_nodes();
    let second = builder.clone().start_client(&peer, 2).await.unwrap();
    assert_eq!(second.name().alive(), format!("{}_2", tool.alive()));
    match builder.clone().start_client(&peer, 2).await {
        Err(ClientStartError::PoolExhausted {
            pool: 2, first: f, ..
        }) => assert_eq!(f, tool),
        other => panic!(
            "expected an exhausted pool, got {:?}",
            other.map(|n| n.name().clone())
        ),
    }
    // Both kept their connections, and both still call.
    for node in [&first, &second] {
        assert!(node.is_connected(&peer));
        let r = node
            .call(&peer, "erlang", "node", vec![], SECS5)
            .await
            .unwrap();
        assert_eq!(r, Term::atom(erl.name()));
    }
    assert!(
        first_events.try_recv().is_err(),
        "the first client saw an event"
    );

    // A node under the same name that replaces (the default, OTP's way) cuts the first
    // client's connection instead.
    let replacing = builder.start().await.unwrap();
    replacing.connect(&peer).await.unwrap();
    match tokio::time::timeout(SECS5, first_events.recv()).await {
        Ok(Ok(NodeEvent::Down { node, .. })) => assert_eq!(node, peer),
        other => panic!("expected the first client's connection to go down: {other:?}"),
    }
}

/// Reads one frame with a 2-byte length prefix (the handshake's framing).
async fn read_frame16(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.expect("a frame length");
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut body).await.expect("a frame body");
    body
}

/// Whether the server closed `stream` (EOF or reset) within five seconds.
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(SECS5, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handshake_under_way_outlives_a_flood_of_idle_connections_from_its_address() {
    use autocluster::handshake::{Initiator, InitiatorProgress, LengthPrefix};
    use tokio::io::AsyncWriteExt;
    const PER_SOURCE: usize = 4;
    let limits = autocluster::listener::ListenerLimits {
        max_pending_per_source: PER_SOURCE,
        idle_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let server = limited_server(limits, COOKIE).await;
    let addr = server.local_addr().unwrap();

    // From one address: a connection that sends nothing, then a handshake that stops
    // after the acceptor's challenge (its name has arrived).
    let mut idle_first = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let me: NodeName = format!("{}@localhost", unique_name("slow"))
        .parse()
        .unwrap();
    let mut hs = Initiator::new(
        initiator_config(&me, &server, COOKIE),
        LengthPrefix::U16,
        0x1234_5678,
    );
    let mut out = Vec::new();
    hs.start(&mut out).unwrap();
    stream.write_all(&out).await.unwrap();
    out.clear();
    for _ in 0..2 {
        // status, then challenge
        let frame = read_frame16(&mut stream).await;
        assert!(matches!(
            hs.handle(&frame, &mut out).unwrap(),
            InitiatorProgress::Continue
        ));
    }

    // Twice the per-source limit of idle connections from the same address.
    let mut flood = Vec::new();
    for _ in 0..2 * PER_SOURCE {
        flood.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    assert!(
        closed_by_server(&mut idle_first).await,
        "the idle connection was not evicted"
    );

    // The handshake under way still finishes.
    stream.write_all(&out).await.unwrap();
    out.clear();
    let frame = read_frame16(&mut stream).await;
    match hs.handle(&frame, &mut out).unwrap() {
        InitiatorProgress::Done(done) => assert_eq!(&done.peer, server.name()),
        other => panic!("{other:?}"),
    }
    // The acceptor may still be taking the flood's last connections in: wait for them.
    let deadline = Instant::now() + SECS5;
    let stats = loop {
        let stats = server.listener_stats().unwrap();
        if stats.evicted >= PER_SOURCE as u64 || Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(stats.evicted >= PER_SOURCE as u64, "{stats:?}");
    assert_eq!(stats.established, 1, "{stats:?}");
    drop(flood);
}
