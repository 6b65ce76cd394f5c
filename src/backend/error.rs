//! [`BackendError`]: what every discovery backend reports.

use std::sync::Arc;
use std::time::Duration;

/// Why a discovery backend operation failed.
///
/// A failing, unreachable or misbehaving backend is always one of these, never an empty
/// list of nodes. [`BackendError::is_transient`] tells a retry loop whether trying again
/// later may help.
///
/// The type is `Clone` (I/O errors are shared behind an [`Arc`]) so that keep-alive
/// events can carry it to every subscriber.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend could not be reached or answered that it cannot serve now (connection
    /// refused, etcd down or without a leader, HTTP 5xx).
    #[error("{backend} backend unavailable at {endpoint}: {detail}")]
    Unavailable {
        /// The backend's name, e.g. `"etcd"`.
        backend: &'static str,
        /// The endpoint or endpoints tried.
        endpoint: String,
        /// What went wrong.
        detail: String,
    },
    /// An operation did not finish in time (for example a TCP connection that accepts and
    /// never answers).
    #[error("{backend} backend: {operation} timed out after {after:?}")]
    Timeout {
        /// The backend's name.
        backend: &'static str,
        /// The operation, e.g. `"list_nodes"`.
        operation: &'static str,
        /// How long it was given.
        after: Duration,
    },
    /// The backend refused our credentials (wrong user or password, missing permission,
    /// expired token).
    #[error("{backend} backend refused our credentials: {detail}")]
    Unauthorized {
        /// The backend's name.
        backend: &'static str,
        /// What it said.
        detail: String,
    },
    /// The backend answered something that cannot be used: malformed JSON, a value that
    /// is not a node name, the wrong content type, a truncated body, too many entries.
    #[error("{backend} backend sent an invalid response: {detail}")]
    InvalidResponse {
        /// The backend's name.
        backend: &'static str,
        /// What was wrong, naming the key or field where there is one.
        detail: String,
    },
    /// The backend understood the request and refused it (an invalid argument, a failed
    /// precondition): trying again will not help.
    #[error("{backend} backend rejected the request: {detail}")]
    Rejected {
        /// The backend's name.
        backend: &'static str,
        /// What it said.
        detail: String,
    },
    /// The startup lock was not acquired within the wait time.
    #[error("{backend} backend: the startup lock was not acquired within {waited:?}")]
    LockTimeout {
        /// The backend's name.
        backend: &'static str,
        /// How long we waited.
        waited: Duration,
    },
    /// The lock had been lost (its lease expired) or stolen (its key deleted or taken over)
    /// before it was released.
    #[error("{backend} backend: the startup lock was lost before it was released: {detail}")]
    LockLost {
        /// The backend's name.
        backend: &'static str,
        /// How it was lost.
        detail: String,
    },
    /// The backend cannot do this at all (see [`Backend::supports_registration`] and
    /// [`Backend::supports_lock`]).
    ///
    /// [`Backend::supports_registration`]: super::Backend::supports_registration
    /// [`Backend::supports_lock`]: super::Backend::supports_lock
    #[error("the {backend} backend does not support {operation}")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// The operation, e.g. `"lock"`.
        operation: &'static str,
    },
    /// A configuration key or environment variable is unknown, misspelled or has an invalid
    /// value. `key` names it exactly as it was given.
    #[error("configuration {key}: {detail}")]
    Config {
        /// The key or variable, as given.
        key: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A local I/O error (reading a certificate file, a socket error).
    #[error("{backend} backend: {context}: {source}")]
    Io {
        /// The backend's name.
        backend: &'static str,
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl BackendError {
    /// Whether the same operation may succeed if tried again later: the backend was
    /// unreachable, slow, busy, or the lock was held by someone else for too long.
    /// Configuration, credential, protocol and capability errors are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            BackendError::Unavailable { .. }
            | BackendError::Timeout { .. }
            | BackendError::LockTimeout { .. }
            | BackendError::Io { .. } => true,
            BackendError::Unauthorized { .. }
            | BackendError::InvalidResponse { .. }
            | BackendError::Rejected { .. }
            | BackendError::LockLost { .. }
            | BackendError::Unsupported { .. }
            | BackendError::Config { .. } => false,
        }
    }

    /// The backend this error comes from, when it names one (configuration errors do
    /// not).
    pub fn backend(&self) -> Option<&'static str> {
        match self {
            BackendError::Unavailable { backend, .. }
            | BackendError::Timeout { backend, .. }
            | BackendError::Unauthorized { backend, .. }
            | BackendError::InvalidResponse { backend, .. }
            | BackendError::Rejected { backend, .. }
            | BackendError::LockTimeout { backend, .. }
            | BackendError::LockLost { backend, .. }
            | BackendError::Unsupported { backend, .. }
            | BackendError::Io { backend, .. } => Some(backend),
            BackendError::Config { .. } => None,
        }
    }

    /// A configuration error for `key`.
    pub fn config(key: impl Into<String>, detail: impl Into<String>) -> BackendError {
        BackendError::Config {
            key: key.into(),
            detail: detail.into(),
        }
    }

    /// An [`Unsupported`](BackendError::Unsupported) error.
    pub fn unsupported(backend: &'static str, operation: &'static str) -> BackendError {
        BackendError::Unsupported { backend, operation }
    }

    /// A [`Timeout`](BackendError::Timeout) error.
    pub fn timeout(
        backend: &'static str,
        operation: &'static str,
        after: Duration,
    ) -> BackendError {
        BackendError::Timeout {
            backend,
            operation,
            after,
        }
    }
}

/// Runs `future` for at most `after`, turning the deadline into
/// [`BackendError::Timeout`]. Every network call of every backend goes through this (or an
/// equivalent bound), so that no call hangs on a TCP connection that never answers.
pub async fn with_timeout<T, F>(
    backend: &'static str,
    operation: &'static str,
    after: Duration,
    future: F,
) -> Result<T, BackendError>
where
    F: std::future::Future<Output = Result<T, BackendError>>,
{
    match tokio::time::timeout(after, future).await {
        Ok(result) => result,
        Err(_) => Err(BackendError::timeout(backend, operation, after)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_or_not() {
        let unavailable = BackendError::Unavailable {
            backend: "etcd",
            endpoint: "http://127.0.0.1:2379".into(),
            detail: "connection refused".into(),
        };
        assert!(unavailable.is_transient());
        assert_eq!(unavailable.backend(), Some("etcd"));
        assert!(
            unavailable
                .to_string()
                .contains("etcd backend unavailable at http://127.0.0.1:2379")
        );
        assert!(!BackendError::config("ETCD_NODE_TTL", "not a number").is_transient());
        assert!(!BackendError::unsupported("static", "lock").is_transient());
        assert!(BackendError::timeout("etcd", "list_nodes", Duration::from_secs(1)).is_transient());
        assert_eq!(
            BackendError::config("AUTOCLUSTER_ETCD_TTL", "unknown variable").to_string(),
            "configuration AUTOCLUSTER_ETCD_TTL: unknown variable"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_timeout_bounds_a_hung_future() {
        let result: Result<(), _> = with_timeout(
            "memory",
            "list_nodes",
            Duration::from_secs(2),
            std::future::pending(),
        )
        .await;
        assert!(matches!(
            result,
            Err(BackendError::Timeout {
                operation: "list_nodes",
                ..
            })
        ));
    }
}
