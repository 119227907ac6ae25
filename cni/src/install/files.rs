//! Writing into the host's directories so that a runtime reading them at any moment sees
//! either the old file or the new one, never half of one: write a temporary file beside the
//! target, flush it, then rename it over the target.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The temporary name beside `path`: hidden, and without a config extension, so a runtime
/// listing the directory never picks it up.
fn temporary(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.ztunnel-cni-{}.tmp", std::process::id()))
}

/// Replaces `path` with `bytes` (mode `mode`) unless it already holds exactly that; true when
/// it wrote.
pub(crate) fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> io::Result<bool> {
    if let (Ok(existing), Ok(meta)) = (fs::read(path), fs::metadata(path))
        && existing == bytes
        && meta.permissions().mode() & 0o7777 == mode
    {
        return Ok(false);
    }
    let tmp = temporary(path);
    let written = (|| {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        file.write_all(bytes)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|()| true)
}

/// Copies the executable `source` to `target` (mode 0755) unless `target` already has the
/// same size and modification time (the copy takes the source's time), so checking an
/// unchanged copy reads no file. True when it copied.
pub(crate) fn copy_executable_if_changed(source: &Path, target: &Path) -> io::Result<bool> {
    let wanted = fs::metadata(source)?;
    if let Ok(current) = fs::metadata(target)
        && current.len() == wanted.len()
        && current.modified().ok() == wanted.modified().ok()
        && current.permissions().mode() & 0o777 == 0o755
    {
        return Ok(false);
    }
    let tmp = temporary(target);
    let copied = (|| {
        let mut from = File::open(source)?;
        let mut to = OpenOptions::new().write(true).create(true).truncate(true).mode(0o755).open(&tmp)?;
        io::copy(&mut from, &mut to)?;
        to.set_permissions(fs::Permissions::from_mode(0o755))?;
        to.set_modified(wanted.modified()?)?;
        to.sync_all()?;
        fs::rename(&tmp, target)
    })();
    if copied.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    copied.map(|()| true)
}

/// Removes `path`; true when it existed.
pub(crate) fn remove_if_present(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_when_different_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        assert!(write_if_changed(&path, b"one", 0o600).unwrap());
        assert!(!write_if_changed(&path, b"one", 0o600).unwrap());
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(write_if_changed(&path, b"one", 0o644).unwrap(), "a mode change rewrites");
        assert!(write_if_changed(&path, b"two", 0o644).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["kubeconfig"]);
    }

    #[test]
    fn copies_an_executable_once() {
        let dir = tempfile::tempdir().unwrap();
        let (source, target) = (dir.path().join("src"), dir.path().join("ztunnel-cni"));
        fs::write(&source, b"#!/bin/sh\n").unwrap();
        assert!(copy_executable_if_changed(&source, &target).unwrap());
        assert!(!copy_executable_if_changed(&source, &target).unwrap());
        assert_eq!(fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o755);
        fs::write(&source, b"#!/bin/sh\nexit 0\n").unwrap();
        assert!(copy_executable_if_changed(&source, &target).unwrap(), "a new build is copied again");
        assert_eq!(fs::read(&target).unwrap(), b"#!/bin/sh\nexit 0\n");
        assert!(remove_if_present(&target).unwrap());
        assert!(!remove_if_present(&target).unwrap());
    }
}
