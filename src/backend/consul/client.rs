//! The networked half of the Consul backend: [`ConsulBackend`].

use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use tokio::time::Instant;

use super::http::{Answer, Http, json_body, parse_json, status_error};
use super::wire::{
    KvEntry, ServiceRegistration, SessionCreate, SessionId, check_ttl, health_answer,
};
use super::{ConsulConfig, NAME, go_duration, key_path, path_segment};
use crate::backend::{
    Backend, BackendError, LockGuard, LockRequest, LockSession, Refresh, RegisteredNode,
    Registration, RegistrationHandle, RegistrationSession, Timings,
};

/// The longest single blocking query while waiting for the lock.
const MAX_BLOCKING_WAIT: Duration = Duration::from_secs(10);

/// The Consul backend. Cheap to clone; clones share one connection pool.
///
/// Construction checks the configuration and reads the TLS files; it sends nothing.
#[derive(Clone)]
pub struct ConsulBackend {
    inner: Arc<Inner>,
}

struct Inner {
    config: ConsulConfig,
    http: Http,
}

impl std::fmt::Debug for ConsulBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulBackend")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl ConsulBackend {
    /// A backend for `config`.
    pub fn new(config: ConsulConfig) -> Result<ConsulBackend, BackendError> {
        config.validate()?;
        let http = Http::new(&config)?;
        Ok(ConsulBackend {
            inner: Arc::new(Inner { config, http }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ConsulConfig {
        &self.inner.config
    }

    async fn send(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, BackendError> {
        self.inner
            .http
            .send(operation, method, path, body, Duration::ZERO)
            .await
    }

    /// Sends and requires a 2xx answer.
    async fn send_ok(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, BackendError> {
        let answer = self.send(operation, method, path, body).await?;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(status_error(path, &answer, self.inner.http.base()))
        }
    }

    fn json_body<T: serde::Serialize>(value: &T) -> Vec<u8> {
        // Serializing these plain structs cannot fail.
        serde_json::to_vec(value).unwrap_or_default()
    }

    /// A `true`/`false` JSON answer (KV acquire and release, session destroy).
    fn boolean(path: &str, answer: &Answer) -> Result<bool, BackendError> {
        parse_json::<bool>(path, answer)
    }

    async fn register_service(&self, body: &ServiceRegistration) -> Result<(), BackendError> {
        self.send_ok(
            "register",
            Method::PUT,
            "/v1/agent/service/register",
            Some(Self::json_body(body)),
        )
        .await
        .map(|_| ())
    }

    /// The lock key's entry and the answer's `X-Consul-Index`; `index`/`wait` make it a
    /// blocking query.
    async fn read_lock_key(
        &self,
        blocking: Option<(u64, Duration)>,
    ) -> Result<(Option<KvEntry>, u64), BackendError> {
        let key = key_path(&self.inner.config.lock_key());
        let (path, extra) = match blocking {
            Some((index, wait)) => (
                format!("/v1/kv/{key}?index={index}&wait={}", go_duration(wait)),
                // Consul adds up to wait/16 of jitter.
                wait + wait / 16,
            ),
            None => (format!("/v1/kv/{key}"), Duration::ZERO),
        };
        let answer = self
            .inner
            .http
            .send("lock", Method::GET, &path, None, extra)
            .await?;
        let index = answer.index.unwrap_or(0);
        match answer.status {
            StatusCode::NOT_FOUND => Ok((None, index)),
            status if status.is_success() => {
                let entries: Vec<KvEntry> = parse_json(&path, &answer)?;
                let entry =
                    entries
                        .into_iter()
                        .next()
                        .ok_or_else(|| BackendError::InvalidResponse {
                            backend: NAME,
                            detail: format!("{path}: an empty list for an existing key"),
                        })?;
                if entry.key != self.inner.config.lock_key() {
                    return Err(BackendError::InvalidResponse {
                        backend: NAME,
                        detail: format!("{path}: the answer is about key {:?}", entry.key),
                    });
                }
                Ok((Some(entry), index))
            }
            _ => Err(status_error(&path, &answer, self.inner.http.base())),
        }
    }

    async fn destroy_session(&self, session: &str) {
        let path = format!("/v1/session/destroy/{}", path_segment(session));
        if let Err(error) = self.send_ok("release", Method::PUT, &path, None).await {
            tracing::debug!(%error, session, "destroying a Consul session failed; it expires by itself");
        }
    }

    async fn try_acquire(&self, session: &str, owner: &str) -> Result<bool, BackendError> {
        let path = format!(
            "/v1/kv/{}?acquire={}",
            key_path(&self.inner.config.lock_key()),
            path_segment(session)
        );
        let value = serde_json::json!({ "owner": owner, "session": session });
        let answer = self
            .send_ok("lock", Method::PUT, &path, Some(Self::json_body(&value)))
            .await?;
        Self::boolean(&path, &answer)
    }

    /// Waits for the lock with blocking queries until it is ours or `deadline` passes.
    async fn acquire_until(
        &self,
        session: &str,
        owner: &str,
        deadline: Instant,
    ) -> Result<KvEntry, BackendError> {
        let mut backoff = Duration::from_millis(25);
        let mut failures = 0;
        loop {
            match self
                .acquire_step(session, owner, deadline, &mut backoff)
                .await
            {
                Ok(Some(entry)) => return Ok(entry),
                Ok(None) => {}
                // A call that fails while waiting (a slow answer under load) is tried
                // once more; a second failure in a row is the answer, so that a backend
                // that is down or hung fails fast rather than at the end of the wait.
                Err(error) if error.is_transient() && failures == 0 => {
                    failures += 1;
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return Err(error);
                    }
                    tracing::warn!(%error, "a Consul call failed while waiting for the lock; retrying");
                    tokio::time::sleep(backoff.min(remaining)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One try: the entry when the lock is ours, `None` after waiting for a change.
    async fn acquire_step(
        &self,
        session: &str,
        owner: &str,
        deadline: Instant,
        backoff: &mut Duration,
    ) -> Result<Option<KvEntry>, BackendError> {
        if self.try_acquire(session, owner).await? {
            let (entry, _) = self.read_lock_key(None).await?;
            return match entry {
                Some(entry) if entry.session.as_deref() == Some(session) => Ok(Some(entry)),
                _ => Err(BackendError::LockLost {
                    backend: NAME,
                    detail: "the lock key changed hands right after it was acquired".into(),
                }),
            };
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(BackendError::LockTimeout {
                backend: NAME,
                waited: Duration::ZERO,
            });
        }
        let (entry, index) = self.read_lock_key(None).await?;
        match entry {
            Some(KvEntry {
                session: Some(holder),
                ..
            }) if holder != session => {
                // Held: block until the key changes (or our wait ends).
                let wait = remaining.min(MAX_BLOCKING_WAIT);
                if wait >= Duration::from_millis(1) {
                    self.read_lock_key(Some((index, wait))).await?;
                }
                *backoff = Duration::from_millis(25);
            }
            _ => {
                // Free but not ours: another contender won the race, or the key is in its
                // lock-delay after a holder's session was invalidated. Retry soon.
                tokio::time::sleep((*backoff).min(remaining)).await;
                *backoff = (*backoff * 2).min(Duration::from_secs(1));
            }
        }
        Ok(None)
    }
}

#[derive(Debug)]
struct ConsulRegistration {
    backend: ConsulBackend,
    body: ServiceRegistration,
}

#[async_trait::async_trait]
impl RegistrationSession for ConsulRegistration {
    async fn refresh(&self) -> Result<Refresh, BackendError> {
        let path = format!(
            "/v1/agent/check/pass/{}",
            path_segment(&format!("service:{}", self.body.id))
        );
        let answer = self
            .backend
            .send("refresh", Method::PUT, &path, None)
            .await?;
        match answer.status.as_u16() {
            200..=299 => Ok(Refresh::Alive),
            // Current agents: 404 "Unknown check ID"; older ones: 500 ("Unknown check",
            // "does not have associated TTL"). Either way the agent lost the check.
            404 | 500 => {
                tracing::warn!(
                    service = %self.body.id,
                    status = %answer.status,
                    body = %answer.text(),
                    "the Consul agent no longer knows the registration's check; registering again"
                );
                Ok(Refresh::Lost)
            }
            _ => Err(status_error(&path, &answer, self.backend.inner.http.base())),
        }
    }

    async fn reregister(&self) -> Result<(), BackendError> {
        self.backend.register_service(&self.body).await
    }

    async fn deregister(&self) -> Result<(), BackendError> {
        let path = format!(
            "/v1/agent/service/deregister/{}",
            path_segment(&self.body.id)
        );
        let answer = self
            .backend
            .send("deregister", Method::PUT, &path, None)
            .await?;
        if answer.status.is_success()
            || answer.status == StatusCode::NOT_FOUND
            || (answer.status == StatusCode::INTERNAL_SERVER_ERROR
                && answer.text().contains("Unknown service"))
        {
            Ok(())
        } else {
            Err(status_error(&path, &answer, self.backend.inner.http.base()))
        }
    }
}

#[derive(Debug)]
struct ConsulLock {
    backend: ConsulBackend,
    session: String,
    lock_index: u64,
}

#[async_trait::async_trait]
impl LockSession for ConsulLock {
    async fn refresh(&self) -> Result<Refresh, BackendError> {
        let path = format!("/v1/session/renew/{}", path_segment(&self.session));
        let answer = self
            .backend
            .send("refresh", Method::PUT, &path, None)
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(Refresh::Lost);
        }
        if !answer.status.is_success() {
            return Err(status_error(&path, &answer, self.backend.inner.http.base()));
        }
        let (entry, _) = self.backend.read_lock_key(None).await?;
        match entry {
            Some(entry)
                if entry.session.as_deref() == Some(self.session.as_str())
                    && entry.lock_index == self.lock_index =>
            {
                Ok(Refresh::Alive)
            }
            _ => Ok(Refresh::Lost),
        }
    }

    async fn release(&self) -> Result<(), BackendError> {
        let path = format!(
            "/v1/kv/{}?release={}",
            key_path(&self.backend.inner.config.lock_key()),
            path_segment(&self.session)
        );
        let result = match self
            .backend
            .send_ok("release", Method::PUT, &path, None)
            .await
        {
            Ok(answer) => ConsulBackend::boolean(&path, &answer),
            Err(e) => Err(e),
        };
        // Destroy the session only after releasing: destroying a session that still holds
        // the key would start the key's lock-delay.
        self.backend.destroy_session(&self.session).await;
        match result {
            Ok(true) => Ok(()),
            Ok(false) => Err(BackendError::LockLost {
                backend: NAME,
                detail: format!(
                    "Consul refused to release {} for session {}: the key was deleted or is \
                     held by another session (ours was invalidated)",
                    self.backend.inner.config.lock_key(),
                    self.session
                ),
            }),
            Err(e) => Err(e),
        }
    }
}

#[async_trait::async_trait]
impl Backend for ConsulBackend {
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
        let config = &self.inner.config;
        let mut path = format!(
            "/v1/health/service/{}?tag={}",
            path_segment(&config.service),
            path_segment(&config.cluster_name)
        );
        if !config.include_warnings {
            path.push_str("&passing");
        }
        let answer = self.send_ok("list_nodes", Method::GET, &path, None).await?;
        health_answer(config, &path, json_body(&path, &answer)?)
    }

    async fn register(
        &self,
        registration: Registration,
    ) -> Result<RegistrationHandle, BackendError> {
        let body = ServiceRegistration::new(&self.inner.config, &registration);
        self.register_service(&body).await?;
        let session = Arc::new(ConsulRegistration {
            backend: self.clone(),
            body,
        });
        Ok(RegistrationHandle::spawn(
            NAME,
            registration.node,
            check_ttl(registration.ttl),
            session,
            self.inner.config.keepalive.clone(),
        ))
    }

    async fn lock(&self, request: LockRequest) -> Result<LockGuard, BackendError> {
        let started = Instant::now();
        let deadline = started + request.wait;
        let config = &self.inner.config;
        let ttl = config.session_ttl(request.ttl);
        let create = SessionCreate {
            name: format!("autocluster startup lock: {}", request.owner),
            ttl: go_duration(ttl),
            lock_delay: go_duration(config.lock_delay),
            behavior: "release",
        };
        let path = "/v1/session/create";
        let answer = self
            .send_ok("lock", Method::PUT, path, Some(Self::json_body(&create)))
            .await?;
        let session = parse_json::<SessionId>(path, &answer)?.id;
        // Keep the session alive while waiting: the wait may be longer than its TTL.
        let renew = {
            let backend = self.clone();
            let session = session.clone();
            async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    let path = format!("/v1/session/renew/{}", path_segment(&session));
                    match backend.send_ok("lock", Method::PUT, &path, None).await {
                        Ok(_) => {}
                        Err(BackendError::Rejected { detail, .. }) if detail.contains("404") => {
                            return BackendError::LockLost {
                                backend: NAME,
                                detail: "the lock session was invalidated while waiting".into(),
                            };
                        }
                        Err(error) => {
                            tracing::warn!(%error, "renewing the Consul lock session while waiting failed; retrying")
                        }
                    }
                }
            }
        };
        let outcome = tokio::select! {
            result = self.acquire_until(&session, &request.owner, deadline) => result,
            error = renew => Err(error),
            _ = tokio::time::sleep_until(deadline + config.timeout) => Err(BackendError::LockTimeout {
                backend: NAME,
                waited: request.wait,
            }),
        };
        let entry = match outcome {
            Ok(entry) => entry,
            Err(error) => {
                self.destroy_session(&session).await;
                return Err(match error {
                    BackendError::LockTimeout { .. } => BackendError::LockTimeout {
                        backend: NAME,
                        waited: request.wait,
                    },
                    e => e,
                });
            }
        };
        tracing::debug!(
            session,
            fencing_token = entry.modify_index,
            owner = %request.owner,
            "Consul startup lock acquired"
        );
        let lock = Arc::new(ConsulLock {
            backend: self.clone(),
            session,
            lock_index: entry.lock_index,
        });
        Ok(LockGuard::spawn(
            NAME,
            request.owner,
            entry.modify_index,
            ttl,
            lock,
            config.keepalive.clone(),
        ))
    }

    fn timings(&self) -> Timings {
        self.inner.config.timings()
    }

    /// The same Consul, with the service `<service>-candidates`: RabbitMQ's own Consul
    /// discovery lists only its service.
    fn candidates(&self) -> Option<Arc<dyn Backend>> {
        let mut config = self.inner.config.clone();
        config.service = format!("{}-candidates", config.service);
        ConsulBackend::new(config)
            .ok()
            .map(|b| Arc::new(b) as Arc<dyn Backend>)
    }
}
