//! The README stays a landing page, and every code block of the README and of the
//! chapters under `docs/` names its language, so that a Rust block is compiled as a doc
//! test (`src/lib.rs`, `doc_files`) and no other block is taken for Rust.

/// The README and every chapter, by path.
const FILES: &[(&str, &str)] = &[
    ("README.md", include_str!("../README.md")),
    ("docs/agent.md", include_str!("../docs/agent.md")),
    ("docs/backends.md", include_str!("../docs/backends.md")),
    (
        "docs/configuration.md",
        include_str!("../docs/configuration.md"),
    ),
    ("docs/deploy.md", include_str!("../docs/deploy.md")),
    ("docs/design.md", include_str!("../docs/design.md")),
    ("docs/examples.md", include_str!("../docs/examples.md")),
    ("docs/formation.md", include_str!("../docs/formation.md")),
    ("docs/rabbitmq.md", include_str!("../docs/rabbitmq.md")),
    ("docs/security.md", include_str!("../docs/security.md")),
    ("docs/testing.md", include_str!("../docs/testing.md")),
];

#[test]
fn readme_is_at_most_25_000_bytes() {
    let size = include_str!("../README.md").len();
    assert!(
        size <= 25_000,
        "README.md is {size} bytes; reference material belongs in docs/"
    );
}

#[test]
fn every_code_block_names_its_language() {
    for (path, text) in FILES {
        let mut open = false;
        for (i, line) in text.lines().enumerate() {
            let Some(info) = line.trim_start().strip_prefix("```") else {
                continue;
            };
            if open {
                open = false;
                continue;
            }
            open = true;
            let info = info.trim();
            assert!(
                !info.is_empty(),
                "{path}:{}: a code block without a language (```rust, ```sh, ```text, ...)",
                i + 1
            );
            assert!(
                !(info.starts_with("rust") && info.contains("ignore")),
                "{path}:{}: a Rust block must be compiled (no_run, not ignore)",
                i + 1
            );
        }
        assert!(!open, "{path}: a code block is not closed");
    }
}

/// docs/ holds exactly the chapters listed above (and compiled in `src/lib.rs`).
#[test]
fn every_chapter_is_checked() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/docs");
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| format!("docs/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|p| p.ends_with(".md"))
        .collect();
    found.sort();
    let listed: Vec<&str> = FILES.iter().skip(1).map(|(p, _)| *p).collect();
    assert_eq!(found, listed, "a chapter under docs/ is missing from FILES");
}
