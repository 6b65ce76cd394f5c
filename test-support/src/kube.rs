//! An in-test Kubernetes API server: the subset the backend uses, after the Kubernetes
//! API reference (kubernetes.io/docs/reference/kubernetes-api/), served over plain HTTP
//! by [`HttpFake`] (the backend's `http` scheme, as for `kubectl proxy`).
//!
//! Documents followed (kubernetes.io):
//! * `/docs/reference/kubernetes-api/service-resources/endpoint-slice-v1/` — EndpointSlice
//!   (`addressType`, `endpoints[].addresses`, `hostname`, `conditions.ready/serving/
//!   terminating`, `targetRef`), "list" with `labelSelector`;
//! * `/docs/reference/kubernetes-api/service-resources/endpoints-v1/` — Endpoints
//!   (`subsets[].addresses`, `notReadyAddresses`), "read";
//! * `/docs/reference/kubernetes-api/cluster-resources/lease-v1/` — Lease (`holderIdentity`,
//!   `leaseDurationSeconds`, `acquireTime`, `renewTime`, `leaseTransitions`), "read",
//!   "create", "replace", "delete";
//! * `/docs/reference/using-api/api-concepts/` — "Resource versions" and "Efficient
//!   detection of changes": `metadata.resourceVersion`, and an update carrying a stale
//!   `resourceVersion` fails with **409 Conflict**; a create of an existing name fails with
//!   409 AlreadyExists;
//! * `/docs/reference/kubernetes-api/common-definitions/status/` — the `Status` body of
//!   every error (`kind`, `apiVersion`, `status: Failure`, `message`, `reason`, `code`);
//! * `/docs/reference/access-authn-authz/authentication/` — bearer tokens
//!   (`Authorization: Bearer <token>`): 401 Unauthorized for a missing or unknown token;
//!   `/docs/reference/access-authn-authz/authorization/` — 403 Forbidden for a known token
//!   without permission.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response};
use serde_json::{Value, json};

use super::http_fake::{Handler, HttpFake, HttpRequest, respond};

/// An endpoint to serve.
#[derive(Debug, Clone)]
pub struct TestEndpoint {
    pub ip: String,
    pub hostname: Option<String>,
    pub pod: String,
    pub ready: bool,
}

impl TestEndpoint {
    pub fn new(ip: &str, pod: &str, ready: bool) -> TestEndpoint {
        TestEndpoint {
            ip: ip.into(),
            hostname: Some(pod.into()),
            pod: pod.into(),
            ready,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// The store's revision: every write increments it (resourceVersion).
    revision: u64,
    /// Valid tokens; a token listed in `forbidden` is known but not allowed.
    tokens: Vec<String>,
    forbidden: Vec<String>,
    /// Services and their endpoints, by (namespace, name).
    services: BTreeMap<(String, String), Vec<TestEndpoint>>,
    /// Whether `discovery.k8s.io/v1` is served (clusters before 1.21 lack it).
    slices_api: bool,
    leases: BTreeMap<(String, String), Value>,
    /// Count of 409 answers, for tests.
    conflicts: u64,
}

pub struct KubeState {
    state: Mutex<State>,
}

/// api-concepts / Status: an error body.
fn status(code: u16, reason: &str, message: String) -> Response<Full<Bytes>> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    respond(code, "application/json", body.to_string())
}

fn ok(value: Value) -> Response<Full<Bytes>> {
    respond(200, "application/json", value.to_string())
}

impl KubeState {
    /// authentication: Bearer token → 401 when missing or unknown, 403 when forbidden.
    fn authorize(&self, request: &HttpRequest) -> Option<Response<Full<Bytes>>> {
        let state = self.state.lock().unwrap();
        let token = request
            .header("Authorization")
            .and_then(|h| h.strip_prefix("Bearer ").map(str::to_owned));
        match token {
            Some(t) if state.tokens.contains(&t) => {
                if state.forbidden.contains(&t) {
                    Some(status(
                        403,
                        "Forbidden",
                        format!(
                            "{} is forbidden: User \"system:serviceaccount:test:rmq\" cannot access it",
                            request.path()
                        ),
                    ))
                } else {
                    None
                }
            }
            _ => Some(status(401, "Unauthorized", "Unauthorized".into())),
        }
    }

    fn slice_list(&self, request: &HttpRequest, ns: &str) -> Response<Full<Bytes>> {
        let state = self.state.lock().unwrap();
        if !state.slices_api {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource".into(),
            );
        }
        let selector = request.param("labelSelector").unwrap_or_default();
        let service = selector.strip_prefix("kubernetes.io/service-name=");
        let mut items = Vec::new();
        for ((namespace, name), endpoints) in &state.services {
            if namespace != ns || service.is_some_and(|s| s != name) {
                continue;
            }
            // Two slices per Service when it has more than one endpoint (the controller
            // splits them; consumers must merge).
            for (i, chunk) in endpoints
                .chunks(endpoints.len().div_ceil(2).max(1))
                .enumerate()
            {
                items.push(json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": format!("{name}-{i}"), "namespace": namespace,
                                  "labels": {"kubernetes.io/service-name": name},
                                  "resourceVersion": state.revision.to_string()},
                    "addressType": "IPv4",
                    "endpoints": chunk.iter().map(|e| {
                        let mut ep = json!({
                            "addresses": [e.ip],
                            "conditions": {"ready": e.ready, "serving": e.ready, "terminating": false},
                            "targetRef": {"kind": "Pod", "namespace": namespace, "name": e.pod},
                        });
                        if let Some(h) = &e.hostname { ep["hostname"] = json!(h); }
                        ep
                    }).collect::<Vec<_>>(),
                    "ports": [{"name": "epmd", "port": 4369, "protocol": "TCP"}],
                }));
            }
        }
        ok(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
            "metadata": {"resourceVersion": state.revision.to_string()},
            "items": items,
        }))
    }

    fn endpoints_get(&self, ns: &str, name: &str) -> Response<Full<Bytes>> {
        let state = self.state.lock().unwrap();
        let Some(endpoints) = state.services.get(&(ns.to_owned(), name.to_owned())) else {
            return status(404, "NotFound", format!("endpoints \"{name}\" not found"));
        };
        let address = |e: &TestEndpoint| {
            let mut a =
                json!({"ip": e.ip, "targetRef": {"kind": "Pod", "namespace": ns, "name": e.pod}});
            if let Some(h) = &e.hostname {
                a["hostname"] = json!(h);
            }
            a
        };
        let ready: Vec<Value> = endpoints.iter().filter(|e| e.ready).map(address).collect();
        let not_ready: Vec<Value> = endpoints.iter().filter(|e| !e.ready).map(address).collect();
        let mut subset = json!({"ports": [{"name": "epmd", "port": 4369, "protocol": "TCP"}]});
        if !ready.is_empty() {
            subset["addresses"] = json!(ready);
        }
        if !not_ready.is_empty() {
            subset["notReadyAddresses"] = json!(not_ready);
        }
        let subsets = if endpoints.is_empty() {
            json!([])
        } else {
            json!([subset])
        };
        ok(json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": state.revision.to_string()},
            "subsets": subsets,
        }))
    }

    /// lease-v1 read/create/replace/delete, with resourceVersion concurrency.
    fn lease(&self, request: &HttpRequest, ns: &str, name: Option<&str>) -> Response<Full<Bytes>> {
        let mut state = self.state.lock().unwrap();
        let body: Option<Value> = if request.body.is_empty() {
            None
        } else {
            match serde_json::from_slice(&request.body) {
                Ok(v) => Some(v),
                Err(e) => return status(400, "BadRequest", format!("the body is not JSON: {e}")),
            }
        };
        match (&request.method, name) {
            (&Method::GET, Some(name)) => match state.leases.get(&(ns.into(), name.into())) {
                Some(lease) => ok(lease.clone()),
                None => status(
                    404,
                    "NotFound",
                    format!("leases.coordination.k8s.io \"{name}\" not found"),
                ),
            },
            (&Method::POST, None) => {
                let Some(mut lease) = body else {
                    return status(400, "BadRequest", "no body".into());
                };
                let Some(name) = lease["metadata"]["name"].as_str().map(str::to_owned) else {
                    return status(422, "Invalid", "metadata.name: Required value".into());
                };
                if state.leases.contains_key(&(ns.into(), name.clone())) {
                    state.conflicts += 1;
                    return status(
                        409,
                        "AlreadyExists",
                        format!("leases.coordination.k8s.io \"{name}\" already exists"),
                    );
                }
                state.revision += 1;
                lease["metadata"]["resourceVersion"] = json!(state.revision.to_string());
                lease["metadata"]["namespace"] = json!(ns);
                lease["metadata"]["uid"] = json!(format!("uid-{}", state.revision));
                lease["apiVersion"] = json!("coordination.k8s.io/v1");
                lease["kind"] = json!("Lease");
                state.leases.insert((ns.into(), name), lease.clone());
                respond(201, "application/json", lease.to_string())
            }
            (&Method::PUT, Some(name)) => {
                let Some(mut lease) = body else {
                    return status(400, "BadRequest", "no body".into());
                };
                let key = (ns.to_owned(), name.to_owned());
                let Some(current) = state.leases.get(&key).cloned() else {
                    return status(
                        404,
                        "NotFound",
                        format!("leases.coordination.k8s.io \"{name}\" not found"),
                    );
                };
                // api-concepts "Resource versions": a stale resourceVersion is a conflict.
                let given = lease["metadata"]["resourceVersion"].as_str().unwrap_or("");
                if given.is_empty() {
                    return status(422, "Invalid", "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update".into());
                }
                if given
                    != current["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("")
                {
                    state.conflicts += 1;
                    return status(
                        409,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                        ),
                    );
                }
                state.revision += 1;
                lease["metadata"]["resourceVersion"] = json!(state.revision.to_string());
                lease["metadata"]["uid"] = current["metadata"]["uid"].clone();
                lease["apiVersion"] = json!("coordination.k8s.io/v1");
                lease["kind"] = json!("Lease");
                state.leases.insert(key, lease.clone());
                ok(lease)
            }
            (&Method::DELETE, Some(name)) => match state.leases.remove(&(ns.into(), name.into())) {
                Some(_) => {
                    state.revision += 1;
                    ok(
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}),
                    )
                }
                None => status(
                    404,
                    "NotFound",
                    format!("leases.coordination.k8s.io \"{name}\" not found"),
                ),
            },
            _ => status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method".into(),
            ),
        }
    }
}

#[async_trait::async_trait]
impl Handler for KubeState {
    async fn handle(&self, request: HttpRequest) -> Response<Full<Bytes>> {
        if let Some(refused) = self.authorize(&request) {
            return refused;
        }
        let path = request.path();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            [
                "apis",
                "discovery.k8s.io",
                "v1",
                "namespaces",
                ns,
                "endpointslices",
            ] if request.method == Method::GET => self.slice_list(&request, ns),
            ["api", "v1", "namespaces", ns, "endpoints", name] if request.method == Method::GET => {
                self.endpoints_get(ns, name)
            }
            [
                "apis",
                "coordination.k8s.io",
                "v1",
                "namespaces",
                ns,
                "leases",
            ] => self.lease(&request, ns, None),
            [
                "apis",
                "coordination.k8s.io",
                "v1",
                "namespaces",
                ns,
                "leases",
                name,
            ] => self.lease(&request, ns, Some(name)),
            _ => status(
                404,
                "NotFound",
                "the server could not find the requested resource".into(),
            ),
        }
    }
}

/// The in-test API server.
pub struct KubeServer {
    pub state: Arc<KubeState>,
    pub http: HttpFake,
}

impl KubeServer {
    pub async fn start(token: &str) -> KubeServer {
        let state = Arc::new(KubeState {
            state: Mutex::new(State {
                tokens: vec![token.to_owned()],
                slices_api: true,
                ..State::default()
            }),
        });
        let http = HttpFake::start(state.clone()).await;
        KubeServer { state, http }
    }

    pub fn port(&self) -> u16 {
        self.http.addr.port()
    }

    pub fn set_service(&self, ns: &str, name: &str, endpoints: Vec<TestEndpoint>) {
        let mut state = self.state.state.lock().unwrap();
        state.revision += 1;
        state.services.insert((ns.into(), name.into()), endpoints);
    }

    pub fn set_slices_api(&self, served: bool) {
        self.state.state.lock().unwrap().slices_api = served;
    }

    /// Accepts `token` from now on (and forgets the others): a rotation.
    pub fn rotate_token(&self, token: &str) {
        self.state.state.lock().unwrap().tokens = vec![token.to_owned()];
    }

    pub fn add_forbidden_token(&self, token: &str) {
        let mut state = self.state.state.lock().unwrap();
        state.tokens.push(token.to_owned());
        state.forbidden.push(token.to_owned());
    }

    pub fn conflicts(&self) -> u64 {
        self.state.state.lock().unwrap().conflicts
    }

    pub fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        self.state
            .state
            .lock()
            .unwrap()
            .leases
            .get(&(ns.into(), name.into()))
            .cloned()
    }

    /// An operator deleting the Lease (`kubectl delete lease`).
    pub fn delete_lease(&self, ns: &str, name: &str) -> bool {
        let mut state = self.state.state.lock().unwrap();
        state.revision += 1;
        state.leases.remove(&(ns.into(), name.into())).is_some()
    }

    /// Whether the Lease has no live holder, judged as the API documents the fields:
    /// no holderIdentity, or renewTime + leaseDurationSeconds in the past.
    pub fn lease_free(&self, ns: &str, name: &str) -> bool {
        let Some(lease) = self.lease(ns, name) else {
            return true;
        };
        let spec = &lease["spec"];
        if spec["holderIdentity"].as_str().is_none_or(str::is_empty) {
            return true;
        }
        let Some(renew) = spec["renewTime"].as_str() else {
            return true;
        };
        let renew: k8s_openapi::jiff::Timestamp = renew.parse().expect("renewTime is RFC 3339");
        let duration = spec["leaseDurationSeconds"].as_i64().unwrap_or(0);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis() as i64;
        renew.as_millisecond() + duration * 1000 < now_ms
    }

    /// Replaces a lease's spec by hand, bumping resourceVersion (another writer).
    pub fn touch_lease(&self, ns: &str, name: &str) {
        let mut state = self.state.state.lock().unwrap();
        state.revision += 1;
        let revision = state.revision;
        if let Some(lease) = state.leases.get_mut(&(ns.into(), name.into())) {
            lease["metadata"]["resourceVersion"] = json!(revision.to_string());
        }
    }
}
