//! Reading backend settings from a key/value map (a config file) or from environment
//! variables, with every unknown key an error that names it.
//!
//! Each backend declares its settings as a table of [`Setting`]s: the crate's own map key
//! (the lower-case form of a rabbitmq-autocluster setting, e.g. `etcd_node_ttl`), the
//! environment variables that set it (rabbitmq-autocluster's own name such as
//! `ETCD_NODE_TTL`, and the same under the crate's prefix, `AUTOCLUSTER_ETCD_NODE_TTL`),
//! and RabbitMQ's `cluster_formation.*` keys for it. [`collect_map`] and [`collect_env`]
//! turn a map or an environment into [`Values`], rejecting:
//!
//! * in a map: any key that is neither this backend's, nor a general key, nor a key
//!   reserved for the formation engine (a key of another backend is reported as such);
//! * in the environment: any variable starting with `AUTOCLUSTER_` that no backend and no
//!   part of the crate knows. Other variables (`ETCDCTL_*`, `KUBERNETES_*`, etcd's own
//!   `ETCD_*` server flags) are not ours to judge and are left alone.
//!
//! A backend's table is known everywhere through its entry in the [registry](super::registry).

use std::collections::BTreeMap;
use std::time::Duration;

use super::BackendError;

/// The crate's own environment prefix: an unknown variable under it is an error.
pub const ENV_PREFIX: &str = "AUTOCLUSTER_";

/// One setting a backend reads: its map key, its environment variables and its RabbitMQ
/// `cluster_formation.*` keys, as a backend's [`settings`](super::registry::BackendKind::settings)
/// list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The crate's map key (rabbitmq-autocluster's setting name where it has one).
    pub(crate) key: &'static str,
    /// Environment variables, rabbitmq-autocluster's name first where it has one.
    pub(crate) env: &'static [&'static str],
    /// RabbitMQ `cluster_formation.*` keys; one ending in `.$index` takes numbered entries
    /// (`cluster_formation.etcd.endpoints.1`, `.2`, ...).
    pub(crate) rabbitmq: &'static [&'static str],
    /// Whether the setting is a list (comma-separated in a single value, or numbered
    /// entries).
    pub(crate) list: bool,
}

impl Setting {
    pub(crate) const fn new(
        key: &'static str,
        env: &'static [&'static str],
        rabbitmq: &'static [&'static str],
    ) -> Self {
        Setting {
            key,
            env,
            rabbitmq,
            list: false,
        }
    }

    pub(crate) const fn list(mut self) -> Self {
        self.list = true;
        self
    }

    /// The crate's map key (rabbitmq-autocluster's setting name where it has one, e.g.
    /// `etcd_node_ttl`).
    pub fn key(&self) -> &'static str {
        self.key
    }

    /// The environment variables that set it, rabbitmq-autocluster's name first where it
    /// has one (`ETCD_NODE_TTL`, `AUTOCLUSTER_ETCD_NODE_TTL`).
    pub fn env(&self) -> &'static [&'static str] {
        self.env
    }

    /// RabbitMQ's `cluster_formation.*` keys for it; one ending in `.$index` takes
    /// numbered entries (`cluster_formation.etcd.endpoints.1`, `.2`, ...).
    pub fn rabbitmq_keys(&self) -> &'static [&'static str] {
        self.rabbitmq
    }

    /// Whether it takes several values: comma-separated in one value, or numbered entries.
    pub fn is_list(&self) -> bool {
        self.list
    }

    /// Whether map key `k` sets this setting; `Some(index)` for a numbered entry.
    fn matches_map_key(&self, k: &str) -> Option<Option<u64>> {
        if k == self.key {
            return Some(None);
        }
        for r in self.rabbitmq {
            if let Some(prefix) = r.strip_suffix(".$index") {
                if let Some(rest) = k.strip_prefix(prefix).and_then(|r| r.strip_prefix('.'))
                    && let Ok(index) = rest.parse::<u64>()
                {
                    return Some(Some(index));
                }
            } else if *r == k {
                return Some(None);
            }
        }
        None
    }
}

/// Settings every backend accepts.
pub(crate) const GENERAL: &[Setting] = &[
    // Which backend: validated by `backend::from_map` / `from_env`, and checked by each
    // backend's own `from_map` against its name.
    Setting::new(
        "backend",
        &["AUTOCLUSTER_TYPE"],
        &["cluster_formation.peer_discovery_backend"],
    ),
];

/// Settings owned by other parts of the crate (the formation engine): accepted and
/// ignored by backends, so that one config map or environment can configure everything.
/// They are rabbitmq-autocluster's general settings and RabbitMQ's general
/// `cluster_formation.*` keys.
pub(crate) const RESERVED: &[Setting] = &[
    Setting::new("autocluster_failure", &["AUTOCLUSTER_FAILURE"], &[]),
    Setting::new(
        "startup_delay",
        &["AUTOCLUSTER_DELAY"],
        &[
            "cluster_formation.randomized_startup_delay_range.min",
            "cluster_formation.randomized_startup_delay_range.max",
        ],
    ),
    Setting::new("cluster_cleanup", &["AUTOCLUSTER_CLEANUP"], &[]),
    Setting::new("autocluster_log_level", &["AUTOCLUSTER_LOG_LEVEL"], &[]),
    Setting::new(
        "cleanup_interval",
        &["CLEANUP_INTERVAL", "AUTOCLUSTER_CLEANUP_INTERVAL"],
        &["cluster_formation.node_cleanup.interval"],
    ),
    Setting::new(
        "cleanup_warn_only",
        &["CLEANUP_WARN_ONLY", "AUTOCLUSTER_CLEANUP_WARN_ONLY"],
        &["cluster_formation.node_cleanup.only_log_warning"],
    ),
    Setting::new("node_type", &[], &["cluster_formation.node_type"]),
    Setting::new(
        "discovery_retry_limit",
        &[],
        &["cluster_formation.discovery_retry_limit"],
    ),
    Setting::new(
        "discovery_retry_interval",
        &[],
        &["cluster_formation.discovery_retry_interval"],
    ),
    Setting::new(
        "internal_lock_retries",
        &[],
        &["cluster_formation.internal_lock_retries"],
    ),
    Setting::new(
        "target_cluster_size_hint",
        &[],
        &["cluster_formation.target_cluster_size_hint"],
    ),
    Setting::new(
        "registration_enabled",
        &[],
        &["cluster_formation.registration.enabled"],
    ),
];

/// Whether some part of the crate reads the RabbitMQ `cluster_formation.*` key `key`: a
/// setting of any backend (built in this build or not), a general key, or a key of the
/// formation engine.
pub(crate) fn reads_rabbitmq_key(key: &str) -> bool {
    let known = |settings: &[Setting]| {
        settings
            .iter()
            .any(|s| s.key != key && s.matches_map_key(key).is_some())
    };
    known(GENERAL) || known(RESERVED) || all_backends().any(|(_, settings)| known(settings))
}

/// Every backend's settings, by backend name: how a key of another backend is recognised.
fn all_backends() -> impl Iterator<Item = (&'static str, &'static [Setting])> {
    super::registry::kinds()
        .iter()
        .map(|kind| (kind.name(), kind.settings()))
}

/// Environment prefixes claimed by backends not written yet (their variables are not
/// "unknown"). Every planned backend exists now, so none.
pub(crate) const FUTURE_ENV_PREFIXES: &[&str] = &[];

/// Where a value came from: the key or variable exactly as given, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub source: String,
    pub value: String,
}

/// A list setting as given: one comma-separated value, or numbered entries.
#[derive(Debug, Clone)]
enum ListValue {
    Comma(Found),
    Numbered(Vec<(u64, Found)>),
}

/// Generates the `from_map`, `from_env` and `from_vars` constructors of a backend's
/// configuration type `$ty`, which has a `from_values(Values)` constructor, in a module
/// with `NAME` and `SETTINGS` constants. `$what` names the result in the docs.
macro_rules! settings_constructors {
    ($ty:ty, $what:literal) => {
        #[doc = concat!($what, " configured from a map (a configuration file's keys; see the module docs): an unknown or misspelled key is an error naming it.")]
        pub fn from_map(
            map: &std::collections::BTreeMap<String, String>,
        ) -> Result<$ty, crate::backend::BackendError> {
            Self::from_values(crate::backend::config::collect_map(map, NAME, SETTINGS)?)
        }

        #[doc = concat!($what, " configured from the process environment: an unknown `AUTOCLUSTER_*` variable is an error naming it.")]
        pub fn from_env() -> Result<$ty, crate::backend::BackendError> {
            Self::from_vars(crate::backend::config::process_env()?)
        }

        #[doc = concat!($what, " configured from the given environment variables (for tests, and for tools that read variables from elsewhere).")]
        pub fn from_vars<I: IntoIterator<Item = (String, String)>>(
            vars: I,
        ) -> Result<$ty, crate::backend::BackendError> {
            Self::from_values(crate::backend::config::collect_env(vars, NAME, SETTINGS)?)
        }
    };
}
pub(crate) use settings_constructors;

/// The settings found for one backend.
#[derive(Debug, Default, Clone)]
pub(crate) struct Values {
    single: BTreeMap<&'static str, Found>,
    lists: BTreeMap<&'static str, ListValue>,
}

impl Values {
    /// Where `key`'s value came from (the map key or variable name as given), or the key
    /// itself when it was not given.
    pub(crate) fn source(&self, key: &str) -> String {
        self.get(key)
            .map(|f| f.source.clone())
            .unwrap_or_else(|| key.to_owned())
    }

    fn insert(
        &mut self,
        setting: &Setting,
        index: Option<u64>,
        found: Found,
    ) -> Result<(), BackendError> {
        if setting.list {
            let conflict = |other: &Found| {
                BackendError::config(
                    &found.source,
                    format!(
                        "{} is also set by {}; set only one of them",
                        setting.key, other.source
                    ),
                )
            };
            match (self.lists.get_mut(setting.key), index) {
                (None, None) => {
                    self.lists.insert(setting.key, ListValue::Comma(found));
                }
                (None, Some(index)) => {
                    self.lists
                        .insert(setting.key, ListValue::Numbered(vec![(index, found)]));
                }
                (Some(ListValue::Numbered(entries)), Some(index)) => {
                    if let Some((_, other)) = entries.iter().find(|(i, _)| *i == index) {
                        return Err(conflict(other));
                    }
                    entries.push((index, found));
                }
                (Some(ListValue::Comma(other)), _) => return Err(conflict(other)),
                (Some(ListValue::Numbered(entries)), None) => {
                    return Err(match entries.first() {
                        Some((_, other)) => conflict(other),
                        None => BackendError::config(&found.source, "conflicting list entries"),
                    });
                }
            }
            return Ok(());
        }
        if let Some(other) = self.single.get(setting.key) {
            if other.value != found.value {
                return Err(BackendError::config(
                    &found.source,
                    format!(
                        "{:?} conflicts with {} = {:?}; set only one of them",
                        found.value, other.source, other.value
                    ),
                ));
            }
            return Ok(());
        }
        self.single.insert(setting.key, found);
        Ok(())
    }

    /// The raw value of a single setting.
    pub fn get(&self, key: &str) -> Option<&Found> {
        self.single.get(key)
    }

    /// A string value, trimmed, that must not be empty.
    pub fn string(&self, key: &str) -> Result<Option<String>, BackendError> {
        match self.get(key) {
            None => Ok(None),
            Some(found) => {
                let value = found.value.trim();
                if value.is_empty() {
                    Err(BackendError::config(&found.source, "must not be empty"))
                } else {
                    Ok(Some(value.to_owned()))
                }
            }
        }
    }

    /// A value parsed with `FromStr`.
    pub fn parse<T: std::str::FromStr>(
        &self,
        key: &str,
        what: &str,
    ) -> Result<Option<T>, BackendError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(None),
            Some(found) => found.value.trim().parse::<T>().map(Some).map_err(|e| {
                BackendError::config(
                    &found.source,
                    format!("{:?} is not {what}: {e}", found.value),
                )
            }),
        }
    }

    /// A duration in seconds (decimals allowed, e.g. `0.5`), which must be positive.
    pub fn seconds(&self, key: &str) -> Result<Option<Duration>, BackendError> {
        match self.get(key) {
            None => Ok(None),
            Some(found) => parse_seconds(&found.value)
                .map(Some)
                .map_err(|detail| BackendError::config(&found.source, detail)),
        }
    }

    /// A list setting's entries in order (numbered entries sorted by number), each with
    /// its source; empty entries of a comma-separated value are skipped.
    pub fn list(&self, key: &str) -> Vec<Found> {
        match self.lists.get(key) {
            None => Vec::new(),
            Some(ListValue::Comma(found)) => found
                .value
                .split(',')
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .map(|part| Found {
                    source: found.source.clone(),
                    value: part.to_owned(),
                })
                .collect(),
            Some(ListValue::Numbered(entries)) => {
                let mut entries = entries.clone();
                entries.sort_by_key(|(i, _)| *i);
                entries.into_iter().map(|(_, f)| f).collect()
            }
        }
    }

    /// The source of a list setting, if given (for error messages).
    pub fn list_source(&self, key: &str) -> Option<String> {
        match self.lists.get(key)? {
            ListValue::Comma(found) => Some(found.source.clone()),
            ListValue::Numbered(entries) => entries.first().map(|(_, f)| f.source.clone()),
        }
    }
}

/// A boolean setting: `true` or `false` (any case).
pub(crate) fn parse_bool(values: &Values, key: &str) -> Result<Option<bool>, BackendError> {
    match values.get(key) {
        None => Ok(None),
        Some(found) => match found.value.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(BackendError::config(
                &found.source,
                format!("{:?} is not true or false", found.value),
            )),
        },
    }
}

/// Parses seconds: `30`, `0.5`; positive and at most a year.
pub(crate) fn parse_seconds(value: &str) -> Result<Duration, String> {
    let v = value.trim();
    let secs: f64 = v
        .parse()
        .map_err(|_| format!("{value:?} is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 365.0 * 24.0 * 3600.0 {
        return Err(format!("{value:?} seconds is out of range (must be > 0)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn find<'a>(settings: &'a [Setting], key: &str) -> Option<(&'a Setting, Option<u64>)> {
    settings
        .iter()
        .find_map(|s| s.matches_map_key(key).map(|index| (s, index)))
}

fn owner_of(key: &str, backend: &str) -> Option<&'static str> {
    all_backends()
        .filter(|(name, _)| *name != backend)
        .find(|(_, settings)| find(settings, key).is_some())
        .map(|(name, _)| name)
}

/// Checks the `backend` selector, if given, against `backend`.
fn check_selector(values: &Values, backend: &str) -> Result<(), BackendError> {
    if let Some(found) = values.get("backend") {
        let kind = super::registry::select(&found.source, &found.value)?;
        if kind.name() != backend {
            return Err(BackendError::config(
                &found.source,
                format!(
                    "selects the {} backend, but these settings are being read for the {backend} backend",
                    kind.name()
                ),
            ));
        }
    }
    Ok(())
}

/// Collects `backend`'s settings from a config map.
pub(crate) fn collect_map(
    map: &BTreeMap<String, String>,
    backend: &'static str,
    own: &[Setting],
) -> Result<Values, BackendError> {
    let mut values = Values::default();
    for (key, value) in map {
        let found = Found {
            source: key.clone(),
            value: value.clone(),
        };
        if let Some((setting, index)) = find(own, key).or_else(|| find(GENERAL, key)) {
            values.insert(setting, index, found)?;
        } else if find(RESERVED, key).is_some() {
            continue;
        } else if let Some(other) = owner_of(key, backend) {
            return Err(BackendError::config(
                key,
                format!(
                    "is a setting of the {other} backend, but the {backend} backend is configured"
                ),
            ));
        } else {
            return Err(BackendError::config(
                key,
                unknown_key_detail(key, backend, own),
            ));
        }
    }
    check_selector(&values, backend)?;
    Ok(values)
}

fn unknown_key_detail(key: &str, backend: &str, own: &[Setting]) -> String {
    let mut detail = format!("unknown key for the {backend} backend");
    if let Some(hint) = unsupported_hint(key) {
        detail = hint;
    } else {
        let keys: Vec<&str> = own.iter().chain(GENERAL).map(|s| s.key).collect();
        detail.push_str(&format!(" (its keys: {})", keys.join(", ")));
    }
    detail
}

/// Known RabbitMQ keys that the crate deliberately does not support.
fn unsupported_hint(key: &str) -> Option<String> {
    if key.starts_with("cluster_formation.etcd.ssl_options.") {
        return Some(
            "this TLS option is not supported; the etcd backend takes cacertfile, certfile, \
             keyfile, verify (verify_peer only) and server_name_indication"
                .into(),
        );
    }
    if key.starts_with("cluster_formation.consul.ssl_options.") {
        return Some(
            "this TLS option is not supported; the Consul backend takes cacertfile, certfile, \
             keyfile and verify (verify_peer only)"
                .into(),
        );
    }
    if key.starts_with("cluster_formation.consul.svc_meta")
        || key.starts_with("cluster_formation.consul.svc_addr_")
    {
        return Some(
            "not supported: the Consul backend publishes the metadata and address of the \
             registration it is given (and svc_addr, when set)"
                .into(),
        );
    }
    if key.starts_with("cluster_formation.k8s.tls.") {
        return Some(
            "this TLS option is not supported; the Kubernetes backend takes the CA bundle \
             (cluster_formation.k8s.tls.cacertfile or cert_path) and always verifies the server"
                .into(),
        );
    }
    None
}

/// Whether `name` is an environment variable that some part of the crate reads.
fn known_env(name: &str) -> bool {
    let in_table = |settings: &[Setting]| settings.iter().any(|s| s.env.contains(&name));
    in_table(GENERAL)
        || in_table(RESERVED)
        || all_backends().any(|(_, settings)| in_table(settings))
        || FUTURE_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Collects `backend`'s settings from environment variables. Unknown `AUTOCLUSTER_*`
/// variables are errors; variables of other backends and other tools are ignored.
pub(crate) fn collect_env<I>(
    vars: I,
    backend: &'static str,
    own: &[Setting],
) -> Result<Values, BackendError>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut values = Values::default();
    let mut vars: Vec<(String, String)> = vars.into_iter().collect();
    vars.sort();
    for (name, value) in vars {
        let setting = own
            .iter()
            .chain(GENERAL)
            .find(|s| s.env.contains(&name.as_str()));
        if let Some(setting) = setting {
            values.insert(
                setting,
                None,
                Found {
                    source: name.clone(),
                    value,
                },
            )?;
        } else if name.starts_with(ENV_PREFIX) && !known_env(&name) {
            return Err(BackendError::config(
                &name,
                "unknown environment variable under the AUTOCLUSTER_ prefix (misspelled?); \
                 see docs/configuration.md for the known names",
            ));
        }
    }
    check_selector(&values, backend)?;
    Ok(values)
}

/// The process environment as UTF-8 pairs; a variable of ours (`AUTOCLUSTER_*`) that is not
/// valid UTF-8 is an error, other non-UTF-8 variables are skipped.
pub(crate) fn process_env() -> Result<Vec<(String, String)>, BackendError> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        match (name.into_string(), value.into_string()) {
            (Ok(name), Ok(value)) => vars.push((name, value)),
            (Ok(name), Err(_)) if name.starts_with(ENV_PREFIX) || known_env(&name) => {
                return Err(BackendError::config(name, "the value is not valid UTF-8"));
            }
            _ => {}
        }
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &[Setting] = &[
        Setting::new(
            "etcd_host",
            &["ETCD_HOST", "AUTOCLUSTER_ETCD_HOST"],
            &["cluster_formation.etcd.host"],
        ),
        Setting::new(
            "etcd_endpoints",
            &["AUTOCLUSTER_ETCD_ENDPOINTS"],
            &["cluster_formation.etcd.endpoints.$index"],
        )
        .list(),
    ];

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn map_keys_in_both_spellings() {
        let values = collect_map(
            &map(&[
                ("cluster_formation.etcd.host", "h1"),
                ("cluster_formation.etcd.endpoints.2", "b:2379"),
                ("cluster_formation.etcd.endpoints.10", "c:2379"),
                ("cluster_formation.etcd.endpoints.1", "a:2379"),
                ("cleanup_interval", "30"),
            ]),
            "etcd",
            OWN,
        )
        .unwrap();
        assert_eq!(values.string("etcd_host").unwrap().as_deref(), Some("h1"));
        let endpoints: Vec<String> = values
            .list("etcd_endpoints")
            .into_iter()
            .map(|f| f.value)
            .collect();
        assert_eq!(endpoints, ["a:2379", "b:2379", "c:2379"]);
    }

    #[test]
    fn unknown_and_conflicting_keys_are_named() {
        let err = collect_map(&map(&[("etcd_ttl", "30")]), "etcd", OWN).unwrap_err();
        assert!(
            matches!(&err, BackendError::Config { key, .. } if key == "etcd_ttl"),
            "{err}"
        );
        let err = collect_map(
            &map(&[("etcd_host", "a"), ("cluster_formation.etcd.host", "b")]),
            "etcd",
            OWN,
        )
        .unwrap_err();
        assert!(err.to_string().contains("conflicts"), "{err}");
        let err = collect_map(&map(&[("static_nodes", "a@b")]), "etcd", OWN).unwrap_err();
        assert!(err.to_string().contains("static backend"), "{err}");
        let err = collect_map(&map(&[("backend", "static")]), "etcd", OWN).unwrap_err();
        assert!(
            err.to_string().contains("selects the static backend"),
            "{err}"
        );
        let err = collect_map(
            &map(&[("cluster_formation.etcd.ssl_options.depth", "3")]),
            "etcd",
            OWN,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
    }

    #[test]
    fn env_rejects_only_our_unknown_variables() {
        let vars = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let values = collect_env(
            vars(&[
                ("ETCD_HOST", "h"),
                ("ETCDCTL_API", "3"),
                ("ETCD_DATA_DIR", "/x"),
                ("KUBERNETES_SERVICE_HOST", "1.2.3.4"),
                ("AUTOCLUSTER_TYPE", "etcd"),
                ("AUTOCLUSTER_FAILURE", "stop"),
                ("AUTOCLUSTER_STATIC_NODES", "a@b"),
                ("AUTOCLUSTER_CONSUL_HOST", "c"),
                ("PATH", "/bin"),
            ]),
            "etcd",
            OWN,
        )
        .unwrap();
        assert_eq!(values.string("etcd_host").unwrap().as_deref(), Some("h"));
        let err = collect_env(vars(&[("AUTOCLUSTER_ETCD_TTL", "30")]), "etcd", OWN).unwrap_err();
        assert!(
            matches!(&err, BackendError::Config { key, .. } if key == "AUTOCLUSTER_ETCD_TTL"),
            "{err}"
        );
        let err = collect_env(
            vars(&[("ETCD_HOST", "a"), ("AUTOCLUSTER_ETCD_HOST", "b")]),
            "etcd",
            OWN,
        )
        .unwrap_err();
        assert!(err.to_string().contains("conflicts"), "{err}");
        let values = collect_env(
            vars(&[("AUTOCLUSTER_ETCD_ENDPOINTS", "a:1, b:2")]),
            "etcd",
            OWN,
        )
        .unwrap();
        let endpoints: Vec<String> = values
            .list("etcd_endpoints")
            .into_iter()
            .map(|f| f.value)
            .collect();
        assert_eq!(endpoints, ["a:1", "b:2"]);
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_seconds(" 0.5 ").unwrap(), Duration::from_millis(500));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("NaN").is_err());
        assert!(parse_seconds("30s").is_err());
    }
}

#[cfg(test)]
mod docs_tests {
    use super::*;

    /// Every name a backend reads is documented: a backend's settings in its module's
    /// documentation (its settings table), the general and reserved ones in
    /// docs/configuration.md.
    #[test]
    fn every_setting_is_documented() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/backend");
        let mut docs = String::from(include_str!("../../docs/configuration.md"));
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for line in text.lines().filter_map(|l| l.strip_prefix("//!")) {
                    docs.push_str(line);
                    docs.push('\n');
                }
            }
        }
        let docs = docs.as_str();
        let tables = all_backends()
            .flat_map(|(_, s)| s.iter())
            .chain(GENERAL)
            .chain(RESERVED);
        for setting in tables {
            assert!(
                docs.contains(&format!("`{}`", setting.key)),
                "{} missing from the backend modules' documentation and docs/configuration.md",
                setting.key
            );
            for name in setting.env.iter().chain(setting.rabbitmq) {
                // `AUTOCLUSTER_X` spellings of a documented `X` are covered by the general
                // rule stated in the docs.
                let covered = name.strip_prefix(ENV_PREFIX).is_some_and(|bare| {
                    setting.env.contains(&bare) && docs.contains(&format!("`{bare}`"))
                });
                assert!(
                    covered || docs.contains(&format!("`{name}`")),
                    "{name} missing from the backend modules' documentation and docs/configuration.md"
                );
            }
            // The docs promise that every variable also has an AUTOCLUSTER_ spelling.
            for name in setting.env.iter().filter(|n| !n.starts_with(ENV_PREFIX)) {
                let prefixed = format!("{ENV_PREFIX}{name}");
                assert!(
                    setting.env.contains(&prefixed.as_str()),
                    "{name} has no {prefixed} spelling"
                );
            }
        }
    }
}
