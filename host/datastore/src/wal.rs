//! The write-ahead log: record encoding, the append-only log file, recovery scanning, and the
//! group-commit syncer.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use wasmcni_core::framing;

use super::{Allocation, AttachmentKey, DatastoreError, Lsn};
use wasmcni_core::PodRoutes;

/// A log record as written: borrows, so appending does not clone the allocation.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum RecordRef<'a> {
    /// A new allocation in Reserved state.
    Reserve { allocation: &'a Allocation },
    /// Reserved -> Committed with the CNI result and the pod's routes (not written when they
    /// are the first interface's, so such logs read as they always have).
    Commit {
        key: &'a AttachmentKey,
        result: &'a serde_json::Value,
        #[serde(skip_serializing_if = "first_interface")]
        pod_routes: &'a PodRoutes,
    },
    /// The allocation is gone.
    Release { key: &'a AttachmentKey },
}

/// Whether routes are the first interface's (not written).
fn first_interface(routes: &&PodRoutes) -> bool {
    routes.is_first_interface()
}

/// A log record as read back; the same JSON shape as [`RecordRef`].
#[derive(Debug, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum Record {
    /// See [`RecordRef::Reserve`].
    Reserve { allocation: Allocation },
    /// See [`RecordRef::Commit`].
    Commit {
        key: AttachmentKey,
        result: serde_json::Value,
        #[serde(default)]
        pod_routes: PodRoutes,
    },
    /// See [`RecordRef::Release`].
    Release { key: AttachmentKey },
}

impl RecordRef<'_> {
    fn key(&self) -> &AttachmentKey {
        match self {
            RecordRef::Reserve { allocation } => &allocation.key,
            RecordRef::Commit { key, .. } | RecordRef::Release { key } => key,
        }
    }
}

/// Encodes one record as a complete log line: `<crc32 hex> <json>\n`.
pub(super) fn encode(record: &RecordRef<'_>) -> Result<Vec<u8>, DatastoreError> {
    let json = serde_json::to_vec(record).map_err(|source| DatastoreError::Encode {
        what: format!("log record for attachment {}", record.key()),
        source,
    })?;
    Ok(framing::frame(&json))
}

/// Why a line could not be turned into a record.
enum LineError {
    /// Checksum or framing wrong: a torn write at the end, damage anywhere else.
    Damaged(String),
    /// Checksum right but not a record this build knows: written by someone else.
    Undecodable(String),
}

fn decode_line(line: &[u8]) -> Result<Record, LineError> {
    let json = framing::unframe(line).map_err(LineError::Damaged)?;
    serde_json::from_slice(json).map_err(|e| {
        LineError::Undecodable(format!(
            "the checksum is valid but the record is not one this build writes ({e}); it was \
             probably written by a newer version"
        ))
    })
}

/// The result of scanning a log image.
#[derive(Debug)]
pub(super) struct Scan {
    /// Decoded records with the byte offset where each starts.
    pub(super) records: Vec<(u64, Record)>,
    /// Lines before the last that could not be read: damage, not a torn write.
    pub(super) damaged: Vec<DamagedLine>,
    /// Where the torn tail starts (the file's length if there is none).
    pub(super) valid_len: u64,
    /// Why the last line, ended by its newline, did not read. A crash of the daemon cannot
    /// leave that (each record is one `write(2)`); a power loss during an unsynced append or
    /// damage to a synced one can, and they cannot be told apart.
    pub(super) bad_last_line: Option<String>,
}

/// A line whose framing or checksum is wrong, with intact lines after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DamagedLine {
    /// Byte offset where the line starts.
    pub(super) offset: u64,
    /// Its length, newline included.
    pub(super) len: u64,
    /// What is wrong with it.
    pub(super) reason: String,
}

/// Decodes a whole log. A partial last line, or a last line whose framing or checksum fails,
/// is a torn tail (what a crash leaves) and ends the intact prefix. A bad line with lines after
/// it is damage (bit rot, a bad sector, a stray write): it is skipped and reported, and the
/// lines after it are read as usual, so one bad line loses one record, never the log. A line
/// with a valid checksum that is not a record this build knows is an error with its offset:
/// it was written by a newer version, and dropping it would lose what that version recorded.
pub(super) fn scan(bytes: &[u8]) -> Result<Scan, (u64, String)> {
    let mut records = Vec::new();
    let mut damaged = Vec::new();
    let mut valid_len = 0;
    let mut bad_last_line = None;
    for line in framing::lines(bytes) {
        if !line.complete {
            break;
        }
        match decode_line(line.bytes) {
            Ok(record) => records.push((line.offset as u64, record)),
            Err(LineError::Damaged(reason)) if line.last => {
                bad_last_line = Some(reason);
                break;
            }
            Err(LineError::Damaged(reason)) => damaged.push(DamagedLine {
                offset: line.offset as u64,
                len: line.bytes.len() as u64 + 1,
                reason,
            }),
            Err(LineError::Undecodable(reason)) => return Err((line.offset as u64, reason)),
        }
        valid_len = (line.offset + line.bytes.len() + 1) as u64;
    }
    Ok(Scan {
        records,
        damaged,
        valid_len,
        bad_last_line,
    })
}

/// The log file of a generation.
pub(super) fn log_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("wal-{generation}.log"))
}

/// The generation a file name `wal-<n>.log` stands for, if it is one (and spelt canonically,
/// so `wal-01.log` cannot alias `wal-1.log`).
fn parse_log_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    let generation: u64 = digits.parse().ok()?;
    (generation.to_string() == digits).then_some(generation)
}

/// All `wal-<n>.log` files in `dir`, by generation.
pub(super) fn list_logs(dir: &Path) -> Result<Vec<(u64, PathBuf)>, DatastoreError> {
    let io_err = |source| DatastoreError::Io {
        action: "list directory",
        path: dir.to_path_buf(),
        source,
    };
    let mut logs = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        if let Some(generation) = entry.file_name().to_str().and_then(parse_log_name) {
            logs.push((generation, entry.path()));
        }
    }
    logs.sort();
    Ok(logs)
}

/// Reads a whole log; `None` if it does not exist (a brand-new store, or a generation whose log
/// a crash kept from being created).
pub(super) fn read_log(path: &Path) -> Result<Option<Vec<u8>>, DatastoreError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DatastoreError::Io {
                action: "open",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| DatastoreError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
    Ok(Some(bytes))
}

/// Deletes a file; one already gone is fine.
pub(super) fn remove_file(path: &Path) -> Result<(), DatastoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DatastoreError::Io {
            action: "delete",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Makes creations, renames and deletions in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), DatastoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| DatastoreError::Io {
            action: "sync directory",
            path: dir.to_path_buf(),
            source,
        })
}

/// The log being appended to.
#[derive(Debug)]
pub(super) struct LogWriter {
    file: Arc<File>,
    path: PathBuf,
    /// Length of the intact prefix, i.e. where the next record starts.
    len: u64,
    /// Records in this log, replayed ones included; drives compaction.
    pub(super) records: usize,
    /// False if a failed append may have left part of a record behind.
    intact: bool,
}

impl LogWriter {
    fn options() -> OpenOptions {
        let mut options = OpenOptions::new();
        // O_APPEND: every write lands at the end, so a record is never interleaved with or
        // overwrites another, and there is no file position to get wrong after a truncation.
        options.read(true).append(true).mode(0o600);
        options
    }

    /// Creates a fresh, empty log at `path`, replacing a leftover of a failed compaction.
    pub(super) fn create(path: &Path) -> Result<LogWriter, DatastoreError> {
        remove_file(path)?;
        let file = Self::options()
            .create_new(true)
            .open(path)
            .map_err(|source| DatastoreError::Io {
                action: "create",
                path: path.to_path_buf(),
                source,
            })?;
        Ok(LogWriter {
            file: Arc::new(file),
            path: path.to_path_buf(),
            len: 0,
            records: 0,
            intact: true,
        })
    }

    /// Opens (creating if missing) the log recovery scanned; `valid_len` and `records` are
    /// what the scan found intact.
    pub(super) fn open_existing(
        path: &Path,
        valid_len: u64,
        records: usize,
    ) -> Result<LogWriter, DatastoreError> {
        let file =
            Self::options()
                .create(true)
                .open(path)
                .map_err(|source| DatastoreError::Io {
                    action: "open",
                    path: path.to_path_buf(),
                    source,
                })?;
        Ok(LogWriter {
            file: Arc::new(file),
            path: path.to_path_buf(),
            len: valid_len,
            records,
            intact: true,
        })
    }

    /// Cuts the file to the intact prefix.
    pub(super) fn truncate_to_valid(&self) -> Result<(), DatastoreError> {
        self.file
            .set_len(self.len)
            .map_err(|source| DatastoreError::Io {
                action: "truncate",
                path: self.path.clone(),
                source,
            })
    }

    /// `fdatasync`s the log.
    pub(super) fn sync(&self) -> Result<(), DatastoreError> {
        self.file.sync_data().map_err(|source| DatastoreError::Io {
            action: "sync",
            path: self.path.clone(),
            source,
        })
    }

    /// Appends one encoded line with a single `write(2)` (retried only if short or
    /// interrupted). On failure, cuts off whatever part of the line reached the file: a
    /// fragment followed by later records would read as mid-log corruption.
    pub(super) fn append(&mut self, line: &[u8]) -> Result<(), DatastoreError> {
        if let Err(source) = (&*self.file).write_all(line) {
            if let Err(cut) = self.truncate_to_valid() {
                tracing::error!(
                    error = %cut,
                    "datastore: cannot cut a partial record off the log; the next change \
                     starts a new log"
                );
                self.intact = false;
            }
            return Err(DatastoreError::Io {
                action: "append to",
                path: self.path.clone(),
                source,
            });
        }
        self.len += line.len() as u64;
        self.records += 1;
        Ok(())
    }

    /// Whether the file still ends at a record boundary.
    pub(super) fn is_intact(&self) -> bool {
        self.intact
    }

    /// The open file, shared with the syncer.
    pub(super) fn file(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// The file's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

/// State shared between the datastore (which appends) and its syncers.
#[derive(Debug)]
pub(super) struct Shared {
    state: Mutex<SyncState>,
    /// Signalled whenever a sync finishes or the log is switched.
    progress: Condvar,
    sync_count: AtomicU64,
    /// Set after a failed `fdatasync` of the current log; the datastore compacts before its
    /// next append.
    compaction_requested: AtomicBool,
}

#[derive(Debug)]
struct SyncState {
    /// The log records are currently appended to.
    file: Arc<File>,
    path: PathBuf,
    generation: u64,
    /// Every record up to this LSN has been written to `file` (or an earlier log).
    written: Lsn,
    /// Every record up to this LSN is durable.
    synced: Lsn,
    /// A leader is in `fdatasync`.
    in_flight: bool,
    /// The last `fdatasync` of the current log failed; records after `synced` are in doubt.
    failure: Option<String>,
}

impl Shared {
    pub(super) fn new(file: Arc<File>, path: PathBuf, generation: u64) -> Shared {
        Shared {
            state: Mutex::new(SyncState {
                file,
                path,
                generation,
                written: 0,
                synced: 0,
                in_flight: false,
                failure: None,
            }),
            progress: Condvar::new(),
            sync_count: AtomicU64::new(0),
            compaction_requested: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SyncState> {
        // Every critical section only assigns plain fields and cannot panic half-way, so the
        // state behind a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes that records up to `lsn` are in the current log file.
    pub(super) fn mark_written(&self, lsn: Lsn) {
        self.lock().written = lsn;
    }

    /// After a compaction: records now go to `file`, and everything up to `last_lsn` is durable
    /// in the synced snapshot, including records a failed `fdatasync` left in doubt.
    pub(super) fn switch_log(
        &self,
        file: Arc<File>,
        path: PathBuf,
        generation: u64,
        last_lsn: Lsn,
    ) {
        let mut state = self.lock();
        state.file = file;
        state.path = path;
        state.generation = generation;
        state.written = last_lsn;
        state.synced = state.synced.max(last_lsn);
        state.failure = None;
        self.compaction_requested.store(false, Ordering::Release);
        drop(state);
        self.progress.notify_all();
    }

    /// Points the syncer at another file, so tests can make `fdatasync` fail.
    #[cfg(any(test, feature = "fault-injection"))]
    pub(super) fn replace_file_for_test(&self, file: Arc<File>) {
        self.lock().file = file;
    }

    pub(super) fn compaction_requested(&self) -> bool {
        self.compaction_requested.load(Ordering::Acquire)
    }
}

/// Makes appended records durable, sharing one `fdatasync` among concurrent callers.
///
/// Obtained from [`super::Datastore::syncer`]; holds no reference to the datastore itself, so
/// it is used without the daemon's datastore lock.
#[derive(Clone, Debug)]
pub struct WalSyncer {
    shared: Arc<Shared>,
}

impl WalSyncer {
    pub(super) fn new(shared: Arc<Shared>) -> WalSyncer {
        WalSyncer { shared }
    }

    /// Blocks until every record with lsn <= `lsn` is on disk. Group commit: if an fdatasync
    /// is in flight, wait for it and re-check; otherwise become the leader, fdatasync once for
    /// everything written so far, wake all waiters. Stays correct across compaction (which
    /// swaps the log file and makes everything before it durable).
    ///
    /// Fails for an LSN that was never returned by the datastore, and, after an `fdatasync`
    /// error, for every LSN not yet durable until a compaction has rewritten the state.
    pub fn sync_through(&self, lsn: Lsn) -> Result<(), DatastoreError> {
        let shared = &*self.shared;
        let mut state = shared.lock();
        loop {
            if state.synced >= lsn {
                return Ok(());
            }
            if lsn > state.written {
                return Err(DatastoreError::LsnNotWritten {
                    lsn,
                    written: state.written,
                });
            }
            if let Some(reason) = &state.failure {
                return Err(DatastoreError::SyncFailed {
                    path: state.path.clone(),
                    synced: state.synced,
                    reason: reason.clone(),
                });
            }
            if state.in_flight {
                // The sync in flight may have started before our record was written: wait for
                // it, then look again.
                state = shared
                    .progress
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Leader: everything written so far rides on this one fdatasync.
            state.in_flight = true;
            let file = Arc::clone(&state.file);
            let generation = state.generation;
            let target = state.written;
            drop(state);
            let outcome = file.sync_data();
            shared.sync_count.fetch_add(1, Ordering::Relaxed);
            state = shared.lock();
            state.in_flight = false;
            match outcome {
                Ok(()) => state.synced = state.synced.max(target),
                // A failure on a log a compaction has since replaced is moot: the snapshot
                // already made those records durable.
                Err(error) if generation == state.generation => {
                    tracing::error!(
                        log = %state.path.display(),
                        %error,
                        "datastore: fdatasync failed; the next change compacts the store"
                    );
                    state.failure = Some(error.to_string());
                    shared.compaction_requested.store(true, Ordering::Release);
                }
                Err(_) => {}
            }
            shared.progress.notify_all();
        }
    }

    /// The highest LSN known durable.
    pub fn synced_lsn(&self) -> Lsn {
        self.shared.lock().synced
    }

    /// How many `fdatasync`s the syncers have issued (for metrics, and for tests that check
    /// group commit shares them).
    pub fn sync_count(&self) -> u64 {
        self.shared.sync_count.load(Ordering::Relaxed)
    }
}
