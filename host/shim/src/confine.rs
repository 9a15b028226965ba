//! Opening what a network configuration names, confined: the rules of [`wasmcni_cni::paths`]
//! first, then no symbolic link followed: the socket is refused when it is a symlink, and the
//! log file is created and opened through cap-std, whose resolution cannot leave the log
//! directory, with no symlink followed in its last component.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::Path;

use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, DirBuilder, DirBuilderExt, OpenOptions, OpenOptionsExt};

pub use wasmcni_cni::paths::{daemon_socket, log_file, LOG_DIR, SOCKET_DIR};

/// Refuses a socket path whose last component is a symbolic link (the directories above it
/// are checked by [`wasmcni_cni::paths::below`] and are root's). A missing socket is not refused: connecting to
/// it then fails as "daemon unavailable".
pub fn check_socket(socket: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_symlink() => Err(format!(
            "daemonSocket {} is a symbolic link; the shim does not follow it",
            socket.display()
        )),
        _ => Ok(()),
    }
}

/// Appends `line` to `relative` below [`LOG_DIR`] (both created 0700/0600 if missing), never
/// resolving a path outside it nor following a symlink in the last component.
pub fn append_log(relative: &Path, line: &[u8]) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(LOG_DIR)?;
    let dir = Dir::open_ambient_dir(LOG_DIR, cap_std::ambient_authority())?;
    if let Some(parent) = relative.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut builder = DirBuilder::new();
        builder.recursive(true).mode(0o700);
        dir.create_dir_with(parent, &builder)?;
    }
    let mut options = OpenOptions::new();
    options
        .create(true)
        .append(true)
        .mode(0o600)
        .follow(FollowSymlinks::No);
    dir.open_with(relative, &options)?.write_all(line)
}
