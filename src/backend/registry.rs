//! The table of backends: every backend's name, aliases, settings, crate feature and
//! constructor, in one place.
//!
//! Whatever picks a backend by name goes through this table: [`from_map`](super::from_map)
//! and [`from_env`](super::from_env), the strict key checks of the settings parser (a key
//! of another backend is reported as such), and the command-line examples, whose flags
//! and help texts are derived from [`kinds`]. A backend whose crate feature is not enabled
//! is still listed, so that its keys are recognised and selecting it says which feature
//! to enable; [`BackendKind::is_built`] tells them apart.
//!
//! ```
//! use std::collections::BTreeMap;
//! use autocluster::backend::registry;
//!
//! let kind = registry::by_name("classic_config").expect("a known backend");
//! assert_eq!(kind.name(), "static");
//! assert!(kind.is_built());
//! assert!(kind.settings().iter().any(|s| s.key() == "static_nodes"));
//!
//! let map: BTreeMap<String, String> =
//!     [("static_nodes".to_string(), "rabbit@a,rabbit@b".to_string())].into();
//! let backend = kind.from_map(&map)?;
//! assert_eq!(backend.name(), "static");
//!
//! // Every backend of the crate, built in this build or not.
//! let names: Vec<&str> = registry::kinds().iter().map(|k| k.name()).collect();
//! assert!(names.contains(&"memory") && names.contains(&"etcd"));
//! # Ok::<(), autocluster::backend::BackendError>(())
//! ```
//!
//! # Adding a backend
//!
//! A backend's module declares its settings table and its `KIND` (a [`BackendKind`]
//! whose constructor is compiled only with the backend's feature), and one line of the
//! table in `src/backend/mod.rs` lists it. Its feature goes in `Cargo.toml`, one row in
//! `docs/configuration.md` links to its settings table, and one call of the conformance
//! suite in `tests/integration/conformance.rs` runs every check against it.

use std::collections::BTreeMap;
use std::fmt;

use super::config::{self, Values};
use super::{Backend, BackendError};

pub use super::config::Setting;

/// Builds a backend from the settings found for it.
pub(crate) type BuildFn = fn(Values) -> Result<Box<dyn Backend>, BackendError>;

/// One backend of the crate, as configuration names it.
#[derive(Clone, Copy)]
pub struct BackendKind {
    /// The canonical name: `"etcd"`, `"static"`, ...
    pub(crate) name: &'static str,
    /// Other accepted names (rabbitmq-autocluster's and RabbitMQ's).
    pub(crate) aliases: &'static [&'static str],
    /// The crate feature that builds it; `None`: always built.
    pub(crate) feature: Option<&'static str>,
    /// The settings it reads, besides the general ones.
    pub(crate) settings: &'static [Setting],
    /// The constructor; `None` when the feature is not enabled in this build.
    pub(crate) build: Option<BuildFn>,
}

impl fmt::Debug for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendKind")
            .field("name", &self.name)
            .field("aliases", &self.aliases)
            .field("feature", &self.feature)
            .field("built", &self.is_built())
            .finish_non_exhaustive()
    }
}

impl PartialEq for BackendKind {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for BackendKind {}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl BackendKind {
    /// The canonical name, as [`Backend::name`] returns it.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Other names configuration may use for it (`k8s`, `classic_config`, ...). Every
    /// name is also accepted in RabbitMQ's module form (`rabbit_peer_discovery_etcd`) and
    /// in any case.
    pub fn aliases(&self) -> &'static [&'static str] {
        self.aliases
    }

    /// The crate feature that builds it, or `None` when it is always built.
    pub fn feature(&self) -> Option<&'static str> {
        self.feature
    }

    /// Whether this build of the crate includes it (its feature is enabled).
    pub fn is_built(&self) -> bool {
        self.build.is_some()
    }

    /// The settings it reads, besides the general ones (`backend` /
    /// `AUTOCLUSTER_TYPE`).
    pub fn settings(&self) -> &'static [Setting] {
        self.settings
    }

    /// Whether `name` names this backend: the canonical name or an alias, in any case,
    /// with or without RabbitMQ's `rabbit_peer_discovery_` prefix.
    pub fn is_named(&self, name: &str) -> bool {
        let lower = name.trim().to_ascii_lowercase();
        let bare = lower
            .strip_prefix("rabbit_peer_discovery_")
            .unwrap_or(&lower);
        bare == self.name || self.aliases.contains(&bare)
    }

    /// Builds the backend from a configuration map: its own keys, the general keys and
    /// the keys reserved for the formation engine. Any other key is an error naming it.
    pub fn from_map(
        &self,
        map: &BTreeMap<String, String>,
    ) -> Result<Box<dyn Backend>, BackendError> {
        let build = self.constructor("backend")?;
        build(config::collect_map(map, self.name, self.settings)?)
    }

    /// Builds the backend from environment variables (`AUTOCLUSTER_TYPE` may be among
    /// them, and must then select this backend). An unknown `AUTOCLUSTER_*` variable is an
    /// error naming it.
    pub fn from_vars<I>(&self, vars: I) -> Result<Box<dyn Backend>, BackendError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let build = self.constructor("AUTOCLUSTER_TYPE")?;
        build(config::collect_env(vars, self.name, self.settings)?)
    }

    /// [`from_vars`](Self::from_vars) over the process environment.
    pub fn from_env(&self) -> Result<Box<dyn Backend>, BackendError> {
        self.from_vars(config::process_env()?)
    }

    fn constructor(&self, source: &str) -> Result<BuildFn, BackendError> {
        self.build.ok_or_else(|| {
            BackendError::config(
                source,
                match self.feature {
                    Some(feature) => format!(
                        "the {} backend is not available in this build (enable the crate feature \"{feature}\")",
                        self.name
                    ),
                    None => format!("the {} backend is not available in this build", self.name),
                },
            )
        })
    }
}

/// Every backend of the crate, whether built or not, in the order help texts list them.
pub fn kinds() -> &'static [BackendKind] {
    super::KINDS
}

/// The backend `name` names (canonical name or alias, any case, with or without
/// RabbitMQ's `rabbit_peer_discovery_` prefix), built or not.
pub fn by_name(name: &str) -> Option<&'static BackendKind> {
    kinds().iter().find(|kind| kind.is_named(name))
}

/// Backends that RabbitMQ has and this crate does not: naming one says so.
const NOT_PROVIDED: &[&str] = &["aws"];

/// [`by_name`], with the error an operator reads when the name is wrong; `source` is the
/// key or variable that gave it.
pub(crate) fn select(source: &str, name: &str) -> Result<&'static BackendKind, BackendError> {
    if let Some(kind) = by_name(name) {
        return Ok(kind);
    }
    let lower = name.trim().to_ascii_lowercase();
    let bare = lower
        .strip_prefix("rabbit_peer_discovery_")
        .unwrap_or(&lower);
    let detail = if NOT_PROVIDED.contains(&bare) {
        format!("{name:?}: the {bare} backend is not supported by autocluster")
    } else {
        format!("{name:?} is not a backend ({})", names_for_humans())
    };
    Err(BackendError::config(source, detail))
}

/// `memory, static or classic_config, ..., dns`: the names, for error messages and help.
pub(crate) fn names_for_humans() -> String {
    kinds()
        .iter()
        .map(|kind| {
            std::iter::once(kind.name)
                .chain(kind.aliases.iter().copied())
                .collect::<Vec<_>>()
                .join(" or ")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_in_every_spelling() {
        for (s, name) in [
            ("etcd", "etcd"),
            ("rabbit_peer_discovery_etcd", "etcd"),
            ("classic_config", "static"),
            ("rabbit_peer_discovery_classic_config", "static"),
            ("K8S", "kubernetes"),
            ("rabbit_peer_discovery_k8s", "kubernetes"),
            ("memory", "memory"),
            ("in-memory", "memory"),
            ("dns", "dns"),
            ("consul", "consul"),
        ] {
            assert_eq!(by_name(s).map(BackendKind::name), Some(name), "{s}");
        }
        let err = select("backend", "aws").unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
        let err = select("backend", "etdc").unwrap_err();
        assert!(err.to_string().contains("kubernetes or k8s"), "{err}");
    }

    #[test]
    fn names_are_unique_and_every_setting_is_known() {
        let mut names: Vec<&str> = kinds()
            .iter()
            .flat_map(|k| std::iter::once(k.name).chain(k.aliases.iter().copied()))
            .collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a name or alias is used twice");
        for kind in kinds() {
            assert!(kind.is_built() || kind.feature.is_some(), "{kind}");
        }
    }
}
