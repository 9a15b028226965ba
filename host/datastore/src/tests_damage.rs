//! Damage beyond a torn tail: a bit flipped at every byte of the log and of the snapshot,
//! snapshots cut at every length, contradictions, the format-1 snapshot of earlier versions.
//! Recovery must never panic nor refuse what it can read, must keep every record the damage
//! did not hit, and must say what it dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use serde_json::json;

use super::tests::{alloc, build_log, files, ip, key, log0, open, state, store_before_compaction};
use super::*;

/// Flips one bit of `bytes[offset]` (which bit varies with the offset).
fn flip(bytes: &[u8], offset: usize) -> Vec<u8> {
    let mut flipped = bytes.to_vec();
    flipped[offset] ^= 1 << (offset % 8);
    flipped
}

/// Whether the flip at `offset` only changed the case of a hex letter of the checksum that
/// starts at `line_start`: the line still reads, and must.
fn case_only(bytes: &[u8], offset: usize, line_start: usize) -> bool {
    (line_start..line_start + 8).contains(&offset)
        && bytes[offset].is_ascii_hexdigit()
        && bytes[offset].is_ascii_alphabetic()
        && offset % 8 == 5
}

/// Copies every file of `from` into a fresh directory.
fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("tempdir");
    for entry in fs::read_dir(from).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            fs::copy(&path, to.path().join(path.file_name().expect("name"))).expect("copy");
        }
    }
    to
}

/// Opens `dir` (which must not be refused), checks that a second open finds nothing left to
/// repair and the same state, and returns the first open's state and report.
fn open_twice(dir: &Path, what: &str) -> (Vec<Allocation>, RecoveryReport) {
    let (ds, report) = Datastore::open(dir, WalOptions::default())
        .unwrap_or_else(|e| panic!("{what}: refused: {e}"));
    let recovered = state(&ds);
    for allocation in &recovered {
        assert_eq!(
            ds.holder_of(allocation.ip).map(|a| &a.key),
            Some(&allocation.key),
            "{what}: {} held twice",
            allocation.ip
        );
    }
    drop(ds);
    let (ds, again) = Datastore::open(dir, WalOptions::default())
        .unwrap_or_else(|e| panic!("{what}: refused the second time: {e}"));
    assert_eq!(state(&ds), recovered, "{what}: the second open differs");
    assert!(
        again.lost.is_empty() && again.repaired.is_empty() && again.torn_tail_bytes == 0,
        "{what}: the first open left damage behind: {again:?}"
    );
    (recovered, report)
}

#[test]
fn a_bit_flip_anywhere_in_the_log_costs_only_the_records_it_hits() {
    let source = tempfile::tempdir().expect("tempdir");
    let (ends, states) = build_log(source.path());
    let bytes = fs::read(log0(source.path())).expect("read");
    let lines = ends.len() - 1;
    let line_of = |offset: usize| {
        (0..lines)
            .find(|&i| (ends[i] as usize..ends[i + 1] as usize).contains(&offset))
            .expect("a line")
    };
    // What the flip must be equivalent to: the lines it hits, removed.
    let without = |hit: &BTreeSet<usize>| -> Vec<u8> {
        (0..lines)
            .filter(|i| !hit.contains(i))
            .flat_map(|i| bytes[ends[i] as usize..ends[i + 1] as usize].to_vec())
            .collect()
    };
    let mut reference: BTreeMap<BTreeSet<usize>, Vec<Allocation>> = BTreeMap::new();
    for offset in 0..bytes.len() {
        let line = line_of(offset);
        if case_only(&bytes, offset, ends[line] as usize) {
            let dir = tempfile::tempdir().expect("tempdir");
            fs::write(log0(dir.path()), flip(&bytes, offset)).expect("write");
            let (recovered, report) = open_twice(dir.path(), "a checksum in upper case");
            assert_eq!(recovered, states[lines], "byte {offset}");
            assert!(report.lost.is_empty() && report.torn_tail_bytes == 0);
            continue;
        }
        // A flipped newline joins its line to the next one.
        let mut hit = BTreeSet::from([line]);
        if offset + 1 == ends[line + 1] as usize && line + 1 < lines {
            hit.insert(line + 1);
        }
        let expected = reference
            .entry(hit.clone())
            .or_insert_with(|| {
                let dir = tempfile::tempdir().expect("tempdir");
                fs::write(log0(dir.path()), without(&hit)).expect("write");
                open_twice(dir.path(), "the reference").0
            })
            .clone();

        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(log0(dir.path()), flip(&bytes, offset)).expect("write");
        let what = format!("bit flip at byte {offset} (line {line})");
        let (recovered, report) = open_twice(dir.path(), &what);
        assert_eq!(recovered, expected, "{what}");
        if hit.contains(&(lines - 1)) {
            // The last line (or the one joined to it): cut off as a torn write is. Still
            // ended by its newline, it may have been acknowledged: reported lost.
            if hit.len() == 1 {
                assert_eq!(recovered, states[lines - 1], "{what}");
            }
            assert!(report.torn_tail_bytes > 0, "{what}");
            let newline_kept = offset + 1 != bytes.len();
            assert_eq!(
                report.lost.len(),
                usize::from(newline_kept),
                "{what}: {:?}",
                report.lost
            );
            continue;
        }
        // Every record before the damage is kept (later ones may undo some of it).
        assert!(report.records_replayed >= line, "{what}: {report:?}");
        let unreadable: Vec<&Damage> = report.lost.iter().filter(|d| d.unreadable).collect();
        assert_eq!(unreadable.len(), 1, "{what}: {:?}", report.lost);
        assert_eq!(unreadable[0].offset, Some(ends[line]), "{what}");
        assert_eq!(unreadable[0].file, log0(dir.path()), "{what}");
        assert!(
            unreadable[0]
                .to_string()
                .contains("the record it held is lost"),
            "{what}: {}",
            unreadable[0]
        );
        assert_eq!(report.set_aside.len(), 1, "{what}");
        assert_eq!(
            fs::read(&report.set_aside[0]).expect("the copy"),
            flip(&bytes, offset),
            "{what}: the copy set aside is the damaged log"
        );
    }
    // Every line was hit on its own, and each newline joined two lines once.
    assert_eq!(reference.len(), 2 * lines - 1);
}

#[test]
fn a_record_the_damage_orphaned_is_dropped_and_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ends, states) = build_log(tmp.path());
    // Line 0 reserves a; line 2 commits it. Damage line 0: the commit no longer fits.
    let bytes = fs::read(log0(tmp.path())).expect("read");
    fs::write(log0(tmp.path()), flip(&bytes, ends[0] as usize + 20)).expect("write");
    let (recovered, report) = open_twice(tmp.path(), "reserve of a damaged");
    let mut expected = states[ends.len() - 1].clone();
    expected.retain(|a| a.key != key("a", "eth0"));
    assert_eq!(recovered, expected);
    let described: Vec<String> = report.lost.iter().map(ToString::to_string).collect();
    assert_eq!(described.len(), 2, "{described:?}");
    assert!(described[0].contains("at byte 0"), "{described:?}");
    assert!(
        described[1].contains(&format!("at byte {}", ends[2]))
            && described[1].contains("commit record for attachment a/eth0")
            && described[1].contains("dropped"),
        "{described:?}"
    );
}

/// A store with a previous snapshot (generation 2), a current one (3) and records after it.
fn store_with_previous(dir: &Path) -> Vec<Allocation> {
    let (mut ds, _) = store_before_compaction(dir);
    ds.compact().expect("compact");
    ds.release(&key("s3", "eth0")).expect("release");
    ds.reserve(alloc("s6", "eth0", ip(6))).expect("reserve");
    ds.compact().expect("compact");
    ds.commit(&key("s6", "eth0"), json!({"n": 6}), &PodRoutes::default())
        .expect("commit");
    ds.reserve(alloc("s7", "eth0", ip(7))).expect("reserve");
    let expected = state(&ds);
    drop(ds);
    assert_eq!(
        files(dir),
        [
            "snapshot.jsonl",
            "snapshot.prev.jsonl",
            "wal-2.log",
            "wal-3.log"
        ]
    );
    expected
}

#[test]
fn a_damaged_snapshot_is_rebuilt_from_the_previous_one_losing_nothing() {
    let pristine = tempfile::tempdir().expect("tempdir");
    let expected = store_with_previous(pristine.path());
    let snapshot = fs::read(snapshot::path(pristine.path())).expect("read");
    // Every bit flip, then every truncation.
    let damaged = (0..snapshot.len())
        .map(|offset| {
            (
                format!("bit flip at byte {offset}"),
                flip(&snapshot, offset),
            )
        })
        .chain(
            (0..snapshot.len())
                .map(|len| (format!("cut to {len} bytes"), snapshot[..len].to_vec())),
        );
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(
            snapshot
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    for (what, bytes) in damaged {
        let dir = copy_dir(pristine.path());
        fs::write(snapshot::path(dir.path()), &bytes).expect("write");
        let (recovered, report) = open_twice(dir.path(), &what);
        assert!(report.lost.is_empty(), "{what}: {:?}", report.lost);
        assert_eq!(recovered, expected, "{what}");
        let changed = bytes.iter().zip(&snapshot).position(|(a, b)| a != b);
        if let Some(offset) = changed.filter(|_| bytes.len() == snapshot.len()) {
            let start = line_starts[line_starts.partition_point(|&s| s <= offset) - 1];
            if case_only(&snapshot, offset, start) {
                assert!(report.repaired.is_empty(), "{what}");
                continue;
            }
        }
        assert!(!report.repaired.is_empty(), "{what}");
        // The damage is the snapshot's (log records it orphaned are repaired with it).
        assert!(
            report
                .repaired
                .iter()
                .filter(|d| d.unreadable)
                .all(|d| d.file == snapshot::path(dir.path())),
            "{what}: {:?}",
            report.repaired
        );
        assert_eq!(report.set_aside.len(), 1, "{what}");
        // The damaged snapshot did not become the fallback of the next generation.
        assert!(!snapshot::previous_path(dir.path()).exists(), "{what}");
    }
}

#[test]
fn a_damaged_snapshot_without_a_fallback_loses_only_its_damaged_lines() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    // Generation 1: its snapshot has no previous one.
    let (ds, expected) = store_before_compaction(dir);
    drop(ds);
    let snapshot_bytes = fs::read(snapshot::path(dir)).expect("read");
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(
            snapshot_bytes
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .filter(|&start| start < snapshot_bytes.len())
        .collect();
    // Header, then s1 (committed), s2, s3, s4; the log releases s2, commits s3, reserves s5.
    assert_eq!(line_starts.len(), 5);

    // s3's line: s3 and the commit of s3 are lost, the rest kept.
    let copy = copy_dir(dir);
    fs::write(
        snapshot::path(copy.path()),
        flip(&snapshot_bytes, line_starts[3] + 30),
    )
    .expect("write");
    let (recovered, report) = open_twice(copy.path(), "s3's line");
    let mut without_s3 = expected.clone();
    without_s3.retain(|a| a.key != key("s3", "eth0"));
    assert_eq!(recovered, without_s3);
    let described: Vec<String> = report.lost.iter().map(ToString::to_string).collect();
    assert_eq!(described.len(), 2, "{described:?}");
    assert!(
        described[0].contains("snapshot.jsonl")
            && described[0].contains(&format!("at byte {}", line_starts[3]))
            && described[0].contains("allocation line unreadable"),
        "{described:?}"
    );
    assert!(
        described[1].contains("wal-1.log")
            && described[1].contains("commit record for attachment s3/eth0"),
        "{described:?}"
    );
    assert!(report.repaired.is_empty());

    // The header: the generation is the newest log's, and every allocation is kept.
    let copy = copy_dir(dir);
    fs::write(snapshot::path(copy.path()), flip(&snapshot_bytes, 12)).expect("write");
    let (recovered, report) = open_twice(copy.path(), "the header");
    assert_eq!(recovered, expected);
    assert_eq!(report.generation, 1);
    assert_eq!(report.lost.len(), 1, "{:?}", report.lost);
    assert!(
        report.lost[0].what.contains("header line unreadable"),
        "{:?}",
        report.lost
    );

    // Cut after s2's line: the header's count says two are missing.
    let copy = copy_dir(dir);
    fs::write(
        snapshot::path(copy.path()),
        &snapshot_bytes[..line_starts[3]],
    )
    .expect("write");
    let (recovered, report) = open_twice(copy.path(), "cut short");
    assert!(
        report
            .lost
            .iter()
            .any(|d| d.what.contains("declares 4 allocations, the file has 2")),
        "{:?}",
        report.lost
    );
    // s3 and s4 are gone with the lost lines; s5 (in the log) is kept.
    let kept: Vec<String> = recovered.iter().map(|a| a.key.to_string()).collect();
    assert_eq!(kept, ["s1/eth0", "s5/eth1"]);
}

#[test]
fn a_format_1_snapshot_is_read_and_replaced_by_the_first_compaction() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut committed = alloc("old", "eth0", ip(9));
    committed.state = AllocationState::Committed;
    committed.result = Some(json!({"cniVersion": "1.1.0"}));
    let format_1 = json!({
        "format": "wasmcni-datastore/1",
        "generation": 4,
        "allocations": [committed],
    });
    fs::write(dir.join("snapshot.json"), format_1.to_string()).expect("write");
    let (mut ds, report) = open(dir);
    assert!(report.snapshot_loaded && report.lost.is_empty());
    assert_eq!(report.generation, 4);
    assert_eq!(state(&ds), [committed.clone()]);
    ds.reserve(alloc("new", "eth0", ip(10))).expect("reserve");
    let expected = state(&ds);
    ds.compact().expect("compact");
    drop(ds);
    // Format 1 is not kept as the previous snapshot: its generation's log goes with it.
    assert_eq!(files(dir), ["snapshot.jsonl", "wal-5.log"]);
    let (ds, _) = open(dir);
    assert_eq!(state(&ds), expected);

    // A damaged format-1 file (no checksums to go by) loses what it held, and says so.
    let tmp = tempfile::tempdir().expect("tempdir");
    let text = format_1.to_string();
    fs::write(tmp.path().join("snapshot.json"), &text[..text.len() - 3]).expect("write");
    fs::write(wal::log_path(tmp.path(), 4), b"").expect("write");
    let (recovered, report) = open_twice(tmp.path(), "damaged format 1");
    assert!(recovered.is_empty());
    assert_eq!(report.generation, 4);
    assert_eq!(report.lost.len(), 1);
    assert!(
        report.lost[0].what.contains("unreadable"),
        "{:?}",
        report.lost
    );
}

#[test]
fn copies_of_damaged_files_are_bounded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("wal-0.log");
    fs::write(&file, b"x").expect("write");
    let mut copies = Vec::new();
    for _ in 0..recover::SET_ASIDE_KEPT + 4 {
        copies.push(recover::set_aside(tmp.path(), &file).expect("set aside"));
        // Distinct names: one per millisecond.
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let mut kept: Vec<_> = fs::read_dir(tmp.path().join("damaged"))
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect();
    kept.sort();
    assert_eq!(kept, copies[4..]);
}

#[test]
fn a_fallback_short_of_a_record_is_not_taken_for_a_repair() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut ds, _) = store_before_compaction(dir);
    ds.compact().expect("compact");
    // Generation 2's only record, then generation 3 with a record of its own.
    ds.reserve(alloc("x", "eth0", ip(20))).expect("reserve");
    ds.compact().expect("compact");
    ds.reserve(alloc("y", "eth0", ip(21))).expect("reserve");
    let expected = state(&ds);
    drop(ds);
    // The previous generation's log lost x's reserve cleanly (it reads as whole), so the
    // fallback, though it reads cleanly, lacks x.
    fs::write(wal::log_path(dir, 2), b"").expect("write");
    // And the current snapshot is damaged on s1's line.
    let current = fs::read(snapshot::path(dir)).expect("read");
    let s1 = String::from_utf8_lossy(&current)
        .find("\"container_id\":\"s1\"")
        .expect("s1's line");
    fs::write(snapshot::path(dir), flip(&current, s1)).expect("write");

    let (recovered, report) = open_twice(dir, "a fallback short of x");
    assert!(report.repaired.is_empty(), "{:?}", report.repaired);
    assert_eq!(report.lost.len(), 1, "{:?}", report.lost);
    let mut without_s1 = expected.clone();
    without_s1.retain(|a| a.key != key("s1", "eth0"));
    assert_eq!(
        recovered, without_s1,
        "x (which the fallback lacks) is kept"
    );
}
