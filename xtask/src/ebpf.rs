//! `cargo xtask ebpf`: compiles the kernel-side programs (`ebpf/src`, `ebpf/include`) into the
//! committed object `ebpf/ztunnel.bpf.o`; with `--check`, compiles into a temporary directory
//! and fails when the committed object differs (CI runs this to catch a stale object).
//!
//! The build is reproducible: clang runs in `ebpf/` on relative paths and maps the absolute
//! directory to `.` in the debug info, so the bytes do not depend on where the checkout is.
//! Only the compiler version changes them. This module only runs clang and compares files;
//! it never loads anything into the kernel.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::Args;

use crate::workspace;

/// The object every consumer uses (`include_bytes!` in `ztunnel/src/capture/programs.rs`).
const OBJECT: &str = "ztunnel.bpf.o";
/// The one translation unit; it includes the per-program files (see its header comment).
const ENTRY: &str = "src/ztunnel.bpf.c";

#[derive(Debug, Args)]
pub(crate) struct EbpfArgs {
    /// Do not write ebpf/ztunnel.bpf.o; fail if rebuilding it gives different bytes.
    #[arg(long)]
    check: bool,
    /// The clang to use. The committed object is built with Debian's clang-19; another
    /// version builds a working object with different bytes.
    #[arg(long, env = "CLANG", default_value = "clang-19")]
    clang: String,
}

pub(crate) fn main(args: EbpfArgs) -> anyhow::Result<ExitCode> {
    let ebpf_dir = workspace::root().join("ebpf");
    let ebpf_dir = ebpf_dir.canonicalize().with_context(|| format!("cannot find {}", ebpf_dir.display()))?;
    let committed = ebpf_dir.join(OBJECT);
    if !args.check {
        compile(&args.clang, &ebpf_dir, &committed)?;
        println!("wrote {}", committed.display());
        return Ok(ExitCode::SUCCESS);
    }

    let scratch = tempfile::Builder::new().prefix("ztunnel-ebpf-check-").tempdir().context("cannot create temp dir")?;
    let rebuilt = scratch.path().join(OBJECT);
    compile(&args.clang, &ebpf_dir, &rebuilt)?;
    let fresh = std::fs::read(&rebuilt).with_context(|| format!("cannot read {}", rebuilt.display()))?;
    let old = match std::fs::read(&committed) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("{} is missing ({e}): run `cargo xtask ebpf` and commit it", committed.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    if fresh == old {
        println!("{} is up to date with ebpf/src and ebpf/include", committed.display());
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{} is stale: rebuilding it from ebpf/src and ebpf/include gives different bytes \
         ({} bytes committed, {} rebuilt).\n  committed object built by: {}\n  this build used:           {}\n\
         If the compilers differ, rebuild with the committed one's version; otherwise run \
         `cargo xtask ebpf` and commit ebpf/{OBJECT}.",
        committed.display(),
        old.len(),
        fresh.len(),
        compiler_of(&old).unwrap_or("unknown compiler"),
        compiler_of(&fresh).unwrap_or("unknown compiler"),
    );
    Ok(ExitCode::FAILURE)
}

/// Compiles the object into `out`. Runs in `ebpf_dir` with relative paths so that nothing
/// path-dependent ends up in the object (see the module docs).
fn compile(clang: &str, ebpf_dir: &Path, out: &Path) -> anyhow::Result<()> {
    let asm_dir = asm_include_dir()?;
    let mut cmd = Command::new(clang);
    cmd.current_dir(ebpf_dir)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-fdebug-prefix-map={}=.", ebpf_dir.display()))
        .args(["-I", "include"])
        // <linux/types.h> includes <asm/types.h>, which lives in the multiarch directory that
        // clang does not search for the bpf target. -idirafter keeps it last.
        .arg("-idirafter")
        .arg(&asm_dir)
        .args(["-c", ENTRY, "-o"])
        .arg(out);
    println!("==> (cd {}; {})", ebpf_dir.display(), shell_words(&cmd));
    let status = cmd.status().with_context(|| {
        format!("cannot run {clang}: install it (Debian: apt-get install clang-19 libbpf-dev) or pass --clang")
    })?;
    if !status.success() {
        bail!("{clang} failed ({status}) compiling ebpf/{ENTRY}");
    }
    Ok(())
}

/// The directory holding the host's `asm/types.h` (Debian/Ubuntu multiarch layout).
fn asm_include_dir() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH));
    if dir.join("asm/types.h").is_file() {
        return Ok(dir);
    }
    if Path::new("/usr/include/asm/types.h").is_file() {
        return Ok(PathBuf::from("/usr/include"));
    }
    bail!(
        "cannot find asm/types.h in {} or /usr/include: install the kernel headers (Debian: linux-libc-dev)",
        dir.display()
    )
}

/// The compiler identification clang writes into the object's `.comment` section.
fn compiler_of(object: &[u8]) -> Option<&str> {
    const NEEDLE: &[u8] = b"clang version";
    let at = object.windows(NEEDLE.len()).position(|w| w == NEEDLE)?;
    let start = object[..at].iter().rposition(|&b| b == 0).map_or(0, |nul| nul + 1);
    let end = object[at..].iter().position(|&b| b == 0).map_or(object.len(), |nul| at + nul);
    std::str::from_utf8(&object[start..end]).ok()
}

fn shell_words(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiler_of_finds_the_comment_string() {
        let object = b"\x7fELF\0junk\0Debian clang version 19.1.7 (3~deb12u1)\0more";
        assert_eq!(compiler_of(object), Some("Debian clang version 19.1.7 (3~deb12u1)"));
        assert_eq!(compiler_of(b"no compiler here"), None);
    }
}
