//! # autocluster
//!
//! Discover the nodes of an Erlang or RabbitMQ cluster and form them into one cluster,
//! from Rust, speaking the Erlang distribution protocol natively: no Erlang runtime in
//! the tool and no `rabbitmqctl` shell-outs.
//!
//! The crate is built in layers. Every wire format (EPMD, the distribution handshake,
//! frames, terms) is parsed and built by pure code with no sockets, so each parser can be
//! unit-tested and fuzzed; a thin tokio layer drives them.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

pub mod backend;
pub mod cookie;
pub mod dist;
pub mod epmd;
mod fault;
pub mod formation;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod health;
pub mod listener;
pub mod node;
pub mod node_name;
pub mod rpc;
pub mod term;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;
pub mod wire;

pub use cookie::{Cookie, CookieError};
pub use fault::Fault;
pub use node::{Mailbox, Node, NodeEvent};
pub use node_name::{NameKind, NodeName, NodeNameError};
pub use term::{Atom, Pid, Port, Reference, Term};

/// The README's Rust examples, compiled as doc tests so that they stay true.
#[cfg(all(doctest, feature = "etcd", feature = "tls"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(test)]
mod layout_tests;

/// Helpers shared by the unit tests.
#[cfg(test)]
mod test_support {
    /// A current-thread runtime with timers, its clock paused or real.
    pub(crate) fn runtime(paused: bool) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(paused)
            .build()
            .unwrap()
    }
}
