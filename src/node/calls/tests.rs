//! The call table alone: no runtime, no clock, the time passed in.

use std::time::{Duration, Instant};

use super::*;
use crate::term::Atom;

fn peer(n: &str) -> NodeName {
    format!("{n}@host").parse().unwrap()
}

fn reference(n: u32) -> Reference {
    Reference {
        node: Atom::from("me@host"),
        creation: 1,
        id: vec![n, 0, 0],
    }
}

fn pid(n: u32) -> Pid {
    Pid {
        node: Atom::from("a@host"),
        id: n,
        serial: 0,
        creation: 1,
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

fn table_with(kind: Kind) -> (CallTable<u32>, Instant) {
    let now = Instant::now();
    let mut t = CallTable::default();
    t.register(now, reference(1), peer("a"), kind, now + TIMEOUT, 7);
    (t, now)
}

#[test]
fn an_erpc_call_is_answered_by_its_workers_exit_after_the_spawn_reply() {
    let (mut t, _) = table_with(Kind::Erpc);
    assert_eq!(
        t.on_spawn_reply(&reference(1), Term::from(pid(5))),
        Answer::Nothing
    );
    assert_eq!(
        t.on_monitor_exit(&reference(1), Term::atom("done")),
        Answer::Wake(7, Outcome::Exited(Term::atom("done")))
    );
    assert_eq!(t.len(), 0);
    assert_eq!(
        t.on_monitor_exit(&reference(1), Term::atom("again")),
        Answer::NotACall
    );
}

#[test]
fn a_refused_spawn_wakes_the_caller_with_the_reason() {
    let (mut t, _) = table_with(Kind::Erpc);
    assert_eq!(
        t.on_spawn_reply(&reference(1), Term::atom("notsup")),
        Answer::Wake(7, Outcome::SpawnFailed(Term::atom("notsup")))
    );
    assert_eq!(t.len(), 0);
}

#[test]
fn a_gen_call_is_answered_by_ref_and_reply_and_nothing_else() {
    let (mut t, _) = table_with(Kind::Reply);
    // Not a reply: wrong shape, unknown reference.
    assert_eq!(t.on_reply(Term::atom("hello")), Answer::NotACall);
    let other = Term::Tuple(vec![Term::from(reference(2)), Term::atom("x")]);
    assert_eq!(t.on_reply(other), Answer::NotACall);
    let reply = Term::Tuple(vec![Term::from(reference(1)), Term::atom("pong")]);
    assert_eq!(
        t.on_reply(reply),
        Answer::Wake(7, Outcome::Reply(Term::atom("pong")))
    );
    assert_eq!(t.len(), 0);
}

#[test]
fn a_message_shaped_like_a_reply_to_an_erpc_call_is_not_taken_for_one() {
    let (mut t, _) = table_with(Kind::Erpc);
    let reply = Term::Tuple(vec![Term::from(reference(1)), Term::atom("x")]);
    assert_eq!(t.on_reply(reply), Answer::NotACall);
    assert_eq!(t.len(), 1);
}

#[test]
fn abandoning_after_the_spawn_reply_names_the_worker_to_kill() {
    let (mut t, now) = table_with(Kind::Erpc);
    t.on_spawn_reply(&reference(1), Term::from(pid(5)));
    assert_eq!(t.abandon(now + TIMEOUT, &reference(1)), Some(pid(5)));
    assert_eq!(t.len(), 0);
}

#[test]
fn abandoning_before_the_spawn_reply_kills_the_worker_when_it_is_named() {
    let (mut t, now) = table_with(Kind::Erpc);
    assert_eq!(t.abandon(now + TIMEOUT, &reference(1)), None);
    assert_eq!(t.len(), 1, "kept to learn the worker");
    assert_eq!(
        t.on_spawn_reply(&reference(1), Term::from(pid(5))),
        Answer::Kill(pid(5))
    );
    assert_eq!(t.len(), 0);
}

#[test]
fn an_abandoned_spawn_that_is_never_answered_is_dropped_after_spawn_wait() {
    let (mut t, now) = table_with(Kind::Erpc);
    let gave_up = now + TIMEOUT;
    t.abandon(gave_up, &reference(1));
    t.expire(gave_up + SPAWN_WAIT - Duration::from_millis(1));
    assert_eq!(t.len(), 1);
    t.expire(gave_up + SPAWN_WAIT);
    assert_eq!(t.len(), 0);
}

#[test]
fn a_call_whose_caller_vanished_is_dropped_a_grace_period_after_its_deadline() {
    let now = Instant::now();
    let mut t = CallTable::default();
    for n in 0..100 {
        let deadline = now + Duration::from_secs(u64::from(n));
        t.register(now, reference(n), peer("a"), Kind::Reply, deadline, n);
    }
    t.expire(now + GRACE + Duration::from_millis(49_500));
    assert_eq!(t.len(), 50);
    // Registering expires what is due too.
    t.register(
        now + GRACE + Duration::from_secs(200),
        reference(1000),
        peer("a"),
        Kind::Reply,
        now + Duration::from_secs(300),
        1000,
    );
    assert_eq!(t.len(), 1);
}

#[test]
fn a_lost_connection_ends_the_calls_to_that_peer_only() {
    let now = Instant::now();
    let mut t = CallTable::default();
    t.register(now, reference(1), peer("a"), Kind::Erpc, now + TIMEOUT, 1);
    t.register(now, reference(2), peer("b"), Kind::Reply, now + TIMEOUT, 2);
    t.register(now, reference(3), peer("a"), Kind::Reply, now + TIMEOUT, 3);
    t.abandon(now, &reference(1));
    let mut lost = t.on_connection_lost(&peer("a"), &DisconnectReason::ClosedByPeer);
    lost.sort_by_key(|(w, _)| *w);
    assert_eq!(
        lost,
        [(3, Outcome::Lost(DisconnectReason::ClosedByPeer))],
        "the abandoned call has no caller to wake"
    );
    assert_eq!(t.len(), 1);
}

#[test]
fn a_failed_send_forgets_the_call() {
    let (mut t, now) = table_with(Kind::Reply);
    t.remove(&reference(1));
    assert_eq!(t.len(), 0);
    assert_eq!(t.abandon(now, &reference(1)), None);
}
