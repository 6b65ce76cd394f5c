use rustls::{AlertDescription, CertificateError};

use crate::node::TlsError;

use super::handshake::classify_rustls;
use super::verify::check_depth;
use super::*;

fn parse(text: &str) -> Result<TlsConfig, TlsConfigError> {
    TlsConfig::parse_ssl_dist_opts(text, Path::new("test.conf"))
}

#[test]
fn reads_rabbitmq_style_optfile() {
    let cfg = parse(
        r#"%% inter-node TLS, as RabbitMQ's guide writes it
        [{server, [{cacertfile, "/etc/tls/ca.pem"},
                   {certfile, "/etc/tls/server.pem"},
                   {keyfile, "/etc/tls/server.key"},
                   {password, ""},
                   {secure_renegotiate, true},
                   {verify, verify_peer},
                   {fail_if_no_peer_cert, true},
                   {depth, 2},
                   {versions, ['tlsv1.2', 'tlsv1.3']}]},
         {client, [{cacertfile, <<"/etc/tls/ca.pem">>},
                   {certfile, "/etc/tls/client.pem"},
                   {keyfile, "/etc/tls/client.key"},
                   {secure_renegotiate, true},
                   {verify, verify_peer},
                   {server_name_indication, disable},
                   {customize_hostname_check, []}]}]."#,
    )
    .unwrap();
    assert_eq!(
        cfg.server.certfile.as_deref(),
        Some(Path::new("/etc/tls/server.pem"))
    );
    assert_eq!(
        cfg.server.keyfile.as_deref(),
        Some(Path::new("/etc/tls/server.key"))
    );
    assert_eq!(cfg.server.verify, Verify::Peer);
    assert!(cfg.server.fail_if_no_peer_cert);
    assert_eq!(cfg.server.depth, 2);
    assert_eq!(
        cfg.server.versions,
        vec![TlsVersion::Tls12, TlsVersion::Tls13]
    );
    assert_eq!(
        cfg.client.cacertfile.as_deref(),
        Some(Path::new("/etc/tls/ca.pem"))
    );
    assert_eq!(cfg.client.verify, Verify::Peer);
    assert_eq!(
        cfg.client.server_name_indication,
        ServerNameIndication::Disable
    );
    assert_eq!(cfg.client.depth, 10);
}

#[test]
fn missing_sides_and_options_are_otp_25_defaults() {
    let cfg = parse("[].").unwrap();
    assert_eq!(cfg.server, ServerOptions::otp_defaults());
    assert_eq!(cfg.client, ClientOptions::otp_defaults());
    assert_eq!(cfg.client.verify, Verify::None);
    assert_eq!(cfg.server.verify, Verify::None);
    assert!(!cfg.server.fail_if_no_peer_cert);
    assert_eq!(cfg.warnings(true).len(), 2);
    let cfg = parse(r#"[{client, [{server_name_indication, "rabbit.example"}]}]"#).unwrap();
    assert_eq!(
        cfg.client.server_name_indication,
        ServerNameIndication::Name("rabbit.example".into())
    );
    // A repeated side replaces the earlier one, as OTP's ets table does.
    let cfg = parse("[{server, [{verify, verify_peer}]}, {server, []}].").unwrap();
    assert_eq!(cfg.server.verify, Verify::None);
}

#[test]
fn refuses_what_it_cannot_honour_by_name() {
    for (text, option) in [
        (
            r#"[{server, [{ciphers, ["ECDHE-ECDSA-AES256-GCM-SHA384"]}]}]."#,
            "ciphers",
        ),
        (r#"[{client, [{password, "secret"}]}]."#, "password"),
        (
            "[{client, [{verify_fun, {fun inet_tls_dist:verify_client/3, []}}]}].",
            "verify_fun",
        ),
        ("[{server, [{dhfile, \"dh.pem\"}]}].", "dhfile"),
        (
            "[{client, [{fail_if_no_peer_cert, true}]}].",
            "fail_if_no_peer_cert",
        ),
        (
            "[{server, [{server_name_indication, disable}]}].",
            "server_name_indication",
        ),
        ("[{client, [{versions, ['tlsv1.1']}]}].", "versions"),
        ("[{client, [{crl_check, peer}]}].", "crl_check"),
        ("[{client, [{cacerts, []}]}].", "cacerts"),
        ("[{client, [{sni_fun, x}]}].", "sni_fun"),
        ("[{client, [{verify, sometimes}]}].", "verify"),
        (
            "[{client, [{customize_hostname_check, [{match_fun, fun m:f/2}]}]}].",
            "customize_hostname_check",
        ),
    ] {
        match parse(text) {
            Err(e @ TlsConfigError::UnsupportedOption { .. }) => {
                let TlsConfigError::UnsupportedOption { option: o, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(o, option, "{text}");
                assert!(e.to_string().contains(option), "{e}");
                // The value of a password never shows.
                assert!(!e.to_string().contains("secret"), "{e}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn refuses_malformed_files() {
    for text in [
        "",
        "[{server, []}]. [{client, []}].",
        "{server, []}.",
        "[{server, [verify_peer]}].",
        "[{other, []}].",
        "[{client, [{certfile, filename:join(\"a\", \"b\")}]}].",
        "[{server, x}].",
    ] {
        match parse(text) {
            Err(TlsConfigError::OptFile { .. }) => {}
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

#[test]
fn config_errors_name_files_and_sides() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let cfg = TlsConfig::mutual(&missing, &missing, &missing);
    let e = cfg.check(true).unwrap_err();
    assert!(
        matches!(
            e,
            TlsConfigError::Read {
                what: "cacertfile",
                ..
            }
        ),
        "{e}"
    );
    let mut cfg = TlsConfig::default();
    cfg.client.verify = Verify::Peer;
    let e = cfg.check(false).unwrap_err();
    assert!(e.to_string().contains("cacertfile"), "{e}");
    let mut cfg = TlsConfig::default();
    cfg.client.verify = Verify::None;
    assert!(cfg.check(false).is_ok(), "a client needs no files");
    let e = cfg.check(true).unwrap_err();
    assert!(e.to_string().contains("certfile"), "{e}");
    let bad = dir.path().join("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    cfg.client.certfile = Some(bad.clone());
    let e = cfg.check(false).unwrap_err();
    assert!(matches!(e, TlsConfigError::Pem { .. }), "{e}");
    let key = dir.path().join("enc.key");
    std::fs::write(
        &key,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = load_key(&key).unwrap_err();
    assert!(e.to_string().contains("encrypted"), "{e}");
}

#[test]
fn classifies_alerts_and_certificate_errors() {
    use rustls::Error as E;
    let c = |e: E, role, cert| classify_rustls(&e, role, cert);
    assert!(matches!(
        c(
            E::InvalidCertificate(CertificateError::UnknownIssuer),
            Role::Client,
            true
        ),
        TlsError::PeerCertificateUntrusted { .. }
    ));
    assert!(matches!(
        c(
            E::InvalidCertificate(CertificateError::NotValidForName),
            Role::Client,
            true
        ),
        TlsError::PeerNameMismatch { .. }
    ));
    assert!(matches!(
        c(
            E::InvalidCertificate(CertificateError::Expired),
            Role::Client,
            true
        ),
        TlsError::PeerCertificateInvalid { .. }
    ));
    assert_eq!(
        c(
            E::AlertReceived(AlertDescription::HandshakeFailure),
            Role::Client,
            false
        ),
        TlsError::ClientCertificateRequired
    );
    assert!(matches!(
        c(
            E::AlertReceived(AlertDescription::HandshakeFailure),
            Role::Client,
            true
        ),
        TlsError::Handshake { .. }
    ));
    assert_eq!(
        c(
            E::AlertReceived(AlertDescription::CertificateRequired),
            Role::Client,
            true
        ),
        TlsError::ClientCertificateRequired
    );
    assert_eq!(
        c(
            E::AlertReceived(AlertDescription::UnknownCA),
            Role::Server,
            true
        ),
        TlsError::CertificateRejected {
            alert: "unknown_ca".into()
        }
    );
    assert_eq!(
        c(E::NoCertificatesPresented, Role::Server, true),
        TlsError::PeerPresentedNoCertificate
    );
    assert!(matches!(
        c(
            E::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
            Role::Server,
            true
        ),
        TlsError::PeerNotTls { .. }
    ));
}

#[test]
fn depth_counts_intermediates_other_than_our_cas() {
    let ca = CertificateDer::from(vec![1u8, 2, 3]);
    let i1 = CertificateDer::from(vec![4u8]);
    let i2 = CertificateDer::from(vec![5u8]);
    let cas = vec![ca.clone()];
    assert!(check_depth(&[], &cas, 0).is_ok());
    assert!(check_depth(std::slice::from_ref(&ca), &cas, 0).is_ok());
    assert!(check_depth(std::slice::from_ref(&i1), &cas, 0).is_err());
    assert!(check_depth(&[i1.clone(), i2.clone(), ca], &cas, 2).is_ok());
    assert!(check_depth(&[i1, i2], &cas, 1).is_err());
}
