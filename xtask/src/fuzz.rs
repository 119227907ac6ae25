//! `cargo xtask fuzz`: a short, time-bounded run of every cargo-fuzz target in `fuzz/`
//! (xDS Address and Authorization decoding and conversion). libFuzzer needs the nightly
//! toolchain; without it the command fails and says so. cargo-fuzz is installed from
//! crates.io when missing.

use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};
use clap::Args;

use crate::workspace;

const TARGETS: [&str; 2] = ["address", "authorization"];

#[derive(Debug, Args)]
pub(crate) struct FuzzArgs {
    /// Seconds to run each target.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Run only this target (`address` or `authorization`).
    #[arg(long)]
    target: Option<String>,
}

pub(crate) fn main(args: FuzzArgs) -> anyhow::Result<ExitCode> {
    let toolchains = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("cannot run `rustup toolchain list` (is rustup installed?)")?;
    if !String::from_utf8_lossy(&toolchains.stdout).lines().any(|l| l.starts_with("nightly")) {
        bail!(
            "fuzzing needs the nightly toolchain (libFuzzer and sanitizers); install it with `rustup toolchain install nightly`"
        );
    }
    let have_cargo_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_cargo_fuzz {
        println!("==> cargo-fuzz not found; installing it: cargo install cargo-fuzz --locked");
        let status = Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]).status()?;
        if !status.success() {
            bail!("`cargo install cargo-fuzz --locked` failed ({status})");
        }
    }
    let fuzz_dir = workspace::root().join("fuzz");
    let targets: Vec<&str> = match &args.target {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!("unknown fuzz target {t:?}; known: {TARGETS:?}"),
        None => TARGETS.to_vec(),
    };
    for target in targets {
        println!("==> cargo +nightly fuzz run {target} -- -max_total_time={}", args.seconds);
        let status = Command::new("cargo")
            .current_dir(&fuzz_dir)
            // The outer (stable) cargo's settings must not leak into the nightly build.
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO")
            .env_remove("RUSTC")
            .env_remove("RUSTDOC")
            .args(["+nightly", "fuzz", "run", target, "--"])
            .arg(format!("-max_total_time={}", args.seconds))
            .status()
            .with_context(|| format!("cannot run cargo fuzz for {target}"))?;
        if !status.success() {
            eprintln!("fuzz target {target} failed ({status}); reproducers are in fuzz/artifacts/{target}/");
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}
