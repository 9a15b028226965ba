//! The node daemon's crash-safe record of which pod attachment holds which IPv4 address.
//!
//! # Files
//!
//! The store lives in one directory (created `0700`):
//!
//! * `snapshot.jsonl`: the whole state as of the start of generation `G`, framed like the log
//!   (below): a header line `{"format":"wasmcni-datastore/2","generation":G,"allocations":N}`
//!   and one line per allocation. Absent until the first compaction (generation 0 starts
//!   empty). `snapshot.json` is the unframed format-1 file of earlier versions, read when there
//!   is no `snapshot.jsonl` and deleted by the first compaction.
//! * `snapshot.prev.jsonl`: the snapshot before it (generation `P`), kept with its log as the
//!   fallback for a damaged current snapshot.
//! * `wal-<G>.log`: the write-ahead log of generation `G`, one record per line:
//!   `<8 hex digits of the CRC-32 of the JSON> <JSON>\n`. Records are `reserve`, `commit` and
//!   `release`; each is appended with one `write(2)` on an `O_APPEND` descriptor and no
//!   userspace buffer, so a crash can only lose an unsynced tail, never reorder records.
//!   `wal-<P>.log` is kept beside it.
//! * `snapshot.jsonl.tmp`, `snapshot.prev.jsonl.tmp`: being written; removed on open.
//! * `damaged/`: copies of files recovery found damaged (the newest few), for inspection.
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
//! mutation writes generation `G+1`: snapshot to the temp file, fsync, the current snapshot
//! hard-linked over the previous one, the temp renamed over the current, fsync the directory,
//! create an empty `wal-<G+1>.log`, fsync the directory, delete the logs older than `G` (and a
//! format-1 snapshot). Recovery reads the snapshot's generation and replays that generation's
//! log, so a crash between any two steps recovers the same state.
//!
//! # Recovery
//!
//! [`Datastore::open`] loads the snapshot, replays the log, cuts off a torn tail (a last line
//! without its newline, or a last line whose checksum fails), deletes stale files, and syncs
//! what it read, since records written just before a daemon crash may still be only in the
//! page cache. Damage elsewhere (every line carries its own checksum) costs only the damaged
//! lines and the records that no longer fit without them; a damaged snapshot is rebuilt from
//! the previous one when that loses nothing. What was lost is reported, never silently dropped
//! (see `recover.rs`), and the recovered state is compacted into a clean generation.

mod recover;
mod snapshot;
mod wal;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_damage;

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
    /// An IPv6 pod's node-local IPv4 address for IPv4 egress (`datapath.ipv4_egress`); held
    /// like `ip`: by one attachment at a time. Absent from records that have none, so older
    /// datastores read back unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_v4: Option<std::net::Ipv4Addr>,
    /// A dual-stack pod's IPv6 address (`ip` is then its IPv4 one); held like `ip`. Absent
    /// from records that have none, so older datastores read back unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<std::net::Ipv6Addr>,
}

impl Allocation {
    /// Every address the attachment holds: its pod addresses, then its egress address if any.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.pod_addresses().chain(self.egress_v4.map(IpAddr::V4))
    }

    /// The pod's own addresses: `ip`, then a dual-stack pod's IPv6 address.
    pub fn pod_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        std::iter::once(self.ip).chain(self.ipv6.map(IpAddr::V6))
    }

    /// Why the attachment's addresses cannot be one record's, if they cannot: one address
    /// twice, or a second IPv6 address beside an IPv6 `ip`.
    fn inconsistency(&self) -> Option<&'static str> {
        if self.egress_v4.map(IpAddr::V4) == Some(self.ip) {
            return Some("the egress address is the pod address");
        }
        if self.ipv6.is_some() && self.ip.is_ipv6() {
            return Some("a dual-stack attachment's first address must be its IPv4 one");
        }
        None
    }
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
    /// What damage cost: each unreadable line and each readable record dropped because it no
    /// longer fits (see the recovery notes at the top of this crate). Empty after a clean stop
    /// or an ordinary crash. When it is not, a live pod's address may be missing from the
    /// store, and the caller must find out from the node which addresses are in use.
    pub lost: Vec<Damage>,
    /// Damage found in the current snapshot that the previous snapshot and the logs since
    /// made good: nothing lost.
    pub repaired: Vec<Damage>,
    /// Copies of the damaged files, under `damaged/` in the state directory.
    pub set_aside: Vec<PathBuf>,
}

/// Something recovery could not read, or read and could not apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The file.
    pub file: PathBuf,
    /// The byte offset of the line, when it is one line.
    pub offset: Option<u64>,
    /// What was wrong, and what it cost.
    pub what: String,
    /// Whether the file's bytes are damaged (rather than a readable record dropped because it
    /// contradicts what came before it).
    pub unreadable: bool,
}

impl Damage {
    fn unreadable(file: &Path, offset: Option<u64>, what: &str) -> Damage {
        Damage {
            file: file.to_path_buf(),
            offset,
            what: what.to_string(),
            unreadable: true,
        }
    }

    fn dropped(file: &Path, offset: Option<u64>, what: String) -> Damage {
        Damage {
            file: file.to_path_buf(),
            offset,
            what,
            unreadable: false,
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(offset) => write!(f, "{} at byte {offset}: {}", self.file.display(), self.what),
            None => write!(f, "{}: {}", self.file.display(), self.what),
        }
    }
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
    /// A log record with a valid checksum that this build does not know: written by a newer
    /// version, whose meaning recovery must not guess.
    #[error(
        "datastore log {path} holds, at byte offset {offset}, a record this build cannot read: \
         {reason}; run the wasmcni version that wrote it (or a newer one)"
    )]
    UnknownRecord {
        /// The log file.
        path: PathBuf,
        /// Byte offset of the start of the record.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The snapshot was written by a different (probably newer) version.
    #[error(
        "datastore snapshot {path} has format {found:?}, but this build reads only \
         {expected:?} (and the format-1 file of earlier versions); run a wasmcni version that \
         understands it",
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
         generation {snapshot_generation}; the snapshot was deleted or replaced by an older one: \
         restore it, or move the state directory aside"
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
        for ip in alloc.addresses() {
            if let Some(holder) = self.by_ip.get(&ip) {
                return Err(DatastoreError::IpInUse {
                    ip,
                    holder: holder.clone(),
                });
            }
        }
        if let Some(why) = alloc.inconsistency() {
            return Err(invalid(why));
        }
        Ok(())
    }

    /// Adds an allocation already checked by [`Index::check_reservable`] (or loaded from a
    /// snapshot and checked there).
    fn insert(&mut self, alloc: Allocation) {
        for ip in alloc.addresses() {
            self.by_ip.insert(ip, alloc.key.clone());
        }
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
        for ip in alloc.addresses() {
            self.by_ip.remove(&ip);
        }
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
        for ip in alloc.addresses() {
            if let Some(holder) = self.by_ip.get(&ip) {
                return Err(format!("{ip} is held by both {holder} and {}", alloc.key));
            }
        }
        if let Some(why) = alloc.inconsistency() {
            return Err(format!("attachment {} ({}): {why}", alloc.key, alloc.ip));
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
    /// The previous snapshot's generation, whose log is kept with it as a fallback.
    previous_generation: Option<u64>,
    /// False while the current snapshot is one recovery found damaged: compaction does not
    /// keep it as the previous one.
    snapshot_intact: bool,
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
    /// the log, truncates a torn tail, and salvages damage anywhere else, reporting what it
    /// cost in [`RecoveryReport::lost`] (see `recover.rs`). Refused are a snapshot format or
    /// log record of a newer version, a log newer than a readable snapshot, a state directory
    /// of another user, and files the disk will not read.
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
        let recovered = recover::read(dir)?;
        let log_path = wal::log_path(dir, recovered.generation);
        let torn_tail_bytes = recovered.log_len - recovered.log_valid_len;

        // Keep a copy of what is damaged before anything rewrites it.
        let mut set_aside = Vec::new();
        for file in recovered.damaged_files() {
            match recover::set_aside(dir, &file) {
                Ok(copy) => set_aside.push(copy),
                Err(error) => {
                    tracing::warn!(%error, "datastore: could not keep a copy of a damaged file")
                }
            }
        }
        for damage in &recovered.lost {
            tracing::error!(%damage, "datastore: lost to damage");
        }
        for damage in &recovered.repaired {
            tracing::warn!(%damage, "datastore: damage repaired from the previous snapshot");
        }

        // Now repair: cut the torn tail, sync the log (its records may be only in the page
        // cache if the daemon rather than the machine crashed), drop stale files.
        let log =
            LogWriter::open_existing(&log_path, recovered.log_valid_len, recovered.log_records)?;
        if torn_tail_bytes > 0 {
            tracing::warn!(
                log = %log_path.display(),
                offset = recovered.log_valid_len,
                bytes = torn_tail_bytes,
                "datastore: cutting off a record a crash interrupted"
            );
            log.truncate_to_valid()?;
        }
        log.sync()?;
        let mut dir_changed = recovered.log_missing;
        if snapshot::remove_temp(dir)? {
            tracing::info!(dir = %dir.display(), "datastore: removed an unfinished snapshot");
            dir_changed = true;
        }
        for path in &recovered.stale {
            wal::remove_file(path)?;
            tracing::info!(log = %path.display(), "datastore: removed a stale log");
            dir_changed = true;
        }
        if dir_changed {
            wal::sync_dir(dir)?;
        }

        let index = recovered.index;
        let generation = recovered.generation;
        let incomplete: Vec<Allocation> = index
            .by_key
            .values()
            .filter(|a| a.state == AllocationState::Reserved)
            .cloned()
            .collect();
        let report = RecoveryReport {
            records_replayed: recovered.records_replayed,
            torn_tail_bytes,
            snapshot_loaded: recovered.snapshot_loaded,
            generation,
            incomplete,
            lost: recovered.lost,
            repaired: recovered.repaired,
            set_aside,
        };
        tracing::info!(
            dir = %dir.display(),
            generation,
            allocations = index.by_key.len(),
            records_replayed = report.records_replayed,
            torn_tail_bytes,
            incomplete = report.incomplete.len(),
            lost = report.lost.len(),
            repaired = report.repaired.len(),
            "datastore opened"
        );
        let shared = Arc::new(wal::Shared::new(
            log.file(),
            log.path().to_path_buf(),
            generation,
        ));
        let mut store = Datastore {
            dir: dir.to_path_buf(),
            options,
            index,
            generation,
            log,
            log_usable: true,
            compaction_retry_at: 0,
            last_lsn: 0,
            shared,
            previous_generation: recovered.previous_generation,
            snapshot_intact: recovered.snapshot_intact,
        };
        if !report.lost.is_empty() || !report.repaired.is_empty() {
            // What was recovered becomes a clean generation, so the damage is read only once.
            if let Err(error) = store.compact() {
                tracing::warn!(%error, "datastore: could not rewrite the recovered state; the damage is read again at the next start");
            }
        }
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

    /// The allocation holding `ip`, as a pod address (of either family) or as its IPv4 egress
    /// address.
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

    /// Makes every `fdatasync` of the current log fail from now on, as a failing disk does: the
    /// syncer is pointed at `/dev/null`, whose `fdatasync` the kernel refuses (EINVAL), while
    /// records are still written to the log. As after a real failure, the next change compacts
    /// the state into a new log first. For tests (feature `fault-injection`).
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn fail_syncs_for_test(&self) {
        let null = fs::File::open("/dev/null").expect("open /dev/null");
        self.shared.replace_file_for_test(Arc::new(null));
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
        let old_generation = self.generation;
        let new_generation = old_generation + 1;
        snapshot::write_temp(&self.dir, new_generation, self.index.by_key.values())?;
        if stop == CompactStop::TempWritten {
            return Ok(());
        }
        // The snapshot being replaced stays, with its log, as the fallback for a damaged one;
        // not the damaged one recovery worked around.
        // Its log must be durable to serve as one: after a failed fdatasync it is not, and
        // there is no fallback until the next compaction.
        let kept_previous = if self.snapshot_intact && self.log.sync().is_ok() {
            snapshot::keep_previous(&self.dir)?
        } else {
            snapshot::remove_previous(&self.dir)?;
            self.previous_generation = None;
            false
        };
        snapshot::install(&self.dir)?;
        // From here recovery replays only the new generation's log: the old one must never be
        // appended to again, even if the rest of this sequence fails.
        self.generation = new_generation;
        self.log_usable = false;
        self.snapshot_intact = true;
        if kept_previous {
            self.previous_generation = Some(old_generation);
        }
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
        let _ = std::mem::replace(&mut self.log, new_log);
        self.log_usable = true;
        self.compaction_retry_at = 0;
        // The synced snapshot holds every record appended so far.
        self.shared.switch_log(
            self.log.file(),
            self.log.path().to_path_buf(),
            new_generation,
            self.last_lsn,
        );
        // Logs older than the previous snapshot's, and a format-1 snapshot, are superseded.
        // A leftover is harmless (recovery deletes it), so failing to delete one here must not
        // fail the mutation that triggered compaction.
        let keep_from = self.previous_generation.unwrap_or(new_generation);
        let superseded = wal::list_logs(&self.dir).map(|logs| {
            logs.into_iter()
                .filter(|(generation, _)| *generation < keep_from)
                .map(|(_, path)| path)
                .collect::<Vec<_>>()
        });
        let removed = superseded.and_then(|paths| {
            paths.iter().try_for_each(|path| wal::remove_file(path))?;
            snapshot::remove_format_1(&self.dir)
        });
        if let Err(error) = removed {
            tracing::warn!(%error, "datastore: could not delete a superseded file");
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
