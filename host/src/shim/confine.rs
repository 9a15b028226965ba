//! Where a network configuration may point the root shim.
//!
//! Whoever writes a netconf (a Multus NetworkAttachmentDefinition, a hand-made conflist) is
//! not trusted with the node: `daemonSocket` and `logFile` are confined to fixed directories
//! that only root can write (`/run/wasmcni`, `/var/log/wasmcni`), checked lexically first (an
//! absolute path below the directory, plain names only: no `..`, `.`, empty or control
//! characters), and then used without following symbolic links: the socket is refused when
//! it is a symlink, and the log file is created and opened through cap-std, whose resolution
//! cannot leave the log directory, with no symlink followed in its last component.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Component, Path, PathBuf};

use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, DirBuilder, DirBuilderExt, OpenOptions, OpenOptionsExt};

pub use crate::proto::SOCKET_DIR;
/// The directory `logFile` must lie in.
pub const LOG_DIR: &str = "/var/log/wasmcni";
/// The longest socket path a Unix socket address holds.
const MAX_SOCKET_PATH: usize = 107;

/// `value` relative to `dir`, if it names something strictly below it in plain names only.
pub fn below(key: &str, value: &str, dir: &str) -> Result<PathBuf, String> {
    let refuse = |why: &str| {
        Err(format!(
            "{key} {value:?} {why}: the shim only uses paths below {dir}"
        ))
    };
    if value.chars().any(char::is_control) {
        return refuse("contains control characters");
    }
    let Ok(relative) = Path::new(value).strip_prefix(dir) else {
        return refuse("is not below the allowed directory");
    };
    if relative.as_os_str().is_empty() {
        return refuse("names the directory itself");
    }
    // On the text, not on `Path`, whose components silently drop a `.` in the middle.
    let names = value.strip_prefix(dir).unwrap_or(value);
    let plain = names.strip_prefix('/').is_some_and(|rest| {
        rest.split('/')
            .all(|n| !n.is_empty() && n != "." && n != "..")
    });
    if !plain
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return refuse("is not a plain path (`..`, `.` or empty names)");
    }
    Ok(relative.to_owned())
}

/// The socket `daemonSocket` names, confined to [`SOCKET_DIR`].
pub fn daemon_socket(value: &str) -> Result<PathBuf, String> {
    daemon_socket_in(value, SOCKET_DIR)
}

/// The socket `daemonSocket` names, confined to `dir`.
pub fn daemon_socket_in(value: &str, dir: &str) -> Result<PathBuf, String> {
    below("daemonSocket", value, dir)?;
    if value.len() > MAX_SOCKET_PATH {
        return Err(format!(
            "daemonSocket {value:?} is longer than a Unix socket address ({MAX_SOCKET_PATH} bytes)"
        ));
    }
    Ok(PathBuf::from(value))
}

/// Refuses a socket path whose last component is a symbolic link (the directories above it
/// are checked by [`below`] and are root's). A missing socket is not refused: connecting to
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

/// The log file `logFile` names, relative to [`LOG_DIR`].
pub fn log_file(value: &str) -> Result<PathBuf, String> {
    below("logFile", value, LOG_DIR)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_below_the_directory_are_accepted() {
        assert_eq!(
            below("logFile", "/var/log/wasmcni/cni.log", LOG_DIR).unwrap(),
            PathBuf::from("cni.log")
        );
        assert_eq!(
            below("logFile", "/var/log/wasmcni/node-a/cni.log", LOG_DIR).unwrap(),
            PathBuf::from("node-a/cni.log")
        );
        for refused in [
            "/etc/passwd",
            "/var/log/wasmcni",
            "/var/log/wasmcni/",
            "/var/log/wasmcni/../../../etc/shadow",
            "/var/log/wasmcni/./cni.log",
            "/var/log/wasmcni//cni.log",
            "/var/log/wasmcni/a/",
            "/var/log/wasmcnix/cni.log",
            "var/log/wasmcni/cni.log",
            "/var/log/wasmcni/cni\n.log",
        ] {
            let error = below("logFile", refused, LOG_DIR).unwrap_err();
            assert!(
                error.contains("only uses paths below /var/log/wasmcni"),
                "{refused}: {error}"
            );
        }
        assert!(daemon_socket("/run/wasmcni/wasmcni.sock").is_ok());
        assert!(daemon_socket("/tmp/wasmcni.sock").is_err());
        let long = format!("/run/wasmcni/{}", "x".repeat(100));
        assert!(daemon_socket(&long)
            .unwrap_err()
            .contains("longer than a Unix socket address"));
    }
}
