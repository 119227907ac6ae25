//! What the demo needs from the machine before it builds anything: root (eBPF, namespaces,
//! cgroups), the cgroup v2 hierarchy, and the tools it runs (`ip`, `nsenter`, `curl`,
//! `python3`). Missing tools are installed with apt-get when it is available, saying so first;
//! otherwise the step fails naming the package to install.

use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// A tool the demo runs, the argument that proves it works, and the Debian package with it.
pub(crate) struct Tool {
    program: &'static str,
    probe: &'static str,
    package: &'static str,
    why: &'static str,
}

const TOOLS: [Tool; 4] = [
    Tool { program: "ip", probe: "-V", package: "iproute2", why: "namespaces, veths, bridges" },
    Tool { program: "nsenter", probe: "--version", package: "util-linux", why: "running apps in pods" },
    Tool { program: "curl", probe: "--version", package: "curl", why: "the HTTP client in the sleep pod" },
    Tool { program: "python3", probe: "--version", package: "python3", why: "the HTTP server in the web pod" },
];

/// iperf3, the bulk-throughput client and server of `cargo xtask bench`.
pub(crate) const IPERF3: Tool =
    Tool { program: "iperf3", probe: "--version", package: "iperf3", why: "bulk throughput in the benchmark" };

/// Fails unless running as root with cgroup v2 mounted; installs missing tools (the demo's
/// own and `extra`).
pub(crate) fn ensure(extra: &[Tool]) -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!(
            "this needs root (it loads eBPF programs and creates network namespaces and cgroups); run it as root, e.g. sudo -E cargo xtask ..."
        );
    }
    let cgroup = ztunnel_tests::netns::cgroup2_mount().context("the demo needs the cgroup v2 hierarchy mounted")?;
    println!("    root: yes; cgroup v2 at {}", cgroup.display());
    let tools: Vec<&Tool> = TOOLS.iter().chain(extra).collect();
    let missing: Vec<&Tool> = tools.iter().copied().filter(|t| !works(t)).collect();
    if missing.is_empty() {
        let found: Vec<&str> = tools.iter().map(|t| t.program).collect();
        println!("    tools: {} found", found.join(", "));
        return Ok(());
    }
    for t in &missing {
        println!("    missing: {} ({})", t.program, t.why);
    }
    let packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
    if !works(&Tool { program: "apt-get", probe: "--version", package: "", why: "" }) {
        bail!("install {} and run the demo again (apt-get is not available here)", packages.join(" "));
    }
    apt_get(&["update"])?;
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&packages);
    apt_get(&install)?;
    if let Some(t) = missing.iter().find(|t| !works(t)) {
        bail!("{} still does not run after installing {}", t.program, t.package);
    }
    Ok(())
}

fn works(tool: &Tool) -> bool {
    Command::new(tool.program)
        .arg(tool.probe)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn apt_get(args: &[&str]) -> anyhow::Result<()> {
    println!("==> installing: apt-get {}", args.join(" "));
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .context("cannot run apt-get")?;
    if !status.success() {
        bail!("apt-get {} failed ({status})", args.join(" "));
    }
    Ok(())
}
