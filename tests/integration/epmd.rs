//! EPMD: the crate's client against real `epmd` and `erl`, and the crate's embedded
//! server against real `erl` nodes and the real `epmd` command-line client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use autocluster::epmd::codec::{Alive2Form, NodeType, Request};
use autocluster::epmd::{EpmdClient, EpmdError, EpmdServer, EpmdServerConfig, NodeEntry};
use autocluster::listener::ListenerLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Epmd, ErlNode, ErlOptions, epmd_cli, unique_name};

const V6_LOOPBACK: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// Polls `check` every 20 ms until it holds, or panics after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not true after {within:?}");
}

async fn has_name(client: &EpmdClient, name: &str) -> bool {
    client
        .names()
        .await
        .map(|names| names.iter().any(|(n, _)| n == name))
        .unwrap_or(false)
}

async fn embedded_server() -> EpmdServer {
    EpmdServer::bind(EpmdServerConfig::localhost(0))
        .await
        .expect("embedded EPMD binds")
}

// ---------------------------------------------------------------------------------------
// The client against real epmd and erl.

#[tokio::test]
async fn registration_is_visible_in_real_epmd_and_gone_when_dropped() {
    let epmd = Epmd::start().await;
    let client = epmd.client();
    let name = unique_name("reg");
    let registration = client.register(NodeEntry::new(&name, 45123)).await.unwrap();
    assert!(registration.is_active());
    // OTP 23+ epmd answers a version-6 registration with ALIVE2_X_RESP, never 0..=3.
    assert_eq!(registration.reply_form(), Alive2Form::Extended);
    assert!(registration.creation() > 3);

    let (status, out) = epmd_cli(epmd.port(), &["-names"]).await;
    assert!(status.success(), "{out}");
    assert!(
        out.contains(&format!("name {name} at port 45123\n")),
        "epmd -names: {out}"
    );
    assert_eq!(
        client.names().await.unwrap(),
        vec![(name.clone(), 45123)],
        "our NAMES parse"
    );
    let entry = client.port_please(&name).await.unwrap().unwrap();
    assert_eq!(entry, NodeEntry::new(&name, 45123));

    drop(registration);
    eventually(Duration::from_secs(5), "name gone after drop", || {
        let client = client.clone();
        let name = name.clone();
        async move { !has_name(&client, &name).await }
    })
    .await;
    let (_, out) = epmd_cli(epmd.port(), &["-names"]).await;
    assert!(!out.contains(&name), "epmd -names after drop: {out}");

    // deregister() returns only once epmd has forgotten the name.
    let registration = client
        .register(NodeEntry::new(&name, 45124).hidden())
        .await
        .unwrap();
    let hidden = client.port_please(&name).await.unwrap().unwrap();
    assert_eq!(hidden.node_type, NodeType::Hidden);
    registration.deregister().await;
    assert_eq!(client.port_please(&name).await.unwrap(), None);
}

#[tokio::test]
async fn real_epmd_refuses_a_duplicate_and_bumps_creation() {
    let epmd = Epmd::start().await;
    let client = epmd.client();
    let name = unique_name("dup");
    let first = client.register(NodeEntry::new(&name, 1000)).await.unwrap();
    let err = client
        .register(NodeEntry::new(&name, 1001))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EpmdError::NameInUse { name: ref refused, addr } if *refused == name && addr == epmd.addr()),
        "{err}"
    );
    let creation = first.creation();
    first.deregister().await;
    let again = client.register(NodeEntry::new(&name, 1000)).await.unwrap();
    assert_eq!(again.creation(), creation + 1, "epmd bumps the creation");
    // A version-5 registration gets the old reply and a creation in 1..=3.
    let mut old = NodeEntry::new(unique_name("old"), 1002);
    old.highest_version = 5;
    old.lowest_version = 5;
    let old = client.register(old).await.unwrap();
    assert_eq!(old.reply_form(), Alive2Form::Old);
    assert!((1..=3).contains(&old.creation()));
}

#[tokio::test]
async fn port_please_finds_a_real_erl_node() {
    let epmd = Epmd::start().await;
    let mut node = ErlNode::start(ErlOptions::new(epmd.port())).await;
    let client = epmd.client();
    let entry = client
        .port_please(node.alive())
        .await
        .unwrap()
        .expect("the erl node is registered");
    assert_eq!(entry.port, node.dist_port().await);
    assert_eq!(entry.name, node.alive());
    assert_eq!(entry.node_type, NodeType::Normal);
    assert_eq!(entry.protocol, 0);
    // OTP 25.2 registers versions 5..=6 (its kernel is built with epmd_dist_low=5,
    // although dist.hrl says 6).
    assert_eq!(entry.highest_version, 6);
    assert!((5..=6).contains(&entry.lowest_version), "{entry:?}");
    assert!(entry.extra.is_empty());
    // Unknown node: Ok(None), not an error.
    assert_eq!(client.port_please("nobody_here").await.unwrap(), None);
}

#[tokio::test]
async fn names_lists_real_erl_nodes_like_epmd_names() {
    let epmd = Epmd::start().await;
    let mut a = ErlNode::start(ErlOptions::new(epmd.port()).name_prefix("na")).await;
    let mut b = ErlNode::start(ErlOptions::new(epmd.port()).name_prefix("nb")).await;
    let mut names = epmd.client().names().await.unwrap();
    names.sort();
    let mut expected = vec![
        (a.alive().to_owned(), a.dist_port().await),
        (b.alive().to_owned(), b.dist_port().await),
    ];
    expected.sort();
    assert_eq!(names, expected);
    let (_, out) = epmd_cli(epmd.port(), &["-names"]).await;
    for (name, port) in &expected {
        assert!(
            out.contains(&format!("name {name} at port {port}\n")),
            "{out}"
        );
    }
    // The NAMES reply reports epmd's port, as erl_epmd expects.
    let reply = epmd.client().names_response().await.unwrap();
    assert_eq!(reply.epmd_port, u32::from(epmd.port()));
    // DUMP parses too.
    let dump = epmd.client().dump().await.unwrap();
    assert_eq!(dump.entries.iter().filter(|e| e.active).count(), 2);
}

#[tokio::test]
async fn registration_knows_when_real_epmd_goes_away() {
    let epmd = Epmd::start().await;
    let registration = epmd
        .client()
        .register(NodeEntry::new(unique_name("lost"), 45600))
        .await
        .unwrap();
    assert!(registration.is_active());
    drop(epmd); // SIGKILL
    tokio::time::timeout(Duration::from_secs(5), registration.closed())
        .await
        .expect("closed() resolves when epmd dies");
    assert!(!registration.is_active());
}

#[tokio::test]
async fn unreachable_epmd_is_a_clear_error() {
    let port = crate::common::free_port();
    let client = EpmdClient::new(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let err = client.names().await.unwrap_err();
    assert!(matches!(err, EpmdError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("is epmd running?"), "{err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[tokio::test]
async fn real_epmd_over_ipv6() {
    let epmd = Epmd::start().await;
    let v6 = EpmdClient::for_host("::1", epmd.port()).await.unwrap();
    assert_eq!(v6.addr().ip(), V6_LOOPBACK);
    let name = unique_name("v6");
    let registration = v6.register(NodeEntry::new(&name, 45200)).await.unwrap();
    // Registered over ::1, visible over 127.0.0.1.
    assert_eq!(
        epmd.client()
            .port_please(&name)
            .await
            .unwrap()
            .map(|e| e.port),
        Some(45200)
    );
    assert!(has_name(&v6, &name).await);
    drop(registration);
}

// ---------------------------------------------------------------------------------------
// The embedded server.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_server_serves_real_erl_nodes() {
    let server = embedded_server().await;
    let port = server.port();
    let mut a = ErlNode::start(ErlOptions::new(port).name_prefix("sa")).await;
    let mut b = ErlNode::start(ErlOptions::new(port).name_prefix("sb")).await;
    let registered: Vec<String> = server.registered().into_iter().map(|e| e.name).collect();
    assert!(registered.contains(&a.alive().to_owned()), "{registered:?}");
    assert!(registered.contains(&b.alive().to_owned()), "{registered:?}");

    // The two nodes find each other through our server.
    assert_eq!(
        a.eval(&format!("net_adm:ping('{}')", b.name())).await,
        "pong"
    );
    assert_eq!(
        b.eval(&format!("lists:member('{}', nodes())", a.name()))
            .await,
        "true"
    );
    // erl_epmd's own NAMES parser (which checks the port we report) reads our reply.
    let names = a
        .eval("{ok, Names} = erl_epmd:names(), lists:sort(Names)")
        .await;
    assert!(names.contains(&format!("{{\"{}\",", a.alive())), "{names}");
    assert!(names.contains(&format!("{{\"{}\",", b.alive())), "{names}");
    // And erl_epmd's PORT_PLEASE2 parser reads our lookup reply.
    let reply = a
        .eval(&format!(
            "erl_epmd:port_please(\"{}\", \"localhost\")",
            b.alive()
        ))
        .await;
    assert_eq!(reply, format!("{{port,{},6}}", b.dist_port().await));
    // The server stored OTP's registration as sent.
    let entry = server
        .registered()
        .into_iter()
        .find(|e| e.name == a.alive())
        .unwrap();
    assert_eq!(entry.port, a.dist_port().await);
    assert_eq!((entry.node_type, entry.protocol), (NodeType::Normal, 0));
    assert_eq!(entry.highest_version, 6);
    assert!(entry.extra.is_empty());

    // A node that stops is unregistered.
    let gone = b.alive().to_owned();
    b.stop().await;
    eventually(Duration::from_secs(5), "stopped node unregistered", || {
        let registered = server.registered();
        let gone = gone.clone();
        async move { !registered.iter().any(|e| e.name == gone) }
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erl_refuses_to_start_with_a_name_taken_on_our_server() {
    let server = embedded_server().await;
    let client = EpmdClient::new(server.local_addrs()[0]);
    let mut a = ErlNode::start(ErlOptions::new(server.port())).await;
    let err = client
        .register(NodeEntry::new(a.alive(), 1))
        .await
        .unwrap_err();
    assert!(matches!(err, EpmdError::NameInUse { .. }), "{err}");
    // The real node is untouched.
    assert_eq!(a.eval("1 + 1").await, "2");
    assert_eq!(
        client.port_please(a.alive()).await.unwrap().map(|e| e.port),
        Some(a.dist_port().await)
    );
}

#[tokio::test]
async fn our_server_limits_registrations() {
    let server = EpmdServer::bind(EpmdServerConfig {
        limits: ListenerLimits {
            max_connections: 2,
            ..ListenerLimits::default()
        },
        ..EpmdServerConfig::localhost(0)
    })
    .await
    .unwrap();
    let client = EpmdClient::new(server.local_addrs()[0]);
    let a = client.register(NodeEntry::new("lim_a", 1)).await.unwrap();
    let _b = client.register(NodeEntry::new("lim_b", 2)).await.unwrap();
    let err = client
        .register(NodeEntry::new("lim_c", 3))
        .await
        .unwrap_err();
    assert!(matches!(err, EpmdError::NameInUse { .. }), "{err}");
    assert_eq!(server.stats().established, 2);
    // Queries still work at the limit, and a freed slot can be taken again.
    assert_eq!(client.names().await.unwrap().len(), 2);
    a.deregister().await;
    let _c = client.register(NodeEntry::new("lim_c", 3)).await.unwrap();
    assert_eq!(server.registered().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epmd_cli_talks_to_our_server() {
    let server = embedded_server().await;
    let port = server.port();
    let client = EpmdClient::new(server.local_addrs()[0]);
    let name = unique_name("cli");
    let registration = client.register(NodeEntry::new(&name, 45300)).await.unwrap();

    let (status, out) = epmd_cli(port, &["-names"]).await;
    assert!(status.success(), "{out}");
    assert_eq!(
        out,
        format!("epmd: up and running on port {port} with data:\nname {name} at port 45300\n")
    );
    // KILL is refused while a node is registered, like epmd.
    let (status, out) = epmd_cli(port, &["-kill"]).await;
    assert!(!status.success());
    assert_eq!(out, "Killing not allowed - living nodes in database.\n");
    // STOP needs the relaxed command check: epmd closes without a word.
    let (_, out) = epmd_cli(port, &["-stop", &name]).await;
    assert_eq!(out, "epmd: local epmd responded with <>\n");
    assert!(registration.is_active());

    drop(registration);
    eventually(Duration::from_secs(5), "registration gone", || {
        let empty = server.registered().is_empty();
        async move { empty }
    })
    .await;
    let (status, out) = epmd_cli(port, &["-kill"]).await;
    assert!(status.success(), "{out}");
    assert_eq!(out, "Killed\n");
    tokio::time::timeout(Duration::from_secs(5), server.closed())
        .await
        .expect("KILL stops the server");
    assert!(!server.is_running());
    assert!(matches!(
        client.names().await,
        Err(EpmdError::Unreachable { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_stop_unregisters_a_node_on_our_server() {
    let server = EpmdServer::bind(EpmdServerConfig {
        relaxed_command_check: true,
        ..EpmdServerConfig::localhost(0)
    })
    .await
    .unwrap();
    let client = EpmdClient::new(server.local_addrs()[0]);
    let name = unique_name("stop");
    let registration = client.register(NodeEntry::new(&name, 45301)).await.unwrap();
    let (_, out) = epmd_cli(server.port(), &["-stop", &name]).await;
    assert_eq!(out, "STOPPED\n");
    tokio::time::timeout(Duration::from_secs(5), registration.closed())
        .await
        .expect("the registration is told it is lost");
    assert!(!registration.is_active());
    assert_eq!(client.port_please(&name).await.unwrap(), None);
    let (_, out) = epmd_cli(server.port(), &["-stop", &name]).await;
    assert_eq!(out, "NOEXIST\n");
}

/// The same sequence against real epmd and our server gives the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_answers_like_real_epmd() {
    let epmd = Epmd::start().await;
    let server = embedded_server().await;
    let mut transcripts = Vec::new();
    for client in [epmd.client(), EpmdClient::new(server.local_addrs()[0])] {
        let mut t = Vec::new();
        let a = client
            .register(NodeEntry::new("same_a", 41001))
            .await
            .unwrap();
        let mut entry = NodeEntry::new("same_b", 41002).hidden();
        entry.extra = b"extra".to_vec();
        let b = client.register(entry).await.unwrap();
        t.push(format!("{:?}", client.names().await.unwrap()));
        t.push(format!("{:?}", client.port_please("same_b").await.unwrap()));
        t.push(format!("{:?}", client.port_please("same_c").await.unwrap()));
        let dup = client.register(NodeEntry::new("same_a", 1)).await;
        t.push(format!(
            "{}",
            matches!(dup, Err(EpmdError::NameInUse { .. }))
        ));
        let creation = a.creation();
        a.deregister().await;
        let a = client
            .register(NodeEntry::new("same_a", 41003))
            .await
            .unwrap();
        t.push(format!("bumped {}", a.creation() == creation + 1));
        t.push(format!("{:?}", client.names().await.unwrap()));
        let dump = client.dump().await.unwrap();
        let lines: Vec<_> = dump
            .entries
            .iter()
            .map(|e| (e.name.clone(), e.port, e.active))
            .collect();
        t.push(format!("{lines:?}"));
        let mut old = NodeEntry::new("same_old", 41004);
        old.highest_version = 5;
        old.lowest_version = 5;
        let old = client.register(old).await.unwrap();
        t.push(format!(
            "{:?} {}",
            old.reply_form(),
            (1..=3).contains(&old.creation())
        ));
        drop((a, b, old));
        transcripts.push(t);
    }
    assert_eq!(transcripts[0], transcripts[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_over_ipv6_with_an_inet6_erl_node() {
    let server = embedded_server().await;
    assert!(
        server.local_addrs().iter().any(|a| a.ip() == V6_LOOPBACK),
        "the server listens on ::1: {:?}",
        server.local_addrs()
    );
    let v6 = EpmdClient::for_host("::1", server.port()).await.unwrap();
    let name = unique_name("v6c");
    let registration = v6.register(NodeEntry::new(&name, 45400)).await.unwrap();
    assert!(has_name(&v6, &name).await);
    drop(registration);

    // OTP's erl_epmd registers an inet6_tcp node with the EPMD on ::1
    // (do_register_node/3 opens {0,0,0,0,0,0,0,1}), so an IPv4-only EPMD would fail it.
    let opts = ErlOptions::new(server.port()).long_names().inet6();
    let mut a = ErlNode::start(opts.clone().name_prefix("v6a")).await;
    let mut b = ErlNode::start(opts.name_prefix("v6b")).await;
    assert!(a.name().ends_with("@::1"), "{}", a.name());
    assert_eq!(
        a.eval(&format!("net_adm:ping('{}')", b.name())).await,
        "pong"
    );
    let entry = v6.port_please(b.alive()).await.unwrap().unwrap();
    assert_eq!(entry.port, b.dist_port().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inet6_erl_node_cannot_register_with_an_ipv4_only_server() {
    // The converse of the previous test: it proves the ::1 listener is what served it.
    let server = EpmdServer::bind(EpmdServerConfig {
        addrs: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
        ..EpmdServerConfig::default()
    })
    .await
    .unwrap();
    let mut opts = ErlOptions::new(server.port()).long_names().inet6();
    opts.start_timeout = Duration::from_secs(20);
    let error = match ErlNode::try_start(opts).await {
        Ok(node) => panic!("{} registered with an IPv4-only EPMD", node.name()),
        Err(error) => error,
    };
    assert!(error.contains("econnrefused"), "{error}");
    assert!(server.registered().is_empty());
}

// ---------------------------------------------------------------------------------------
// Robustness of the embedded server.

/// Reads until the server closes; returns the bytes it sent. Panics after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .expect("the server closes the connection");
    out
}

/// The server answers a query at once when it has arrived by the accept, and from a
/// task otherwise; a reply larger than the socket buffer is finished by a task. The
/// bytes are the same whichever way a request arrives.
#[tokio::test]
async fn a_query_gets_the_same_reply_however_it_arrives() {
    let server = embedded_server().await;
    let addr = server.local_addrs()[0];
    let client = EpmdClient::new(addr);
    // Enough long names that the NAMES reply (about 60 KiB) outgrows a socket buffer.
    let mut registrations = Vec::new();
    for i in 0..220 {
        let name = format!("{}{i:03}", "n".repeat(250));
        registrations.push(
            client
                .register(NodeEntry::new(&name, 40000 + i))
                .await
                .unwrap(),
        );
    }
    let port_please = Request::PortPlease2 {
        name: format!("{}007", "n".repeat(250)),
    }
    .encode()
    .unwrap();
    let names = Request::Names.encode().unwrap();

    async fn ask(
        addr: SocketAddr,
        request: &[u8],
        split: Option<usize>,
        delay: Duration,
    ) -> Vec<u8> {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        // A small receive window: a large reply cannot all leave the server at once.
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        tokio::time::sleep(delay).await;
        let (first, rest) = request.split_at(split.unwrap_or(request.len()));
        stream.write_all(first).await.unwrap();
        if !rest.is_empty() {
            tokio::time::sleep(Duration::from_millis(30)).await;
            stream.write_all(rest).await.unwrap();
        }
        tokio::time::sleep(delay).await;
        read_until_closed(&mut stream, Duration::from_secs(5)).await
    }

    for request in [&port_please, &names] {
        let at_once = ask(addr, request, None, Duration::ZERO).await;
        assert!(!at_once.is_empty());
        // Sent well after the accept.
        assert_eq!(
            ask(addr, request, None, Duration::from_millis(50)).await,
            at_once
        );
        // Split after the length, and after one byte of the body.
        assert_eq!(ask(addr, request, Some(2), Duration::ZERO).await, at_once);
        assert_eq!(ask(addr, request, Some(3), Duration::ZERO).await, at_once);
    }
    let found = ask(addr, &port_please, None, Duration::ZERO).await;
    assert_eq!(found[..2], [119, 0], "PORT2_RESP, found");
    let listed = ask(addr, &names, None, Duration::ZERO).await;
    assert!(listed.len() > 60_000, "{} bytes", listed.len());
    assert_eq!(
        listed.iter().filter(|&&b| b == b'\n').count(),
        220,
        "one line per registered node"
    );
    drop(registrations);
    assert_eq!(server.stats().pending, 0);
}

#[tokio::test]
async fn garbage_and_giant_lengths_are_closed_at_once() {
    let server = embedded_server().await;
    let addr = server.local_addrs()[0];
    let cases: [(&str, Vec<u8>); 7] = [
        ("giant length", vec![0xff, 0xff, 1, 2, 3]),
        ("just over epmd's limit", vec![0x0b, 0xf2]),
        ("zero length", vec![0, 0]),
        ("unknown request", vec![0, 3, b'G', b'E', b'T']),
        ("HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        (
            "ALIVE2 name runs past the request",
            vec![0, 13, 120, 0, 1, 77, 0, 0, 6, 0, 6, 0, 200, b'a', 0],
        ),
        ("bytes after the request", vec![0, 1, 110, 0, 1, 110]),
    ];
    for (what, bytes) in cases {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        let started = Instant::now();
        let reply = read_until_closed(&mut stream, Duration::from_secs(2)).await;
        assert!(reply.is_empty(), "{what}: no reply expected, got {reply:?}");
        assert!(started.elapsed() < Duration::from_secs(1), "{what}");
    }
    // A giant request body is never read: the length alone closes the connection.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&[0xff, 0xff]).await.unwrap();
    let junk = vec![b'x'; 1 << 20];
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&junk)).await;
    read_until_closed(&mut stream, Duration::from_secs(2)).await;
    // The server is fine afterwards.
    assert_eq!(EpmdClient::new(addr).names().await.unwrap(), vec![]);
    assert_eq!(server.stats().pending, 0);
}

#[tokio::test]
async fn real_epmd_also_closes_giant_lengths() {
    // The behaviour the previous test copies.
    let epmd = Epmd::start().await;
    let mut stream = TcpStream::connect(epmd.addr()).await.unwrap();
    stream.write_all(&[0xff, 0xff, 1, 2, 3]).await.unwrap();
    let reply = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(reply.is_empty());
}
