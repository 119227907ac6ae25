//! Where the workspace is and how to run its `cargo`: the one place that knows the layout
//! of the checkout xtask was built from.

use std::path::PathBuf;
use std::process::Command;

/// The workspace root (the directory holding the top `Cargo.toml`).
pub(crate) fn root() -> PathBuf {
    let xtask_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().map(PathBuf::from).unwrap_or(xtask_dir)
}

/// A `cargo` command in the workspace root: the cargo that runs xtask (`$CARGO`) when known,
/// so toolchain overrides carry over.
pub(crate) fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root());
    cmd
}
