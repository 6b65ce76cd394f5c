//! Kubernetes-specific behaviour against the in-test API server (`common/kube.rs`, which
//! names the API documents it follows): not-ready endpoints, hostname addresses, the
//! Endpoints fallback, 409 conflicts between contenders, the takeover of an expired
//! Lease, token rotation, 403, and the StatefulSet seed with no server at all.
#![cfg(feature = "kubernetes")]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use autocluster::backend::kubernetes::{AddressType, InCluster, KubernetesApi, KubernetesBackend};
use autocluster::backend::{Backend, BackendError, LockRequest};

use crate::common::TestEndpoint;
use crate::conformance::kubernetes::{KubeTarget, NAMESPACE};

fn names(nodes: &[autocluster::backend::RegisteredNode]) -> Vec<String> {
    nodes.iter().map(|n| n.node.to_string()).collect()
}

#[tokio::test]
async fn ready_and_not_ready_endpoints_by_ip_or_hostname() {
    let target = KubeTarget::start().await;
    let service = target.config.service_name.clone();
    target.server.set_service(
        NAMESPACE,
        &service,
        vec![
            TestEndpoint::new("10.0.0.3", "rmq-2", false),
            TestEndpoint::new("10.0.0.1", "rmq-0", true),
            TestEndpoint::new("10.0.0.2", "rmq-1", true),
        ],
    );
    let by_ip = KubernetesBackend::new(target.config.clone()).unwrap();
    let nodes = by_ip.list_nodes().await.unwrap();
    // Ordered by StatefulSet ordinal; the not-ready rmq-2 is listed.
    assert_eq!(
        names(&nodes),
        ["rabbit@10.0.0.1", "rabbit@10.0.0.2", "rabbit@10.0.0.3"]
    );
    assert_eq!(nodes[2].metadata["ready"], "false");
    assert_eq!(nodes[2].metadata["pod"], "rmq-2");
    assert_eq!(nodes[2].order, 2);

    let suffix = format!(".{service}.{NAMESPACE}.svc.cluster.local");
    let by_hostname = KubernetesBackend::new(
        target
            .config
            .clone()
            .with_addresses(AddressType::Hostname, suffix.clone()),
    )
    .unwrap();
    let expected: Vec<String> = (0..3).map(|i| format!("rabbit@rmq-{i}{suffix}")).collect();
    assert_eq!(names(&by_hostname.list_nodes().await.unwrap()), expected);

    // A cluster without EndpointSlices: the Endpoints object, notReadyAddresses included.
    target.server.set_slices_api(false);
    assert_eq!(names(&by_hostname.list_nodes().await.unwrap()), expected);

    // An endpoint without hostname in hostname mode fails the listing.
    target.server.set_service(
        NAMESPACE,
        &service,
        vec![TestEndpoint {
            hostname: None,
            ..TestEndpoint::new("10.0.0.1", "web-abc", true)
        }],
    );
    let err = by_hostname.list_nodes().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::InvalidResponse { detail, .. } if detail.contains("web-abc")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_missing_service_is_an_error_and_an_empty_one_an_empty_list() {
    let target = KubeTarget::start().await;
    let other = KubernetesBackend::new(
        autocluster::backend::kubernetes::KubernetesConfig::new("no-such-service")
            .with_api(target.config.api.clone())
            .with_timeout(Duration::from_secs(1)),
    )
    .unwrap();
    let err = other.list_nodes().await.unwrap_err();
    assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
    target.server.set_service(NAMESPACE, "empty", vec![]);
    let empty = KubernetesBackend::new(
        autocluster::backend::kubernetes::KubernetesConfig::new("empty")
            .with_api(target.config.api.clone()),
    )
    .unwrap();
    assert!(empty.list_nodes().await.unwrap().is_empty());
}

#[tokio::test]
async fn contenders_meet_409_conflicts_and_one_holds_at_a_time() {
    let target = KubeTarget::start().await;
    let holders = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    for i in 0..8 {
        let backend = KubernetesBackend::new(target.config.clone()).unwrap();
        let (holders, barrier) = (holders.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let guard = backend
                .lock(LockRequest::new(
                    format!("c{i}"),
                    Duration::from_secs(2),
                    Duration::from_secs(20),
                ))
                .await
                .unwrap();
            assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
            tokio::time::sleep(Duration::from_millis(10)).await;
            holders.fetch_sub(1, Ordering::SeqCst);
            let token = guard.fencing_token();
            guard.release().await.unwrap();
            token
        }));
    }
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.unwrap());
    }
    tokens.sort();
    assert_eq!(
        tokens,
        (0..8).collect::<Vec<u64>>(),
        "leaseTransitions count every acquisition"
    );
    assert!(
        target.server.conflicts() > 0,
        "contenders raced without a 409"
    );
    let lease = target
        .server
        .lease(NAMESPACE, &target.config.lease_name)
        .unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
    assert_eq!(lease["spec"]["leaseTransitions"], 7);
}

#[tokio::test]
async fn an_expired_lease_of_someone_else_is_taken_over() {
    let target = KubeTarget::start().await;
    let backend = KubernetesBackend::new(target.config.clone()).unwrap();
    // Another client's lease, last renewed an hour ago.
    let first = backend
        .lock(LockRequest::new(
            "ghost",
            Duration::from_secs(1),
            Duration::from_secs(1),
        ))
        .await
        .unwrap();
    let token = first.fencing_token();
    first.abandon();
    let started = std::time::Instant::now();
    let next = backend
        .lock(LockRequest::new(
            "next",
            Duration::from_secs(1),
            Duration::from_secs(5),
        ))
        .await
        .unwrap();
    assert!(
        // The lease's 1 s, then the next try: well before the 5 s timeout.
        started.elapsed() <= Duration::from_millis(1000 + 1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(next.fencing_token(), token + 1);
    let lease = target
        .server
        .lease(NAMESPACE, &target.config.lease_name)
        .unwrap();
    assert!(
        lease["spec"]["holderIdentity"]
            .as_str()
            .unwrap()
            .starts_with("next/")
    );
    next.release().await.unwrap();
}

#[tokio::test]
async fn a_rotated_token_is_read_again_after_a_401() {
    let target = KubeTarget::start().await;
    // A long refresh period: only the 401 makes the backend read the file again.
    let backend = KubernetesBackend::new(
        target
            .config
            .clone()
            .with_token_refresh(Duration::from_secs(3600)),
    )
    .unwrap();
    assert_eq!(backend.list_nodes().await.unwrap().len(), 2);
    target.server.rotate_token("token-two");
    std::fs::write(target.dir.path().join("token"), "token-two\n").unwrap();
    assert_eq!(backend.list_nodes().await.unwrap().len(), 2);
    // A token the server no longer accepts, and the file not rotated: Unauthorized.
    target.server.rotate_token("token-three");
    let err = backend.list_nodes().await.unwrap_err();
    assert!(matches!(err, BackendError::Unauthorized { .. }), "{err:?}");
}

#[tokio::test]
async fn forbidden_is_unauthorized() {
    let target = KubeTarget::start().await;
    target.server.add_forbidden_token("limited");
    std::fs::write(target.dir.path().join("token"), "limited").unwrap();
    let backend = KubernetesBackend::new(target.config.clone()).unwrap();
    let err = backend.list_nodes().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Unauthorized { detail, .. } if detail.contains("403")),
        "{err:?}"
    );
    let err = backend
        .lock(LockRequest::new(
            "x",
            Duration::from_secs(1),
            Duration::from_secs(1),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Unauthorized { .. }), "{err:?}");
}

#[tokio::test]
async fn statefulset_seed_needs_no_server_and_no_files() {
    let config = autocluster::backend::kubernetes::KubernetesConfig::new("rmq-headless").with_api(
        KubernetesApi::InCluster(InCluster {
            scheme: "https".into(),
            host: "127.0.0.1".into(),
            port: 1,
            token_path: Some(PathBuf::from("/nonexistent/token")),
            cert_path: PathBuf::from("/nonexistent/ca.crt"),
            namespace_path: PathBuf::from("/nonexistent/namespace"),
        }),
    );
    let backend = KubernetesBackend::new(config).unwrap();
    let seed = backend
        .deterministic_seed(
            &"rabbit@rmq-2.rmq-headless.ns.svc.cluster.local"
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        seed.unwrap().as_str(),
        "rabbit@rmq-0.rmq-headless.ns.svc.cluster.local"
    );
    assert_eq!(
        backend
            .deterministic_seed(&"rabbit@some-host".parse().unwrap())
            .await
            .unwrap(),
        None
    );
    // Listing needs the files: a typed error naming the missing one.
    let err = backend.list_nodes().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Io { context, .. } if context.contains("/nonexistent/ca.crt")),
        "{err:?}"
    );
}
