//! Interoperability with erl_dist 0.8, an independent Rust implementation of the
//! distribution handshake: its initiator against our acceptor, and our initiator against
//! an acceptor built on it.

use std::time::Duration;

use autocluster::handshake::HandshakeError;
use autocluster::node::ConnectError;
use autocluster::node::NodeBuilder;
use autocluster::{Cookie, Node, NodeName};
use erl_dist::handshake::{ClientSideHandshake, HandshakeStatus, ServerSideHandshake};
use erl_dist::node::{Creation, LocalNode};
use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::common::unique_name;

const COOKIE: &str = "interop_cookie";

/// A node of ours with a fresh name and the test cookie.
fn our_node() -> NodeBuilder {
    Node::builder(
        format!("{}@localhost", unique_name("ours"))
            .parse()
            .unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
}

async fn our_listening_node() -> Node {
    our_node()
        .listen("127.0.0.1:0".parse().unwrap())
        .register_in_epmd(false)
        .start()
        .await
        .unwrap()
}

/// A client-only node of ours (no listener).
async fn our_client_node() -> Node {
    our_node().start().await.unwrap()
}

fn their_node(prefix: &str) -> LocalNode {
    let name: erl_dist::node::NodeName = format!("{}@localhost", unique_name(prefix))
        .parse()
        .unwrap();
    LocalNode::new(name, Creation::random())
}

#[tokio::test(flavor = "multi_thread")]
async fn erl_dist_initiator_against_our_acceptor() {
    let ours = our_listening_node().await;
    let mut events = ours.monitor_nodes();
    let stream = tokio::net::TcpStream::connect(ours.local_addr().unwrap())
        .await
        .unwrap();
    let theirs = their_node("theirs");
    let their_name = theirs.name.to_string();
    let mut hs = ClientSideHandshake::new(stream.compat(), theirs, COOKIE);
    let status = hs
        .execute_send_name(erl_dist::LOWEST_DISTRIBUTION_PROTOCOL_VERSION)
        .await
        .unwrap();
    assert_eq!(status, HandshakeStatus::Ok);
    let (_stream, peer) = hs.execute_rest(true).await.unwrap();
    assert_eq!(peer.name.to_string(), ours.name().as_str());
    let up = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(up, autocluster::NodeEvent::Up { ref node, .. } if node.as_str() == their_name),
        "{up:?}"
    );
    assert!(ours.is_connected(&their_name.parse().unwrap()));
}

#[tokio::test(flavor = "multi_thread")]
async fn erl_dist_initiator_with_a_wrong_cookie_is_refused() {
    let ours = our_listening_node().await;
    let stream = tokio::net::TcpStream::connect(ours.local_addr().unwrap())
        .await
        .unwrap();
    let mut hs = ClientSideHandshake::new(stream.compat(), their_node("bad"), "not_the_cookie");
    hs.execute_send_name(erl_dist::LOWEST_DISTRIBUTION_PROTOCOL_VERSION)
        .await
        .unwrap();
    assert!(hs.execute_rest(true).await.is_err());
    assert!(ours.connected_nodes().is_empty());
}

/// An acceptor built on erl_dist; answers one handshake with `status`.
async fn their_acceptor(
    cookie: &'static str,
) -> (
    std::net::SocketAddr,
    NodeName,
    tokio::task::JoinHandle<Result<String, String>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let local = their_node("acc");
    let name: NodeName = local.name.to_string().parse().unwrap();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut hs = ServerSideHandshake::new(stream.compat(), local, cookie);
        let peer = hs.execute_recv_name().await.map_err(|e| e.to_string())?;
        let (_stream, peer_node) = hs
            .execute_rest(HandshakeStatus::Ok)
            .await
            .map_err(|e| e.to_string())?;
        // Keep the connection open a moment so the initiator sees it succeed.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(format!("{peer:?} {}", peer_node.name))
    });
    (addr, name, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn our_initiator_against_an_erl_dist_acceptor() {
    let (addr, name, task) = their_acceptor(COOKIE).await;
    let ours = our_client_node().await;
    ours.connect_to(&name, addr).await.unwrap();
    assert!(ours.is_connected(&name));
    let seen = task.await.unwrap().unwrap();
    assert!(seen.contains(ours.name().as_str()), "{seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn our_initiator_with_a_wrong_cookie_is_told_so() {
    let (addr, name, task) = their_acceptor("their_cookie").await;
    let ours = our_client_node().await;
    let err = ours.connect_to(&name, addr).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::Handshake(HandshakeError::CookieRejected { .. })
        ),
        "{err}"
    );
    assert!(task.await.unwrap().is_err());
}

/// A redial waits for the peer to close the old connection, but a peer that never does
/// holds it up only for the linger bound.
#[tokio::test(flavor = "multi_thread")]
async fn a_redial_is_not_held_up_by_a_peer_that_never_closes_the_old_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let local = their_node("keeper");
    let name: NodeName = local.name.to_string().parse().unwrap();
    let acceptor = tokio::spawn(async move {
        let mut kept = Vec::new();
        for _ in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            let mut hs = ServerSideHandshake::new(stream.compat(), local.clone(), COOKIE);
            hs.execute_recv_name().await.unwrap();
            let (stream, _) = hs.execute_rest(HandshakeStatus::Ok).await.unwrap();
            // Never read, never close: our FIN goes unanswered.
            kept.push(stream);
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(kept);
    });
    let ours = our_client_node().await;
    ours.connect_to(&name, addr).await.unwrap();
    assert!(ours.disconnect(&name));
    let redial = tokio::time::timeout(Duration::from_secs(10), ours.connect_to(&name, addr)).await;
    assert!(
        matches!(redial, Ok(Ok(()))),
        "the redial was held up by the old connection: {redial:?}"
    );
    assert!(ours.is_connected(&name));
    acceptor.abort();
}
