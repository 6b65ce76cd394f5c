//! The agent's metrics, in OpenMetrics text through prometheus-client, and the backend
//! wrappers that count backend errors and keep the last good listing for readiness.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autocluster::NodeName;
use autocluster::backend::{
    Backend, BackendError, LockGuard, LockRequest, RegisteredNode, Registration,
    RegistrationHandle, Timings,
};
use autocluster::formation::MetricsSnapshot;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The content type `/metrics` is served with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

/// Every metric the agent exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    outcome: Family<Labels, Gauge>,
    formation_seconds: Gauge<f64, AtomicU64>,
    joins: Counter,
    forms: Counter,
    retries: Counter,
    backend_errors: Counter,
    splits: Counter,
    splits_mended: Counter,
    reconnects: Counter,
    forgotten: Counter,
    cluster_size: Gauge,
    running: Gauge,
    seed: Family<Labels, Gauge>,
    ready: Gauge,
    /// The seed last published, to clear its label when it changes.
    last_seed: Mutex<Option<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric, all zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("autocluster");
        let m = Metrics {
            registry: Registry::default(),
            outcome: Family::default(),
            formation_seconds: Gauge::default(),
            joins: Counter::default(),
            forms: Counter::default(),
            retries: Counter::default(),
            backend_errors: Counter::default(),
            splits: Counter::default(),
            splits_mended: Counter::default(),
            reconnects: Counter::default(),
            forgotten: Counter::default(),
            cluster_size: Gauge::default(),
            running: Gauge::default(),
            seed: Family::default(),
            ready: Gauge::default(),
            last_seed: Mutex::new(None),
        };
        registry.register(
            "formation_outcome",
            "How formation ended (1 for the outcome): formed, joined, already_member, standalone, failed",
            m.outcome.clone(),
        );
        registry.register(
            "formation_duration_seconds",
            "How long formation took",
            m.formation_seconds.clone(),
        );
        registry.register("joins", "Joins performed", m.joins.clone());
        registry.register("forms", "New clusters formed", m.forms.clone());
        registry.register(
            "formation_retries",
            "Formation attempts retried",
            m.retries.clone(),
        );
        registry.register(
            "backend_errors",
            "Backend calls that failed",
            m.backend_errors.clone(),
        );
        registry.register(
            "splits",
            "Watch rounds that found registered nodes in separate clusters",
            m.splits.clone(),
        );
        registry.register(
            "splits_mended",
            "Splits mended by this node joining the larger cluster",
            m.splits_mended.clone(),
        );
        registry.register(
            "reconnects",
            "Registered members reconnected",
            m.reconnects.clone(),
        );
        registry.register(
            "cleanup_forgotten",
            "Members forgotten by cleanup",
            m.forgotten.clone(),
        );
        registry.register(
            "cluster_members",
            "Members of the managed node's cluster, as it lists them",
            m.cluster_size.clone(),
        );
        registry.register(
            "cluster_running_members",
            "Running members of the managed node's cluster",
            m.running.clone(),
        );
        registry.register(
            "seed",
            "The seed formation and health chose (1 for that node)",
            m.seed.clone(),
        );
        registry.register(
            "ready",
            "1 when the node is clustered with the seed both ways, with no partitions",
            m.ready.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Records how formation ended.
    pub fn formation(&self, outcome: &str, took: Duration) {
        self.outcome.clear();
        self.outcome
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .set(1);
        self.formation_seconds.set(took.as_secs_f64());
    }

    /// Brings the counters up to the agent's own.
    pub fn sync(&self, s: &MetricsSnapshot) {
        let up = |c: &Counter, v: u64| {
            let now = c.get();
            if v > now {
                c.inc_by(v - now);
            }
        };
        up(&self.joins, s.joins);
        up(&self.forms, s.forms);
        up(&self.retries, s.retries);
        up(&self.splits, s.splits);
        up(&self.reconnects, s.reconnects);
        up(&self.forgotten, s.cleanup_forgotten);
    }

    /// A split this node mended.
    pub fn mended(&self) {
        self.splits_mended.inc();
    }

    /// A failed backend call.
    pub fn backend_error(&self) {
        self.backend_errors.inc();
    }

    /// What the last health check found.
    pub fn health(&self, ready: bool, members: usize, running: usize, seed: Option<&NodeName>) {
        self.ready.set(i64::from(ready));
        self.cluster_size
            .set(i64::try_from(members).unwrap_or(i64::MAX));
        self.running.set(i64::try_from(running).unwrap_or(i64::MAX));
        let seed = seed.map(ToString::to_string);
        let mut last = self.last_seed.lock().unwrap_or_else(|e| e.into_inner());
        if *last != seed {
            self.seed.clear();
            if let Some(s) = &seed {
                self.seed
                    .get_or_create(&vec![("node".to_owned(), s.clone())])
                    .set(1);
            }
            *last = seed;
        }
    }

    /// The OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// A backend that counts its failed calls in [`Metrics`].
#[derive(Debug)]
pub struct Observed {
    pub inner: Arc<dyn Backend>,
    pub metrics: Arc<Metrics>,
}

impl Observed {
    fn count<T>(&self, r: Result<T, BackendError>) -> Result<T, BackendError> {
        if r.is_err() {
            self.metrics.backend_error();
        }
        r
    }
}

#[async_trait::async_trait]
impl Backend for Observed {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn supports_registration(&self) -> bool {
        self.inner.supports_registration()
    }
    fn supports_lock(&self) -> bool {
        self.inner.supports_lock()
    }
    async fn list_nodes(&self) -> Result<Vec<RegisteredNode>, BackendError> {
        self.count(self.inner.list_nodes().await)
    }
    async fn register(&self, r: Registration) -> Result<RegistrationHandle, BackendError> {
        self.count(self.inner.register(r).await)
    }
    async fn lock(&self, request: LockRequest) -> Result<LockGuard, BackendError> {
        self.count(self.inner.lock(request).await)
    }
    async fn deterministic_seed(&self, local: &NodeName) -> Result<Option<NodeName>, BackendError> {
        self.count(self.inner.deterministic_seed(local).await)
    }
    fn timings(&self) -> Timings {
        self.inner.timings()
    }
    fn lists_contact_points(&self) -> bool {
        self.inner.lists_contact_points()
    }
    fn candidates(&self) -> Option<Arc<dyn Backend>> {
        let inner = self.inner.candidates()?;
        Some(Arc::new(Observed {
            inner,
            metrics: self.metrics.clone(),
        }))
    }
}

/// For readiness only: a backend whose listing, when the backend fails, is the last
/// good one (a backend outage shows in metrics and logs, not in readiness). Formation
/// never uses it: there a backend error is an error.
#[derive(Debug)]
pub struct LastGood {
    pub inner: Arc<dyn Backend>,
    pub last: Mutex<Option<Vec<RegisteredNode>>>,
}

#[async_trait::async_trait]
impl Backend for LastGood {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn supports_registration(&self) -> bool {
        false
    }
    fn supports_lock(&self) -> bool {
        false
    }
    async fn list_nodes(&self) -> Result<Vec<RegisteredNode>, BackendError> {
        match self.inner.list_nodes().await {
            Ok(nodes) => {
                *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(nodes.clone());
                Ok(nodes)
            }
            Err(e) => {
                let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
                match last {
                    Some(nodes) => {
                        tracing::warn!(error = %e, "the backend failed: readiness uses its last good listing");
                        Ok(nodes)
                    }
                    None => Err(e),
                }
            }
        }
    }
    async fn deterministic_seed(&self, local: &NodeName) -> Result<Option<NodeName>, BackendError> {
        self.inner.deterministic_seed(local).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_openmetrics_with_every_metric() {
        let m = Metrics::new();
        m.formation("joined", Duration::from_millis(1500));
        m.health(true, 3, 3, Some(&"rabbit@a".parse().unwrap()));
        m.backend_error();
        let text = m.render();
        for line in [
            "autocluster_formation_outcome{outcome=\"joined\"} 1",
            "autocluster_formation_duration_seconds 1.5",
            "autocluster_backend_errors_total 1",
            "autocluster_cluster_members 3",
            "autocluster_seed{node=\"rabbit@a\"} 1",
            "autocluster_ready 1",
            "autocluster_joins_total 0",
            "autocluster_splits_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        m.health(false, 1, 1, Some(&"rabbit@b".parse().unwrap()));
        let text = m.render();
        assert!(!text.contains("rabbit@a"), "{text}");
        assert!(text.contains("autocluster_ready 0"), "{text}");
    }
}
