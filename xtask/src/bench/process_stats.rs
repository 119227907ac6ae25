//! What a running ztunnel costs, read from `/proc/<pid>`: CPU time (user + system, clock
//! ticks converted to seconds; threads that exited still count) and resident memory (`VmRSS`:
//! every resident page of the process, including its binary's mapped code and the heap;
//! `RssAnon` is reported beside it: the heap and stacks only).

use std::time::Duration;

use anyhow::{Context, bail};

/// Linux's `USER_HZ`: `/proc/<pid>/stat` counts CPU time in these ticks on every architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds used so far by `pid` (all threads, user + system).
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("process {pid} is gone"))?;
    cpu_from_stat(&stat).with_context(|| format!("cannot parse /proc/{pid}/stat"))
}

fn cpu_from_stat(stat: &str) -> Option<f64> {
    let fields = crate::lab::cleanup::stat_fields(stat)?;
    // Fields 14 and 15 of the full line (utime, stime) are the 12th and 13th after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// Resident memory of a process, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Resident {
    pub(crate) rss_kib: u64,
    pub(crate) anon_kib: u64,
}

pub(crate) fn resident(pid: u32) -> anyhow::Result<Resident> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("process {pid} is gone"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} for {pid}"))?;
        let kib = line[name.len()..].trim().trim_end_matches("kB").trim();
        kib.parse().with_context(|| format!("bad {name} line {line:?}"))
    };
    Ok(Resident { rss_kib: field("VmRSS:")?, anon_kib: field("RssAnon:")? })
}

/// Waits until `pid`'s resident memory stops changing (two reads `step` apart differ by at
/// most 1%) or `limit` passes; returns the last reading.
pub(crate) async fn settled_resident(pid: u32, step: Duration, limit: Duration) -> anyhow::Result<Resident> {
    let started = std::time::Instant::now();
    let mut last = resident(pid)?;
    loop {
        tokio::time::sleep(step).await;
        let now = resident(pid)?;
        if now.rss_kib.abs_diff(last.rss_kib) * 100 <= last.rss_kib || started.elapsed() > limit {
            return Ok(now);
        }
        last = now;
    }
}

/// CPU seconds of several processes, read together.
pub(crate) fn cpu_of(pids: &[u32]) -> anyhow::Result<Vec<f64>> {
    pids.iter().map(|&pid| cpu_seconds(pid)).collect()
}

/// Per-process CPU seconds between two readings of [`cpu_of`].
pub(crate) fn cpu_delta(before: &[f64], after: &[f64]) -> anyhow::Result<Vec<f64>> {
    if before.len() != after.len() {
        bail!("CPU readings of different process sets");
    }
    Ok(before.iter().zip(after).map(|(b, a)| a - b).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_follow_the_command_name_even_with_spaces() {
        let stat = "4242 (z tunnel) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1000 0 0";
        assert_eq!(cpu_from_stat(stat), Some(3.0));
        assert_eq!(cpu_from_stat("garbage"), None);
    }

    #[test]
    fn own_process_has_cpu_and_memory() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_ok());
        let r = resident(me).unwrap();
        assert!(r.rss_kib > 0 && r.anon_kib <= r.rss_kib, "{r:?}");
    }
}
