//! Binds the control socket so that only root and ztunnel's own user can reach it.
//!
//! The socket's directory is created with mode 0700 whatever the umask. A directory that
//! already exists is used only if it belongs to root or to ztunnel's user and nobody else
//! may write to it (so nobody else can replace the socket); its permissions are never
//! changed, since it may be shared (such as `/run`), and anything looser is refused with an
//! error naming the directory. The socket file is created with mode 0600 from the start
//! (its mode is set before `bind`, so there is no moment when the umask decides it).

use std::fs::{DirBuilder, File, Permissions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::UnixListener;

use super::ControlError;

/// Mode of a directory ztunnel creates for its control socket.
const DIR_MODE: u32 = 0o700;
/// Mode of the control socket.
const SOCKET_MODE: u32 = 0o600;
/// Pending connections the kernel queues before `accept`.
const BACKLOG: i32 = 64;

/// Binds the control socket at `path` (replacing a stale one), creating its directory if
/// needed; see the module documentation for what is refused.
pub(crate) fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    prepare_dir(dir)?;
    let io_error = |what: &'static str| {
        let path = path.display().to_string();
        move |source| ControlError::Socket { what, path, source }
    };
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error("removing the stale socket")(e)),
        _ => {}
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(io_error("creating"))?;
    let socket = set_mode_before_bind(socket).map_err(io_error("setting the mode of"))?;
    socket.bind(&SockAddr::unix(path).map_err(io_error("naming"))?).map_err(io_error("binding"))?;
    // Already 0600 from the mode set before bind; set again in case a kernel ignores that.
    std::fs::set_permissions(path, Permissions::from_mode(SOCKET_MODE)).map_err(io_error("setting the mode of"))?;
    socket.listen(BACKLOG).map_err(io_error("listening on"))?;
    socket.set_nonblocking(true).map_err(io_error("listening on"))?;
    UnixListener::from_std(socket.into()).map_err(io_error("listening on"))
}

/// Linux creates a unix socket's file with the mode of the socket's inode minus the umask,
/// so a mode set on the descriptor before `bind` holds from the file's first moment.
/// (`fchmod` through `File`, which owns any descriptor, keeps this free of `unsafe`.)
fn set_mode_before_bind(socket: Socket) -> io::Result<Socket> {
    let file = File::from(OwnedFd::from(socket));
    file.set_permissions(Permissions::from_mode(SOCKET_MODE))?;
    Ok(Socket::from(OwnedFd::from(file)))
}

/// Creates `dir` with mode 0700 (parents too), or checks that an existing one is safe.
fn prepare_dir(dir: &Path) -> Result<(), ControlError> {
    let shown = || dir.display().to_string();
    match std::fs::metadata(dir) {
        Ok(meta) => return check_existing_dir(dir, &meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(ControlError::Directory { path: shown(), what: "reading", source }),
    }
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(|source| ControlError::Directory {
        path: shown(),
        what: "creating",
        source,
    })?;
    // The umask may have removed bits from the requested mode; set exactly 0700.
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)).map_err(|source| ControlError::Directory {
        path: shown(),
        what: "setting the mode of",
        source,
    })?;
    let meta =
        std::fs::metadata(dir).map_err(|source| ControlError::Directory { path: shown(), what: "reading", source })?;
    // Someone may have created it between our check and `create` (recursive create accepts
    // an existing directory): check it as an existing one.
    check_existing_dir(dir, &meta)
}

fn check_existing_dir(dir: &Path, meta: &std::fs::Metadata) -> Result<(), ControlError> {
    let path = dir.display().to_string();
    if !meta.is_dir() {
        return Err(ControlError::UnsafeDirectory { path, reason: "it is not a directory".into() });
    }
    let own = rustix::process::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != own {
        return Err(ControlError::UnsafeDirectory {
            path,
            reason: format!("it belongs to uid {}, not to root or to ztunnel's uid {own}", meta.uid()),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(ControlError::UnsafeDirectory {
            path,
            reason: format!(
                "its mode {mode:04o} lets others write to it (they could replace the socket); use a directory only its owner can write to, e.g. chmod 0700"
            ),
        });
    }
    Ok(())
}
