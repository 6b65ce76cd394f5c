//! An in-test Consul: the subset of Consul's HTTP API that the backend uses, implemented
//! after HashiCorp's API documents (each endpoint and behaviour names its source), served
//! by [`HttpFake`] so that it can be stopped, restarted and made to misbehave.
//!
//! Documents followed (developer.hashicorp.com):
//! * `/consul/api-docs/agent/service` — "Register Service", "Deregister Service";
//! * `/consul/api-docs/agent/check` — "TTL Check Pass", and the `TTL`,
//!   `DeregisterCriticalServiceAfter` and `Status` check fields ("Register Check");
//! * `/consul/api-docs/health` — "List Service Instances for Service" (`passing`, `tag`);
//! * `/consul/api-docs/session` — "Create Session" (`TTL` 10s–86400s, `LockDelay`,
//!   `Behavior`), "Renew Session", "Delete Session";
//! * `/consul/api-docs/kv` — "Read Key", "Create/Update Key" (`acquire`, `release`),
//!   "Delete Key";
//! * `/consul/api-docs/features/blocking` — blocking queries (`index`, `wait`,
//!   `X-Consul-Index`);
//! * `/consul/docs/automate/session` (Sessions) — invalidation, lock-delay, and "the
//!   session TTL ... Consul may take up to twice the TTL" (the server's timer is 2 × TTL);
//! * `/consul/api-docs/api-structure` — authentication (`X-Consul-Token`), 403 on a
//!   refused token.
//!
//! Test-only knobs (documented deviations): [`ConsulOptions::min_session_ttl`] lets tests
//! use sessions shorter than Consul's 10 s minimum; `DeregisterCriticalServiceAfter` is
//! honoured without Consul's 1-minute minimum and 30-second reaper period.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::http_fake::{Handler, HttpFake, HttpRequest, respond};

/// How the agent answers a TTL check pass for a check it does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownCheck {
    /// Current agents: `404 Unknown check ID "..."`.
    NotFound404,
    /// Older agents: `500 CheckID "..." does not have associated TTL`.
    Internal500,
}

#[derive(Debug, Clone)]
pub struct ConsulOptions {
    /// The ACL token every request must carry (`X-Consul-Token`), if any.
    pub acl_token: Option<String>,
    /// Consul's minimum session TTL is 10 s; tests lower it (test-only knob).
    pub min_session_ttl: Duration,
    pub unknown_check: UnknownCheck,
}

impl Default for ConsulOptions {
    fn default() -> Self {
        ConsulOptions {
            acl_token: None,
            min_session_ttl: Duration::from_secs(10),
            unknown_check: UnknownCheck::NotFound404,
        }
    }
}

#[derive(Debug, Clone)]
struct Check {
    ttl: Duration,
    status: String,
    /// When the TTL runs out without a pass.
    expires: Instant,
    deregister_after: Option<Duration>,
    critical_since: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Service {
    id: String,
    name: String,
    tags: Vec<String>,
    address: String,
    port: u16,
    meta: BTreeMap<String, String>,
    create_index: u64,
    modify_index: u64,
    check: Option<Check>,
}

#[derive(Debug, Clone)]
struct Session {
    id: String,
    name: String,
    ttl: Duration,
    lock_delay: Duration,
    behavior: String,
    /// Sessions: "the TTL ... Consul may take up to twice the TTL" — invalidated at
    /// last renewal + 2 × TTL.
    invalid_at: Instant,
    create_index: u64,
}

#[derive(Debug, Clone)]
struct KvEntry {
    value: Vec<u8>,
    flags: u64,
    session: Option<String>,
    lock_index: u64,
    create_index: u64,
    modify_index: u64,
}

#[derive(Debug, Default)]
struct State {
    /// The Raft index: every write increments it.
    index: u64,
    services: BTreeMap<String, Service>,
    sessions: BTreeMap<String, Session>,
    kv: BTreeMap<String, KvEntry>,
    /// The KV table's index (last write to any key, deletes included).
    kv_index: u64,
    /// Keys in their lock-delay after an invalidation, until this instant.
    lock_delay: BTreeMap<String, Instant>,
    next_session: u64,
}

impl State {
    fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// Applies what time did: TTL checks turning critical, services reaped after
    /// DeregisterCriticalServiceAfter, sessions invalidated. Returns whether anything
    /// changed.
    fn advance(&mut self, now: Instant) -> bool {
        let mut changed = false;
        // agent/check: a TTL check that is not passed within its TTL turns critical.
        for service in self.services.values_mut() {
            if let Some(check) = &mut service.check
                && check.status != "critical"
                && now >= check.expires
            {
                check.status = "critical".into();
                check.critical_since = Some(check.expires);
                changed = true;
            }
        }
        // agent/service Check.DeregisterCriticalServiceAfter: critical that long → removed.
        let reap: Vec<String> = self
            .services
            .values()
            .filter(|s| {
                s.check.as_ref().is_some_and(|c| {
                    matches!((c.deregister_after, c.critical_since), (Some(after), Some(since)) if now >= since + after)
                })
            })
            .map(|s| s.id.clone())
            .collect();
        for id in reap {
            self.services.remove(&id);
            changed = true;
        }
        // Sessions: invalidated when the TTL timer (2 × TTL) fires.
        let expired: Vec<String> = self
            .sessions
            .values()
            .filter(|s| now >= s.invalid_at)
            .map(|s| s.id.clone())
            .collect();
        for id in expired {
            self.invalidate(&id, now);
            changed = true;
        }
        if changed {
            self.bump();
        }
        changed
    }

    /// Sessions ("Session invalidation"): the session is destroyed; with behavior
    /// `release` its locks are released, with `delete` its keys deleted; either way the
    /// keys it held enter their lock-delay.
    fn invalidate(&mut self, id: &str, now: Instant) {
        let Some(session) = self.sessions.remove(id) else {
            return;
        };
        let held: Vec<String> = self
            .kv
            .iter()
            .filter(|(_, e)| e.session.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        for key in held {
            let index = self.bump();
            if session.lock_delay > Duration::ZERO {
                self.lock_delay
                    .insert(key.clone(), now + session.lock_delay);
            }
            if session.behavior == "delete" {
                self.kv.remove(&key);
            } else if let Some(entry) = self.kv.get_mut(&key) {
                entry.session = None;
                entry.modify_index = index;
            }
            self.kv_index = index;
        }
    }
}

pub struct ConsulState {
    state: Mutex<State>,
    changes: watch::Sender<u64>,
    options: Mutex<ConsulOptions>,
}

/// A Go duration (`10s`, `1500ms`, `1m30s`, `2h`), as Consul parses them.
fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "ns" => value / 1e9,
            "us" | "µs" => value / 1e6,
            "ms" => value / 1e3,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return None,
        };
        total += Duration::from_secs_f64(secs);
    }
    Some(total)
}

fn text(status: u16, body: impl Into<String>) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.into())
}

fn json_response(value: &Value, index: Option<u64>) -> Response<Full<Bytes>> {
    let mut response = respond(200, "application/json", value.to_string());
    if let Some(index) = index {
        response
            .headers_mut()
            .insert("X-Consul-Index", index.to_string().parse().unwrap());
    }
    response
}

impl ConsulState {
    fn check_token(&self, request: &HttpRequest) -> Option<Response<Full<Bytes>>> {
        let expected = self.options.lock().unwrap().acl_token.clone()?;
        // api-structure "Authentication": X-Consul-Token header (or ?token=).
        let given = request
            .header("X-Consul-Token")
            .or_else(|| request.param("token"));
        match given {
            Some(token) if token == expected => None,
            Some(_) => Some(text(403, "ACL not found")),
            None => Some(text(403, "Permission denied")),
        }
    }

    fn notify(&self, state: &State) {
        self.changes.send_replace(state.index);
    }

    /// agent/service "Register Service": PUT /v1/agent/service/register.
    fn register(&self, request: &HttpRequest) -> Response<Full<Bytes>> {
        let body: Value = match serde_json::from_slice(&request.body) {
            Ok(v) => v,
            Err(e) => return text(400, format!("Request decode failed: {e}")),
        };
        let Some(name) = body.get("Name").and_then(Value::as_str) else {
            return text(400, "Missing service name");
        };
        let id = body
            .get("ID")
            .and_then(Value::as_str)
            .unwrap_or(name)
            .to_owned();
        let tags: Vec<String> = match body.get("Tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(tags)) => {
                match tags.iter().map(|t| t.as_str().map(str::to_owned)).collect() {
                    Some(tags) => tags,
                    None => return text(400, "Request decode failed: Tags must be strings"),
                }
            }
            Some(_) => return text(400, "Request decode failed: Tags must be an array"),
        };
        let meta: BTreeMap<String, String> = match body.get("Meta") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => {
                let mut meta = BTreeMap::new();
                for (k, v) in m {
                    let Some(v) = v.as_str() else {
                        return text(400, "Request decode failed: Meta values must be strings");
                    };
                    // Meta: keys of at most 128 characters, values of at most 512.
                    if k.len() > 128 || v.len() > 512 {
                        return text(400, format!("Invalid service meta: {k}"));
                    }
                    meta.insert(k.clone(), v.to_owned());
                }
                meta
            }
            Some(_) => return text(400, "Request decode failed: Meta must be an object"),
        };
        let port = body.get("Port").and_then(Value::as_u64).unwrap_or(0);
        let Ok(port) = u16::try_from(port) else {
            return text(400, "Invalid port");
        };
        let check = match body.get("Check") {
            None | Some(Value::Null) => None,
            Some(check) => {
                let Some(ttl) = check.get("TTL").and_then(Value::as_str) else {
                    return text(400, "Invalid check: only TTL checks are supported here");
                };
                let Some(ttl) = parse_go_duration(ttl) else {
                    return text(400, format!("Request decode failed: invalid TTL {ttl:?}"));
                };
                // Register Check: Status defaults to critical.
                let status = check
                    .get("Status")
                    .and_then(Value::as_str)
                    .unwrap_or("critical")
                    .to_owned();
                let deregister_after = match check.get("DeregisterCriticalServiceAfter") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(d)) => match parse_go_duration(d) {
                        Some(d) => Some(d),
                        None => {
                            return text(
                                400,
                                format!("invalid DeregisterCriticalServiceAfter {d:?}"),
                            );
                        }
                    },
                    Some(_) => return text(400, "invalid DeregisterCriticalServiceAfter"),
                };
                let now = Instant::now();
                Some(Check {
                    ttl,
                    critical_since: (status == "critical").then_some(now),
                    status,
                    expires: now + ttl,
                    deregister_after,
                })
            }
        };
        let mut state = self.state.lock().unwrap();
        state.advance(Instant::now());
        let index = state.bump();
        let create_index = state
            .services
            .get(&id)
            .map(|s| s.create_index)
            .unwrap_or(index);
        state.services.insert(
            id.clone(),
            Service {
                id,
                name: name.to_owned(),
                tags,
                address: body
                    .get("Address")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                port,
                meta,
                create_index,
                modify_index: index,
                check,
            },
        );
        self.notify(&state);
        respond(200, "", "")
    }

    /// agent/service "Deregister Service": PUT /v1/agent/service/deregister/:service_id.
    fn deregister(&self, id: &str) -> Response<Full<Bytes>> {
        let mut state = self.state.lock().unwrap();
        if state.services.remove(id).is_none() {
            return text(
                404,
                format!(
                    "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
                ),
            );
        }
        state.bump();
        self.notify(&state);
        respond(200, "", "")
    }

    /// agent/check "TTL Check Pass": PUT /v1/agent/check/pass/:check_id.
    fn pass(&self, check_id: &str) -> Response<Full<Bytes>> {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        state.advance(now);
        let service_id = check_id.strip_prefix("service:").unwrap_or("");
        let found = state
            .services
            .get_mut(service_id)
            .and_then(|s| s.check.as_mut());
        let Some(check) = found else {
            return match self.options.lock().unwrap().unknown_check {
                UnknownCheck::NotFound404 => text(
                    404,
                    format!(
                        "Unknown check ID {check_id:?}. Ensure that the check ID is passed, not the check name."
                    ),
                ),
                UnknownCheck::Internal500 => text(
                    500,
                    format!("CheckID {check_id:?} does not have associated TTL"),
                ),
            };
        };
        check.status = "passing".into();
        check.critical_since = None;
        check.expires = now + check.ttl;
        state.bump();
        self.notify(&state);
        respond(200, "", "")
    }

    /// health "List Service Instances for Service": GET /v1/health/service/:service.
    fn health(&self, request: &HttpRequest, service: &str) -> Response<Full<Bytes>> {
        let mut state = self.state.lock().unwrap();
        if state.advance(Instant::now()) {
            self.notify(&state);
        }
        let passing = request.has_param("passing");
        let tag = request.param("tag");
        let mut entries = Vec::new();
        for s in state.services.values() {
            if s.name != service {
                continue;
            }
            if let Some(tag) = &tag
                && !s.tags.contains(tag)
            {
                continue;
            }
            let mut checks = vec![json!({
                "Node": "test-agent", "CheckID": "serfHealth", "Name": "Serf Health Status",
                "Status": "passing", "ServiceID": "", "ServiceName": ""
            })];
            if let Some(check) = &s.check {
                checks.push(json!({
                    "Node": "test-agent", "CheckID": format!("service:{}", s.id),
                    "Name": format!("Service '{}' check", s.name),
                    "Status": check.status, "ServiceID": s.id, "ServiceName": s.name
                }));
            }
            // `passing`: only instances whose checks are all passing.
            if passing && checks.iter().any(|c| c["Status"] != "passing") {
                continue;
            }
            entries.push(json!({
                "Node": {"ID": "0d7b0fb3-0000-0000-0000-000000000001", "Node": "test-agent",
                         "Address": "127.0.0.1", "Datacenter": "dc1"},
                "Service": {"ID": s.id, "Service": s.name, "Tags": s.tags, "Address": s.address,
                            "Meta": s.meta, "Port": s.port, "CreateIndex": s.create_index,
                            "ModifyIndex": s.modify_index},
                "Checks": checks,
            }));
        }
        json_response(&Value::Array(entries), Some(state.index))
    }

    /// session "Create Session": PUT /v1/session/create.
    fn session_create(&self, request: &HttpRequest) -> Response<Full<Bytes>> {
        let body: Value = if request.body.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice(&request.body) {
                Ok(v) => v,
                Err(e) => return text(400, format!("Request decode failed: {e}")),
            }
        };
        let ttl = match body.get("TTL").and_then(Value::as_str) {
            None => None,
            Some(t) => match parse_go_duration(t) {
                Some(d) => Some(d),
                None => return text(400, format!("Request decode failed: invalid TTL {t:?}")),
            },
        };
        let min = self.options.lock().unwrap().min_session_ttl;
        if let Some(ttl) = ttl
            && (ttl < min || ttl > Duration::from_secs(86400))
        {
            return text(
                400,
                format!("Invalid Session TTL '{ttl:?}', must be between [{min:?}=24h0m0s]"),
            );
        }
        let lock_delay = match body.get("LockDelay") {
            None | Some(Value::Null) => Duration::from_secs(15),
            Some(Value::String(d)) => match parse_go_duration(d) {
                Some(d) => d,
                None => return text(400, format!("invalid LockDelay {d:?}")),
            },
            // A number is nanoseconds.
            Some(Value::Number(n)) => Duration::from_nanos(n.as_u64().unwrap_or(0)),
            Some(_) => return text(400, "invalid LockDelay"),
        };
        if lock_delay > Duration::from_secs(60) {
            return text(400, "LockDelay must be at most 60s");
        }
        let behavior = body
            .get("Behavior")
            .and_then(Value::as_str)
            .unwrap_or("release")
            .to_owned();
        if behavior != "release" && behavior != "delete" {
            return text(400, format!("Invalid Behavior setting '{behavior}'"));
        }
        let mut state = self.state.lock().unwrap();
        state.advance(Instant::now());
        state.next_session += 1;
        let id = format!("adf4238a-882b-9ddc-4a9d-{:012x}", state.next_session);
        let index = state.bump();
        // Without a TTL the session lives until destroyed.
        let ttl = ttl.unwrap_or(Duration::from_secs(86400 * 365));
        state.sessions.insert(
            id.clone(),
            Session {
                id: id.clone(),
                name: body
                    .get("Name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                ttl,
                lock_delay,
                behavior,
                invalid_at: Instant::now() + ttl * 2,
                create_index: index,
            },
        );
        self.notify(&state);
        json_response(&json!({ "ID": id }), None)
    }

    /// session "Renew Session": PUT /v1/session/renew/:uuid.
    fn session_renew(&self, id: &str) -> Response<Full<Bytes>> {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        if state.advance(now) {
            self.notify(&state);
        }
        let Some(session) = state.sessions.get_mut(id) else {
            return text(404, format!("Session id '{id}' not found"));
        };
        session.invalid_at = now + session.ttl * 2;
        let s = session.clone();
        json_response(
            &json!([{ "ID": s.id, "Name": s.name, "TTL": format!("{}s", s.ttl.as_secs()),
                      "Behavior": s.behavior, "LockDelay": s.lock_delay.as_nanos() as u64,
                      "CreateIndex": s.create_index, "ModifyIndex": s.create_index }]),
            Some(state.index),
        )
    }

    /// session "Delete Session": PUT /v1/session/destroy/:uuid (answers `true`).
    fn session_destroy(&self, id: &str) -> Response<Full<Bytes>> {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        state.advance(now);
        state.invalidate(id, now);
        state.bump();
        self.notify(&state);
        json_response(&json!(true), None)
    }

    fn kv_read(state: &State, key: &str) -> (Option<Value>, u64) {
        match state.kv.get(key) {
            None => (None, state.kv_index.max(1)),
            Some(e) => {
                let mut entry = json!({
                    "Key": key, "Flags": e.flags, "LockIndex": e.lock_index,
                    "CreateIndex": e.create_index, "ModifyIndex": e.modify_index,
                    "Value": if e.value.is_empty() { Value::Null } else {
                        Value::String(base64::engine::general_purpose::STANDARD.encode(&e.value))
                    },
                });
                if let Some(session) = &e.session {
                    entry["Session"] = json!(session);
                }
                (Some(json!([entry])), e.modify_index)
            }
        }
    }

    /// kv "Read Key": GET /v1/kv/:key, a blocking query with `index` and `wait`
    /// (features/blocking: returns when the index moves past `index`, or after `wait`).
    async fn kv_get(&self, request: &HttpRequest, key: &str) -> Response<Full<Bytes>> {
        let min_index: u64 = request
            .param("index")
            .and_then(|i| i.parse().ok())
            .unwrap_or(0);
        let wait = request
            .param("wait")
            .and_then(|w| parse_go_duration(&w))
            .unwrap_or(Duration::from_secs(300))
            .min(Duration::from_secs(600));
        let deadline = Instant::now() + wait;
        let mut changes = self.changes.subscribe();
        loop {
            let (found, index) = {
                let mut state = self.state.lock().unwrap();
                if state.advance(Instant::now()) {
                    self.notify(&state);
                }
                Self::kv_read(&state, key)
            };
            if min_index == 0 || index > min_index || Instant::now() >= deadline {
                return match found {
                    Some(value) => json_response(&value, Some(index)),
                    None => {
                        let mut r = respond(404, "", "");
                        r.headers_mut()
                            .insert("X-Consul-Index", index.to_string().parse().unwrap());
                        r
                    }
                };
            }
            // Wake on any change, and at least every 50 ms (time-driven invalidations).
            let _ = tokio::time::timeout(
                Duration::from_millis(50).min(deadline - Instant::now()),
                changes.changed(),
            )
            .await;
        }
    }

    /// kv "Create/Update Key" with `acquire` / `release`, and "Delete Key".
    fn kv_write(&self, request: &HttpRequest, key: &str) -> Response<Full<Bytes>> {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        state.advance(now);
        if request.method == Method::DELETE {
            let index = state.bump();
            state.kv.remove(key);
            state.kv_index = index;
            self.notify(&state);
            return json_response(&json!(true), None);
        }
        let value = request.body.to_vec();
        if let Some(session) = request.param("acquire") {
            if !state.sessions.contains_key(&session) {
                return text(500, format!("invalid session {session:?}"));
            }
            // Sessions "lock-delay": no acquisition while the key is in its lock-delay.
            if state.lock_delay.get(key).is_some_and(|until| now < *until) {
                return json_response(&json!(false), None);
            }
            let index = state.bump();
            let entry = state.kv.entry(key.to_owned()).or_insert(KvEntry {
                value: Vec::new(),
                flags: 0,
                session: None,
                lock_index: 0,
                create_index: index,
                modify_index: index,
            });
            let acquired = match &entry.session {
                Some(holder) if *holder != session => false,
                Some(_) => {
                    entry.value = value;
                    entry.modify_index = index;
                    true
                }
                None => {
                    entry.session = Some(session);
                    entry.lock_index += 1;
                    entry.value = value;
                    entry.modify_index = index;
                    true
                }
            };
            state.kv_index = index;
            self.notify(&state);
            return json_response(&json!(acquired), None);
        }
        if let Some(session) = request.param("release") {
            let index = state.bump();
            let released = match state.kv.get_mut(key) {
                Some(entry) if entry.session.as_deref() == Some(session.as_str()) => {
                    entry.session = None;
                    if !value.is_empty() {
                        entry.value = value;
                    }
                    entry.modify_index = index;
                    true
                }
                _ => false,
            };
            state.kv_index = index;
            self.notify(&state);
            return json_response(&json!(released), None);
        }
        let index = state.bump();
        let entry = state.kv.entry(key.to_owned()).or_insert(KvEntry {
            value: Vec::new(),
            flags: 0,
            session: None,
            lock_index: 0,
            create_index: index,
            modify_index: index,
        });
        entry.value = value;
        entry.modify_index = index;
        state.kv_index = index;
        self.notify(&state);
        json_response(&json!(true), None)
    }
}

#[async_trait::async_trait]
impl Handler for ConsulState {
    async fn handle(&self, request: HttpRequest) -> Response<Full<Bytes>> {
        if let Some(refused) = self.check_token(&request) {
            return refused;
        }
        let path = request.path();
        let method = request.method.clone();
        let segments: Vec<&str> = path.trim_start_matches('/').splitn(4, '/').collect();
        match (method, segments.as_slice()) {
            (Method::PUT, ["v1", "agent", "service", "register"]) => self.register(&request),
            (Method::PUT, ["v1", "agent", "service", rest]) if rest.starts_with("deregister/") => {
                self.deregister(&rest["deregister/".len()..])
            }
            (Method::PUT, ["v1", "agent", "check", rest]) if rest.starts_with("pass/") => {
                self.pass(&rest["pass/".len()..])
            }
            (Method::GET, ["v1", "health", "service", service]) => self.health(&request, service),
            (Method::PUT, ["v1", "session", "create"]) => self.session_create(&request),
            (Method::PUT, ["v1", "session", "renew", id]) => self.session_renew(id),
            (Method::PUT, ["v1", "session", "destroy", id]) => self.session_destroy(id),
            (Method::GET, ["v1", "kv", ..]) => {
                let key = path.trim_start_matches("/v1/kv/").to_owned();
                self.kv_get(&request, &key).await
            }
            (Method::PUT | Method::DELETE, ["v1", "kv", ..]) => {
                let key = path.trim_start_matches("/v1/kv/").to_owned();
                self.kv_write(&request, &key)
            }
            _ => text(404, format!("no such endpoint: {path}")),
        }
    }
}

/// The in-test Consul agent.
pub struct ConsulServer {
    pub state: Arc<ConsulState>,
    pub http: HttpFake,
}

impl ConsulServer {
    pub async fn start(options: ConsulOptions) -> ConsulServer {
        let (changes, _) = watch::channel(0);
        let state = Arc::new(ConsulState {
            state: Mutex::new(State::default()),
            changes,
            options: Mutex::new(options),
        });
        let http = HttpFake::start(state.clone()).await;
        ConsulServer { state, http }
    }

    pub fn port(&self) -> u16 {
        self.http.addr.port()
    }

    pub fn set_unknown_check(&self, answer: UnknownCheck) {
        self.state.options.lock().unwrap().unknown_check = answer;
    }

    /// The agent forgets a service and its check (an agent restarted without its data
    /// directory, or an operator's `consul services deregister`).
    pub fn forget_service(&self, id: &str) -> bool {
        let mut state = self.state.state.lock().unwrap();
        let found = state.services.remove(id).is_some();
        state.bump();
        self.state.notify(&state);
        found
    }

    /// The status of a service's check, if the service exists.
    pub fn check_status(&self, id: &str) -> Option<String> {
        let mut state = self.state.state.lock().unwrap();
        state.advance(Instant::now());
        state.services.get(id).map(|s| {
            s.check
                .as_ref()
                .map(|c| c.status.clone())
                .unwrap_or_default()
        })
    }

    pub fn has_service(&self, id: &str) -> bool {
        self.check_status(id).is_some()
    }

    /// Whether the key has no holder (absent, or present without a session).
    pub fn key_free(&self, key: &str) -> bool {
        let mut state = self.state.state.lock().unwrap();
        if state.advance(Instant::now()) {
            self.state.notify(&state);
        }
        state.kv.get(key).is_none_or(|e| e.session.is_none())
    }

    /// An operator deleting the key (`consul kv delete`).
    pub fn delete_key(&self, key: &str) -> bool {
        let mut state = self.state.state.lock().unwrap();
        let found = state.kv.remove(key).is_some();
        let index = state.bump();
        state.kv_index = index;
        self.state.notify(&state);
        found
    }

    /// Writes a service whose meta names no valid node.
    pub fn put_garbage_service(&self, service: &str, tag: &str) {
        let mut state = self.state.state.lock().unwrap();
        let index = state.bump();
        state.services.insert(
            "garbage".into(),
            Service {
                id: "garbage".into(),
                name: service.into(),
                tags: vec![tag.into()],
                address: String::new(),
                port: 5672,
                meta: [(
                    "erlang-node-name".to_string(),
                    "not a node name".to_string(),
                )]
                .into(),
                create_index: index,
                modify_index: index,
                check: None,
            },
        );
        self.state.notify(&state);
    }
}

#[cfg(test)]
mod tests {
    use super::parse_go_duration;
    use std::time::Duration;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(
            parse_go_duration("1500ms"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("x"), None);
    }
}
