//! RabbitMQ's generations of cluster functions, as data: which function each operation
//! calls, per range of versions. The version maps to a generation here and nowhere else.

use super::RabbitVersion;
use crate::formation::MetadataStore;

/// A function on the node: module and function name.
pub(crate) type Mfa = (&'static str, &'static str);

/// Where the metadata store comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreFact {
    /// Always this store.
    Fixed(MetadataStore),
    /// Khepri when this function answers `true` (Mnesia when it is undefined).
    Ask(Mfa),
}

/// One generation: the functions `rabbitmqctl` itself calls for each operation.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Generation {
    /// The versions it covers, as the documentation names them.
    pub(crate) versions: &'static str,
    /// Its first version (major, minor).
    pub(crate) since: (u32, u32),
    /// The cluster status, as `rabbitmqctl cluster_status` reads it.
    pub(crate) status: Mfa,
    /// The running members: a call with atom arguments, or `None` for the status's
    /// `running_nodes`.
    pub(crate) running_members: Option<(Mfa, &'static [&'static str])>,
    /// The partitions (`None`: not read; the store has none).
    pub(crate) partitions: Option<Mfa>,
    /// Joining: `Join(Seed, disc)`, with the application stopped.
    pub(crate) join: Mfa,
    /// Forgetting a member: `Forget(Node, false)`.
    pub(crate) forget: Mfa,
    /// Called with the forgotten node once [`forget`](Self::forget) has succeeded, each
    /// where defined: what `rabbitmqctl forget_cluster_node` removes after the member
    /// (its quorum queue and stream replicas).
    pub(crate) forget_after: &'static [Mfa],
    /// Resetting the node: `Reset()`, with the application stopped.
    pub(crate) reset: Mfa,
    /// Whether a first boot can be told whom its peer discovery joins (the `rabbit`
    /// application's `cluster_nodes`); later generations choose the node themselves.
    pub(crate) first_boot_join: bool,
    /// Whether each call above falls back to its `rabbit_mnesia` counterpart when the
    /// node does not define it (as `rabbitmqctl` does).
    pub(crate) mnesia_fallback: bool,
    /// The metadata store.
    pub(crate) store: StoreFact,
    /// What a node in the middle of its boot knows of its members, before its cluster
    /// status can be read (`None`: only itself). A Khepri member forgotten while it was
    /// away boots waiting for a leader among members that no longer have it, and this
    /// is how its agent learns whom it still lists.
    pub(crate) booting_members: Option<Mfa>,
}

const MNESIA_STATUS: Mfa = ("rabbit_mnesia", "status");
const MNESIA_JOIN: Mfa = ("rabbit_mnesia", "join_cluster");
const MNESIA_FORGET: Mfa = ("rabbit_mnesia", "forget_cluster_node");
const MNESIA_RESET: Mfa = ("rabbit_mnesia", "reset");
const PARTITIONS: Mfa = ("rabbit_node_monitor", "partitions");
const SHRINK_QUORUM_QUEUES: Mfa = ("rabbit_quorum_queue", "shrink_all");
/// What 3.13 and later's `forget_cluster_node` removes once the member is forgotten: its
/// quorum queue and stream replicas, and its place in the stream coordinator.
const REMOVE_REPLICAS: &[Mfa] = &[
    SHRINK_QUORUM_QUEUES,
    ("rabbit_stream_queue", "delete_all_replicas"),
    ("rabbit_stream_coordinator", "forget_node"),
];

/// Every generation, oldest first.
pub(crate) const GENERATIONS: [Generation; 4] = [
    Generation {
        versions: "3.10 - 3.11",
        since: (3, 10),
        status: MNESIA_STATUS,
        running_members: Some((("rabbit_mnesia", "cluster_nodes"), &["running"])),
        partitions: Some(PARTITIONS),
        join: MNESIA_JOIN,
        forget: MNESIA_FORGET,
        forget_after: &[SHRINK_QUORUM_QUEUES],
        reset: MNESIA_RESET,
        first_boot_join: true,
        mnesia_fallback: false,
        store: StoreFact::Fixed(MetadataStore::Mnesia),
        booting_members: None,
    },
    Generation {
        versions: "3.12",
        since: (3, 12),
        status: MNESIA_STATUS,
        running_members: Some((("rabbit_nodes", "list_running"), &[])),
        partitions: Some(PARTITIONS),
        join: MNESIA_JOIN,
        forget: MNESIA_FORGET,
        forget_after: &[SHRINK_QUORUM_QUEUES],
        reset: MNESIA_RESET,
        first_boot_join: true,
        mnesia_fallback: false,
        store: StoreFact::Fixed(MetadataStore::Mnesia),
        booting_members: None,
    },
    Generation {
        versions: "3.13 - 4.2",
        since: (3, 13),
        status: ("rabbit_db_cluster", "cli_cluster_status"),
        running_members: None,
        partitions: Some(PARTITIONS),
        join: ("rabbit_db_cluster", "join"),
        forget: ("rabbit_db_cluster", "forget_member"),
        forget_after: REMOVE_REPLICAS,
        reset: ("rabbit_db", "reset"),
        first_boot_join: false,
        mnesia_fallback: true,
        store: StoreFact::Ask(("rabbit_khepri", "is_enabled")),
        // On Mnesia the Khepri store is not the node's cluster: it answers the node
        // alone or an error, and either leaves the node itself only.
        booting_members: Some(("rabbit_khepri", "locally_known_nodes")),
    },
    Generation {
        versions: "4.3 and later",
        since: (4, 3),
        status: ("rabbit_db_cluster", "cli_cluster_status"),
        running_members: None,
        partitions: None,
        join: ("rabbit_db_cluster", "join"),
        forget: ("rabbit_db_cluster", "forget_member"),
        forget_after: REMOVE_REPLICAS,
        reset: ("rabbit_db", "reset"),
        first_boot_join: false,
        mnesia_fallback: false,
        store: StoreFact::Fixed(MetadataStore::Khepri),
        booting_members: Some(("rabbit_khepri", "locally_known_nodes")),
    },
];

impl Generation {
    /// The generation of `version` (versions before 3.10 get the oldest).
    pub(crate) fn of(version: &RabbitVersion) -> &'static Generation {
        GENERATIONS
            .iter()
            .rev()
            .find(|g| (version.major, version.minor) >= g.since)
            .unwrap_or(&GENERATIONS[0])
    }

    /// The `rabbit_mnesia` counterpart of a call, where this generation falls back.
    pub(crate) fn fallback(&self, call: Mfa) -> Option<Mfa> {
        if !self.mnesia_fallback {
            return None;
        }
        [
            (self.status, MNESIA_STATUS),
            (self.join, MNESIA_JOIN),
            (self.forget, MNESIA_FORGET),
            (self.reset, MNESIA_RESET),
        ]
        .into_iter()
        .find(|(own, _)| *own == call)
        .map(|(_, mnesia)| mnesia)
    }
}

/// The per-generation table of the [`RabbitMq`](super::RabbitMq) documentation, rendered
/// from [`GENERATIONS`] (a test checks that the documentation holds it verbatim).
#[cfg(test)]
pub(crate) fn doc_table() -> String {
    fn call((m, f): Mfa, args: &str) -> String {
        format!("`{m}:{f}({args})`")
    }
    fn with_fallback(g: &Generation, own: Mfa, args: &str) -> String {
        match g.fallback(own) {
            Some(mnesia) => format!("{} (else {})", call(own, args), call(mnesia, args)),
            None => call(own, args),
        }
    }
    type Cell = fn(&Generation) -> String;
    let rows: [(&str, Cell); 9] = [
        ("cluster status", |g| with_fallback(g, g.status, "")),
        ("running members", |g| match g.running_members {
            Some((mfa, args)) => call(mfa, &args.join(", ")),
            None => "`running_nodes` of the status".into(),
        }),
        ("partitions", |g| match g.partitions {
            Some(mfa) => format!("{} (`[]` where undefined)", call(mfa, "")),
            None => "none (not read)".into(),
        }),
        ("join", |g| with_fallback(g, g.join, "Seed, disc")),
        ("forget", |g| {
            let each = |calls: &[Mfa]| {
                calls
                    .iter()
                    .map(|c| call(*c, "Node"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut steps = vec![with_fallback(g, g.forget, "Node, false")];
            if !g.forget_after.is_empty() {
                steps.push(each(g.forget_after));
            }
            steps.join(", then ")
        }),
        ("reset", |g| with_fallback(g, g.reset, "")),
        ("first-boot join", |g| {
            if g.first_boot_join {
                "`application:set_env(rabbit, cluster_nodes, {[Seed], disc})`".into()
            } else {
                "none: joined by restart".into()
            }
        }),
        ("members of a booting node", |g| match g.booting_members {
            Some(mfa) => call(mfa, ""),
            None => "itself only".into(),
        }),
        ("metadata store", |g| match g.store {
            StoreFact::Fixed(MetadataStore::Mnesia) => "Mnesia".into(),
            StoreFact::Fixed(MetadataStore::Khepri) => "Khepri".into(),
            StoreFact::Ask(mfa) => format!("Khepri if {} is `true`", call(mfa, "")),
        }),
    ];
    let mut out = String::from("| operation |");
    for g in &GENERATIONS {
        out.push_str(&format!(" {} |", g.versions));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(GENERATIONS.len()));
    for (name, cell) in rows {
        out.push_str(&format!("\n| {name} |"));
        for g in &GENERATIONS {
            out.push_str(&format!(" {} |", cell(g)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> RabbitVersion {
        RabbitVersion::parse(s).unwrap()
    }

    #[test]
    fn versions_map_to_their_generation() {
        for (version, generation) in [
            ("3.9.29", "3.10 - 3.11"),
            ("3.10.8", "3.10 - 3.11"),
            ("3.11.28", "3.10 - 3.11"),
            ("3.12.14", "3.12"),
            ("3.13.7", "3.13 - 4.2"),
            ("4.0.5", "3.13 - 4.2"),
            ("4.2.9", "3.13 - 4.2"),
            ("4.3.0-alpha.1+abc", "4.3 and later"),
            ("4.3.6", "4.3 and later"),
            ("5.0.0", "4.3 and later"),
        ] {
            assert_eq!(
                Generation::of(&v(version)).versions,
                generation,
                "{version}"
            );
        }
    }

    #[test]
    fn generations_are_ordered_and_only_3_13_to_4_2_fall_back() {
        assert!(GENERATIONS.windows(2).all(|w| w[0].since < w[1].since));
        let g = Generation::of(&v("4.0.5"));
        assert_eq!(g.fallback(g.join), Some(MNESIA_JOIN));
        assert_eq!(g.fallback(g.status), Some(MNESIA_STATUS));
        let g = Generation::of(&v("4.3.6"));
        assert_eq!(g.fallback(g.join), None);
        assert_eq!(g.partitions, None);
    }

    #[test]
    fn the_documentation_holds_the_rendered_table() {
        let rustdoc: String = include_str!("mod.rs")
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("/// "))
            .filter(|l| l.starts_with('|'))
            .collect::<Vec<_>>()
            .join("\n");
        let guide = include_str!("../../../docs/rabbitmq.md");
        let table = doc_table();
        for (name, doc) in [
            ("the RabbitMq rustdoc", rustdoc.as_str()),
            ("docs/rabbitmq.md", guide),
        ] {
            assert!(
                doc.contains(&table),
                "the table in {name} is out of date; it should read:\n{table}"
            );
        }
    }
}
