//! The scenarios: what each injects, and the checks beyond the every-trial ones.

use std::time::Duration;

use autocluster::formation::{FormationEvent, Outcome};
use autocluster::term::Term;

use super::erl;
use super::lab::{Kind, Network};
use super::trial::Trial;
use super::victim::KillPoint;

/// A scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// No fault.
    None,
    /// The agent holding the startup lock dies in the middle of its join.
    LockHolderKilled,
    /// The backend stops and comes back during formation.
    EtcdRestart,
    /// The backend stops during cleanup rounds.
    EtcdDownCleanup,
    /// A node (and its agent) killed right after registering.
    KilledAfterRegister,
    /// The seed (node and agent) killed right after forming.
    SeedKilled,
    /// Connections cut in the middle of their handshakes.
    DroppedHandshakes,
    /// A network partition between erl nodes, then healed.
    Partition,
}

/// Every scenario, in the order `--scenario all` runs them.
pub const ALL: [Scenario; 8] = [
    Scenario::None,
    Scenario::LockHolderKilled,
    Scenario::EtcdRestart,
    Scenario::EtcdDownCleanup,
    Scenario::KilledAfterRegister,
    Scenario::SeedKilled,
    Scenario::DroppedHandshakes,
    Scenario::Partition,
];

impl Scenario {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::None => "none",
            Scenario::LockHolderKilled => "lock-holder-killed",
            Scenario::EtcdRestart => "etcd-restart",
            Scenario::EtcdDownCleanup => "etcd-down-cleanup",
            Scenario::KilledAfterRegister => "killed-after-register",
            Scenario::SeedKilled => "seed-killed",
            Scenario::DroppedHandshakes => "dropped-handshakes",
            Scenario::Partition => "partition",
        }
    }

    /// Parses [`name`](Self::name).
    pub fn parse(s: &str) -> Option<Scenario> {
        ALL.into_iter().find(|x| x.name() == s)
    }

    /// The network it needs.
    pub fn network(self) -> Network {
        match self {
            Scenario::DroppedHandshakes => Network::Chaos,
            Scenario::Partition => Network::Namespaces,
            _ => Network::Direct,
        }
    }

    /// Why it cannot run with these nodes, if it cannot.
    pub fn unsupported(self, kind: Kind, n: usize) -> Option<String> {
        let min = match self {
            Scenario::None => 1,
            Scenario::EtcdDownCleanup => 3,
            _ => 2,
        };
        if n < min {
            return Some(format!("{} needs at least {min} nodes", self.name()));
        }
        match (self, kind) {
            (Scenario::Partition, Kind::Native) => {
                Some("partition runs real erl nodes (in network namespaces) only".into())
            }
            // A native cluster is a star around its seed: there is no seed fail-over.
            (Scenario::SeedKilled, Kind::Native) => Some(
                "seed-killed: a native cluster is a star around its seed (no fail-over)".into(),
            ),
            _ => None,
        }
    }
}

/// Runs one trial of `scenario` on `t`'s members.
pub async fn run(scenario: Scenario, t: &mut Trial<'_>) -> Result<(), String> {
    let n = t.settings.nodes;
    t.setup(n).await?;
    let all: Vec<usize> = (0..n).collect();
    match scenario {
        Scenario::None => {
            t.form(&all).await?;
            t.verify().await;
            t.watch(2).await;
        }
        Scenario::LockHolderKilled => lock_holder_killed(t, n).await?,
        Scenario::EtcdRestart => etcd_restart(t, &all).await?,
        Scenario::EtcdDownCleanup => etcd_down_cleanup(t, &all).await?,
        Scenario::KilledAfterRegister => killed_after_register(t, n).await?,
        Scenario::SeedKilled => seed_killed(t, n).await?,
        Scenario::DroppedHandshakes => {
            let p = t.settings.chaos_probability;
            let seed = t.r.seed;
            if let Some(chaos) = &t.lab.chaos {
                chaos.state.set(true, p, seed);
            }
            t.form(&all).await?;
            if let Some(chaos) = &t.lab.chaos {
                let (proxied, cut) = chaos.state.counts();
                chaos.state.set(false, 0.0, 0);
                t.note(format!("cut {cut} of {proxied} proxied connections so far"));
            }
            t.verify().await;
            t.watch(2).await;
        }
        Scenario::Partition => partition(t, &all).await?,
    }
    Ok(())
}

/// The lock holder dies mid-join: a random number of the others formed before it, the
/// rest start once it holds the lock and wait for its lease.
async fn lock_holder_killed(t: &mut Trial<'_>, n: usize) -> Result<(), String> {
    let v = t.pick(n);
    let mut others: Vec<usize> = (0..n).filter(|&i| i != v).collect();
    for i in (1..others.len()).rev() {
        let j = t.pick(i + 1);
        others.swap(i, j);
    }
    let pre = t.pick(n - 1);
    let (first, rest) = others.split_at(pre);
    let (first, rest) = (first.to_vec(), rest.to_vec());
    if !first.is_empty() {
        t.form(&first).await?;
    }
    let point = if t.coin() {
        KillPoint::BeforeJoin
    } else {
        KillPoint::AfterJoin
    };
    let vi = t.spawn_victim(v, point).await?;
    t.victim_hook(vi, &["locked"]).await?;
    let at = t.victim_hook(vi, &["before-", "after-"]).await?;
    let running = t.start(&rest).await?;
    let delay = t.between(Duration::ZERO, Duration::from_millis(300));
    tokio::time::sleep(delay).await;
    t.kill_victim(vi, v).await;
    let took = t.wait(running).await;
    t.r.formation_ms = took.as_millis() as u64;
    t.note(format!(
        "{} formed first; holder killed at {at} after {}ms",
        first.len(),
        delay.as_millis()
    ));
    t.verify().await;
    t.watch(2).await;
    Ok(())
}

/// The backend goes down during formation and comes back.
async fn etcd_restart(t: &mut Trial<'_>, all: &[usize]) -> Result<(), String> {
    let running = t.start(all).await?;
    let before = t.between(Duration::ZERO, Duration::from_millis(400));
    tokio::time::sleep(before).await;
    let backend = t.backend.clone();
    backend.down(t.etcd.as_deref_mut()).await?;
    let outage = t.between(Duration::from_millis(300), Duration::from_millis(3000));
    tokio::time::sleep(outage).await;
    backend.up(t.etcd.as_deref_mut()).await?;
    let took = t.wait(running).await;
    t.r.formation_ms = took.as_millis() as u64;
    t.note(format!(
        "down after {}ms for {}ms",
        before.as_millis(),
        outage.as_millis()
    ));
    t.verify().await;
    // The outage (3 s at most) is far shorter than what the agents retry through (30
    // attempts, backing off to 1 s): every agent must ride it out and form. An agent that
    // gives up with an error, typed or not, fails the trial.
    if !t.r.formed && !t.r.split {
        let errors: Vec<String> =
            t.r.errors
                .iter()
                .map(|(k, n)| format!("{k} x{n}"))
                .collect();
        let errors = if errors.is_empty() {
            "none".to_string()
        } else {
            errors.join(", ")
        };
        t.fail(format!(
            "not every agent formed across a {}ms outage (errors: {errors})",
            outage.as_millis()
        ));
    }
    t.watch(2).await;
    Ok(())
}

/// A member dies and its registration expires; cleanup rounds run while the backend is
/// down (nothing may be forgotten, not even a live member cut off from the others), and
/// once it is back the dead, unregistered member is forgotten (the cleanup is real).
async fn etcd_down_cleanup(t: &mut Trial<'_>, all: &[usize]) -> Result<(), String> {
    t.form(all).await?;
    t.verify().await;
    let live = t.live();
    if live.len() < 3 {
        t.note("fewer than 3 live members after formation: no cleanup part");
        return Ok(());
    }
    // The seed of a native star cannot die without taking the cluster with it.
    let seed = live.iter().copied().find(|&i| {
        t.members[i]
            .formed
            .as_ref()
            .is_some_and(|f| f.outcome == Outcome::FormedNew)
    });
    let candidates: Vec<usize> = live
        .iter()
        .copied()
        .filter(|&i| t.lab.kind == Kind::Erl || Some(i) != seed)
        .collect();
    let d = candidates[t.pick(candidates.len())];
    let dead = t.members[d].name.clone();
    t.kill_node(d).await;
    let others: Vec<usize> = candidates.iter().copied().filter(|&i| i != d).collect();
    let cut_off = (!others.is_empty() && t.coin()).then(|| others[t.pick(others.len())]);
    let before = t.pick(3);
    for _ in 0..before {
        t.watch_round().await;
    }
    let backend = t.backend.clone();
    backend.down(t.etcd.as_deref_mut()).await?;
    if let Some(l) = cut_off {
        disconnect(t, l).await?;
    }
    let during = t.cfg.cleanup.unreachable_rounds as usize + 2;
    let extra = if matches!(t.backend, super::lab::TrialBackend::Memory(_)) {
        // Long enough, sometimes, for registrations to expire during the outage.
        t.between(Duration::ZERO, t.settings.node_ttl + Duration::from_secs(1))
    } else {
        Duration::ZERO
    };
    for _ in 0..during {
        t.watch_round().await;
        tokio::time::sleep(Duration::from_millis(300) + extra / during as u32).await;
    }
    let skipped = t
        .events()
        .iter()
        .filter(|(_, e)| matches!(e, FormationEvent::CleanupSkipped(_)))
        .count();
    backend.up(t.etcd.as_deref_mut()).await?;
    t.note(format!(
        "dead {}, cut off {}, {before} rounds before the outage, {during} during ({skipped} skipped)",
        short(&dead),
        cut_off.map(|l| short(&t.members[l].name)).unwrap_or_else(|| "none".into())
    ));
    let bound = t.settings.node_ttl + Duration::from_secs(5);
    if !t.wait_deregistered(&dead, bound).await {
        t.fail(format!(
            "registration-not-expired: {dead} still registered after {bound:?}"
        ));
    }
    // Rounds until no live agent lists the dead member any more: it must have been
    // missing from the listings for a node TTL first. An agent whose node joined after
    // the dead one, or whose agent ran no round while it lived, never listed it: there
    // is nothing for it to forget.
    let mut forgot_all = false;
    let until = tokio::time::Instant::now() + t.settings.node_ttl + Duration::from_secs(4);
    while tokio::time::Instant::now() < until {
        t.watch_round().await;
        let mut still_listed = false;
        for i in t.live() {
            if let Some(agent) = &t.members[i].agent
                && let Ok(m) = agent.target().membership().await
                && m.members.contains(&dead)
            {
                still_listed = true;
            }
        }
        if !still_listed {
            forgot_all = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let forgetters = t
        .events()
        .into_iter()
        .filter(|(_, e)| matches!(e, FormationEvent::Forgot(n) if *n == dead))
        .count();
    t.note(format!("{forgetters} agent(s) forgot {}", short(&dead)));
    match t.lab.kind {
        Kind::Erl if !forgot_all => t.fail(format!(
            "cleanup-not-real: a live member still lists the dead {dead}"
        )),
        Kind::Erl => {}
        // A native seed lists its connected members only: a dead one is gone at once.
        Kind::Native => t.note(format!("native: forgotten by cleanup: {forgot_all}")),
    }
    if !t.check_cluster().await.0 {
        match t.watch_until_one(6, Duration::from_millis(300)).await {
            Some(k) => t.note(format!("one cluster again after {k} more rounds")),
            None => {
                t.r.split = true;
                t.note("not one cluster after the outage");
            }
        }
    }
    Ok(())
}

/// Cuts member `l` off from every other member.
async fn disconnect(t: &mut Trial<'_>, l: usize) -> Result<(), String> {
    let name = t.members[l].name.clone();
    match t.lab.kind {
        Kind::Erl => {
            let pool = t.lab.pool.as_ref().ok_or("no pool")?;
            for other in pool.names() {
                if other != name {
                    let _ = erl::call(
                        &pool.checker,
                        &other,
                        "erlang",
                        "disconnect_node",
                        vec![Term::atom(name.as_str())],
                    )
                    .await;
                }
            }
        }
        Kind::Native => {
            if let Some(t) = &t.members[l].native
                && let Some(seed) = t.seed()
            {
                t.local_node().disconnect(&seed);
            }
        }
    }
    Ok(())
}

/// A member (node and agent) killed right after registering, or right after finishing.
async fn killed_after_register(t: &mut Trial<'_>, n: usize) -> Result<(), String> {
    let v = t.pick(n);
    let point = if t.coin() {
        KillPoint::AfterRegister
    } else {
        KillPoint::AfterFinish
    };
    let others: Vec<usize> = (0..n).filter(|&i| i != v).collect();
    let vi = t.spawn_victim(v, point).await?;
    let running = t.start(&others).await?;
    let at = t.victim_hook(vi, &["after-register", "after-finish"]).await;
    t.kill_victim(vi, v).await;
    t.kill_node(v).await;
    let took = t.wait(running).await;
    t.r.formation_ms = took.as_millis() as u64;
    let at = at?;
    let name = t.members[v].name.clone();
    t.note(format!("killed {} at {at}", short(&name)));
    t.verify().await;
    let bound = t.settings.node_ttl + Duration::from_secs(4);
    if !t.wait_deregistered(&name, bound).await {
        t.fail(format!("registration-not-expired: {name} after {bound:?}"));
    }
    t.watch(3).await;
    Ok(())
}

/// The seed forms alone and is killed (node and agent) while the others form.
async fn seed_killed(t: &mut Trial<'_>, n: usize) -> Result<(), String> {
    let v = t.pick(n);
    let others: Vec<usize> = (0..n).filter(|&i| i != v).collect();
    let vi = t.spawn_victim(v, KillPoint::AfterFinish).await?;
    let at = t.victim_hook(vi, &["after-finish"]).await?;
    if !at.contains("formed a new cluster") {
        t.fail(format!(
            "harness: the first agent did not form a new cluster: {at}"
        ));
    }
    let running = t.start(&others).await?;
    let delay = t.between(Duration::ZERO, Duration::from_millis(500));
    tokio::time::sleep(delay).await;
    t.kill_victim(vi, v).await;
    t.kill_node(v).await;
    let took = t.wait(running).await;
    t.r.formation_ms = took.as_millis() as u64;
    let name = t.members[v].name.clone();
    t.note(format!(
        "seed {} killed {}ms after the others started",
        short(&name),
        delay.as_millis()
    ));
    t.verify().await;
    let bound = t.settings.node_ttl + Duration::from_secs(4);
    if !t.wait_deregistered(&name, bound).await {
        t.fail(format!("registration-not-expired: {name} after {bound:?}"));
    }
    t.watch(3).await;
    Ok(())
}

/// A partition between the namespaces, during or after formation, then healed: one
/// cluster again afterwards, nothing forgotten.
async fn partition(t: &mut Trial<'_>, all: &[usize]) -> Result<(), String> {
    let during = t.coin();
    let mut split_at_formation = false;
    let running = t.start(all).await?;
    if during {
        let before = t.between(Duration::ZERO, Duration::from_millis(300));
        let hold = t.between(Duration::from_secs(1), Duration::from_secs(3));
        tokio::time::sleep(before).await;
        t.lab
            .netns
            .as_mut()
            .ok_or("no namespaces")?
            .partition()
            .await?;
        tokio::time::sleep(hold).await;
        t.lab.netns.as_mut().ok_or("no namespaces")?.heal().await?;
        let took = t.wait(running).await;
        t.r.formation_ms = took.as_millis() as u64;
        t.note(format!(
            "partitioned {}ms after the start for {}ms",
            before.as_millis(),
            hold.as_millis()
        ));
    } else {
        let took = t.wait(running).await;
        t.r.formation_ms = took.as_millis() as u64;
        t.verify().await;
        split_at_formation = t.r.split;
        t.lab
            .netns
            .as_mut()
            .ok_or("no namespaces")?
            .partition()
            .await?;
        // Wait until the nodes notice (net_ticktime).
        let noticed = tokio::time::Instant::now();
        let bound = t.lab.ticktime * 2 + Duration::from_secs(3);
        while t.check_cluster().await.0 {
            if noticed.elapsed() > bound {
                t.fail(format!(
                    "harness: the partition was not noticed within {bound:?}"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let noticed_ms = noticed.elapsed().as_millis();
        t.watch(2).await;
        let splits = t
            .events()
            .iter()
            .filter(|(_, e)| matches!(e, FormationEvent::SplitDetected(_)))
            .count();
        t.lab.netns.as_mut().ok_or("no namespaces")?.heal().await?;
        t.note(format!(
            "partitioned after formation, noticed in {noticed_ms}ms, {splits} split reports while partitioned"
        ));
    }
    match t.watch_until_one(15, Duration::from_millis(500)).await {
        Some(k) => {
            t.note(format!("one cluster {k} watch rounds after healing"));
            t.verify().await;
        }
        None => {
            t.verify().await;
            t.r.split = true;
            t.note("not one cluster after healing");
        }
    }
    if split_at_formation {
        t.r.split = true;
        t.note("not one cluster right after formation (before the partition)");
    }
    Ok(())
}

/// `n0` of `n0_123_4@host`.
fn short(n: &autocluster::NodeName) -> String {
    n.alive().split('_').next().unwrap_or("?").to_owned()
}
