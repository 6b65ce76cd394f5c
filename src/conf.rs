//! RabbitMQ's own configuration file, `rabbitmq.conf`, read for its `cluster_formation.*`
//! keys: the configuration an operator already has.
//!
//! [`RabbitmqConf::parse`] reads the file's format (cuttlefish's: `key = value` lines, `#`
//! starting a comment) without touching the disk, keeps the `cluster_formation.*` keys
//! with their line numbers, and leaves every other key (listeners, `default_user`, ...)
//! alone. Each kept key is one of three kinds ([`classify`]):
//!
//! * **read**: a key of a backend's settings table (through the
//!   [backend registry](crate::backend::registry)) or of the formation engine, with
//!   RabbitMQ's name and meaning;
//! * **unsupported**: a key of RabbitMQ 4.3.5's schema files that the crate does not
//!   read (`cluster_formation.aws.*`, `proxy.*`, `consul.svc_id`, ...): an error
//!   `unsupported: KEY (FILE:LINE)` with what to do;
//! * **unknown**: anything else, a misspelling most often: `unknown: KEY (FILE:LINE)`.
//!
//! [`RabbitmqConf::problems`] lists the last two kinds; [`RabbitmqConf::backend`] and
//! [`RabbitmqConf::formation`] refuse a file that has any.
//!
//! ```
//! use autocluster::conf::RabbitmqConf;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let conf = RabbitmqConf::parse(
//!     "rabbitmq.conf",
//!     "listeners.tcp.default = 5672\n\
//!      cluster_formation.peer_discovery_backend = etcd\n\
//!      cluster_formation.etcd.endpoints.1 = 127.0.0.1:2379 # the local etcd\n\
//!      cluster_formation.aws.region = eu-west-1\n\
//!      cluster_formation.etcd.node_tll = 30\n",
//! )?;
//! let problems: Vec<String> = conf.problems().iter().map(|p| p.to_string()).collect();
//! assert_eq!(problems[0].split(" (").next(), Some("unsupported: cluster_formation.aws.region"));
//! assert!(problems[0].contains("(rabbitmq.conf:4)"));
//! assert_eq!(problems[1], "unknown: cluster_formation.etcd.node_tll (rabbitmq.conf:5)");
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::backend::{self, Backend, BackendError};
use crate::formation::FormationConfig;

/// The `cluster_formation.*` keys of RabbitMQ 4.3.5's schema files (`rabbit.schema`, the
/// peer discovery plugins' schemas and the `ssl_options` partial they include), one
/// pattern a line; `$name` stands for any one segment.
pub const RABBITMQ_4_3_5_KEYS: &str = include_str!("conf/rabbitmq-4.3.5-keys.txt");

/// The longest file read (1 MiB): a `rabbitmq.conf` is a few kilobytes.
pub const MAX_FILE_LEN: usize = 1 << 20;

/// The prefix of the keys read.
const PREFIX: &str = "cluster_formation.";

/// One `cluster_formation.*` key of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, as written.
    pub key: String,
    /// The value, without surrounding spaces or a trailing comment.
    pub value: String,
    /// Its line, from 1.
    pub line: usize,
}

/// What is wrong with a configuration file; every variant names the file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfError {
    /// The file cannot be read.
    #[error("cannot read {file}: {detail}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        detail: String,
    },
    /// A line is not `key = value`, or a key is set twice.
    #[error("{file}:{line}: {detail}")]
    Syntax {
        /// The file.
        file: String,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// A key of RabbitMQ 4.3.5's schema that the crate does not read.
    #[error("unsupported: {key} ({file}:{line}): {hint}")]
    Unsupported {
        /// The key.
        key: String,
        /// The file.
        file: String,
        /// The line, from 1.
        line: usize,
        /// What to do instead.
        hint: String,
    },
    /// A `cluster_formation.*` key that neither RabbitMQ 4.3.5 nor the crate knows.
    #[error("unknown: {key} ({file}:{line})")]
    Unknown {
        /// The key.
        key: String,
        /// The file.
        file: String,
        /// The line, from 1.
        line: usize,
    },
    /// A key's value is wrong, or the backend refused the settings.
    #[error("{file}:{line}: {key}: {detail}")]
    Invalid {
        /// The file.
        file: String,
        /// The line, from 1 (0 when no one line is to blame).
        line: usize,
        /// The key.
        key: String,
        /// What is wrong.
        detail: String,
    },
}

/// How the crate treats a `cluster_formation.*` key ([`classify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// The crate reads it.
    Read,
    /// A key of RabbitMQ 4.3.5 that the crate does not read, with what to do instead.
    Unsupported(String),
    /// Neither RabbitMQ 4.3.5's nor the crate's.
    Unknown,
}

/// Whether `pattern` (a schema key, `$name` matching one segment) matches `key`.
fn matches_pattern(pattern: &str, key: &str) -> bool {
    let mut p = pattern.split('.');
    let mut k = key.split('.');
    loop {
        match (p.next(), k.next()) {
            (None, None) => return true,
            (Some(ps), Some(ks)) if ps.starts_with('$') || ps == ks => {}
            _ => return false,
        }
    }
}

/// What to do instead of an unsupported key.
fn unsupported_hint(key: &str) -> String {
    let rest = key.strip_prefix(PREFIX).unwrap_or(key);
    let hint = if rest.starts_with("aws.") {
        "the AWS backend is not part of this crate; list the nodes through DNS, Consul, etcd or a static list"
    } else if rest.starts_with("proxy.") {
        "HTTP proxies are not supported: the backends connect directly"
    } else if rest.starts_with("lock_retry_") || rest == "internal_lock_retries" {
        "the startup lock's wait is the backend's own setting (etcd.lock_wait_time, consul.lock_wait_time); RabbitMQ 4.3 no longer reads this key"
    } else if rest.contains("ssl_options.") || rest.starts_with("k8s.tls.") {
        "this TLS option is not supported; see the backend's settings for the ones it takes"
    } else if rest.starts_with("consul.svc_") {
        "the Consul backend names the service and its address itself (consul.svc, consul.svc_addr)"
    } else if rest == "etcd.endpoints" {
        "give the endpoints as numbered keys, cluster_formation.etcd.endpoints.1 = HOST:PORT"
    } else {
        "the crate does not read this key"
    };
    hint.to_owned()
}

/// How the crate treats the `cluster_formation.*` key `key`.
pub fn classify(key: &str) -> KeyKind {
    if backend::config::reads_rabbitmq_key(key) {
        return KeyKind::Read;
    }
    let in_schema = RABBITMQ_4_3_5_KEYS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .any(|pattern| matches_pattern(pattern, key));
    if in_schema {
        KeyKind::Unsupported(unsupported_hint(key))
    } else {
        KeyKind::Unknown
    }
}

/// The `cluster_formation.*` keys of a `rabbitmq.conf`. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RabbitmqConf {
    file: String,
    entries: Vec<Entry>,
}

impl RabbitmqConf {
    /// Parses `text`, the contents of `file` (named in every error).
    pub fn parse(file: impl Into<String>, text: &str) -> Result<RabbitmqConf, ConfError> {
        let file = file.into();
        let syntax = |line: usize, detail: String| ConfError::Syntax {
            file: file.clone(),
            line,
            detail,
        };
        if text.len() > MAX_FILE_LEN {
            return Err(syntax(
                0,
                format!(
                    "the file is {} bytes long (limit {MAX_FILE_LEN})",
                    text.len()
                ),
            ));
        }
        let mut entries: Vec<Entry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            // A `#` starts a comment, on its own line or after a value.
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let Some((key, value)) = content.split_once('=') else {
                return Err(syntax(
                    line,
                    format!("expected `key = value`, found {content:?}"),
                ));
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(syntax(line, format!("{key:?} is not a key")));
            }
            if !key.starts_with(PREFIX) {
                continue;
            }
            if let Some(first) = entries.iter().find(|e| e.key == key) {
                return Err(syntax(
                    line,
                    format!("{key} is set twice (lines {} and {line})", first.line),
                ));
            }
            entries.push(Entry {
                key: key.to_owned(),
                value: value.to_owned(),
                line,
            });
        }
        Ok(RabbitmqConf { file, entries })
    }

    /// Reads and parses the file at `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<RabbitmqConf, ConfError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let read = |detail: String| ConfError::Read {
            file: file.clone(),
            detail,
        };
        let len = std::fs::metadata(path)
            .map_err(|e| read(e.to_string()))?
            .len();
        if len > MAX_FILE_LEN as u64 {
            return Err(read(format!(
                "the file is {len} bytes long (limit {MAX_FILE_LEN})"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
        RabbitmqConf::parse(file, &text)
    }

    /// The file's name, as given.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The `cluster_formation.*` keys, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// The unsupported and unknown keys, in file order.
    pub fn problems(&self) -> Vec<ConfError> {
        let mut problems = Vec::new();
        for e in &self.entries {
            match classify(&e.key) {
                KeyKind::Read => {}
                KeyKind::Unsupported(hint) => problems.push(ConfError::Unsupported {
                    key: e.key.clone(),
                    file: self.file.clone(),
                    line: e.line,
                    hint,
                }),
                KeyKind::Unknown => problems.push(ConfError::Unknown {
                    key: e.key.clone(),
                    file: self.file.clone(),
                    line: e.line,
                }),
            }
        }
        problems
    }

    fn first_problem(&self) -> Result<(), ConfError> {
        match self.problems().into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    fn invalid(&self, key: &str, detail: impl Into<String>) -> ConfError {
        ConfError::Invalid {
            file: self.file.clone(),
            line: self.get(key).map_or(0, |e| e.line),
            key: key.to_owned(),
            detail: detail.into(),
        }
    }

    /// Builds the backend that `cluster_formation.peer_discovery_backend` selects
    /// ([`backend::from_map`]), from the keys read. Refuses a file with an unsupported
    /// or unknown key.
    pub fn backend(&self) -> Result<Box<dyn Backend>, ConfError> {
        self.first_problem()?;
        let map: BTreeMap<String, String> = self
            .entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        backend::from_map(&map).map_err(|e| match e {
            BackendError::Config { key, detail } => self.invalid(&key, detail),
            other => self.invalid(
                "cluster_formation.peer_discovery_backend",
                other.to_string(),
            ),
        })
    }

    /// `base` with what the file says of formation, in RabbitMQ's meanings:
    ///
    /// * `discovery_retry_limit` (a positive integer or `unlimited`): the attempts
    ///   ([`FormationConfig::max_attempts`]); `discovery_retry_interval` (milliseconds):
    ///   the first delay between them ([`FormationConfig::backoff_initial`]);
    /// * `registration.enabled`: whether the node registers ([`FormationConfig::register`]);
    /// * `node_cleanup.interval` (seconds) and `node_cleanup.only_log_warning`: cleanup,
    ///   which runs, as in RabbitMQ, warn-only unless that key is `false`
    ///   ([`FormationConfig::cleanup`]);
    /// * `node_type`: `disc` (the only kind the crate joins as).
    ///
    /// `randomized_startup_delay_range.*` (RabbitMQ before 3.13), `internal_lock_retries`
    /// and `target_cluster_size_hint` are accepted and have no effect: the startup lock
    /// replaces the delay, and the crate takes no size hint.
    pub fn formation(&self, base: FormationConfig) -> Result<FormationConfig, ConfError> {
        self.first_problem()?;
        let mut cfg = base;
        cfg.cleanup.enabled = true;
        let positive =
            |key: &str, value: &str| -> Result<u64, ConfError> {
                value.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    self.invalid(key, format!("{value:?} is not a positive integer"))
                })
            };
        let boolean = |key: &str, value: &str| -> Result<bool, ConfError> {
            match value {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(self.invalid(key, format!("{other:?} is not true or false"))),
            }
        };
        for e in &self.entries {
            let rest = e.key.strip_prefix(PREFIX).unwrap_or(&e.key);
            let v = e.value.as_str();
            match rest {
                "discovery_retry_limit" if v == "unlimited" => cfg.max_attempts = u32::MAX,
                "discovery_retry_limit" => {
                    cfg.max_attempts = u32::try_from(positive(&e.key, v)?).unwrap_or(u32::MAX)
                }
                "discovery_retry_interval" => {
                    cfg.backoff_initial = Duration::from_millis(positive(&e.key, v)?);
                    cfg.backoff_max = cfg.backoff_max.max(cfg.backoff_initial);
                }
                "registration.enabled" => cfg.register = boolean(&e.key, v)?,
                "node_cleanup.interval" => {
                    cfg.cleanup.interval = Duration::from_secs(positive(&e.key, v)?)
                }
                "node_cleanup.only_log_warning" => cfg.cleanup.warn_only = boolean(&e.key, v)?,
                "node_type" if v == "disc" || v == "disk" => {}
                "node_type" => {
                    return Err(self.invalid(
                        &e.key,
                        format!("{v:?}: only disc nodes are formed (RabbitMQ 4 has no RAM nodes)"),
                    ));
                }
                _ => {}
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A concrete key for a schema pattern: each `$name` becomes `1`.
    fn instance(pattern: &str) -> String {
        pattern
            .split('.')
            .map(|s| if s.starts_with('$') { "1" } else { s })
            .collect::<Vec<_>>()
            .join(".")
    }

    #[test]
    fn every_key_of_rabbitmq_4_3_5_is_read_or_unsupported_never_unknown() {
        let mut unsupported = Vec::new();
        let patterns: Vec<&str> = RABBITMQ_4_3_5_KEYS
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert!(patterns.len() > 100, "{}", patterns.len());
        for pattern in &patterns {
            let key = instance(pattern);
            match classify(&key) {
                KeyKind::Read => {}
                KeyKind::Unsupported(_) => unsupported.push(pattern.to_string()),
                KeyKind::Unknown => panic!("{pattern} is unknown"),
            }
        }
        // The keys the issue of the agent names among them.
        for named in [
            "cluster_formation.lock_retry_limit",
            "cluster_formation.lock_retry_timeout",
            "cluster_formation.proxy.http_proxy",
            "cluster_formation.proxy.https_proxy",
            "cluster_formation.proxy.proxy_exclusions.$name",
            "cluster_formation.aws.region",
            "cluster_formation.consul.svc_id",
            "cluster_formation.consul.svc_addr_nic",
            "cluster_formation.consul.svc_addr_use_nodename",
        ] {
            assert!(
                unsupported.iter().any(|u| u == named),
                "{named}: {unsupported:?}"
            );
        }
        // Read: every backend key RabbitMQ has and the crate takes.
        for read in [
            "cluster_formation.registration.enabled",
            "cluster_formation.peer_discovery_backend",
            "cluster_formation.etcd.endpoints.1",
            "cluster_formation.etcd.node_ttl",
            "cluster_formation.consul.svc_addr",
            "cluster_formation.k8s.service_name",
            "cluster_formation.dns.hostname",
            "cluster_formation.classic_config.nodes.1",
            "cluster_formation.node_cleanup.only_log_warning",
        ] {
            assert_eq!(classify(read), KeyKind::Read, "{read}");
        }
    }

    #[test]
    fn a_misspelled_or_made_up_key_is_unknown() {
        for key in [
            "cluster_formation.etcd.node_tll",
            "cluster_formation.autocluster.new_cluster_enabled",
            "cluster_formation.k8s",
            "cluster_formation.etcd.endpoints.1.2",
        ] {
            assert_eq!(classify(key), KeyKind::Unknown, "{key}");
        }
    }

    #[test]
    fn only_cluster_formation_keys_are_kept_with_their_lines() {
        let conf = RabbitmqConf::parse(
            "r.conf",
            "# a comment\n\
             listeners.tcp.default = 5672\n\
             \n\
             default_user = guest\n\
             cluster_formation.peer_discovery_backend = classic_config # inline\n\
             cluster_formation.classic_config.nodes.1 = rabbit@a\n",
        )
        .unwrap();
        assert_eq!(
            conf.entries(),
            &[
                Entry {
                    key: "cluster_formation.peer_discovery_backend".into(),
                    value: "classic_config".into(),
                    line: 5
                },
                Entry {
                    key: "cluster_formation.classic_config.nodes.1".into(),
                    value: "rabbit@a".into(),
                    line: 6
                },
            ]
        );
        assert!(conf.problems().is_empty());
        assert_eq!(conf.backend().unwrap().name(), "static");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = RabbitmqConf::parse("r.conf", "a = 1\nnot a setting\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "r.conf:2: expected `key = value`, found \"not a setting\""
        );
        let e = RabbitmqConf::parse(
            "r.conf",
            "cluster_formation.node_type = disc\ncluster_formation.node_type = disc\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("set twice (lines 1 and 2)"), "{e}");
        let big = "#".repeat(MAX_FILE_LEN + 1);
        assert!(RabbitmqConf::parse("r.conf", &big).is_err());
    }

    #[test]
    fn formation_settings_take_rabbitmq_meanings() {
        let conf = RabbitmqConf::parse(
            "r.conf",
            "cluster_formation.peer_discovery_backend = classic_config\n\
             cluster_formation.discovery_retry_limit = 30\n\
             cluster_formation.discovery_retry_interval = 1000\n\
             cluster_formation.registration.enabled = false\n\
             cluster_formation.node_cleanup.interval = 90\n\
             cluster_formation.node_cleanup.only_log_warning = false\n",
        )
        .unwrap();
        let cfg = conf.formation(FormationConfig::default()).unwrap();
        assert_eq!(cfg.max_attempts, 30);
        assert_eq!(cfg.backoff_initial, Duration::from_secs(1));
        assert!(!cfg.register);
        assert!(cfg.cleanup.enabled && !cfg.cleanup.warn_only);
        assert_eq!(cfg.cleanup.interval, Duration::from_secs(90));

        let bad = RabbitmqConf::parse("r.conf", "\ncluster_formation.node_type = ram\n").unwrap();
        let e = bad.formation(FormationConfig::default()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("r.conf:2: cluster_formation.node_type:"),
            "{e}"
        );
    }

    #[test]
    fn a_backend_error_names_the_line_of_its_key() {
        let conf = RabbitmqConf::parse(
            "r.conf",
            "cluster_formation.peer_discovery_backend = etcd\n\
             cluster_formation.classic_config.nodes.1 = rabbit@a\n",
        )
        .unwrap();
        let e = conf.backend().unwrap_err();
        assert!(
            e.to_string()
                .starts_with("r.conf:2: cluster_formation.classic_config.nodes.1:"),
            "{e}"
        );
    }
}
