//! Handshakes driven by hand, for tests that stop or cut them at a chosen step.

use autocluster::handshake::{DistFlags, InitiatorConfig, LocalName};
use autocluster::{Cookie, Node, NodeName};

/// The initiator's configuration for a handshake from `me` to `server` with `cookie`:
/// our usual flags, a fixed creation.
pub fn initiator_config(me: &NodeName, server: &Node, cookie: &str) -> InitiatorConfig {
    InitiatorConfig {
        local: LocalName::Static(me.clone()),
        creation: 7,
        flags: DistFlags::OURS,
        required: DistFlags::REQUIRED,
        cookie: Cookie::new(cookie).expect("a valid cookie"),
        peer: server.name().clone(),
    }
}
