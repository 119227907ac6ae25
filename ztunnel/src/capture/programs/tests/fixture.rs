//! What the capture tests build and must tear down: a private bpffs, cgroup v2 directories,
//! network namespaces, and "application" sockets made inside a cgroup. Every object is a
//! guard that removes itself on drop, so cleanup happens on every path, panics included.
//!
//! Network namespaces are anonymous: a thread unshares into a fresh one and the test holds
//! its descriptor. Nothing is named in `/var/run/netns`, so even a killed test run leaves no
//! namespace behind, and parallel tests cannot collide.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket};

use super::sys;

/// A name no other test (or test process) uses at the same time.
pub(super) fn unique_name(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("ztunnel-test-{what}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// True when the test can run; otherwise says why it is skipped.
pub(super) fn running_as_root(test: &str) -> bool {
    crate::test_skip::require_root(test, "bpf, network namespaces, cgroups")
}

/// A private bpffs instance mounted on a fresh temporary directory; unmounted on drop, which
/// also removes every pin in it.
pub(super) struct Bpffs {
    dir: tempfile::TempDir,
}

impl Bpffs {
    pub(super) fn mount() -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("ztunnel-test-bpffs-").tempdir()?;
        crate::capture::sys::mount_bpffs(dir.path())?;
        Ok(Self { dir })
    }

    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        if let Err(e) = sys::unmount(self.dir.path()) {
            eprintln!("cannot unmount test bpffs {}: {e}", self.dir.path().display());
        }
    }
}

/// Where cgroup v2 is mounted, from `/proc/self/mountinfo` (never assumed).
fn cgroup2_mount() -> io::Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|line| {
            // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER"
            let (left, right) = line.split_once(" - ")?;
            (right.split(' ').next() == Some("cgroup2")).then(|| left.split(' ').nth(4).map(unescape_mountinfo))?
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup2 mount in /proc/self/mountinfo"))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> PathBuf {
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// A child cgroup (v2) of the hierarchy's root; removed on drop once it has no processes.
pub(super) struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    pub(super) fn create() -> io::Result<Self> {
        let path = cgroup2_mount()?.join(unique_name("cgroup"));
        std::fs::create_dir(&path)?;
        Ok(Self { path })
    }

    /// The directory, opened: what cgroup programs attach to.
    pub(super) fn open(&self) -> io::Result<File> {
        File::open(&self.path)
    }

    /// `cgroup.procs`, open for writing: a process that writes "0" to it joins the cgroup.
    fn procs(&self) -> io::Result<File> {
        std::fs::OpenOptions::new().write(true).open(self.path.join("cgroup.procs"))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Processes leave a cgroup asynchronously after they are reaped; bounded retries.
        for _ in 0..100 {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => thread::sleep(Duration::from_millis(10)),
                Err(e) => {
                    eprintln!("cannot remove test cgroup {}: {e}", self.path.display());
                    return;
                }
            }
        }
        eprintln!("test cgroup {} is still busy; left behind", self.path.display());
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A fresh network namespace with a thread living in it. [`Netns::run`] executes a closure
/// on that thread, so sockets it creates and commands it spawns belong to the namespace
/// (sockets keep their namespace wherever they are used later). The namespace lives as long
/// as this guard, its sockets or its processes hold it.
pub(super) struct Netns {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    fd: OwnedFd,
}

impl Netns {
    pub(super) fn new() -> io::Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let thread = thread::Builder::new().name(unique_name("netns")).spawn(move || {
            let fd = sys::unshare_netns().and_then(|()| File::open("/proc/thread-self/ns/net").map(OwnedFd::from));
            let entered = fd.is_ok();
            let _ = ready_tx.send(fd);
            if entered {
                for job in jobs_rx {
                    job();
                }
            }
        })?;
        let fd = ready_rx.recv().map_err(|_| io::Error::other("netns thread died before entering the namespace"))??;
        Ok(Self { jobs: Some(jobs_tx), thread: Some(thread), fd })
    }

    /// Runs `f` inside the namespace and returns its result; a panic in `f` resumes here.
    pub(super) fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
        });
        self.jobs.as_ref().expect("netns thread is running").send(job).expect("netns thread has exited");
        match rx.recv().expect("netns thread dropped a job") {
            Ok(value) => value,
            Err(panic) => resume_unwind(panic),
        }
    }

    /// A path other processes can open to enter the namespace (for `ip ... netns PATH`).
    pub(super) fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.fd.as_raw_fd())
    }

    /// Runs `ip ARGS` inside the namespace; fails with ip's stderr.
    pub(super) fn ip(&self, args: &[&str]) -> io::Result<()> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.run(move || {
            let out = Command::new("ip").args(&args).stdin(Stdio::null()).output()?;
            if out.status.success() {
                Ok(())
            } else {
                Err(io::Error::other(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
            }
        })
    }

    /// A TCP listener on `addr` inside the namespace.
    pub(super) fn listen(&self, addr: SocketAddr) -> TcpListener {
        self.run(move || TcpListener::bind(addr)).unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"))
    }

    /// A socket of `domain` created inside the namespace, by this (unconfined) process.
    pub(super) fn socket(&self, domain: Domain) -> Socket {
        self.run(move || Socket::new(domain, socket2::Type::STREAM, None)).expect("cannot create socket in netns")
    }

    /// `count` unconnected TCP sockets created inside the namespace by a process that first
    /// joined `cgroup`: as far as the kernel is concerned, a pod application's sockets.
    pub(super) fn app_sockets(&self, cgroup: &Cgroup, domain: Domain, count: usize) -> io::Result<Vec<Socket>> {
        let procs = cgroup.procs()?;
        self.run(move || {
            let mut cmd = Command::new("sleep");
            cmd.arg("30").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            sys::make_sockets_before_exec(&mut cmd, procs.as_raw_fd(), domain.into(), count as i32);
            let mut child = cmd.spawn()?;
            let sockets = (0..count as i32)
                .map(|i| sys::take_fd(child.id(), sys::FACTORY_FD_BASE + i).map(Socket::from))
                .collect::<io::Result<Vec<_>>>();
            // The sockets stay in the cgroup after their creator is gone.
            let _ = child.kill();
            let _ = child.wait();
            sockets
        })
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts one connection within `wait` (`Duration::ZERO`: only one already queued).
pub(super) fn accept_within(listener: &TcpListener, wait: Duration) -> Option<(TcpStream, SocketAddr)> {
    listener.set_nonblocking(true).expect("cannot make listener non-blocking");
    let deadline = Instant::now() + wait;
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                stream.set_nonblocking(false).expect("cannot make accepted socket blocking");
                return Some((stream, peer));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept on {:?} failed: {e}", listener.local_addr()),
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}
