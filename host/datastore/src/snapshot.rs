//! The snapshot file: the whole state at the start of a generation, replaced atomically.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::{Allocation, DatastoreError};

/// The snapshot format this build writes and reads.
pub(super) const FORMAT: &str = "wasmcni-datastore/1";

const FILE_NAME: &str = "snapshot.json";
const TEMP_FILE_NAME: &str = "snapshot.json.tmp";

/// The snapshot of `dir`.
pub(super) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

fn temp_path(dir: &Path) -> PathBuf {
    dir.join(TEMP_FILE_NAME)
}

#[derive(Serialize)]
struct SnapshotOut<'a> {
    format: &'static str,
    generation: u64,
    allocations: Vec<&'a Allocation>,
}

/// Read first, alone, so a snapshot from a newer version is reported as such rather than as
/// whatever field it added or changed.
#[derive(Deserialize)]
struct FormatOnly {
    format: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotIn {
    // Already checked through `FormatOnly`; declared so `deny_unknown_fields` accepts it.
    #[serde(rename = "format")]
    _format: IgnoredAny,
    generation: u64,
    allocations: Vec<Allocation>,
}

/// A snapshot as loaded.
#[derive(Debug)]
pub(super) struct Loaded {
    /// Its generation: the log to replay on top is `wal-<generation>.log`.
    pub(super) generation: u64,
    /// The allocations, not yet checked against each other.
    pub(super) allocations: Vec<Allocation>,
}

/// Loads `dir`'s snapshot; `None` if there is none yet.
pub(super) fn load(dir: &Path) -> Result<Option<Loaded>, DatastoreError> {
    let path = path(dir);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DatastoreError::Io {
                action: "read",
                path,
                source,
            })
        }
    };
    let corrupt = |reason: String| DatastoreError::CorruptSnapshot {
        path: path.clone(),
        reason,
    };
    let header: FormatOnly = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(format!("not a JSON object with a \"format\" string: {e}")))?;
    if header.format != FORMAT {
        return Err(DatastoreError::UnknownFormat {
            path,
            found: header.format,
        });
    }
    let snapshot: SnapshotIn =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    Ok(Some(Loaded {
        generation: snapshot.generation,
        allocations: snapshot.allocations,
    }))
}

/// Writes the snapshot of `generation` to the temp file and syncs it. On failure the temp file
/// is removed (best effort: recovery removes it too).
pub(super) fn write_temp<'a>(
    dir: &Path,
    generation: u64,
    allocations: impl Iterator<Item = &'a Allocation>,
) -> Result<(), DatastoreError> {
    let snapshot = SnapshotOut {
        format: FORMAT,
        generation,
        allocations: allocations.collect(),
    };
    let json = serde_json::to_vec(&snapshot).map_err(|source| DatastoreError::Encode {
        what: "snapshot".to_string(),
        source,
    })?;
    let temp = temp_path(dir);
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(&json)?;
            // sync_all, not sync_data: the file's size must be durable along with its bytes.
            file.sync_all()
        });
    if let Err(source) = written {
        // Best effort: recovery removes a leftover temp file anyway.
        let _ = fs::remove_file(&temp);
        return Err(DatastoreError::Io {
            action: "write",
            path: temp,
            source,
        });
    }
    Ok(())
}

/// Renames the temp snapshot over the current one. Not yet durable: the caller syncs the
/// directory.
pub(super) fn install(dir: &Path) -> Result<(), DatastoreError> {
    let temp = temp_path(dir);
    fs::rename(&temp, path(dir)).map_err(|source| {
        // Best effort, as in `write_temp`.
        let _ = fs::remove_file(&temp);
        DatastoreError::Io {
            action: "rename into place",
            path: temp.clone(),
            source,
        }
    })
}

/// Removes a temp snapshot a crash left behind; true if there was one.
pub(super) fn remove_temp(dir: &Path) -> Result<bool, DatastoreError> {
    let temp = temp_path(dir);
    match fs::remove_file(&temp) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(DatastoreError::Io {
            action: "delete",
            path: temp,
            source,
        }),
    }
}
