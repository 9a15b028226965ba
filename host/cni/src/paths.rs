//! Where a network configuration may point the root shim.
//!
//! Whoever writes a netconf (a Multus NetworkAttachmentDefinition, a hand-made conflist) is
//! not trusted with the node: `daemonSocket` and `logFile` are confined to fixed directories
//! that only root can write ([`SOCKET_DIR`], [`LOG_DIR`]), checked here lexically (an
//! absolute path below the directory, plain names only: no `..`, `.`, empty or control
//! characters). The shim then uses them without following symbolic links; the daemon's
//! configuration check applies the same rule to the socket it listens on.

use std::path::{Component, Path, PathBuf};

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

/// The log file `logFile` names, relative to [`LOG_DIR`].
pub fn log_file(value: &str) -> Result<PathBuf, String> {
    below("logFile", value, LOG_DIR)
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
