//! Checking, once the mesh has been dropped, that the demo left nothing behind: no namespace,
//! cgroup or bpffs directory of its topology (the harness's `leftovers`), and none of the
//! long-running processes it started (ztunnels, apps). Processes are remembered by pid and
//! start time, so a pid reused by an unrelated process is not mistaken for ours.

use std::sync::{Mutex, OnceLock};

use anyhow::bail;
use ztunnel_tests::netns::{TopologyId, leftovers};

/// What the run created, recorded as it goes (the run may be cut short by a signal).
#[derive(Default)]
pub(crate) struct Created {
    topology: OnceLock<TopologyId>,
    processes: Mutex<Vec<Process>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Process {
    name: String,
    pid: u32,
    /// Field 22 of `/proc/<pid>/stat`, in clock ticks since boot.
    start_time: u64,
}

impl Created {
    pub(crate) fn topology(&self, id: TopologyId) {
        let _ = self.topology.set(id);
    }

    /// Remembers the processes `(name, pid)` that are running now.
    pub(crate) fn processes(&self, running: impl IntoIterator<Item = (String, u32)>) {
        let mut known = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        for (name, pid) in running {
            if let Some(start_time) = start_time(pid)
                && !known.iter().any(|p| p.pid == pid && p.start_time == start_time)
            {
                known.push(Process { name, pid, start_time });
            }
        }
    }

    /// Fails listing whatever is left; `Ok(None)` when nothing was created.
    pub(crate) fn check(&self) -> anyhow::Result<Option<TopologyId>> {
        let Some(id) = self.topology.get().copied() else { return Ok(None) };
        let mut left = leftovers(id);
        let known = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        for p in known.iter().filter(|p| start_time(p.pid) == Some(p.start_time)) {
            left.push(format!("process {} (pid {})", p.name, p.pid));
        }
        if !left.is_empty() {
            bail!("cleanup left behind:\n      {}", left.join("\n      "));
        }
        Ok(Some(id))
    }
}

/// The start time of a live (not zombie) process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// The fields of a `/proc/<pid>/stat` line from field 3 (the state) on: the command name
/// before them may hold spaces and parentheses, so they are counted after its last `)`.
pub(crate) fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace().collect())
}

/// The start time from a `/proc/<pid>/stat` line, `None` for a zombie.
fn parse_stat(stat: &str) -> Option<u64> {
    let fields = stat_fields(stat)?;
    // fields[0] is field 3 (state); the start time is field 22.
    if *fields.first()? == "Z" {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_read_after_the_command_name() {
        let line = "4242 (odd ) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some(987_654));
        let zombie = "4243 (x) Z 1 4243 4243 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 55 0 0";
        assert_eq!(parse_stat(zombie), None, "a zombie is not running");
        assert!(start_time(std::process::id()).is_some(), "this process is alive");
    }

    #[test]
    fn nothing_created_means_nothing_to_check() {
        assert!(matches!(Created::default().check(), Ok(None)));
    }
}
