//! The shim's log: one JSON line per invocation, appended with a single write.
//!
//! No buffering and no background thread, so nothing is lost when the process exits right
//! after printing its result; `O_APPEND` keeps lines from concurrent invocations whole. The
//! file is always below [`super::confine::LOG_DIR`], opened without following symlinks; the
//! message is JSON-escaped, so control characters from a netconf or a runtime cannot forge
//! lines.

use std::path::Path;

use super::confine;

/// Default log file when the network configuration names none (`logFile`).
pub const DEFAULT_LOG_FILE: &str = "/var/log/wasmcni/cni.log";

/// Appends one JSON line `{"timestamp", "level", "message", "pid"}` (the schema every wasmcni
/// log shares: docs/operating.md) to `path` (which must lie below
/// the log directory), creating its directory. Logging must never fail an invocation, so
/// errors are returned for stderr only.
pub fn append(path: &Path, level: &str, message: &str) -> std::io::Result<()> {
    let relative = confine::log_file(&path.to_string_lossy())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?;
    let line = serde_json::json!({
        "timestamp": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        "level": level,
        "message": message,
        "pid": std::process::id(),
    });
    let mut bytes = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    confine::append_log(&relative, &bytes)
}
