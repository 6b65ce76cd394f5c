//! The networked half of the etcd backend: [`EtcdBackend`] over `etcd-client`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, LockOptions,
    PutOptions, TlsOptions, Txn, TxnOp,
};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::{EtcdConfig, NAME, parse_node_value, registration_value, ttl_seconds};
use crate::NodeName;
use crate::backend::{
    Backend, BackendError, LockGuard, LockRequest, LockSession, MAX_LISTED_NODES, Refresh,
    RegisteredNode, Registration, RegistrationHandle, RegistrationSession, Timings, sort_nodes,
};

/// The largest gRPC response accepted (etcd-client's default is 4 MiB too; stated here so
/// that the bound does not depend on a dependency's default).
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The etcd v3 backend. Cheap to clone; clones share one connection.
///
/// Construction does no I/O: the connection is made on first use (and retried on the
/// next call if it failed), so a backend built while etcd is down reports
/// [`BackendError::Unavailable`] or [`BackendError::Timeout`] from its calls.
#[derive(Clone)]
pub struct EtcdBackend {
    inner: Arc<Inner>,
}

struct Inner {
    config: EtcdConfig,
    /// One client per endpoint, connected on first use: requests go to the preferred
    /// endpoint and fail over to the next one when it is unavailable. (etcd-client's own
    /// balanced channel sends requests to endpoints that are down.)
    clients: Vec<OnceCell<Client>>,
    preferred: AtomicUsize,
    tls: Option<TlsOptions>,
    endpoints_text: String,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("config", &self.inner.config)
            .field(
                "connected",
                &self
                    .inner
                    .clients
                    .iter()
                    .filter(|c| c.initialized())
                    .count(),
            )
            .finish()
    }
}

fn read_file(path: &std::path::Path, what: &str) -> Result<Vec<u8>, BackendError> {
    let metadata = std::fs::metadata(path).map_err(|e| BackendError::Io {
        backend: NAME,
        context: format!("reading the etcd {what} {}", path.display()),
        source: Arc::new(e),
    })?;
    if metadata.len() > 1024 * 1024 {
        return Err(BackendError::config(
            path.display().to_string(),
            format!("the {what} is larger than 1 MiB"),
        ));
    }
    std::fs::read(path).map_err(|e| BackendError::Io {
        backend: NAME,
        context: format!("reading the etcd {what} {}", path.display()),
        source: Arc::new(e),
    })
}

impl EtcdBackend {
    /// A backend for `config`. Checks the configuration and reads the TLS files; does not
    /// connect.
    pub fn new(config: EtcdConfig) -> Result<EtcdBackend, BackendError> {
        config.validate()?;
        let tls = match &config.tls {
            None => None,
            Some(tls) => {
                let ca = read_file(&tls.ca_file, "CA bundle")?;
                let mut options = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
                if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                    let cert = read_file(cert, "client certificate")?;
                    let key = read_file(key, "client key")?;
                    options = options.identity(Identity::from_pem(cert, key));
                }
                if let Some(name) = &tls.server_name {
                    options = options.domain_name(name.clone());
                }
                Some(options)
            }
        };
        let endpoints_text = config.endpoints.join(",");
        let clients = config.endpoints.iter().map(|_| OnceCell::new()).collect();
        Ok(EtcdBackend {
            inner: Arc::new(Inner {
                config,
                clients,
                preferred: AtomicUsize::new(0),
                tls,
                endpoints_text,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EtcdConfig {
        &self.inner.config
    }

    fn timeout(&self) -> Duration {
        self.inner.config.timeout
    }

    /// The client for the preferred endpoint, connecting it if needed.
    async fn client(&self) -> Result<Client, BackendError> {
        let inner = &self.inner;
        let index = inner.preferred.load(Ordering::Relaxed) % inner.clients.len().max(1);
        let (Some(cell), Some(endpoint)) =
            (inner.clients.get(index), inner.config.endpoints.get(index))
        else {
            return Err(BackendError::config(
                "etcd_endpoints",
                "no etcd endpoints configured",
            ));
        };
        let result = cell
            .get_or_try_init(|| async {
                let timeout = inner.config.timeout;
                let mut options = ConnectOptions::new()
                    .with_connect_timeout(timeout)
                    .with_keep_alive(timeout.max(Duration::from_secs(1)), timeout)
                    .with_keep_alive_while_idle(true);
                if let Some((user, password)) = &inner.config.credentials {
                    options = options.with_user(user.clone(), password.clone());
                }
                if let Some(tls) = &inner.tls {
                    options = options.with_tls(tls.clone());
                }
                let connect = Client::connect([endpoint.as_str()], Some(options));
                match tokio::time::timeout(timeout, connect).await {
                    Ok(Ok(client)) => Ok(client),
                    Ok(Err(e)) => Err(map_error(endpoint, e)),
                    Err(_) => Err(BackendError::timeout(NAME, "connect", timeout)),
                }
            })
            .await;
        match result {
            Ok(client) => Ok(client.clone()),
            Err(error) => {
                self.fail_over(&error);
                Err(error)
            }
        }
    }

    /// After a transient error, prefer the next endpoint.
    fn fail_over(&self, error: &BackendError) {
        let count = self.inner.clients.len();
        if count > 1
            && matches!(
                error,
                BackendError::Unavailable { .. } | BackendError::Timeout { .. }
            )
        {
            let previous = self.inner.preferred.fetch_add(1, Ordering::Relaxed) % count;
            tracing::warn!(
                %error,
                from = %self.inner.config.endpoints.get(previous).map(String::as_str).unwrap_or("?"),
                to = %self.inner.config.endpoints.get((previous + 1) % count).map(String::as_str).unwrap_or("?"),
                "etcd endpoint failed; switching to the next one"
            );
        }
    }

    /// Runs `operation` with the preferred endpoint's client, trying each other endpoint
    /// once more while they answer `Unavailable` (a down endpoint is not an outage while
    /// another one serves). A `Timeout` is not retried, so a hung endpoint costs one
    /// timeout per call (and the next call goes to the next endpoint).
    async fn with_failover<T, F, Fut>(&self, operation: F) -> Result<T, BackendError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, BackendError>>,
    {
        let attempts = self.inner.clients.len().max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match self.client().await {
                Ok(client) => operation(client).await,
                Err(error) => Err(error),
            };
            match result {
                Err(BackendError::Unavailable { .. }) if attempt < attempts => continue,
                Err(BackendError::Unavailable { detail, .. }) if attempts > 1 => {
                    return Err(BackendError::Unavailable {
                        backend: NAME,
                        endpoint: self.inner.endpoints_text.clone(),
                        detail: format!("every endpoint failed; the last: {detail}"),
                    });
                }
                other => return other,
            }
        }
    }

    /// Maps an etcd-client error to the crate's error.
    fn map_error(&self, error: etcd_client::Error) -> BackendError {
        let index = self.inner.preferred.load(Ordering::Relaxed) % self.inner.clients.len().max(1);
        let endpoint = self
            .inner
            .config
            .endpoints
            .get(index)
            .unwrap_or(&self.inner.endpoints_text);
        let error = map_error(endpoint, error);
        self.fail_over(&error);
        error
    }

    /// Runs one etcd call bounded by the configured timeout.
    async fn call<T, F>(&self, operation: &'static str, future: F) -> Result<T, BackendError>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(self.timeout(), future).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.map_error(e)),
            Err(_) => {
                let error = BackendError::timeout(NAME, operation, self.timeout());
                self.fail_over(&error);
                Err(error)
            }
        }
    }

    async fn list_with(&self, client: Client) -> Result<Vec<RegisteredNode>, BackendError> {
        let prefix = self.inner.config.nodes_prefix();
        let mut kv = client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let limit = i64::try_from(MAX_LISTED_NODES + 1).unwrap_or(i64::MAX);
        let response = self
            .call(
                "list_nodes",
                kv.get(
                    prefix.clone(),
                    Some(GetOptions::new().with_prefix().with_limit(limit)),
                ),
            )
            .await?;
        if response.kvs().len() > MAX_LISTED_NODES || response.more() {
            return Err(BackendError::InvalidResponse {
                backend: NAME,
                detail: format!("more than {MAX_LISTED_NODES} keys under {prefix}"),
            });
        }
        let mut nodes = Vec::with_capacity(response.kvs().len());
        for kv in response.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            nodes.push(parse_node_value(&key, kv.value(), kv.create_revision())?);
        }
        sort_nodes(&mut nodes);
        Ok(nodes)
    }

    /// Renews `lease` once: `Ok(false)` when etcd no longer has it.
    async fn keep_lease_alive(&self, client: &Client, lease: i64) -> Result<bool, BackendError> {
        let mut leases = client.lease_client();
        match tokio::time::timeout(self.timeout(), leases.keep_alive(lease)).await {
            Ok(Ok((_keeper, _stream))) => Ok(true),
            Ok(Err(e)) if is_lease_not_found(&e) => Ok(false),
            Ok(Err(e)) => Err(self.map_error(e)),
            Err(_) => Err(BackendError::timeout(
                NAME,
                "lease keep-alive",
                self.timeout(),
            )),
        }
    }

    /// Revokes a lease, best effort (it expires anyway).
    async fn revoke_quietly(&self, client: &Client, lease: i64) {
        let mut leases = client.lease_client();
        if let Err(error) = self.call("lease revoke", leases.revoke(lease)).await {
            tracing::debug!(%error, lease, "revoking an etcd lease failed; it will expire by itself");
        }
    }

    /// Grants a lease of `ttl` and returns its id and granted TTL.
    async fn grant(&self, client: &Client, ttl: Duration) -> Result<(i64, Duration), BackendError> {
        let mut leases = client.lease_client();
        let granted = self
            .call("lease grant", leases.grant(ttl_seconds(ttl), None))
            .await?;
        let secs = u64::try_from(granted.ttl()).unwrap_or(0).max(1);
        Ok((granted.id(), Duration::from_secs(secs)))
    }

    /// The key's (create_revision, lease), if it exists.
    async fn key_info(
        &self,
        client: &Client,
        key: &str,
    ) -> Result<Option<(i64, i64)>, BackendError> {
        let mut kv = client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let response = self.call("get", kv.get(key, None)).await?;
        Ok(response
            .kvs()
            .first()
            .map(|kv| (kv.create_revision(), kv.lease())))
    }
}

fn is_lease_not_found(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("not found"),
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::NotFound && status.message().contains("lease not found")
        }
        _ => false,
    }
}

fn map_error(endpoints: &str, error: etcd_client::Error) -> BackendError {
    use tonic::Code;
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            let mut detail = if status.message().is_empty() {
                format!("{:?}", status.code())
            } else {
                status.message().to_owned()
            };
            if let Some(source) = std::error::Error::source(&status) {
                detail.push_str(": ");
                detail.push_str(&error_chain(source));
            }
            // etcd reports some credential errors as InvalidArgument (ErrGRPCAuthFailed,
            // ErrGRPCUserEmpty) or FailedPrecondition: classify them by message.
            let auth_messages = [
                "authentication failed",
                "user name is empty",
                "invalid auth token",
                "permission denied",
                "user name not found",
            ];
            if auth_messages.iter().any(|m| status.message().contains(m)) {
                return BackendError::Unauthorized {
                    backend: NAME,
                    detail,
                };
            }
            // A status tonic made from a local failure of the connection (reset, broken
            // pipe, a stream closed as etcd stops) carries that failure as its source and
            // the code Unknown; a status etcd sent carries no source. Such a failure is an
            // outage (retried), not an invalid answer.
            if status.code() == Code::Unknown && std::error::Error::source(&status).is_some() {
                return BackendError::Unavailable {
                    backend: NAME,
                    endpoint: endpoints.to_owned(),
                    detail,
                };
            }
            match status.code() {
                Code::Unavailable | Code::Aborted | Code::ResourceExhausted | Code::Cancelled => {
                    BackendError::Unavailable {
                        backend: NAME,
                        endpoint: endpoints.to_owned(),
                        detail,
                    }
                }
                Code::DeadlineExceeded => BackendError::Unavailable {
                    backend: NAME,
                    endpoint: endpoints.to_owned(),
                    detail: format!("deadline exceeded: {detail}"),
                },
                Code::Unauthenticated | Code::PermissionDenied => BackendError::Unauthorized {
                    backend: NAME,
                    detail,
                },
                Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::NotFound
                | Code::AlreadyExists
                | Code::OutOfRange => BackendError::Rejected {
                    backend: NAME,
                    detail,
                },
                Code::Unknown
                | Code::Internal
                | Code::DataLoss
                | Code::Unimplemented
                | Code::Ok => BackendError::InvalidResponse {
                    backend: NAME,
                    detail: format!("{:?}: {detail}", status.code()),
                },
            }
        }
        etcd_client::Error::TransportError(e) => BackendError::Unavailable {
            backend: NAME,
            endpoint: endpoints.to_owned(),
            detail: error_chain(&e),
        },
        etcd_client::Error::IoError(e) => BackendError::Io {
            backend: NAME,
            context: format!("talking to {endpoints}"),
            source: Arc::new(e),
        },
        etcd_client::Error::InvalidArgs(detail) => BackendError::config("etcd_endpoints", detail),
        etcd_client::Error::InvalidUri(e) => BackendError::config("etcd_endpoints", e.to_string()),
        etcd_client::Error::LeaseKeepAliveError(detail)
        | etcd_client::Error::WatchError(detail) => BackendError::Unavailable {
            backend: NAME,
            endpoint: endpoints.to_owned(),
            detail,
        },
        other => BackendError::InvalidResponse {
            backend: NAME,
            detail: other.to_string(),
        },
    }
}

/// An error and its sources, on one line.
/// Layers that repeat what an inner layer says are left out.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    let mut kept: Vec<&str> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let repeated_later = parts[i + 1..]
            .iter()
            .any(|later| later.contains(part.as_str()));
        if !repeated_later && !kept.contains(&part.as_str()) {
            kept.push(part);
        }
    }
    kept.join(": ")
}

#[derive(Debug)]
struct Lease {
    id: i64,
    ttl_secs: i64,
}

#[derive(Debug)]
struct EtcdRegistration {
    backend: EtcdBackend,
    node: NodeName,
    key: String,
    ttl: Duration,
    address: Option<String>,
    metadata: std::collections::BTreeMap<String, String>,
    lease: Mutex<Lease>,
}

impl EtcdRegistration {
    fn lease(&self) -> (i64, i64) {
        let lease = self.lease.lock().unwrap_or_else(|e| e.into_inner());
        (lease.id, lease.ttl_secs)
    }

    /// Grants a lease and puts the node key with it.
    async fn put_new(&self) -> Result<(), BackendError> {
        self.backend
            .with_failover(|client| self.put_new_with(client))
            .await
    }

    async fn put_new_with(&self, client: Client) -> Result<(), BackendError> {
        let backend = &self.backend;
        let (id, granted) = backend.grant(&client, self.ttl).await?;
        let ttl_secs = i64::try_from(granted.as_secs()).unwrap_or(i64::MAX);
        let value = registration_value(
            &self.node,
            id,
            ttl_secs,
            self.address.as_deref(),
            &self.metadata,
        );
        let mut kv = client.kv_client();
        if let Err(error) = backend
            .call(
                "put",
                kv.put(
                    self.key.clone(),
                    value,
                    Some(PutOptions::new().with_lease(id)),
                ),
            )
            .await
        {
            backend.revoke_quietly(&client, id).await;
            return Err(error);
        }
        let old = std::mem::replace(
            &mut *self.lease.lock().unwrap_or_else(|e| e.into_inner()),
            Lease { id, ttl_secs },
        );
        if old.id != 0 && old.id != id {
            backend.revoke_quietly(&client, old.id).await;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl RegistrationSession for EtcdRegistration {
    async fn refresh(&self) -> Result<Refresh, BackendError> {
        let client = self.backend.client().await?;
        let (lease, _) = self.lease();
        if !self.backend.keep_lease_alive(&client, lease).await? {
            return Ok(Refresh::Lost);
        }
        match self.backend.key_info(&client, &self.key).await? {
            Some((_, key_lease)) if key_lease == lease => Ok(Refresh::Alive),
            Some(_) => {
                tracing::warn!(key = %self.key, "the node key is now attached to another lease (another process registered the same node?)");
                Ok(Refresh::Lost)
            }
            None => Ok(Refresh::Lost),
        }
    }

    async fn reregister(&self) -> Result<(), BackendError> {
        self.put_new().await
    }

    async fn deregister(&self) -> Result<(), BackendError> {
        let client = self.backend.client().await?;
        let (lease, _) = self.lease();
        // Delete the key only if it is still ours, then revoke the lease.
        let txn = Txn::new()
            .when([Compare::lease(self.key.clone(), CompareOp::Equal, lease)])
            .and_then([TxnOp::delete(self.key.clone(), None)]);
        let mut kv = client.kv_client();
        self.backend.call("deregister", kv.txn(txn)).await?;
        let mut leases = client.lease_client();
        match self
            .backend
            .call("lease revoke", leases.revoke(lease))
            .await
        {
            Ok(_) => Ok(()),
            Err(BackendError::Rejected { detail, .. }) if detail.contains("lease not found") => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[derive(Debug)]
struct EtcdLock {
    backend: EtcdBackend,
    key: String,
    lease: i64,
    token: i64,
}

#[async_trait::async_trait]
impl LockSession for EtcdLock {
    async fn refresh(&self) -> Result<Refresh, BackendError> {
        let client = self.backend.client().await?;
        if !self.backend.keep_lease_alive(&client, self.lease).await? {
            return Ok(Refresh::Lost);
        }
        match self.backend.key_info(&client, &self.key).await? {
            Some((revision, lease)) if revision == self.token && lease == self.lease => {
                Ok(Refresh::Alive)
            }
            _ => Ok(Refresh::Lost),
        }
    }

    async fn release(&self) -> Result<(), BackendError> {
        let client = self.backend.client().await?;
        // What Unlock does (delete the key), but only if the key is still the one we
        // created: atomic, and it tells a stolen lock from a released one.
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.clone(),
                CompareOp::Equal,
                self.token,
            )])
            .and_then([TxnOp::delete(self.key.clone(), None)]);
        let mut kv = client.kv_client();
        let result = self.backend.call("release", kv.txn(txn)).await;
        self.backend.revoke_quietly(&client, self.lease).await;
        match result {
            Ok(response) if response.succeeded() => Ok(()),
            Ok(_) => Err(BackendError::LockLost {
                backend: NAME,
                detail: format!(
                    "lock key {} (revision {}) was gone or replaced at release: its lease expired or it was deleted",
                    self.key, self.token
                ),
            }),
            Err(e) => Err(e),
        }
    }
}

#[async_trait::async_trait]
impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn supports_registration(&self) -> bool {
        true
    }

    fn supports_lock(&self) -> bool {
        true
    }

    async fn list_nodes(&self) -> Result<Vec<RegisteredNode>, BackendError> {
        self.with_failover(|client| self.list_with(client)).await
    }

    async fn register(
        &self,
        registration: Registration,
    ) -> Result<RegistrationHandle, BackendError> {
        let key = self.inner.config.node_key(&registration.node);
        let session = Arc::new(EtcdRegistration {
            backend: self.clone(),
            node: registration.node.clone(),
            key,
            ttl: registration.ttl,
            address: registration.address,
            metadata: registration.metadata,
            lease: Mutex::new(Lease { id: 0, ttl_secs: 0 }),
        });
        session.put_new().await?;
        let (_, ttl_secs) = session.lease();
        let ttl = Duration::from_secs(u64::try_from(ttl_secs).unwrap_or(1).max(1));
        Ok(RegistrationHandle::spawn(
            NAME,
            registration.node,
            ttl,
            session,
            self.inner.config.keepalive.clone(),
        ))
    }

    async fn lock(&self, request: LockRequest) -> Result<LockGuard, BackendError> {
        let started = Instant::now();
        let (client, lease, granted) = self
            .with_failover(|client| async move {
                let (lease, granted) = self.grant(&client, request.ttl).await?;
                Ok((client, lease, granted))
            })
            .await?;
        let name = self.inner.config.lock_name();

        // Wait inside etcd's Lock call, keeping our lease alive meanwhile (a wait longer
        // than the lease must not lose our place in the queue).
        let acquire = async {
            let mut locks = client.lock_client();
            let interval = (granted / 3).max(Duration::from_millis(200));
            let keep_alive = async {
                loop {
                    tokio::time::sleep(interval).await;
                    match self.keep_lease_alive(&client, lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            return BackendError::LockLost {
                                backend: NAME,
                                detail: "the lock's lease expired while waiting".into(),
                            };
                        }
                        Err(error) => {
                            tracing::warn!(%error, "keeping the lock lease alive while waiting failed; retrying")
                        }
                    }
                }
            };
            tokio::select! {
                response = locks.lock(name.clone(), Some(LockOptions::new().with_lease(lease))) => {
                    response.map_err(|e| self.map_error(e))
                }
                error = keep_alive => Err(error),
            }
        };
        let remaining = request.wait.saturating_sub(started.elapsed());
        let response = match tokio::time::timeout(remaining, acquire).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                self.revoke_quietly(&client, lease).await;
                return Err(error);
            }
            Err(_) => {
                // Revoking the lease deletes our waiting key, leaving the queue.
                self.revoke_quietly(&client, lease).await;
                return Err(BackendError::LockTimeout {
                    backend: NAME,
                    waited: request.wait,
                });
            }
        };
        let key = match std::str::from_utf8(response.key()) {
            Ok(key) => key.to_owned(),
            Err(_) => {
                self.revoke_quietly(&client, lease).await;
                return Err(BackendError::InvalidResponse {
                    backend: NAME,
                    detail: "the lock key etcd returned is not UTF-8".into(),
                });
            }
        };
        // The fencing token is the lock key's create_revision; the key must be ours.
        let token = match self.key_info(&client, &key).await {
            Ok(Some((revision, key_lease))) if key_lease == lease => revision,
            Ok(_) => {
                self.revoke_quietly(&client, lease).await;
                return Err(BackendError::LockLost {
                    backend: NAME,
                    detail: format!("lock key {key} vanished right after it was granted"),
                });
            }
            Err(error) => {
                self.revoke_quietly(&client, lease).await;
                return Err(error);
            }
        };
        // Show the holder: write the owner into the key, keeping its lease and revision.
        let owner = format!("{{\"owner\":{}}}", super::json_string(&request.owner));
        let txn = Txn::new()
            .when([Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                token,
            )])
            .and_then([TxnOp::put(
                key.clone(),
                owner,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let mut kv = client.kv_client();
        if let Err(error) = self.call("lock owner", kv.txn(txn)).await {
            tracing::debug!(%error, key, "could not record the lock owner");
        }
        tracing::debug!(key, token, owner = %request.owner, "etcd startup lock acquired");
        let session = Arc::new(EtcdLock {
            backend: self.clone(),
            key,
            lease,
            token,
        });
        Ok(LockGuard::spawn(
            NAME,
            request.owner,
            u64::try_from(token).unwrap_or(0),
            granted,
            session,
            self.inner.config.keepalive.clone(),
        ))
    }

    fn timings(&self) -> Timings {
        self.inner.config.timings()
    }

    /// The same etcd, with the key prefix `<prefix>/candidates`: candidates register under
    /// `/rabbitmq/discovery/<prefix>/candidates/clusters/<cluster>/nodes/`, which
    /// RabbitMQ's own etcd discovery (reading `.../<prefix>/clusters/...`) never lists.
    fn candidates(&self) -> Option<Arc<dyn Backend>> {
        let mut config = self.inner.config.clone();
        config.prefix = format!("{}/candidates", config.prefix);
        EtcdBackend::new(config)
            .ok()
            .map(|b| Arc::new(b) as Arc<dyn Backend>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_cut_mid_call_is_unavailable_not_an_invalid_response() {
        // Regression (found by the etcd-restart trials with 50 and 200 agents): a call in
        // flight as etcd stopped failed with a status of code Unknown made from the
        // connection error ("transport error: connection reset"), which was read as an
        // invalid response and not retried, so every agent gave up.
        let cut = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        assert_eq!(cut.code(), tonic::Code::Unknown);
        let e = map_error("http://etcd:2379", etcd_client::Error::GRpcStatus(cut));
        assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
        assert!(e.to_string().contains("connection reset"), "{e}");
        // An Unknown status etcd itself sent is still an invalid response.
        let sent = tonic::Status::unknown("something odd");
        let e = map_error("http://etcd:2379", etcd_client::Error::GRpcStatus(sent));
        assert!(matches!(e, BackendError::InvalidResponse { .. }), "{e:?}");
    }
}
