//! The networked half of the Kubernetes backend: [`KubernetesBackend`] over `kube`.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{Request, Response};
use http_body_util::Limited;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, ListParams, PostParams};
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::{
    AddressType, InCluster, KubernetesApi, KubernetesConfig, MAX_RESPONSE_BYTES, NAME, ordinal,
    statefulset_seed,
};
use crate::NodeName;
use crate::backend::{
    Backend, BackendError, LockGuard, LockRequest, LockSession, MAX_LISTED_NODES, Refresh,
    RegisteredNode, Timings, sort_nodes, with_timeout,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The Kubernetes backend. Cheap to clone; clones share one client.
///
/// Construction checks the configuration only; the files (token, CA, namespace,
/// kubeconfig) are read and the client built on first use, and again on the next call if
/// that failed. So [`deterministic_seed`](Backend::deterministic_seed) in StatefulSet mode
/// works with no API server and no files at all.
#[derive(Clone)]
pub struct KubernetesBackend {
    inner: Arc<Inner>,
}

struct Inner {
    config: KubernetesConfig,
    client: OnceCell<(Client, String)>,
    token: Option<Arc<TokenFile>>,
    endpoint: String,
}

impl std::fmt::Debug for KubernetesBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesBackend")
            .field("config", &self.inner.config)
            .field("connected", &self.inner.client.initialized())
            .finish()
    }
}

/// The service-account token, re-read when older than `refresh` or after a 401.
#[derive(Debug)]
struct TokenFile {
    path: PathBuf,
    refresh: Duration,
    cached: Mutex<Option<(Instant, HeaderValue)>>,
}

impl TokenFile {
    fn header(&self) -> std::io::Result<HeaderValue> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((read_at, value)) = &*cached
            && read_at.elapsed() < self.refresh
        {
            return Ok(value.clone());
        }
        let token = read_small(&self.path, 64 * 1024)?;
        let token = String::from_utf8_lossy(&token).trim().to_owned();
        if token.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the token file {} is empty", self.path.display()),
            ));
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the token in {} has characters not allowed in a header",
                    self.path.display()
                ),
            )
        })?;
        value.set_sensitive(true);
        *cached = Some((Instant::now(), value.clone()));
        Ok(value)
    }

    fn invalidate(&self) {
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

fn read_small(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let metadata = std::fs::metadata(path)?;
    if metadata.len() > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is larger than {limit} bytes", path.display()),
        ));
    }
    std::fs::read(path)
}

/// Why the guard layer refused an answer.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("reading the service-account token: {0}")]
    Token(std::io::Error),
    #[error("HTTP {status} with Content-Type {content_type:?}, not JSON")]
    NotJson { status: u16, content_type: String },
}

/// The outermost layer of the client: sets the bearer token from the token file, and
/// refuses answers that are not JSON (every answer of the API server is, errors
/// included) and bodies over [`MAX_RESPONSE_BYTES`].
#[derive(Clone)]
struct GuardLayer {
    token: Option<Arc<TokenFile>>,
}

impl<S> tower_layer::Layer<S> for GuardLayer {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            token: self.token.clone(),
        }
    }
}

struct Guard<S> {
    inner: S,
    token: Option<Arc<TokenFile>>,
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for Guard<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body + Send + 'static,
{
    type Response = Response<Limited<ResBody>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        if let Some(token) = &self.token {
            match token.header() {
                Ok(value) => {
                    request.headers_mut().insert(AUTHORIZATION, value);
                }
                Err(e) => {
                    return Box::pin(async move { Err(Box::new(Refused::Token(e)) as BoxError) });
                }
            }
        }
        let token = self.token.clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await.map_err(Into::into)?;
            if response.status() == http::StatusCode::UNAUTHORIZED
                && let Some(token) = token
            {
                token.invalidate();
            }
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if !content_type
                .trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
            {
                return Err(Box::new(Refused::NotJson {
                    status: response.status().as_u16(),
                    content_type,
                }) as BoxError);
            }
            Ok(response.map(|body| Limited::new(body, MAX_RESPONSE_BYTES)))
        })
    }
}

/// Installs ring as rustls' process default unless a default is installed already (see
/// the module docs).
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // An error only means that another thread installed one meanwhile.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

fn io_error(context: String, error: std::io::Error) -> BackendError {
    BackendError::Io {
        backend: NAME,
        context,
        source: Arc::new(error),
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

/// Finds our [`Refused`] or a body-size error in an error's source chain.
fn find_in_chain<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

impl KubernetesBackend {
    /// A backend for `config`. Checks it; reads no file and sends nothing.
    pub fn new(config: KubernetesConfig) -> Result<KubernetesBackend, BackendError> {
        config.validate()?;
        let (token, endpoint) = match &config.api {
            KubernetesApi::InCluster(c) => (
                c.token_path.as_ref().map(|path| {
                    Arc::new(TokenFile {
                        path: path.clone(),
                        refresh: config.token_refresh,
                        cached: Mutex::new(None),
                    })
                }),
                c.url(),
            ),
            KubernetesApi::Kubeconfig { path, context } => (
                None,
                format!(
                    "kubeconfig {} (context {})",
                    path.as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "from $KUBECONFIG or ~/.kube/config".into()),
                    context.as_deref().unwrap_or("current")
                ),
            ),
            KubernetesApi::Infer(c) => (None, format!("kubeconfig or {}", c.url())),
        };
        Ok(KubernetesBackend {
            inner: Arc::new(Inner {
                config,
                client: OnceCell::new(),
                token,
                endpoint,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &KubernetesConfig {
        &self.inner.config
    }

    fn in_cluster_config(&self, c: &InCluster) -> Result<(Config, String), BackendError> {
        let url: http::Uri = c
            .url()
            .parse()
            .map_err(|e| BackendError::config("k8s_host", format!("{}: {e}", c.url())))?;
        let mut config = Config::new(url);
        if c.scheme == "https" {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let pem = read_small(&c.cert_path, 1024 * 1024).map_err(|e| {
                io_error(
                    format!("reading the CA bundle {}", c.cert_path.display()),
                    e,
                )
            })?;
            let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
                .map(|c| c.map(|c| c.to_vec()))
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    BackendError::config("k8s_cert_path", format!("{}: {e}", c.cert_path.display()))
                })?;
            if certs.is_empty() {
                return Err(BackendError::config(
                    "k8s_cert_path",
                    format!("{}: no certificate", c.cert_path.display()),
                ));
            }
            config.root_cert = Some(certs);
        }
        let namespace = match &self.inner.config.namespace {
            Some(ns) => ns.clone(),
            None => {
                let ns = read_small(&c.namespace_path, 1024).map_err(|e| {
                    io_error(
                        format!("reading the namespace file {}", c.namespace_path.display()),
                        e,
                    )
                })?;
                String::from_utf8_lossy(&ns).trim().to_owned()
            }
        };
        if let Some(token) = &self.inner.token {
            // Read it now, so that a missing token is a clear error at the first call.
            token.header().map_err(|e| {
                io_error(
                    format!("reading the service-account token {}", token.path.display()),
                    e,
                )
            })?;
        }
        Ok((config, namespace))
    }

    async fn kubeconfig_config(
        &self,
        path: &Option<PathBuf>,
        context: &Option<String>,
    ) -> Result<Config, String> {
        let options = KubeConfigOptions {
            context: context.clone(),
            ..KubeConfigOptions::default()
        };
        match path {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| chain(&e))?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| chain(&e))
            }
            None => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| chain(&e)),
        }
    }

    /// The client and namespace, built on first use.
    async fn client(&self) -> Result<(Client, String), BackendError> {
        let inner = &self.inner;
        let result = inner
            .client
            .get_or_try_init(|| async {
                let (mut config, namespace) = match &inner.config.api {
                    KubernetesApi::InCluster(c) => self.in_cluster_config(c)?,
                    KubernetesApi::Kubeconfig { path, context } => {
                        let config = self
                            .kubeconfig_config(path, context)
                            .await
                            .map_err(|detail| BackendError::config("k8s_kubeconfig", detail))?;
                        let ns = inner
                            .config
                            .namespace
                            .clone()
                            .unwrap_or_else(|| config.default_namespace.clone());
                        (config, ns)
                    }
                    KubernetesApi::Infer(c) => match self.kubeconfig_config(&None, &None).await {
                        Ok(config) => {
                            let ns = inner
                                .config
                                .namespace
                                .clone()
                                .unwrap_or_else(|| config.default_namespace.clone());
                            (config, ns)
                        }
                        Err(kubeconfig) => self.in_cluster_config(c).map_err(|in_cluster| {
                            BackendError::config(
                                "k8s_kubeconfig",
                                format!(
                                    "no usable kubeconfig ({kubeconfig}) and no in-cluster \
                                     configuration ({in_cluster})"
                                ),
                            )
                        })?,
                    },
                };
                let timeout = inner.config.timeout;
                config.connect_timeout = Some(timeout);
                config.read_timeout = Some(timeout);
                config.write_timeout = Some(timeout);
                // Retries are the caller's decision (and must stay within our bounds).
                config.default_retry = false;
                config.default_namespace = namespace.clone();
                ensure_crypto_provider();
                let builder = ClientBuilder::try_from(config).map_err(|e| {
                    BackendError::config("k8s_host", format!("building the client: {}", chain(&e)))
                })?;
                let client = builder
                    .with_layer(&GuardLayer {
                        token: inner.token.clone(),
                    })
                    .build();
                Ok::<_, BackendError>((client, namespace))
            })
            .await?;
        Ok(result.clone())
    }

    fn map_error(&self, what: &str, error: kube::Error) -> BackendError {
        let detail = |d: String| format!("{what}: {d}");
        match &error {
            kube::Error::Api(status) => {
                let message = format!("HTTP {} {}: {}", status.code, status.reason, status.message);
                match status.code {
                    401 | 403 => BackendError::Unauthorized {
                        backend: NAME,
                        detail: detail(message),
                    },
                    429 | 500..=599 => BackendError::Unavailable {
                        backend: NAME,
                        endpoint: self.inner.endpoint.clone(),
                        detail: detail(message),
                    },
                    400..=499 => BackendError::Rejected {
                        backend: NAME,
                        detail: detail(message),
                    },
                    _ => BackendError::InvalidResponse {
                        backend: NAME,
                        detail: detail(message),
                    },
                }
            }
            kube::Error::SerdeError(e) => BackendError::InvalidResponse {
                backend: NAME,
                detail: detail(format!("malformed JSON: {e}")),
            },
            kube::Error::FromUtf8(e) => BackendError::InvalidResponse {
                backend: NAME,
                detail: detail(format!("the answer is not UTF-8: {e}")),
            },
            _ => {
                let root: &(dyn std::error::Error + 'static) = &error;
                if let Some(refused) = find_in_chain::<Refused>(root) {
                    return match refused {
                        Refused::Token(e) => io_error(
                            format!("{what}: reading the service-account token"),
                            std::io::Error::new(e.kind(), e.to_string()),
                        ),
                        Refused::NotJson { status, .. } if *status >= 500 => {
                            BackendError::Unavailable {
                                backend: NAME,
                                endpoint: self.inner.endpoint.clone(),
                                detail: detail(refused.to_string()),
                            }
                        }
                        Refused::NotJson { .. } => BackendError::InvalidResponse {
                            backend: NAME,
                            detail: detail(refused.to_string()),
                        },
                    };
                }
                if find_in_chain::<http_body_util::LengthLimitError>(root).is_some() {
                    return BackendError::InvalidResponse {
                        backend: NAME,
                        detail: detail(format!(
                            "the answer is larger than {MAX_RESPONSE_BYTES} bytes"
                        )),
                    };
                }
                BackendError::Unavailable {
                    backend: NAME,
                    endpoint: self.inner.endpoint.clone(),
                    detail: detail(chain(root)),
                }
            }
        }
    }

    /// Runs `op` with the client, bounded by the timeout; after a 401 with a token file,
    /// reads the token again and retries once (a rotated token).
    async fn call<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, BackendError>
    where
        F: Fn(Client, String) -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        with_timeout(NAME, what, self.inner.config.timeout, async {
            let (client, namespace) = self.client().await?;
            match op(client.clone(), namespace.clone()).await {
                Err(kube::Error::Api(status))
                    if status.code == 401 && self.inner.token.is_some() =>
                {
                    tracing::info!(
                        "the API server refused the token (401); reading the token file again"
                    );
                    if let Some(token) = &self.inner.token {
                        token.invalidate();
                    }
                    op(client, namespace)
                        .await
                        .map_err(|e| self.map_error(what, e))
                }
                result => result.map_err(|e| self.map_error(what, e)),
            }
        })
        .await
    }

    fn endpoint_node(
        &self,
        ip: Option<&str>,
        hostname: Option<&str>,
        pod: Option<&str>,
    ) -> Result<RegisteredNode, BackendError> {
        let config = &self.inner.config;
        let address = match config.address_type {
            AddressType::Ip => ip,
            AddressType::Hostname => hostname,
        };
        let Some(address) = address.filter(|a| !a.is_empty()) else {
            return Err(BackendError::InvalidResponse {
                backend: NAME,
                detail: format!(
                    "an endpoint of Service {} (pod {}) has no {}",
                    config.service_name,
                    pod.unwrap_or("?"),
                    match config.address_type {
                        AddressType::Ip => "address",
                        AddressType::Hostname =>
                            "hostname (address type hostname needs StatefulSet pods with a headless Service)",
                    }
                ),
            });
        };
        let node = config.node_name(address)?;
        let order = hostname
            .and_then(ordinal)
            .or_else(|| pod.and_then(ordinal))
            .unwrap_or(0);
        let mut listed = RegisteredNode::new(node, u64::from(order));
        listed.address = ip.map(str::to_owned);
        if let Some(pod) = pod {
            listed.metadata.insert("pod".into(), pod.to_owned());
        }
        Ok(listed)
    }

    /// Every endpoint from the EndpointSlices; `None` when the API has no EndpointSlices
    /// (404) or no slice carries the Service's label.
    async fn list_slices(&self) -> Result<Option<Vec<RegisteredNode>>, BackendError> {
        let service = self.inner.config.service_name.clone();
        let mut slices = Vec::new();
        let mut continue_token: Option<String> = None;
        loop {
            let selector = format!("kubernetes.io/service-name={service}");
            let token = continue_token.clone();
            let page = self
                .call("list_nodes", |client, ns| {
                    let mut params = ListParams::default().labels(&selector).limit(500);
                    if let Some(token) = &token {
                        params = params.continue_token(token);
                    }
                    async move {
                        let api: Api<EndpointSlice> = Api::namespaced(client, &ns);
                        match api.list(&params).await {
                            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
                            other => other.map(Some),
                        }
                    }
                })
                .await?;
            let Some(page) = page else {
                return Ok(None);
            };
            slices.extend(page.items);
            if slices.len() > MAX_LISTED_NODES {
                return Err(BackendError::InvalidResponse {
                    backend: NAME,
                    detail: format!("more than {MAX_LISTED_NODES} EndpointSlices for {service}"),
                });
            }
            match page.metadata.continue_.filter(|t| !t.is_empty()) {
                Some(token) => continue_token = Some(token),
                None => break,
            }
        }
        if slices.is_empty() {
            return Ok(None);
        }
        let mut nodes = Vec::new();
        for slice in slices {
            for endpoint in slice.endpoints.unwrap_or_default() {
                let pod = endpoint.target_ref.as_ref().and_then(|r| r.name.as_deref());
                let mut node = self.endpoint_node(
                    endpoint.addresses.first().map(String::as_str),
                    endpoint.hostname.as_deref(),
                    pod,
                )?;
                let conditions = endpoint.conditions.unwrap_or_default();
                // Unknown readiness counts as ready, as the API documents.
                node.metadata
                    .insert("ready".into(), conditions.ready.unwrap_or(true).to_string());
                if let Some(serving) = conditions.serving {
                    node.metadata.insert("serving".into(), serving.to_string());
                }
                node.metadata.insert(
                    "terminating".into(),
                    conditions.terminating.unwrap_or(false).to_string(),
                );
                nodes.push(node);
                if nodes.len() > MAX_LISTED_NODES {
                    return Err(BackendError::InvalidResponse {
                        backend: NAME,
                        detail: format!("more than {MAX_LISTED_NODES} endpoints for {service}"),
                    });
                }
            }
        }
        Ok(Some(nodes))
    }

    /// Every address of the Endpoints object (ready and not ready).
    async fn list_endpoints_object(&self) -> Result<Vec<RegisteredNode>, BackendError> {
        let service = self.inner.config.service_name.clone();
        let endpoints = self
            .call("list_nodes", |client, ns| {
                let service = service.clone();
                async move {
                    let api: Api<Endpoints> = Api::namespaced(client, &ns);
                    api.get_opt(&service).await
                }
            })
            .await?;
        let Some(endpoints) = endpoints else {
            return Err(BackendError::Rejected {
                backend: NAME,
                detail: format!(
                    "Service {service} has neither EndpointSlices nor an Endpoints object \
                     (no such Service in the namespace?)"
                ),
            });
        };
        let mut nodes = Vec::new();
        for subset in endpoints.subsets.unwrap_or_default() {
            for (ready, addresses) in [
                (true, subset.addresses.unwrap_or_default()),
                (false, subset.not_ready_addresses.unwrap_or_default()),
            ] {
                for address in addresses {
                    let pod = address.target_ref.as_ref().and_then(|r| r.name.as_deref());
                    let mut node =
                        self.endpoint_node(Some(&address.ip), address.hostname.as_deref(), pod)?;
                    node.metadata.insert("ready".into(), ready.to_string());
                    nodes.push(node);
                    if nodes.len() > MAX_LISTED_NODES {
                        return Err(BackendError::InvalidResponse {
                            backend: NAME,
                            detail: format!("more than {MAX_LISTED_NODES} endpoints for {service}"),
                        });
                    }
                }
            }
        }
        Ok(nodes)
    }

    async fn get_lease(&self) -> Result<Option<Lease>, BackendError> {
        let name = self.inner.config.lease_name.clone();
        self.call("lock", |client, ns| {
            let name = name.clone();
            async move {
                let api: Api<Lease> = Api::namespaced(client, &ns);
                api.get_opt(&name).await
            }
        })
        .await
    }

    /// Writes `lease` (create when `create`, else replace with its resourceVersion):
    /// `Ok(None)` on a 409 (someone else wrote first).
    async fn write_lease(&self, lease: Lease, create: bool) -> Result<Option<Lease>, BackendError> {
        let name = self.inner.config.lease_name.clone();
        self.call("lock", |client, ns| {
            let (name, lease) = (name.clone(), lease.clone());
            async move {
                let api: Api<Lease> = Api::namespaced(client, &ns);
                let result = if create {
                    api.create(&PostParams::default(), &lease).await
                } else {
                    api.replace(&name, &PostParams::default(), &lease).await
                };
                match result {
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
                    other => other.map(Some),
                }
            }
        })
        .await
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// Whether a lease is held by a live holder now, and for how much longer.
fn held_for(lease: &Lease) -> Option<Duration> {
    let spec = lease.spec.as_ref()?;
    spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
    let duration = Duration::from_secs(u64::try_from(spec.lease_duration_seconds?).ok()?);
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?;
    let expires = renewed.0 + k8s_openapi::jiff::SignedDuration::try_from(duration).ok()?;
    let left = k8s_openapi::jiff::Timestamp::now().duration_until(expires);
    if left.is_positive() {
        Duration::try_from(left).ok()
    } else {
        None
    }
}

fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

fn transitions(lease: &Lease) -> i32 {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0)
}

#[derive(Debug)]
struct KubernetesLock {
    backend: KubernetesBackend,
    identity: String,
    token: i32,
}

impl KubernetesLock {
    fn ours(&self, lease: &Lease) -> bool {
        holder(lease) == Some(self.identity.as_str()) && transitions(lease) == self.token
    }
}

#[async_trait::async_trait]
impl LockSession for KubernetesLock {
    async fn refresh(&self) -> Result<Refresh, BackendError> {
        // Optimistic concurrency: a 409 means the Lease changed since we read it; read it
        // again and check that it is still ours.
        for _ in 0..3 {
            let Some(mut lease) = self.backend.get_lease().await? else {
                return Ok(Refresh::Lost);
            };
            if !self.ours(&lease) {
                return Ok(Refresh::Lost);
            }
            if let Some(spec) = lease.spec.as_mut() {
                spec.renew_time = Some(now());
            }
            if self.backend.write_lease(lease, false).await?.is_some() {
                return Ok(Refresh::Alive);
            }
        }
        Err(BackendError::Unavailable {
            backend: NAME,
            endpoint: self.backend.inner.endpoint.clone(),
            detail: "the Lease kept changing under us (409 Conflict three times)".into(),
        })
    }

    async fn release(&self) -> Result<(), BackendError> {
        for _ in 0..3 {
            let lease = self.backend.get_lease().await?;
            let Some(mut lease) = lease.filter(|l| self.ours(l)) else {
                return Err(BackendError::LockLost {
                    backend: NAME,
                    detail: format!(
                        "Lease {} is gone or held by someone else (it expired or was deleted)",
                        self.backend.inner.config.lease_name
                    ),
                });
            };
            if let Some(spec) = lease.spec.as_mut() {
                spec.holder_identity = None;
                spec.renew_time = Some(now());
            }
            if self.backend.write_lease(lease, false).await?.is_some() {
                return Ok(());
            }
        }
        Err(BackendError::Unavailable {
            backend: NAME,
            endpoint: self.backend.inner.endpoint.clone(),
            detail: "the Lease kept changing under us (409 Conflict three times)".into(),
        })
    }
}

/// One look at the Lease while taking the lock.
enum Attempt {
    Acquired(LockGuard),
    /// Someone else wrote first (409): look again at once.
    Conflict,
    /// Held by a live holder for about this much longer.
    Held(Duration),
}

impl KubernetesBackend {
    async fn try_lock_once(
        &self,
        request: &LockRequest,
        identity: &str,
        duration_secs: i32,
    ) -> Result<Attempt, BackendError> {
        let config = &self.inner.config;
        let current = self.get_lease().await?;
        if let Some(left) = current.as_ref().and_then(held_for) {
            return Ok(Attempt::Held(left));
        }
        let create = current.is_none();
        let mut lease = current.unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(config.lease_name.clone()),
                ..ObjectMeta::default()
            },
            spec: None,
        });
        let token = if create { 0 } else { transitions(&lease) + 1 };
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(identity.to_owned()),
            lease_duration_seconds: Some(duration_secs),
            acquire_time: Some(now()),
            renew_time: Some(now()),
            lease_transitions: Some(token),
            ..LeaseSpec::default()
        });
        let Some(written) = self.write_lease(lease, create).await? else {
            return Ok(Attempt::Conflict);
        };
        let token = transitions(&written);
        tracing::debug!(identity, token, "Kubernetes startup lock (Lease) acquired");
        let session = Arc::new(KubernetesLock {
            backend: self.clone(),
            identity: identity.to_owned(),
            token,
        });
        Ok(Attempt::Acquired(LockGuard::spawn(
            NAME,
            request.owner.clone(),
            u64::try_from(token).unwrap_or(0),
            Duration::from_secs(duration_secs.unsigned_abs().into()),
            session,
            config.keepalive.clone(),
        )))
    }
}

#[async_trait::async_trait]
impl Backend for KubernetesBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn lists_contact_points(&self) -> bool {
        true
    }

    fn supports_registration(&self) -> bool {
        false
    }

    fn supports_lock(&self) -> bool {
        true
    }

    async fn list_nodes(&self) -> Result<Vec<RegisteredNode>, BackendError> {
        let nodes = match self.list_slices().await? {
            Some(nodes) => nodes,
            None => self.list_endpoints_object().await?,
        };
        // The same pod in two slices (while they are being updated): once.
        let mut unique: BTreeMap<NodeName, RegisteredNode> = BTreeMap::new();
        for node in nodes {
            unique.entry(node.node.clone()).or_insert(node);
        }
        let mut nodes: Vec<RegisteredNode> = unique.into_values().collect();
        sort_nodes(&mut nodes);
        Ok(nodes)
    }

    async fn lock(&self, request: LockRequest) -> Result<LockGuard, BackendError> {
        let config = &self.inner.config;
        let deadline = Instant::now() + request.wait;
        let duration_secs = request.ttl.as_secs() + u64::from(request.ttl.subsec_nanos() > 0);
        let duration_secs = i32::try_from(duration_secs.max(1)).unwrap_or(i32::MAX);
        let identity = format!("{}/{:016x}", request.owner, rand::random::<u64>());
        let mut failures = 0;
        loop {
            match self.try_lock_once(&request, &identity, duration_secs).await {
                Ok(Attempt::Acquired(guard)) => return Ok(guard),
                Ok(Attempt::Conflict) => failures = 0,
                Ok(Attempt::Held(left)) => {
                    failures = 0;
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return Err(BackendError::LockTimeout {
                            backend: NAME,
                            waited: request.wait,
                        });
                    }
                    let nap = config
                        .lock_poll_interval
                        .min(left + Duration::from_millis(10))
                        .min(remaining);
                    tokio::time::sleep(nap).await;
                }
                // A call that fails while waiting (a slow answer under load) is tried
                // once more; a second failure in a row is the answer, so that a backend
                // that is down or hung fails fast rather than at the end of the wait.
                Err(error) if error.is_transient() && failures == 0 => {
                    failures += 1;
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return Err(error);
                    }
                    tracing::warn!(%error, "reading or writing the Lease failed while waiting for the lock; retrying");
                    tokio::time::sleep(config.lock_poll_interval.min(remaining)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// StatefulSet mode: `seed_node`, or the lowest ordinal of the local node's
    /// StatefulSet; no API call.
    async fn deterministic_seed(&self, local: &NodeName) -> Result<Option<NodeName>, BackendError> {
        if let Some(seed) = &self.inner.config.seed_node {
            return Ok(Some(seed.clone()));
        }
        Ok(statefulset_seed(local, self.inner.config.ordinal_start))
    }

    fn timings(&self) -> Timings {
        self.inner.config.timings()
    }
}
