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
