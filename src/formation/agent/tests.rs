//! The agent against a counting fake target: what it reads and does, per join.

use std::sync::{Arc, Mutex};

use super::*;
use crate::backend::MemoryBackend;
use crate::formation::{DataState, Inspection, Membership};

fn n(s: &str) -> NodeName {
    s.parse().unwrap()
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
