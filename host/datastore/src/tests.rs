//! Tests of the datastore: operations, recovery (torn tails, corruption, compaction crashes),
//! group commit, and a randomized comparison against a simple model.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use serde_json::json;

use super::wal::LogWriter;
use super::*;

pub(super) fn key(container: &str, ifname: &str) -> AttachmentKey {
    AttachmentKey::new(container, ifname)
}

pub(super) fn alloc(container: &str, ifname: &str, ip: Ipv4Addr) -> Allocation {
    Allocation {
        key: key(container, ifname),
        network: "aws-cni".to_string(),
        ip: ip.into(),
        host_veth: format!("eni{container}"),
        netns: format!("/var/run/netns/{container}"),
        pod: Some(PodRef {
            namespace: "default".to_string(),
            name: format!("pod-{container}"),
        }),
        route_table: Some(2),
        state: AllocationState::Reserved,
        result: None,
        pod_routes: PodRoutes::default(),
        created_unix_ms: 1_700_000_000_000,
        egress_v4: None,
        ipv6: None,
    }
}

pub(super) fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

pub(super) fn options(compact_after_records: usize) -> WalOptions {
    WalOptions {
        compact_after_records,
    }
}

pub(super) fn open(dir: &Path) -> (Datastore, RecoveryReport) {
    Datastore::open(dir, options(1000)).expect("open")
}

pub(super) fn state(ds: &Datastore) -> Vec<Allocation> {
    ds.allocations().cloned().collect()
}

fn cni_result(ip: Ipv4Addr) -> serde_json::Value {
    json!({"cniVersion": "1.1.0", "ips": [{"address": format!("{ip}/32")}]})
}

/// File names in `dir`, sorted.
pub(super) fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub(super) fn log0(dir: &Path) -> PathBuf {
    wal::log_path(dir, 0)
}

#[test]
fn reserve_commit_release_and_lookups() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut ds, report) = open(tmp.path());
    assert!(ds.is_empty());
    assert_eq!(report.records_replayed, 0);
    assert!(!report.snapshot_loaded);

    let a = alloc("c1", "eth0", ip(1));
    let lsn1 = ds.reserve(a.clone()).expect("reserve");
    assert_eq!(lsn1, 1);
    assert_eq!(ds.get(&a.key), Some(&a));
    assert_eq!(ds.holder_of(ip(1)).map(|x| &x.key), Some(&a.key));
    assert_eq!(ds.find_by_veth("enic1").map(|x| &x.key), Some(&a.key));
    assert!(ds.holder_of(ip(2)).is_none());
    assert!(ds.find_by_veth("enic2").is_none());

    let lsn2 = ds
        .commit(&a.key, cni_result(ip(1)), &PodRoutes::default())
        .expect("commit");
    assert!(lsn2 > lsn1);
    let committed = ds.get(&a.key).expect("present");
    assert_eq!(committed.state, AllocationState::Committed);
    assert_eq!(committed.result, Some(cni_result(ip(1))));

    ds.reserve(alloc("c2", "eth0", ip(2))).expect("reserve c2");
    assert_eq!(ds.len(), 2);
    let order: Vec<_> = ds
        .allocations()
        .map(|x| x.key.container_id.clone())
        .collect();
    assert_eq!(order, ["c1", "c2"]);

    let (removed, lsn3) = ds.release(&a.key).expect("release");
    assert_eq!(removed.map(|x| x.ip), Some(ip(1).into()));
    assert_eq!(lsn3, ds.last_lsn());
    assert!(ds.get(&a.key).is_none());
    assert!(ds.holder_of(ip(1)).is_none());
    assert!(ds.find_by_veth("enic1").is_none());

    // DEL is idempotent and writes nothing; its LSN still covers what came before.
    let (again, lsn4) = ds.release(&a.key).expect("release again");
    assert!(again.is_none());
    assert_eq!(lsn4, lsn3);
    assert_eq!(ds.last_lsn(), lsn3);

    // The freed IP can be reserved by another attachment.
    ds.reserve(alloc("c3", "eth0", ip(1))).expect("reuse ip");
    ds.syncer().sync_through(ds.last_lsn()).expect("sync");
}

#[test]
fn duplicate_key_and_duplicate_ip_are_refused_with_names() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut ds, _) = open(tmp.path());
    ds.reserve(alloc("c1", "eth0", ip(1))).expect("reserve");
    let lsn = ds.last_lsn();

    let err = ds
        .reserve(alloc("c1", "eth0", ip(9)))
        .expect_err("duplicate key");
    assert!(matches!(err, DatastoreError::AttachmentExists { .. }));
    let msg = err.to_string();
    assert!(msg.contains("c1/eth0") && msg.contains("10.0.0.1"), "{msg}");

    let err = ds
        .reserve(alloc("c2", "eth0", ip(1)))
        .expect_err("duplicate ip");
    assert!(matches!(err, DatastoreError::IpInUse { .. }));
    let msg = err.to_string();
    assert!(msg.contains("10.0.0.1") && msg.contains("c1/eth0"), "{msg}");

    let err = ds
        .commit(&key("nope", "eth0"), json!({}), &PodRoutes::default())
        .expect_err("missing");
    assert!(err.to_string().contains("nope/eth0"), "{err}");

    let err = ds
        .commit(
            &key("c1", "eth0"),
            serde_json::Value::Null,
            &PodRoutes::default(),
        )
        .expect_err("null result");
    assert!(err.to_string().contains("c1/eth0"), "{err}");

    let mut committed = alloc("c3", "eth0", ip(3));
    committed.state = AllocationState::Committed;
    let err = ds.reserve(committed).expect_err("not reserved");
    assert!(err.to_string().contains("Reserved"), "{err}");

    let mut with_result = alloc("c3", "eth0", ip(3));
    with_result.result = Some(json!({}));
    assert!(ds.reserve(with_result).is_err());

    assert!(ds.reserve(alloc("", "eth0", ip(3))).is_err());

    // Refused operations write nothing.
    assert_eq!(ds.last_lsn(), lsn);
    drop(ds);
    let (ds, report) = open(tmp.path());
    assert_eq!(report.records_replayed, 1);
    assert_eq!(ds.len(), 1);
}

#[test]
fn find_by_veth_prefers_the_newest_of_a_recreated_sandbox() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut ds, _) = open(tmp.path());
    let mut old = alloc("old", "eth0", ip(1));
    old.host_veth = "eni0123456789a".to_string();
    let mut new = alloc("new", "eth0", ip(2));
    new.host_veth = old.host_veth.clone();
    new.created_unix_ms = old.created_unix_ms + 5;
    ds.reserve(old.clone()).expect("old");
    ds.reserve(new.clone()).expect("new");
    assert_eq!(ds.find_by_veth("eni0123456789a"), Some(&new));
    ds.release(&new.key).expect("release");
    assert_eq!(ds.find_by_veth("eni0123456789a"), Some(&old));
}

#[test]
fn reopen_restores_state_and_reports_incomplete_reservations() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut ds, _) = open(tmp.path());
    for i in 1..=5u8 {
        ds.reserve(alloc(&format!("c{i}"), "eth0", ip(i)))
            .expect("reserve");
    }
    ds.commit(&key("c1", "eth0"), cni_result(ip(1)), &PodRoutes::default())
        .expect("commit");
    ds.commit(&key("c3", "eth0"), cni_result(ip(3)), &PodRoutes::default())
        .expect("commit");
    ds.release(&key("c2", "eth0")).expect("release");
    let expected = state(&ds);
    drop(ds);

    let (ds, report) = open(tmp.path());
    assert_eq!(state(&ds), expected);
    assert_eq!(report.records_replayed, 8);
    assert_eq!(report.torn_tail_bytes, 0);
    let incomplete: Vec<_> = report
        .incomplete
        .iter()
        .map(|a| a.key.container_id.as_str())
        .collect();
    assert_eq!(incomplete, ["c4", "c5"]);
    assert!(report
        .incomplete
        .iter()
        .all(|a| a.state == AllocationState::Reserved));
}

#[test]
fn a_second_interfaces_routes_survive_the_log_and_a_snapshot() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let secondary = PodRoutes {
        default_route: wasmcni_core::DefaultRoute::Skip,
        destinations: vec!["10.20.0.0/16".parse().unwrap()],
        table: Some(101),
        default_route_v6: None,
    };
    let (mut ds, _) = open(tmp.path());
    ds.reserve(alloc("c1", "eth0", ip(1))).expect("reserve");
    ds.reserve(alloc("c1", "net1", ip(2))).expect("reserve");
    ds.commit(&key("c1", "eth0"), cni_result(ip(1)), &PodRoutes::default())
        .expect("commit");
    ds.commit(&key("c1", "net1"), cni_result(ip(2)), &secondary)
        .expect("commit");
    drop(ds);
    // The first interface's commit is written as before this field existed.
    let log = fs::read_to_string(log0(tmp.path())).unwrap();
    let commits: Vec<&str> = log.lines().filter(|l| l.contains("\"commit\"")).collect();
    assert_eq!(commits.len(), 2, "{log}");
    assert!(
        !commits[0].contains("pod_routes") && commits[1].contains("\"table\":101"),
        "{log}"
    );

    let (mut ds, _) = open(tmp.path());
    assert_eq!(ds.get(&key("c1", "net1")).unwrap().pod_routes, secondary);
    assert!(ds
        .get(&key("c1", "eth0"))
        .unwrap()
        .pod_routes
        .is_first_interface());
    ds.compact().expect("snapshot");
    drop(ds);
    let (ds, _) = open(tmp.path());
    assert_eq!(ds.get(&key("c1", "net1")).unwrap().pod_routes, secondary);
}

#[test]
fn files_are_private_to_the_daemon() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("state");
    let (mut ds, _) = open(&dir);
    ds.reserve(alloc("c1", "eth0", ip(1))).expect("reserve");
    ds.compact().expect("compact");
    let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("snapshot.jsonl")), 0o600);
    assert_eq!(mode(&wal::log_path(&dir, 1)), 0o600);
    ds.compact().expect("compact");
    assert_eq!(mode(&dir.join("snapshot.prev.jsonl")), 0o600);
}

#[test]
fn a_state_directory_others_can_enter_is_made_private() {
    // What kubelet makes of a `DirectoryOrCreate` hostPath volume.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("state");
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let (mut ds, _) = open(&dir);
    ds.reserve(alloc("c1", "eth0", ip(1))).expect("reserve");
    assert_eq!(
        fs::metadata(&dir).expect("metadata").permissions().mode() & 0o7777,
        0o700
    );
}

#[test]
fn a_state_directory_of_another_user_is_refused_untouched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("state");
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::chown(&dir, Some(65534), None)
        .expect("chown to nobody (the test needs root)");
    let Err(error) = Datastore::open(&dir, WalOptions::default()) else {
        panic!("another user's directory was opened");
    };
    let text = error.to_string();
    assert!(
        matches!(
            error,
            DatastoreError::NotPrivate {
                owner: 65534,
                daemon: 0,
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains("belongs to uid 65534"), "{text}");
    assert_eq!(
        fs::metadata(&dir).expect("metadata").permissions().mode() & 0o7777,
        0o755,
        "left as found"
    );
    assert_eq!(
        fs::read_dir(&dir).expect("read_dir").count(),
        0,
        "nothing written"
    );
}

#[test]
fn log_lines_are_checksummed_tagged_json() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut ds, _) = open(tmp.path());
    ds.reserve(alloc("c1", "eth0", ip(1))).expect("reserve");
    ds.commit(&key("c1", "eth0"), json!({"a": 1}), &PodRoutes::default())
        .expect("commit");
    ds.release(&key("c1", "eth0")).expect("release");
    let text = fs::read_to_string(log0(tmp.path())).expect("read");
    let ops: Vec<String> = text
        .lines()
        .map(|line| {
            let (crc, json) = line.split_once(' ').expect("crc and json");
            assert_eq!(crc.len(), 8);
            assert_eq!(
                u32::from_str_radix(crc, 16).expect("hex"),
                crc32fast::hash(json.as_bytes())
            );
            let value: serde_json::Value = serde_json::from_str(json).expect("json");
            value["op"].as_str().expect("op").to_string()
        })
        .collect();
    assert_eq!(ops, ["reserve", "commit", "release"]);
    assert!(text.ends_with('\n'));
}

/// Runs a fixed sequence of operations on a fresh store in `dir` and returns, for each record
/// boundary (including 0), the log length there and the state after it.
pub(super) fn build_log(dir: &Path) -> (Vec<u64>, Vec<Vec<Allocation>>) {
    let (mut ds, _) = open(dir);
    let mut ends = vec![0];
    let mut states = vec![Vec::new()];
    let mut record = |ds: &Datastore| {
        ends.push(fs::metadata(log0(dir)).expect("metadata").len());
        states.push(state(ds));
    };
    ds.reserve(alloc("a", "eth0", ip(1))).expect("op");
    record(&ds);
    ds.reserve(alloc("b", "eth0", ip(2))).expect("op");
    record(&ds);
    ds.commit(
        &key("a", "eth0"),
        json!({"ip": "10.0.0.1"}),
        &PodRoutes::default(),
    )
    .expect("op");
    record(&ds);
    ds.release(&key("b", "eth0")).expect("op");
    record(&ds);
    ds.reserve(alloc("c", "net1", ip(2))).expect("op");
    record(&ds);
    ds.commit(
        &key("c", "net1"),
        json!([1, "x", null]),
        &PodRoutes::default(),
    )
    .expect("op");
    record(&ds);
    (ends, states)
}

#[test]
fn torn_tail_of_every_length_recovers_the_last_complete_record() {
    let source = tempfile::tempdir().expect("tempdir");
    let (ends, states) = build_log(source.path());
    let bytes = fs::read(log0(source.path())).expect("read");
    assert_eq!(*ends.last().expect("ends"), bytes.len() as u64);

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let extra = alloc("z", "eth9", ip(200));
    for len in 0..=bytes.len() {
        fs::write(log0(dir), &bytes[..len]).expect("write");
        let complete = ends.iter().rposition(|&end| end <= len as u64).expect("0");
        let (mut ds, report) =
            Datastore::open(dir, options(1000)).unwrap_or_else(|e| panic!("length {len}: {e}"));
        assert_eq!(state(&ds), states[complete], "length {len}");
        assert_eq!(report.records_replayed, complete, "length {len}");
        assert_eq!(
            report.torn_tail_bytes,
            len as u64 - ends[complete],
            "length {len}"
        );
        assert_eq!(
            fs::metadata(log0(dir)).expect("metadata").len(),
            ends[complete],
            "length {len}: the torn tail must be cut off"
        );

        // Appending after the cut yields a clean log.
        ds.reserve(extra.clone()).expect("reserve after recovery");
        drop(ds);
        let (ds, report) = Datastore::open(dir, options(1000))
            .unwrap_or_else(|e| panic!("length {len}, reopen: {e}"));
        assert_eq!(report.torn_tail_bytes, 0);
        let mut expected = states[complete].clone();
        expected.push(extra.clone());
        expected.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(state(&ds), expected, "length {len}, after append");
    }
}

#[test]
fn damaged_last_record_is_dropped_as_torn() {
    let source = tempfile::tempdir().expect("tempdir");
    let (ends, states) = build_log(source.path());
    let last_start = ends[ends.len() - 2] as usize;
    let mut bytes = fs::read(log0(source.path())).expect("read");
    // One flip in the checksum digits, one in the JSON: both are cut off as torn, and, whole
    // but unreadable (a power loss mid-append, or damage), reported as lost.
    for offset in [last_start + 3, last_start + 30] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut damaged = bytes.clone();
        damaged[offset] ^= 0x01;
        fs::write(log0(tmp.path()), &damaged).expect("write");
        let (ds, report) = open(tmp.path());
        assert_eq!(state(&ds), states[states.len() - 2]);
        assert_eq!(report.torn_tail_bytes, (bytes.len() - last_start) as u64);
        assert_eq!(report.lost.len(), 1, "{:?}", report.lost);
        assert_eq!(report.lost[0].offset, Some(last_start as u64));
    }
    // A lone newline as the last line is torn too.
    let tmp = tempfile::tempdir().expect("tempdir");
    bytes.push(b'\n');
    fs::write(log0(tmp.path()), &bytes).expect("write");
    let (ds, report) = open(tmp.path());
    assert_eq!(state(&ds), states[states.len() - 1]);
    assert_eq!(report.torn_tail_bytes, 1);
    assert_eq!(report.lost.len(), 1, "{:?}", report.lost);
}

#[test]
fn valid_checksum_on_an_unknown_record_is_an_error_even_at_the_end() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ends, _) = build_log(tmp.path());
    let json = br#"{"op":"frobnicate","key":{"container_id":"a","ifname":"eth0"}}"#;
    let mut bytes = fs::read(log0(tmp.path())).expect("read");
    bytes.extend_from_slice(format!("{:08x} ", crc32fast::hash(json)).as_bytes());
    bytes.extend_from_slice(json);
    bytes.push(b'\n');
    fs::write(log0(tmp.path()), &bytes).expect("write");
    let err = Datastore::open(tmp.path(), options(1000)).expect_err("unknown record");
    assert!(
        matches!(err, DatastoreError::UnknownRecord { offset, .. } if offset == *ends.last().expect("end"))
    );
    assert!(err.to_string().contains("newer version"), "{err}");
}

#[test]
fn self_contradicting_log_keeps_the_first_reading_and_reports_the_rest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut ds, _) = open(tmp.path());
    ds.reserve(alloc("a", "eth0", ip(1))).expect("reserve");
    let expected = state(&ds);
    drop(ds);
    // The same reservation twice: no live run can produce this.
    let bytes = fs::read(log0(tmp.path())).expect("read");
    let mut doubled = bytes.clone();
    doubled.extend_from_slice(&bytes);
    fs::write(log0(tmp.path()), &doubled).expect("write");
    let (ds, report) = open(tmp.path());
    assert_eq!(state(&ds), expected);
    assert_eq!(report.lost.len(), 1, "{:?}", report.lost);
    let lost = &report.lost[0];
    assert_eq!(lost.offset, Some(bytes.len() as u64));
    assert!(!lost.unreadable);
    assert!(
        lost.to_string().contains("already holds 10.0.0.1") && lost.to_string().contains("dropped"),
        "{lost}"
    );
    // Readable, so nothing is set aside; the state was rewritten into a clean generation.
    assert!(report.set_aside.is_empty());
    drop(ds);
    let (ds, report) = open(tmp.path());
    assert_eq!(state(&ds), expected);
    assert!(report.lost.is_empty(), "{:?}", report.lost);
}

#[test]
fn compaction_keeps_state_and_bounds_the_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut ds, _) = Datastore::open(dir, options(4)).expect("open");
    for round in 0..20u8 {
        for i in 0..5u8 {
            let container = format!("r{round}i{i}");
            ds.reserve(alloc(&container, "eth0", Ipv4Addr::new(10, 1, round, i)))
                .expect("reserve");
            if i % 2 == 0 {
                ds.commit(
                    &key(&container, "eth0"),
                    json!({"round": round}),
                    &PodRoutes::default(),
                )
                .expect("commit");
            }
        }
        for i in 0..3u8 {
            ds.release(&key(&format!("r{round}i{i}"), "eth0"))
                .expect("release");
        }
    }
    assert!(ds.generation() > 10, "generation {}", ds.generation());
    let generation = ds.generation();
    // Compaction made everything durable without the syncer.
    let syncer = ds.syncer();
    assert!(syncer.synced_lsn() + 4 >= ds.last_lsn());
    let expected = state(&ds);
    drop(ds);

    assert_eq!(
        files(dir),
        [
            "snapshot.jsonl".to_string(),
            "snapshot.prev.jsonl".to_string(),
            format!("wal-{}.log", generation - 1),
            format!("wal-{generation}.log")
        ]
    );
    let log_lines = fs::read_to_string(wal::log_path(dir, generation))
        .expect("read")
        .lines()
        .count();
    assert!(log_lines <= 4, "{log_lines} records after compaction");

    let (ds, report) = Datastore::open(dir, options(4)).expect("reopen");
    assert!(report.snapshot_loaded);
    assert_eq!(report.generation, generation);
    assert_eq!(state(&ds), expected);
    assert_eq!(ds.len(), 40);
}

#[test]
fn syncer_notion_of_durable_advances_with_compaction() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut ds, _) = open(tmp.path());
    let syncer = ds.syncer();
    let lsn = ds.reserve(alloc("a", "eth0", ip(1))).expect("reserve");
    assert_eq!(syncer.synced_lsn(), 0);
    ds.compact().expect("compact");
    assert_eq!(syncer.synced_lsn(), lsn);
    syncer.sync_through(lsn).expect("sync");
    assert_eq!(syncer.sync_count(), 0, "nothing left to fdatasync");

    // Records after the compaction go to the new log and are synced there.
    let lsn2 = ds.reserve(alloc("b", "eth0", ip(2))).expect("reserve");
    syncer.sync_through(lsn2).expect("sync");
    assert_eq!(syncer.sync_count(), 1);
    assert_eq!(syncer.synced_lsn(), lsn2);
    assert!(syncer.sync_through(0).is_ok());
}

#[test]
fn sync_through_an_lsn_never_returned_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut ds, _) = open(tmp.path());
    let lsn = ds.reserve(alloc("a", "eth0", ip(1))).expect("reserve");
    let err = ds.syncer().sync_through(lsn + 5).expect_err("future lsn");
    assert!(
        err.to_string().contains(&format!("LSN {}", lsn + 5)),
        "{err}"
    );
}

#[test]
fn failed_append_changes_nothing_and_the_next_change_starts_a_new_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut ds, _) = open(dir);
    ds.reserve(alloc("a", "eth0", ip(1))).expect("reserve");
    // /dev/full fails every write with ENOSPC and cannot be truncated: a disk that breaks
    // mid-record. Reached through a symlink so that deleting the "old log" deletes only that.
    let full = dir.join("full");
    std::os::unix::fs::symlink("/dev/full", &full).expect("symlink");
    ds.log = LogWriter::open_existing(&full, 0, 0).expect("open /dev/full");

    let err = ds
        .reserve(alloc("b", "eth0", ip(2)))
        .expect_err("disk full");
    assert!(
        matches!(
            &err,
            DatastoreError::Io {
                action: "append to",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("full"), "{err}");
    assert!(ds.get(&key("b", "eth0")).is_none());
    assert_eq!(ds.last_lsn(), 1);

    // The partial record could not be cut off, so the next change first moves to a new log.
    ds.reserve(alloc("c", "eth0", ip(3)))
        .expect("reserve after failure");
    assert_eq!(ds.generation(), 1);
    let expected = state(&ds);
    drop(ds);
    let (ds, _) = open(dir);
    assert_eq!(state(&ds), expected);
    // Compaction deletes superseded logs by generation; the symlink is not one.
    assert_eq!(files(dir), ["full", "snapshot.jsonl", "wal-1.log"]);
}

#[test]
fn failed_fdatasync_stays_failed_until_the_state_is_rewritten() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut ds, _) = open(dir);
    let syncer = ds.syncer();
    let lsn = ds.reserve(alloc("a", "eth0", ip(1))).expect("reserve");
    // fdatasync of /dev/null fails with EINVAL, standing in for a disk error.
    let null = fs::File::open("/dev/null").expect("open /dev/null");
    ds.shared.replace_file_for_test(Arc::new(null));

    let err = syncer.sync_through(lsn).expect_err("sync fails");
    assert!(
        matches!(&err, DatastoreError::SyncFailed { synced: 0, .. }),
        "{err}"
    );
    // Retrying cannot help: after a failed fdatasync the kernel may have dropped the dirty
    // pages, and a second fdatasync would report success without writing them.
    assert!(syncer.sync_through(lsn).is_err());
    assert_eq!(syncer.sync_count(), 1);

    let lsn2 = ds.reserve(alloc("b", "eth0", ip(2))).expect("reserve");
    assert_eq!(ds.generation(), 1, "the reserve compacted first");
    assert_eq!(syncer.synced_lsn(), lsn);
    syncer.sync_through(lsn2).expect("sync after compaction");
    let expected = state(&ds);
    drop(ds);
    let (ds, _) = open(dir);
    assert_eq!(state(&ds), expected);
}

/// Builds a store at generation 1 with further records in its log, and returns the state.
pub(super) fn store_before_compaction(dir: &Path) -> (Datastore, Vec<Allocation>) {
    let (mut ds, _) = open(dir);
    for i in 1..=4u8 {
        ds.reserve(alloc(&format!("s{i}"), "eth0", ip(i)))
            .expect("reserve");
    }
    ds.commit(&key("s1", "eth0"), json!({"n": 1}), &PodRoutes::default())
        .expect("commit");
    ds.compact().expect("first compaction");
    ds.release(&key("s2", "eth0")).expect("release");
    ds.commit(&key("s3", "eth0"), json!({"n": 3}), &PodRoutes::default())
        .expect("commit");
    ds.reserve(alloc("s5", "eth1", ip(2))).expect("reserve");
    let expected = state(&ds);
    (ds, expected)
}

#[test]
fn crash_at_every_compaction_step_recovers_the_same_state() {
    // Generation 1 has no previous snapshot (generation 0 has none); compacting it keeps it
    // as the previous one, with its log, from the moment the new one is renamed into place.
    let both = vec![
        "snapshot.jsonl",
        "snapshot.prev.jsonl",
        "wal-1.log",
        "wal-2.log",
    ];
    let cases = [
        (
            CompactStop::TempWritten,
            1,
            vec!["snapshot.jsonl", "wal-1.log"],
        ),
        (CompactStop::Renamed, 2, both.clone()),
        (CompactStop::NewLogCreated, 2, both.clone()),
        (CompactStop::Complete, 2, both),
    ];
    for (stop, generation, after) in cases {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let (mut ds, expected) = store_before_compaction(dir);
        ds.compact_until(stop).expect("compaction step");
        drop(ds);

        let (mut ds, report) = open(dir);
        assert_eq!(state(&ds), expected, "{stop:?}");
        assert_eq!(report.generation, generation, "{stop:?}");
        assert_eq!(files(dir), after, "{stop:?}");
        let incomplete: Vec<_> = report
            .incomplete
            .iter()
            .map(|a| a.key.to_string())
            .collect();
        assert_eq!(incomplete, ["s4/eth0", "s5/eth1"], "{stop:?}");

        // The recovered store keeps working and survives another reopen.
        ds.reserve(alloc("after", "eth0", ip(77))).expect("reserve");
        let expected = state(&ds);
        drop(ds);
        let (ds, _) = open(dir);
        assert_eq!(state(&ds), expected, "{stop:?}, second reopen");
    }
}

#[test]
fn stale_old_log_next_to_a_newer_generation_is_ignored_and_deleted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut ds, _) = store_before_compaction(dir);
    let old_log = fs::read(wal::log_path(dir, 1)).expect("read");
    ds.compact().expect("compact");
    ds.compact().expect("compact");
    // Records in the newest generation, then a log older than the previous snapshot's
    // reappears (its deletion was lost).
    ds.release(&key("s4", "eth0")).expect("release");
    ds.reserve(alloc("s6", "eth0", ip(6))).expect("reserve");
    let expected = state(&ds);
    drop(ds);
    fs::write(wal::log_path(dir, 1), &old_log).expect("write");
    // So do temp snapshots of an attempt that never finished.
    fs::write(dir.join("snapshot.jsonl.tmp"), b"{\"format\":").expect("write");
    fs::write(dir.join("snapshot.prev.jsonl.tmp"), b"x").expect("write");

    let (ds, report) = open(dir);
    assert_eq!(state(&ds), expected);
    assert_eq!(report.records_replayed, 2);
    assert_eq!(
        files(dir),
        [
            "snapshot.jsonl",
            "snapshot.prev.jsonl",
            "wal-2.log",
            "wal-3.log"
        ]
    );
}

#[test]
fn log_newer_than_the_snapshot_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut ds, _) = store_before_compaction(dir);
    ds.compact().expect("compact");
    ds.reserve(alloc("n", "eth0", ip(50))).expect("reserve");
    drop(ds);
    fs::remove_file(dir.join("snapshot.jsonl")).expect("remove snapshot");
    let err = Datastore::open(dir, options(1000)).expect_err("orphan");
    assert!(matches!(
        err,
        DatastoreError::OrphanLog {
            log_generation: 1,
            snapshot_generation: 0,
            ..
        }
    ));
    assert!(err.to_string().contains("wal-1.log"), "{err}");

    // An empty one (a compaction that crashed before its first record) is just removed.
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::write(wal::log_path(tmp.path(), 3), b"").expect("write");
    let (ds, _) = open(tmp.path());
    assert!(ds.is_empty());
    assert_eq!(files(tmp.path()), ["wal-0.log"]);
}

#[test]
fn snapshot_of_unknown_format_is_refused_untouched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut ds, _) = open(dir);
    ds.reserve(alloc("a", "eth0", ip(1))).expect("reserve");
    ds.compact().expect("compact");
    drop(ds);
    let snapshot_path = dir.join("snapshot.jsonl");
    let good = fs::read_to_string(&snapshot_path).expect("read");
    let (header, rest) = good.split_once('\n').expect("a header line");
    let header_json = header.split_once(' ').expect("checksum").1;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(header_json).expect("json"),
        json!({"format": "wasmcni-datastore/2", "generation": 1, "allocations": 1})
    );

    // A newer format, with a valid checksum: not ours to guess at.
    let newer = header_json.replace("wasmcni-datastore/2", "wasmcni-datastore/3");
    let newer = format!("{:08x} {newer}\n{rest}", crc32fast::hash(newer.as_bytes()));
    fs::write(&snapshot_path, &newer).expect("write");
    let err = Datastore::open(dir, options(1000)).expect_err("format");
    let msg = err.to_string();
    assert!(matches!(err, DatastoreError::UnknownFormat { .. }));
    assert!(
        msg.contains("wasmcni-datastore/3") && msg.contains("wasmcni-datastore/2"),
        "{msg}"
    );
    assert!(msg.contains("snapshot.jsonl"), "{msg}");
    assert_eq!(fs::read_to_string(&snapshot_path).expect("read"), newer);

    // The same for a format-1 file naming an unknown format.
    fs::remove_file(&snapshot_path).expect("remove");
    let format_1 = dir.join("snapshot.json");
    fs::write(
        &format_1,
        r#"{"format":"wasmcni-datastore/9","generation":1}"#,
    )
    .expect("write");
    let err = Datastore::open(dir, options(1000)).expect_err("format");
    assert!(err.to_string().contains("wasmcni-datastore/9"), "{err}");
}

#[test]
fn group_commit_shares_one_fdatasync() {
    const THREADS: usize = 16;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ds, _) = open(tmp.path());
    let syncer = ds.syncer();
    let ds = Arc::new(Mutex::new(ds));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let ds = Arc::clone(&ds);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let a = alloc(&format!("t{i}"), "eth0", ip(i as u8 + 1));
                let lsn = ds.lock().expect("lock").reserve(a).expect("reserve");
                // Every reservation is written before anyone syncs, so the first leader's
                // fdatasync covers them all.
                barrier.wait();
                let syncer = ds.lock().expect("lock").syncer();
                syncer.sync_through(lsn).expect("sync");
                lsn
            })
        })
        .collect();
    let lsns: BTreeSet<Lsn> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    assert_eq!(lsns.len(), THREADS);
    assert!(syncer.sync_count() < THREADS as u64);
    assert_eq!(syncer.sync_count(), 1);
    assert_eq!(syncer.synced_lsn(), THREADS as Lsn);
}

#[test]
fn concurrent_reserve_and_sync_all_become_durable() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 40;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ds, _) = Datastore::open(tmp.path(), options(64)).expect("open");
    let syncer = ds.syncer();
    let ds = Arc::new(Mutex::new(ds));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let ds = Arc::clone(&ds);
            let syncer = syncer.clone();
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let a = alloc(
                        &format!("t{t}i{i}"),
                        "eth0",
                        Ipv4Addr::new(10, 2, t as u8, i as u8),
                    );
                    // The lock is held only for the append, never for the sync.
                    let lsn = ds.lock().expect("lock").reserve(a).expect("reserve");
                    syncer.sync_through(lsn).expect("sync");
                    assert!(syncer.synced_lsn() >= lsn);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let ds = ds.lock().expect("lock");
    let total = (THREADS * PER_THREAD) as u64;
    assert_eq!(ds.last_lsn(), total);
    assert_eq!(syncer.synced_lsn(), total);
    assert!(syncer.sync_count() <= total);
    eprintln!(
        "{} reserve+sync over {THREADS} threads: {} fdatasyncs (generation {})",
        total,
        syncer.sync_count(),
        ds.generation()
    );
    let expected = state(&ds);
    let dir = ds.dir().to_path_buf();
    drop(ds);
    let (reopened, _) = open(&dir);
    assert_eq!(state(&reopened), expected);
}

/// Deterministic xorshift64, so failures reproduce without a `rand` dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn check_against_model(ds: &Datastore, model: &BTreeMap<AttachmentKey, Allocation>, step: usize) {
    let actual: Vec<&Allocation> = ds.allocations().collect();
    let expected: Vec<&Allocation> = model.values().collect();
    assert_eq!(actual, expected, "step {step}");
    assert_eq!(ds.len(), model.len());
    let ips: BTreeSet<std::net::IpAddr> = ds.allocations().map(|a| a.ip).collect();
    assert_eq!(ips.len(), ds.len(), "step {step}: an IP is held twice");
    for a in model.values() {
        assert_eq!(ds.holder_of(a.ip), Some(a), "step {step}");
        assert_eq!(ds.get(&a.key), Some(a), "step {step}");
        let newest = model
            .values()
            .filter(|b| b.host_veth == a.host_veth)
            .max_by(|x, y| {
                x.created_unix_ms
                    .cmp(&y.created_unix_ms)
                    .then_with(|| x.key.cmp(&y.key))
            });
        assert_eq!(ds.find_by_veth(&a.host_veth), newest, "step {step}");
    }
}

#[test]
fn randomized_operations_match_a_model_across_reopens() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let thresholds = [3, 7, 1000];
    let (mut ds, _) = Datastore::open(dir, options(7)).expect("open");
    let mut model: BTreeMap<AttachmentKey, Allocation> = BTreeMap::new();
    let mut reopens = 0;
    for step in 0..3000 {
        let container = format!("c{}", rng.below(12));
        let ifname = if rng.below(3) == 0 { "net1" } else { "eth0" };
        let k = key(&container, ifname);
        match rng.below(100) {
            0..=39 => {
                let mut a = alloc(
                    &container,
                    ifname,
                    Ipv4Addr::new(10, 3, 0, rng.below(16) as u8),
                );
                a.host_veth = format!("eni{}", rng.below(6));
                a.created_unix_ms = rng.below(5);
                a.pod = if rng.below(2) == 0 { None } else { a.pod };
                a.route_table = rng.below(3).checked_sub(1).map(|t| t as u32);
                let holder = model.values().find(|b| b.ip == a.ip).map(|b| b.key.clone());
                match ds.reserve(a.clone()) {
                    Ok(_) => {
                        assert!(!model.contains_key(&k) && holder.is_none(), "step {step}");
                        model.insert(k, a);
                    }
                    Err(DatastoreError::AttachmentExists { key, ip }) => {
                        assert_eq!(key, k);
                        assert_eq!(Some(ip), model.get(&k).map(|b| b.ip), "step {step}");
                    }
                    Err(DatastoreError::IpInUse { ip, holder: h }) => {
                        assert!(!model.contains_key(&k), "step {step}");
                        assert_eq!(ip, a.ip);
                        assert_eq!(Some(h), holder, "step {step}");
                    }
                    Err(e) => panic!("step {step}: {e}"),
                }
            }
            40..=59 => {
                let result = json!({"step": step, "ips": [k.to_string()]});
                match ds.commit(&k, result.clone(), &PodRoutes::default()) {
                    Ok(_) => {
                        let m = model.get_mut(&k).expect("model has the key");
                        m.state = AllocationState::Committed;
                        m.result = Some(result);
                    }
                    Err(DatastoreError::NotFound { key }) => {
                        assert_eq!(key, k);
                        assert!(!model.contains_key(&k), "step {step}");
                    }
                    Err(e) => panic!("step {step}: {e}"),
                }
            }
            60..=89 => {
                let (removed, _) = ds.release(&k).expect("release");
                assert_eq!(removed, model.remove(&k), "step {step}");
            }
            90..=93 => {
                drop(ds);
                let threshold = thresholds[rng.below(3) as usize];
                let (reopened, report) = Datastore::open(dir, options(threshold)).expect("reopen");
                ds = reopened;
                reopens += 1;
                let reserved: Vec<&Allocation> = model
                    .values()
                    .filter(|a| a.state == AllocationState::Reserved)
                    .collect();
                assert_eq!(report.incomplete.iter().collect::<Vec<_>>(), reserved);
                assert_eq!(report.torn_tail_bytes, 0);
                check_against_model(&ds, &model, step);
            }
            _ => {
                ds.syncer().sync_through(ds.last_lsn()).expect("sync");
            }
        }
        assert_eq!(ds.len(), model.len(), "step {step}");
        if step % 50 == 0 {
            check_against_model(&ds, &model, step);
        }
    }
    check_against_model(&ds, &model, 3000);
    assert!(reopens > 50, "{reopens} reopens");
    assert!(ds.generation() > 20, "generation {}", ds.generation());
    drop(ds);
    let (ds, _) = open(dir);
    check_against_model(&ds, &model, 3001);
}

/// Not a check but a figure: run with `--ignored --nocapture` to see this disk's cost.
#[test]
#[ignore]
fn measure_reserve_and_sync() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut ds, _) = open(tmp.path());
    let syncer = ds.syncer();
    let start = Instant::now();
    for i in 0..1000u32 {
        let [_, _, hi, lo] = i.to_be_bytes();
        let lsn = ds
            .reserve(alloc(
                &format!("m{i}"),
                "eth0",
                Ipv4Addr::new(10, 9, hi, lo),
            ))
            .expect("reserve");
        syncer.sync_through(lsn).expect("sync");
    }
    let sequential = start.elapsed();
    eprintln!(
        "1000 x (reserve + sync_through), one caller: {sequential:?} ({:?} each), {} fdatasyncs",
        sequential / 1000,
        syncer.sync_count()
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let (ds, _) = open(tmp.path());
    let syncer = ds.syncer();
    let ds = Arc::new(Mutex::new(ds));
    let start = Instant::now();
    let handles: Vec<_> = (0..8u32)
        .map(|t| {
            let ds = Arc::clone(&ds);
            let syncer = syncer.clone();
            std::thread::spawn(move || {
                for i in 0..125u32 {
                    let a = alloc(
                        &format!("t{t}i{i}"),
                        "eth0",
                        Ipv4Addr::new(10, 8, t as u8, i as u8),
                    );
                    let lsn = ds.lock().expect("lock").reserve(a).expect("reserve");
                    syncer.sync_through(lsn).expect("sync");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let concurrent = start.elapsed();
    eprintln!(
        "1000 x (reserve + sync_through), 8 threads: {concurrent:?}, {} fdatasyncs",
        syncer.sync_count()
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut ds, _) = open(tmp.path());
    let start = Instant::now();
    for i in 0..1000u32 {
        let [_, _, hi, lo] = i.to_be_bytes();
        ds.reserve(alloc(
            &format!("m{i}"),
            "eth0",
            Ipv4Addr::new(10, 9, hi, lo),
        ))
        .expect("reserve");
    }
    ds.syncer().sync_through(ds.last_lsn()).expect("sync");
    eprintln!("1000 x reserve + one sync: {:?}", start.elapsed());

    let start = Instant::now();
    let (ds, report) = open(tmp.path());
    eprintln!(
        "reopen replaying {} records: {:?} ({} allocations)",
        report.records_replayed,
        start.elapsed(),
        ds.len()
    );
}

#[test]
fn ipv6_allocations_survive_the_wal_and_a_snapshot_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let v6: std::net::Ipv6Addr = "2600:1f14:aa:bb:cc::7".parse().unwrap();
    {
        let (mut ds, _) = open(dir.path());
        let mut a = alloc("c6", "eth0", ip(1));
        a.ip = v6.into();
        a.route_table = None;
        ds.reserve(a).unwrap();
        ds.reserve(alloc("c4", "eth0", ip(2))).unwrap();
        let err = ds
            .reserve({
                let mut b = alloc("other", "eth0", ip(3));
                b.ip = v6.into();
                b
            })
            .unwrap_err();
        assert!(err.to_string().contains(&v6.to_string()), "{err}");
        let wal = files(dir.path())
            .into_iter()
            .map(|f| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default())
            .collect::<String>();
        assert!(
            wal.contains(&format!("\"{v6}\"")),
            "addresses are stored as text: {wal}"
        );
    }
    let (mut ds, _) = open(dir.path());
    assert_eq!(ds.holder_of(v6).unwrap().key, key("c6", "eth0"));
    assert_eq!(ds.holder_of(ip(2)).unwrap().key, key("c4", "eth0"));
    ds.compact().unwrap();
    let (ds, _) = open(dir.path());
    assert_eq!(ds.holder_of(v6).unwrap().key, key("c6", "eth0"));
    assert_eq!(ds.len(), 2);
}

#[test]
fn an_egress_address_is_held_like_a_pod_address() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Datastore::open(dir.path(), WalOptions::default()).unwrap();
    let egress = |a: Allocation, ip: [u8; 4]| Allocation {
        egress_v4: Some(Ipv4Addr::from(ip)),
        ..a
    };
    let first = egress(
        alloc("c1", "eth0", Ipv4Addr::new(10, 0, 0, 1)),
        [169, 254, 172, 1],
    );
    store.reserve(first.clone()).unwrap();
    // Another attachment cannot take the same egress address.
    let second = egress(
        alloc("c2", "eth0", Ipv4Addr::new(10, 0, 0, 2)),
        [169, 254, 172, 1],
    );
    match store.reserve(second) {
        Err(DatastoreError::IpInUse { ip, holder }) => {
            assert_eq!(ip, IpAddr::from([169, 254, 172, 1]));
            assert_eq!(holder, first.key);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store
            .holder_of(Ipv4Addr::new(169, 254, 172, 1))
            .map(|a| &a.key),
        Some(&first.key)
    );
    // It survives a restart, and goes with its attachment.
    drop(store);
    let (mut store, _) = Datastore::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(
        store.get(&first.key).and_then(|a| a.egress_v4),
        first.egress_v4
    );
    store.release(&first.key).unwrap();
    assert!(store.holder_of(Ipv4Addr::new(169, 254, 172, 1)).is_none());
}

#[test]
fn a_dual_stack_attachment_holds_both_addresses_through_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Datastore::open(dir.path(), WalOptions::default()).unwrap();
    let v6: Ipv6Addr = "fd00:88::5".parse().unwrap();
    let dual = |a: Allocation, v6: Ipv6Addr| Allocation {
        ipv6: Some(v6),
        ..a
    };
    let first = dual(alloc("c1", "eth0", ip(1)), v6);
    store.reserve(first.clone()).unwrap();
    assert_eq!(store.holder_of(v6).map(|a| &a.key), Some(&first.key));
    assert_eq!(store.holder_of(ip(1)).map(|a| &a.key), Some(&first.key));
    // Neither address can be taken by another attachment, as its IPv4 nor its IPv6 one.
    match store.reserve(dual(alloc("c2", "eth0", ip(2)), v6)) {
        Err(DatastoreError::IpInUse { ip, holder }) => {
            assert_eq!(ip, IpAddr::V6(v6));
            assert_eq!(holder, first.key);
        }
        other => panic!("{other:?}"),
    }
    // An IPv6 first address with a second IPv6 one is no dual-stack record.
    let mut wrong = dual(alloc("c3", "eth0", ip(3)), "fd00:88::7".parse().unwrap());
    wrong.ip = IpAddr::V6("fd00:88::8".parse().unwrap());
    match store.reserve(wrong) {
        Err(DatastoreError::InvalidReservation { reason, .. }) => {
            assert!(
                reason.contains("first address must be its IPv4 one"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Through the log, then through a snapshot.
    drop(store);
    let (mut store, _) = Datastore::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(store.get(&first.key).and_then(|a| a.ipv6), Some(v6));
    store.compact().unwrap();
    drop(store);
    let (mut store, _) = Datastore::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(store.holder_of(v6).map(|a| &a.key), Some(&first.key));
    assert_eq!(
        store
            .get(&first.key)
            .unwrap()
            .pod_addresses()
            .collect::<Vec<_>>(),
        vec![IpAddr::V4(ip(1)), IpAddr::V6(v6)]
    );
    store.release(&first.key).unwrap();
    assert!(store.holder_of(v6).is_none() && store.holder_of(ip(1)).is_none());
}
