//! What the subcommands share: the managed node's name and the cookie, with RabbitMQ's
//! own defaults, and the configuration file.

use std::path::{Path, PathBuf};

use autocluster::conf::RabbitmqConf;
use autocluster::{Cookie, NodeName};

/// Where RabbitMQ keeps the cookie of a packaged broker.
pub const BROKER_COOKIE: &str = "/var/lib/rabbitmq/.erlang.cookie";

/// Where RabbitMQ reads its environment file, unless `RABBITMQ_CONF_ENV_FILE` says.
pub const ENV_FILE: &str = "/etc/rabbitmq/rabbitmq-env.conf";

/// The value of `NODENAME=` in a `rabbitmq-env.conf` (a shell file: the last
/// assignment wins; quotes are removed; `RABBITMQ_NODENAME=` counts too).
pub fn env_file_nodename(text: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line).trim();
        let value = line
            .strip_prefix("NODENAME=")
            .or_else(|| line.strip_prefix("RABBITMQ_NODENAME="));
        if let Some(v) = value {
            let v = v.split('#').next().unwrap_or("").trim();
            let v = v.trim_matches(|c| c == '"' || c == '\'');
            if !v.is_empty() {
                found = Some(v.to_owned());
            }
        }
    }
    found
}

/// The managed node's name, as RabbitMQ picks its own: `--node`, else
/// `RABBITMQ_NODENAME`, else `NODENAME` of rabbitmq-env.conf, else `rabbit`; a name
/// without a host gets `@` and the short host name, as RabbitMQ does.
pub fn node_name(
    flag: Option<&str>,
    env_nodename: Option<&str>,
    env_file_text: Option<&str>,
    short_host: &str,
) -> Result<NodeName, String> {
    let name = flag
        .map(str::to_owned)
        .or_else(|| env_nodename.filter(|v| !v.is_empty()).map(str::to_owned))
        .or_else(|| env_file_text.and_then(env_file_nodename))
        .unwrap_or_else(|| "rabbit".to_owned());
    let full = if name.contains('@') {
        name
    } else {
        format!("{name}@{short_host}")
    };
    full.parse::<NodeName>()
        .map_err(|e| format!("node name {full:?}: {e}"))
}

/// This machine's host name, short (up to the first dot), as RabbitMQ names nodes.
pub fn short_host() -> String {
    let full = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned());
    full.split('.').next().unwrap_or("localhost").to_owned()
}

/// The managed node's name from the flag and this process's environment.
pub fn resolve_node(flag: Option<&str>) -> Result<NodeName, String> {
    let env = std::env::var("RABBITMQ_NODENAME").ok();
    let env_file = std::env::var("RABBITMQ_CONF_ENV_FILE").unwrap_or_else(|_| ENV_FILE.to_owned());
    let text = std::fs::read_to_string(&env_file).ok();
    node_name(flag, env.as_deref(), text.as_deref(), &short_host())
}

/// The cookie files tried when none is given, in order.
pub fn cookie_candidates(home: Option<&Path>) -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from(BROKER_COOKIE)];
    if let Some(home) = home {
        paths.push(home.join(".erlang.cookie"));
    }
    paths
}

/// The cookie: `--cookie`, else `--cookie-file`, else the broker's cookie file, else
/// `$HOME/.erlang.cookie`. Errors name the files tried, never the cookie.
pub fn resolve_cookie(value: Option<&str>, file: Option<&Path>) -> Result<Cookie, String> {
    if let Some(value) = value {
        return Cookie::new(value).map_err(|e| format!("--cookie: {e}"));
    }
    if let Some(file) = file {
        return Cookie::from_file(file).map_err(|e| format!("{}: {e}", file.display()));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut tried = Vec::new();
    for path in cookie_candidates(home.as_deref()) {
        match Cookie::from_file(&path) {
            Ok(cookie) => return Ok(cookie),
            Err(e) => tried.push(format!("{}: {e}", path.display())),
        }
    }
    Err(format!(
        "no cookie: give --cookie-file (or --cookie); tried {}",
        tried.join("; ")
    ))
}

/// Reads the configuration file and refuses one with an unsupported or unknown
/// `cluster_formation` key, listing every such key.
pub fn read_config(path: &Path) -> Result<RabbitmqConf, String> {
    let conf = RabbitmqConf::read(path).map_err(|e| e.to_string())?;
    let problems = conf.problems();
    if !problems.is_empty() {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return Err(lines.join("\n"));
    }
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_name_follows_rabbitmq_defaults() {
        let n = |flag, env, file, host| node_name(flag, env, file, host).unwrap().to_string();
        assert_eq!(n(None, None, None, "web1"), "rabbit@web1");
        assert_eq!(n(None, None, Some("NODENAME=hare\n"), "web1"), "hare@web1");
        assert_eq!(
            n(None, Some("bunny@h2"), Some("NODENAME=hare\n"), "web1"),
            "bunny@h2"
        );
        assert_eq!(n(Some("r@flag"), Some("bunny@h2"), None, "web1"), "r@flag");
        assert_eq!(
            n(
                None,
                None,
                Some("# comment\nexport NODENAME=\"a@b\"\nNODENAME='c@d' # last\n"),
                "x"
            ),
            "c@d"
        );
        assert!(node_name(Some("bad name@"), None, None, "x").is_err());
    }

    #[test]
    fn the_cookie_files_are_the_brokers_then_home() {
        assert_eq!(
            cookie_candidates(Some(Path::new("/home/op"))),
            vec![
                PathBuf::from("/var/lib/rabbitmq/.erlang.cookie"),
                PathBuf::from("/home/op/.erlang.cookie")
            ]
        );
    }

    #[test]
    fn a_missing_cookie_names_the_files_tried_and_no_cookie() {
        let dir = std::env::temp_dir().join(format!("autocluster-cookie-{}", std::process::id()));
        let e = resolve_cookie(None, Some(&dir.join("none"))).unwrap_err();
        assert!(e.contains("none"), "{e}");
    }
}
