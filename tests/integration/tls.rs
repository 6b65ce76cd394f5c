//! TLS distribution against real OTP 25 nodes started with `-proto_dist inet_tls` and an
//! `-ssl_dist_optfile`, with certificates made by the test (rcgen): a CA, a node
//! certificate (both sides use it), a client-only certificate, and a second, unrelated CA
//! with a certificate of its own.
//!
//! Both directions with mutual TLS; then each way a connection can be refused (a wrong
//! CA either way, a missing client certificate, plain TCP against TLS and TLS against
//! plain), checking that it fails fast, with the error that says which on the dialling
//! side and a warning that says which on the accepting side.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{Epmd, ErlNode, ErlOptions, LogBuffer, Pki, capture_logs, unique_name};
use autocluster::node::{ConnectError, TlsError};
use autocluster::tls::{ServerNameIndication, TlsConfig, TlsVersion};
use autocluster::{Cookie, Fault, Node, NodeName};

const COOKIE: &str = "autocluster_tls_test_cookie";
const SECS5: Duration = Duration::from_secs(5);
/// What "fails fast" means here: well under the handshake timeout (2 s in these tests)
/// on an idle machine (they take milliseconds), with room for a loaded CI machine.
const FAST: Duration = Duration::from_millis(1500);

/// An OTP node with TLS distribution configured by `optfile`.
async fn erl_tls(epmd: &Epmd, optfile: &Path, extra: &[&str]) -> ErlNode {
    let opts = ErlOptions::new(epmd.port())
        .cookie(COOKIE)
        .args([
            "-proto_dist",
            "inet_tls",
            "-ssl_dist_optfile",
            optfile.to_str().expect("UTF-8 path"),
        ])
        .args(extra.iter().copied());
    ErlNode::start(opts).await
}

fn host_of(node: &str) -> &str {
    node.split_once('@').map(|(_, h)| h).expect("a node name")
}

fn rust_name(peer: &str) -> NodeName {
    format!("{}@{}", unique_name("rust"), host_of(peer))
        .parse()
        .unwrap()
}

async fn client(epmd: &Epmd, peer: &str, tls: Option<TlsConfig>) -> Node {
    let mut b = Node::builder(rust_name(peer), Cookie::new(COOKIE).unwrap())
        .epmd_port(epmd.port())
        .handshake_timeout(Duration::from_secs(2));
    if let Some(tls) = tls {
        b = b.tls(tls);
    }
    b.start().await.unwrap()
}

async fn listener(epmd: &Epmd, peer: &str, tls: Option<TlsConfig>) -> Node {
    let mut b = Node::builder(rust_name(peer), Cookie::new(COOKIE).unwrap())
        .epmd_port(epmd.port())
        .handshake_timeout(Duration::from_secs(2))
        .listen("127.0.0.1:0".parse().unwrap());
    if let Some(tls) = tls {
        b = b.tls(tls);
    }
    b.start().await.unwrap()
}

/// Dials `peer` and returns the TLS error, checking it came within `within`.
async fn tls_failure(node: &Node, peer: &NodeName, within: Duration) -> TlsError {
    let started = Instant::now();
    let err = node
        .connect(peer)
        .await
        .expect_err("the connection must fail");
    let took = started.elapsed();
    assert!(took < within, "took {took:?} to fail: {err}");
    let text = err.to_string();
    assert!(!text.contains(COOKIE), "{text}");
    eprintln!("failed in {took:?}: {text}");
    match err {
        ConnectError::Tls { kind, .. } => kind,
        other => panic!("expected a TLS error, got {other:?}: {other}"),
    }
}

/// `net_adm:ping` from the Erlang node to ours.
async fn erl_pings(erl: &mut ErlNode, node: &Node) -> String {
    erl.eval(&format!("net_adm:ping('{}')", node.name())).await
}

async fn warned(logs: &LogBuffer, needles: &[&str]) -> String {
    let mut all = vec!["WARN"];
    all.extend_from_slice(needles);
    logs.wait_for(&all, SECS5)
        .await
        .unwrap_or_else(|| panic!("no warning with {needles:?}; logs:\n{}", logs.text()))
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_calls_erlang_over_mutual_tls_configured_from_the_same_optfile() {
    let epmd = Epmd::start().await;
    let pki = Pki::generate();
    let optfile = pki.mutual("dist.conf", "ca", "node");
    let mut erl = erl_tls(&epmd, &optfile, &[]).await;
    let peer: NodeName = erl.name().parse().unwrap();

    // The very file the Erlang node runs with.
    let tls = TlsConfig::from_ssl_dist_optfile(&optfile).unwrap();
    assert_eq!(tls, pki.config("ca", "node"));
    let node = client(&epmd, erl.name(), Some(tls)).await;

    let started = Instant::now();
    let r = node
        .call(&peer, "erlang", "node", vec![], SECS5)
        .await
        .unwrap();
    assert_eq!(r, autocluster::Term::atom(erl.name()));
    eprintln!("connect + call over TLS: {:?}", started.elapsed());
    // A large message both ways, through TLS records.
    let big = vec![7u8; 3 * 1024 * 1024];
    let r = node
        .call(
            &peer,
            "erlang",
            "iolist_to_binary",
            vec![autocluster::Term::List(vec![autocluster::Term::binary(
                big.clone(),
            )])],
            SECS5,
        )
        .await
        .unwrap();
    assert_eq!(r.as_binary().unwrap(), &big[..]);

    // The Erlang side sees a TLS connection.
    let address = erl
        .eval(&format!("net_kernel:node_info('{}', address)", node.name()))
        .await;
    assert!(address.contains(",tls,"), "{address}");
}

#[tokio::test(flavor = "multi_thread")]
async fn erlang_pings_rust_over_mutual_tls() {
    let epmd = Epmd::start().await;
    let pki = Pki::generate();
    let optfile = pki.mutual("dist.conf", "ca", "node");
    let mut erl = erl_tls(&epmd, &optfile, &[]).await;
    let node = listener(&epmd, erl.name(), Some(pki.config("ca", "node"))).await;

    assert_eq!(erl_pings(&mut erl, &node).await, "pong");
    let peer: NodeName = erl.name().parse().unwrap();
    assert!(node.is_connected(&peer));
    let info = node.connection_info(&peer).unwrap();
    assert!(!info.initiated_locally);
    // Calls flow back over the connection Erlang opened.
    let r = node
        .call(&peer, "erlang", "node", vec![], SECS5)
        .await
        .unwrap();
    assert_eq!(r, autocluster::Term::atom(erl.name()));
    assert_eq!(node.connection_info(&peer).unwrap().id, info.id);
    let address = erl
        .eval(&format!("net_kernel:node_info('{}', address)", node.name()))
        .await;
    assert!(address.contains(",tls,"), "{address}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_tls_connection_survives_ticks() {
    let epmd = Epmd::start().await;
    let pki = Pki::generate();
    let optfile = pki.mutual("dist.conf", "ca", "node");
    let erl = erl_tls(&epmd, &optfile, &["-kernel", "net_ticktime", "2"]).await;
    let peer: NodeName = erl.name().parse().unwrap();
    let node = Node::builder(rust_name(erl.name()), Cookie::new(COOKIE).unwrap())
        .epmd_port(epmd.port())
        .net_ticktime(Duration::from_secs(2))
        .tls(pki.config("ca", "node"))
        .start()
        .await
        .unwrap();
    node.connect(&peer).await.unwrap();
    let id = node.connection_info(&peer).unwrap().id;
    let mut events = node.monitor_nodes();
    // Three tick times with nothing but ticks on the connection.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        events.try_recv().is_err(),
        "the connection went down while idle"
    );
    assert_eq!(node.connection_info(&peer).map(|i| i.id), Some(id));
    let r = node
        .call(&peer, "erlang", "node", vec![], SECS5)
        .await
        .unwrap();
    assert_eq!(r, autocluster::Term::atom(erl.name()));
}

#[tokio::test(flavor = "multi_thread")]
async fn dialling_with_a_wrong_ca_fails_fast_either_way() {
    let epmd = Epmd::start().await;
    let pki = Pki::generate();
    let optfile = pki.mutual("dist.conf", "ca", "node");
    let erl = erl_tls(&epmd, &optfile, &[]).await;
    let peer: NodeName = erl.name().parse().unwrap();

    // We do not trust the Erlang node's CA.
    let node = client(&epmd, erl.name(), Some(pki.config("other_ca", "node"))).await;
    let kind = tls_failure(&node, &peer, FAST).await;
    assert!(
        matches!(kind, TlsError::PeerCertificateUntrusted { .. }),
        "{kind:?}"
    );
    assert!(kind.to_string().contains("cacertfile"), "{kind}");
    assert_eq!(kind.fault(), Fault::Rejected);

    // The Erlang node does not trust ours.
    let mut tls = pki.config("ca", "rogue");
    tls.client.cacertfile = Some(pki.path("ca.pem"));
    let node = client(&epmd, erl.name(), Some(tls)).await;
    let kind = tls_failure(&node, &peer, FAST).await;
    match &kind {
        TlsError::CertificateRejected { alert } => assert_eq!(alert, "unknown_ca"),
        other => panic!("{other:?}"),
    }

    // Our host name check: a name the certificate does not hold.
    let mut tls = pki.config("ca", "node");
    tls.client.server_name_indication = ServerNameIndication::Name("elsewhere.example".into());
    let node = client(&epmd, erl.name(), Some(tls.clone())).await;
    let kind = tls_failure(&node, &peer, FAST).await;
    assert!(
        matches!(kind, TlsError::PeerNameMismatch { .. }),
        "{kind:?}"
    );
    // ...which `disable` turns off, as in OTP.
    tls.client.server_name_indication = ServerNameIndication::Disable;
    let node = client(&epmd, erl.name(), Some(tls)).await;
    node.connect(&peer).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn dialling_without_a_client_certificate_says_one_is_required() {
    let epmd = Epmd::start().await;
    let pki = Pki::generate();
    let (server, client_opts) = pki.mutual_options("ca", "node");
    // Both TLS versions on the Erlang side: TLS 1.3 judges the client certificate after
    // the client considers the TLS handshake done.
    let optfile = pki.optfile(
        "dist.conf",
        &format!("{server}, {{versions, ['tlsv1.2', 'tlsv1.3']}}"),
        &client_opts,
    );
    let erl = erl_tls(&epmd, &optfile, &[]).await;
    let peer: NodeName = erl.name().parse().unwrap();
    for version in [TlsVersion::Tls12, TlsVersion::Tls13] {
        let mut tls = pki.config("ca", "node");
        tls.client.certfile = None;
        tls.client.keyfile = None;
        tls.client.versions = vec![version];
        let node = client(&epmd, erl.name(), Some(tls)).await;
        let kind = tls_failure(&node, &peer, FAST).await;
        assert_eq!(kind, TlsError::ClientCertificateRequired, "{version:?}");
    }
    // A certificate made for clients only is enough.
    let mut tls = pki.config("ca", "node");
    tls.client.certfile = Some(pki.path("client.pem"));
    tls.client.keyfile = Some(pki.path("client.key"));
    let node = client(&epmd, erl.name(), Some(tls)).await;
    node.connect(&peer).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_against_tls_and_tls_against_plain_fail_fast_when_dialling() {
    let epmd = Epmd::start().await;
    let pki = Pki::generate();
    let optfile = pki.mutual("dist.conf", "ca", "node");
    let tls_erl = erl_tls(&epmd, &optfile, &[]).await;
    let plain_erl = ErlNode::start(ErlOptions::new(epmd.port()).cookie(COOKIE)).await;

    // Plain TCP against a TLS node: its TLS alert comes back at once.
    let node = client(&epmd, tls_erl.name(), None).await;
    let kind = tls_failure(&node, &tls_erl.name().parse().unwrap(), FAST).await;
    assert_eq!(kind, TlsError::PeerUsesTls);
    assert!(kind.to_string().contains("-proto_dist inet_tls"), "{kind}");
    assert_eq!(kind.fault(), Fault::PeerIncompatible);

    // TLS against a plain node: it waits for the rest of what it takes for a 5 KiB
    // handshake message, so the handshake timeout (2 s here) bounds it.
    let node = client(&epmd, plain_erl.name(), Some(pki.config("ca", "node"))).await;
    let kind = tls_failure(
        &node,
        &plain_erl.name().parse().unwrap(),
        Duration::from_millis(3500),
    )
    .await;
    assert!(matches!(kind, TlsError::PeerNotTls { .. }), "{kind:?}");
    assert!(kind.to_string().contains("-proto_dist inet_tcp"), "{kind}");
    assert_eq!(kind.fault(), Fault::PeerIncompatible);
}

#[tokio::test]
async fn tls_and_plain_listeners_fail_fast_against_rust_nodes_too() {
    // Our own nodes on both ends: the rejecting side closes at once.
    let (logs, _guard) = capture_logs();
    let epmd = Epmd::start().await;
    let pki = Pki::generate();
    let host = format!("x@{}", pki.host);
    let tls_node = listener(&epmd, &host, Some(pki.config("ca", "node"))).await;
    let plain_node = listener(&epmd, &host, None).await;

    let plain = client(&epmd, &host, None).await;
    let kind = tls_failure(&plain, tls_node.name(), FAST).await;
    assert_eq!(kind, TlsError::PeerUsesTls);
    warned(&logs, &["does not speak TLS", "-proto_dist inet_tcp"]).await;

    let tls = client(&epmd, &host, Some(pki.config("ca", "node"))).await;
    let kind = tls_failure(&tls, plain_node.name(), FAST).await;
    assert!(matches!(kind, TlsError::PeerNotTls { .. }), "{kind:?}");
    warned(&logs, &["TLS client on this plain distribution listener"]).await;

    // And the good case.
    tls.connect(tls_node.name()).await.unwrap();
}

#[tokio::test]
async fn the_tls_listener_rejects_and_explains_bad_clients() {
    let (logs, _guard) = capture_logs();
    let epmd = Epmd::start().await;
    let pki = Pki::generate();
    let host = format!("x@{}", pki.host);
    let node = listener(&epmd, &host, Some(pki.config("ca", "node"))).await;

    // A plain Erlang node.
    let mut plain = ErlNode::start(ErlOptions::new(epmd.port()).cookie(COOKIE)).await;
    let started = Instant::now();
    assert_eq!(erl_pings(&mut plain, &node).await, "pang");
    eprintln!(
        "plain erl against our TLS listener: pang in {:?}",
        started.elapsed()
    );
    warned(&logs, &["does not speak TLS", "-proto_dist inet_tcp"]).await;
    drop(plain);

    // A TLS Erlang node without a client certificate.
    let (_, client_opts) = pki.mutual_options("ca", "node");
    let client_opts = client_opts
        .replace(r#", {certfile, "$DIR/node.pem"}"#, "")
        .replace(r#", {keyfile, "$DIR/node.key"}"#, "");
    let optfile = pki.optfile("nocert.conf", "", &client_opts);
    let mut erl = erl_tls(&epmd, &optfile, &[]).await;
    assert_eq!(erl_pings(&mut erl, &node).await, "pang");
    warned(&logs, &["presented no client certificate"]).await;
    drop(erl);

    // A TLS Erlang node whose certificate comes from a CA we do not trust.
    let optfile = pki.mutual("rogue.conf", "ca", "rogue");
    let mut erl = erl_tls(&epmd, &optfile, &[]).await;
    assert_eq!(erl_pings(&mut erl, &node).await, "pang");
    warned(&logs, &["not trusted", "cacertfile"]).await;
    drop(erl);

    // A TLS Erlang node that does not trust our CA.
    let optfile = pki.mutual("distrust.conf", "other_ca", "node");
    let mut erl = erl_tls(&epmd, &optfile, &[]).await;
    assert_eq!(erl_pings(&mut erl, &node).await, "pang");
    warned(&logs, &["rejected this node's certificate"]).await;

    // Nothing stays open: every rejected connection was closed.
    let stats = node.listener_stats().unwrap();
    assert_eq!(stats.established, 0, "{stats:?}");
    let deadline = Instant::now() + SECS5;
    while node.listener_stats().unwrap().pending > 0 {
        assert!(Instant::now() < deadline, "{:?}", node.listener_stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = logs.text();
    assert!(!text.contains(COOKIE));
    assert!(!text.contains("PRIVATE KEY"));
}

#[tokio::test]
async fn a_tls_erlang_node_against_a_plain_listener_is_explained() {
    let (logs, _guard) = capture_logs();
    let epmd = Epmd::start().await;
    let pki = Pki::generate();
    let host = format!("x@{}", pki.host);
    let node = listener(&epmd, &host, None).await;
    let optfile = pki.mutual("dist.conf", "ca", "node");
    let mut erl = erl_tls(&epmd, &optfile, &[]).await;
    assert_eq!(erl_pings(&mut erl, &node).await, "pang");
    warned(&logs, &["TLS client on this plain distribution listener"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn config_errors_stop_the_node_from_starting() {
    let pki = Pki::generate();
    let mut tls = pki.config("ca", "node");
    tls.server.keyfile = Some(pki.path("client.key"));
    let err = Node::builder(
        "rust@localhost".parse().unwrap(),
        Cookie::new(COOKIE).unwrap(),
    )
    .listen("127.0.0.1:0".parse().unwrap())
    .register_in_epmd(false)
    .tls(tls)
    .start()
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("server"), "{text}");
    assert!(!text.contains("PRIVATE"), "{text}");
    // The key of another certificate: rustls says so, the key stays out of the message.
    let key_pem = std::fs::read_to_string(pki.path("client.key")).unwrap();
    let body = key_pem.lines().nth(1).unwrap();
    assert!(!text.contains(body) && !format!("{err:?}").contains(body));
}
