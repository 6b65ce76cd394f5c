//! Backend options shared by the `discover` and `health` examples, derived from the
//! crate's backend registry (`autocluster::backend::registry`): every setting a backend
//! reads is a flag, its map key with dashes (`etcd_endpoints` → `--etcd-endpoints`,
//! repeatable for a list), so a new backend needs nothing here.

use std::collections::BTreeMap;

use autocluster::backend::registry::{self, BackendKind};
use autocluster::backend::{self, Backend, BackendError};

/// The backend options, for usage texts: the backends and their flags, from the registry.
pub fn backend_usage() -> String {
    let names: Vec<String> = registry::kinds()
        .iter()
        .map(|kind| {
            std::iter::once(kind.name())
                .chain(kind.aliases().iter().copied())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    let mut usage = format!(
        "  backend: --backend ({}) | --from-env (AUTOCLUSTER_TYPE, ...)\n           \
         --set KEY=VALUE (any key of the backend, RabbitMQ's cluster_formation.* included)",
        names.join(" | ")
    );
    for kind in registry::kinds() {
        usage.push_str(&format!("\n  {}", kind.name()));
        if !kind.is_built()
            && let Some(feature) = kind.feature()
        {
            usage.push_str(&format!(" (build with --features {feature})"));
        }
        usage.push(':');
        let mut line = String::new();
        for setting in kind.settings() {
            let flag = format!(
                " {}{}",
                flag_of(setting.key()),
                if setting.is_list() { "..." } else { "" }
            );
            if line.len() + flag.len() > 76 {
                usage.push_str(&format!("\n   {line}"));
                line.clear();
            }
            line.push_str(&flag);
        }
        usage.push_str(&format!("\n   {line}"));
    }
    usage
}

/// `etcd_node_ttl` → `--etcd-node-ttl`.
fn flag_of(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// Backend options, as `discover` and `health` take them.
#[derive(Debug, Default)]
pub struct BackendArgs {
    kind: Option<&'static BackendKind>,
    from_env: bool,
    /// The settings given, by map key; a list's entries comma-joined.
    map: BTreeMap<String, String>,
}

impl BackendArgs {
    /// Takes `flag` (reading its value with `value`) when it is a backend option;
    /// `Ok(false)` when it is not one.
    pub fn take(
        &mut self,
        flag: &str,
        value: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<bool, String> {
        match flag {
            "--backend" => {
                let name = value("--backend")?;
                let kind = registry::by_name(&name)
                    .ok_or_else(|| format!("--backend {name:?} is not a backend"))?;
                self.kind = Some(kind);
            }
            "--from-env" => self.from_env = true,
            "--set" => {
                let pair = value("--set")?;
                let (key, v) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("--set {pair:?} is not KEY=VALUE"))?;
                self.insert(key.trim(), v.to_owned(), false);
            }
            _ => {
                let Some(key) = flag.strip_prefix("--").map(|f| f.replace('-', "_")) else {
                    return Ok(false);
                };
                let Some(setting) = registry::kinds()
                    .iter()
                    .flat_map(|kind| kind.settings())
                    .find(|s| s.key() == key)
                else {
                    return Ok(false);
                };
                let v = value(flag)?;
                self.insert(setting.key(), v, setting.is_list());
            }
        }
        Ok(true)
    }

    fn insert(&mut self, key: &str, value: String, list: bool) {
        match self.map.get_mut(key) {
            Some(existing) if list => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                self.map.insert(key.to_owned(), value);
            }
        }
    }

    /// Whether a backend was chosen.
    pub fn is_set(&self) -> bool {
        self.kind.is_some() || self.from_env
    }

    /// Builds the chosen backend: from the environment with `--from-env`, else from the
    /// flags given, checked as a configuration map is (a flag of another backend is an
    /// error that says so).
    pub async fn build(&self) -> Result<Box<dyn Backend>, BackendError> {
        match self.kind {
            _ if self.from_env => backend::from_env(),
            Some(kind) => kind.from_map(&self.map),
            None => Err(BackendError::config("--backend", "choose a backend")),
        }
    }
}
