//! Benchmark 6 (per idle connection; the per-registered-node figure comes from the
//! 1,000-node formation in `formation.rs`): resident memory an accepting node pays for
//! each idle distribution connection.
//!
//! The acceptor is a listening `Node` in this process, or an `erl` node for comparison;
//! 1,000 client nodes in a child process (this binary again, `--role initiators`)
//! connect to it and stay idle. The acceptor's VmRSS before and after, divided by the
//! number of connections. Under `cargo test`, 20 connections to our node only.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use autocluster::{Cookie, Node, NodeName};
use common::{COOKIE, Epmd, ErlNode, ErlOptions, Results, Settings, process_rss_kib, progress};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--role") {
        // The child: --role initiators PEER ADDR COUNT
        let peer: NodeName = args[i + 2].parse().expect("peer");
        let addr: SocketAddr = args[i + 3].parse().expect("addr");
        let count: usize = args[i + 4].parse().expect("count");
        common::runtime(2).block_on(initiators(peer, addr, count));
        return;
    }
    let settings = Settings::from_env();
    progress("memory: starting");
    common::runtime(2).block_on(run(settings));
}

/// The child: `count` client nodes, one connection each, idle until stdin closes.
async fn initiators(peer: NodeName, addr: SocketAddr, count: usize) {
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        let name = NodeName::from_parts(&format!("idle{i}_{}", std::process::id()), peer.host())
            .expect("name");
        let node = Node::builder(name, Cookie::new(COOKIE).unwrap())
            .start()
            .await
            .expect("client node");
        node.connect_to(&peer, addr).await.expect("connect");
        nodes.push(node);
    }
    println!("READY");
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    drop(nodes);
}

/// Connects `count` idle client nodes (in a child process) to `peer` at `addr`; returns
/// the RSS of `acceptor_pid` before and after.
async fn measure(peer: &NodeName, addr: SocketAddr, count: usize, acceptor_pid: u32) -> (u64, u64) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = process_rss_kib(acceptor_pid);
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--role",
            "initiators",
            peer.as_str(),
            &addr.to_string(),
            &count.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the initiators");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = tokio::time::timeout(Duration::from_secs(300), lines.next_line())
        .await
        .expect("the initiators did not connect within 300 s")
        .expect("read");
    assert_eq!(ready.as_deref(), Some("READY"), "the initiators failed");
    // Let both sides settle (the first ticks, allocator caches).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = process_rss_kib(acceptor_pid);
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    (before, after)
}

async fn run(settings: Settings) {
    let mut results = Results::new("memory");
    let count = if settings.bench { 1000 } else { 20 };
    // Ours, in this process.
    let ours = Node::builder(
        NodeName::from_parts(&format!("mem_acceptor_{}", std::process::id()), "localhost").unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .listen("127.0.0.1:0".parse().unwrap())
    .register_in_epmd(false)
    .limits(autocluster::listener::ListenerLimits {
        max_connections: 4096,
        max_per_source: 4096,
        ..Default::default()
    })
    .start()
    .await
    .expect("our acceptor");
    let addr = ours.local_addr().expect("listening");
    progress(format!("{count} idle connections to our node"));
    let (before, after) = measure(ours.name(), addr, count, std::process::id()).await;
    record(
        &mut results,
        "ours (autocluster Node)",
        count,
        before,
        after,
    );
    ours.shutdown().await;

    if settings.bench {
        let epmd = Epmd::start().await;
        let mut erl = ErlNode::start(
            ErlOptions::new(epmd.port())
                .name_prefix("mem_acceptor")
                .cookie(COOKIE),
        )
        .await;
        let port = erl.dist_port().await;
        let peer: NodeName = erl.name().parse().expect("name");
        progress(format!("{count} idle connections to an erl node"));
        let (before, after) = measure(
            &peer,
            SocketAddr::from(([127, 0, 0, 1], port)),
            count,
            erl.pid(),
        )
        .await;
        record(&mut results, "OTP 25 (`erl` node)", count, before, after);
    }
    results.write(&settings);
}

fn record(results: &mut Results, which: &str, count: usize, before: u64, after: u64) {
    let per = after.saturating_sub(before) as f64 / count as f64;
    progress(format!(
        "  {which}: RSS {before} KiB -> {after} KiB: {per:.1} KiB per idle connection"
    ));
    results.record(json!({
        "impl": which,
        "connections": count,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "per_connection_kib": per,
    }));
}
