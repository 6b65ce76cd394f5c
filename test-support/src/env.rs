//! The peer environment: which Erlang/OTP and RabbitMQ the real peers run.
//!
//! * `host`: the machine's own packages (Debian bookworm: OTP 25, RabbitMQ 3.10).
//! * `trixie`: a Debian trixie chroot (OTP 27, RabbitMQ 4.0).
//! * `sid`: a Debian sid chroot (OTP 29, RabbitMQ 4.3).
//!
//! `AUTOCLUSTER_PEERS` names it (default `host`); `scripts/test` runs the suite once per
//! environment. The chroots are built by `scripts/chroots` into
//! `$AUTOCLUSTER_CHROOTS` (default `~/.cache/autocluster/chroots`) and prepared for a run
//! by `scripts/peers-env mount`: `/proc`, `/dev` and the host's `/tmp` mounted inside,
//! `/etc/hosts` copied. With `/tmp` shared, a temporary directory has the same path on
//! both sides, so configuration files and working directories need no translation.
//! Peers in a chroot share the host's network and loopback. Every environment has its
//! own default EPMD port, so that versions never meet in one EPMD by accident (the tests
//! start their own EPMDs on free ports besides).

use std::path::PathBuf;
use std::sync::OnceLock;

use super::process::require_binary;

/// Where the real peers come from.
#[derive(Debug)]
pub enum PeerEnv {
    /// The host's own packages.
    Host,
    /// A Debian chroot.
    Chroot {
        /// `trixie` or `sid`.
        suite: String,
        /// Its root directory.
        root: PathBuf,
    },
}

/// The environment of this test run (`AUTOCLUSTER_PEERS`). Panics, saying what to do,
/// when a chroot is named that is missing or not prepared.
pub fn peers() -> &'static PeerEnv {
    static ENV: OnceLock<PeerEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let name = std::env::var("AUTOCLUSTER_PEERS").unwrap_or_else(|_| "host".into());
        match name.as_str() {
            "" | "host" => PeerEnv::Host,
            "trixie" | "sid" => {
                let cache = std::env::var_os("AUTOCLUSTER_CHROOTS")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| {
                        let home = std::env::var_os("XDG_CACHE_HOME")
                            .map(PathBuf::from)
                            .unwrap_or_else(|| {
                                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                                    .join(".cache")
                            });
                        home.join("autocluster/chroots")
                    });
                let root = cache.join(&name);
                assert!(
                    root.join("usr/bin/erl").exists(),
                    "AUTOCLUSTER_PEERS={name}: no chroot at {}; build it with scripts/chroots {name}",
                    root.display()
                );
                assert!(
                    root.join("proc/self").exists() && root.join("dev/null").exists(),
                    "AUTOCLUSTER_PEERS={name}: {} is not prepared; run scripts/peers-env mount {name}",
                    root.display()
                );
                PeerEnv::Chroot { suite: name, root }
            }
            other => panic!("AUTOCLUSTER_PEERS={other}: expected host, trixie or sid"),
        }
    })
}

impl PeerEnv {
    /// `host`, `trixie` or `sid`.
    pub fn name(&self) -> &str {
        match self {
            PeerEnv::Host => "host",
            PeerEnv::Chroot { suite, .. } => suite,
        }
    }

    /// The OTP release the environment's `erl` runs.
    pub fn otp_release(&self) -> u32 {
        match self.name() {
            "trixie" => 27,
            "sid" => 29,
            _ => 25,
        }
    }

    /// The RabbitMQ version the environment's `rabbitmq-server` runs.
    pub fn rabbitmq_version(&self) -> &'static str {
        match self.name() {
            "trixie" => "4.0.5",
            "sid" => "4.3.6",
            _ => "3.10.8",
        }
    }

    /// The EPMD port peers of this environment use unless told otherwise.
    pub fn default_epmd_port(&self) -> u16 {
        match self.name() {
            "trixie" => 14369,
            "sid" => 24369,
            _ => 4369,
        }
    }

    /// A command that runs `program` (from Debian package `package`) in this
    /// environment, in directory `dir` (a path under `/tmp`, shared with a chroot).
    pub fn command(
        &self,
        program: &str,
        package: &str,
        dir: Option<&std::path::Path>,
    ) -> tokio::process::Command {
        tokio::process::Command::from(self.std_command(program, package, dir))
    }

    /// [`command`](Self::command) for `std::process`.
    pub fn std_command(
        &self,
        program: &str,
        package: &str,
        dir: Option<&std::path::Path>,
    ) -> std::process::Command {
        match self {
            PeerEnv::Host => {
                let mut command = std::process::Command::new(require_binary(program, package));
                if let Some(dir) = dir {
                    command.current_dir(dir);
                }
                command
            }
            PeerEnv::Chroot { suite, root } => {
                let inside = ["usr/bin", "usr/sbin", "usr/lib/erlang/bin", "bin", "sbin"]
                    .iter()
                    .map(|d| PathBuf::from("/").join(d).join(program))
                    .find(|p| root.join(p.strip_prefix("/").unwrap()).exists())
                    .unwrap_or_else(|| {
                        panic!(
                            "`{program}` is not in the {suite} chroot at {}; rebuild it: \
                             rm -rf {0}; scripts/chroots {suite}",
                            root.display()
                        )
                    });
                // chroot(1) starts in `/`: a shell changes to `dir`, then becomes the
                // program (the pid stays the same, for the process-group kills).
                let mut command = std::process::Command::new("chroot");
                command
                    .arg(root)
                    .args(["/bin/sh", "-c", r#"cd "$1" && shift && exec "$@""#, "sh"])
                    .arg(dir.unwrap_or(std::path::Path::new("/")))
                    .arg(inside)
                    .env("ERL_EPMD_PORT", self.default_epmd_port().to_string())
                    .env("HOME", "/root");
                command
            }
        }
    }

    /// Gives `path` (under `/tmp`) to user `rabbitmq` as this environment knows it
    /// (Debian's `rabbitmq-server` switches to that user; a chroot has its own uid).
    pub fn chown_rabbitmq(&self, path: &std::path::Path) {
        let status = match self {
            PeerEnv::Host => std::process::Command::new("chown")
                .args(["-R", "rabbitmq:rabbitmq"])
                .arg(path)
                .status(),
            PeerEnv::Chroot { root, .. } => std::process::Command::new("chroot")
                .arg(root)
                .args(["chown", "-R", "rabbitmq:rabbitmq"])
                .arg(path)
                .status(),
        }
        .expect("chown");
        assert!(
            status.success(),
            "chown -R rabbitmq {} in {}",
            path.display(),
            self.name()
        );
    }
}
