//! Processes started inside a node's namespace or a pod's namespace and cgroup, with their
//! output captured to files, killed and reaped when their [`ProcGuard`] drops.

use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

use super::command;
use super::topology::Shared;

/// How long `run` waits for a command unless told otherwise.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a new process may take to land in its cgroup and namespace.
const PLACEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a process runs: a namespace, and for pods also a cgroup.
pub(crate) struct Placement<'a> {
    pub(crate) label: String,
    pub(crate) netns: PathBuf,
    pub(crate) cgroup: Option<&'a Path>,
}

/// A running process, killed (with its process group) and reaped when dropped. Its stdout and
/// stderr go to files that can be read while it runs.
pub struct ProcGuard {
    child: Option<Child>,
    pid: u32,
    label: String,
    out_dir: TempDir,
    shared: Arc<Shared>,
    token: u64,
}

impl Placement<'_> {
    /// Starts `cmd` and returns once it is inside its namespace (and cgroup), or has exited.
    pub(crate) fn spawn(&self, shared: &Arc<Shared>, cmd: &[&str]) -> ProcGuard {
        self.try_spawn(shared, cmd).unwrap_or_else(|e| panic!("starting {:?} in {}: {e:#}", cmd, self.label))
    }

    fn try_spawn(&self, shared: &Arc<Shared>, cmd: &[&str]) -> anyhow::Result<ProcGuard> {
        anyhow::ensure!(!cmd.is_empty(), "empty command");
        let out_dir = tempfile::Builder::new().prefix("zt-proc-").tempdir().context("creating output directory")?;
        let stdout = File::create(out_dir.path().join("stdout")).context("creating stdout file")?;
        let stderr = File::create(out_dir.path().join("stderr")).context("creating stderr file")?;
        let net = format!("--net={}", self.netns.display());
        let mut command = match self.cgroup {
            // `ip netns exec` would remount /sys and hide cgroup2; instead the shell moves itself
            // into the cgroup, then `nsenter` enters the namespace and execs the command (same pid).
            Some(cgroup) => {
                let mut c = Command::new("sh");
                c.args(["-c", r#"cg=$1; shift; echo $$ > "$cg/cgroup.procs" && exec nsenter "$@""#, "sh"]);
                c.arg(cgroup);
                c
            }
            None => Command::new("nsenter"),
        };
        command
            .arg(&net)
            .arg("--")
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Its own group, so the guard can kill whatever the command forks.
            .process_group(0);
        let child = command.spawn().context("spawning")?;
        let pid = child.id();
        let token = shared.register_proc(pid);
        let mut guard =
            ProcGuard { child: Some(child), pid, label: self.label.clone(), out_dir, shared: shared.clone(), token };
        self.wait_placed(&mut guard, shared)?;
        Ok(guard)
    }

    /// Waits until /proc shows the process in the namespace (and cgroup), so a caller that
    /// inspects or signals it right away sees it where it belongs.
    fn wait_placed(&self, guard: &mut ProcGuard, shared: &Shared) -> anyhow::Result<()> {
        let netns_ino = std::fs::metadata(&self.netns).with_context(|| format!("{}", self.netns.display()))?.ino();
        let want_ns = format!("net:[{netns_ino}]");
        let want_cgroup = match self.cgroup {
            Some(dir) => {
                let rel = dir.strip_prefix(&shared.cgroup_mount).context("pod cgroup outside the cgroup2 mount")?;
                Some(format!("0::/{}", rel.display()))
            }
            None => None,
        };
        let deadline = Instant::now() + PLACEMENT_TIMEOUT;
        loop {
            let proc_dir = PathBuf::from(format!("/proc/{}", guard.pid));
            let in_ns = std::fs::read_link(proc_dir.join("ns/net")).is_ok_and(|l| l.as_os_str() == want_ns.as_str());
            let in_cgroup = want_cgroup.as_ref().is_none_or(|want| {
                std::fs::read_to_string(proc_dir.join("cgroup")).is_ok_and(|c| c.lines().any(|l| l == want))
            });
            if (in_ns && in_cgroup) || !guard.is_running() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("not in {want_ns} {want_cgroup:?} after {PLACEMENT_TIMEOUT:?}; stderr: {}", guard.stderr());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Runs `cmd` to completion, bounded by `limit`.
    pub(crate) fn run(&self, shared: &Arc<Shared>, cmd: &[&str], limit: Duration) -> Output {
        let mut guard = self.spawn(shared, cmd);
        guard.wait_timeout(limit).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `GET http://<addr><path>` with curl inside the namespace: (status, body).
    pub(crate) fn http_get(
        &self,
        shared: &Arc<Shared>,
        addr: std::net::SocketAddr,
        path: &str,
    ) -> anyhow::Result<(u16, String)> {
        let url = format!("http://{addr}{path}");
        let out = self.run(shared, &["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", &url], RUN_TIMEOUT);
        if !out.status.success() {
            bail!("curl {url} in {}: {}", self.label, String::from_utf8_lossy(&out.stderr).trim());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, status) = text.rsplit_once('\n').context("curl printed no status line")?;
        let status = status.trim().parse().with_context(|| format!("curl status {status:?}"))?;
        Ok((status, body.to_string()))
    }
}

impl ProcGuard {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.read_output("stdout")
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.read_output("stderr")
    }

    fn read_output(&self, name: &str) -> String {
        std::fs::read(self.out_dir.path().join(name))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Whether the process is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.poll(), Ok(None))
    }

    /// The exit status once the process has exited (and been reaped).
    fn poll(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let child = self.child.as_mut().context("process already killed")?;
        self.shared.try_reap(self.token, child).context("polling process")
    }

    /// Waits (bounded) for a stdout line containing `needle` and returns it. Fails early if
    /// the process exits without printing it.
    pub fn wait_for_stdout(&mut self, needle: &str, limit: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            let running = self.is_running();
            if let Some(line) = self.stdout().lines().find(|l| l.contains(needle)) {
                return Ok(line.to_string());
            }
            if !running {
                bail!("{} exited without printing {needle:?}; {}", self.label, self.describe_output());
            }
            if Instant::now() > deadline {
                bail!("{} printed no {needle:?} within {limit:?}; {}", self.label, self.describe_output());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (bounded) for the process to exit and returns its status and output. On timeout
    /// the process keeps running (the guard still owns it).
    pub fn wait_timeout(&mut self, limit: Duration) -> anyhow::Result<Output> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.poll()? {
                return Ok(Output { status, stdout: self.stdout().into_bytes(), stderr: self.stderr().into_bytes() });
            }
            if Instant::now() > deadline {
                bail!("{} still running after {limit:?}; {}", self.label, self.describe_output());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM to the process (not its group), e.g. to test graceful shutdown.
    pub fn terminate(&self) -> anyhow::Result<()> {
        command::signal_pid(self.pid, "TERM")
    }

    /// Kills the process group (unless the process has already exited) and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.shared.kill_proc(self.token, &mut child);
            let _ = child.wait();
        }
    }

    fn describe_output(&self) -> String {
        format!("stdout: {:?}, stderr: {:?}", self.stdout(), self.stderr())
    }
}

impl Drop for ProcGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Debug for ProcGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcGuard").field("pid", &self.pid).field("label", &self.label).finish()
    }
}
