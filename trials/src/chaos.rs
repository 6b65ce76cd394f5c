//! Dropped handshakes: an EPMD in front of the real one that, while chaos is on, answers
//! `PORT_PLEASE2` with the port of a TCP proxy instead of the node's own port; the proxy
//! cuts some connections in the middle of their distribution handshake.
//!
//! Registrations (`ALIVE2`) and everything else are passed through to the backing EPMD
//! byte for byte, so nodes (real `erl` and Rust-native alike) register as usual. With
//! chaos off, lookups answer the node's real port and nothing is proxied.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autocluster::epmd::EpmdClient;
use autocluster::epmd::codec::{PortPlease2Response, Request};
use autocluster::wire::Status;
use rand::{RngExt as _, SeedableRng as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How often connections are cut, and counters of what was done.
#[derive(Debug, Default)]
pub struct ChaosState {
    on: AtomicBool,
    /// Cut probability in per mille.
    per_mille: AtomicU64,
    seed: AtomicU64,
    /// Connections proxied.
    pub proxied: AtomicU64,
    /// Connections cut mid-handshake.
    pub cut: AtomicU64,
}

impl ChaosState {
    /// Turns chaos on (cutting `probability` of the connections) or off.
    pub fn set(&self, on: bool, probability: f64, seed: u64) {
        self.per_mille.store(
            (probability.clamp(0.0, 1.0) * 1000.0) as u64,
            Ordering::SeqCst,
        );
        self.seed.store(seed, Ordering::SeqCst);
        self.on.store(on, Ordering::SeqCst);
    }

    /// (proxied, cut) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.proxied.load(Ordering::SeqCst),
            self.cut.load(Ordering::SeqCst),
        )
    }
}

/// The interposing EPMD and its proxies.
pub struct ChaosEpmd {
    port: u16,
    /// Shared state: turn chaos on and off, read the counters.
    pub state: Arc<ChaosState>,
    tasks: Vec<JoinHandle<()>>,
}

struct Shared {
    backing: SocketAddr,
    state: Arc<ChaosState>,
    /// Real distribution port → proxy port.
    proxies: Mutex<HashMap<u16, u16>>,
    next_conn: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl ChaosEpmd {
    /// Starts it on a free loopback port in front of the EPMD at `backing`.
    pub async fn start(backing: SocketAddr) -> Result<ChaosEpmd, String> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .map_err(|e| format!("chaos EPMD: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let state = Arc::new(ChaosState::default());
        let shared = Arc::new(Shared {
            backing,
            state: state.clone(),
            proxies: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = serve_epmd(socket, &shared).await;
                });
            }
        });
        Ok(ChaosEpmd {
            port,
            state,
            tasks: vec![task],
        })
    }

    /// Its port (give it to nodes as their EPMD port).
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for ChaosEpmd {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn serve_epmd(mut socket: TcpStream, shared: &Arc<Shared>) -> std::io::Result<()> {
    // Read the first request whole.
    let mut buf = Vec::with_capacity(64);
    let request = loop {
        let mut chunk = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        match Request::decode(&buf) {
            Ok(Status::Complete((request, _))) => break request,
            Ok(Status::Partial) => continue,
            Err(_) => return Ok(()),
        }
    };
    if let Request::PortPlease2 { name } = &request
        && shared.state.on.load(Ordering::SeqCst)
    {
        let client = EpmdClient::new(shared.backing).with_timeout(Duration::from_secs(5));
        let answer = match client.port_please(name).await {
            Ok(Some(mut entry)) => {
                entry.port = proxy_for(shared, entry.port).await?;
                PortPlease2Response::Found(entry)
            }
            _ => PortPlease2Response::NotFound { result: 1 },
        };
        if let Ok(bytes) = answer.encode() {
            socket.write_all(&bytes).await?;
        }
        return Ok(());
    }
    // Anything else goes to the real EPMD, byte for byte, for as long as it lasts (an
    // ALIVE2 registration lives as long as its connection).
    let mut upstream = TcpStream::connect(shared.backing).await?;
    upstream.write_all(&buf).await?;
    let _ = tokio::io::copy_bidirectional(&mut socket, &mut upstream).await;
    Ok(())
}

/// The proxy port for a node's real port, started on first use.
async fn proxy_for(shared: &Arc<Shared>, real: u16) -> std::io::Result<u16> {
    if let Some(p) = shared
        .proxies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&real)
    {
        return Ok(*p);
    }
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let port = listener.local_addr()?.port();
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, real));
    let s = shared.clone();
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let _ = proxy(client, target, &s).await;
            });
        }
    });
    let mut proxies = shared.proxies.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = proxies.get(&real) {
        // Lost a race: keep the first proxy.
        task.abort();
        return Ok(*p);
    }
    proxies.insert(real, port);
    shared
        .tasks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(task);
    Ok(port)
}

/// Forwards one connection; when chaos picks it, cuts it (both ways, at once) after a
/// random number of bytes inside the handshake (0 = at accept).
async fn proxy(mut client: TcpStream, target: SocketAddr, s: &Shared) -> std::io::Result<()> {
    let n = s.next_conn.fetch_add(1, Ordering::SeqCst);
    s.state.proxied.fetch_add(1, Ordering::SeqCst);
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        s.state.seed.load(Ordering::SeqCst) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    let on = s.state.on.load(Ordering::SeqCst);
    let cut_at: Option<usize> = (on
        && rng.random_range(0..1000) < s.state.per_mille.load(Ordering::SeqCst))
    .then(|| rng.random_range(0..=120));
    if cut_at == Some(0) {
        s.state.cut.fetch_add(1, Ordering::SeqCst);
        return Ok(());
    }
    let mut server = TcpStream::connect(target).await?;
    let Some(limit) = cut_at else {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return Ok(());
    };
    // Count bytes both ways; cut once `limit` have passed.
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let mut passed = 0usize;
    let mut a = [0u8; 256];
    let mut b = [0u8; 256];
    loop {
        tokio::select! {
            r = cr.read(&mut a) => {
                let n = r?;
                if n == 0 { return Ok(()); }
                let take = n.min(limit - passed);
                sw.write_all(&a[..take]).await?;
                passed += take;
            }
            r = sr.read(&mut b) => {
                let n = r?;
                if n == 0 { return Ok(()); }
                let take = n.min(limit - passed);
                cw.write_all(&b[..take]).await?;
                passed += take;
            }
        }
        if passed >= limit {
            s.state.cut.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
    }
}
