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

/// Declares a module that is public only to the crate's own fuzz targets (`cfg(fuzzing)`)
/// and, through the `testing` feature, its tests, benches and trial harness: codec
/// internals that are not part of the API.
macro_rules! internal_mod {
    ($(#[$meta:meta])* $name:ident) => {
        #[cfg(any(fuzzing, feature = "testing"))]
        #[doc(hidden)]
        $(#[$meta])*
        pub mod $name;
        #[cfg(not(any(fuzzing, feature = "testing")))]
        #[allow(dead_code, unreachable_pub)]
        $(#[$meta])*
        pub(crate) mod $name;
    };
}
pub(crate) use internal_mod;

pub mod backend;
pub mod conf;
pub mod cookie;
internal_mod!(dist);
pub mod epmd;
mod fault;
pub mod formation;
internal_mod!(fuzzing);
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
internal_mod!(wire);

pub use cookie::{Cookie, CookieError};
pub use fault::Fault;
pub use node::{Mailbox, Node, NodeEvent};
pub use node_name::{NameKind, NodeName, NodeNameError};
pub use term::{Atom, Pid, Port, Reference, Term};

/// The Rust examples of the README and of every chapter under `docs/`, compiled as doc
/// tests so that they stay true (`docs_tests` checks that every code block names its
/// language, so none escapes by accident).
#[cfg(all(doctest, feature = "etcd", feature = "tls"))]
mod doc_files {
    /// README.md
    #[doc = include_str!("../README.md")]
    pub struct Readme;
    /// docs/agent.md
    #[doc = include_str!("../docs/agent.md")]
    pub struct Agent;
    /// docs/backends.md
    #[doc = include_str!("../docs/backends.md")]
    pub struct Backends;
    /// docs/configuration.md
    #[doc = include_str!("../docs/configuration.md")]
    pub struct Configuration;
    /// docs/deploy.md
    #[doc = include_str!("../docs/deploy.md")]
    pub struct Deploy;
    /// docs/design.md
    #[doc = include_str!("../docs/design.md")]
    pub struct Design;
    /// docs/examples.md
    #[doc = include_str!("../docs/examples.md")]
    pub struct Examples;
    /// docs/formation.md
    #[doc = include_str!("../docs/formation.md")]
    pub struct Formation;
    /// docs/rabbitmq.md
    #[doc = include_str!("../docs/rabbitmq.md")]
    pub struct RabbitMq;
    /// docs/security.md
    #[doc = include_str!("../docs/security.md")]
    pub struct Security;
    /// docs/testing.md
    #[doc = include_str!("../docs/testing.md")]
    pub struct Testing;
}

#[cfg(test)]
mod docs_tests;
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
