//! A small HTTP/1.1 server (hyper) for in-test API servers: a [`Handler`] answers each
//! request; the server can be stopped and started again on the same port (an outage:
//! open connections are cut too), and switched to misbehave ([`Misbehave`]) for the
//! conformance suite's garbage and hung-server checks.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request, as a handler sees it.
#[derive(Debug)]
pub struct HttpRequest {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpRequest {
    /// The query parameters, decoded (`?passing` gives `("passing", "")`).
    pub fn query(&self) -> Vec<(String, String)> {
        self.uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    pub fn param(&self, name: &str) -> Option<String> {
        self.query()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    pub fn has_param(&self, name: &str) -> bool {
        self.query().iter().any(|(k, _)| k == name)
    }

    /// The path, percent-decoded.
    pub fn path(&self) -> String {
        percent_decode(self.uri.path())
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A response under construction.
pub fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    if !content_type.is_empty() {
        response
            .headers_mut()
            .insert("Content-Type", content_type.parse().expect("content type"));
    }
    response
}

/// Answers requests.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, request: HttpRequest) -> Response<Full<Bytes>>;
}

/// How the server misbehaves, for every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehave {
    /// Answers properly.
    No,
    /// `500 Internal Server Error` with an HTML page.
    Status500,
    /// `200`, `application/json`, a body that is not JSON.
    MalformedJson,
    /// `200` with a JSON-looking body labelled `text/html`.
    WrongContentType,
    /// `200`, `Content-Length: 100000`, a few bytes, then the connection closes.
    Truncated,
    /// `200` with a body larger than any client limit (16 MiB of JSON spaces).
    Oversized,
    /// Accepts the connection, reads the request, never answers.
    Hang,
}

struct Running {
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// The server: bound on `127.0.0.1` at a fixed port for its whole life.
pub struct HttpFake {
    pub addr: SocketAddr,
    handler: Arc<dyn Handler>,
    mode: Arc<Mutex<Misbehave>>,
    running: Mutex<Option<Running>>,
}

impl HttpFake {
    pub async fn start(handler: Arc<dyn Handler>) -> HttpFake {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fake = HttpFake {
            addr,
            handler,
            mode: Arc::new(Mutex::new(Misbehave::No)),
            running: Mutex::new(None),
        };
        fake.serve(listener);
        fake
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Misbehave) {
        *self.mode.lock().unwrap() = mode;
    }

    fn serve(&self, listener: TcpListener) {
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (handler, mode, conns) = (self.handler.clone(), self.mode.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (handler, mode) = (handler.clone(), mode.clone());
                let task = tokio::spawn(async move {
                    let current = *mode.lock().unwrap();
                    match current {
                        Misbehave::Hang => {
                            let _held = stream;
                            std::future::pending::<()>().await;
                        }
                        Misbehave::Truncated => {
                            let mut stream = stream;
                            let mut buf = [0u8; 4096];
                            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
                            let _ = stream
                                .write_all(
                                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                                      X-Consul-Index: 5\r\nContent-Length: 100000\r\n\r\n[{\"Node\": {\"No",
                                )
                                .await;
                            let _ = stream.shutdown().await;
                        }
                        _ => {
                            let service = service_fn(move |request: Request<Incoming>| {
                                let (handler, mode) = (handler.clone(), mode.clone());
                                async move {
                                    let (parts, body) = request.into_parts();
                                    let body = body
                                        .collect()
                                        .await
                                        .map(|b| b.to_bytes())
                                        .unwrap_or_default();
                                    let current = *mode.lock().unwrap();
                                    let response = match current {
                                        Misbehave::Status500 => respond(
                                            500,
                                            "text/html",
                                            "<html><body>500 Internal Server Error</body></html>",
                                        ),
                                        Misbehave::MalformedJson => respond(
                                            200,
                                            "application/json",
                                            "[{\"Node\": {\"Node\": tru",
                                        ),
                                        Misbehave::WrongContentType => {
                                            respond(200, "text/html; charset=utf-8", "[]")
                                        }
                                        Misbehave::Oversized => respond(
                                            200,
                                            "application/json",
                                            vec![b' '; 16 * 1024 * 1024],
                                        ),
                                        _ => {
                                            handler
                                                .handle(HttpRequest {
                                                    method: parts.method,
                                                    uri: parts.uri,
                                                    headers: parts.headers,
                                                    body,
                                                })
                                                .await
                                        }
                                    };
                                    Ok::<_, Infallible>(response)
                                }
                            });
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
                let mut conns = conns.lock().unwrap();
                conns.retain(|t| !t.is_finished());
                conns.push(task);
            }
        });
        *self.running.lock().unwrap() = Some(Running {
            accept,
            connections,
        });
    }

    /// An outage: stops accepting and cuts every open connection.
    pub fn stop(&self) {
        if let Some(running) = self.running.lock().unwrap().take() {
            running.accept.abort();
            for task in running.connections.lock().unwrap().drain(..) {
                task.abort();
            }
        }
    }

    /// Serves again on the same port.
    pub async fn restart(&self) {
        self.stop();
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 50, "rebinding {}: {e}", self.addr);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        };
        self.serve(listener);
    }
}

impl Drop for HttpFake {
    fn drop(&mut self) {
        self.stop();
    }
}
