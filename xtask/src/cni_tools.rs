//! What the CNI chain tests (`tests/e2e/cni_chain.rs`) need from the machine: Debian's
//! reference CNI plugins, Go, and libcni's source (the tests build a small libcni program
//! offline). Installed with apt-get when missing; never prompts.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// (what is checked, Debian package that provides it).
const NEEDS: [(&str, &str); 3] = [
    ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    ("/usr/bin/go", "golang-go"),
    ("/usr/share/gocode/src/github.com/containernetworking/cni/libcni", "golang-github-appc-cni-dev"),
];

/// Installs the packages whose files are missing.
pub(crate) fn ensure() -> anyhow::Result<()> {
    let missing: Vec<&str> = NEEDS.iter().filter(|(path, _)| !Path::new(path).exists()).map(|(_, pkg)| *pkg).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("==> installing the CNI test tools: apt-get install {}", missing.join(" "));
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .context("cannot run apt-get (the CNI chain tests need Debian packages)")
    };
    let updated = apt(&["update", "-qq"])?;
    if !updated.success() {
        bail!("`apt-get update` failed ({updated})");
    }
    let mut install = vec!["install", "-y", "-qq"];
    install.extend(&missing);
    let status = apt(&install)?;
    if !status.success() {
        bail!("`apt-get install {}` failed ({status})", missing.join(" "));
    }
    Ok(())
}
