//! The shim's log: one JSON line per invocation, appended with a single write.
//!
//! No buffering and no background thread, so nothing is lost when the process exits right
//! after printing its result; `O_APPEND` keeps lines from concurrent invocations whole.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Default log file when the network configuration names none (`logFile`).
pub const DEFAULT_LOG_FILE: &str = "/var/log/wasmcni/cni.log";

/// Appends one JSON line `{"ts_ms", "level", "msg", "pid"}` to `path`, creating its directory.
/// Logging must never fail an invocation, so errors are returned for stderr only.
pub fn append(path: &Path, level: &str, message: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let ts_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let line = serde_json::json!({
        "ts_ms": ts_ms as u64,
        "level": level,
        "msg": message,
        "pid": std::process::id(),
    });
    let mut bytes = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&bytes)
}
