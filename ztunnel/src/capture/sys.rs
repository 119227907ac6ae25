//! The privileged system calls capture needs, in one place: entering a network namespace,
//! reading a namespace's cookie, mounting bpffs, one socket option for in-pod dials and a
//! kernel feature probe (a trivial program load). Everything `unsafe` in capture outside the
//! map mirrors is here.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Moves the calling thread into the network namespace `netns` (an open `/proc/<pid>/ns/net`
/// or `/var/run/netns/<name>` file). Only this thread changes namespace.
pub(crate) fn enter_netns(netns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns only reads the descriptor, which `BorrowedFd` keeps open for the call;
    // CLONE_NEWNET restricts it to the network namespace.
    let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Linux's `SO_NETNS_COOKIE` (not exported by every libc version).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the network namespace `socket` lives in (what `bpf_get_netns_cookie` sees).
pub(crate) fn netns_cookie(socket: BorrowedFd<'_>) -> io::Result<u64> {
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
pub(crate) fn set_bind_address_no_port(socket: BorrowedFd<'_>, enabled: bool) -> io::Result<()> {
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
pub(crate) fn mount_bpffs(target: &std::path::Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let target = CString::new(target.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let fstype = c"bpf";
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; no data
    // argument is passed.
    let rc = unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// `BPF_PROG_TYPE_CGROUP_SOCK_ADDR` (linux/bpf.h `enum bpf_prog_type`).
pub(crate) const PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
/// `BPF_CGROUP_INET4_GETPEERNAME` (linux/bpf.h `enum bpf_attach_type`, Linux 5.8).
pub(crate) const ATTACH_INET4_GETPEERNAME: u32 = 29;
/// `BPF_CGROUP_INET6_GETPEERNAME`.
pub(crate) const ATTACH_INET6_GETPEERNAME: u32 = 30;

/// The leading fields of `union bpf_attr` used by `BPF_PROG_LOAD`, up to
/// `expected_attach_type`; the kernel treats the fields after a shorter attr as zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Whether the kernel loads a trivial program (`r0 = 1; exit`) of `prog_type` for
/// `expected_attach_type`: `Ok(false)` when it rejects the pair as invalid (EINVAL, what an
/// older kernel answers for an attach type it does not know).
pub(crate) fn loads_trivial_program(prog_type: u32, expected_attach_type: u32) -> io::Result<bool> {
    // mov64 r0, 1 (BPF_ALU64 | BPF_MOV | BPF_K); exit (BPF_JMP | BPF_EXIT).
    let insns: [u64; 2] =
        [u64::from_le_bytes([0xb7, 0, 0, 0, 1, 0, 0, 0]), u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0])];
    let license = c"Apache-2.0";
    let attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type,
        ..ProgLoadAttr::default()
    };
    const BPF_PROG_LOAD: libc::c_long = 5;
    // SAFETY: `attr` is a live, fully initialised BPF_PROG_LOAD attr of the size passed; the
    // pointers in it (instructions, license) outlive the call and no log buffer is given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>() as libc::c_uint,
        )
    };
    if fd >= 0 {
        // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
        unsafe { libc::close(fd as libc::c_int) };
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EINVAL) { Ok(false) } else { Err(err) }
}

/// `union bpf_attr` for `BPF_OBJ_GET`.
#[repr(C)]
#[derive(Default)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// Opens the BPF object pinned at `path` (`BPF_OBJ_GET`; links only open read-write).
pub(crate) fn bpf_obj_get(path: &std::path::Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    const BPF_OBJ_GET: libc::c_long = 7;
    let attr = ObjGetAttr { pathname: path.as_ptr() as u64, ..ObjGetAttr::default() };
    // SAFETY: `attr` is a live, fully initialised BPF_OBJ_GET attr of the size passed; the path
    // it points to outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &attr as *const ObjGetAttr,
            std::mem::size_of::<ObjGetAttr>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as libc::c_int) })
}
