//! Where cgroup2 and bpffs are mounted (read from /proc/self/mountinfo, never assumed), and
//! creating and removing cgroup directories, killing what is inside first.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The mount point of the first mount of filesystem type `fstype` in a mountinfo text.
pub(crate) fn find_mount(mountinfo: &str, fstype: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // `<id> <parent> <maj:min> <root> <mount point> <options> [optional...] - <fstype> ...`
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != fstype {
            return None;
        }
        left.split_whitespace().nth(4).map(|p| PathBuf::from(unescape_octal(p)))
    })
}

/// mountinfo writes space, tab, newline and backslash as `\040`-style octal escapes.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let esc = bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match esc {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
}

/// The cgroup v2 mount point of this machine.
pub fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    find_mount(&mountinfo(), "cgroup2").context("no cgroup2 filesystem in /proc/self/mountinfo")
}

/// The bpffs mount point, if bpffs is mounted.
pub fn bpffs_mount() -> Option<PathBuf> {
    find_mount(&mountinfo(), "bpf")
}

/// Creates `dir` and its parents. Retries because a concurrent cleanup may remove an empty
/// parent (such as `ztunnel-test/`) between our mkdirs.
pub(crate) fn create_dir_all(dir: &Path) -> anyhow::Result<()> {
    let mut last = None;
    for _ in 0..20 {
        match std::fs::create_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => last = Some(e),
            Err(e) => return Err(e).with_context(|| format!("creating cgroup directory {}", dir.display())),
        }
    }
    Err(last.expect("retried")).with_context(|| format!("creating cgroup directory {}", dir.display()))
}

/// Kills every process in the cgroup `dir` and below (with `cgroup.kill` when the kernel has
/// it, otherwise one by one), waits (bounded) until it is empty, then removes the
/// directories from the leaves up. A missing directory is not an error.
pub(crate) fn kill_and_remove(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    kill_all(dir);
    wait_empty(dir, Duration::from_secs(5));
    remove_tree(dir)
}

fn kill_all(dir: &Path) {
    // Open without creating: outside cgroupfs (or on kernels before 5.14) there is no file.
    let killed = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"1"));
    if killed.is_ok() {
        return;
    }
    for d in subtree(dir) {
        let pids = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<u32> = pids.lines().filter_map(|p| p.trim().parse().ok()).collect();
        super::command::kill_pids(&pids);
    }
}

/// Waits until `cgroup.events` says `populated 0` (directories without it count as empty).
fn wait_empty(dir: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let events = std::fs::read_to_string(dir.join("cgroup.events")).unwrap_or_default();
        if !events.lines().any(|l| l.trim() == "populated 1") {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `dir` and every directory below it, parents before children.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < all.len() {
        if let Ok(entries) = std::fs::read_dir(&all[i]) {
            all.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
        i += 1;
    }
    all
}

/// Removes the directories of a cgroup tree from the leaves up (cgroupfs directories can only
/// be removed with rmdir, one at a time, and never hold regular files of their own).
fn remove_tree(dir: &Path) -> anyhow::Result<()> {
    for d in subtree(dir).iter().rev() {
        match std::fs::remove_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing cgroup directory {}", d.display())),
        }
    }
    Ok(())
}

/// Removes `dir` if it is empty; gone or still in use by someone else is fine.
pub(crate) fn remove_if_empty(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
42 31 0:39 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory
50 25 0:40 / /sys/fs/bpf rw,relatime shared:11 - bpf bpf rw,mode=700
51 22 0:41 / /mnt/with\\040space rw - cgroup2 cgroup2 rw
";

    #[test]
    fn mounts_are_found_by_filesystem_type() {
        assert_eq!(find_mount(MOUNTINFO, "cgroup2"), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(find_mount(MOUNTINFO, "bpf"), Some(PathBuf::from("/sys/fs/bpf")));
        assert_eq!(find_mount(MOUNTINFO, "tracefs"), None);
        let only_escaped = MOUNTINFO.lines().last().unwrap();
        assert_eq!(find_mount(only_escaped, "cgroup2"), Some(PathBuf::from("/mnt/with space")));
        assert_eq!(find_mount("garbage\n\n - \n", "cgroup2"), None);
    }

    #[test]
    fn octal_escapes_are_decoded() {
        assert_eq!(unescape_octal(r"a\040b\011c\134d"), "a b\tc\\d");
        assert_eq!(unescape_octal(r"trailing\04"), r"trailing\04");
        assert_eq!(unescape_octal(r"not\999octal"), r"not\999octal");
    }

    #[test]
    fn plain_directory_trees_are_removed_leaves_first() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("1t0");
        create_dir_all(&root.join("node-a-web/deeper")).unwrap();
        create_dir_all(&root.join("node-b-db")).unwrap();
        kill_and_remove(&root).unwrap();
        assert!(!root.exists(), "{} should be gone", root.display());
        kill_and_remove(&root).unwrap();
    }
}
