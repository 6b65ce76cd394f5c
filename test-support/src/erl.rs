//! Real `erl` nodes for a test, with a way to evaluate Erlang expressions on them.
//!
//! The node runs `erl -noshell` with an `-eval` loop that reads one expression per line
//! from standard input, evaluates it, and prints `@@OK <result>` or `@@ERR <class:reason>`
//! on one line (`~0tp`). It never starts its own epmd (`-start_epmd false`): the test
//! provides one (a real [`Epmd`](super::Epmd) or the crate's server) through
//! `ERL_EPMD_PORT`.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

use super::env::peers;
use super::process::{OutputLog, kill_process_group, unique_name};

/// The evaluation loop run by every node (one line of Erlang).
const EVAL_LOOP: &str = r#"
io:put_chars(["@@READY ", atom_to_list(node()), $\n]),
Loop = fun Loop() ->
    case io:get_line("") of
        eof -> erlang:halt(0);
        {error, _} -> erlang:halt(0);
        Line ->
            Reply = try
                {ok, Toks, _} = erl_scan:string(Line),
                {ok, Exprs} = erl_parse:parse_exprs(Toks),
                {value, V, _} = erl_eval:exprs(Exprs, erl_eval:new_bindings()),
                io_lib:format("@@OK ~0tp", [V])
            catch C:E -> io_lib:format("@@ERR ~0tp", [{C, E}])
            end,
            io:put_chars([Reply, $\n]),
            Loop()
    end
end,
Loop().
"#;

/// How to start an [`ErlNode`].
#[derive(Debug, Clone)]
pub struct ErlOptions {
    /// Prefix of the alive name; a unique suffix is added.
    pub name_prefix: String,
    /// The magic cookie.
    pub cookie: String,
    /// `-name` (long names) instead of `-sname`. The host is `127.0.0.1`, or `::1` with
    /// `inet6`.
    pub long_names: bool,
    /// `-proto_dist inet6_tcp`: listen and register over IPv6 (OTP then talks to EPMD on
    /// `::1`).
    pub inet6: bool,
    /// The EPMD port the node uses (`ERL_EPMD_PORT`).
    pub epmd_port: u16,
    /// More `erl` arguments, e.g. `["-kernel", "net_ticktime", "4"]`.
    pub extra_args: Vec<String>,
    /// How long to wait for the node to come up.
    pub start_timeout: Duration,
}

impl ErlOptions {
    /// A short-named IPv4 node using the EPMD on `epmd_port`.
    pub fn new(epmd_port: u16) -> Self {
        ErlOptions {
            name_prefix: "t".into(),
            cookie: "autocluster_test_cookie".into(),
            long_names: false,
            inet6: false,
            epmd_port,
            extra_args: Vec::new(),
            start_timeout: Duration::from_secs(30),
        }
    }

    /// Sets the alive-name prefix.
    pub fn name_prefix(mut self, prefix: &str) -> Self {
        self.name_prefix = prefix.into();
        self
    }

    /// Sets the cookie.
    pub fn cookie(mut self, cookie: &str) -> Self {
        self.cookie = cookie.into();
        self
    }

    /// Long names (`-name`).
    pub fn long_names(mut self) -> Self {
        self.long_names = true;
        self
    }

    /// IPv6 distribution (`-proto_dist inet6_tcp`).
    pub fn inet6(mut self) -> Self {
        self.inet6 = true;
        self
    }

    /// Adds `erl` arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// A running `erl` node, killed (with its whole process group) on drop.
pub struct ErlNode {
    node: String,
    alive: String,
    stdin: ChildStdin,
    replies: mpsc::UnboundedReceiver<String>,
    log: OutputLog,
    child: Child,
    pgid: u32,
    dir: tempfile::TempDir,
}

impl ErlNode {
    /// Starts a node and waits until it is distributed (registered with EPMD).
    /// Panics with the node's output if it does not come up.
    pub async fn start(opts: ErlOptions) -> ErlNode {
        match Self::try_start(opts).await {
            Ok(node) => node,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`start`](Self::start), returning the node's output as the error when it does
    /// not come up (e.g. because it could not register with EPMD).
    pub async fn try_start(opts: ErlOptions) -> Result<ErlNode, String> {
        let alive = unique_name(&opts.name_prefix);
        // Its own working directory: crash dumps and any file it writes stay apart.
        let dir = tempfile::Builder::new()
            .prefix(&format!("erl_{alive}_"))
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        let mut cmd = peers().command("erl", "erlang-nox", Some(dir.path()));
        if opts.long_names {
            let host = if opts.inet6 { "::1" } else { "127.0.0.1" };
            cmd.args(["-name", &format!("{alive}@{host}")]);
        } else {
            cmd.args(["-sname", &alive]);
        }
        if opts.inet6 {
            cmd.args(["-proto_dist", "inet6_tcp"]);
        }
        cmd.args([
            "-setcookie",
            &opts.cookie,
            "-noshell",
            "-start_epmd",
            "false",
        ])
        .args(&opts.extra_args)
        .args(["-eval", EVAL_LOOP])
        .env("ERL_EPMD_PORT", opts.epmd_port.to_string())
        .env_remove("ERL_FLAGS")
        .env_remove("ERL_AFLAGS")
        .env_remove("ERL_ZFLAGS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start erl ({}): {e}", peers().name()));
        let pgid = child.id().expect("erl has a pid");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = OutputLog::default();
        let (tx, mut replies) = mpsc::unbounded_channel();
        {
            let log = log.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.starts_with("@@") {
                        let _ = tx.send(line);
                    } else {
                        log.push(line);
                    }
                }
            });
        }
        {
            let log = log.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    log.push(format!("stderr: {line}"));
                }
            });
        }
        let ready = tokio::time::timeout(opts.start_timeout, replies.recv()).await;
        let node = match ready {
            Ok(Some(line)) if line.starts_with("@@READY ") => line["@@READY ".len()..].to_owned(),
            other => {
                kill_process_group(pgid);
                // Let the output readers drain what the node printed before it died.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(format!(
                    "erl node {alive} did not start ({other:?}); its output:\n{}",
                    log.dump()
                ));
            }
        };
        Ok(ErlNode {
            node,
            alive,
            stdin,
            replies,
            log,
            child,
            pgid,
            dir,
        })
    }

    /// The full node name, e.g. `t_123_4@vm`.
    pub fn name(&self) -> &str {
        &self.node
    }

    /// The OS process id of the VM (`erl` execs the emulator, so it keeps the pid).
    pub fn pid(&self) -> u32 {
        self.pgid
    }

    /// The alive part, e.g. `t_123_4`.
    pub fn alive(&self) -> &str {
        &self.alive
    }

    /// The node's working directory (removed on drop).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The node's output so far (everything but evaluation results).
    pub fn output(&self) -> String {
        self.log.dump()
    }

    /// Evaluates Erlang expressions (a trailing `.` is added if missing) and returns the
    /// result printed with `~0tp`, or `Err` with the `{Class, Reason}` it raised.
    /// Panics if the node does not answer within 30 s.
    pub async fn try_eval(&mut self, expr: &str) -> Result<String, String> {
        let mut line = expr.replace('\n', " ");
        if !line.trim_end().ends_with('.') {
            line.push('.');
        }
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("node {} is gone ({e}):\n{}", self.node, self.output()));
        let reply = tokio::time::timeout(Duration::from_secs(30), self.replies.recv()).await;
        match reply {
            Ok(Some(reply)) => {
                if let Some(ok) = reply.strip_prefix("@@OK ") {
                    Ok(ok.to_owned())
                } else {
                    Err(reply.trim_start_matches("@@ERR ").to_owned())
                }
            }
            other => panic!(
                "node {} gave no result for {expr:?} ({other:?}); its output:\n{}",
                self.node,
                self.output()
            ),
        }
    }

    /// Like [`try_eval`](Self::try_eval), panicking if the expression raised.
    pub async fn eval(&mut self, expr: &str) -> String {
        match self.try_eval(expr).await {
            Ok(v) => v,
            Err(e) => panic!("{expr:?} raised {e} on {}", self.node),
        }
    }

    /// The distribution port the node listens on.
    pub async fn dist_port(&mut self) -> u16 {
        let expr = format!(
            "{{ok, Names}} = erl_epmd:names(), {{_, Port}} = lists:keyfind(\"{}\", 1, Names), Port",
            self.alive
        );
        let port = self.eval(&expr).await;
        port.parse().expect("a port number")
    }

    /// Stops the node with `init:stop()` and waits (up to 20 s) for it to exit.
    pub async fn stop(mut self) {
        let _ = self.stdin.write_all(b"init:stop().\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
    }
}

impl Drop for ErlNode {
    fn drop(&mut self) {
        kill_process_group(self.pgid);
        let _ = self.child.start_kill();
    }
}
