//! The agent's HTTP endpoints: `/healthz` (the agent runs), `/readyz` (clustered with
//! the seed both ways, no partitions; JSON with the problems) and `/metrics`
//! (OpenMetrics). What each path answers is decided by [`route`], a pure function; the
//! server around it bounds connections, header reads and idle connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::metrics::{CONTENT_TYPE, Metrics};

/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 64;
/// The longest a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection is served.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// What readiness last found.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    /// Whether the node is ready.
    pub ready: bool,
    /// The JSON body `/readyz` answers with.
    pub body: serde_json::Value,
}

/// What the endpoints read.
#[derive(Debug)]
pub struct State {
    pub readiness: watch::Receiver<Readiness>,
    pub metrics: Arc<Metrics>,
}

/// The answer to one request: status, content type, body.
pub fn route(method: &Method, path: &str, state: &State) -> (StatusCode, &'static str, String) {
    const JSON: &str = "application/json";
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET only\n".into());
    }
    match path {
        "/healthz" => (StatusCode::OK, TEXT, "ok\n".into()),
        "/readyz" => {
            let r = state.readiness.borrow().clone();
            let status = if r.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, JSON, format!("{}\n", r.body))
        }
        "/metrics" => (StatusCode::OK, CONTENT_TYPE, state.metrics.render()),
        _ => (
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: /healthz, /readyz, /metrics\n".into(),
        ),
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = route(req.method(), req.uri().path(), &state);
    let body = if req.method() == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(body)
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(response)
}

/// Binds `addr` (an error says so at once) and serves until the task is dropped.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--http {addr}: {e}"))
}

/// Serves the endpoints on `listener`.
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepting an HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, state.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(ready: bool) -> (watch::Sender<Readiness>, State) {
        let (tx, rx) = watch::channel(Readiness {
            ready,
            body: serde_json::json!({"ready": ready, "problems": ["p"]}),
        });
        (
            tx,
            State {
                readiness: rx,
                metrics: Arc::new(Metrics::new()),
            },
        )
    }

    #[test]
    fn each_path_answers_what_a_probe_expects() {
        let (_tx, s) = state(false);
        assert_eq!(route(&Method::GET, "/healthz", &s).0, StatusCode::OK);
        let (status, ct, body) = route(&Method::GET, "/readyz", &s);
        assert_eq!(
            (status, ct),
            (StatusCode::SERVICE_UNAVAILABLE, "application/json")
        );
        assert!(body.contains("\"problems\":[\"p\"]"), "{body}");
        let (status, ct, body) = route(&Method::GET, "/metrics", &s);
        assert_eq!((status, ct), (StatusCode::OK, CONTENT_TYPE));
        assert!(body.ends_with("# EOF\n"));
        assert_eq!(route(&Method::GET, "/", &s).0, StatusCode::NOT_FOUND);
        assert_eq!(
            route(&Method::POST, "/readyz", &s).0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let (_tx, s) = state(true);
        assert_eq!(route(&Method::GET, "/readyz", &s).0, StatusCode::OK);
    }
}
