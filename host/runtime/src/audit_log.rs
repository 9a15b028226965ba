//! The runtime audit log: one JSON line per plugin call or privileged request (plugin, call,
//! arguments, outcome, duration), written with a single `write` to a file only root can read,
//! and rotated by size so that it can never fill the disk it shares with the datastore.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use wasmcni_telemetry::logfile::RotatingLog;

/// The audit log rotates before it passes this size.
pub const AUDIT_LOG_MAX_BYTES: u64 = 16 << 20;
/// Rotated audit log files kept (`plugin-audit.log.1` …): at most 64 MiB on disk in all.
pub const AUDIT_LOG_KEEP: u32 = 3;

/// The runtime audit log. Clones share one file handle and one size count, so rotation is
/// never raced by a second writer.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
    /// Opened on the first record (`None` inside: it could not be opened, logged once).
    file: Arc<OnceLock<Option<RotatingLog>>>,
}

/// One plugin call, as the audit log records it: `{"timestamp", "plugin", "call", "args",
/// "outcome", "result", "duration_us"}` (the field schema every wasmcni log shares:
/// docs/operating.md).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry<'a> {
    /// Milliseconds since the Unix epoch; written as `timestamp`, RFC 3339 in UTC.
    #[serde(rename = "timestamp", serialize_with = "rfc3339_millis")]
    pub ts_ms: u64,
    /// Plugin name.
    pub plugin: &'a str,
    /// The export called.
    pub call: &'a str,
    /// Its arguments (built from size-checked values only).
    pub args: serde_json::Value,
    /// `ok` or `error`.
    pub outcome: &'a str,
    /// The answer (an address) or the error.
    pub result: String,
    /// Wall time of the call, microseconds.
    pub duration_us: u64,
}

/// `ms` since the Unix epoch as the logs write a `timestamp`: RFC 3339 in UTC with
/// milliseconds.
pub fn timestamp_of_unix_ms(ms: u64) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

fn rfc3339_millis<S: serde::Serializer>(ms: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&timestamp_of_unix_ms(*ms))
}

impl AuditLog {
    /// An audit log appending to `path` (created 0600, in a 0700 directory, on first use).
    pub fn new(path: PathBuf) -> AuditLog {
        AuditLog {
            path,
            file: Arc::new(OnceLock::new()),
        }
    }

    /// Where it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry`. A failure is logged, never fails the request: the plugin's answer was
    /// already checked by the host either way.
    pub fn record(&self, entry: &AuditEntry<'_>) {
        wasmcni_telemetry::metrics::Metrics::global()
            .plugin_calls
            .get_or_create(&wasmcni_telemetry::metrics::PluginLabel {
                plugin: entry.plugin.to_owned(),
                call: entry.call.to_owned(),
                outcome: entry.outcome.to_owned(),
            })
            .inc();
        let file = self.file.get_or_init(|| {
            RotatingLog::open(&self.path, AUDIT_LOG_MAX_BYTES, AUDIT_LOG_KEEP)
                .map_err(|e| {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot open the plugin audit log; plugin calls are not audited");
                })
                .ok()
        });
        let Some(file) = file else {
            return;
        };
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
            line.push(b'\n');
            tracing_subscriber::fmt::MakeWriter::make_writer(file).write_all(&line)
        };
        if let Err(e) = write() {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the plugin audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_one_line_in_the_shared_log_schema() {
        let entry = AuditEntry {
            ts_ms: 1_764_851_234_567,
            plugin: "pack",
            call: "allocate",
            args: serde_json::json!({ "pod": "default/a" }),
            outcome: "ok",
            result: "10.0.0.5".to_owned(),
            duration_us: 41,
        };
        let line: serde_json::Value = serde_json::to_value(&entry).unwrap();
        assert_eq!(
            line,
            serde_json::json!({
                "timestamp": "2025-12-04T12:27:14.567Z",
                "plugin": "pack",
                "call": "allocate",
                "args": { "pod": "default/a" },
                "outcome": "ok",
                "result": "10.0.0.5",
                "duration_us": 41,
            })
        );
    }

    #[test]
    fn the_audit_log_rotates_and_stays_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path().join("state/plugin-audit.log"));
        let big = "x".repeat(64 << 10);
        let entry = AuditEntry {
            ts_ms: 1,
            plugin: "p",
            call: "c",
            args: serde_json::json!({ "pad": big }),
            outcome: "ok",
            result: String::new(),
            duration_us: 0,
        };
        // 1.5 times the bound in all, through two clones (they must share the size count).
        let writes = (AUDIT_LOG_MAX_BYTES * u64::from(AUDIT_LOG_KEEP + 1) * 3 / 2) >> 16;
        let clone = log.clone();
        for n in 0..writes {
            if n % 2 == 0 { &log } else { &clone }.record(&entry);
        }
        let mut total = 0;
        for entry in std::fs::read_dir(dir.path().join("state")).unwrap() {
            let meta = entry.unwrap().metadata().unwrap();
            assert!(
                meta.len() <= AUDIT_LOG_MAX_BYTES,
                "{} bytes in one file",
                meta.len()
            );
            total += meta.len();
        }
        assert!(
            total <= AUDIT_LOG_MAX_BYTES * u64::from(AUDIT_LOG_KEEP + 1),
            "{total} bytes on disk"
        );
        assert!(dir.path().join("state/plugin-audit.log.3").exists());
        assert!(!dir.path().join("state/plugin-audit.log.4").exists());
    }
}
