//! Recovery of the datastore from whatever is on disk: a snapshot and a write-ahead log, as a
//! crash, a full disk, bit rot, a newer version or a hostile writer could leave them (see
//! [`common::StoreImage`]), opened as the daemon opens its state directory.
//!
//! Beyond "never panics": a refusal names the file (and only a format or record of a newer
//! version is refused; damage is reported, not refused); a store that opens holds no address
//! twice, and opening it again (after recovery cut a torn tail, set damage aside and rewrote
//! the state) gives the same allocations with nothing left to repair.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wasmcni_datastore::{Allocation, Datastore, WalOptions};

#[path = "common.rs"]
mod common;

/// One directory per process (under `TMPDIR`; `scripts/fuzz.sh` points it at a tmpfs),
/// emptied before each input.
fn state_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
        .path()
}

fn clear(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read the state directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            // `damaged/`, where recovery keeps copies of what it found damaged.
            std::fs::remove_dir_all(&path).expect("remove a directory");
        } else {
            std::fs::remove_file(&path).expect("remove a file");
        }
    }
}

/// Whether a snapshot is framed (format 2: `<crc32> <json>` lines) rather than format 1.
fn is_framed(snapshot: &[u8]) -> bool {
    snapshot.len() > 9 && snapshot[8] == b' ' && snapshot[..8].iter().all(u8::is_ascii_hexdigit)
}

/// The log lines, each given its valid checksum (`<crc32 hex> <json>`).
fn with_checksums(log: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(log.len() + 64);
    for line in log.split_inclusive(|&b| b == b'\n') {
        let (body, newline) = match line.strip_suffix(b"\n") {
            Some(body) => (body, true),
            None => (line, false),
        };
        let json = if body.len() >= 9 && body[8] == b' ' {
            &body[9..]
        } else {
            body
        };
        out.extend_from_slice(format!("{:08x} ", crc32fast::hash(json)).as_bytes());
        out.extend_from_slice(json);
        if newline {
            out.push(b'\n');
        }
    }
    out
}

fn sorted(store: &Datastore) -> Vec<Allocation> {
    let mut all: Vec<Allocation> = store.allocations().cloned().collect();
    all.sort_by(|a, b| a.key.cmp(&b.key));
    all
}

fuzz_target!(|data: &[u8]| {
    let Some(image) = common::StoreImage::parse(data) else {
        return;
    };
    let dir = state_dir();
    clear(dir);
    // The log that goes with the snapshot is the one of its generation.
    // The log that goes with the snapshot is the one of its generation (in the header line of
    // format 2).
    let generation = image
        .snapshot
        .map(|s| {
            if is_framed(s) {
                let header = s.get(9..).unwrap_or_default();
                header.split(|&b| b == b'\n').next().unwrap_or_default()
            } else {
                s
            }
        })
        .and_then(|s| serde_json::from_slice::<serde_json::Value>(s).ok())
        .and_then(|v| v.get("generation").and_then(serde_json::Value::as_u64))
        .unwrap_or(0);
    if let Some(snapshot) = image.snapshot {
        let name = if is_framed(snapshot) {
            "snapshot.jsonl"
        } else {
            "snapshot.json"
        };
        std::fs::write(dir.join(name), snapshot).expect("write the snapshot");
    }
    let log = if image.fix_checksums {
        with_checksums(image.log)
    } else {
        image.log.to_vec()
    };
    std::fs::write(dir.join(format!("wal-{generation}.log")), log).expect("write the log");

    let options = WalOptions::default();
    let store = match Datastore::open(dir, options) {
        Ok((store, _)) => store,
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains(&dir.display().to_string()),
                "a refusal that does not name the file: {message}"
            );
            return;
        }
    };
    let first = sorted(&store);
    for allocation in &first {
        let holder = store.holder_of(allocation.ip).map(|a| &a.key);
        assert_eq!(
            holder,
            Some(&allocation.key),
            "{} held twice",
            allocation.ip
        );
    }
    drop(store);
    let (again, report) = Datastore::open(dir, options)
        .unwrap_or_else(|e| panic!("a store that opened once is refused the second time: {e}"));
    assert_eq!(report.torn_tail_bytes, 0, "the first open left a torn tail");
    assert!(
        report.lost.is_empty() && report.repaired.is_empty(),
        "the first open left damage behind: {report:?}"
    );
    assert_eq!(sorted(&again), first, "reopening changed the allocations");
});
