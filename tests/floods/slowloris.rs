//! Slowloris floods (each client sends a byte or half a message and stalls) against the
//! embedded EPMD and the distribution listener, while well-behaved clients keep coming.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use autocluster::epmd::{EpmdClient, EpmdServer, EpmdServerConfig, NodeEntry};
use autocluster::listener::ListenerLimits;
use autocluster::{Cookie, Node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::abusive::connect_from_flood_address;
use crate::common::{limited_server, rss_kib, unique_name};

const COOKIE: &str = "autocluster_test_cookie";

/// 5,000 slowloris clients from 127.0.0.2 (each sends one byte of a request and stalls)
/// while well-behaved clients keep asking from 127.0.0.1: every good request is answered
/// (within the client's timeout, half the pending timeout, so not by waiting for stalled
/// connections to time out), the server never holds more than its pending limit, and
/// every slow connection is closed (evicted by newer connections or at the pending
/// timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_slow_clients_does_not_lock_out_good_ones() {
    let _alone = crate::common::flood_alone().await;
    const SLOW: usize = 5_000;
    let limits = ListenerLimits {
        idle_timeout: Duration::from_secs(3),
        ..ListenerLimits::default()
    };
    // The flood's address holds at most its per-source share; the good client, one
    // connection at a time, adds at most one.
    let max_pending = limits.max_pending_per_source + 1;
    let server = EpmdServer::bind(EpmdServerConfig {
        limits,
        ..EpmdServerConfig::localhost(0)
    })
    .await
    .unwrap();
    let addr = server.local_addrs()[0];
    assert_eq!(addr.ip(), std::net::Ipv4Addr::LOCALHOST);
    let good = EpmdClient::new(addr).with_timeout(Duration::from_millis(1500));
    let name = unique_name("flood");
    let _registration = good.register(NodeEntry::new(&name, 45500)).await.unwrap();
    let rss_before = rss_kib();

    // The flood, from its own thread and runtime as an attacker process would be: connect
    // in waves of 250, each connection sends one byte and stalls. The sockets are handed
    // back as std sockets to be checked afterwards.
    let flood = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("flood runtime");
        runtime.block_on(async move {
            let mut slow = Vec::with_capacity(SLOW);
            while slow.len() < SLOW {
                let wave: Vec<_> = (0..250)
                    .map(|_| {
                        tokio::spawn(async move {
                            let mut s = connect_from_flood_address(addr).await.ok()?;
                            s.write_all(&[0]).await.ok()?;
                            s.into_std().ok()
                        })
                    })
                    .collect();
                for task in wave {
                    if let Ok(Some(s)) = task.await {
                        slow.push(s);
                    }
                }
            }
            slow
        })
    });

    // Good clients all along (on a thread of their own, as another process), and the
    // server's pending count sampled.
    let flooding = Arc::new(AtomicBool::new(true));
    let clients = {
        let name = name.clone();
        let good = good.clone();
        crate::abusive::well_behaved(
            move || {
                let good = good.clone();
                let name = name.clone();
                async move {
                    let found = good
                        .port_please(&name)
                        .await
                        .map_err(|e| format!("PORT_PLEASE2: {e}"))?;
                    if found.as_ref().map(|e| e.port) != Some(45500) {
                        return Err(format!("PORT_PLEASE2 found {found:?}"));
                    }
                    let names = good.names().await.map_err(|e| format!("NAMES: {e}"))?;
                    if names != vec![(name.clone(), 45500)] {
                        return Err(format!("NAMES answered {names:?}"));
                    }
                    Ok(())
                }
            },
            flooding.clone(),
        )
    };
    let mut max_seen_pending = 0;
    while !flood.is_finished() && !clients.is_finished() {
        max_seen_pending = max_seen_pending.max(server.stats().pending);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    flooding.store(false, Ordering::SeqCst);
    let latencies = clients
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("good client failed during the flood: {e}"));
    let slow = flood.join().expect("the flood thread");
    assert_eq!(slow.len(), SLOW);
    let mut slow: Vec<TcpStream> = slow
        .into_iter()
        .map(|s| TcpStream::from_std(s).expect("register with this runtime"))
        .collect();
    let stats = server.stats();
    assert!(
        max_seen_pending <= max_pending,
        "{max_seen_pending} pending"
    );
    assert!(stats.pending <= max_pending, "{stats:?}");
    assert_eq!(stats.established, 1, "only the registration: {stats:?}");
    let worst = latencies.iter().max().copied().unwrap_or_default();
    assert!(
        latencies.len() >= 5,
        "only {} good requests",
        latencies.len()
    );
    let rss_growth_mib = rss_kib().saturating_sub(rss_before) / 1024;
    assert!(
        rss_growth_mib < 256,
        "memory grew by {rss_growth_mib} MiB (client and server sockets together)"
    );

    // Every slow connection is closed by the pending timeout at the latest.
    let deadline = Instant::now() + Duration::from_secs(3) + Duration::from_secs(2);
    let mut buf = [0u8; 16];
    for (i, s) in slow.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("slow connection {i} got {n} bytes"),
            Err(_) => panic!("slow connection {i} still open after the timeout"),
        }
    }
    let stats = server.stats();
    assert_eq!(stats.pending, 0, "{stats:?}");
    assert!(stats.evicted + stats.timed_out >= SLOW as u64, "{stats:?}");
    // And the registration survived it all.
    assert_eq!(
        good.port_please(&name).await.unwrap().map(|e| e.port),
        Some(45500)
    );
    eprintln!(
        "flood: {} good requests, worst {worst:?}; {stats:?}; rss +{rss_growth_mib} MiB",
        latencies.len()
    );
}

/// 5,000 slowloris clients from another address (127.0.0.2) against the distribution
/// listener (each sends half a `send_name` and stalls) while well-behaved nodes keep
/// connecting from 127.0.0.1: the flood's connections make room for each other (the
/// per-source pending limit), so every good handshake completes (within the handshake
/// timeout), the listener never holds more than its pending limit, and every slow
/// connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acceptor_serves_good_nodes_during_a_slowloris_flood() {
    let _alone = crate::common::flood_alone().await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SLOW: usize = 5_000;
    let limits = autocluster::listener::ListenerLimits {
        idle_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    // The flood's address holds at most its per-source share; the good client, one
    // connection at a time, adds at most one.
    let max_pending = limits.max_pending_per_source + 1;
    let server = limited_server(limits, COOKIE).await;
    let addr = server.local_addr().unwrap();
    let flood = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut slow = Vec::with_capacity(SLOW);
            while slow.len() < SLOW {
                let wave: Vec<_> = (0..250)
                    .map(|_| {
                        tokio::spawn(async move {
                            let socket = tokio::net::TcpSocket::new_v4().ok()?;
                            socket.bind("127.0.0.2:0".parse().unwrap()).ok()?;
                            let mut s = socket.connect(addr).await.ok()?;
                            s.write_all(&[0, 40, b'N', 0, 0]).await.ok()?;
                            s.into_std().ok()
                        })
                    })
                    .collect();
                for task in wave {
                    if let Ok(Some(s)) = task.await {
                        slow.push(s);
                    }
                }
            }
            slow
        })
    });
    let mut worst = Duration::ZERO;
    let mut good = 0;
    let mut max_seen_pending = 0;
    // Until the flood is over, and at least 5 times: on a loaded machine the flood can
    // end first, while its 5,000 stalled connections are still open and pending.
    while !flood.is_finished() || good < 5 {
        let client = Node::builder(
            format!("{}@localhost", unique_name("good"))
                .parse()
                .unwrap(),
            Cookie::new(COOKIE).unwrap(),
        )
        .start()
        .await
        .unwrap();
        let started = Instant::now();
        client
            .connect_to(server.name(), addr)
            .await
            .unwrap_or_else(|e| panic!("a good node failed during the flood: {e}"));
        worst = worst.max(started.elapsed());
        good += 1;
        max_seen_pending = max_seen_pending.max(server.listener_stats().unwrap().pending);
        client.shutdown().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let slow = flood.join().unwrap();
    assert!(good >= 5, "only {good} good handshakes");
    assert!(
        max_seen_pending <= max_pending,
        "{max_seen_pending} pending"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 16];
    for (i, s) in slow.into_iter().enumerate() {
        let mut s = tokio::net::TcpStream::from_std(s).unwrap();
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("slow connection {i} got {n} bytes"),
            Err(_) => panic!("slow connection {i} still open after the timeout"),
        }
    }
    let stats = server.listener_stats().unwrap();
    assert_eq!(stats.pending, 0, "{stats:?}");
    // Every slow connection was admitted, then evicted by a newer one or timed out.
    assert!(stats.evicted + stats.timed_out >= SLOW as u64, "{stats:?}");
    eprintln!("dist flood: {good} good handshakes, worst {worst:?}; {stats:?}");
}
