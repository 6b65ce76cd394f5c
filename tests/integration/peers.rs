//! The peer environment is the one the run names (`AUTOCLUSTER_PEERS`, see
//! `common::env`), and what the crate negotiates with it.

use std::time::Duration;

use autocluster::handshake::DistFlags;
use autocluster::term::parse_term;
use autocluster::{Cookie, Node, NodeName, Term};

use crate::common::{Epmd, ErlNode, ErlOptions, peers, unique_name};

#[tokio::test(flavor = "multi_thread")]
async fn the_erl_nodes_run_the_environments_otp_release() {
    let epmd = Epmd::start().await;
    let mut erl = ErlNode::start(ErlOptions::new(epmd.port())).await;
    let release = erl.eval("erlang:system_info(otp_release)").await;
    assert_eq!(
        release,
        format!("\"{}\"", peers().otp_release()),
        "in {}",
        peers().name()
    );
}

/// The flags of the connection with a real node: the mandatory ones, and none that
/// the crate cannot honour (OTP 28's ALTACT_SIG, bit 37, and OTP 29's NATIVE_RECORDS,
/// bit 38, whose messages and terms it does not handle), whatever the peer offers.
#[tokio::test(flavor = "multi_thread")]
async fn negotiated_flags_hold_the_mandatory_set_and_nothing_unhandled() {
    const ALTACT_SIG: u64 = 1 << 37;
    const NATIVE_RECORDS: u64 = 1 << 38;
    assert_eq!(DistFlags::OURS.bits() & (ALTACT_SIG | NATIVE_RECORDS), 0);
    let epmd = Epmd::start().await;
    let mut erl = ErlNode::start(ErlOptions::new(epmd.port())).await;
    let peer: NodeName = erl.name().parse().unwrap();
    let host = erl.name().split_once('@').unwrap().1.to_owned();
    let node = Node::builder(
        format!("{}@{host}", unique_name("flags")).parse().unwrap(),
        Cookie::new("autocluster_test_cookie").unwrap(),
    )
    .epmd_port(epmd.port())
    .start()
    .await
    .unwrap();
    // Terms both ways over the connection: maps, big integers, binaries, floats.
    let sent =
        parse_term("[#{a => <<1,2,3>>, {b} => [1.5, 123456789012345678901234567890]}, x]").unwrap();
    let echoed = node
        .call(
            &peer,
            "erlang",
            "list_to_tuple",
            vec![sent.clone()],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(Term::List(echoed.as_tuple().unwrap().to_vec()), sent);
    let info = node.connection_info(&peer).expect("connected");
    let flags = info.flags.bits();
    assert_eq!(flags & (ALTACT_SIG | NATIVE_RECORDS), 0, "{}", info.flags);
    assert!(info.flags.contains(DistFlags::REQUIRED), "{}", info.flags);
    // And the peer sees the same connection: it answers a ping over it.
    let ping = erl.eval(&format!("net_adm:ping('{}')", node.name())).await;
    assert_eq!(ping, "pong");
    node.shutdown().await;
}
