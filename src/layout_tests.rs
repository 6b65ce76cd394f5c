//! The layout the crate keeps: its sans-IO core (codecs, state machines, the connection
//! engine) does no I/O, reads no clock and knows nothing of the layers above it.

use std::path::{Path, PathBuf};

/// The sans-IO sources: files, or folders taken whole. Their tests (`tests.rs`, or files
/// under a `tests` folder) may use anything.
const SANS_IO: &[&str] = &[
    "src/wire.rs",
    "src/cookie.rs",
    "src/node_name.rs",
    "src/term",
    "src/dist",
    "src/epmd/codec.rs",
    "src/epmd/registry.rs",
    "src/handshake/acceptor.rs",
    "src/handshake/digest.rs",
    "src/handshake/flags.rs",
    "src/handshake/initiator.rs",
    "src/handshake/messages.rs",
    "src/node/table.rs",
];

/// What a sans-IO source must not name, outside comments.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "crate::node",
    "crate::rpc",
    "crate::formation",
    "crate::listener",
    "std::net::Tcp",
    "std::thread",
    "Instant::now",
    "SystemTime::now",
];

fn sources(root: &Path, entry: &str) -> Vec<PathBuf> {
    let path = root.join(entry);
    if path.is_file() {
        return vec![path];
    }
    let mut files = Vec::new();
    let mut dirs = vec![path];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "tests") {
                    dirs.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs")
                && p.file_name().is_some_and(|n| n != "tests.rs")
            {
                files.push(p);
            }
        }
    }
    files
}

/// Whether `code` names `word` as a whole path or word (`crate::node_name` does not name
/// `crate::node`).
fn names(code: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(word).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

#[test]
fn names_matches_whole_words_only() {
    assert!(names("use tokio::net;", "tokio"));
    assert!(names("use crate::node::{Node};", "crate::node"));
    assert!(!names("crate::node_name::validate(x)", "crate::node"));
    assert!(!names("let tokio_like = 1;", "tokio"));
}

/// Where `files` name any of `words` outside comments, as `path:line: word`.
fn naming(files: &[PathBuf], words: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in words {
                if names(code, word) {
                    found.push(format!("{}:{}: {word}", file.display(), n + 1));
                }
            }
        }
    }
    found
}

#[test]
fn sans_io_sources_name_no_runtime_socket_clock_or_upper_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files: Vec<PathBuf> = SANS_IO.iter().flat_map(|e| sources(root, e)).collect();
    assert!(files.len() >= 20, "only {} files checked", files.len());
    let found = naming(&files, FORBIDDEN);
    assert!(
        found.is_empty(),
        "sans-IO sources naming I/O:\n{}",
        found.join("\n")
    );
}

/// Lines of a source file without its inline tests (a trailing `#[cfg(test)] mod tests`).
fn lines_without_tests(text: &str) -> usize {
    let code = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    code.lines().count()
}

/// The node layer sits below remote calls, formation, health and the backends: it names
/// none of them (so `rpc` sits on `node` through a narrow API, with no cycle).
#[test]
fn the_node_names_no_layer_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let upper = [
        "crate::rpc",
        "crate::formation",
        "crate::health",
        "crate::backend",
    ];
    let found = naming(&sources(root, "src/node"), &upper);
    assert!(
        found.is_empty(),
        "the node reaches up:\n{}",
        found.join("\n")
    );
}

/// Files a reader can hold: the node, the connection engine and remote calls stay under
/// 1,000 lines each, their tests aside.
#[test]
fn node_engine_and_rpc_files_stay_under_a_thousand_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = sources(root, "src/node");
    files.extend(sources(root, "src/dist"));
    files.push(root.join("src/rpc.rs"));
    let long: Vec<String> = files
        .iter()
        .map(|f| (f, lines_without_tests(&std::fs::read_to_string(f).unwrap())))
        .filter(|(_, n)| *n > 1000)
        .map(|(f, n)| format!("{}: {n} lines", f.display()))
        .collect();
    assert!(
        long.is_empty(),
        "files over 1,000 lines:\n{}",
        long.join("\n")
    );
}

/// The integration suite, two benches and the trial harness need the `testing` feature
/// (`required-features`), and cargo skips a target whose features are missing without a
/// word: this test says so instead.
#[test]
fn the_suites_that_need_the_testing_feature_are_not_skipped() {
    #[cfg(not(feature = "testing"))]
    panic!(
        "the integration suite needs the `testing` feature and cargo skipped it: run \
         scripts/test, or cargo test --all-features"
    );
}

/// One transport type for plain TCP and TLS: outside `tls/`, only the node's transport
/// knows whether TLS is compiled in (besides the configuration and error types that
/// carry a TLS setting or failure).
#[test]
fn tls_is_one_place_of_the_node() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let allowed = ["transport.rs", "builder.rs", "error.rs"];
    let found: Vec<String> = sources(root, "src/node")
        .into_iter()
        .filter(|f| {
            !f.file_name()
                .is_some_and(|n| allowed.iter().any(|a| n == *a))
        })
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .contains("feature = \"tls\"")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(found.is_empty(), "TLS cfg outside the transport: {found:?}");
}
