//! The privileged system calls capture needs, in one place: entering a network namespace,
//! reading a namespace's cookie, mounting bpffs and one socket option for in-pod dials. Everything `unsafe` in capture outside the map mirrors is here.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Moves the calling thread into the network namespace `netns` (an open `/proc/<pid>/ns/net`
/// or `/var/run/netns/<name>` file). Only this thread changes namespace.
pub fn enter_netns(netns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns only reads the descriptor, which `BorrowedFd` keeps open for the call;
    // CLONE_NEWNET restricts it to the network namespace.
    let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Linux's `SO_NETNS_COOKIE` (not exported by every libc version).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the network namespace `socket` lives in (what `bpf_get_netns_cookie` sees).
pub fn netns_cookie(socket: BorrowedFd<'_>) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `cookie`, which is a live u64 of that
    // size; the descriptor is kept open by `BorrowedFd`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc == 0 { Ok(cookie) } else { Err(io::Error::last_os_error()) }
}

/// Sets `IP_BIND_ADDRESS_NO_PORT`: a later `bind()` to port 0 only fixes the address, and the
/// port is picked by `connect()`, which may reuse a port already used towards other
/// destinations (and TIME_WAIT ports, with `tcp_tw_reuse`). Without it, every dial bound to
/// 127.0.0.6 takes a port of its own until TIME_WAIT ends, and at thousands of connections per
/// second `bind()` runs out of ports and slows to a crawl searching for one.
pub fn set_bind_address_no_port(socket: BorrowedFd<'_>, enabled: bool) -> io::Result<()> {
    let on: libc::c_int = enabled.into();
    // SAFETY: the kernel reads `size_of::<c_int>()` bytes from `on`, a live c_int; the
    // descriptor is kept open by `BorrowedFd`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Mounts a bpf filesystem at `target` (an existing directory).
pub fn mount_bpffs(target: &std::path::Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let target = CString::new(target.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let fstype = c"bpf";
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; no data
    // argument is passed.
    let rc = unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}
