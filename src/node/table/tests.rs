//! The process table's decisions, with no channel, lock or runtime: mailboxes are plain
//! numbers.

use super::*;

fn me() -> Atom {
    Atom::from("me@h")
}

fn peer() -> Atom {
    Atom::from("peer@h")
}

fn remote(node: &Atom, id: u32) -> Pid {
    Pid {
        node: node.clone(),
        id,
        serial: 0,
        creation: 7,
    }
}

fn reference(n: u32) -> Reference {
    Reference {
        node: peer(),
        creation: 7,
        id: vec![n, 0, 0],
    }
}

/// A table with one process, registered as `worker`.
fn table() -> (Table<u8>, u32) {
    let mut t = Table::new(me(), 1);
    let id = t.spawn(Some(Atom::from("worker")), 0).unwrap();
    (t, id)
}

fn signal(t: &mut Table<u8>, from: &Atom, control: Control) -> Vec<Action> {
    let mut out = Vec::new();
    t.signal(from, control, &mut out);
    out
}

fn monitor(t: &mut Table<u8>, watcher: Pid, to: ProcessRef, r: u32) -> Vec<Action> {
    let control = Control::Monitor {
        from: watcher,
        to,
        reference: reference(r),
    };
    signal(t, &peer(), control)
}

#[test]
fn names_are_unique_and_the_node_keeps_its_own() {
    let (mut t, id) = table();
    assert!(id >= FIRST_USER_ID);
    assert_eq!(t.whereis(&Atom::from("worker")), Some(id));
    assert_eq!(
        t.spawn(Some(Atom::from("worker")), 1),
        Err(NameTaken::Registered)
    );
    assert_eq!(
        t.spawn(Some(Atom::from("net_kernel")), 1),
        Err(NameTaken::Reserved)
    );
    let other = t.spawn(None, 1).unwrap();
    assert_ne!(other, id);
    assert_eq!(t.mailbox(other), Some(&1));
    assert_eq!(
        t.local_id(&ProcessRef::Name(Atom::from("net_kernel"))),
        Some(NET_KERNEL_ID)
    );
    // A pid of an earlier incarnation names nothing here.
    let mut stale = t.pid(id);
    stale.creation = 0;
    assert_eq!(t.local_id(&ProcessRef::Pid(stale)), None);
    // The name is free again once the process ends.
    assert!(t.exited(id, &Term::atom("normal")).is_empty());
    assert_eq!(t.whereis(&Atom::from("worker")), None);
    assert!(t.mailbox(id).is_none());
}

#[test]
fn a_monitor_of_a_missing_process_is_answered_noproc() {
    let (mut t, _) = table();
    let watcher = remote(&peer(), 5);
    let to = ProcessRef::Name(Atom::from("nobody"));
    let out = monitor(&mut t, watcher.clone(), to.clone(), 1);
    assert_eq!(
        out,
        [Action::Reply(Control::MonitorExit {
            from: to,
            to: watcher.clone(),
            reference: reference(1),
            reason: Term::atom("noproc"),
        })]
    );
    // The node's own processes are always there.
    let to = ProcessRef::Name(Atom::from("net_kernel"));
    assert!(monitor(&mut t, watcher, to, 2).is_empty());
}

#[test]
fn a_monitored_process_that_ends_tells_its_watchers_by_name_and_its_links_by_pid() {
    let (mut t, id) = table();
    let watcher = remote(&peer(), 5);
    let to = ProcessRef::Name(Atom::from("worker"));
    assert!(monitor(&mut t, watcher.clone(), to.clone(), 1).is_empty());
    let linked = remote(&peer(), 6);
    let link = Control::Link {
        from: linked.clone(),
        to: t.pid(id),
    };
    assert!(signal(&mut t, &peer(), link).is_empty());
    let mut sent = t.exited(id, &Term::atom("shutdown"));
    sent.sort_by_key(|(_, c)| matches!(c, Control::Exit { .. }));
    assert_eq!(
        sent,
        [
            (
                peer(),
                Control::MonitorExit {
                    from: to,
                    to: watcher,
                    reference: reference(1),
                    reason: Term::atom("shutdown"),
                }
            ),
            (
                peer(),
                Control::Exit {
                    from: t.pid(id),
                    to: linked,
                    reason: Term::atom("shutdown"),
                }
            ),
        ]
    );
}

#[test]
fn a_demonitored_process_tells_nobody_and_frees_the_peers_room() {
    let (mut t, id) = table();
    let watcher = remote(&peer(), 5);
    let to = ProcessRef::Pid(t.pid(id));
    for r in 0..MAX_MONITORS_AND_LINKS_PER_PEER as u32 {
        assert!(monitor(&mut t, watcher.clone(), to.clone(), r).is_empty());
    }
    let demonitor = Control::Demonitor {
        from: watcher.clone(),
        to: to.clone(),
        reference: reference(0),
    };
    assert!(signal(&mut t, &peer(), demonitor).is_empty());
    // One slot is free again; the next is over the limit.
    let last = MAX_MONITORS_AND_LINKS_PER_PEER as u32;
    assert!(monitor(&mut t, watcher.clone(), to.clone(), last).is_empty());
    assert_eq!(
        monitor(&mut t, watcher.clone(), to.clone(), last + 1),
        [Action::Overloaded]
    );
    // The same reference again is not a new monitor.
    assert!(monitor(&mut t, watcher, to, last).is_empty());
    assert_eq!(
        t.exited(id, &Term::atom("normal")).len(),
        MAX_MONITORS_AND_LINKS_PER_PEER
    );
}

#[test]
fn the_limit_is_per_peer_node_and_counts_links_too() {
    let (mut t, id) = table();
    let to = ProcessRef::Pid(t.pid(id));
    for r in 0..MAX_MONITORS_AND_LINKS_PER_PEER as u32 - 1 {
        assert!(monitor(&mut t, remote(&peer(), 5), to.clone(), r).is_empty());
    }
    let link = |from: Pid| Control::Link {
        from,
        to: t.pid(id),
    };
    let (l1, l2) = (link(remote(&peer(), 6)), link(remote(&peer(), 7)));
    assert!(signal(&mut t, &peer(), l1).is_empty());
    assert_eq!(signal(&mut t, &peer(), l2), [Action::Overloaded]);
    // Another node has room of its own.
    let other = Atom::from("other@h");
    let l3 = Control::Link {
        from: remote(&other, 6),
        to: t.pid(id),
    };
    assert!(signal(&mut t, &other, l3).is_empty());
    // A link the local side asks for is always recorded.
    t.link(id, remote(&peer(), 8));
    assert_eq!(
        t.exited(id, &Term::atom("normal")).len(),
        MAX_MONITORS_AND_LINKS_PER_PEER + 2
    );
}

#[test]
fn a_signal_naming_another_nodes_process_as_its_sender_is_ignored() {
    let (mut t, id) = table();
    let victim = Atom::from("victim@h");
    // The victim node monitors the process; the peer tries to take that monitor down.
    let watched = ProcessRef::Pid(t.pid(id));
    let held = Control::Monitor {
        from: remote(&victim, 9),
        to: watched.clone(),
        reference: reference(7),
    };
    assert!(signal(&mut t, &victim, held).is_empty());
    let forged = remote(&victim, 5);
    let to = ProcessRef::Name(Atom::from("nobody"));
    assert!(
        monitor(&mut t, forged.clone(), to, 1).is_empty(),
        "no noproc sent"
    );
    for control in [
        Control::Link {
            from: forged.clone(),
            to: t.pid(id),
        },
        Control::Exit {
            from: forged.clone(),
            to: t.pid(id),
            reason: Term::atom("kill"),
        },
        Control::Exit2 {
            from: forged.clone(),
            to: t.pid(id),
            reason: Term::atom("kill"),
        },
        Control::UnlinkId {
            id: Term::from(1),
            from: forged.clone(),
            to: t.pid(id),
        },
        Control::Demonitor {
            from: forged.clone(),
            to: watched.clone(),
            reference: reference(7),
        },
        // Its own process, with the victim's reference.
        Control::Demonitor {
            from: remote(&peer(), 5),
            to: watched,
            reference: reference(7),
        },
    ] {
        assert!(signal(&mut t, &peer(), control).is_empty());
    }
    let sent = t.exited(id, &Term::atom("normal"));
    assert_eq!(
        sent.len(),
        1,
        "only the victim's own monitor is held: {sent:?}"
    );
    assert_eq!(sent[0].0, victim);
}

#[test]
fn only_the_node_of_a_monitored_process_can_tell_of_its_end() {
    let (mut t, id) = table();
    let target = remote(&Atom::from("other@h"), 5);
    t.monitor(id, reference(1), Term::from(target.clone()));
    let exit = Control::MonitorExit {
        from: ProcessRef::Pid(target.clone()),
        to: t.pid(id),
        reference: reference(1),
        reason: Term::atom("forged"),
    };
    assert!(signal(&mut t, &peer(), exit.clone()).is_empty());
    // The monitor is still there for its own node.
    assert_eq!(signal(&mut t, &Atom::from("other@h"), exit).len(), 1);
}

#[test]
fn a_link_to_a_missing_process_is_answered_with_an_exit_noproc() {
    let (mut t, id) = table();
    let from = remote(&peer(), 5);
    let gone = t.pid(id + 1);
    let out = signal(
        &mut t,
        &peer(),
        Control::Link {
            from: from.clone(),
            to: gone.clone(),
        },
    );
    assert_eq!(
        out,
        [Action::Reply(Control::Exit {
            from: gone,
            to: from.clone(),
            reason: Term::atom("noproc"),
        })]
    );
    // Not for the node's own processes, which never exit.
    let rex = t.pid(RPC_ID);
    assert!(signal(&mut t, &peer(), Control::Link { from, to: rex }).is_empty());
}

#[test]
fn an_exit_signal_is_delivered_and_ends_the_link_and_an_unlink_is_acknowledged() {
    let (mut t, id) = table();
    let from = remote(&peer(), 5);
    let link = Control::Link {
        from: from.clone(),
        to: t.pid(id),
    };
    assert!(signal(&mut t, &peer(), link.clone()).is_empty());
    let exit = Control::Exit2 {
        from: from.clone(),
        to: t.pid(id),
        reason: Term::atom("bye"),
    };
    assert_eq!(
        signal(&mut t, &peer(), exit),
        [Action::Deliver {
            id,
            from: Some(from.clone()),
            message: exit_message(&from, Term::atom("bye")),
        }]
    );
    assert!(signal(&mut t, &peer(), link).is_empty());
    let unlink = Control::UnlinkId {
        id: Term::from(9),
        from: from.clone(),
        to: t.pid(id),
    };
    assert_eq!(
        signal(&mut t, &peer(), unlink),
        [Action::Reply(Control::UnlinkIdAck {
            id: Term::from(9),
            from: t.pid(id),
            to: from,
        })]
    );
    assert!(
        t.exited(id, &Term::atom("normal")).is_empty(),
        "both links ended"
    );
}

#[test]
fn a_monitor_exit_is_delivered_once_as_a_down_message() {
    let (mut t, id) = table();
    let target = remote(&peer(), 5);
    t.monitor(id, reference(1), Term::from(target.clone()));
    let exit = Control::MonitorExit {
        from: ProcessRef::Pid(target.clone()),
        to: t.pid(id),
        reference: reference(1),
        reason: Term::atom("oops"),
    };
    let down = down_message(
        &reference(1),
        Term::from(target.clone()),
        Term::atom("oops"),
    );
    assert_eq!(
        signal(&mut t, &peer(), exit.clone()),
        [Action::Deliver {
            id,
            from: Some(target),
            message: down,
        }]
    );
    assert!(signal(&mut t, &peer(), exit).is_empty(), "delivered once");
    // A monitor by name names the process {Name, Node}.
    let server = Term::Tuple(vec![Term::atom("server"), Term::Atom(peer())]);
    t.monitor(id, reference(2), server);
    let exit = Control::MonitorExit {
        from: ProcessRef::Name(Atom::from("server")),
        to: t.pid(id),
        reference: reference(2),
        reason: Term::atom("noproc"),
    };
    let named = Term::Tuple(vec![Term::atom("server"), Term::Atom(peer())]);
    assert_eq!(
        signal(&mut t, &peer(), exit),
        [Action::Deliver {
            id,
            from: None,
            message: down_message(&reference(2), named, Term::atom("noproc")),
        }]
    );
    // A demonitored one is not delivered.
    t.monitor(id, reference(3), Term::from(remote(&peer(), 6)));
    assert!(t.demonitor(id, &reference(3)).is_some());
    let exit = Control::MonitorExit {
        from: ProcessRef::Pid(remote(&peer(), 6)),
        to: t.pid(id),
        reference: reference(3),
        reason: Term::atom("x"),
    };
    assert!(signal(&mut t, &peer(), exit).is_empty());
}

#[test]
fn a_node_going_down_forgets_what_it_held_and_tells_who_linked_or_monitored_it() {
    let (mut t, id) = table();
    let other = Atom::from("other@h");
    let (theirs, kept) = (remote(&peer(), 5), remote(&other, 5));
    for from in [&theirs, &kept] {
        let link = Control::Link {
            from: from.clone(),
            to: t.pid(id),
        };
        assert!(signal(&mut t, &from.node.clone(), link).is_empty());
    }
    let watched = ProcessRef::Pid(t.pid(id));
    assert!(monitor(&mut t, remote(&peer(), 6), watched, 1).is_empty());
    t.monitor(id, reference(2), Term::from(remote(&peer(), 7)));
    t.monitor(id, reference(3), Term::from(remote(&other, 7)));
    let mut out = Vec::new();
    t.node_down(&peer(), &mut out);
    out.sort_by_key(|a| format!("{a:?}"));
    let mut expected = vec![
        Action::Deliver {
            id,
            from: Some(theirs.clone()),
            message: exit_message(&theirs, Term::atom("noconnection")),
        },
        Action::Deliver {
            id,
            from: Some(remote(&peer(), 7)),
            message: down_message(
                &reference(2),
                Term::from(remote(&peer(), 7)),
                Term::atom("noconnection"),
            ),
        },
    ];
    expected.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(out, expected);
    // Only the other node's link is left to tell when the process ends.
    let sent = t.exited(id, &Term::atom("normal"));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, other);
}
