//! The cookie never leaves the process: not in any log line (at TRACE level), not in any
//! error's `Display` or `Debug` (what a panic on `unwrap` prints), not in the `Debug` of
//! any configuration. Handshakes succeed and fail in both directions, against real OTP
//! nodes and between our own nodes, while everything the crate logs is captured.

use std::net::SocketAddr;
use std::time::Duration;

use autocluster::handshake::{
    AcceptorConfig, DistFlags, HandshakeError, InitiatorConfig, LocalName,
};
use autocluster::node::ConnectError;
use autocluster::{Cookie, Node, NodeName};

use crate::common::{Epmd, ErlNode, ErlOptions, capture_logs, unique_name};

/// The cluster's cookie, and the one of an intruder: both long and distinctive, so any
/// leak of either shows.
const COOKIE: &str = "Secret-Cookie-Of-The-Cluster-7f3a9";
const WRONG: &str = "Intruder-Cookie-Never-Shown-51c2e";
const SECS5: Duration = Duration::from_secs(5);

fn name_on(host: &str) -> NodeName {
    format!("{}@{host}", unique_name("rust")).parse().unwrap()
}

fn assert_clean(what: &str, text: &str) {
    for secret in [COOKIE, WRONG] {
        assert!(!text.contains(secret), "{what} reveals a cookie:\n{text}");
    }
}

fn assert_error_clean<E: std::fmt::Display + std::fmt::Debug>(e: &E) {
    assert_clean("an error's Display", &e.to_string());
    assert_clean("an error's Debug", &format!("{e:?}"));
    assert_clean("an error's pretty Debug", &format!("{e:#?}"));
}

#[tokio::test]
async fn no_cookie_in_logs_errors_or_debug_output_of_any_handshake() {
    let (logs, _guard) = capture_logs();
    let epmd = Epmd::start().await;
    let mut erl = ErlNode::start(ErlOptions::new(epmd.port()).cookie(COOKIE)).await;
    let mut intruder = ErlNode::start(ErlOptions::new(epmd.port()).cookie(WRONG)).await;
    let host = erl.name().split_once('@').unwrap().1.to_owned();
    let peer: NodeName = erl.name().parse().unwrap();

    let builder = Node::builder(name_on(&host), Cookie::new(COOKIE).unwrap())
        .epmd_port(epmd.port())
        .listen("127.0.0.1:0".parse().unwrap());
    assert_clean("NodeBuilder's Debug", &format!("{builder:?} {builder:#?}"));
    let node = builder.start().await.unwrap();
    assert_clean(
        "Node's and NodeConfig's Debug",
        &format!("{node:?} {:?} {:#?}", node.config(), node.config()),
    );

    // Successes, both directions.
    node.call(&peer, "erlang", "node", vec![], SECS5)
        .await
        .unwrap();
    node.disconnect(&peer);
    // The close is asynchronous: a ping racing it would use the closing connection
    // (`pang`, as between two Erlang nodes). Wait until both sides let it go.
    let deadline = std::time::Instant::now() + SECS5;
    while node.connection_info(&peer).is_some()
        || erl
            .eval("nodes(hidden)")
            .await
            .contains(node.name().as_str())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the connection never closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        erl.eval(&format!("net_adm:ping('{}')", node.name())).await,
        "pong"
    );

    // We dial with the wrong cookie: the peer closes after our challenge reply.
    let wrong = Node::builder(name_on(&host), Cookie::new(WRONG).unwrap())
        .epmd_port(epmd.port())
        .start()
        .await
        .unwrap();
    let e = wrong.connect(&peer).await.unwrap_err();
    assert!(
        matches!(
            e,
            ConnectError::Handshake(HandshakeError::CookieRejected { .. })
        ),
        "{e:?}"
    );
    assert_error_clean(&e);
    let e = wrong
        .call(&peer, "erlang", "node", vec![], SECS5)
        .await
        .unwrap_err();
    assert_error_clean(&e);

    // A peer with the wrong cookie dials us: we refuse it and say so.
    assert_eq!(
        intruder
            .eval(&format!("net_adm:ping('{}')", node.name()))
            .await,
        "pang"
    );
    logs.wait_for(&["WARN", "another cookie"], SECS5)
        .await
        .unwrap_or_else(|| panic!("no warning; logs:\n{}", logs.text()));

    // Between our own nodes, both roles are ours: wrong cookie, then a name mismatch.
    let addr: SocketAddr = node.local_addr().unwrap();
    let e = wrong.connect_to(node.name(), addr).await.unwrap_err();
    assert_error_clean(&e);
    let e = node.connect_to(&name_on(&host), addr).await.unwrap_err();
    assert!(
        matches!(
            e,
            ConnectError::Handshake(HandshakeError::NameMismatch { .. })
        ),
        "{e:?}"
    );
    assert_error_clean(&e);
    let friend = Node::builder(name_on(&host), Cookie::new(COOKIE).unwrap())
        .start()
        .await
        .unwrap();
    friend.connect_to(node.name(), addr).await.unwrap();

    // The handshake configurations print no cookie either.
    let init = InitiatorConfig {
        local: LocalName::Static(node.name().clone()),
        creation: 1,
        flags: DistFlags::OURS,
        required: DistFlags::REQUIRED,
        cookie: Cookie::new(COOKIE).unwrap(),
        peer: peer.clone(),
    };
    let acc = AcceptorConfig {
        local: node.name().clone(),
        creation: 1,
        flags: DistFlags::OURS,
        required: DistFlags::REQUIRED,
        cookie: Cookie::new(WRONG).unwrap(),
    };
    assert_clean("handshake configs' Debug", &format!("{init:?} {acc:#?}"));

    // Let the connection tasks finish logging, then read every line.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = logs.text();
    assert!(text.contains("TRACE") || text.contains("DEBUG"), "{text}");
    for line in text.lines() {
        assert_clean("a log line", line);
    }
    // Not weak: no warning about it.
    assert!(!text.contains("brute-force"), "{text}");
}

#[tokio::test]
async fn a_weak_cookie_is_warned_about_once_per_start_without_showing_it() {
    let (logs, _guard) = capture_logs();
    let weak = "Qx7#wZ";
    let node = Node::builder(
        "rust@localhost".parse().unwrap(),
        Cookie::new(weak).unwrap(),
    )
    .start()
    .await
    .unwrap();
    node.shutdown().await;
    let text = logs.text();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("brute-force")).collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(warnings[0].contains("WARN"), "{text}");
    assert!(!text.contains(weak), "{text}");
}
