//! Reading the state directory back after a stop, a crash or damage.
//!
//! A crash leaves at most a torn last record, cut off as before. Damage (bit rot, a bad
//! sector, a stray write) can hit any line of the log or the snapshot; every line carries its
//! own checksum, so a damaged line costs what it held and nothing else:
//!
//! * the records before it are kept, and the readable ones after it are applied in order;
//!   a record that no longer fits (a commit whose reserve was lost, a release of what is not
//!   held, a reserve of an address still held because its release was lost) is dropped;
//! * a damaged current snapshot is rebuilt from the previous snapshot and the logs since, when
//!   those read cleanly, and then nothing is lost;
//! * everything dropped is reported ([`super::RecoveryReport::lost`]) and a copy of each
//!   damaged file is set aside under `damaged/` for inspection.
//!
//! A loss can hide a live pod's address from the store, so the daemon, told of it, trusts the
//! node's veths over the store (see the daemon's recovery). Refused are only what cannot be read
//! without guessing what a newer version meant (a snapshot format or a record it does not
//! know) and a log newer than a readable snapshot (the snapshot was replaced by hand).

use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{snapshot, wal, Damage, DatastoreError, Index};

/// How many damaged files `damaged/` keeps (the newest), so damage that recurs cannot fill the
/// disk.
pub(super) const SET_ASIDE_KEPT: usize = 8;

/// The state as read, before anything on disk is changed.
#[derive(Debug)]
pub(super) struct Recovered {
    pub(super) index: Index,
    pub(super) generation: u64,
    pub(super) snapshot_loaded: bool,
    /// Whether the current snapshot read cleanly (compaction keeps it as the previous one
    /// only then).
    pub(super) snapshot_intact: bool,
    /// The previous snapshot's generation, when its file is readable and belongs before the
    /// current one; its log is kept with it.
    pub(super) previous_generation: Option<u64>,
    /// Records applied from logs.
    pub(super) records_replayed: usize,
    /// Records in the current log (drives compaction).
    pub(super) log_records: usize,
    /// Where the current log's intact prefix ends.
    pub(super) log_valid_len: u64,
    /// The current log's length on disk.
    pub(super) log_len: u64,
    /// Whether the current log does not exist yet.
    pub(super) log_missing: bool,
    pub(super) lost: Vec<Damage>,
    pub(super) repaired: Vec<Damage>,
    /// Logs of generations no longer needed.
    pub(super) stale: Vec<PathBuf>,
}

impl Recovered {
    /// The files with damage, once each.
    pub(super) fn damaged_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .lost
            .iter()
            .chain(&self.repaired)
            .filter(|d| d.unreadable)
            .map(|d| d.file.clone())
            .collect();
        files.sort();
        files.dedup();
        files
    }
}

/// Reads `dir`: the current snapshot (or, when it is damaged, the previous one) and the logs
/// on top of it. Changes nothing.
pub(super) fn read(dir: &Path) -> Result<Recovered, DatastoreError> {
    let current = snapshot::load_current(dir)?;
    let logs = wal::list_logs(dir)?;
    let newest_log = logs.last().map(|(generation, _)| *generation);
    let generation = match &current {
        None => Some(0),
        Some(snapshot) => snapshot.generation,
    };
    if let Some(generation) = generation {
        refuse_orphan_logs(&logs, generation)?;
    }
    // A snapshot whose header is lost goes with the newest log.
    let generation = generation.unwrap_or(newest_log.unwrap_or(0));
    // Only a fallback: one that cannot be read is no reason to refuse the current state.
    let previous = snapshot::load_previous(dir).unwrap_or_else(|error| {
        tracing::warn!(%error, "datastore: the previous snapshot cannot be read; there is no fallback");
        None
    });
    let previous_generation = previous
        .as_ref()
        .and_then(|p| p.generation)
        .filter(|&p| p <= generation);

    let mut primary = Chain::default();
    if let Some(snapshot) = &current {
        primary.load_snapshot(snapshot);
    }
    primary.replay(dir, generation..=generation, generation)?;
    let snapshot_intact = current.as_ref().is_none_or(snapshot::Loaded::is_intact);

    let mut chosen = primary;
    let mut repaired = Vec::new();
    if let (false, Some(previous), Some(from)) = (snapshot_intact, &previous, previous_generation) {
        let mut fallback = Chain::default();
        fallback.load_snapshot(previous);
        // A fallback is taken only if it reads cleanly and, at the current snapshot's
        // generation, agrees with every line of it that can be read: a fallback short of a
        // record must not pass for a repair.
        let up_to_current = from == generation
            || fallback
                .replay(dir, from..=generation - 1, generation)
                .is_ok();
        let agrees = up_to_current
            && current.as_ref().is_some_and(|c| fallback.agrees_with(c))
            && fallback
                .replay(dir, generation..=generation, generation)
                .is_ok();
        if agrees && fallback.lost.is_empty() {
            tracing::warn!(
                snapshot = %snapshot::path(dir).display(),
                previous = %previous.path.display(),
                "datastore: the snapshot is damaged; rebuilt from the previous one and the logs since, nothing lost"
            );
            repaired = std::mem::take(&mut chosen.lost);
            chosen = fallback;
        }
    }

    let keep_from = previous_generation.unwrap_or(generation);
    let mut stale = Vec::new();
    for (log_generation, path) in logs {
        if log_generation < keep_from || log_generation > generation {
            stale.push(path);
        }
    }
    Ok(Recovered {
        index: chosen.index,
        generation,
        snapshot_loaded: current.is_some(),
        snapshot_intact,
        previous_generation,
        records_replayed: chosen.records,
        log_records: chosen.last_log_records,
        log_valid_len: chosen.last_log_valid_len,
        log_len: chosen.last_log_len,
        log_missing: chosen.last_log_missing,
        lost: chosen.lost,
        repaired,
        stale,
    })
}

/// A non-empty log of a generation newer than the snapshot: the snapshot was lost or replaced,
/// so replaying either would miss records. An empty one is a leftover of a compaction that
/// crashed (a new log is created only after its snapshot is durable).
fn refuse_orphan_logs(logs: &[(u64, PathBuf)], generation: u64) -> Result<(), DatastoreError> {
    for (log_generation, path) in logs.iter().filter(|(g, _)| *g > generation) {
        let len = fs::metadata(path)
            .map_err(|source| DatastoreError::Io {
                action: "inspect",
                path: path.clone(),
                source,
            })?
            .len();
        if len > 0 {
            return Err(DatastoreError::OrphanLog {
                path: path.clone(),
                log_generation: *log_generation,
                snapshot_generation: generation,
            });
        }
    }
    Ok(())
}

/// One way of rebuilding the state: a snapshot and the logs after it.
#[derive(Debug, Default)]
struct Chain {
    index: Index,
    records: usize,
    lost: Vec<Damage>,
    last_log_records: usize,
    last_log_valid_len: u64,
    last_log_len: u64,
    last_log_missing: bool,
}

impl Chain {
    /// Takes a snapshot's readable allocations; what is unreadable or contradicts another
    /// allocation is lost.
    fn load_snapshot(&mut self, snapshot: &snapshot::Loaded) {
        for (offset, reason) in &snapshot.damage {
            self.lost
                .push(Damage::unreadable(&snapshot.path, *offset, reason));
        }
        for allocation in &snapshot.allocations {
            match self.index.check_reservable_from_snapshot(allocation) {
                Ok(()) => self.index.insert(allocation.clone()),
                Err(reason) => self.lost.push(Damage::dropped(
                    &snapshot.path,
                    None,
                    format!(
                        "allocation of {} to {} dropped: {reason}",
                        allocation.ip, allocation.key
                    ),
                )),
            }
        }
    }

    /// Whether the state holds exactly what `snapshot` holds: each allocation it could read,
    /// unchanged, and as many as its header declares.
    fn agrees_with(&self, snapshot: &snapshot::Loaded) -> bool {
        snapshot
            .allocations
            .iter()
            .all(|a| self.index.by_key.get(&a.key) == Some(a))
            && snapshot
                .declared
                .is_none_or(|declared| declared == self.index.by_key.len())
    }

    /// Replays the logs of `generations`. Only the current one's may be missing (a crash
    /// before it was created) or end torn (its unacknowledged last record); an earlier one's
    /// records all reached the snapshot after it, so a gap there is a loss.
    fn replay(
        &mut self,
        dir: &Path,
        generations: std::ops::RangeInclusive<u64>,
        current: u64,
    ) -> Result<(), DatastoreError> {
        for generation in generations {
            let path = wal::log_path(dir, generation);
            let last = generation == current;
            let Some(bytes) = wal::read_log(&path)? else {
                if last {
                    self.last_log_missing = true;
                } else {
                    self.lost.push(Damage::unreadable(
                        &path,
                        None,
                        "the log is missing; the records of its generation are lost",
                    ));
                }
                continue;
            };
            let scan =
                wal::scan(&bytes).map_err(|(offset, reason)| DatastoreError::UnknownRecord {
                    path: path.clone(),
                    offset,
                    reason,
                })?;
            match (&scan.bad_last_line, last) {
                (Some(reason), true) => self.lost.push(Damage::unreadable(
                    &path,
                    Some(scan.valid_len),
                    &format!(
                        "the last record is unreadable ({reason}): a write a power loss cut \
                         short, or damage; it is cut off and, if it was acknowledged, lost"
                    ),
                )),
                _ if !last && scan.valid_len < bytes.len() as u64 => {
                    self.lost.push(Damage::unreadable(
                        &path,
                        Some(scan.valid_len),
                        "the log ends in an unreadable record although a later generation \
                         follows it; the record is lost",
                    ));
                }
                _ => {}
            }
            for line in &scan.damaged {
                self.lost.push(Damage::unreadable(
                    &path,
                    Some(line.offset),
                    &format!(
                        "a line of {} bytes is unreadable ({}); the record it held is lost",
                        line.len, line.reason
                    ),
                ));
            }
            let mut applied = 0;
            for (offset, record) in scan.records {
                match self.index.apply(record) {
                    Ok(()) => applied += 1,
                    Err(reason) => self.lost.push(Damage::dropped(
                        &path,
                        Some(offset),
                        format!("{reason}; the record was dropped"),
                    )),
                }
            }
            self.records += applied;
            if last {
                self.last_log_records = applied;
                self.last_log_valid_len = scan.valid_len;
                self.last_log_len = bytes.len() as u64;
            }
        }
        Ok(())
    }
}

/// Copies a damaged file to `dir/damaged/<unix ms>-<name>` for inspection, keeping the newest
/// [`SET_ASIDE_KEPT`]; returns the copy.
pub(super) fn set_aside(dir: &Path, file: &Path) -> Result<PathBuf, DatastoreError> {
    let aside = dir.join("damaged");
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| DatastoreError::Io {
            action,
            path,
            source,
        }
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&aside)
        .map_err(io("create directory", &aside))?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let name = file
        .file_name()
        .map_or_else(|| "unnamed".into(), |n| n.to_string_lossy().into_owned());
    // Zero-padded, so names sort by age.
    let copy = aside.join(format!("{millis:015}-{name}"));
    fs::copy(file, &copy).map_err(io("copy", file))?;
    let mut kept: Vec<PathBuf> = fs::read_dir(&aside)
        .map_err(io("list directory", &aside))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    kept.sort();
    let excess = kept.len().saturating_sub(SET_ASIDE_KEPT);
    for old in &kept[..excess] {
        fs::remove_file(old).map_err(io("delete", old))?;
    }
    Ok(copy)
}
