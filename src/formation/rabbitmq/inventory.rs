//! What a reset would destroy on a RabbitMQ node: its inventory of operator data.

use std::collections::BTreeMap;

use crate::formation::{DataState, FormationError};
use crate::term::Term;

use super::RabbitMq;
use super::reply::{bad, proplist_get};

/// Global runtime parameters that RabbitMQ sets itself (not operator data).
const DEFAULT_GLOBAL_PARAMETERS: &[&str] = &[
    "internal_cluster_id",
    "cluster_tags",
    "imported_definition_hash_value",
];

/// How many names one [`DataState::HasData`] entry lists before "and N more".
const MAX_NAMES: usize = 10;

impl RabbitMq {
    /// Calls a function of the managed node that returns a list, for the data check.
    async fn read_list(
        &self,
        (m, f): (&str, &str),
        args: Vec<Term>,
    ) -> Result<Vec<Term>, FormationError> {
        const STEP: &str = "reading the node's data";
        let t = self
            .call(STEP, &self.node, (m, f), args, self.timeout)
            .await?;
        match t {
            Term::List(items) => Ok(items),
            Term::ByteList(b) if b.is_empty() => Ok(Vec::new()),
            other => Err(bad(STEP, &self.node, &format!("{m}:{f}"), &other)),
        }
    }

    /// Reads what a reset would destroy on the managed node (its application running;
    /// membership of another cluster is the plan's to see, from the inspection).
    pub(super) async fn read_data(&self) -> Result<DataState, FormationError> {
        const STEP: &str = "reading the node's data";
        let node = &self.node;
        let unexpected = |called: &str, t: &Term| bad(STEP, node, called, t);
        let default_vhost = self.app_env("default_vhost").await?;
        let default_vhost = default_vhost.as_deref().unwrap_or("/");
        let default_user = self.app_env("default_user").await?;
        let default_user = default_user.as_deref().unwrap_or("guest");
        let mut found = Vec::new();

        let mut vhosts = Vec::new();
        for v in self
            .read_list(("rabbit_vhost", "list_names"), vec![])
            .await?
        {
            let name = v
                .as_text()
                .ok_or_else(|| unexpected("rabbit_vhost:list_names()", &v))?;
            vhosts.push(name.into_owned());
        }
        let extra: Vec<String> = vhosts
            .iter()
            .filter(|v| *v != default_vhost)
            .cloned()
            .collect();
        if !extra.is_empty() {
            let (one, many) = (
                format!("vhost besides {default_vhost}"),
                format!("vhosts besides {default_vhost}"),
            );
            found.push(listing(&one, &many, None, extra));
        }

        let users: Vec<String> = self
            .read_list(("rabbit_auth_backend_internal", "list_users"), vec![])
            .await?
            .iter()
            .map(|u| prop_text(u, "user"))
            .filter(|u| u != default_user)
            .collect();
        if !users.is_empty() {
            let (one, many) = (
                format!("user besides {default_user}"),
                format!("users besides {default_user}"),
            );
            found.push(listing(&one, &many, None, users));
        }

        let mut queues = Vec::new();
        for q in self
            .read_list(("rabbit_amqqueue", "list_names"), vec![])
            .await?
        {
            queues
                .push(resource(&q).ok_or_else(|| unexpected("rabbit_amqqueue:list_names()", &q))?);
        }
        found.extend(per_vhost("queue", "queues", queues));

        let mut exchanges = Vec::new();
        for x in self
            .read_list(("rabbit_exchange", "list_names"), vec![])
            .await?
        {
            let (vhost, name) =
                resource(&x).ok_or_else(|| unexpected("rabbit_exchange:list_names()", &x))?;
            if !name.is_empty() && !name.starts_with("amq.") {
                exchanges.push((vhost, name));
            }
        }
        found.extend(per_vhost("exchange", "exchanges", exchanges));

        let mut bindings = Vec::new();
        for vhost in &vhosts {
            let args = vec![Term::binary(vhost.as_bytes())];
            for b in self.read_list(("rabbit_binding", "list"), args).await? {
                // #binding{source, key, destination, args}
                let parsed = match b.as_tuple() {
                    Some([_, source, key, destination, ..]) => resource(source)
                        .zip(resource(destination))
                        .map(|((_, src), (_, dst))| (src, key, dst)),
                    _ => None,
                };
                let (src, key, dst) =
                    parsed.ok_or_else(|| unexpected("rabbit_binding:list/1", &b))?;
                if !src.is_empty() {
                    // (The default exchange's bindings are implicit.)
                    let key = key.as_text().unwrap_or_default();
                    bindings.push((vhost.clone(), format!("{src} -> {dst} ({key:?})")));
                }
            }
        }
        found.extend(per_vhost("binding", "bindings", bindings));

        for (function, one, many) in [
            ("list", "policy", "policies"),
            ("list_op", "operator policy", "operator policies"),
        ] {
            let named = self
                .read_list(("rabbit_policy", function), vec![])
                .await?
                .iter()
                .map(|p| (prop_text(p, "vhost"), prop_text(p, "name")))
                .collect();
            found.extend(per_vhost(one, many, named));
        }

        let params = self
            .read_list(("rabbit_runtime_parameters", "list"), vec![])
            .await?
            .iter()
            .map(|p| {
                let name = format!("{}/{}", prop_text(p, "component"), prop_text(p, "name"));
                (prop_text(p, "vhost"), name)
            })
            .collect();
        found.extend(per_vhost("runtime parameter", "runtime parameters", params));

        let globals: Vec<String> = self
            .read_list(("rabbit_runtime_parameters", "list_global"), vec![])
            .await?
            .iter()
            .map(|p| prop_text(p, "name"))
            .filter(|n| !DEFAULT_GLOBAL_PARAMETERS.contains(&n.as_str()))
            .collect();
        if !globals.is_empty() {
            found.push(listing(
                "global parameter",
                "global parameters",
                None,
                globals,
            ));
        }

        Ok(if found.is_empty() {
            DataState::Empty
        } else {
            DataState::HasData(found)
        })
    }
}

fn prop_text(list: &Term, key: &str) -> String {
    match proplist_get(list, key) {
        Some(v) => match (v.as_atom(), v.as_text()) {
            (Some(a), _) => a.as_str().to_owned(),
            (None, Some(s)) => s.into_owned(),
            _ => v.to_string(),
        },
        None => "?".into(),
    }
}

/// `#resource{virtual_host, kind, name}` as `(vhost, name)`.
fn resource(t: &Term) -> Option<(String, String)> {
    match t.as_tuple() {
        Some([tag, vhost, _kind, name]) if tag.is_atom("resource") => {
            Some((vhost.as_text()?.into_owned(), name.as_text()?.into_owned()))
        }
        _ => None,
    }
}

/// `"3 queues in /: a, b, c"`, at most [`MAX_NAMES`] names.
fn listing(one: &str, many: &str, vhost: Option<&str>, mut names: Vec<String>) -> String {
    names.sort();
    let n = names.len();
    let what = if n == 1 { one } else { many };
    let place = vhost.map(|v| format!(" in {v}")).unwrap_or_default();
    let shown: Vec<&str> = names.iter().take(MAX_NAMES).map(String::as_str).collect();
    let more = if n > MAX_NAMES {
        format!(" and {} more", n - MAX_NAMES)
    } else {
        String::new()
    };
    format!("{n} {what}{place}: {}{more}", shown.join(", "))
}

/// One [`listing`] per vhost.
fn per_vhost(one: &str, many: &str, items: Vec<(String, String)>) -> Vec<String> {
    let mut by_vhost: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (vhost, name) in items {
        by_vhost.entry(vhost).or_default().push(name);
    }
    by_vhost
        .into_iter()
        .map(|(vhost, names)| listing(one, many, Some(&vhost), names))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::parse_term;

    fn t(s: &str) -> Term {
        parse_term(s).unwrap()
    }

    #[test]
    fn resources_and_listings() {
        let r: Option<Vec<_>> = [
            "{resource,<<\"/\">>,queue,<<\"a\">>}",
            "{resource,<<\"v\">>,queue,<<\"b\">>}",
        ]
        .iter()
        .map(|q| resource(&t(q)))
        .collect();
        let r = r.unwrap();
        assert!(resource(&t("{resource,<<\"/\">>,queue}")).is_none());
        assert_eq!(r, vec![("/".into(), "a".into()), ("v".into(), "b".into())]);
        assert_eq!(
            per_vhost(
                "queue",
                "queues",
                vec![
                    ("/".into(), "b".into()),
                    ("/".into(), "a".into()),
                    ("v".into(), "c".into())
                ]
            ),
            vec![
                "2 queues in /: a, b".to_owned(),
                "1 queue in v: c".to_owned()
            ]
        );
        let many: Vec<String> = (0..12).map(|i| format!("q{i:02}")).collect();
        assert!(listing("queue", "queues", Some("/"), many).ends_with("q09 and 2 more"));
    }
}
