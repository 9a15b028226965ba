//! The node daemon's crash-safe record of which pod attachment holds which IPv4 address.
//!
//! # Files
//!
//! The store lives in one directory (created `0700`):
//!
//! * `snapshot.json`: `{"format":"wasmcni-datastore/1","generation":G,"allocations":[...]}`,
//!   the whole state as of the start of generation `G`. Absent until the first compaction
//!   (generation 0 starts empty).
//! * `wal-<G>.log`: the write-ahead log of generation `G`, one record per line:
//!   `<8 hex digits of the CRC-32 of the JSON> <JSON>\n`. Records are `reserve`, `commit` and
//!   `release`; each is appended with one `write(2)` on an `O_APPEND` descriptor and no
//!   userspace buffer, so a crash can only lose an unsynced tail, never reorder records.
//! * `snapshot.json.tmp`: a snapshot being written; removed on open.
//!
//! # Durability
//!
//! [`Datastore::reserve`], [`Datastore::commit`] and [`Datastore::release`] append and return
//! the record's [`Lsn`] without syncing, because the daemon calls them under a mutex and one
//! `fdatasync` per request would serialise every ADD and DEL on the disk. A caller that must not
//! answer before its change is durable calls [`WalSyncer::sync_through`] after dropping that
//! mutex; concurrent callers share one `fdatasync` (group commit).
//!
//! # Compaction
//!
//! When the log holds more than [`WalOptions::compact_after_records`] records, the next
//! mutation writes generation `G+1`: snapshot to the temp file, fsync, rename over
//! `snapshot.json`, fsync the directory, create an empty `wal-<G+1>.log`, fsync the directory,
//! delete `wal-<G>.log`. Recovery reads the snapshot's generation and replays only that
//! generation's log, so a crash between any two steps recovers the same state.
//!
//! # Recovery
//!
//! [`Datastore::open`] loads the snapshot, replays the log, cuts off a torn tail (a last line
//! without its newline, or a last line whose checksum fails), deletes stale files, and syncs
//! what it read, since records written just before a daemon crash may still be only in the
//! page cache. Damage anywhere but the last record is refused with the file and byte offset:
//! silently dropping a record from the middle could hand one IP to two pods.

mod snapshot;
mod wal;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, DirBuilder};
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wasmcni_core::PodRoutes;

pub use wal::WalSyncer;

use wal::{LogWriter, Record, RecordRef};

/// Log sequence number: the position of a record among those appended since
/// [`Datastore::open`]. Numbers start at 1; 0 means "everything recovered at open", which is
/// durable by the time `open` returns.
pub type Lsn = u64;

/// Identifies one pod attachment the way CNI does: container ID plus interface name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttachmentKey {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`, e.g. `eth0`.
    pub ifname: String,
}

impl AttachmentKey {
    /// Builds a key from a container ID and an interface name.
    pub fn new(container_id: impl Into<String>, ifname: impl Into<String>) -> Self {
        AttachmentKey {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }
}

impl fmt::Display for AttachmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.container_id, self.ifname)
    }
}

/// The Kubernetes pod an attachment belongs to, when the runtime said (`K8S_POD_*` CNI args).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How far an ADD got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllocationState {
    /// The ADD is in progress: the IP is taken but the runtime has not been answered. Found
    /// after a crash, it is an attachment to tear down or finish.
    Reserved,
    /// The runtime was (about to be) given a result; the attachment is live until DEL.
    Committed,
}

/// One attachment's claim on an IP, with what the data path and DEL need to undo it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    /// Which attachment holds the IP.
    pub key: AttachmentKey,
    /// Network (conflist) name.
    pub network: String,
    /// The pod's address.
    pub ip: IpAddr,
    /// Host-side veth name, e.g. `eni1a2b3c4d5e6`.
    pub host_veth: String,
    /// `CNI_NETNS` at ADD time.
    pub netns: String,
    /// The pod, when known.
    pub pod: Option<PodRef>,
    /// Policy-routing table of the pod's ENI; `None` is the main table.
    pub route_table: Option<u32>,
    /// How far the ADD got.
    pub state: AllocationState,
    /// What the pod's interface routes, as the ADD built it (stored at commit; the first
    /// interface's shape is not written, so older datastores read back as it).
    #[serde(default, skip_serializing_if = "PodRoutes::is_first_interface")]
    pub pod_routes: PodRoutes,
    /// The CNI result (1.1.0 JSON) stored at commit.
    pub result: Option<serde_json::Value>,
    /// When the reservation was made, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
}

/// Tuning of the write-ahead log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Compact (write a snapshot and start a new log) once the log holds more than this many
    /// records. Bounds both log size and replay time.
    pub compact_after_records: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            compact_after_records: 4096,
        }
    }
}

/// What [`Datastore::open`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct RecoveryReport {
    /// Log records applied on top of the snapshot.
    pub records_replayed: usize,
    /// Bytes cut off the end of the log (a record whose write a crash interrupted).
    pub torn_tail_bytes: u64,
    /// Whether a snapshot was read (false until the first compaction).
    pub snapshot_loaded: bool,
    /// The generation now in use (the snapshot's, or 0 without one).
    pub generation: u64,
    /// Allocations still `Reserved`: ADDs the crash interrupted, for the caller to tear down
    /// or finish.
    pub incomplete: Vec<Allocation>,
}

/// Why a datastore operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DatastoreError {
    /// `reserve` for an attachment that already has an allocation.
    #[error(
        "attachment {key} already holds {ip}; release it (CNI DEL) before reserving again, \
         or reuse its allocation"
    )]
    AttachmentExists {
        /// The attachment.
        key: AttachmentKey,
        /// The IP it holds.
        ip: IpAddr,
    },
    /// `reserve` of an IP another attachment holds.
    #[error(
        "{ip} is already held by attachment {holder}; choose another address or release \
         {holder} first"
    )]
    IpInUse {
        /// The contested address.
        ip: IpAddr,
        /// The attachment holding it.
        holder: AttachmentKey,
    },
    /// `commit` for an attachment without an allocation.
    #[error("no allocation for attachment {key}; reserve an IP for it before committing")]
    NotFound {
        /// The attachment.
        key: AttachmentKey,
    },
    /// `commit` was given `null` as the result, which could not be told apart from "no result"
    /// once stored.
    #[error("cannot commit attachment {key} with a null result; pass the CNI result object")]
    NullResult {
        /// The attachment.
        key: AttachmentKey,
    },
    /// `reserve` was given an allocation it cannot store as a new reservation.
    #[error("cannot reserve an IP for attachment {key}: {reason}")]
    InvalidReservation {
        /// The attachment.
        key: AttachmentKey,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A file-system operation failed.
    #[error(
        "datastore: cannot {action} {path}: {source}; check that the state directory is on a \
         writable, non-full file system owned by the daemon"
    )]
    Io {
        /// What was being done, e.g. "append to".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The state directory belongs to another user, who could plant records in it (a forged
    /// log is a duplicate address on the node).
    #[error(
        "datastore: the state directory {path} belongs to uid {owner}, not to the daemon (uid \
         {daemon}); another user could rewrite which pod holds which address: chown it to the \
         daemon's user, or point daemon.state_dir elsewhere"
    )]
    NotPrivate {
        /// The state directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The daemon's effective uid.
        daemon: u32,
    },
    /// A log record other than the last is damaged, or a record is not one this build wrote.
    #[error(
        "datastore log {path} is corrupt at byte offset {offset}: {reason}; the daemon will not \
         guess which IPs are in use: inspect the file, and restore a backup or move the state \
         directory aside (pods on this node will then need to be recreated)"
    )]
    CorruptLog {
        /// The log file.
        path: PathBuf,
        /// Byte offset of the start of the bad record.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The snapshot cannot be read as this build's snapshot format.
    #[error(
        "datastore snapshot {path} is invalid: {reason}; restore a backup or move the state \
         directory aside (pods on this node will then need to be recreated)"
    )]
    CorruptSnapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The snapshot was written by a different (probably newer) version.
    #[error(
        "datastore snapshot {path} has format {found:?}, but this build reads only \
         {expected:?}; run a wasmcni version that understands it",
        expected = snapshot::FORMAT
    )]
    UnknownFormat {
        /// The snapshot file.
        path: PathBuf,
        /// The format it declares.
        found: String,
    },
    /// A non-empty log of a generation newer than the snapshot: the snapshot was lost or
    /// replaced, so replaying either would miss records.
    #[error(
        "datastore log {path} belongs to generation {log_generation}, newer than the snapshot's \
         generation {snapshot_generation}; snapshot.json was deleted or replaced: restore it, \
         or move the state directory aside"
    )]
    OrphanLog {
        /// The log file.
        path: PathBuf,
        /// Its generation.
        log_generation: u64,
        /// The snapshot's generation (0 without a snapshot).
        snapshot_generation: u64,
    },
    /// [`WalSyncer::sync_through`] was asked for a record that was never appended.
    #[error(
        "cannot sync through LSN {lsn}: only {written} records were appended since the store \
         was opened; pass an LSN returned by this store"
    )]
    LsnNotWritten {
        /// The requested LSN.
        lsn: Lsn,
        /// The last LSN appended.
        written: Lsn,
    },
    /// `fdatasync` of the log failed, so records after `synced` may not survive a power loss.
    #[error(
        "cannot make datastore log {path} durable (fdatasync: {reason}); records after LSN \
         {synced} may be lost on power failure; the next change rewrites the state into a new \
         snapshot, check the disk"
    )]
    SyncFailed {
        /// The log file.
        path: PathBuf,
        /// The last LSN known durable.
        synced: Lsn,
        /// The I/O error, as text (it is reported to every waiter).
        reason: String,
    },
    /// A record or snapshot could not be serialised (a bug: every field is plain data).
    #[error("cannot encode datastore {what}: {source}; this is a bug, please report it")]
    Encode {
        /// What was being encoded, e.g. "log record for attachment <key>".
        what: String,
        /// The serialiser's error.
        source: serde_json::Error,
    },
}

/// The allocations, indexed by key, IP and host veth. Pure: no I/O.
#[derive(Debug, Default)]
struct Index {
    by_key: BTreeMap<AttachmentKey, Allocation>,
    by_ip: HashMap<IpAddr, AttachmentKey>,
    // Not unique: a recreated pod sandbox gets the same veth name (it derives from the pod's
    // namespace and name) while the old attachment may still wait for its DEL.
    by_veth: HashMap<String, BTreeSet<AttachmentKey>>,
}

impl Index {
    /// Checks that `alloc` can be added as a new reservation.
    fn check_reservable(&self, alloc: &Allocation) -> Result<(), DatastoreError> {
        let invalid = |reason: &str| DatastoreError::InvalidReservation {
            key: alloc.key.clone(),
            reason: reason.to_string(),
        };
        if alloc.key.container_id.is_empty() || alloc.key.ifname.is_empty() {
            return Err(invalid(
                "container ID and interface name must both be non-empty",
            ));
        }
        if alloc.state != AllocationState::Reserved {
            return Err(invalid(
                "a new allocation must be in state Reserved; commit it afterwards",
            ));
        }
        if alloc.result.is_some() {
            return Err(invalid(
                "a new allocation must not carry a result; pass the result to commit",
            ));
        }
        if let Some(existing) = self.by_key.get(&alloc.key) {
            return Err(DatastoreError::AttachmentExists {
                key: alloc.key.clone(),
                ip: existing.ip,
            });
        }
        if let Some(holder) = self.by_ip.get(&alloc.ip) {
            return Err(DatastoreError::IpInUse {
                ip: alloc.ip,
                holder: holder.clone(),
            });
        }
        Ok(())
    }

    /// Adds an allocation already checked by [`Index::check_reservable`] (or loaded from a
    /// snapshot and checked there).
    fn insert(&mut self, alloc: Allocation) {
        self.by_ip.insert(alloc.ip, alloc.key.clone());
        self.by_veth
            .entry(alloc.host_veth.clone())
            .or_default()
            .insert(alloc.key.clone());
        self.by_key.insert(alloc.key.clone(), alloc);
    }

    fn commit(
        &mut self,
        key: &AttachmentKey,
        result: serde_json::Value,
        pod_routes: PodRoutes,
    ) -> Result<(), DatastoreError> {
        let alloc = self
            .by_key
            .get_mut(key)
            .ok_or_else(|| DatastoreError::NotFound { key: key.clone() })?;
        alloc.state = AllocationState::Committed;
        alloc.result = Some(result);
        alloc.pod_routes = pod_routes;
        Ok(())
    }

    fn remove(&mut self, key: &AttachmentKey) -> Option<Allocation> {
        let alloc = self.by_key.remove(key)?;
        self.by_ip.remove(&alloc.ip);
        if let Some(keys) = self.by_veth.get_mut(&alloc.host_veth) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_veth.remove(&alloc.host_veth);
            }
        }
        Some(alloc)
    }

    /// Checks a snapshot allocation: reservable rules, except that it may be committed.
    fn check_reservable_from_snapshot(&self, alloc: &Allocation) -> Result<(), String> {
        if let Some(existing) = self.by_key.get(&alloc.key) {
            return Err(format!(
                "attachment {} appears twice (second time with {})",
                existing.key, alloc.ip
            ));
        }
        if let Some(holder) = self.by_ip.get(&alloc.ip) {
            return Err(format!(
                "{} is held by both {} and {}",
                alloc.ip, holder, alloc.key
            ));
        }
        if alloc.state == AllocationState::Reserved && alloc.result.is_some() {
            return Err(format!(
                "attachment {} is Reserved but has a result",
                alloc.key
            ));
        }
        Ok(())
    }

    /// Applies a replayed record with the same checks as the live operation, so a log that
    /// contradicts itself is reported instead of producing a state no live run could reach.
    fn apply(&mut self, record: Record) -> Result<(), String> {
        match record {
            Record::Reserve { allocation } => {
                if let Err(error) = self.check_reservable(&allocation) {
                    return Err(match error {
                        DatastoreError::AttachmentExists { key, ip } => {
                            format!("reserve record for attachment {key}, which already holds {ip}")
                        }
                        DatastoreError::IpInUse { ip, holder } => format!(
                            "reserve record gives {ip} to {}, but {holder} holds it",
                            allocation.key
                        ),
                        other => format!("reserve record is invalid: {other}"),
                    });
                }
                self.insert(allocation);
            }
            Record::Commit {
                key,
                result,
                pod_routes,
            } => {
                if result.is_null() {
                    return Err(format!(
                        "commit record for attachment {key} has a null result"
                    ));
                }
                if self.commit(&key, result, pod_routes).is_err() {
                    return Err(format!(
                        "commit record for attachment {key}, which holds no allocation"
                    ));
                }
            }
            Record::Release { key } => {
                if self.remove(&key).is_none() {
                    return Err(format!(
                        "release record for attachment {key}, which holds no allocation"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Loads the snapshot into a checked index; returns it with the generation and whether a
/// snapshot existed.
fn load_snapshot(dir: &Path) -> Result<(Index, u64, bool), DatastoreError> {
    let Some(loaded) = snapshot::load(dir)? else {
        return Ok((Index::default(), 0, false));
    };
    let mut index = Index::default();
    for alloc in loaded.allocations {
        index
            .check_reservable_from_snapshot(&alloc)
            .map_err(|reason| DatastoreError::CorruptSnapshot {
                path: snapshot::path(dir),
                reason,
            })?;
        index.insert(alloc);
    }
    Ok((index, loaded.generation, true))
}

/// The logs of other generations than `generation`, to delete. Older ones are superseded by the
/// snapshot. A newer one can only be an empty leftover of a compaction that crashed, since a
/// new log is created only after its snapshot is durable; if it holds records, the snapshot
/// that goes with it is missing, and replaying anything would lose them.
fn stale_logs(dir: &Path, generation: u64) -> Result<Vec<PathBuf>, DatastoreError> {
    let mut stale = Vec::new();
    for (log_generation, path) in wal::list_logs(dir)? {
        if log_generation > generation {
            let len = fs::metadata(&path)
                .map_err(|source| DatastoreError::Io {
                    action: "inspect",
                    path: path.clone(),
                    source,
                })?
                .len();
            if len > 0 {
                return Err(DatastoreError::OrphanLog {
                    path,
                    log_generation,
                    snapshot_generation: generation,
                });
            }
        }
        if log_generation != generation {
            stale.push(path);
        }
    }
    Ok(stale)
}

/// Replays a log image onto `index`; returns the number of records applied and the length of
/// the intact prefix.
fn replay(index: &mut Index, path: &Path, bytes: &[u8]) -> Result<(usize, u64), DatastoreError> {
    let corrupt = |offset, reason| DatastoreError::CorruptLog {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let scan = wal::scan(bytes).map_err(|(offset, reason)| corrupt(offset, reason))?;
    let records = scan.records.len();
    for (offset, record) in scan.records {
        index
            .apply(record)
            .map_err(|reason| corrupt(offset, reason))?;
    }
    Ok((records, scan.valid_len))
}

/// Where [`Datastore::compact_until`] stops; every stop but `Complete` imitates a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
enum CompactStop {
    /// After the temp snapshot is written and synced, before the rename.
    TempWritten,
    /// After the rename, before the directory is synced and the new log exists.
    Renamed,
    /// After the new log is created, before the old one is deleted.
    NewLogCreated,
    /// The whole sequence.
    Complete,
}

/// The record of pod attachments and their IPs, backed by a write-ahead log.
///
/// Not internally synchronised: the daemon keeps it behind a mutex and calls
/// [`WalSyncer::sync_through`] after releasing the lock.
pub struct Datastore {
    dir: PathBuf,
    options: WalOptions,
    index: Index,
    generation: u64,
    log: LogWriter,
    // False when the current log must not be appended to: after a failed write could not be
    // cut off, or after a compaction that renamed the new snapshot into place but did not
    // finish (recovery would ignore the old log). The next mutation compacts first.
    log_usable: bool,
    // Log length (in records) before which compaction is not retried after a failure, so a
    // full disk does not cost a snapshot write on every request.
    compaction_retry_at: usize,
    last_lsn: Lsn,
    shared: Arc<wal::Shared>,
}

impl fmt::Debug for Datastore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datastore")
            .field("dir", &self.dir)
            .field("generation", &self.generation)
            .field("allocations", &self.index.by_key.len())
            .field("log_records", &self.log.records)
            .field("last_lsn", &self.last_lsn)
            .finish_non_exhaustive()
    }
}

impl Datastore {
    /// Opens (creating dir 0700 if needed) the store in `dir`, loads the snapshot and replays
    /// the log, truncates a torn tail (partial last line or bad checksum in the LAST record
    /// only), and returns an error naming the file and byte offset for corruption anywhere
    /// else.
    ///
    /// Everything recovered is durable when this returns; stale logs and a leftover temp
    /// snapshot are deleted.
    pub fn open(
        dir: &Path,
        options: WalOptions,
    ) -> Result<(Datastore, RecoveryReport), DatastoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| DatastoreError::Io {
                action: "create directory",
                path: dir.to_path_buf(),
                source,
            })?;
        make_private(dir)?;

        // Read everything first and change nothing until it all checks out, so a refusal
        // leaves the directory as the operator found it.
        let (mut index, generation, snapshot_loaded) = load_snapshot(dir)?;
        let stale = stale_logs(dir, generation)?;
        let log_path = wal::log_path(dir, generation);
        let existing = wal::read_log(&log_path)?;
        let log_created = existing.is_none();
        let bytes = existing.unwrap_or_default();
        let (records_replayed, valid_len) = replay(&mut index, &log_path, &bytes)?;
        let torn_tail_bytes = bytes.len() as u64 - valid_len;

        // Now repair: cut the torn tail, sync the log (its records may be only in the page
        // cache if the daemon rather than the machine crashed), drop stale files.
        let log = LogWriter::open_existing(&log_path, valid_len, records_replayed)?;
        if torn_tail_bytes > 0 {
            tracing::warn!(
                log = %log_path.display(),
                offset = valid_len,
                bytes = torn_tail_bytes,
                "datastore: cutting off a record a crash interrupted"
            );
            log.truncate_to_valid()?;
        }
        log.sync()?;
        let mut dir_changed = log_created;
        if snapshot::remove_temp(dir)? {
            tracing::info!(dir = %dir.display(), "datastore: removed an unfinished snapshot");
            dir_changed = true;
        }
        for path in stale {
            wal::remove_file(&path)?;
            tracing::info!(log = %path.display(), "datastore: removed a stale log");
            dir_changed = true;
        }
        if dir_changed {
            wal::sync_dir(dir)?;
        }

        let incomplete: Vec<Allocation> = index
            .by_key
            .values()
            .filter(|a| a.state == AllocationState::Reserved)
            .cloned()
            .collect();
        let report = RecoveryReport {
            records_replayed,
            torn_tail_bytes,
            snapshot_loaded,
            generation,
            incomplete,
        };
        tracing::info!(
            dir = %dir.display(),
            generation,
            allocations = index.by_key.len(),
            records_replayed,
            torn_tail_bytes,
            incomplete = report.incomplete.len(),
            "datastore opened"
        );
        let shared = Arc::new(wal::Shared::new(
            log.file(),
            log.path().to_path_buf(),
            generation,
        ));
        let store = Datastore {
            dir: dir.to_path_buf(),
            options,
            index,
            generation,
            log,
            log_usable: true,
            compaction_retry_at: 0,
            last_lsn: 0,
            shared,
        };
        Ok((store, report))
    }

    /// New allocation in Reserved state. Errors: key already present (AttachmentExists with
    /// the key and its IP), IP already held by another key (IpInUse naming IP and holder).
    /// The IP-never-twice invariant is enforced HERE.
    ///
    /// `alloc.state` must be [`AllocationState::Reserved`] and `alloc.result` `None`.
    pub fn reserve(&mut self, alloc: Allocation) -> Result<Lsn, DatastoreError> {
        self.index.check_reservable(&alloc)?;
        let lsn = self.append(&RecordRef::Reserve { allocation: &alloc })?;
        self.index.insert(alloc);
        self.compact_if_due();
        Ok(lsn)
    }

    /// Reserved -> Committed, storing the result and the routes the pod's interface got.
    /// Error if key missing.
    ///
    /// Committing an already committed allocation replaces its stored result. A `null` result
    /// is refused: stored as `Option<Value>`, it would read back as no result.
    pub fn commit(
        &mut self,
        key: &AttachmentKey,
        result: serde_json::Value,
        pod_routes: &PodRoutes,
    ) -> Result<Lsn, DatastoreError> {
        if result.is_null() {
            return Err(DatastoreError::NullResult { key: key.clone() });
        }
        if !self.index.by_key.contains_key(key) {
            return Err(DatastoreError::NotFound { key: key.clone() });
        }
        let lsn = self.append(&RecordRef::Commit {
            key,
            result: &result,
            pod_routes,
        })?;
        self.index.commit(key, result, pod_routes.clone())?;
        self.compact_if_due();
        Ok(lsn)
    }

    /// Removes the allocation (either state). Ok(None, lsn) if it was not there (DEL is
    /// idempotent).
    ///
    /// When nothing is removed no record is written and the LSN is the last one appended, so
    /// syncing through it still makes the observed absence durable.
    pub fn release(
        &mut self,
        key: &AttachmentKey,
    ) -> Result<(Option<Allocation>, Lsn), DatastoreError> {
        if !self.index.by_key.contains_key(key) {
            return Ok((None, self.last_lsn));
        }
        let lsn = self.append(&RecordRef::Release { key })?;
        let removed = self.index.remove(key);
        self.compact_if_due();
        Ok((removed, lsn))
    }

    /// The allocation of an attachment.
    pub fn get(&self, key: &AttachmentKey) -> Option<&Allocation> {
        self.index.by_key.get(key)
    }

    /// The allocation holding `ip`.
    pub fn holder_of(&self, ip: impl Into<IpAddr>) -> Option<&Allocation> {
        let ip = ip.into();
        self.index
            .by_ip
            .get(&ip)
            .and_then(|key| self.index.by_key.get(key))
    }

    /// The allocation using host veth `host_veth`. Should several (a recreated sandbox of the
    /// same pod before the old one's DEL), the most recently created one, ties broken by the
    /// greater key.
    pub fn find_by_veth(&self, host_veth: &str) -> Option<&Allocation> {
        self.index
            .by_veth
            .get(host_veth)?
            .iter()
            .filter_map(|key| self.index.by_key.get(key))
            .max_by(|a, b| {
                a.created_unix_ms
                    .cmp(&b.created_unix_ms)
                    .then_with(|| a.key.cmp(&b.key))
            })
    }

    /// All allocations, ordered by key.
    pub fn allocations(&self) -> impl Iterator<Item = &Allocation> {
        self.index.by_key.values()
    }

    /// Number of allocations.
    pub fn len(&self) -> usize {
        self.index.by_key.len()
    }

    /// Whether there are no allocations.
    pub fn is_empty(&self) -> bool {
        self.index.by_key.is_empty()
    }

    /// The LSN of the last record appended (0 if none since open).
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    /// The generation in use: the snapshot's, bumped by every compaction.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The directory holding the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Handle to make appended records durable; cheap to clone, usable without holding the
    /// Datastore lock.
    pub fn syncer(&self) -> WalSyncer {
        WalSyncer::new(Arc::clone(&self.shared))
    }

    /// Writes a snapshot and starts a new log now, whatever the log's length (for example at
    /// shutdown, to make the next start fast). Everything appended so far is durable after it.
    pub fn compact(&mut self) -> Result<(), DatastoreError> {
        self.compact_until(CompactStop::Complete)
    }

    /// Appends one record and publishes its LSN to the syncer.
    fn append(&mut self, record: &RecordRef<'_>) -> Result<Lsn, DatastoreError> {
        if !self.log_usable || self.shared.compaction_requested() {
            // After a failed fdatasync the kernel may have dropped the dirty pages, and a
            // later fdatasync can report success without writing them: only rewriting the
            // state from memory into a new snapshot makes it durable again.
            self.compact()?;
        }
        let line = wal::encode(record)?;
        if let Err(error) = self.log.append(&line) {
            if !self.log.is_intact() {
                self.log_usable = false;
            }
            return Err(error);
        }
        self.last_lsn += 1;
        self.shared.mark_written(self.last_lsn);
        Ok(self.last_lsn)
    }

    /// Compacts if the log is long enough. A failure is logged, not returned: the mutation that
    /// triggered it is already in the log and in memory.
    fn compact_if_due(&mut self) {
        let records = self.log.records;
        if records <= self.options.compact_after_records || records < self.compaction_retry_at {
            return;
        }
        if let Err(error) = self.compact() {
            self.compaction_retry_at = records + self.options.compact_after_records.max(1);
            tracing::warn!(
                dir = %self.dir.display(),
                %error,
                retry_after_records = self.compaction_retry_at,
                "datastore: compaction failed; the log keeps growing until it succeeds"
            );
        }
    }

    /// The compaction sequence, stopping early at `stop` to imitate a crash in tests.
    fn compact_until(&mut self, stop: CompactStop) -> Result<(), DatastoreError> {
        let new_generation = self.generation + 1;
        snapshot::write_temp(&self.dir, new_generation, self.index.by_key.values())?;
        if stop == CompactStop::TempWritten {
            return Ok(());
        }
        snapshot::install(&self.dir)?;
        // From here recovery replays only the new generation's log: the old one must never be
        // appended to again, even if the rest of this sequence fails.
        self.generation = new_generation;
        self.log_usable = false;
        if stop == CompactStop::Renamed {
            return Ok(());
        }
        wal::sync_dir(&self.dir)?;
        let new_log = LogWriter::create(&wal::log_path(&self.dir, new_generation))?;
        // The new log's directory entry must be durable before records synced into it count.
        wal::sync_dir(&self.dir)?;
        if stop == CompactStop::NewLogCreated {
            return Ok(());
        }
        let old_path = std::mem::replace(&mut self.log, new_log)
            .path()
            .to_path_buf();
        self.log_usable = true;
        self.compaction_retry_at = 0;
        // The synced snapshot holds every record appended so far.
        self.shared.switch_log(
            self.log.file(),
            self.log.path().to_path_buf(),
            new_generation,
            self.last_lsn,
        );
        // A leftover old log is harmless (recovery deletes it), so failing to delete it here
        // must not fail the mutation that triggered compaction.
        if let Err(error) = wal::remove_file(&old_path) {
            tracing::warn!(%error, "datastore: could not delete the previous log");
        }
        tracing::debug!(
            dir = %self.dir.display(),
            generation = new_generation,
            allocations = self.index.by_key.len(),
            "datastore compacted"
        );
        Ok(())
    }
}

/// Makes sure the state directory is the daemon's alone: owned by its user (else
/// [`DatastoreError::NotPrivate`]; in a user namespace a host directory may show as owned by
/// 65534) and mode 0700. A directory others may enter is tightened, with a warning (and only a
/// warning where the file system refuses the mode): a hostPath volume that kubelet creates (`DirectoryOrCreate`) is 0755, and a
/// store others can read exposes every pod's address and netns.
fn make_private(dir: &Path) -> Result<(), DatastoreError> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(dir).map_err(|source| DatastoreError::Io {
        action: "inspect",
        path: dir.to_path_buf(),
        source,
    })?;
    let daemon = nix::unistd::geteuid().as_raw();
    if meta.uid() != daemon {
        return Err(DatastoreError::NotPrivate {
            path: dir.to_path_buf(),
            owner: meta.uid(),
            daemon,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    if let Err(e) = fs::set_permissions(dir, fs::Permissions::from_mode(0o700)) {
        // A file system that keeps its own modes: the directory is the daemon's, so serve.
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{mode:o}"),
            error = %e,
            "the datastore directory is open to other users and cannot be made private; restrict it by other means"
        );
        return Ok(());
    }
    tracing::warn!(
        dir = %dir.display(),
        was = format!("{mode:o}"),
        "the datastore directory was open to other users; it is now mode 700"
    );
    Ok(())
}
