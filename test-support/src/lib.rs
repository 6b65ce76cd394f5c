//! autocluster's test harness, shared by the integration tests, the flood tests and the
//! benchmarks: starts real peers and cleans them up.
//!
//! * [`free_port`], [`unique_name`]: per-test ports and names, so tests run in parallel.
//! * [`Epmd::start`]: a real `epmd -port P` child, killed on drop; [`epmd_cli`] runs the
//!   `epmd` command-line client (`-names`, `-kill`, `-stop N`) against any port.
//! * [`ErlNode::start`]: a real `erl` node (options: cookie, long names, IPv6
//!   distribution, extra arguments) registered with the EPMD on `ErlOptions::epmd_port`,
//!   with [`ErlNode::eval`] to run Erlang expressions on it; killed with its process group
//!   on drop.
//! * [`EtcdServer::start`]: a real etcd on free loopback ports with a temporary data
//!   directory, killed on drop, with `stop`/`restart` for outages and `etcdctl`;
//!   [`FakeServer`]: endpoints that hang or answer garbage.
//! * [`RabbitNode::start`]: a real RabbitMQ node (config lines, enabled plugins, own EPMD,
//!   cookie), booted and awaited, with `eval`/`rabbitmqctl`, `stop`/`kill`, cleaned up on drop.
//! * [`ConsulServer`], [`KubeServer`]: in-test Consul and Kubernetes API servers that
//!   follow the official API documents (each names its sources), over [`HttpFake`], which
//!   can stop, restart and misbehave ([`Misbehave`]).
//! * [`Dnsmasq::start`]: a real dnsmasq serving test A/AAAA/PTR/SRV records on a free
//!   loopback port, killed on drop.
//! * [`initiator_config`]: the initiator's side of a handshake driven by hand.
//! * [`capture_logs`]: everything the crate logs, at TRACE level, into a buffer.

mod consul;
mod dnsmasq;
mod env;
mod epmd;
mod erl;
mod etcd;
mod handshake;
mod hooked;
mod http_fake;
mod kube;
mod logs;
mod nodes;
mod pki;
mod process;
mod rabbit;

pub use consul::{ConsulOptions, ConsulServer, UnknownCheck};
pub use dnsmasq::Dnsmasq;
pub use env::{PeerEnv, peers};
pub use epmd::{Epmd, epmd_cli};
pub use erl::{ErlNode, ErlOptions};
pub use etcd::{EtcdServer, Fake, FakeServer, TestCerts};
pub use handshake::initiator_config;
pub use hooked::Hooked;
pub use http_fake::{HttpFake, Misbehave};
pub use kube::{KubeServer, TestEndpoint};
pub use logs::{LogBuffer, capture_logs};
pub use nodes::{down_reason, limited_server, raw_peer};
pub use pki::{Pki, set_private, short_hostname};
pub use process::{
    OutputLog, descendants, example, flood_alone, free_port, kill_process_group, kill_process_tree,
    require_binary, rss_kib, unique_name,
};
pub use rabbit::{RabbitNode, RabbitOptions};
