//! The backend conformance suite (`autocluster::backend::conformance`), run by every
//! backend of the crate: one small adapter per backend, and one call of the suite each.

use std::time::Duration;

use autocluster::backend::{Backend, MemoryBackend, StaticBackend, StaticConfig};

use autocluster::backend::conformance::ConformanceTarget;

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
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suite() {
        autocluster::backend::conformance::run(|| async { super::MemoryTarget::new() }).await;
    }
}

mod static_list {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suite() {
        autocluster::backend::conformance::run(|| async { super::StaticTarget }).await;
    }

    #[tokio::test]
    async fn lists_in_configured_order_and_seeds_the_first() {
        use autocluster::backend::conformance::ConformanceTarget;
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

    use crate::common::{EtcdServer, Fake, FakeServer, unique_name};
    use autocluster::backend::conformance::ConformanceTarget;

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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suite() {
        autocluster::backend::conformance::run(EtcdTarget::start).await;
    }
}

#[cfg(feature = "consul")]
pub mod consul {
    use std::time::Duration;

    use autocluster::backend::Backend;
    use autocluster::backend::consul::{ConsulBackend, ConsulConfig};
    use tokio::sync::Mutex;

    use crate::common::{ConsulOptions, ConsulServer, Misbehave, unique_name};
    use autocluster::backend::conformance::ConformanceTarget;

    /// The in-test Consul agent (sessions may be as short as 1 s there; lock-delay 0).
    /// Bounds, as the backend states them: a dead registrant is gone at its check TTL
    /// (+1 s stated for a real agent's sync); a dead holder's lock is free within
    /// 2 × session TTL + lock-delay.
    pub struct ConsulTarget {
        pub server: ConsulServer,
        pub config: ConsulConfig,
        fakes: Mutex<Vec<ConsulServer>>,
    }

    impl ConsulTarget {
        pub async fn start() -> ConsulTarget {
            Self::with_options(ConsulOptions {
                min_session_ttl: Duration::from_secs(1),
                ..ConsulOptions::default()
            })
            .await
        }

        pub async fn with_options(options: ConsulOptions) -> ConsulTarget {
            let server = ConsulServer::start(options).await;
            let config = ConsulConfig::new("127.0.0.1", server.port())
                .with_service(unique_name("svc"))
                .with_cluster_name("suite")
                .with_lock_prefix(unique_name("locks"))
                .with_lock_delay(Duration::ZERO)
                .with_min_session_ttl(Duration::from_secs(1))
                .with_timeout(Duration::from_secs(1));
            ConsulTarget {
                server,
                config,
                fakes: Mutex::new(Vec::new()),
            }
        }

        async fn misbehaving(&self, mode: Misbehave) -> Box<dyn Backend> {
            let fake = ConsulServer::start(ConsulOptions::default()).await;
            fake.http.set_mode(mode);
            let mut config = self.config.clone();
            config.port = fake.port();
            self.fakes.lock().await.push(fake);
            Box::new(ConsulBackend::new(config).expect("consul backend"))
        }
    }

    #[async_trait::async_trait]
    impl ConformanceTarget for ConsulTarget {
        async fn backend(&self) -> Box<dyn Backend> {
            Box::new(ConsulBackend::new(self.config.clone()).expect("consul backend"))
        }
        fn ttl(&self) -> Duration {
            Duration::from_secs(1)
        }
        fn expiry_bound(&self, ttl: Duration) -> Duration {
            ttl + Duration::from_secs(1)
        }
        fn lock_free_bound(&self, ttl: Duration) -> Duration {
            ttl * 2 + self.config.lock_delay
        }
        fn call_bound(&self) -> Duration {
            Duration::from_millis(2500)
        }
        async fn stop_server(&self) -> bool {
            self.server.http.stop();
            true
        }
        async fn start_server(&self) -> bool {
            self.server.http.restart().await;
            true
        }
        async fn break_lock(&self) -> bool {
            self.server.delete_key(&self.config.lock_key())
        }
        async fn lock_free_on_server(&self) -> Option<bool> {
            Some(self.server.key_free(&self.config.lock_key()))
        }
        async fn write_garbage(&self) -> bool {
            self.server
                .put_garbage_service(&self.config.service, &self.config.cluster_name);
            true
        }
        async fn hung_backend(&self) -> Option<Box<dyn Backend>> {
            Some(self.misbehaving(Misbehave::Hang).await)
        }
        async fn garbage_backends(&self) -> Vec<Box<dyn Backend>> {
            let mut backends = Vec::new();
            for mode in [
                Misbehave::Status500,
                Misbehave::MalformedJson,
                Misbehave::WrongContentType,
                Misbehave::Truncated,
                Misbehave::Oversized,
            ] {
                backends.push(self.misbehaving(mode).await);
            }
            backends
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suite() {
        autocluster::backend::conformance::run(ConsulTarget::start).await;
    }
}

#[cfg(feature = "kubernetes")]
pub mod kubernetes {
    use std::path::PathBuf;
    use std::time::Duration;

    use autocluster::backend::Backend;
    use autocluster::backend::kubernetes::{
        InCluster, KubernetesApi, KubernetesBackend, KubernetesConfig,
    };
    use tokio::sync::Mutex;

    use crate::common::{KubeServer, Misbehave, TestEndpoint, unique_name};
    use autocluster::backend::conformance::ConformanceTarget;

    pub const NAMESPACE: &str = "autocluster-test";
    pub const TOKEN: &str = "token-one";

    /// The in-test API server, reached in-cluster style (token and namespace files, plain
    /// HTTP). Bound for a dead holder: lease duration (whole seconds) + the poll interval.
    pub struct KubeTarget {
        pub server: KubeServer,
        pub config: KubernetesConfig,
        pub dir: tempfile::TempDir,
        fakes: Mutex<Vec<KubeServer>>,
    }

    impl KubeTarget {
        pub async fn start() -> KubeTarget {
            let server = KubeServer::start(TOKEN).await;
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
            std::fs::write(dir.path().join("namespace"), NAMESPACE).unwrap();
            let service = unique_name("rmq").to_ascii_lowercase().replace('_', "-");
            server.set_service(
                NAMESPACE,
                &service,
                vec![
                    TestEndpoint::new("10.0.0.1", "rmq-0", true),
                    TestEndpoint::new("10.0.0.2", "rmq-1", false),
                ],
            );
            let config = KubernetesConfig::new(service)
                .with_api(KubernetesApi::InCluster(Self::in_cluster(
                    &server,
                    dir.path(),
                )))
                .with_lock_poll_interval(Duration::from_millis(100))
                .with_timeout(Duration::from_secs(1));
            KubeTarget {
                server,
                config,
                dir,
                fakes: Mutex::new(Vec::new()),
            }
        }

        pub fn in_cluster(server: &KubeServer, dir: &std::path::Path) -> InCluster {
            InCluster {
                scheme: "http".into(),
                host: "127.0.0.1".into(),
                port: server.port(),
                token_path: Some(dir.join("token")),
                cert_path: PathBuf::from("/nonexistent/ca.crt"),
                namespace_path: dir.join("namespace"),
            }
        }

        async fn misbehaving(&self, mode: Misbehave) -> Box<dyn Backend> {
            let fake = KubeServer::start(TOKEN).await;
            fake.http.set_mode(mode);
            let config = self
                .config
                .clone()
                .with_api(KubernetesApi::InCluster(Self::in_cluster(
                    &fake,
                    self.dir.path(),
                )));
            self.fakes.lock().await.push(fake);
            Box::new(KubernetesBackend::new(config).expect("kubernetes backend"))
        }
    }

    #[async_trait::async_trait]
    impl ConformanceTarget for KubeTarget {
        async fn backend(&self) -> Box<dyn Backend> {
            Box::new(KubernetesBackend::new(self.config.clone()).expect("kubernetes backend"))
        }
        fn ttl(&self) -> Duration {
            Duration::from_secs(1)
        }
        fn expiry_bound(&self, ttl: Duration) -> Duration {
            ttl
        }
        fn lock_free_bound(&self, ttl: Duration) -> Duration {
            ttl + self.config.lock_poll_interval
        }
        fn call_bound(&self) -> Duration {
            Duration::from_millis(2500)
        }
        async fn stop_server(&self) -> bool {
            self.server.http.stop();
            true
        }
        async fn start_server(&self) -> bool {
            self.server.http.restart().await;
            true
        }
        async fn break_lock(&self) -> bool {
            self.server.delete_lease(NAMESPACE, &self.config.lease_name)
        }
        async fn lock_free_on_server(&self) -> Option<bool> {
            Some(self.server.lease_free(NAMESPACE, &self.config.lease_name))
        }
        async fn write_garbage(&self) -> bool {
            // An endpoint whose address makes no node name.
            self.server.set_service(
                NAMESPACE,
                &self.config.service_name,
                vec![TestEndpoint::new("not an address", "rmq-0", true)],
            );
            true
        }
        async fn hung_backend(&self) -> Option<Box<dyn Backend>> {
            Some(self.misbehaving(Misbehave::Hang).await)
        }
        async fn garbage_backends(&self) -> Vec<Box<dyn Backend>> {
            let mut backends = Vec::new();
            for mode in [
                Misbehave::Status500,
                Misbehave::MalformedJson,
                Misbehave::WrongContentType,
                Misbehave::Truncated,
                Misbehave::Oversized,
            ] {
                backends.push(self.misbehaving(mode).await);
            }
            backends
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suite() {
        autocluster::backend::conformance::run(KubeTarget::start).await;
    }
}

#[cfg(feature = "dns")]
pub mod dns {
    use std::time::Duration;

    use autocluster::backend::Backend;
    use autocluster::backend::dns::{DnsBackend, DnsConfig};
    use tokio::sync::Mutex;

    use crate::common::Dnsmasq;
    use autocluster::backend::conformance::ConformanceTarget;

    /// A real dnsmasq. No registration and no lock (capabilities say so); the outage is
    /// dnsmasq killed; listing is bounded by the 1 s timeout.
    pub struct DnsTarget {
        pub server: Mutex<Dnsmasq>,
        pub config: DnsConfig,
    }

    impl DnsTarget {
        pub async fn start() -> DnsTarget {
            let server = Dnsmasq::start().await;
            let config = DnsConfig::new("svc.rmq.test")
                .with_servers([server.addr])
                .with_timeout(Duration::from_secs(1));
            DnsTarget {
                server: Mutex::new(server),
                config,
            }
        }
    }

    #[async_trait::async_trait]
    impl ConformanceTarget for DnsTarget {
        async fn backend(&self) -> Box<dyn Backend> {
            Box::new(DnsBackend::new(self.config.clone()).expect("dns backend"))
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
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suite() {
        autocluster::backend::conformance::run(DnsTarget::start).await;
    }
}
