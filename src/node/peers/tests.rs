//! The simultaneous-connect rule, without sockets.

use super::*;

fn name(s: &str) -> NodeName {
    s.parse().unwrap()
}

#[test]
fn each_state_gets_net_kernels_answer() {
    let me = name("b@host");
    let peer = name("a@host");
    let status = |state| status_for(&me, Some(&peer), false, state);
    assert_eq!(status(PeerState::Unknown), StatusDecision::Ok);
    assert_eq!(status(PeerState::Connected), StatusDecision::Alive);
    assert_eq!(status(PeerState::Dialing), StatusDecision::Nok);
    assert_eq!(
        status_for(&peer, Some(&me), false, PeerState::Dialing),
        StatusDecision::OkSimultaneous
    );
}

#[test]
fn dynamic_names_and_a_stopped_node_are_not_allowed() {
    let me = name("b@host");
    assert_eq!(
        status_for(&me, None, false, PeerState::Unknown),
        StatusDecision::NotAllowed
    );
    for state in [PeerState::Unknown, PeerState::Connected, PeerState::Dialing] {
        assert_eq!(
            status_for(&me, Some(&name("a@host")), true, state),
            StatusDecision::NotAllowed
        );
    }
}

/// Two nodes dialling each other at once: whatever their names, one keeps its own
/// attempt and refuses the other's, and the other drops its own and takes the incoming
/// one, so one connection survives, never none and never two.
#[test]
fn a_simultaneous_connect_leaves_exactly_one_connection_for_any_pair_of_names() {
    let names = [
        "a@h",
        "b@h",
        "rabbit@h",
        "rabbit_2@h",
        "Z@h",
        "a@h.example",
        "x@10.0.0.1",
    ];
    for x in names {
        for y in names {
            if x == y || name(x).kind() != name(y).kind() {
                continue;
            }
            let (x, y) = (name(x), name(y));
            let at_x = status_for(&x, Some(&y), false, PeerState::Dialing);
            let at_y = status_for(&y, Some(&x), false, PeerState::Dialing);
            let mut answers = [at_x.clone(), at_y.clone()];
            answers.sort_by_key(|a| matches!(a, StatusDecision::Nok));
            assert_eq!(
                answers,
                [StatusDecision::OkSimultaneous, StatusDecision::Nok],
                "{x} answered {at_x:?}, {y} answered {at_y:?}"
            );
        }
    }
}
