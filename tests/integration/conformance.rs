//! The backend conformance suite, run by every backend: the checks live in
//! `common/conformance.rs` (see there how to plug a backend in); this file holds one
//! small adapter per backend.

use std::time::Duration;

use autocluster::backend::{Backend, MemoryBackend, StaticBackend, StaticConfig};

use crate::common::conformance::ConformanceTarget;

/// The reference: the in-process registry. Expiry is exact (bound = TTL).
pub struct MemoryTarget {
    registry: MemoryBackend,
}

impl MemoryTarget {
    pub fn new() -> MemoryTarget {
        MemoryTarget {
            registry: MemoryBackend::new(),
        }
    }
}

#[async_trait::async_trait]
impl ConformanceTarget for MemoryTarget {
    async fn backend(&self) -> Box<dyn Backend> {
        Box::new(self.registry.clone())
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
        self.registry.set_available(false);
        true
    }
    async fn start_server(&self) -> bool {
        self.registry.set_available(true);
        true
    }
    async fn break_lock(&self) -> bool {
        self.registry.break_lock()
    }
    async fn lock_free_on_server(&self) -> Option<bool> {
        Some(self.registry.lock_holder().is_none())
    }
}

/// The static list: no registration, no lock, a deterministic seed.
pub struct StaticTarget;

#[async_trait::async_trait]
impl ConformanceTarget for StaticTarget {
    async fn backend(&self) -> Box<dyn Backend> {
        let nodes = ["rabbit@b", "rabbit@a", "rabbit@c"].map(|n| n.parse().expect("node"));
        Box::new(StaticBackend::new(StaticConfig::new(nodes)).expect("static backend"))
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
}

mod memory {
    crate::conformance_suite!(super::MemoryTarget::new());
}

mod static_list {
    crate::conformance_suite!(super::StaticTarget);

    #[tokio::test]
    async fn lists_in_configured_order_and_seeds_the_first() {
        use crate::common::conformance::ConformanceTarget;
        let backend = super::StaticTarget.backend().await;
        let names: Vec<String> = backend
            .list_nodes()
            .await
            .unwrap()
            .iter()
            .map(|n| n.node.to_string())
            .collect();
        assert_eq!(names, ["rabbit@b", "rabbit@a", "rabbit@c"]);
        let seed = backend
            .deterministic_seed(&"rabbit@c".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(seed.unwrap().as_str(), "rabbit@b");
    }
}

#[cfg(feature = "etcd")]
pub mod etcd {
    use std::time::Duration;

    use autocluster::backend::Backend;
    use autocluster::backend::etcd::{EtcdBackend, EtcdConfig};
    use tokio::sync::Mutex;

    use crate::common::conformance::ConformanceTarget;
    use crate::common::{EtcdServer, Fake, FakeServer, unique_name};

    /// A real etcd per test. Bound: the lease TTL plus etcd's 500 ms expiry check, stated
    /// as TTL + 1 s in the backend's docs.
    pub struct EtcdTarget {
        pub server: Mutex<EtcdServer>,
        pub config: EtcdConfig,
        fakes: Mutex<Vec<FakeServer>>,
    }

    impl EtcdTarget {
        pub async fn start() -> EtcdTarget {
            let server = EtcdServer::start().await;
            let config = EtcdConfig::new([server.endpoint()])
                .with_prefix(unique_name("conformance"))
                .with_cluster_name("suite")
                .with_timeout(Duration::from_secs(1));
            EtcdTarget {
                server: Mutex::new(server),
                config,
                fakes: Mutex::new(Vec::new()),
            }
        }

        async fn fake_backend(&self, kind: Fake) -> Box<dyn Backend> {
            let fake = FakeServer::start(kind).await;
            let mut config = self.config.clone();
            config.endpoints = vec![fake.endpoint()];
            self.fakes.lock().await.push(fake);
            Box::new(EtcdBackend::new(config).expect("etcd backend"))
        }
    }

    #[async_trait::async_trait]
    impl ConformanceTarget for EtcdTarget {
        async fn backend(&self) -> Box<dyn Backend> {
            Box::new(EtcdBackend::new(self.config.clone()).expect("etcd backend"))
        }
        fn ttl(&self) -> Duration {
            Duration::from_secs(2)
        }
        fn expiry_bound(&self, ttl: Duration) -> Duration {
            ttl + Duration::from_secs(1)
        }
        fn lock_free_bound(&self, ttl: Duration) -> Duration {
            ttl + Duration::from_secs(1)
        }
        fn call_bound(&self) -> Duration {
            // The configured 1 s timeout, plus scheduling margin on a busy machine.
            Duration::from_millis(2500)
        }
        async fn stop_server(&self) -> bool {
            self.server.lock().await.stop().await;
            true
        }
        async fn start_server(&self) -> bool {
            self.server.lock().await.restart().await;
            true
        }
        async fn break_lock(&self) -> bool {
            let server = self.server.lock().await;
            let out = server
                .etcdctl(&["del", "--prefix", &format!("{}/", self.config.lock_name())])
                .await;
            out.trim() != "0"
        }
        async fn lock_free_on_server(&self) -> Option<bool> {
            let server = self.server.lock().await;
            Some(
                server
                    .keys(&format!("{}/", self.config.lock_name()))
                    .await
                    .is_empty(),
            )
        }
        async fn write_garbage(&self) -> bool {
            let server = self.server.lock().await;
            let key = format!("{}garbage@localhost", self.config.nodes_prefix());
            server.etcdctl(&["put", &key, "{not json"]).await;
            true
        }
        async fn hung_backend(&self) -> Option<Box<dyn Backend>> {
            Some(self.fake_backend(Fake::Hang).await)
        }
        async fn garbage_backends(&self) -> Vec<Box<dyn Backend>> {
            vec![
                self.fake_backend(Fake::Http500).await,
                self.fake_backend(Fake::Garbage).await,
            ]
        }
    }

    crate::conformance_suite!(EtcdTarget::start().await);
}
