//! Floods of abusive clients against the embedded EPMD and the distribution acceptor,
//! mixing garbage, truncated requests, giant lengths, silence and trickling, thousands of
//! connections at once: well-behaved clients keep being served, memory stays bounded,
//! every abusive connection is closed (by an error at once, or by the pending timeout).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use autocluster::epmd::{EpmdClient, EpmdServer, EpmdServerConfig, NodeEntry};
use autocluster::listener::ListenerLimits;
use autocluster::{Cookie, Node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Epmd, ErlNode, ErlOptions, rss_kib, unique_name};

const COOKIE: &str = "autocluster_test_cookie";

/// What an abusive client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abuse {
    /// A plausible length, then bytes that are no request at all.
    Garbage,
    /// The start of a real request, then nothing.
    Truncated,
    /// A length far beyond any limit, then a stream of junk.
    Giant,
    /// Connects and sends nothing (slowloris).
    Silent,
    /// One byte every 300 ms, forever.
    Trickle,
}

const ABUSES: [Abuse; 5] = [
    Abuse::Garbage,
    Abuse::Truncated,
    Abuse::Giant,
    Abuse::Silent,
    Abuse::Trickle,
];

/// The bytes each abuse starts with, for EPMD (`Len:16 | Request`) and for the
/// handshake (`Len:16 | Message`).
fn opening(abuse: Abuse, epmd: bool, i: usize) -> Vec<u8> {
    let junk: Vec<u8> = (0..(8 + i % 40))
        .map(|k| (k as u8).wrapping_mul(151).wrapping_add(i as u8))
        .collect();
    match abuse {
        Abuse::Garbage => {
            // A tag that is no request (EPMD) and no handshake message ('Z').
            let mut v = vec![0, junk.len() as u8 + 1, if epmd { 0xee } else { b'Z' }];
            v.extend(&junk);
            v
        }
        Abuse::Truncated if epmd => vec![0, 20, 122, b'r', b'a'], // PORT_PLEASE2 "ra..."
        Abuse::Truncated => vec![0, 40, b'N', 0, 0],              // half a send_name
        Abuse::Giant => {
            let mut v = vec![0xff, 0xff];
            v.extend(&junk);
            v
        }
        Abuse::Silent | Abuse::Trickle => Vec::new(),
    }
}

/// One abusive client: returns how long the server took to close the connection, or
/// why it is a failure.
async fn abuse(
    addr: SocketAddr,
    kind: Abuse,
    epmd: bool,
    i: usize,
    bound: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut s = connect_from_flood_address(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let first = opening(kind, epmd, i);
    if !first.is_empty() {
        // The server may close before all of it is written.
        let _ = s.write_all(&first).await;
    }
    let (mut r, mut w) = s.into_split();
    let trickle = async move {
        if kind == Abuse::Trickle {
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if w.write_all(&[0]).await.is_err() {
                    break;
                }
            }
        } else if kind == Abuse::Giant {
            // Keep pushing junk: the server must not buffer it.
            let junk = vec![b'x'; 64 * 1024];
            for _ in 0..16 {
                if w.write_all(&junk).await.is_err() {
                    break;
                }
            }
            std::future::pending::<()>().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let closed = async {
        let mut buf = [0u8; 256];
        let mut got = 0usize;
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got += n,
            }
        }
    };
    tokio::select! {
        got = tokio::time::timeout(bound, closed) => match got {
            Ok(0) => Ok(started.elapsed()),
            Ok(n) => Err(format!("{kind:?}: the server answered {n} bytes")),
            Err(_) => Err(format!("{kind:?}: still open after {bound:?}")),
        },
        () = trickle => Err("unreachable".into()),
    }
}

/// Connects to `addr` from 127.0.0.2, the floods' own address: a listener's per-source
/// pending limit keeps a flood from evicting the good clients, which connect from
/// 127.0.0.1 (a connection that shares its address with a flood can lose its slot before
/// its first request is read; see docs/security.md).
pub async fn connect_from_flood_address(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind("127.0.0.2:0".parse().expect("an address"))?;
    socket.connect(addr).await
}

/// Runs `total` abusive clients in waves of `wave` (all held open together), while
/// `good` runs; returns every client's result and the good client's latencies.
async fn flood<G, Fut>(
    addr: SocketAddr,
    epmd: bool,
    total: usize,
    wave: usize,
    bound: Duration,
    good: G,
) -> (Vec<(Abuse, Result<Duration, String>)>, Vec<Duration>)
where
    G: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    // The abusers run on a runtime of their own, as another process would.
    let abusers = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut tasks = Vec::with_capacity(total);
            for i in 0..total {
                let kind = ABUSES[i % ABUSES.len()];
                tasks.push(tokio::spawn(async move {
                    (kind, abuse(addr, kind, epmd, i, bound).await)
                }));
                if i % wave == wave - 1 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let mut out = Vec::with_capacity(total);
            for t in tasks {
                out.push(t.await.expect("abuser task"));
            }
            out
        })
    });
    let flooding = Arc::new(AtomicBool::new(true));
    let good = well_behaved(good, flooding.clone());
    while !abusers.is_finished() && !good.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flooding.store(false, Ordering::SeqCst);
    let latencies = good
        .join()
        .expect("well-behaved clients")
        .unwrap_or_else(|e| panic!("a well-behaved client failed during the flood: {e}"));
    (abusers.join().expect("abusers"), latencies)
}

/// Runs `good` again and again while `flooding`, and at least 5 times, on a thread and
/// runtime of its own, as another process would (not behind the server's work in the
/// test's runtime); returns the latencies, or the first failure.
pub fn well_behaved<G, Fut>(
    mut good: G,
    flooding: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<Vec<Duration>, String>>
where
    G: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut latencies = Vec::new();
            while flooding.load(Ordering::SeqCst) || latencies.len() < 5 {
                let started = Instant::now();
                good().await?;
                latencies.push(started.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(latencies)
        })
    })
}

fn check_flood(what: &str, results: &[(Abuse, Result<Duration, String>)], latencies: &[Duration]) {
    let failures: Vec<&String> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    assert!(
        failures.is_empty(),
        "{what}: {} of {} abusive connections misbehaved, e.g. {:?}",
        failures.len(),
        results.len(),
        &failures[..failures.len().min(5)]
    );
    for kind in ABUSES {
        let times: Vec<Duration> = results
            .iter()
            .filter(|(k, _)| *k == kind)
            .filter_map(|(_, r)| r.as_ref().ok().copied())
            .collect();
        let worst = times.iter().max().copied().unwrap_or_default();
        eprintln!(
            "{what}: {kind:?}: {} closed, the slowest after {worst:?}",
            times.len()
        );
    }
    assert!(
        latencies.len() >= 5,
        "{what}: only {} good requests",
        latencies.len()
    );
    let worst = latencies.iter().max().copied().unwrap_or_default();
    eprintln!("{what}: {} good requests, worst {worst:?}", latencies.len());
}

/// 3,000 abusive clients against the embedded EPMD, at most about 3,000 open at once:
/// garbage, truncated requests, giant lengths, silence and trickling, from 127.0.0.2. Good
/// clients (from 127.0.0.1) are answered all along, memory stays bounded, and every abusive
/// connection is closed, garbage and giant lengths at once, the rest by the pending
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_epmd_outlasts_a_mixed_flood_of_abusive_clients() {
    let _alone = crate::common::flood_alone().await;
    let idle = Duration::from_secs(2);
    let server = EpmdServer::bind(EpmdServerConfig {
        limits: ListenerLimits {
            idle_timeout: idle,
            ..ListenerLimits::default()
        },
        ..EpmdServerConfig::localhost(0)
    })
    .await
    .unwrap();
    let addr = server.local_addrs()[0];
    let good = EpmdClient::new(addr);
    let name = unique_name("good");
    let _registration = good.register(NodeEntry::new(&name, 45600)).await.unwrap();
    let rss_before = rss_kib();
    let (results, latencies) = flood(addr, true, 3_000, 200, idle + Duration::from_secs(3), {
        let (good, name) = (good.clone(), name.clone());
        move || {
            let good = good.clone();
            let name = name.clone();
            async move {
                let found = good.port_please(&name).await.map_err(|e| e.to_string())?;
                if found.map(|e| e.port) != Some(45600) {
                    return Err("the registration is gone".into());
                }
                good.names().await.map_err(|e| e.to_string())?;
                Ok(())
            }
        }
    })
    .await;
    check_flood("epmd", &results, &latencies);
    for (kind, r) in &results {
        if matches!(kind, Abuse::Garbage | Abuse::Giant) {
            let after = r.as_ref().unwrap();
            assert!(
                *after < Duration::from_secs(1) + idle,
                "{kind:?} closed after {after:?}"
            );
        }
    }
    let growth = rss_kib().saturating_sub(rss_before) / 1024;
    assert!(growth < 200, "memory grew by {growth} MiB");
    let stats = server.stats();
    assert_eq!(stats.pending, 0, "{stats:?}");
    assert_eq!(stats.established, 1, "{stats:?}");
    assert_eq!(
        good.port_please(&name).await.unwrap().map(|e| e.port),
        Some(45600)
    );
    eprintln!("epmd: {stats:?}; rss +{growth} MiB");
}

/// The same mix against the distribution acceptor while fresh nodes keep handshaking
/// with it (and a real `erl` node pings it before and after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acceptor_outlasts_a_mixed_flood_of_abusive_clients() {
    let _alone = crate::common::flood_alone().await;
    let idle = Duration::from_secs(2);
    let epmd = Epmd::start().await;
    let server = Node::builder(
        format!("{}@localhost", unique_name("srv")).parse().unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .epmd_port(epmd.port())
    .listen("127.0.0.1:0".parse().unwrap())
    .limits(ListenerLimits {
        idle_timeout: idle,
        ..ListenerLimits::default()
    })
    .start()
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    let mut erl = ErlNode::start(ErlOptions::new(epmd.port())).await;
    let ping = format!("net_adm:ping('{}')", server.name());
    assert_eq!(erl.eval(&ping).await, "pong");
    let rss_before = rss_kib();
    let target = server.name().clone();
    let (results, latencies) = flood(addr, false, 3_000, 200, idle + Duration::from_secs(3), {
        let target = target.clone();
        move || {
            let target = target.clone();
            async move {
                let client = Node::builder(
                    format!("{}@localhost", unique_name("good"))
                        .parse()
                        .unwrap(),
                    Cookie::new(COOKIE).unwrap(),
                )
                .start()
                .await
                .map_err(|e| e.to_string())?;
                let r = client
                    .connect_to(&target, addr)
                    .await
                    .map_err(|e| e.to_string());
                client.shutdown().await;
                r
            }
        }
    })
    .await;
    check_flood("acceptor", &results, &latencies);
    let growth = rss_kib().saturating_sub(rss_before) / 1024;
    assert!(growth < 200, "memory grew by {growth} MiB");
    let stats = server.listener_stats().unwrap();
    assert_eq!(stats.pending, 0, "{stats:?}");
    erl.eval(&format!("erlang:disconnect_node('{}')", server.name()))
        .await;
    assert_eq!(erl.eval(&ping).await, "pong");
    eprintln!("acceptor: {stats:?}; rss +{growth} MiB");
}
