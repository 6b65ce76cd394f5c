//! A backend written outside the crate, with its public API only (as a crate depending on
//! autocluster would write it), passing the exported conformance suite: registration
//! with a TTL over a shared map, no lock, an outage switch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use autocluster::NodeName;
use autocluster::backend::conformance::{self, ConformanceTarget};
use autocluster::backend::{
    Backend, BackendError, KeepAliveOptions, Refresh, RegisteredNode, Registration,
    RegistrationHandle, RegistrationSession, sort_nodes,
};

#[derive(Debug, Default)]
struct State {
    /// node → (registration id, order, expiry)
    nodes: BTreeMap<NodeName, (u64, u64, Instant)>,
    next: u64,
    down: bool,
}

/// The "server": one map shared by every client.
#[derive(Debug, Clone, Default)]
struct MapRegistry(Arc<Mutex<State>>);

impl MapRegistry {
    /// The live state, or the error a client of an unreachable server gets.
    fn state(&self) -> Result<MutexGuard<'_, State>, BackendError> {
        let mut state = self.0.lock().map_err(|_| unavailable("poisoned"))?;
        if state.down {
            return Err(unavailable("the map is down"));
        }
        let now = Instant::now();
        state.nodes.retain(|_, (_, _, expires)| *expires > now);
        Ok(state)
    }
}

fn unavailable(detail: &str) -> BackendError {
    BackendError::Unavailable {
        backend: "map",
        endpoint: "in-process".into(),
        detail: detail.into(),
    }
}

/// A client of the map.
#[derive(Debug, Clone)]
struct MapBackend(MapRegistry);

#[derive(Debug)]
struct MapSession {
    registry: MapRegistry,
    node: NodeName,
    ttl: Duration,
    id: AtomicU64,
}

impl MapSession {
    fn put(&self) -> Result<(), BackendError> {
        let mut state = self.registry.state()?;
        state.next += 1;
        let id = state.next;
        let order = state
            .nodes
            .get(&self.node)
            .map_or(id, |(_, order, _)| *order);
        state
            .nodes
            .insert(self.node.clone(), (id, order, Instant::now() + self.ttl));
        self.id.store(id, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait::async_trait]
impl RegistrationSession for MapSession {
    async fn refresh(&self) -> Result<Refresh, BackendError> {
        let mut state = self.registry.state()?;
        let id = self.id.load(Ordering::SeqCst);
        match state.nodes.get_mut(&self.node) {
            Some((current, _, expires)) if *current == id => {
                *expires = Instant::now() + self.ttl;
                Ok(Refresh::Alive)
            }
            _ => Ok(Refresh::Lost),
        }
    }

    async fn reregister(&self) -> Result<(), BackendError> {
        self.put()
    }

    async fn deregister(&self) -> Result<(), BackendError> {
        let mut state = self.registry.state()?;
        let id = self.id.load(Ordering::SeqCst);
        if state
            .nodes
            .get(&self.node)
            .is_some_and(|(i, _, _)| *i == id)
        {
            state.nodes.remove(&self.node);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Backend for MapBackend {
    fn name(&self) -> &'static str {
        "map"
    }

    fn supports_registration(&self) -> bool {
        true
    }

    fn supports_lock(&self) -> bool {
        false
    }

    async fn list_nodes(&self) -> Result<Vec<RegisteredNode>, BackendError> {
        let state = self.0.state()?;
        let mut nodes: Vec<RegisteredNode> = state
            .nodes
            .iter()
            .map(|(node, (_, order, _))| RegisteredNode::new(node.clone(), *order))
            .collect();
        sort_nodes(&mut nodes);
        Ok(nodes)
    }

    async fn register(
        &self,
        registration: Registration,
    ) -> Result<RegistrationHandle, BackendError> {
        let session = Arc::new(MapSession {
            registry: self.0.clone(),
            node: registration.node.clone(),
            ttl: registration.ttl,
            id: AtomicU64::new(0),
        });
        session.put()?;
        Ok(RegistrationHandle::spawn(
            "map",
            registration.node,
            registration.ttl,
            session,
            KeepAliveOptions::default(),
        ))
    }
}

/// The adapter: a fresh map per check; expiry is exact, calls are immediate.
struct MapTarget(MapRegistry);

#[async_trait::async_trait]
impl ConformanceTarget for MapTarget {
    async fn backend(&self) -> Box<dyn Backend> {
        Box::new(MapBackend(self.0.clone()))
    }
    fn ttl(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn expiry_bound(&self, ttl: Duration) -> Duration {
        ttl
    }
    fn lock_free_bound(&self, ttl: Duration) -> Duration {
        ttl
    }
    fn call_bound(&self) -> Duration {
        Duration::from_millis(500)
    }
    async fn stop_server(&self) -> bool {
        self.0.0.lock().expect("map").down = true;
        true
    }
    async fn start_server(&self) -> bool {
        self.0.0.lock().expect("map").down = false;
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_outside_the_crate_passes_the_conformance_suite() {
    conformance::run(|| async { MapTarget(MapRegistry::default()) }).await;
}
