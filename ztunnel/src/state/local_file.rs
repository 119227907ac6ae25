//! Reads the local config file's bytes, refusing anything that could hang or flood the reader:
//! only a regular file (after following symlinks, so a ConfigMap's `..data` link works) of at
//! most [`MAX_CONFIG_BYTES`] is read.
//!
//! The file is opened with `O_NONBLOCK`, so a FIFO or a device at the path cannot block the
//! open (a FIFO with no writer blocks a plain open forever, and with it the watcher and the
//! shutdown that waits for the watcher's thread); its type is then checked on the open
//! descriptor, so it cannot be swapped between the check and the read. Nothing here parses.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use super::local::LocalConfigError;

/// The largest config file read: far above a mesh of tens of thousands of workloads (about
/// 300 bytes each), small enough that a runaway file cannot exhaust memory.
pub const MAX_CONFIG_BYTES: u64 = 32 * 1024 * 1024;

/// The whole file at `path`, or why it was refused.
pub(super) fn read_config_file(path: &Path) -> Result<Vec<u8>, LocalConfigError> {
    read_limited(path, MAX_CONFIG_BYTES)
}

pub(super) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, LocalConfigError> {
    let file_name = || path.display().to_string();
    let read_error = |source| LocalConfigError::Read { file: file_name(), source };
    let file =
        OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path).map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(LocalConfigError::NotRegularFile { file: file_name(), kind: describe_type(&kind) });
    }
    if meta.len() > limit {
        return Err(LocalConfigError::TooLarge { file: file_name(), size: meta.len(), limit });
    }
    // The file may grow between the check and the read: read at most one byte past the limit.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    read_up_to(file, limit + 1, &mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > limit {
        return Err(LocalConfigError::TooLarge { file: file_name(), size: bytes.len() as u64, limit });
    }
    Ok(bytes)
}

fn read_up_to(file: File, limit: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
    file.take(limit).read_to_end(out).map(|_| ())
}

fn describe_type(kind: &std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a unix socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn reads_a_regular_file_and_follows_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.yaml");
        std::fs::write(&target, "workloads: []\n").unwrap();
        let link = dir.path().join("config.yaml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read_config_file(&link).unwrap(), b"workloads: []\n");
    }

    #[test]
    fn a_fifo_is_refused_at_once_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("config.yaml");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
        assert!(status.success(), "mkfifo failed");
        let started = Instant::now();
        let err = read_config_file(&fifo).expect_err("a FIFO must be refused");
        assert!(started.elapsed() < Duration::from_secs(1), "refusing a FIFO took {:?}", started.elapsed());
        let text = err.to_string();
        assert!(
            matches!(err, LocalConfigError::NotRegularFile { .. })
                && text.contains("config.yaml")
                && text.contains("FIFO")
                && text.contains("regular file"),
            "expected a not-a-regular-file error naming the file and its type, got: {text}"
        );
    }

    #[test]
    fn directories_and_devices_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_config_file(dir.path()).expect_err("a directory must be refused");
        assert!(err.to_string().contains("a directory"), "{err}");
        let err = read_config_file(Path::new("/dev/zero")).expect_err("/dev/zero must be refused");
        assert!(err.to_string().contains("a character device"), "{err}");
    }

    #[test]
    fn a_file_over_the_limit_is_refused_with_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        std::fs::write(&path, vec![b'#'; 101]).unwrap();
        let err = read_limited(&path, 100).expect_err("101 bytes are over a 100 byte limit");
        assert!(
            matches!(err, LocalConfigError::TooLarge { size: 101, limit: 100, .. }),
            "expected TooLarge {{ size: 101, limit: 100 }}, got: {err}"
        );
        assert!(err.to_string().contains("big.yaml"), "{err}");
        assert_eq!(read_limited(&path, 101).unwrap().len(), 101);
    }
}
