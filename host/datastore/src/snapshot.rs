//! The snapshot files: the whole state at the start of a generation, replaced atomically, with
//! the one before it kept as a fallback.
//!
//! `snapshot.jsonl` is framed like the log (`<crc32> <json>` per line): a header line
//! `{"format":"wasmcni-datastore/2","generation":G,"allocations":N}`, then one line per
//! allocation, so a damaged line costs that allocation and nothing else. `snapshot.json` is the
//! format-1 file earlier versions wrote (one JSON object, no checksum); it is read when there is
//! no `snapshot.jsonl` and deleted by the first compaction.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use wasmcni_core::framing;

use super::{Allocation, DatastoreError};

/// The snapshot format this build writes.
pub(super) const FORMAT: &str = "wasmcni-datastore/2";
/// The format earlier versions wrote, still read.
const FORMAT_1: &str = "wasmcni-datastore/1";

const CURRENT: &str = "snapshot.jsonl";
const PREVIOUS: &str = "snapshot.prev.jsonl";
const FORMAT_1_FILE: &str = "snapshot.json";
const TEMP: &str = "snapshot.jsonl.tmp";
const PREVIOUS_TEMP: &str = "snapshot.prev.jsonl.tmp";

/// The current snapshot of `dir` (format 2).
pub(super) fn path(dir: &Path) -> PathBuf {
    dir.join(CURRENT)
}

/// The previous snapshot of `dir`, kept as a fallback.
pub(super) fn previous_path(dir: &Path) -> PathBuf {
    dir.join(PREVIOUS)
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    generation: u64,
    allocations: usize,
}

/// Read first, alone, so a snapshot from a newer version is reported as such rather than as
/// whatever field it added or changed.
#[derive(Deserialize)]
struct FormatOnly {
    format: String,
}

/// The format-1 file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Format1 {
    // Already checked through `FormatOnly`; declared so `deny_unknown_fields` accepts it.
    #[serde(rename = "format")]
    _format: IgnoredAny,
    generation: u64,
    allocations: Vec<Allocation>,
}

/// A snapshot as read: what could be read of it, and what could not.
#[derive(Debug)]
pub(super) struct Loaded {
    /// The file.
    pub(super) path: PathBuf,
    /// Its generation (the log to replay on top is `wal-<generation>.log`); `None` if its
    /// header is unreadable.
    pub(super) generation: Option<u64>,
    /// The allocations read, not yet checked against each other.
    pub(super) allocations: Vec<Allocation>,
    /// What could not be read: a byte offset (if one line) and why.
    pub(super) damage: Vec<(Option<u64>, String)>,
    /// How many allocations its header declares, when it is readable.
    pub(super) declared: Option<usize>,
}

impl Loaded {
    /// Whether all of it was read.
    pub(super) fn is_intact(&self) -> bool {
        self.damage.is_empty()
    }
}

fn read(path: &Path) -> Result<Option<Vec<u8>>, DatastoreError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DatastoreError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Loads `dir`'s current snapshot (format 2, else format 1); `None` if there is none yet.
/// Damage is reported in [`Loaded::damage`]; only a snapshot of a format this build does not
/// know is an error.
pub(super) fn load_current(dir: &Path) -> Result<Option<Loaded>, DatastoreError> {
    if let Some(loaded) = load_framed(&path(dir))? {
        return Ok(Some(loaded));
    }
    let path = dir.join(FORMAT_1_FILE);
    let Some(bytes) = read(&path)? else {
        return Ok(None);
    };
    let mut loaded = Loaded {
        path: path.clone(),
        generation: None,
        allocations: Vec::new(),
        damage: Vec::new(),
        declared: None,
    };
    match serde_json::from_slice::<FormatOnly>(&bytes) {
        Ok(header) if header.format != FORMAT_1 && header.format != FORMAT => {
            return Err(DatastoreError::UnknownFormat {
                path,
                found: header.format,
            })
        }
        Ok(_) => match serde_json::from_slice::<Format1>(&bytes) {
            Ok(snapshot) => {
                loaded.generation = Some(snapshot.generation);
                loaded.declared = Some(snapshot.allocations.len());
                loaded.allocations = snapshot.allocations;
            }
            Err(e) => loaded
                .damage
                .push((None, format!("unreadable, and what it held is lost: {e}"))),
        },
        Err(e) => loaded.damage.push((
            None,
            format!(
                "unreadable (not a JSON object with a \"format\" string), and what it held is \
                 lost: {e}"
            ),
        )),
    }
    Ok(Some(loaded))
}

/// Loads the previous snapshot, kept by the last compaction; `None` if there is none.
pub(super) fn load_previous(dir: &Path) -> Result<Option<Loaded>, DatastoreError> {
    load_framed(&previous_path(dir))
}

/// Reads a format-2 file. Every line is checked on its own: a damaged header leaves the
/// generation unknown, a damaged allocation line loses that allocation, and a file shorter or
/// longer than its header says is reported.
fn load_framed(path: &Path) -> Result<Option<Loaded>, DatastoreError> {
    let Some(bytes) = read(path)? else {
        return Ok(None);
    };
    let mut loaded = Loaded {
        path: path.to_path_buf(),
        generation: None,
        allocations: Vec::new(),
        damage: Vec::new(),
        declared: None,
    };
    let mut declared = None;
    let mut lines = 0usize;
    for (n, line) in framing::lines(&bytes).enumerate() {
        lines += 1;
        let offset = Some(line.offset as u64);
        let json = if line.complete {
            framing::unframe(line.bytes)
        } else {
            Err("the last line has no newline: the file was cut short".to_string())
        };
        let json = match json {
            Ok(json) => json,
            Err(reason) => {
                let what = if n == 0 { "header" } else { "allocation" };
                loaded
                    .damage
                    .push((offset, format!("{what} line unreadable: {reason}")));
                continue;
            }
        };
        if n == 0 {
            if let Ok(FormatOnly { format }) = serde_json::from_slice(json) {
                if format != FORMAT {
                    return Err(DatastoreError::UnknownFormat {
                        path: path.to_path_buf(),
                        found: format,
                    });
                }
            }
            match serde_json::from_slice::<Header>(json) {
                Ok(header) => {
                    loaded.generation = Some(header.generation);
                    loaded.declared = Some(header.allocations);
                    declared = Some(header.allocations);
                }
                Err(e) => loaded
                    .damage
                    .push((offset, format!("header line is not a header: {e}"))),
            }
            continue;
        }
        match serde_json::from_slice::<Allocation>(json) {
            Ok(allocation) => loaded.allocations.push(allocation),
            Err(e) => loaded
                .damage
                .push((offset, format!("allocation line is not an allocation: {e}"))),
        }
    }
    if lines == 0 {
        loaded.damage.push((None, "the file is empty".to_string()));
    }
    if let Some(declared) = declared {
        let found = lines.saturating_sub(1);
        if found != declared {
            loaded.damage.push((
                None,
                format!("the header declares {declared} allocations, the file has {found} lines of them"),
            ));
        }
    }
    Ok(Some(loaded))
}

/// Writes the snapshot of `generation` to the temp file and syncs it. On failure the temp file
/// is removed (best effort: recovery removes it too).
pub(super) fn write_temp<'a>(
    dir: &Path,
    generation: u64,
    allocations: impl ExactSizeIterator<Item = &'a Allocation>,
) -> Result<(), DatastoreError> {
    let header = Header {
        format: FORMAT.to_string(),
        generation,
        allocations: allocations.len(),
    };
    let mut bytes = framing::frame(&encode(&header, || "snapshot header".to_string())?);
    for allocation in allocations {
        let json = encode(allocation, || {
            format!("snapshot line of attachment {}", allocation.key)
        })?;
        bytes.extend_from_slice(&framing::frame(&json));
    }
    let temp = dir.join(TEMP);
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(&bytes)?;
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

fn encode<T: Serialize>(
    value: &T,
    what: impl FnOnce() -> String,
) -> Result<Vec<u8>, DatastoreError> {
    serde_json::to_vec(value).map_err(|source| DatastoreError::Encode {
        what: what(),
        source,
    })
}

/// Makes the current snapshot the previous one, without a moment where either is missing: a
/// hard link to a temp name, renamed over the previous. False if there is no current snapshot
/// (format 1 is not kept: its log is not either).
pub(super) fn keep_previous(dir: &Path) -> Result<bool, DatastoreError> {
    let current = path(dir);
    let temp = dir.join(PREVIOUS_TEMP);
    remove(&temp)?;
    match fs::hard_link(&current, &temp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        // A file system without hard links: a synced copy serves as well.
        Err(_) => fs::copy(&current, &temp)
            .and_then(|_| fs::File::open(&temp)?.sync_all())
            .map_err(|source| {
                let _ = fs::remove_file(&temp);
                DatastoreError::Io {
                    action: "copy",
                    path: current.clone(),
                    source,
                }
            })?,
    }
    fs::rename(&temp, previous_path(dir)).map_err(|source| {
        let _ = fs::remove_file(&temp);
        DatastoreError::Io {
            action: "rename into place",
            path: temp.clone(),
            source,
        }
    })?;
    Ok(true)
}

/// Drops the previous snapshot (when the log that goes with it cannot be made durable, it is
/// no fallback).
pub(super) fn remove_previous(dir: &Path) -> Result<bool, DatastoreError> {
    remove(&previous_path(dir))
}

/// Renames the temp snapshot over the current one. Not yet durable: the caller syncs the
/// directory.
pub(super) fn install(dir: &Path) -> Result<(), DatastoreError> {
    let temp = dir.join(TEMP);
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

/// Removes a format-1 snapshot once a format-2 one is durable; true if there was one.
pub(super) fn remove_format_1(dir: &Path) -> Result<bool, DatastoreError> {
    remove(&dir.join(FORMAT_1_FILE))
}

/// Removes temp files a crash left behind; true if there was one.
pub(super) fn remove_temp(dir: &Path) -> Result<bool, DatastoreError> {
    Ok(remove(&dir.join(TEMP))? | remove(&dir.join(PREVIOUS_TEMP))?)
}

fn remove(path: &Path) -> Result<bool, DatastoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(DatastoreError::Io {
            action: "delete",
            path: path.to_path_buf(),
            source,
        }),
    }
}
