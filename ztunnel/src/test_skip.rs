//! How a test that cannot run on this machine says so (not root, a tool missing), instead of
//! passing quietly.
//!
//! [`skip`] prints `SKIPPED <test>: <why>` and, when `ZTUNNEL_SKIP_LOG` names a file, appends
//! the same line to it: `cargo xtask test` sets it and lists every skipped test at the end of
//! the run. Under CI (`CI` set to anything but empty, `0` or `false`) a skip is a failure: a CI
//! run must never pass on tests that did not run.

use std::io::Write;

/// Records that `test` did not run because of `why`; panics under CI.
pub fn skip(test: &str, why: &str) {
    let line = format!("SKIPPED {test}: {why}");
    if running_in_ci() {
        panic!("{line}; CI requires every test to run (install what it needs, run as root)");
    }
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("ZTUNNEL_SKIP_LOG") {
        let appended =
            std::fs::OpenOptions::new().create(true).append(true).open(&path).and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            eprintln!("cannot record the skip in {}: {e}", std::path::Path::new(&path).display());
        }
    }
}

/// True when the effective user is root; otherwise records the skip of `test` (see [`skip`]).
pub fn require_root(test: &str, why: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    skip(test, &format!("needs root ({why})"));
    false
}

fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "FALSE" | "False"))
}
