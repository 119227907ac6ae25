//! Finding the cgroup v2 hierarchy and the bpf filesystem from `/proc/self/mountinfo`
//! (their places differ between machines: `/sys/fs/cgroup` on most Kubernetes nodes,
//! `/sys/fs/cgroup/unified` on hybrid hosts).

use std::path::{Path, PathBuf};

use super::sys;

/// Mount points of filesystems of type `fstype`, from mountinfo text.
fn mount_points<'a>(mountinfo: &'a str, fstype: &'a str) -> impl Iterator<Item = PathBuf> + 'a {
    mountinfo.lines().filter_map(move |line| {
        // Fields: id parent major:minor root mount-point options [optional...] - fstype source super
        let (before, after) = line.split_once(" - ")?;
        (after.split_whitespace().next()? == fstype).then(|| before.split_whitespace().nth(4).map(unescape))?
    })
}

/// mountinfo escapes spaces and friends as octal (`\040`).
fn unescape(field: &str) -> PathBuf {
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

fn mountinfo() -> std::io::Result<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
}

/// Where the cgroup v2 hierarchy is mounted.
pub(crate) fn cgroup2_root() -> std::io::Result<PathBuf> {
    mount_points(&mountinfo()?, "cgroup2")
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no cgroup2 filesystem is mounted"))
}

/// Makes sure a bpf filesystem is mounted at `/sys/fs/bpf` (or wherever `path` lives), mounting
/// one when none is.
pub(crate) fn ensure_bpffs(path: &Path) -> std::io::Result<()> {
    let text = mountinfo()?;
    if mount_points(&text, "bpf").any(|m| path.starts_with(&m)) {
        return Ok(());
    }
    let mount_at = Path::new("/sys/fs/bpf");
    if !path.starts_with(mount_at) {
        return Err(std::io::Error::other(format!("{} is not on a bpf filesystem", path.display())));
    }
    std::fs::create_dir_all(mount_at)?;
    sys::mount_bpffs(mount_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
24 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
35 24 0:30 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate
40 24 0:33 / /sys/fs/bpf rw - bpf bpf rw,mode=700
41 24 0:34 / /mnt/with\\040space rw - bpf none rw
";

    #[test]
    fn finds_mounts_by_type() {
        assert_eq!(mount_points(SAMPLE, "cgroup2").collect::<Vec<_>>(), vec![PathBuf::from("/sys/fs/cgroup/unified")]);
        assert_eq!(
            mount_points(SAMPLE, "bpf").collect::<Vec<_>>(),
            vec![PathBuf::from("/sys/fs/bpf"), PathBuf::from("/mnt/with space")]
        );
        assert_eq!(mount_points(SAMPLE, "tmpfs").count(), 0);
    }

    #[test]
    fn this_machine_has_cgroup2() {
        let root = cgroup2_root().expect("cgroup2 mounted");
        assert!(root.join("cgroup.controllers").exists(), "{} is not a cgroup2 root", root.display());
    }
}
