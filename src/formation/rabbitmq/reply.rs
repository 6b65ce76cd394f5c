//! Reading RabbitMQ's answers: node lists, proplists, cluster statuses, errors.

use crate::NodeName;
use crate::formation::FormationError;
use crate::formation::erlang::node_list;
use crate::rpc::RpcError;
use crate::term::Term;

/// Whether `e` says that `m:f` itself is undefined (not some function it called: the
/// top frame of an `undef` stack trace is the missing function).
pub(super) fn undefined(e: &RpcError, m: &str, f: &str) -> bool {
    if !e.is_undef() {
        return false;
    }
    let RpcError::Exception {
        stacktrace: Some(stack),
        ..
    } = e
    else {
        return true; // `rex` gives no stack trace
    };
    match list_items(stack)
        .and_then(|frames| frames.first())
        .and_then(Term::as_tuple)
    {
        Some([module, function, ..]) => module.is_atom(m) && function.is_atom(f),
        _ => true,
    }
}

/// An exception carrying `{error, Reason}` (RabbitMQ throws those) becomes the value,
/// so that it is reported like a returned error; any other failure stays an error.
pub(super) fn thrown_error(e: FormationError) -> Result<Term, FormationError> {
    if let FormationError::Rpc { source, .. } = &e
        && let RpcError::Exception {
            class: crate::rpc::ExceptionClass::Throw,
            reason,
            ..
        } = source.as_ref()
        && matches!(reason.as_tuple(), Some([tag, _]) if tag.is_atom("error"))
    {
        return Ok(reason.clone());
    }
    Err(e)
}

pub(super) fn check_ok(
    step: &'static str,
    node: &NodeName,
    called: &str,
    r: &Term,
) -> Result<(), FormationError> {
    if r.is_atom("ok") {
        Ok(())
    } else {
        Err(FormationError::unexpected(
            step,
            node,
            format!("{called} returned {r}"),
        ))
    }
}

pub(super) fn bad(step: &'static str, node: &NodeName, called: &str, t: &Term) -> FormationError {
    FormationError::unexpected(step, node, format!("{called} answered {t}"))
}

pub(super) fn node_list_or_error(
    step: &'static str,
    node: &NodeName,
    called: &str,
    t: &Term,
) -> Result<Vec<NodeName>, FormationError> {
    node_list(t).ok_or_else(|| bad(step, node, called, t))
}

pub(super) fn sorted(mut nodes: Vec<NodeName>) -> Vec<NodeName> {
    nodes.sort();
    nodes.dedup();
    nodes
}

/// The elements of a proper list (`[]` included).
pub(super) fn list_items(t: &Term) -> Option<&[Term]> {
    match t {
        Term::List(items) => Some(items),
        Term::ByteList(b) if b.is_empty() => Some(&[]),
        _ => None,
    }
}

/// `Key`'s value in a proplist `[{Key, Value}, ...]`.
pub(super) fn proplist_get<'a>(list: &'a Term, key: &str) -> Option<&'a Term> {
    list_items(list)?.iter().find_map(|e| match e.as_tuple() {
        Some([k, v]) if k.is_atom(key) => Some(v),
        _ => None,
    })
}

/// Every member named in a cluster status: `nodes` holds `{disc, [...]}` and
/// `{ram, [...]}`. `None` when the status is not a list.
pub(super) fn status_members(status: &Term) -> Option<Vec<NodeName>> {
    list_items(status)?;
    let mut members = Vec::new();
    if let Some(nodes) = proplist_get(status, "nodes") {
        for entry in list_items(nodes)? {
            if let Some([_, list]) = entry.as_tuple() {
                members.extend(node_list(list)?);
            }
        }
    }
    Some(sorted(members))
}

/// What failed in the answer of a replica clean-up call: the answer itself when it is
/// `{error, _}` or `{timeout, _}`, or each `{Queue, {error, ...}}` of a per-queue list
/// (`rabbit_quorum_queue:shrink_all/1`, `rabbit_stream_queue:delete_all_replicas/1`).
pub(super) fn replica_failures(t: &Term) -> Vec<String> {
    let failed = |t: &Term| matches!(t.as_tuple(), Some([tag, ..]) if tag.is_atom("error") || tag.is_atom("timeout"));
    if failed(t) {
        return vec![t.to_string()];
    }
    list_items(t)
        .unwrap_or_default()
        .iter()
        .filter(|item| matches!(item.as_tuple(), Some([_, result]) if failed(result)))
        .map(Term::to_string)
        .collect()
}

/// Whether a join answered `{error, {inconsistent_cluster, _}}`: the seed's cluster lists
/// the joining node as a member that the node itself does not know (a join cut short
/// once the seed had recorded it).
pub(super) fn inconsistent_cluster(t: &Term) -> bool {
    matches!(
        t.as_tuple(),
        Some([error, reason]) if error.is_atom("error")
            && matches!(reason.as_tuple(), Some([tag, _]) if tag.is_atom("inconsistent_cluster"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::parse_term;

    fn t(s: &str) -> Term {
        parse_term(s).unwrap()
    }

    #[test]
    fn an_inconsistent_cluster_is_told_from_other_join_errors() {
        assert!(inconsistent_cluster(&t(
            "{error,{inconsistent_cluster,\"Node a@h thinks it's clustered with node b@h, but b@h disagrees\"}}"
        )));
        assert!(!inconsistent_cluster(&t(
            "{error,mnesia_unexpectedly_running}"
        )));
        assert!(!inconsistent_cluster(&t("{error,{inconsistent_cluster}}")));
        assert!(!inconsistent_cluster(&t("ok")));
    }

    #[test]
    fn status_members_unions_disc_and_ram() {
        let s = t(
            "[{nodes,[{disc,[b@h,a@h]},{ram,[c@h]}]},{running_nodes,[a@h]},{cluster_name,<<\"x\">>},{partitions,[]}]",
        );
        let names: Vec<String> = status_members(&s)
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["a@h", "b@h", "c@h"]);
        assert_eq!(status_members(&t("[]")).unwrap(), Vec::<NodeName>::new());
        assert!(status_members(&t("{error,x}")).is_none());
    }

    #[test]
    fn only_the_called_function_being_undefined_counts() {
        let node: NodeName = "a@h".parse().unwrap();
        let undef = |stack: &str| RpcError::Exception {
            node: node.clone(),
            module: "rabbit_db_cluster".into(),
            function: "join".into(),
            class: crate::rpc::ExceptionClass::Error,
            reason: Term::atom("undef"),
            stacktrace: Some(t(stack)),
        };
        let missing = undef("[{rabbit_db_cluster,join,[a@h,disc],[]}]");
        assert!(undefined(&missing, "rabbit_db_cluster", "join"));
        let inside = undef("[{rabbit_khepri,add_member,[a,b],[]},{rabbit_db_cluster,join,2,[]}]");
        assert!(!undefined(&inside, "rabbit_db_cluster", "join"));
    }

    #[test]
    fn thrown_errors_become_values() {
        let node: NodeName = "a@h".parse().unwrap();
        let thrown = FormationError::rpc(
            "joining",
            &node,
            RpcError::Exception {
                node: node.clone(),
                module: "rabbit_mnesia".into(),
                function: "join_cluster".into(),
                class: crate::rpc::ExceptionClass::Throw,
                reason: t("{error,{inconsistent_cluster,\"x\"}}"),
                stacktrace: None,
            },
        );
        let v = thrown_error(thrown).unwrap();
        assert_eq!(v.to_string(), "{error,{inconsistent_cluster,\"x\"}}");
    }

    #[test]
    fn replica_failures_are_found_at_the_top_and_per_queue() {
        assert!(replica_failures(&t("ok")).is_empty());
        assert!(replica_failures(&t("[{q1,{ok,2}},{q2,{ok,2}}]")).is_empty());
        assert_eq!(
            replica_failures(&t("{error,nodedown}")),
            ["{error,nodedown}"]
        );
        assert_eq!(replica_failures(&t("{timeout,x}")), ["{timeout,x}"]);
        assert_eq!(
            replica_failures(&t("[{q1,{ok,2}},{q2,{error,2,timeout}}]")),
            ["{q2,{error,2,timeout}}"]
        );
    }
}
