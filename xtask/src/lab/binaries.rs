//! Building what the demo and the benchmark run: the release `ztunnel` and the release
//! `testapp` (the traffic tool of the tests crate: every server and client the pods run), with
//! cargo's progress on the terminal and the executables' paths taken from cargo's own report.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, bail};

use crate::workspace;

/// Paths of the built executables.
#[derive(Clone, Debug)]
pub(crate) struct Binaries {
    pub(crate) ztunnel: PathBuf,
    pub(crate) testapp: PathBuf,
}

/// Two builds, not one: building both packages together would unify their features, and the
/// tests crate may enable testing features of the daemon that must never reach the binary the
/// demo runs.
const ZTUNNEL_BUILD: &str = "cargo build --release -p ztunnel --bin ztunnel";
const TESTAPP_BUILD: &str = "cargo build --release -p ztunnel-tests --bin testapp";

pub(crate) fn build() -> anyhow::Result<Binaries> {
    let ztunnel = build_one(ZTUNNEL_BUILD, "ztunnel")?;
    let testapp = build_one(TESTAPP_BUILD, "testapp")?;
    Ok(Binaries { ztunnel, testapp })
}

/// Runs one `cargo build` line (printed first) and returns the path of the executable `name`
/// cargo reports.
pub(crate) fn build_one(command: &str, name: &str) -> anyhow::Result<PathBuf> {
    println!("    {command}");
    let output = workspace::cargo()
        .args(command.split_whitespace().skip(1))
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo build")?;
    if !output.status.success() {
        bail!("{command} failed ({})", output.status);
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == name)
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("{command} did not report a {name} executable"))
}
