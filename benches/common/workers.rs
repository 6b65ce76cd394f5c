//! The initiators every handshake benchmark runs: ours (`Node::connect` +
//! `Node::disconnect`) and erl_dist 0.8's (`ClientSideHandshake` over tokio through
//! tokio-util's compat layer, with or without its EPMD client).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use autocluster::{Cookie, Node, NodeName};
use erl_dist::handshake::{ClientSideHandshake, HandshakeStatus};
use erl_dist::node::{Creation, LocalNode};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::compat::TokioAsyncReadCompatExt;

use super::{COOKIE, Worker};

/// Our initiator: a client node that connects to `peer` and disconnects again.
pub struct Ours {
    /// The node (one name per worker).
    pub node: Node,
    /// Whom it dials.
    pub peer: NodeName,
    /// `Some(addr)`: `Node::connect_to` (no EPMD), else `Node::connect`.
    pub addr: Option<SocketAddr>,
}

impl Worker for Ours {
    async fn op(&mut self) -> Result<(), String> {
        match self.addr {
            Some(addr) => self.node.connect_to(&self.peer, addr).await,
            None => self.node.connect(&self.peer).await,
        }
        .map_err(|e| e.to_string())?;
        self.node.disconnect(&self.peer);
        Ok(())
    }
}

/// `n` of our initiators, named `<tag><i>_<pid>@<peer's host>`.
pub async fn our_workers(
    n: usize,
    peer: &NodeName,
    epmd_port: u16,
    cache: bool,
    addr: Option<SocketAddr>,
    tag: &str,
) -> Vec<Ours> {
    let host = peer.host().to_owned();
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let name = NodeName::from_parts(&format!("{tag}{i}_{}", std::process::id()), &host)
            .expect("node name");
        let node = Node::builder(name, Cookie::new(COOKIE).expect("cookie"))
            .epmd_port(epmd_port)
            .port_cache(cache)
            .start()
            .await
            .expect("start a client node");
        v.push(Ours {
            node,
            peer: peer.clone(),
            addr,
        });
    }
    v
}

/// erl_dist 0.8's initiator: EPMD lookup (unless the port is known), connect,
/// handshake, close (FIN, then wait for the peer's).
pub struct ErlDist {
    /// Its identity (hidden: erl_dist's default flags lack PUBLISHED).
    pub local: LocalNode,
    /// The peer's alive name, for EPMD.
    pub peer_alive: String,
    /// The peer's address.
    pub ip: IpAddr,
    /// EPMD's address.
    pub epmd: SocketAddr,
    /// `Some(port)`: skip EPMD.
    pub port: Option<u16>,
    /// `alive` statuses received.
    pub alive: u64,
}

impl Worker for ErlDist {
    async fn op(&mut self) -> Result<(), String> {
        let port = match self.port {
            Some(p) => p,
            None => {
                let s = TcpStream::connect(self.epmd)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = s.set_nodelay(true);
                erl_dist::epmd::EpmdClient::new(s.compat())
                    .get_node(&self.peer_alive)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("not registered")?
                    .port
            }
        };
        let s = TcpStream::connect((self.ip, port))
            .await
            .map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        let mut hs = ClientSideHandshake::new(s.compat(), self.local.clone(), COOKIE);
        let status = hs
            .execute_send_name(erl_dist::LOWEST_DISTRIBUTION_PROTOCOL_VERSION)
            .await
            .map_err(|e| e.to_string())?;
        match status {
            HandshakeStatus::Ok | HandshakeStatus::OkSimultaneous => {}
            HandshakeStatus::Alive => self.alive += 1,
            other => return Err(format!("status {other:?}")),
        }
        let (stream, _peer) = hs.execute_rest(true).await.map_err(|e| e.to_string())?;
        // Close the way our initiator does: send FIN and wait for the peer's, so that the
        // next handshake from this name does not meet the old connection (`alive`).
        let mut stream = stream.into_inner();
        let drain = async {
            stream.shutdown().await.ok()?;
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await.ok()? > 0 {}
            Some(())
        };
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), drain).await;
        Ok(())
    }
}

/// `n` erl_dist initiators named `<tag><i>_<pid>@<host>`.
pub fn erl_dist_workers(
    n: usize,
    host: &str,
    peer_alive: &str,
    epmd: SocketAddr,
    port: Option<u16>,
    tag: &str,
) -> Vec<ErlDist> {
    (0..n)
        .map(|i| {
            let name: erl_dist::node::NodeName = format!("{tag}{i}_{}@{host}", std::process::id())
                .parse()
                .expect("erl_dist node name");
            ErlDist {
                local: LocalNode::new(name, Creation::random()),
                peer_alive: peer_alive.to_owned(),
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                epmd,
                port,
                alive: 0,
            }
        })
        .collect()
}
