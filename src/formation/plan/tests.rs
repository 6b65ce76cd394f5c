use super::*;
use crate::formation::{Membership, MetadataStore};

fn n(s: &str) -> NodeName {
    s.parse().unwrap()
}

/// The managed node's state, as the inspection reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// Running alone.
    Standalone,
    /// Running, a member of the seed's cluster, both running.
    MemberRunning,
    /// Running, a recorded member of the seed's cluster that does not see it running.
    MemberNotSeeingSeed,
    /// Running in a cluster with `rabbit@x` (not the seed).
    OtherCluster,
    /// Running, the only one of its three members (`rabbit@x` and `rabbit@y` down).
    Survivor,
    /// Its application stopped.
    Stopped,
    /// In its first boot, joinable.
    BootingJoinable,
    /// Booting, past the point where it can be told whom to join.
    BootingLate,
}

const NODES: [Node; 8] = [
    Node::Standalone,
    Node::MemberRunning,
    Node::MemberNotSeeingSeed,
    Node::OtherCluster,
    Node::Survivor,
    Node::Stopped,
    Node::BootingJoinable,
    Node::BootingLate,
];

/// What the selector concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Seed,
    NoneLive,
    NoneButBooting,
    NoneButUnknown,
    WaitingForSeed,
}

const CHOICES: [Choice; 5] = [
    Choice::Seed,
    Choice::NoneLive,
    Choice::NoneButBooting,
    Choice::NoneButUnknown,
    Choice::WaitingForSeed,
];

const ME: &str = "rabbit@m";
const SEED: &str = "rabbit@a";
const BOOTING: &str = "rabbit@b";

fn membership(node: Node) -> Membership {
    let me = n(ME);
    let seed = n(SEED);
    let running = |members: Vec<NodeName>, running: Vec<NodeName>| Membership {
        running: true,
        members,
        running_members: running,
        partitions: vec![],
        booting: false,
    };
    match node {
        Node::Standalone => running(vec![me.clone()], vec![me]),
        Node::MemberRunning => running(
            vec![seed.clone(), me.clone()],
            vec![seed.clone(), me.clone()],
        ),
        Node::MemberNotSeeingSeed => running(vec![seed, me.clone()], vec![me]),
        Node::OtherCluster => running(vec![me.clone(), n("rabbit@x")], vec![me, n("rabbit@x")]),
        Node::Survivor => running(vec![me.clone(), n("rabbit@x"), n("rabbit@y")], vec![me]),
        Node::Stopped => Membership {
            running: false,
            members: vec![me],
            ..Membership::default()
        },
        Node::BootingJoinable | Node::BootingLate => Membership {
            running: false,
            members: vec![me],
            booting: true,
            ..Membership::default()
        },
    }
}

fn choice(c: Choice) -> SeedChoice {
    match c {
        Choice::Seed => SeedChoice {
            seed: Some(n(SEED)),
            ..SeedChoice::default()
        },
        Choice::NoneLive => SeedChoice::default(),
        Choice::NoneButBooting => SeedChoice {
            booting: vec![n(BOOTING)],
            unknown: vec![(n(BOOTING), "booting".into())],
            ..SeedChoice::default()
        },
        Choice::NoneButUnknown => SeedChoice {
            unknown: vec![(n("rabbit@u"), "timeout".into())],
            ..SeedChoice::default()
        },
        Choice::WaitingForSeed => SeedChoice {
            waiting_for: Some(n(SEED)),
            ..SeedChoice::default()
        },
    }
}

fn datas() -> [Option<DataState>; 4] {
    [
        None,
        Some(DataState::Empty),
        Some(DataState::HasData(vec!["1 queue in /: q".into()])),
        Some(DataState::OtherCluster(vec![n("rabbit@x")])),
    ]
}

const STORES: [Option<MetadataStore>; 3] = [
    None,
    Some(MetadataStore::Mnesia),
    Some(MetadataStore::Khepri),
];

/// One row of the table: the facts, spelled out.
struct Row {
    node: Node,
    choice: Choice,
    data: Option<DataState>,
    store: Option<MetadataStore>,
    allow_reset: bool,
    resumed: bool,
    lockless: bool,
}

fn decide(row: &Row) -> Result<Decision, FormationError> {
    let me = n(ME);
    let choice = choice(row.choice);
    let mut inspection =
        Inspection::of(membership(row.node)).with_boot_joinable(row.node == Node::BootingJoinable);
    inspection.store = row.store;
    inspection.data = row.data.clone();
    let det = n(SEED);
    let registered = [n(SEED), n(BOOTING)];
    let facts = Facts::new(&me, &choice, &inspection)
        .registered(&registered)
        .deterministic(row.lockless.then_some(&det))
        .allow_reset(row.allow_reset)
        .resumed(row.resumed);
    plan(&facts)
}

/// Every combination of the facts.
fn every_row() -> Vec<Row> {
    let mut rows = Vec::new();
    for node in NODES {
        for choice in CHOICES {
            for data in datas() {
                for store in STORES {
                    for allow_reset in [false, true] {
                        for resumed in [false, true] {
                            for lockless in [false, true] {
                                rows.push(Row {
                                    node,
                                    choice,
                                    data: data.clone(),
                                    store,
                                    allow_reset,
                                    resumed,
                                    lockless,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    rows
}

/// Khepri, and at most half of the node's members running: one of two, one of three.
fn majority_lost(row: &Row) -> bool {
    row.store == Some(MetadataStore::Khepri)
        && matches!(row.node, Node::Survivor | Node::MemberNotSeeingSeed)
}

fn describe(row: &Row) -> String {
    format!(
        "node {:?}, choice {:?}, data {:?}, store {:?}, allow_reset {}, resumed {}, lockless {}",
        row.node, row.choice, row.data, row.store, row.allow_reset, row.resumed, row.lockless
    )
}

#[test]
fn the_table() {
    use Decision::*;
    let seed = || n(SEED);
    let join = |reset| {
        Execute(Step::Join {
            seed: seed(),
            reset,
        })
    };
    // (node, choice, data, store, allow_reset, resumed) -> decision, with a lock.
    // (node, choice, data, store, allow_reset, resumed, decision)
    type Case = (
        Node,
        Choice,
        Option<DataState>,
        Option<MetadataStore>,
        bool,
        bool,
        Decision,
    );
    let cases: Vec<Case> = vec![
        // Joining a live seed: the data is read once, then the join is decided.
        (
            Node::Standalone,
            Choice::Seed,
            None,
            None,
            false,
            false,
            Inventory,
        ),
        (
            Node::Standalone,
            Choice::Seed,
            Some(DataState::Empty),
            None,
            false,
            false,
            join(false),
        ),
        (
            Node::Standalone,
            Choice::Seed,
            Some(DataState::HasData(vec!["q".into()])),
            None,
            true,
            false,
            join(true),
        ),
        (
            Node::OtherCluster,
            Choice::Seed,
            Some(DataState::OtherCluster(vec![n("rabbit@x")])),
            None,
            true,
            false,
            join(true),
        ),
        // A member that does not see the seed running is never joined again, on any
        // store, reset allowed or not.
        (
            Node::MemberNotSeeingSeed,
            Choice::Seed,
            None,
            Some(MetadataStore::Khepri),
            true,
            false,
            Done(Outcome::AlreadyMember { seed: seed() }),
        ),
        // Already a member.
        (
            Node::MemberRunning,
            Choice::Seed,
            None,
            None,
            false,
            false,
            Done(Outcome::AlreadyMember { seed: seed() }),
        ),
        (
            Node::MemberRunning,
            Choice::Seed,
            None,
            None,
            false,
            true,
            Done(Outcome::Joined { seed: seed() }),
        ),
        (
            Node::MemberNotSeeingSeed,
            Choice::Seed,
            None,
            Some(MetadataStore::Mnesia),
            true,
            false,
            Done(Outcome::AlreadyMember { seed: seed() }),
        ),
        // A Mnesia survivor runs on; a Khepri one is refused (below).
        (
            Node::Survivor,
            Choice::NoneLive,
            None,
            Some(MetadataStore::Mnesia),
            false,
            false,
            Execute(Step::Form),
        ),
        // A stopped application is started first; a booting node is told or waited for.
        (
            Node::Stopped,
            Choice::Seed,
            None,
            None,
            false,
            false,
            Prepare(Step::Start),
        ),
        (
            Node::BootingLate,
            Choice::Seed,
            None,
            None,
            false,
            false,
            Prepare(Step::Start),
        ),
        (
            Node::BootingJoinable,
            Choice::Seed,
            None,
            None,
            false,
            false,
            Execute(Step::BootJoin { seed: Some(seed()) }),
        ),
        // No live node.
        (
            Node::Standalone,
            Choice::NoneLive,
            None,
            None,
            false,
            false,
            Execute(Step::Form),
        ),
        (
            Node::Stopped,
            Choice::NoneLive,
            None,
            None,
            false,
            false,
            Execute(Step::Form),
        ),
        (
            Node::BootingJoinable,
            Choice::NoneLive,
            None,
            None,
            false,
            false,
            Execute(Step::BootJoin { seed: None }),
        ),
        (
            Node::OtherCluster,
            Choice::NoneLive,
            None,
            None,
            false,
            false,
            Done(Outcome::AlreadyMember { seed: n(ME) }),
        ),
        // Booting nodes only: a booting managed node joins the first of them.
        (
            Node::BootingJoinable,
            Choice::NoneButBooting,
            None,
            None,
            false,
            false,
            Execute(Step::BootJoin {
                seed: Some(n(BOOTING)),
            }),
        ),
        (
            Node::BootingLate,
            Choice::NoneButBooting,
            None,
            None,
            false,
            false,
            Prepare(Step::Start),
        ),
    ];
    for (node, choice, data, store, allow_reset, resumed, expected) in cases {
        let row = Row {
            node,
            choice,
            data,
            store,
            allow_reset,
            resumed,
            lockless: false,
        };
        assert_eq!(decide(&row).unwrap(), expected, "{}", describe(&row));
    }
    // Refusals.
    let refused = |node, choice, data: Option<DataState>, store, resumed| {
        let row = Row {
            node,
            choice,
            data,
            store,
            allow_reset: false,
            resumed,
            lockless: false,
        };
        decide(&row).expect_err(&describe(&row))
    };
    assert!(matches!(
        refused(
            Node::Standalone,
            Choice::Seed,
            Some(DataState::HasData(vec!["q".into()])),
            None,
            false
        ),
        FormationError::DataAtRisk { .. }
    ));
    for choice in [Choice::NoneLive, Choice::Seed] {
        assert!(matches!(
            refused(
                Node::Survivor,
                choice,
                None,
                Some(MetadataStore::Khepri),
                false
            ),
            FormationError::MajorityLost {
                running: 1,
                members: 3,
                ..
            }
        ));
    }
    assert!(matches!(
        refused(Node::Standalone, Choice::NoneButUnknown, None, None, false),
        FormationError::MaybeAlive { .. }
    ));
    assert!(matches!(
        refused(Node::Standalone, Choice::NoneButBooting, None, None, false),
        FormationError::MaybeAlive { .. }
    ));
    assert!(matches!(
        refused(Node::Stopped, Choice::Seed, None, None, true),
        FormationError::Unexpected { .. }
    ));
}

#[test]
fn without_a_lock() {
    let lockless = |node, choice| Row {
        node,
        choice,
        data: None,
        store: None,
        allow_reset: false,
        resumed: false,
        lockless: true,
    };
    // In a cluster with the deterministic seed: stays.
    assert_eq!(
        decide(&lockless(Node::MemberRunning, Choice::NoneLive)).unwrap(),
        Decision::Done(Outcome::AlreadyMember { seed: n(SEED) })
    );
    // The seed is down and nothing else runs: wait for it.
    assert_eq!(
        decide(&lockless(Node::Standalone, Choice::WaitingForSeed)).unwrap(),
        Decision::WaitForSeed(n(SEED))
    );
    // The node is the seed: forms, whatever does not answer.
    assert_eq!(
        decide(&lockless(Node::Standalone, Choice::NoneButUnknown)).unwrap(),
        Decision::Execute(Step::Form)
    );
    // Booting registered nodes are no seed without a lock.
    assert_eq!(
        decide(&lockless(Node::BootingJoinable, Choice::NoneButBooting)).unwrap(),
        Decision::Execute(Step::BootJoin { seed: None })
    );
}

/// Properties that hold for every combination of the facts.
#[test]
fn every_combination_keeps_the_rules() {
    let rows = every_row();
    assert_eq!(rows.len(), 8 * 5 * 4 * 3 * 2 * 2 * 2);
    for row in &rows {
        let what = describe(row);
        let decision = decide(row);
        let m = membership(row.node);
        match &decision {
            Ok(Decision::Execute(Step::Join { seed, reset })) => {
                // Only to the chosen seed (or the first booting node).
                assert!(
                    *seed == n(SEED) || *seed == n(BOOTING),
                    "join of an unchosen node: {what}"
                );
                assert!(m.running, "a join from a node not running: {what}");
                // Never a reset that was not allowed.
                assert!(!reset || row.allow_reset, "reset not allowed: {what}");
                // A member of the seed's cluster is never joined again.
                assert!(!m.members.contains(seed), "a member joined again: {what}");
                // Never a Khepri node whose majority is lost.
                assert!(!majority_lost(row), "{what}");
                // Never without knowing the data, never over data unless allowed.
                match &row.data {
                    None => panic!("join without reading the data: {what}"),
                    Some(DataState::Empty) => assert!(!reset, "{what}"),
                    Some(_) => assert!(*reset && row.allow_reset, "{what}"),
                }
            }
            Ok(Decision::Execute(Step::Form)) => {
                // Never from a Khepri node whose majority is lost.
                assert!(!majority_lost(row), "formed from a lost majority: {what}");
                // Never beside a node that may be alive, with a lock.
                assert!(
                    row.lockless || row.choice != Choice::NoneButUnknown,
                    "formed beside an unknown node: {what}"
                );
                assert!(!matches!(row.choice, Choice::Seed), "{what}");
            }
            Ok(Decision::Execute(Step::BootJoin { .. })) => {
                assert_eq!(row.node, Node::BootingJoinable, "{what}");
            }
            Ok(Decision::Inventory) => {
                assert!(row.data.is_none(), "data asked for twice: {what}");
            }
            Ok(Decision::Prepare(step)) => {
                assert_eq!(*step, Step::Start, "{what}");
                assert!(!row.resumed, "started twice in one attempt: {what}");
                assert!(!m.running, "{what}");
            }
            Ok(Decision::WaitForSeed(_)) => {
                assert!(
                    row.lockless || row.choice == Choice::WaitingForSeed,
                    "{what}"
                )
            }
            Ok(Decision::Done(_)) => {}
            Ok(other) => panic!("unexpected {other:?}: {what}"),
            Err(FormationError::DataAtRisk { .. }) => {
                assert!(!row.allow_reset, "{what}");
                assert!(
                    matches!(
                        row.data.clone(),
                        Some(DataState::HasData(_) | DataState::OtherCluster(_))
                    ),
                    "{what}"
                );
            }
            Err(FormationError::MaybeAlive { .. }) => assert!(!row.lockless, "{what}"),
            Err(FormationError::MajorityLost { .. }) => assert!(majority_lost(row), "{what}"),
            Err(FormationError::Unexpected { .. }) => assert!(row.resumed, "{what}"),
            Err(e) => panic!("unexpected error {e}: {what}"),
        }
        // Data that is known is never asked for again, whatever else holds.
        if row.data.is_some() {
            assert_ne!(decision.as_ref().ok(), Some(&Decision::Inventory), "{what}");
        }
    }
}

/// A node whose own boot was waited for keeps the booting seed it had when the attempt
/// began, rather than finding no live node once it runs.
#[test]
fn a_boot_waited_for_keeps_its_booting_seed() {
    let me = n(ME);
    let choice = choice(Choice::NoneButBooting);
    let booted = Inspection::of(membership(Node::Standalone)).with_data(DataState::Empty);
    let facts = Facts::new(&me, &choice, &booted).resumed(true);
    // Without the boot: registered nodes that may be alive hold it back.
    assert!(matches!(
        plan(&facts),
        Err(FormationError::MaybeAlive { .. })
    ));
    assert_eq!(
        plan(&facts.was_booting(true)).unwrap(),
        Decision::Execute(Step::Join {
            seed: n(BOOTING),
            reset: false
        })
    );
}

/// The majority rule at its boundaries: two of three running is a majority, two of four
/// is not, a partitioned member counts as down, and only Khepri has the rule.
#[test]
fn a_majority_is_more_than_half_of_the_members_running_and_not_partitioned() {
    let me = n(ME);
    let members = |all: &[&str], running: &[&str], partitions: &[&str]| Membership {
        running: true,
        members: all.iter().map(|s| n(s)).collect(),
        running_members: running.iter().map(|s| n(s)).collect(),
        partitions: partitions.iter().map(|s| n(s)).collect(),
        booting: false,
    };
    let khepri = |m: Membership| Inspection::of(m).with_store(MetadataStore::Khepri);
    let three = [ME, "rabbit@x", "rabbit@y"];
    let four = [ME, "rabbit@x", "rabbit@y", "rabbit@z"];
    assert_eq!(
        khepri(members(&three, &[ME, "rabbit@x"], &[])).majority_lost(),
        None
    );
    assert_eq!(
        khepri(members(&four, &[ME, "rabbit@x"], &[])).majority_lost(),
        Some((2, 4))
    );
    assert_eq!(
        khepri(members(&three, &[ME, "rabbit@x"], &["rabbit@x"])).majority_lost(),
        Some((1, 3))
    );
    let mnesia = Inspection::of(members(&three, &[ME], &[])).with_store(MetadataStore::Mnesia);
    assert_eq!(mnesia.majority_lost(), None);
    // Two of three on Khepri: a member with running peers keeps its cluster.
    let choice = SeedChoice::default();
    let two_of_three = khepri(members(&three, &[ME, "rabbit@x"], &[]));
    assert_eq!(
        plan(&Facts::new(&me, &choice, &two_of_three)).unwrap(),
        Decision::Done(Outcome::AlreadyMember { seed: n(ME) })
    );
}

/// A member restarted with its data, whose boot the agent only waited for, is a member
/// already; one whose stopped application the agent started finishes a join.
#[test]
fn a_member_whose_boot_was_waited_for_was_a_member_all_along() {
    let me = n(ME);
    let choice = choice(Choice::Seed);
    let member = Inspection::of(membership(Node::MemberRunning));
    let facts = Facts::new(&me, &choice, &member).resumed(true);
    assert_eq!(
        plan(&facts.was_booting(true)).unwrap(),
        Decision::Done(Outcome::AlreadyMember { seed: n(SEED) })
    );
    assert_eq!(
        plan(&facts).unwrap(),
        Decision::Done(Outcome::Joined { seed: n(SEED) })
    );
}

/// A node that lists the seed while the seed no longer lists it was forgotten while it
/// was away: refused, whatever `allow_reset` says; a seed that lists it keeps it a
/// member.
#[test]
fn a_member_the_seed_forgot_is_refused_and_never_reset() {
    let me = n(ME);
    let member = Inspection::of(membership(Node::MemberRunning));
    let forgot = SeedChoice {
        seed: Some(n(SEED)),
        seed_members: vec![n(SEED), n("rabbit@z")],
        ..SeedChoice::default()
    };
    for allow_reset in [false, true] {
        let facts = Facts::new(&me, &forgot, &member).allow_reset(allow_reset);
        let e = plan(&facts).unwrap_err();
        assert!(matches!(e, FormationError::Forgotten { .. }), "{e}");
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("rabbitmqctl reset"), "{e}");
    }
    let keeps = SeedChoice {
        seed_members: vec![n(SEED), me.clone()],
        ..forgot.clone()
    };
    assert_eq!(
        plan(&Facts::new(&me, &keeps, &member)).unwrap(),
        Decision::Done(Outcome::AlreadyMember { seed: n(SEED) })
    );

    // Booting with its data (a Khepri member waiting for a leader, its members read
    // from what it still knows) or stopped: refused before its boot is waited for or
    // its application started; a restart the seed still lists is waited for.
    for booting in [true, false] {
        let away = Inspection::of(Membership {
            running: false,
            members: vec![n(SEED), me.clone(), n("rabbit@z")],
            booting,
            ..Membership::default()
        });
        let e = plan(&Facts::new(&me, &forgot, &away)).unwrap_err();
        assert!(matches!(e, FormationError::Forgotten { .. }), "{e}");
        assert_eq!(
            plan(&Facts::new(&me, &keeps, &away)).unwrap(),
            Decision::Prepare(Step::Start)
        );
    }
}
