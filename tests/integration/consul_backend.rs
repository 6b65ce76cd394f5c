//! Consul-specific behaviour against the in-test Consul (`common/consul.rs`, which names
//! the API documents it follows): re-registration after the agent lost the check (404 on
//! current agents, 500 on older ones), ACL tokens, lock waits that block on the key
//! (blocking queries) rather than poll, lock-delay, and TTL checks turning critical.
#![cfg(feature = "consul")]

use std::time::{Duration, Instant};

use autocluster::backend::consul::{ConsulBackend, ConsulConfig};
use autocluster::backend::{Backend, BackendError, LockRequest, Registration, RegistrationEvent};

use crate::common::{ConsulOptions, UnknownCheck};
use crate::conformance::consul::ConsulTarget;
use autocluster::backend::conformance::unique_node;

async fn reregisters_after(answer: UnknownCheck) {
    let target = ConsulTarget::start().await;
    target.server.set_unknown_check(answer);
    let backend = ConsulBackend::new(target.config.clone()).unwrap();
    let node = unique_node();
    let handle = backend
        .register(Registration::new(node.clone(), Duration::from_secs(1)).with_address("10.0.0.7"))
        .await
        .unwrap();
    let mut events = handle.subscribe();
    let id = target.config.service_id(&node);
    assert_eq!(target.server.check_status(&id).as_deref(), Some("passing"));
    assert!(target.server.forget_service(&id));
    let deadline = Instant::now() + Duration::from_secs(3);
    let (mut lost, mut again) = (false, false);
    while !(lost && again) {
        let event = tokio::time::timeout_at(deadline.into(), events.recv())
            .await
            .expect("events within 3 s")
            .unwrap();
        match event {
            RegistrationEvent::Lost => lost = true,
            RegistrationEvent::Reregistered => again = true,
            _ => {}
        }
    }
    assert!(target.server.has_service(&id), "registered again");
    let nodes = backend.list_nodes().await.unwrap();
    let listed = nodes.iter().find(|n| n.node == node).expect("listed again");
    assert_eq!(listed.address.as_deref(), Some("10.0.0.7"));
    assert_eq!(listed.metadata["cluster"], "suite");
    handle.deregister().await.unwrap();
    assert!(!target.server.has_service(&id));
}

#[tokio::test]
async fn reregisters_when_the_agent_answers_404() {
    reregisters_after(UnknownCheck::NotFound404).await;
}

#[tokio::test]
async fn reregisters_when_an_older_agent_answers_500() {
    reregisters_after(UnknownCheck::Internal500).await;
}

#[tokio::test]
async fn acl_token_is_sent_and_a_refused_one_is_unauthorized() {
    let target = ConsulTarget::with_options(ConsulOptions {
        acl_token: Some("s3cret".into()),
        min_session_ttl: Duration::from_secs(1),
        ..ConsulOptions::default()
    })
    .await;
    for config in [
        target.config.clone(),
        target.config.clone().with_acl_token("wrong"),
    ] {
        let backend = ConsulBackend::new(config).unwrap();
        let err = backend.list_nodes().await.unwrap_err();
        assert!(matches!(err, BackendError::Unauthorized { .. }), "{err:?}");
        assert!(!err.is_transient());
        let err = backend
            .register(Registration::new(unique_node(), Duration::from_secs(1)))
            .await
            .unwrap_err();
        assert!(matches!(err, BackendError::Unauthorized { .. }), "{err:?}");
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
    let backend = ConsulBackend::new(target.config.clone().with_acl_token("s3cret")).unwrap();
    let node = unique_node();
    let handle = backend
        .register(Registration::new(node.clone(), Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(
        backend
            .list_nodes()
            .await
            .unwrap()
            .iter()
            .any(|n| n.node == node)
    );
    handle.deregister().await.unwrap();
}

#[tokio::test]
async fn a_waiter_wakes_when_the_key_changes_not_at_the_end_of_its_wait() {
    let target = ConsulTarget::start().await;
    let a = ConsulBackend::new(target.config.clone()).unwrap();
    let b = ConsulBackend::new(target.config.clone()).unwrap();
    let holder = a
        .lock(LockRequest::new(
            "a",
            Duration::from_secs(5),
            Duration::from_secs(1),
        ))
        .await
        .unwrap();
    let waiter = tokio::spawn(async move {
        b.lock(LockRequest::new(
            "b",
            Duration::from_secs(5),
            Duration::from_secs(20),
        ))
        .await
        .map(|g| (Instant::now(), g))
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let released = Instant::now();
    holder.release().await.unwrap();
    let (acquired, guard) = waiter.await.unwrap().unwrap();
    // The waiter's blocking query (wait up to 10 s) returns as soon as the key changes,
    // not at the end of its wait.
    let took = acquired.duration_since(released);
    assert!(took < Duration::from_secs(2), "waiter took {took:?}");
    guard.release().await.unwrap();
}

#[tokio::test]
async fn lock_delay_holds_the_key_after_a_holder_dies() {
    let target = ConsulTarget::start().await;
    let config = target
        .config
        .clone()
        .with_lock_delay(Duration::from_secs(1));
    let a = ConsulBackend::new(config.clone()).unwrap();
    let holder = a
        .lock(LockRequest::new(
            "a",
            Duration::from_secs(1),
            Duration::from_secs(1),
        ))
        .await
        .unwrap();
    let token = holder.fencing_token();
    let abandoned = Instant::now();
    holder.abandon();
    let b = ConsulBackend::new(config).unwrap();
    let next = b
        .lock(LockRequest::new(
            "b",
            Duration::from_secs(1),
            Duration::from_secs(10),
        ))
        .await
        .unwrap();
    let took = abandoned.elapsed();
    // Stated bound: 2 × session TTL + lock-delay. The session was renewed at most TTL/3
    // before it was abandoned, so the key cannot be free before 2 × TTL − TTL/3 + delay.
    assert!(
        took >= Duration::from_millis(2600),
        "lock-delay ignored: {took:?}"
    );
    assert!(
        took <= Duration::from_millis(3000 + 1500),
        "too slow: {took:?}"
    );
    assert!(next.fencing_token() > token);
    next.release().await.unwrap();
}

#[tokio::test]
async fn a_check_not_passed_turns_critical_and_is_deregistered_after() {
    let target = ConsulTarget::start().await;
    let config = target
        .config
        .clone()
        .with_deregister_after(Duration::from_secs(1));
    let backend = ConsulBackend::new(config.clone()).unwrap();
    let node = unique_node();
    let id = config.service_id(&node);
    let handle = backend
        .register(Registration::new(node.clone(), Duration::from_secs(1)))
        .await
        .unwrap();
    handle.abandon();
    let start = Instant::now();
    while target.server.check_status(&id).as_deref() != Some("critical") {
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "not critical"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !backend
            .list_nodes()
            .await
            .unwrap()
            .iter()
            .any(|n| n.node == node)
    );
    // With warnings included, a critical node is still not listed.
    let with_warnings = ConsulBackend::new(config.clone().with_include_warnings(true)).unwrap();
    assert!(
        !with_warnings
            .list_nodes()
            .await
            .unwrap()
            .iter()
            .any(|n| n.node == node)
    );
    while target.server.has_service(&id) {
        assert!(
            start.elapsed() < Duration::from_millis(2500),
            "not deregistered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_session_ttl_below_consuls_minimum_is_raised_or_rejected() {
    // The in-test server enforces Consul's 10 s minimum here.
    let target = ConsulTarget::with_options(ConsulOptions::default()).await;
    let short = ConsulBackend::new(target.config.clone()).unwrap();
    let err = short
        .lock(LockRequest::new(
            "x",
            Duration::from_secs(1),
            Duration::from_secs(1),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BackendError::Rejected { detail, .. } if detail.contains("Invalid Session TTL")),
        "{err:?}"
    );
    // The default configuration raises the TTL to 10 s.
    let config = ConsulConfig {
        min_session_ttl: Duration::from_secs(10),
        ..target.config.clone()
    };
    let guard = ConsulBackend::new(config)
        .unwrap()
        .lock(LockRequest::new(
            "x",
            Duration::from_secs(1),
            Duration::from_secs(1),
        ))
        .await
        .unwrap();
    assert_eq!(guard.ttl(), Duration::from_secs(10));
    guard.release().await.unwrap();
}

/// Candidates (the form gate's contact points; kept apart from members, as the
/// conformance suite checks) are the service `<service>-candidates`, which RabbitMQ's
/// own Consul discovery never lists.
#[tokio::test]
async fn candidates_are_a_service_of_their_own() {
    let target = ConsulTarget::start().await;
    let backend = ConsulBackend::new(target.config.clone()).unwrap();
    let candidate = unique_node();
    let c = backend
        .candidates()
        .expect("Consul keeps candidates")
        .register(Registration::new(candidate.clone(), Duration::from_secs(5)))
        .await
        .unwrap();
    let mut as_candidates = target.config.clone();
    as_candidates.service = format!("{}-candidates", target.config.service);
    let id = as_candidates.service_id(&candidate);
    assert!(target.server.has_service(&id), "{id}");
    assert!(
        !target
            .server
            .has_service(&target.config.service_id(&candidate))
    );
    c.deregister().await.unwrap();
    assert!(!target.server.has_service(&id));
}
