//! TLS distribution: what OTP runs with `-proto_dist inet_tls`.
//!
//! With [`NodeBuilder::tls`](crate::node::NodeBuilder::tls) every distribution
//! connection the node dials or accepts runs a TLS handshake first, then the usual
//! distribution handshake inside it, with each handshake message framed by a 4-byte
//! length (OTP's `inet_tls_dist` opens its TLS sockets with `{packet, 4}`), then the usual
//! `Len:32` frames and ticks. EPMD is unchanged: plain TCP.
//!
//! [`TlsConfig`] holds what an OTP node's `-ssl_dist_optfile` holds, with the same
//! meaning: separate [`ServerOptions`] (used when a peer dials us) and
//! [`ClientOptions`] (used when we dial), each with PEM files (`certfile`, `keyfile`,
//! `cacertfile`), a [`Verify`] mode, and on the server side `fail_if_no_peer_cert`.
//! [`TlsConfig::from_ssl_dist_optfile`] reads the very file the Erlang nodes use and
//! refuses, by name, every option it cannot honour.
//!
//! ```no_run
//! use autocluster::tls::TlsConfig;
//! use autocluster::{Cookie, Node};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // The file RabbitMQ's nodes are started with (`-ssl_dist_optfile`)...
//! let tls = TlsConfig::from_ssl_dist_optfile("/etc/rabbitmq/inter_node_tls.config")?;
//! // ...or the same thing spelled in Rust: one CA, this node's certificate and key,
//! // verify_peer and fail_if_no_peer_cert on both sides.
//! let _same = TlsConfig::mutual("/etc/tls/ca.pem", "/etc/tls/node.pem", "/etc/tls/node.key");
//! let node = Node::builder("rust@host1".parse()?, Cookie::from_default_file()?)
//!     .tls(tls)
//!     .start()
//!     .await?;
//! node.connect(&"rabbit@host1".parse()?).await?;
//! # Ok(()) }
//! ```
//!
//! ## How OTP 25's `inet_tls_dist` checks certificates, and how this module matches it
//!
//! * `verify` defaults to `verify_none` on both sides in OTP 25 (OTP 26 changed the
//!   client's default to `verify_peer`): nothing is checked. An empty option list read
//!   by [`TlsConfig::from_ssl_dist_optfile`] means the same here, and the node logs a
//!   warning when it starts. [`TlsConfig::mutual`] and the `Default`s of the option
//!   structs verify.
//! * Client side (the node that dials): `inet_tls_dist` passes
//!   `{server_name_indication, Host}`, `Host` being the host part of the node name
//!   dialled (`vm` for `rabbit@vm`), and with `verify_peer` OTP's `ssl` checks the
//!   server's certificate against that name (`hostname_check_failed` otherwise). So OTP
//!   *does* check host names by default once `verify_peer` is on, against the host part
//!   of the node name, short names included; `{server_name_indication, disable}` turns
//!   the check off (the chain is still verified) and sends no SNI. Here:
//!   [`ServerNameIndication::NodeHost`] (the default),
//!   [`ServerNameIndication::Disable`], [`ServerNameIndication::Name`].
//! * Server side (the node that accepts): `verify_peer` asks for a client certificate and
//!   verifies its chain, with no host name check; `fail_if_no_peer_cert` (default false)
//!   rejects a client that sends none. `verify_none` does not ask for one.
//! * `inet_tls_dist` offers only TLS 1.2 unless `versions` says otherwise; this module
//!   offers TLS 1.2 and 1.3 unless `versions` says otherwise, so it meets either.
//! * Keys: `keyfile` defaults to `certfile` (a PEM file may hold both), as in OTP.
//!
//! Every rustls configuration is built once, when the node starts, with an explicit ring
//! `CryptoProvider`: no process-level provider is needed or installed. No key material
//! is ever logged or put in an error.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use zeroize::Zeroizing;

use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{PemObject as _, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::term::{Term, parse_term};

mod handshake;
mod verify;

pub(crate) use handshake::{ClientStream, Role, ServerStream};
use verify::{AcceptAnyServer, DistClientVerifier, DistServerVerifier};

/// Whether a side verifies its peer's certificate (OTP's `verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// `verify_peer`: the peer's chain must lead to a CA of `cacertfile`.
    Peer,
    /// `verify_none`: anything is accepted, so an active attacker can impersonate any
    /// node. TLS then still hides the traffic (and the cookie challenge) from a passive
    /// eavesdropper, but nothing more. The node logs a warning when it starts.
    None,
}

/// The server name a client sends (SNI) and checks in the server's certificate when it
/// verifies it (OTP's client option `server_name_indication`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ServerNameIndication {
    /// The host part of the node name dialled (`vm` for `rabbit@vm`), as `inet_tls_dist`
    /// passes it: the certificate of `rabbit@vm` must name `vm` (DNS name or IP address).
    #[default]
    NodeHost,
    /// `disable`: no SNI and no host name check; the chain is still verified.
    Disable,
    /// This name, for every peer.
    Name(String),
}

/// A TLS protocol version (OTP's `versions` entries `'tlsv1.2'` and `'tlsv1.3'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2, the only version OTP 25's distribution offers by default.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// The options used when a peer dials this node (OTP's `{server, [...]}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// This node's certificate chain (PEM), presented to connecting peers. Required for
    /// a listening node.
    pub certfile: Option<PathBuf>,
    /// The private key of `certfile` (PEM: PKCS#8, PKCS#1 or SEC1, unencrypted); `None`
    /// reads it from `certfile`, as OTP does.
    pub keyfile: Option<PathBuf>,
    /// The CAs client certificates must lead to (PEM).
    pub cacertfile: Option<PathBuf>,
    /// Whether to ask for and verify a client certificate.
    pub verify: Verify,
    /// With [`Verify::Peer`], refuse a client that presents no certificate.
    pub fail_if_no_peer_cert: bool,
    /// The most intermediate CA certificates allowed between a client's certificate and
    /// the trusted CA (OTP's `depth`, default 10), counted on the chain the peer sends.
    pub depth: u32,
    /// The TLS versions offered; empty for TLS 1.2 and 1.3.
    pub versions: Vec<TlsVersion>,
    /// Prefer our cipher suite order over the client's (OTP's `honor_cipher_order`).
    pub honor_cipher_order: bool,
    /// Allow session resumption (OTP's `reuse_sessions`, default true).
    pub reuse_sessions: bool,
}

/// The options used when this node dials a peer (OTP's `{client, [...]}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// This node's client certificate chain (PEM), presented when the peer asks for one;
    /// `None` presents none.
    pub certfile: Option<PathBuf>,
    /// The private key of `certfile`; `None` reads it from `certfile`.
    pub keyfile: Option<PathBuf>,
    /// The CAs the servers' certificates must lead to (PEM).
    pub cacertfile: Option<PathBuf>,
    /// Whether to verify the server's certificate.
    pub verify: Verify,
    /// The name sent and checked (see [`ServerNameIndication`]).
    pub server_name_indication: ServerNameIndication,
    /// The most intermediate CA certificates allowed (OTP's `depth`, default 10).
    pub depth: u32,
    /// The TLS versions offered; empty for TLS 1.2 and 1.3.
    pub versions: Vec<TlsVersion>,
    /// Resume sessions (OTP's `reuse_sessions`, default true).
    pub reuse_sessions: bool,
}

/// OTP's default `depth`.
const DEFAULT_DEPTH: u32 = 10;

impl Default for ServerOptions {
    /// Verifying defaults: `verify_peer` and `fail_if_no_peer_cert`; no files.
    fn default() -> Self {
        ServerOptions {
            certfile: None,
            keyfile: None,
            cacertfile: None,
            verify: Verify::Peer,
            fail_if_no_peer_cert: true,
            depth: DEFAULT_DEPTH,
            versions: Vec::new(),
            honor_cipher_order: false,
            reuse_sessions: true,
        }
    }
}

impl ServerOptions {
    /// What OTP 25 uses for an empty `{server, []}` list: `verify_none`.
    pub fn otp_defaults() -> Self {
        ServerOptions {
            verify: Verify::None,
            fail_if_no_peer_cert: false,
            ..ServerOptions::default()
        }
    }
}

impl Default for ClientOptions {
    /// Verifying defaults: `verify_peer` with the host name check; no files.
    fn default() -> Self {
        ClientOptions {
            certfile: None,
            keyfile: None,
            cacertfile: None,
            verify: Verify::Peer,
            server_name_indication: ServerNameIndication::NodeHost,
            depth: DEFAULT_DEPTH,
            versions: Vec::new(),
            reuse_sessions: true,
        }
    }
}

impl ClientOptions {
    /// What OTP 25 uses for an empty `{client, []}` list: `verify_none`.
    pub fn otp_defaults() -> Self {
        ClientOptions {
            verify: Verify::None,
            ..ClientOptions::default()
        }
    }
}

/// TLS distribution settings: the server side and the client side, as in an OTP
/// `ssl_dist_optfile`. Holds file paths only, never key material.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// Used when a peer dials this node.
    pub server: ServerOptions,
    /// Used when this node dials a peer.
    pub client: ClientOptions,
}

/// Which side of a [`TlsConfig`] a setting belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `{server, [...]}`.
    Server,
    /// `{client, [...]}`.
    Client,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Server => "server",
            Side::Client => "client",
        })
    }
}

/// Why a [`TlsConfig`] cannot be read or used. Never holds key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A file cannot be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// What the file is (`certfile`, `keyfile`, `cacertfile`, `ssl_dist_optfile`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A PEM file is malformed or holds nothing usable.
    #[error("{what} {}: {reason}", path.display())]
    Pem {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// The settings of one side contradict each other or miss a file.
    #[error("TLS {side} options: {reason}")]
    Invalid {
        /// The side.
        side: Side,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificates or keys (e.g. the key does not match the
    /// certificate, or a CA certificate cannot be parsed).
    #[error("TLS {side} options: {reason}")]
    Rejected {
        /// The side.
        side: Side,
        /// rustls' reason.
        reason: String,
    },
    /// The `ssl_dist_optfile` is not one literal Erlang term of the expected shape.
    #[error("ssl_dist_optfile {}: {reason}", path.display())]
    OptFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The `ssl_dist_optfile` holds an option this crate cannot honour.
    #[error("ssl_dist_optfile {}: {side} option {option}: {reason}", path.display())]
    UnsupportedOption {
        /// The file.
        path: PathBuf,
        /// The side it is in.
        side: Side,
        /// The option's name.
        option: String,
        /// Why it is refused, and what to do instead.
        reason: String,
    },
}

impl TlsConfig {
    /// Mutual TLS with one CA: both sides present `cert`/`key`, verify the peer against
    /// `ca` (`verify_peer`), the server requires a client certificate
    /// (`fail_if_no_peer_cert`), and the client checks the server's certificate against
    /// the host part of the node name dialled.
    pub fn mutual(
        ca: impl Into<PathBuf>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> TlsConfig {
        let (ca, cert, key) = (ca.into(), cert.into(), key.into());
        TlsConfig {
            server: ServerOptions {
                certfile: Some(cert.clone()),
                keyfile: Some(key.clone()),
                cacertfile: Some(ca.clone()),
                ..ServerOptions::default()
            },
            client: ClientOptions {
                certfile: Some(cert),
                keyfile: Some(key),
                cacertfile: Some(ca),
                ..ClientOptions::default()
            },
        }
    }

    /// Reads an OTP `ssl_dist_optfile` (the file given to `erl -ssl_dist_optfile`).
    ///
    /// OTP's `ssl_dist_sup` reads it as exactly one Erlang expression ending with `.`
    /// (not `file:consult`: a second term is an error), Latin-1 unless the file says
    /// `%% coding: utf-8`, whose value must be `[{server, Opts}, {client, Opts}]` (either
    /// may be missing: an empty option list, `verify_none` in OTP 25). This reads literal
    /// terms only (OTP evaluates the expression, so a function call there is refused
    /// here, by position).
    ///
    /// Understood options: `certfile`, `keyfile`, `cacertfile`, `verify`,
    /// `fail_if_no_peer_cert` (server), `server_name_indication` (client),
    /// `customize_hostname_check` (`[]` only), `depth`, `versions` (`'tlsv1.2'`,
    /// `'tlsv1.3'`), `reuse_sessions`, `honor_cipher_order` (server),
    /// `secure_renegotiate` (rustls never renegotiates), `password` (`""` only: keys must
    /// not be encrypted), `crl_check` (`false` only), and the Erlang-process settings
    /// `hibernate_after`, `log_level`, `log_alert`, which have no effect on the wire.
    /// Any other option is an error naming it ([`TlsConfigError::UnsupportedOption`]):
    /// nothing is silently ignored.
    pub fn from_ssl_dist_optfile(path: impl AsRef<Path>) -> Result<TlsConfig, TlsConfigError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| TlsConfigError::Read {
            what: "ssl_dist_optfile",
            path: path.to_owned(),
            source,
        })?;
        let text = match String::from_utf8(bytes) {
            Ok(s) => s,
            // OTP's default encoding for the file is Latin-1.
            Err(e) => e.into_bytes().iter().map(|&b| char::from(b)).collect(),
        };
        Self::parse_ssl_dist_opts(&text, path)
    }

    /// Parses the text of an `ssl_dist_optfile`; `origin` names it in errors. See
    /// [`TlsConfig::from_ssl_dist_optfile`].
    pub fn parse_ssl_dist_opts(text: &str, origin: &Path) -> Result<TlsConfig, TlsConfigError> {
        let file_error = |reason: String| TlsConfigError::OptFile {
            path: origin.to_owned(),
            reason,
        };
        let term = parse_term(text).map_err(|e| {
            file_error(format!(
                "{e} (the file must hold one literal Erlang term ending with '.'; \
                 expressions such as function calls are not evaluated)"
            ))
        })?;
        let entries = term.into_list_elements().ok_or_else(|| {
            file_error("expected a list [{server, [...]}, {client, [...]}]".into())
        })?;
        let mut config = TlsConfig {
            server: ServerOptions::otp_defaults(),
            client: ClientOptions::otp_defaults(),
        };
        for entry in entries {
            let (side, opts) = match entry.as_tuple() {
                Some([k, v]) if k.is_atom("server") => (Side::Server, v.clone()),
                Some([k, v]) if k.is_atom("client") => (Side::Client, v.clone()),
                _ => {
                    return Err(file_error(format!(
                        "unexpected entry {entry}: expected {{server, [...]}} or {{client, [...]}}"
                    )));
                }
            };
            let opts = opts
                .into_list_elements()
                .ok_or_else(|| file_error(format!("the {side} options must be a list")))?;
            // A repeated {server, _} replaces the earlier one, as in OTP's ets table.
            match side {
                Side::Server => config.server = ServerOptions::otp_defaults(),
                Side::Client => config.client = ClientOptions::otp_defaults(),
            }
            for opt in opts {
                config.apply_option(side, &opt, origin)?;
            }
        }
        Ok(config)
    }

    fn apply_option(
        &mut self,
        side: Side,
        opt: &Term,
        origin: &Path,
    ) -> Result<(), TlsConfigError> {
        let Some([key, value]) = opt.as_tuple() else {
            return Err(TlsConfigError::OptFile {
                path: origin.to_owned(),
                reason: format!("{side} option {opt} is not a {{Key, Value}} pair"),
            });
        };
        let name = key
            .as_atom()
            .map_or_else(|| key.to_string(), |a| a.as_str().to_owned());
        let unsupported = |reason: &str| TlsConfigError::UnsupportedOption {
            path: origin.to_owned(),
            side,
            option: name.clone(),
            reason: reason.to_owned(),
        };
        let bad_value =
            |expected: &str| unsupported(&format!("expected {expected}, found {value}"));
        let path = || -> Result<PathBuf, TlsConfigError> {
            value
                .as_text()
                .filter(|t| !t.is_empty())
                .map(|t| PathBuf::from(t.into_owned()))
                .ok_or_else(|| bad_value("a file name (a string)"))
        };
        let boolean = || value.as_bool().ok_or_else(|| bad_value("true or false"));
        match (name.as_str(), side) {
            ("certfile", Side::Server) => self.server.certfile = Some(path()?),
            ("certfile", Side::Client) => self.client.certfile = Some(path()?),
            ("keyfile", Side::Server) => self.server.keyfile = Some(path()?),
            ("keyfile", Side::Client) => self.client.keyfile = Some(path()?),
            ("cacertfile", Side::Server) => self.server.cacertfile = Some(path()?),
            ("cacertfile", Side::Client) => self.client.cacertfile = Some(path()?),
            ("verify", _) => {
                let v = if value.is_atom("verify_peer") {
                    Verify::Peer
                } else if value.is_atom("verify_none") {
                    Verify::None
                } else {
                    return Err(bad_value("verify_peer or verify_none"));
                };
                match side {
                    Side::Server => self.server.verify = v,
                    Side::Client => self.client.verify = v,
                }
            }
            ("fail_if_no_peer_cert", Side::Server) => {
                self.server.fail_if_no_peer_cert = boolean()?;
            }
            ("fail_if_no_peer_cert", Side::Client) => {
                return Err(unsupported(
                    "a server option (the client side always presents its certificate when asked)",
                ));
            }
            ("server_name_indication", Side::Client) => {
                self.client.server_name_indication = if value.is_atom("disable") {
                    ServerNameIndication::Disable
                } else {
                    ServerNameIndication::Name(
                        path()
                            .map_err(|_| bad_value("disable or a host name"))?
                            .to_string_lossy()
                            .into_owned(),
                    )
                };
            }
            ("server_name_indication", Side::Server) => {
                return Err(unsupported("a client option"));
            }
            ("customize_hostname_check", _) => {
                if !value.is_nil() {
                    return Err(unsupported(
                        "only [] is supported: host names are matched as RFC 6125 says \
                         (a wildcard matches one leftmost label); remove the option",
                    ));
                }
            }
            ("depth", _) => {
                let d = value
                    .as_integer()
                    .and_then(|d| u32::try_from(d).ok())
                    .ok_or_else(|| bad_value("a non-negative integer"))?;
                match side {
                    Side::Server => self.server.depth = d,
                    Side::Client => self.client.depth = d,
                }
            }
            ("versions", _) => {
                let list = value
                    .clone()
                    .into_list_elements()
                    .ok_or_else(|| bad_value("a list of versions"))?;
                let mut versions = Vec::new();
                for v in list {
                    if v.is_atom("tlsv1.2") {
                        versions.push(TlsVersion::Tls12);
                    } else if v.is_atom("tlsv1.3") {
                        versions.push(TlsVersion::Tls13);
                    } else {
                        return Err(unsupported(&format!(
                            "version {v} is not supported (rustls speaks 'tlsv1.2' and 'tlsv1.3' only)"
                        )));
                    }
                }
                if versions.is_empty() {
                    return Err(bad_value("at least one version"));
                }
                match side {
                    Side::Server => self.server.versions = versions,
                    Side::Client => self.client.versions = versions,
                }
            }
            ("reuse_sessions", _) => {
                let b = boolean()?;
                match side {
                    Side::Server => self.server.reuse_sessions = b,
                    Side::Client => self.client.reuse_sessions = b,
                }
            }
            ("honor_cipher_order", Side::Server) => self.server.honor_cipher_order = boolean()?,
            ("secure_renegotiate", _) => {
                // rustls never renegotiates, which is what secure_renegotiate protects.
                boolean()?;
            }
            ("password", _) => {
                if !value.as_text().is_some_and(|t| t.is_empty()) {
                    return Err(unsupported(
                        "encrypted private keys are not supported: decrypt the key file \
                         (openssl pkey -in KEY -out PLAIN) and keep it readable by its owner only",
                    ));
                }
            }
            ("crl_check", _) => {
                if !value.is_atom("false") {
                    return Err(unsupported("CRL checking is not supported"));
                }
            }
            ("hibernate_after" | "log_level" | "log_alert", _) => {
                // Settings of OTP's TLS processes; nothing on the wire depends on them.
            }
            ("ciphers", _) => {
                return Err(unsupported(
                    "cipher lists are not supported: rustls offers only modern AEAD suites \
                     with forward secrecy (AES-GCM, ChaCha20-Poly1305); remove the option",
                ));
            }
            ("dhfile", _) => {
                return Err(unsupported(
                    "rustls uses only ECDHE key exchange: remove the option",
                ));
            }
            ("verify_fun", _) => {
                return Err(unsupported(
                    "custom verification functions cannot run here; \
                     verify_peer checks the chain (and, on the client, the host name)",
                ));
            }
            ("cacerts" | "cert" | "key" | "certs_keys", _) => {
                return Err(unsupported(
                    "inline DER is not supported: use cacertfile, certfile and keyfile",
                ));
            }
            _ => return Err(unsupported("not supported by autocluster")),
        }
        Ok(())
    }

    /// Reads every file and builds the rustls configurations, as the node does when it
    /// starts; `listening` also checks the server side. Useful to fail early.
    pub fn check(&self, listening: bool) -> Result<(), TlsConfigError> {
        TlsContext::new(self, listening).map(|_| ())
    }

    /// What is insecure in this configuration, one sentence each (the node logs them
    /// at warn level when it starts).
    pub fn warnings(&self, listening: bool) -> Vec<String> {
        let mut w = Vec::new();
        if self.client.verify == Verify::None {
            w.push(
                "TLS distribution client uses verify_none: the certificates of the nodes \
                 this node dials are not checked, so anyone on the network path can \
                 impersonate them; set verify_peer and cacertfile"
                    .to_owned(),
            );
        }
        if listening && self.server.verify == Verify::None {
            w.push(
                "TLS distribution server uses verify_none: any TLS client may connect \
                 (only the cookie stops it); set verify_peer, fail_if_no_peer_cert and cacertfile"
                    .to_owned(),
            );
        } else if listening && !self.server.fail_if_no_peer_cert {
            w.push(
                "TLS distribution server does not require client certificates \
                 (fail_if_no_peer_cert is false): clients without one are let through \
                 to the cookie handshake"
                    .to_owned(),
            );
        }
        w
    }
}

// ---------------------------------------------------------------------------------
// Building the rustls configurations
// ---------------------------------------------------------------------------------

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn versions(v: &[TlsVersion]) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let mut out = Vec::new();
    if v.is_empty() || v.contains(&TlsVersion::Tls13) {
        out.push(&rustls::version::TLS13);
    }
    if v.is_empty() || v.contains(&TlsVersion::Tls12) {
        out.push(&rustls::version::TLS12);
    }
    out
}

fn read_file(what: &'static str, path: &Path) -> Result<Zeroizing<Vec<u8>>, TlsConfigError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| TlsConfigError::Read {
            what,
            path: path.to_owned(),
            source,
        })
}

fn pem_error(what: &'static str, path: &Path, e: &rustls::pki_types::pem::Error) -> TlsConfigError {
    use rustls::pki_types::pem::Error as E;
    // Our own words: a PEM error may quote a line of the file, and a key file's lines
    // are secret.
    let reason = match e {
        E::MissingSectionEnd { .. } => "not valid PEM: a section has no END line",
        E::IllegalSectionStart { .. } => "not valid PEM: malformed BEGIN line",
        E::Base64Decode(_) => "not valid PEM: bad base64",
        E::SectionTooLarge => "not valid PEM: a section is too large",
        _ => "not valid PEM",
    };
    TlsConfigError::Pem {
        what,
        path: path.to_owned(),
        reason,
    }
}

fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let bytes = read_file(what, path)?;
    let mut certs = Vec::new();
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes) {
        match item {
            Ok((SectionKind::Certificate, der)) => certs.push(CertificateDer::from(der)),
            Ok((_, der)) => drop(Zeroizing::new(der)),
            Err(e) => return Err(pem_error(what, path, &e)),
        }
    }
    if certs.is_empty() {
        return Err(TlsConfigError::Pem {
            what,
            path: path.to_owned(),
            reason: "holds no CERTIFICATE section",
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    let what = "keyfile";
    let bytes = read_file(what, path)?;
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes) {
        match item {
            Ok((kind, der)) => {
                let der = Zeroizing::new(der);
                let key = match kind {
                    SectionKind::PrivateKey => PrivateKeyDer::Pkcs8(der.to_vec().into()),
                    SectionKind::RsaPrivateKey => PrivateKeyDer::Pkcs1(der.to_vec().into()),
                    SectionKind::EcPrivateKey => PrivateKeyDer::Sec1(der.to_vec().into()),
                    _ => continue,
                };
                return Ok(key);
            }
            Err(e) => return Err(pem_error(what, path, &e)),
        }
    }
    let encrypted = bytes.windows(9).any(|w| w == b"ENCRYPTED");
    Err(TlsConfigError::Pem {
        what,
        path: path.to_owned(),
        reason: if encrypted {
            "the private key is encrypted, which is not supported: decrypt it \
             (openssl pkey -in KEY -out PLAIN) and keep it readable by its owner only"
        } else {
            "holds no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section"
        },
    })
}

fn load_roots(
    side: Side,
    path: Option<&Path>,
) -> Result<(Arc<rustls::RootCertStore>, Vec<CertificateDer<'static>>), TlsConfigError> {
    let Some(path) = path else {
        return Err(TlsConfigError::Invalid {
            side,
            reason: "verify_peer needs cacertfile (the CAs to trust)".into(),
        });
    };
    let certs = load_certs("cacertfile", path)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in &certs {
        roots.add(c.clone()).map_err(|e| TlsConfigError::Rejected {
            side,
            reason: format!("a CA certificate of {} cannot be used: {e}", path.display()),
        })?;
    }
    Ok((Arc::new(roots), certs))
}

/// The rustls state of a node: built once, shared by every connection.
pub(crate) struct TlsContext {
    connector: TlsConnector,
    acceptor: Option<TlsAcceptor>,
    sni: ServerNameIndication,
    has_client_cert: bool,
}

impl TlsContext {
    pub(crate) fn new(cfg: &TlsConfig, listening: bool) -> Result<TlsContext, TlsConfigError> {
        let provider = provider();
        let connector = TlsConnector::from(Arc::new(client_config(&cfg.client, &provider)?));
        let acceptor = if listening {
            Some(TlsAcceptor::from(Arc::new(server_config(
                &cfg.server,
                &provider,
            )?)))
        } else {
            None
        };
        Ok(TlsContext {
            connector,
            acceptor,
            sni: cfg.client.server_name_indication.clone(),
            has_client_cert: cfg.client.certfile.is_some(),
        })
    }
}

fn rejected(side: Side) -> impl Fn(rustls::Error) -> TlsConfigError {
    move |e| TlsConfigError::Rejected {
        side,
        reason: e.to_string(),
    }
}

fn client_config(
    opts: &ClientOptions,
    provider: &Arc<CryptoProvider>,
) -> Result<rustls::ClientConfig, TlsConfigError> {
    let side = Side::Client;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(&opts.versions))
        .map_err(rejected(side))?;
    let verifier: Arc<dyn ServerCertVerifier> = match opts.verify {
        Verify::None => Arc::new(AcceptAnyServer {
            provider: provider.clone(),
        }),
        Verify::Peer => {
            let (roots, cas) = load_roots(side, opts.cacertfile.as_deref())?;
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots,
                provider.clone(),
            )
            .build()
            .map_err(|e| TlsConfigError::Rejected {
                side,
                reason: e.to_string(),
            })?;
            Arc::new(DistServerVerifier {
                inner,
                check_name: opts.server_name_indication != ServerNameIndication::Disable,
                depth: opts.depth,
                cas,
            })
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &opts.certfile {
        Some(cert) => {
            let certs = load_certs("certfile", cert)?;
            let key = load_key(opts.keyfile.as_deref().unwrap_or(cert))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(rejected(side))?
        }
        None => {
            if opts.keyfile.is_some() {
                return Err(TlsConfigError::Invalid {
                    side,
                    reason: "keyfile without certfile".into(),
                });
            }
            builder.with_no_client_auth()
        }
    };
    config.enable_sni = opts.server_name_indication != ServerNameIndication::Disable;
    if !opts.reuse_sessions {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(config)
}

fn server_config(
    opts: &ServerOptions,
    provider: &Arc<CryptoProvider>,
) -> Result<rustls::ServerConfig, TlsConfigError> {
    let side = Side::Server;
    let Some(cert) = &opts.certfile else {
        return Err(TlsConfigError::Invalid {
            side,
            reason: "a listening node needs certfile (its certificate)".into(),
        });
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(&opts.versions))
        .map_err(rejected(side))?;
    let builder = match opts.verify {
        Verify::None => {
            if opts.fail_if_no_peer_cert {
                return Err(TlsConfigError::Invalid {
                    side,
                    reason: "fail_if_no_peer_cert needs verify_peer (OTP refuses this \
                             combination too)"
                        .into(),
                });
            }
            builder.with_no_client_auth()
        }
        Verify::Peer => {
            let (roots, cas) = load_roots(side, opts.cacertfile.as_deref())?;
            let mut b = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots,
                provider.clone(),
            );
            if !opts.fail_if_no_peer_cert {
                b = b.allow_unauthenticated();
            }
            let inner = b.build().map_err(|e| TlsConfigError::Rejected {
                side,
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(Arc::new(DistClientVerifier {
                inner,
                depth: opts.depth,
                cas,
            }))
        }
    };
    let certs = load_certs("certfile", cert)?;
    let key = load_key(opts.keyfile.as_deref().unwrap_or(cert))?;
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(rejected(side))?;
    config.ignore_client_order = opts.honor_cipher_order;
    if !opts.reuse_sessions {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(config)
}

#[cfg(test)]
mod tests;
