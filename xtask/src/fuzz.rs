//! `cargo xtask fuzz`: a time-bounded run of every cargo-fuzz target in `fuzz/` (each
//! `[[bin]]` of `fuzz/Cargo.toml`: xDS resources, the local config file, the control socket
//! protocol, ...), then one summary line per target with libFuzzer's executions and
//! coverage. `--list` shows the targets. libFuzzer needs the nightly toolchain; without it
//! the command fails and says so. cargo-fuzz is installed from crates.io when missing.
//!
//! Per target, libFuzzer reads and extends `fuzz/corpus/<target>/` (not committed), also
//! reads the committed seeds in `fuzz/seeds/<target>/` and uses `fuzz/dicts/<target>.dict`
//! when they exist. A new target needs nothing here.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};
use clap::Args;

use crate::workspace;

#[derive(Debug, Args)]
pub(crate) struct FuzzArgs {
    /// Seconds to run each target.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Run only this target (see `--list`).
    #[arg(long)]
    target: Option<String>,
    /// List the targets and what each feeds, then exit.
    #[arg(long)]
    list: bool,
}

/// One target: its name and the first line of its file's `//!` documentation.
struct Target {
    name: String,
    about: String,
}

/// What libFuzzer reported at the end of a run.
#[derive(Default)]
struct Summary {
    /// The last status line (`#N DONE cov: C ft: F corp: ...`).
    status: Option<String>,
    /// `Done N runs in S second(s)`.
    done: Option<String>,
}

pub(crate) fn main(args: FuzzArgs) -> anyhow::Result<ExitCode> {
    let fuzz_dir = workspace::root().join("fuzz");
    let all = targets(&fuzz_dir)?;
    if args.list {
        for t in &all {
            println!("{:<16} {}", t.name, t.about);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let chosen: Vec<&Target> = match &args.target {
        Some(name) => match all.iter().find(|t| &t.name == name) {
            Some(t) => vec![t],
            None => bail!("unknown fuzz target {name:?}; known: {}", names(&all)),
        },
        None => all.iter().collect(),
    };
    ensure_tools()?;
    let mut summaries = Vec::new();
    for target in chosen {
        let (ok, summary) = run(&fuzz_dir, &target.name, args.seconds)?;
        if !ok {
            eprintln!("fuzz target {} failed; reproducers are in fuzz/artifacts/{}/", target.name, target.name);
            return Ok(ExitCode::FAILURE);
        }
        summaries.push((target.name.clone(), summary));
    }
    println!("==> fuzz summary ({} s per target)", args.seconds);
    for (name, s) in summaries {
        let done = s.done.unwrap_or_else(|| "no run count reported".into());
        let status = s.status.unwrap_or_else(|| "no coverage reported".into());
        println!("{name:<16} {done}; {status}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The `[[bin]]` targets of `fuzz/Cargo.toml`, in file order.
fn targets(fuzz_dir: &Path) -> anyhow::Result<Vec<Target>> {
    let manifest = fuzz_dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| format!("cannot read {}", manifest.display()))?;
    let mut found = Vec::new();
    let mut in_bin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
            continue;
        }
        let Some(value) = line.strip_prefix("name").map(str::trim_start).and_then(|l| l.strip_prefix('=')) else {
            continue;
        };
        if in_bin {
            let name = value.trim().trim_matches('"').to_string();
            let source = fuzz_dir.join("fuzz_targets").join(format!("{name}.rs"));
            let about = std::fs::read_to_string(&source)
                .ok()
                .and_then(|s| s.lines().find_map(|l| l.strip_prefix("//!").map(|d| d.trim().to_string())))
                .unwrap_or_default();
            found.push(Target { name, about });
        }
    }
    if found.is_empty() {
        bail!("no [[bin]] fuzz targets in {}", manifest.display());
    }
    Ok(found)
}

fn names(targets: &[Target]) -> String {
    targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// Checks for the nightly toolchain and installs cargo-fuzz when missing.
fn ensure_tools() -> anyhow::Result<()> {
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
    Ok(())
}

/// Runs one target for `seconds`, echoing libFuzzer's output; returns whether it passed and
/// what it reported last.
fn run(fuzz_dir: &Path, target: &str, seconds: u64) -> anyhow::Result<(bool, Summary)> {
    let corpus = fuzz_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("cannot create {}", corpus.display()))?;
    let mut corpora: Vec<PathBuf> = vec![corpus];
    let seeds = fuzz_dir.join("seeds").join(target);
    if seeds.is_dir() {
        corpora.push(seeds);
    }
    let mut fuzzer_args = vec![format!("-max_total_time={seconds}")];
    let dict = fuzz_dir.join("dicts").join(format!("{target}.dict"));
    if dict.is_file() {
        fuzzer_args.push(format!("-dict={}", dict.display()));
    }
    let shown: Vec<String> = corpora.iter().map(|p| p.display().to_string()).collect();
    println!("==> cargo +nightly fuzz run {target} {} -- {}", shown.join(" "), fuzzer_args.join(" "));
    let mut child = Command::new("cargo")
        .current_dir(fuzz_dir)
        // The outer (stable) cargo's settings must not leak into the nightly build.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .args(["+nightly", "fuzz", "run", target])
        .args(&corpora)
        .arg("--")
        .args(&fuzzer_args)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run cargo fuzz for {target}"))?;
    let mut summary = Summary::default();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading cargo fuzz output")?;
            eprintln!("{line}");
            if line.starts_with('#') && line.contains(" cov: ") {
                summary.status = Some(line.clone());
            } else if line.starts_with("Done ") && line.contains(" runs in ") {
                summary.done = Some(line.clone());
            }
        }
    }
    let status = child.wait().with_context(|| format!("waiting for cargo fuzz for {target}"))?;
    Ok((status.success(), summary))
}
