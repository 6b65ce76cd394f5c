//! A test PKI made with rcgen: a CA, a node certificate (server and client use), a
//! client-only certificate, and a second, unrelated CA with a certificate of its own;
//! plus `ssl_dist_optfile`s for OTP and the matching `TlsConfig`s.

use std::path::{Path, PathBuf};

use autocluster::tls::TlsConfig;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The short host name OTP uses in `-sname` node names.
pub fn short_hostname() -> String {
    let full = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| {
            let out = std::process::Command::new("hostname")
                .output()
                .expect("run hostname");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        });
    full.split('.').next().unwrap_or(&full).to_owned()
}

/// The test PKI, in a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub host: String,
}

impl Pki {
    pub fn generate() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("autocluster-tls-")
            .tempdir_in("/tmp")
            .expect("temporary directory");
        let host = short_hostname();
        let pki = Pki { dir, host };
        let ca = pki.ca("ca", "autocluster test CA");
        let other = pki.ca("other_ca", "an unrelated CA");
        let both = [
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        // OTP checks the host part of the node name it dials against the certificate.
        let names = vec![pki.host.clone(), "localhost".into(), "127.0.0.1".into()];
        pki.leaf("node", &ca, names.clone(), &both);
        pki.leaf(
            "client",
            &ca,
            vec![],
            &[ExtendedKeyUsagePurpose::ClientAuth],
        );
        pki.leaf("rogue", &other, names, &both);
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca(&self, name: &str, cn: &str) -> Issuer<'static, KeyPair> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-signed CA");
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).expect("write CA");
        Issuer::new(params, key)
    }

    fn leaf(
        &self,
        name: &str,
        issuer: &Issuer<'static, KeyPair>,
        names: Vec<String>,
        usages: &[ExtendedKeyUsagePurpose],
    ) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages.to_vec();
        let cert = params.signed_by(&key, issuer).expect("signed");
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).expect("write cert");
        let key_path = self.path(&format!("{name}.key"));
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        set_private(&key_path);
    }

    /// Writes an `ssl_dist_optfile` with these server and client option lists
    /// (Erlang text, `$DIR` standing for the PKI directory).
    pub fn optfile(&self, name: &str, server: &str, client: &str) -> PathBuf {
        let dir = self.dir.path().display().to_string();
        let text =
            format!("[{{server, [{server}]}},\n {{client, [{client}]}}].\n").replace("$DIR", &dir);
        let path = self.path(name);
        std::fs::write(&path, text).expect("write optfile");
        path
    }

    /// The options of a node that verifies and is verified, with `ca` and `cert`.
    pub fn mutual_options(&self, ca: &str, cert: &str) -> (String, String) {
        let files = format!(
            r#"{{cacertfile, "$DIR/{ca}.pem"}}, {{certfile, "$DIR/{cert}.pem"}}, {{keyfile, "$DIR/{cert}.key"}}"#
        );
        (
            format!("{files}, {{verify, verify_peer}}, {{fail_if_no_peer_cert, true}}"),
            format!("{files}, {{verify, verify_peer}}"),
        )
    }

    /// An optfile for mutual TLS with `ca` and `cert`.
    pub fn mutual(&self, file: &str, ca: &str, cert: &str) -> PathBuf {
        let (server, client) = self.mutual_options(ca, cert);
        self.optfile(file, &server, &client)
    }

    /// Our configuration for mutual TLS with `ca` and `cert`.
    pub fn config(&self, ca: &str, cert: &str) -> TlsConfig {
        TlsConfig::mutual(
            self.path(&format!("{ca}.pem")),
            self.path(&format!("{cert}.pem")),
            self.path(&format!("{cert}.key")),
        )
    }
}

pub fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}
