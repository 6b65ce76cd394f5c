//! Integration tests against real peers: `epmd`, `erl` nodes, etcd, RabbitMQ, dnsmasq.
//!
//! Every peer is started by the harness in `common` on loopback with free ports and
//! temporary directories, and killed when the test ends, pass or fail. A missing binary
//! fails the test with the package to install; nothing is skipped.

mod agent_cli;
mod common;
mod conformance;
mod consul_backend;
mod deploy;
mod dns_backend;
mod epmd;
mod etcd_backend;
mod formation;
mod hostile;
mod interop;
mod kubernetes_backend;
mod node;
mod out_of_tree_backend;
mod peers;
mod rabbitmq_etcd;
mod rabbitmq_example;
mod rabbitmq_first_boot;
mod rabbitmq_formation;
mod rabbitmq_safety;
mod secrets;
mod term_text;
#[cfg(feature = "tls")]
mod tls;
