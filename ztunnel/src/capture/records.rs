//! Enrollment records kept on disk (bpffs holds only BPF objects), so a restarted ztunnel
//! knows which pods it had enrolled, from which source, their addresses (so it can keep them
//! captured and refusing before its config source has synced), and how to clean them up.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::WorkloadUid;

/// Who asked for an enrollment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnrollSource {
    /// The local config file's `capture` blocks.
    Config,
    /// `ztunnel enroll` through the control socket.
    Api,
    /// The Kubernetes node agent (its watches and the CNI plugin's events).
    Kubernetes,
}

/// One enrolled pod, as remembered across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollRecord {
    pub uid: WorkloadUid,
    pub netns: PathBuf,
    pub cgroup: PathBuf,
    pub source: EnrollSource,
    /// Network-namespace cookie: the key of the pod's entry in `pod_config`.
    pub netns_cookie: u64,
    /// The pod's addresses when it was captured (records written by older versions have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpAddr>,
}

impl EnrollRecord {
    /// True when the pod is proven gone: its network namespace or its cgroup no longer exists.
    pub fn is_gone(&self) -> bool {
        !self.netns.exists() || !self.cgroup.exists()
    }
}

/// A pod uid as a file name (uids contain `/`): bytes other than ASCII letters, digits, `-`
/// and `.` become `_xx` (hex), so distinct uids never share a key.
pub fn pod_key(uid: &str) -> String {
    let mut key = String::with_capacity(uid.len());
    for b in uid.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' {
            key.push(b as char);
        } else {
            key.push_str(&format!("_{b:02x}"));
        }
    }
    key
}

/// The records directory.
pub struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn open(dir: &Path) -> std::io::Result<Records> {
        std::fs::create_dir_all(dir)?;
        Ok(Records { dir: dir.to_path_buf() })
    }

    pub fn save(&self, record: &EnrollRecord) -> std::io::Result<()> {
        let path = self.dir.join(format!("{}.json", pod_key(&record.uid)));
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?)?;
        std::fs::rename(tmp, path)
    }

    pub fn remove(&self, uid: &WorkloadUid) -> std::io::Result<()> {
        match std::fs::remove_file(self.dir.join(format!("{}.json", pod_key(uid)))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every readable record; unreadable files are reported and skipped.
    pub fn load_all(&self) -> Vec<EnrollRecord> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(record) => out.push(record),
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable enrollment record"),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_keys_are_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(dir.path()).unwrap();
        let r = EnrollRecord {
            uid: "cluster1//v1/Pod/default/web".into(),
            netns: "/var/run/netns/web".into(),
            cgroup: "/sys/fs/cgroup/web".into(),
            source: EnrollSource::Api,
            netns_cookie: 42,
            ips: vec!["10.0.0.7".parse().unwrap(), "fd00::7".parse().unwrap()],
        };
        records.save(&r).unwrap();
        assert_eq!(records.load_all(), vec![r.clone()]);
        assert_eq!(pod_key(&r.uid), "cluster1_2f_2fv1_2fPod_2fdefault_2fweb");
        assert_ne!(pod_key("a/b"), pod_key("a_b"), "keys must not collide");
        records.remove(&r.uid).unwrap();
        records.remove(&r.uid).unwrap();
        assert!(records.load_all().is_empty());
    }

    #[test]
    fn records_without_addresses_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{"uid":"u1","netns":"/n","cgroup":"/c","source":"config","netnsCookie":7}"#;
        std::fs::write(dir.path().join("u1.json"), old).unwrap();
        let loaded = Records::open(dir.path()).unwrap().load_all();
        assert_eq!(loaded.len(), 1, "a record from before addresses were kept must load");
        assert!(loaded[0].ips.is_empty());
        assert!(loaded[0].is_gone(), "paths that do not exist mean the pod is gone");
    }
}
