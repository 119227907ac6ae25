//! The raw system calls the capture tests need and neither std nor socket2 offers. This is the
//! only unsafe code in the tests; every block says why it is sound.
#![allow(unsafe_code)]

use std::ffi::{CString, c_int};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// `SO_COOKIE` (asm-generic value, as on x86_64 and arm64).
const SO_COOKIE: c_int = 57;

/// Where the socket-factory child keeps the sockets it made (see [`make_sockets_before_exec`]).
pub(super) const FACTORY_FD_BASE: RawFd = 500;

fn check(ret: c_int) -> io::Result<c_int> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::other("path contains a NUL byte"))
}

/// Moves the calling thread (only it) into a new, empty network namespace.
pub(super) fn unshare_netns() -> io::Result<()> {
    // SAFETY: unshare(2) takes no pointers. CLONE_NEWNET changes only the calling thread's
    // network namespace; nothing else in the process depends on it.
    check(unsafe { libc::unshare(libc::CLONE_NEWNET) }).map(drop)
}

fn getsockopt_u64(socket: BorrowedFd<'_>, option: c_int) -> io::Result<u64> {
    let mut value = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and `len` says how big `value` is; the
    // descriptor is borrowed, so it stays open for the call.
    check(unsafe {
        libc::getsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, option, (&raw mut value).cast(), &mut len)
    })?;
    Ok(value)
}

/// The socket's cookie (`bpf_get_socket_cookie`).
pub(super) fn socket_cookie(socket: BorrowedFd<'_>) -> io::Result<u64> {
    getsockopt_u64(socket, SO_COOKIE)
}

/// Detaches the mount on `target` (lazily, so open pins cannot keep it busy).
pub(super) fn unmount(target: &Path) -> io::Result<()> {
    let target = c_path(target)?;
    // SAFETY: `target` is a NUL-terminated string that outlives the call.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

/// Makes `cmd`'s child join a cgroup and then create `count` TCP sockets of `domain`, kept on
/// descriptors `FACTORY_FD_BASE..` across exec. Sockets are tied for life to the cgroup and
/// network namespace of the process that creates them, and the cgroup's programs act on a
/// socket whatever process later uses it; so sockets made here behave exactly as a pod
/// application's. `cgroup_procs` is an open `cgroup.procs` of the target cgroup.
pub(super) fn make_sockets_before_exec(cmd: &mut Command, cgroup_procs: RawFd, domain: c_int, count: c_int) {
    let hook = move || -> io::Result<()> {
        // SAFETY: write(2) gets a pointer to a 1-byte static buffer; socket(2), dup2(2) and
        // close(2) take no pointers. All four are async-signal-safe, which the forked child
        // of a multithreaded process requires, and nothing here allocates.
        unsafe {
            // "0" moves the writing process.
            if libc::write(cgroup_procs, b"0".as_ptr().cast(), 1) != 1 {
                return Err(io::Error::last_os_error());
            }
            for i in 0..count {
                let fd = check(libc::socket(domain, libc::SOCK_STREAM, 0))?;
                if fd != FACTORY_FD_BASE + i {
                    check(libc::dup2(fd, FACTORY_FD_BASE + i))?;
                    libc::close(fd);
                }
            }
        }
        Ok(())
    };
    // SAFETY: the hook runs between fork and exec and makes only async-signal-safe calls
    // without allocating or taking locks (see above).
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Duplicates descriptor `fd` of process `pid` into this process (pidfd_getfd(2); root).
pub(super) fn take_fd(pid: u32, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags, no pointers.
    let pidfd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as c_int)?;
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // SAFETY: pidfd_getfd(2) takes descriptors and flags, no pointers.
    let copy = check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) } as c_int)?;
    // SAFETY: pidfd_getfd returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}
