//! Nodes of the crate for tests: a listening server with given limits, and what its
//! events say.

use std::time::Duration;

use autocluster::listener::ListenerLimits;
use autocluster::node::DisconnectReason;
use autocluster::{Cookie, NodeEvent, NodeName};

use super::process::unique_name;

/// A node listening on 127.0.0.1 (not in EPMD) with these listener limits and `cookie`.
pub async fn limited_server(limits: ListenerLimits, cookie: &str) -> autocluster::Node {
    autocluster::Node::builder(
        format!("{}@localhost", unique_name("srv")).parse().unwrap(),
        Cookie::new(cookie).unwrap(),
    )
    .listen("127.0.0.1:0".parse().unwrap())
    .register_in_epmd(false)
    .limits(limits)
    .start()
    .await
    .unwrap()
}

/// Why the connection to `peer` went down, from `events`; panics when it does not
/// within `within`.
pub async fn down_reason(
    events: &mut tokio::sync::broadcast::Receiver<NodeEvent>,
    peer: &NodeName,
    within: Duration,
) -> DisconnectReason {
    tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(NodeEvent::Down { node, reason }) if node == *peer => return reason,
                Ok(_) => {}
                Err(e) => panic!("node events: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the connection to {peer} did not go down within {within:?}"))
}

/// A raw connection from `me` to the listening `server`, through a real handshake with
/// `cookie`; the test writes the frames that follow by hand. `recv_buffer` sets the
/// socket's receive buffer first (small: what the node sends backs up quickly).
pub async fn raw_peer(
    server: &autocluster::Node,
    me: &NodeName,
    cookie: &str,
    recv_buffer: Option<u32>,
) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let mut stream = socket.connect(server.local_addr().unwrap()).await.unwrap();
    autocluster::handshake::initiate(
        &mut stream,
        autocluster::handshake::LengthPrefix::U16,
        super::initiator_config(me, server, cookie),
        Duration::from_secs(5),
        || true,
    )
    .await
    .expect("handshake");
    stream
}
