//! Child processes that must not outlive xtask: [`Processes`] starts them with output sent to
//! log files, stops them gracefully on request, and on drop (error, panic, Ctrl-C) kills and
//! reaps whatever is still running.
//!
//! Children get their own process group, so a Ctrl-C at the terminal reaches only xtask, which
//! then stops them in order instead of racing their own signal handlers.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::{Pid, Signal, kill_process};

/// How often a stopping child is polled.
const POLL: Duration = Duration::from_millis(20);

struct Tracked {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Owns started children; see the module docs.
#[derive(Default)]
pub(crate) struct Processes {
    children: Vec<Tracked>,
}

impl Processes {
    /// Starts `cmd` as `name`, stdin closed, stdout and stderr appended to `log`.
    pub(crate) fn spawn(&mut self, name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<u32> {
        let out = File::create(log).with_context(|| format!("cannot create log file {}", log.display()))?;
        let err = out.try_clone().context("cannot share log file handle")?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        let child = cmd.spawn().with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
        let pid = child.id();
        self.children.push(Tracked { name: name.to_string(), child, log: log.to_path_buf() });
        Ok(pid)
    }

    /// Fails if `name` has already exited (it should be serving).
    pub(crate) fn ensure_running(&mut self, name: &str) -> anyhow::Result<()> {
        let tracked = self.find(name)?;
        match tracked.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("{name} exited unexpectedly ({status}); see {}", tracked.log.display()),
            Err(e) => bail!("cannot check on {name}: {e}"),
        }
    }

    /// Sends SIGTERM to `name` and waits up to `within` for it to exit; past that it is
    /// killed and this fails. Returns the exit status and how long the exit took.
    pub(crate) async fn terminate(&mut self, name: &str, within: Duration) -> anyhow::Result<(ExitStatus, Duration)> {
        let tracked = self.find(name)?;
        let started = Instant::now();
        if tracked.child.try_wait()?.is_none() {
            let pid = Pid::from_child(&tracked.child);
            kill_process(pid, Signal::TERM).with_context(|| format!("cannot send SIGTERM to {name}"))?;
        }
        loop {
            if let Some(status) = tracked.child.try_wait()? {
                return Ok((status, started.elapsed()));
            }
            if started.elapsed() > within {
                let _ = tracked.child.kill();
                let _ = tracked.child.wait();
                bail!("{name} did not exit within {within:?} of SIGTERM; killed it");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `(name, log file)` of every child started, in start order.
    pub(crate) fn logs(&self) -> Vec<(String, PathBuf)> {
        self.children.iter().map(|t| (t.name.clone(), t.log.clone())).collect()
    }

    fn find(&mut self, name: &str) -> anyhow::Result<&mut Tracked> {
        self.children.iter_mut().find(|t| t.name == name).with_context(|| format!("no process named {name}"))
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for tracked in &mut self.children {
            if let Ok(None) = tracked.child.try_wait() {
                eprintln!("    stopping {} (pid {})", tracked.name, tracked.child.id());
                let _ = tracked.child.kill();
            }
            // Reap, so no zombie is left behind either.
            let _ = tracked.child.wait();
        }
    }
}

/// The last `lines` lines of a log file (best effort).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
