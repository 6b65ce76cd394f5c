//! The agent against a counting fake target: what it reads and does, per join.

use std::sync::{Arc, Mutex};

use super::*;
use crate::backend::MemoryBackend;
use crate::formation::{DataState, FormGate, Inspection, Membership};

fn n(s: &str) -> NodeName {
    s.parse().unwrap()
}

/// The nodes `backend` lists.
async fn listed(backend: &dyn Backend) -> Vec<NodeName> {
    let nodes = backend.list_nodes().await.unwrap();
    nodes.into_iter().map(|r| r.node).collect()
}

/// A target that counts what the agent asks of it. The managed node runs alone, with
/// `data`, until a join adds it to the seed's cluster.
#[derive(Debug)]
struct Counting {
    node: NodeName,
    seed: NodeName,
    data: DataState,
    calls: Mutex<Calls>,
}

#[derive(Debug, Default)]
struct Calls {
    inspections: u32,
    inventories: u32,
    memberships: u32,
    steps: Vec<Step>,
    joined: bool,
}

impl Counting {
    fn new(data: DataState) -> Arc<Counting> {
        Arc::new(Counting {
            node: n("rabbit@b"),
            seed: n("rabbit@a"),
            data,
            calls: Mutex::new(Calls::default()),
        })
    }

    fn view(&self) -> Membership {
        let joined = self.calls.lock().unwrap().joined;
        let members = if joined {
            vec![self.seed.clone(), self.node.clone()]
        } else {
            vec![self.node.clone()]
        };
        Membership::running(members)
    }
}

#[async_trait::async_trait]
impl ClusterTarget for Counting {
    fn node(&self) -> &NodeName {
        &self.node
    }

    fn kind(&self) -> &'static str {
        "counting"
    }

    async fn probe(&self, node: &NodeName) -> Result<Probe, FormationError> {
        Ok(Probe::live(
            node.clone(),
            Membership::running(vec![node.clone()]),
        ))
    }

    async fn membership(&self) -> Result<Membership, FormationError> {
        self.calls.lock().unwrap().memberships += 1;
        Ok(self.view())
    }

    async fn inspect(&self) -> Result<Inspection, FormationError> {
        self.calls.lock().unwrap().inspections += 1;
        Ok(Inspection::of(self.view()))
    }

    async fn inventory(&self) -> Result<DataState, FormationError> {
        self.calls.lock().unwrap().inventories += 1;
        Ok(self.data.clone())
    }

    async fn execute(&self, step: &Step) -> Result<Stage, FormationError> {
        let mut calls = self.calls.lock().unwrap();
        calls.steps.push(step.clone());
        if matches!(step, Step::Join { .. }) {
            calls.joined = true;
        }
        Ok(Stage::Complete)
    }

    async fn reconnect(&self, _member: &NodeName) -> Result<bool, FormationError> {
        Ok(true)
    }

    async fn forget(&self, _member: &NodeName) -> Result<(), FormationError> {
        Ok(())
    }
}

/// A backend where the seed is registered (while the handle lives).
async fn backend_with_seed() -> (Arc<MemoryBackend>, RegistrationHandle) {
    let backend = Arc::new(MemoryBackend::new());
    let registration = backend
        .register(Registration::new(n("rabbit@a"), Duration::from_secs(60)))
        .await
        .unwrap();
    (backend, registration)
}

#[tokio::test]
async fn a_join_reads_the_membership_once_and_the_data_once() {
    let target = Counting::new(DataState::Empty);
    let (backend, _seed) = backend_with_seed().await;
    let agent = Agent::new(backend, target.clone(), FormationConfig::default());
    let mut events = agent.events();
    let formed = agent.run().await.unwrap();
    assert_eq!(
        formed.outcome,
        Outcome::Joined {
            seed: n("rabbit@a")
        }
    );
    let calls = target.calls.lock().unwrap();
    assert_eq!(calls.inspections, 1, "membership reads before the join");
    assert_eq!(calls.inventories, 1, "data inventories before the join");
    assert_eq!(
        calls.steps,
        vec![Step::Join {
            seed: n("rabbit@a"),
            reset: false
        }]
    );
    assert_eq!(calls.memberships, 1, "one read verifies the join");
    // The agent published its choice.
    let mut chosen = None;
    while let Ok(event) = events.try_recv() {
        if let FormationEvent::SeedChosen(seed) = event {
            chosen = seed;
        }
    }
    assert_eq!(chosen, Some(n("rabbit@a")));
}

#[tokio::test]
async fn data_at_risk_is_refused_before_any_step() {
    let target = Counting::new(DataState::HasData(vec!["1 queue in /: orders".into()]));
    let (backend, _seed) = backend_with_seed().await;
    let agent = Agent::new(backend, target.clone(), FormationConfig::default());
    let error = agent.run().await.unwrap_err();
    assert!(
        matches!(error, FormationError::DataAtRisk { .. }),
        "{error}"
    );
    let calls = target.calls.lock().unwrap();
    assert!(calls.steps.is_empty(), "{:?}", calls.steps);
    assert_eq!((calls.inspections, calls.inventories), (1, 1));
}

#[tokio::test]
async fn allowed_resets_are_carried_out_as_one_join_with_reset() {
    let target = Counting::new(DataState::HasData(vec!["1 user besides guest: a".into()]));
    let config = FormationConfig {
        allow_reset: true,
        ..FormationConfig::default()
    };
    let (backend, _seed) = backend_with_seed().await;
    let agent = Agent::new(backend, target.clone(), config);
    agent.run().await.unwrap();
    let calls = target.calls.lock().unwrap();
    assert_eq!(
        calls.steps,
        vec![Step::Join {
            seed: n("rabbit@a"),
            reset: true
        }]
    );
}

/// A managed node `rabbit@a` running alone beside `rabbit@b` and `rabbit@c`, who formed
/// a cluster without it, until a join adds it to theirs.
#[derive(Debug)]
struct Apart {
    node: NodeName,
    data: DataState,
    calls: Mutex<Calls>,
}

impl Apart {
    fn new(data: DataState) -> Arc<Apart> {
        Arc::new(Apart {
            node: n("rabbit@a"),
            data,
            calls: Mutex::new(Calls::default()),
        })
    }

    fn view(&self) -> Membership {
        if self.calls.lock().unwrap().joined {
            Membership::running(vec![n("rabbit@a"), n("rabbit@b"), n("rabbit@c")])
        } else {
            Membership::running(vec![n("rabbit@a")])
        }
    }
}

#[async_trait::async_trait]
impl ClusterTarget for Apart {
    fn node(&self) -> &NodeName {
        &self.node
    }

    fn kind(&self) -> &'static str {
        "apart"
    }

    async fn probe(&self, node: &NodeName) -> Result<Probe, FormationError> {
        let mut view = Membership::running(vec![n("rabbit@b"), n("rabbit@c")]);
        if self.calls.lock().unwrap().joined {
            view = self.view();
        }
        Ok(Probe::live(node.clone(), view))
    }

    async fn membership(&self) -> Result<Membership, FormationError> {
        self.calls.lock().unwrap().memberships += 1;
        Ok(self.view())
    }

    async fn inspect(&self) -> Result<Inspection, FormationError> {
        self.calls.lock().unwrap().inspections += 1;
        Ok(Inspection::of(self.view()))
    }

    async fn inventory(&self) -> Result<DataState, FormationError> {
        self.calls.lock().unwrap().inventories += 1;
        Ok(self.data.clone())
    }

    async fn execute(&self, step: &Step) -> Result<Stage, FormationError> {
        let mut calls = self.calls.lock().unwrap();
        calls.steps.push(step.clone());
        if matches!(step, Step::Join { .. }) {
            calls.joined = true;
        }
        Ok(Stage::Complete)
    }

    async fn reconnect(&self, _member: &NodeName) -> Result<bool, FormationError> {
        Ok(true)
    }

    async fn forget(&self, _member: &NodeName) -> Result<(), FormationError> {
        Ok(())
    }
}

/// Runs one watch round of `rabbit@a`, registered with `rabbit@b` and `rabbit@c`;
/// returns the events it published.
async fn watch_apart(target: Arc<Apart>, config: FormationConfig) -> Vec<FormationEvent> {
    let backend = Arc::new(MemoryBackend::new());
    let mut handles = Vec::new();
    for node in ["rabbit@a", "rabbit@b", "rabbit@c"] {
        handles.push(
            backend
                .register(Registration::new(n(node), Duration::from_secs(60)))
                .await
                .unwrap(),
        );
    }
    let agent = Agent::new(backend, target, config);
    let mut events = agent.events();
    agent.watch_once(&mut CleanupState::new(), false).await;
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    seen
}

#[tokio::test]
async fn an_empty_cluster_of_one_beside_a_larger_cluster_joins_it_while_watching() {
    let target = Apart::new(DataState::Empty);
    let events = watch_apart(target.clone(), FormationConfig::default()).await;
    let calls = target.calls.lock().unwrap();
    assert_eq!(
        calls.steps,
        vec![Step::Join {
            seed: n("rabbit@b"),
            reset: false
        }]
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, FormationEvent::SplitDetected(g) if g.len() == 2)),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, FormationEvent::SplitMended(s) if *s == n("rabbit@b"))),
        "{events:?}"
    );
    // Under the startup lock.
    assert!(
        events
            .iter()
            .any(|e| matches!(e, FormationEvent::LockAcquired { .. })),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_cluster_of_one_holding_data_is_reported_never_reset_even_with_allow_reset() {
    let target = Apart::new(DataState::HasData(vec!["1 queue in /: orders".into()]));
    let config = FormationConfig {
        allow_reset: true,
        ..FormationConfig::default()
    };
    let events = watch_apart(target.clone(), config).await;
    let calls = target.calls.lock().unwrap();
    assert!(calls.steps.is_empty(), "{:?}", calls.steps);
    assert_eq!(calls.inventories, 1, "the data was read under the lock");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, FormationEvent::SplitDetected(_))),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, FormationEvent::SplitMended(_))),
        "{events:?}"
    );
}

#[tokio::test]
async fn with_heal_splits_off_a_split_is_only_reported() {
    let target = Apart::new(DataState::Empty);
    let config = FormationConfig {
        heal_splits: false,
        ..FormationConfig::default()
    };
    let events = watch_apart(target.clone(), config).await;
    let calls = target.calls.lock().unwrap();
    assert!(calls.steps.is_empty(), "{:?}", calls.steps);
    assert_eq!(calls.inventories, 0);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, FormationEvent::SplitDetected(_))),
        "{events:?}"
    );
}

/// An agent of `rabbit@b` (running alone, nothing registered) with `gate`, one attempt.
async fn form_gated(gate: FormGate, other_candidate: bool) -> Result<Formed, FormationError> {
    let backend = Arc::new(MemoryBackend::new());
    let candidates = backend
        .candidates()
        .expect("the memory backend has candidates");
    let _other = if other_candidate {
        Some(
            candidates
                .register(Registration::new(n("rabbit@c"), Duration::from_secs(60)))
                .await
                .unwrap(),
        )
    } else {
        None
    };
    let config = FormationConfig {
        form_gate: gate,
        max_attempts: 1,
        ..FormationConfig::default()
    };
    let agent = Agent::new(backend.clone(), Counting::new(DataState::Empty), config);
    let result = agent.run().await;
    // The candidate registration ends with the run.
    let left = listed(candidates.as_ref()).await;
    assert!(!left.contains(&n("rabbit@b")), "{left:?}");
    result
}

#[tokio::test]
async fn the_safe_gate_forms_only_with_a_second_contact_point() {
    let refused = form_gated(
        FormGate {
            stable_margin: Duration::ZERO,
            ..FormGate::safe()
        },
        false,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&refused, FormationError::FormRefused { reason, .. } if reason.contains("1 of 2")),
        "{refused}"
    );
    let formed = form_gated(
        FormGate {
            stable_margin: Duration::ZERO,
            ..FormGate::safe()
        },
        true,
    )
    .await
    .unwrap();
    assert_eq!(formed.outcome, Outcome::FormedNew);
}

#[tokio::test]
async fn a_switched_off_or_unstable_gate_never_forms() {
    let off = FormGate {
        new_cluster_enabled: false,
        ..FormGate::default()
    };
    let e = form_gated(off, true).await.unwrap_err();
    assert!(e.to_string().contains("switched off"), "{e}");
    let unstable = FormGate {
        stable_margin: Duration::from_secs(3600),
        ..FormGate::safe()
    };
    let e = form_gated(unstable, true).await.unwrap_err();
    assert!(e.to_string().contains("stable"), "{e}");
}

/// A member forgotten by its cluster while away, restarted with its data: its boot
/// waits for a leader that never comes, and only once its store is up does it say whom
/// it still lists.
#[derive(Debug)]
struct ForgottenBooting {
    node: NodeName,
    inspections: Mutex<u32>,
}

#[async_trait::async_trait]
impl ClusterTarget for ForgottenBooting {
    fn node(&self) -> &NodeName {
        &self.node
    }

    fn kind(&self) -> &'static str {
        "forgotten"
    }

    async fn probe(&self, node: &NodeName) -> Result<Probe, FormationError> {
        // The seed's cluster no longer has the managed node.
        Ok(Probe::live(
            node.clone(),
            Membership::running(vec![n("rabbit@a"), n("rabbit@c")]),
        ))
    }

    async fn membership(&self) -> Result<Membership, FormationError> {
        unreachable!("the boot never finishes")
    }

    async fn inspect(&self) -> Result<Inspection, FormationError> {
        let mut seen = self.inspections.lock().unwrap();
        *seen += 1;
        let members = if *seen < 3 {
            vec![self.node.clone()]
        } else {
            vec![n("rabbit@a"), self.node.clone(), n("rabbit@c")]
        };
        Ok(Inspection::of(Membership {
            running: false,
            members,
            booting: true,
            ..Membership::default()
        }))
    }

    async fn inventory(&self) -> Result<DataState, FormationError> {
        unreachable!("a booting node's data cannot be read")
    }

    async fn execute(&self, step: &Step) -> Result<Stage, FormationError> {
        assert_eq!(step, &Step::Start, "only its boot is waited for");
        std::future::pending().await
    }

    async fn reconnect(&self, _member: &NodeName) -> Result<bool, FormationError> {
        Ok(true)
    }

    async fn forget(&self, _member: &NodeName) -> Result<(), FormationError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_forgotten_member_is_refused_while_its_boot_is_waited_for() {
    let target = Arc::new(ForgottenBooting {
        node: n("rabbit@b"),
        inspections: Mutex::new(0),
    });
    let backend = Arc::new(MemoryBackend::new());
    let mut handles = Vec::new();
    for member in ["rabbit@a", "rabbit@c"] {
        handles.push(
            backend
                .register(Registration::new(n(member), Duration::from_secs(600)))
                .await
                .unwrap(),
        );
    }
    let agent = Agent::new(backend.clone(), target.clone(), FormationConfig::default());
    // Time is paused: ten minutes pass at once unless the agent is waiting on nothing.
    let error = tokio::time::timeout(Duration::from_secs(600), agent.run())
        .await
        .expect("refused while the boot was waited for, not after it")
        .unwrap_err();
    assert!(matches!(error, FormationError::Forgotten { .. }), "{error}");
    assert!(*target.inspections.lock().unwrap() >= 3);
    let left = listed(backend.as_ref()).await;
    assert!(!left.contains(&n("rabbit@b")), "not registered: {left:?}");
}
