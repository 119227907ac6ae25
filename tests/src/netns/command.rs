//! Thin wrappers over the `ip`, `nsenter` and `kill` commands, with errors that show the
//! command line and what it printed.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// Runs a command to completion; fails with its stderr when it exits non-zero.
pub(crate) fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    run_with_input(program, args, None)
}

fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> anyhow::Result<String> {
    let shown = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{}`", shown()))?;
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input.as_bytes()).with_context(|| format!("writing to `{}`", shown()))?;
    }
    let out = child.wait_with_output().with_context(|| format!("waiting for `{}`", shown()))?;
    if !out.status.success() {
        bail!("`{}` failed ({}): {}", shown(), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip <args>` in the host namespace.
pub(crate) fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args).map(drop)
}

/// Runs several `ip` commands (one per line, without the leading `ip`) inside the named
/// namespace as one `ip -n <netns> -batch -`; stops at the first failing line.
pub(crate) fn ip_batch(netns: &str, lines: &[String]) -> anyhow::Result<()> {
    let input = lines.join("\n") + "\n";
    run_with_input("ip", &["-n", netns, "-batch", "-"], Some(&input))
        .with_context(|| format!("in namespace {netns}, commands:\n{input}"))
        .map(drop)
}

/// Sets sysctls (`key=value`) inside a namespace: /proc/sys/net shows the namespace of the
/// process that opens it, so `sysctl` runs under `nsenter --net`.
pub(crate) fn sysctl_in(netns_path: &Path, settings: &[&str]) -> anyhow::Result<()> {
    let net = format!("--net={}", netns_path.display());
    let mut args = vec![net.as_str(), "--", "sysctl", "-q", "-w"];
    args.extend_from_slice(settings);
    run("nsenter", &args).map(drop)
}

/// Pids of processes whose network namespace is the named one (`ip netns pids`).
pub(crate) fn netns_pids(netns: &str) -> Vec<u32> {
    run("ip", &["netns", "pids", netns])
        .map(|out| out.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// Sends SIGKILL to each pid; a process that is already gone is not an error.
pub(crate) fn kill_pids(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let mut args = vec!["-KILL", "--"];
    args.extend(pids.iter().map(String::as_str));
    let _ = Command::new("kill").args(&args).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// Sends `signal` (e.g. `KILL`, `TERM`) to every process of the group `pgid`.
pub(crate) fn signal_group(pgid: u32, signal: &str) {
    let group = format!("-{pgid}");
    let _ = Command::new("kill")
        .args([format!("-{signal}").as_str(), "--", group.as_str()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Sends `signal` to one process.
pub(crate) fn signal_pid(pid: u32, signal: &str) -> anyhow::Result<()> {
    run("kill", &[&format!("-{signal}"), "--", &pid.to_string()]).map(drop)
}
