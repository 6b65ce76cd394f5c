//! The test harness: starts real peers and cleans them up.
#![allow(dead_code)]

use std::path::PathBuf;

/// Finds `binary` on `PATH` (or in OTP's `bin` directory), or panics with what to install.
pub fn require_binary(binary: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push(PathBuf::from("/usr/lib/erlang/bin"));
    dirs.push(PathBuf::from("/usr/sbin"));
    for dir in dirs {
        let candidate = dir.join(binary);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{binary}` is not installed; these tests run against the real thing: \
         apt-get install -y {package}"
    );
}
