//! A small HTTP/1.1 client for Consul's API: hyper-util's pooled client over rustls with
//! the ring provider, with a deadline on every request and a cap on every body.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{ConsulConfig, MAX_RESPONSE_BYTES, NAME};
use crate::backend::BackendError;

/// An answer: status, the `X-Consul-Index` header if any, whether it said JSON, the body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub index: Option<u64>,
    pub json: bool,
    pub body: Bytes,
}

impl Answer {
    /// The body as text for error messages (at most 300 characters).
    pub fn text(&self) -> String {
        super::wire::body_text(&self.body)
    }
}

#[derive(Clone)]
pub(crate) struct Http {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    token: Option<HeaderValue>,
    timeout: Duration,
}

fn io_error(context: String, error: std::io::Error) -> BackendError {
    BackendError::Io {
        backend: NAME,
        context,
        source: Arc::new(error),
    }
}

/// The rustls client configuration, with the ring provider given explicitly (no
/// process-wide default is needed or installed).
fn tls_config(config: &ConsulConfig) -> Result<rustls::ClientConfig, BackendError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BackendError::config("consul_scheme", format!("TLS setup: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    let tls = config.tls.clone().unwrap_or_default();
    match &tls.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| {
                    BackendError::config("consul_cacertfile", format!("{}: {e}", path.display()))
                })?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    BackendError::config("consul_cacertfile", format!("{}: {e}", path.display()))
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(BackendError::config(
                    "consul_cacertfile",
                    format!("{}: no usable certificate", path.display()),
                ));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(BackendError::config(
                    "consul_cacertfile",
                    "https without a CA bundle needs the system's root certificates, and none were found",
                ));
            }
        }
    }
    let builder = builder.with_root_certificates(roots);
    match &tls.client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    BackendError::config("consul_certfile", format!("{}: {e}", cert.display()))
                })?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                BackendError::config("consul_keyfile", format!("{}: {e}", key.display()))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| BackendError::config("consul_certfile", e.to_string()))
        }
    }
}

/// An error and its sources on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

impl Http {
    pub fn new(config: &ConsulConfig) -> Result<Http, BackendError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.timeout));
        http.set_nodelay(true);
        let connector = if config.scheme == "https" {
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls_config(config)?)
                .https_only()
                .enable_http1()
                .wrap_connector(http)
        } else {
            // Plain HTTP through the same connector type; no TLS is set up.
            let plain = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| BackendError::config("consul_scheme", format!("TLS setup: {e}")))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(plain)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http)
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build(connector);
        let token = match &config.acl_token {
            None => None,
            Some(token) => {
                let mut value = HeaderValue::from_str(token).map_err(|_| {
                    BackendError::config(
                        "consul_acl_token",
                        "the token contains characters not allowed in an HTTP header",
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Http {
            client,
            base: config.base_url(),
            token,
            timeout: config.timeout,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request; `extra` lengthens the deadline (blocking queries).
    pub async fn send(
        &self,
        operation: &'static str,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        extra: Duration,
    ) -> Result<Answer, BackendError> {
        let deadline = self.timeout + extra;
        match tokio::time::timeout(deadline, self.send_unbounded(method, path_and_query, body))
            .await
        {
            Ok(result) => result,
            Err(_) => Err(BackendError::timeout(NAME, operation, deadline)),
        }
    }

    async fn send_unbounded(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, BackendError> {
        let uri = format!("{}{path_and_query}", self.base);
        let mut request = Request::builder().method(method).uri(&uri);
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token.clone());
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| BackendError::config("consul_host", format!("{uri}: {e}")))?;
        let response = self.client.request(request).await.map_err(|e| {
            if let Some(io) = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .filter(|io| io.kind() == std::io::ErrorKind::InvalidData)
            {
                // A TLS failure: the certificate, most often.
                return io_error(
                    format!("TLS with {}", self.base),
                    std::io::Error::new(io.kind(), io.to_string()),
                );
            }
            BackendError::Unavailable {
                backend: NAME,
                endpoint: self.base.clone(),
                detail: chain(&e),
            }
        })?;
        let status = response.status();
        let headers = response.headers();
        let json = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        let index = match headers.get("X-Consul-Index") {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| BackendError::InvalidResponse {
                        backend: NAME,
                        detail: format!("X-Consul-Index {v:?} is not a number"),
                    })?,
            ),
        };
        if let Some(length) = response.headers().get(hyper::header::CONTENT_LENGTH)
            && let Some(length) = length.to_str().ok().and_then(|v| v.parse::<u64>().ok())
            && length > MAX_RESPONSE_BYTES as u64
        {
            return Err(BackendError::InvalidResponse {
                backend: NAME,
                detail: format!(
                    "a {length}-byte answer from {path_and_query} (limit {MAX_RESPONSE_BYTES})"
                ),
            });
        }
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    BackendError::InvalidResponse {
                        backend: NAME,
                        detail: format!(
                            "the answer from {path_and_query} is larger than {MAX_RESPONSE_BYTES} bytes"
                        ),
                    }
                } else {
                    BackendError::InvalidResponse {
                        backend: NAME,
                        detail: format!(
                            "the answer from {path_and_query} was cut short: {}",
                            chain(&*e)
                        ),
                    }
                }
            })?
            .to_bytes();
        Ok(Answer {
            status,
            index,
            json,
            body,
        })
    }
}

/// The typed error for a non-success answer.
pub(crate) fn status_error(path: &str, answer: &Answer, base: &str) -> BackendError {
    let detail = format!("{path}: HTTP {}: {}", answer.status, answer.text());
    match answer.status.as_u16() {
        401 | 403 => BackendError::Unauthorized {
            backend: NAME,
            detail,
        },
        429 | 500..=599 => BackendError::Unavailable {
            backend: NAME,
            endpoint: base.to_owned(),
            detail,
        },
        400..=499 => BackendError::Rejected {
            backend: NAME,
            detail,
        },
        _ => BackendError::InvalidResponse {
            backend: NAME,
            detail,
        },
    }
}

/// Parses a JSON answer into `T`, checking the content type first.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    path: &str,
    answer: &Answer,
) -> Result<T, BackendError> {
    super::wire::from_json(path, json_body(path, answer)?)
}

/// Checks that an answer says it is JSON and returns its body.
pub(crate) fn json_body<'a>(path: &str, answer: &'a Answer) -> Result<&'a [u8], BackendError> {
    if !answer.json {
        return Err(BackendError::InvalidResponse {
            backend: NAME,
            detail: format!(
                "{path}: the answer is not JSON (Content-Type is not application/json): {:?}",
                answer.text()
            ),
        });
    }
    Ok(&answer.body)
}
