//! Plugin-private persistent key/value state (`kv`): one file per plugin under the daemon's
//! state directory, changed only by calls that succeed.
//!
//! A call works on a transaction: it reads the state as it was when it first touched `kv`, plus
//! its own writes; the writes are merged into the store (and written to disk) only after the
//! call returned successfully, so a plugin that traps or errs leaves its state untouched.
//!
//! The file is framed like the datastore (`<crc32> <json>` per line: a header, then one line
//! per key), so damage costs the keys on the damaged lines and nothing else: opening a damaged
//! file keeps every key it can read, logs each one lost, keeps a copy of the damaged file
//! beside it (`<name>.damaged`, the latest only) and rewrites the state clean. The format-1
//! file of earlier versions (one JSON object of hex values) is still read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use wasmcni_core::framing;

pub use wasmcni_core::limits::MAX_KEY_BYTES;

/// One plugin's state.
#[derive(Debug)]
pub struct KvStore {
    path: PathBuf,
    /// The grant's quota; a reload may change it for the same plugin's state.
    max_bytes: AtomicUsize,
    map: Mutex<Arc<BTreeMap<String, Vec<u8>>>>,
    /// What opening it lost to damage.
    lost: Vec<String>,
}

fn size_of(key: &str, value: &[u8]) -> usize {
    key.len() + value.len()
}

impl KvStore {
    /// Opens (or starts) the state kept in `path`, allowing `max_bytes` of keys and values.
    /// A damaged file is salvaged (see the module notes), never refused; only a file that
    /// cannot be read at all from the disk is an error.
    pub fn open(path: PathBuf, max_bytes: usize) -> Result<KvStore, String> {
        let (map, lost) = match std::fs::read(&path) {
            Ok(bytes) => {
                if let Some(format) = newer_format(&bytes) {
                    return Err(format!(
                        "{} has format {format:?}, which this build does not read (it reads {FORMAT:?}): run the wasmcni version that wrote it",
                        path.display()
                    ));
                }
                decode(&bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (BTreeMap::new(), Vec::new()),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        if !lost.is_empty() {
            let aside = path.with_extension("kv.damaged");
            let copied = std::fs::copy(&path, &aside).map_err(|e| e.to_string());
            for what in &lost {
                tracing::error!(file = %path.display(), lost = %what, "plugin kv state: lost to damage");
            }
            tracing::error!(file = %path.display(), kept = map.len(), copy = ?copied.map(|_| aside.display().to_string()), "plugin kv state was damaged: the keys it could read are kept and the file rewritten");
            persist(&path, &encode(&map))
                .map_err(|e| format!("rewriting the damaged {}: {e}", path.display()))?;
        }
        Ok(KvStore {
            path,
            max_bytes: AtomicUsize::new(max_bytes),
            map: Mutex::new(Arc::new(map)),
            lost,
        })
    }

    /// What opening it lost to damage, one line each.
    pub fn lost(&self) -> &[String] {
        &self.lost
    }

    /// Applies a (reloaded) grant's quota to the next calls.
    pub fn set_max_bytes(&self, max_bytes: usize) {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
    }

    /// Where it is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A transaction over the current state.
    pub fn begin(&self) -> KvTxn {
        let base = self.map.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let bytes = base.iter().map(|(k, v)| size_of(k, v)).sum();
        KvTxn {
            base,
            writes: BTreeMap::new(),
            bytes,
            max_bytes: self.max_bytes.load(Ordering::Relaxed),
        }
    }

    /// Merges a finished transaction's writes and persists them (write, fsync, rename).
    /// Refused, changing nothing, if concurrent calls together pushed the state over quota.
    pub fn commit(&self, txn: KvTxn) -> Result<(), String> {
        if txn.writes.is_empty() {
            return Ok(());
        }
        let mut guard = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = (**guard).clone();
        for (key, write) in txn.writes {
            match write {
                Some(value) => next.insert(key, value),
                None => next.remove(&key),
            };
        }
        let bytes: usize = next.iter().map(|(k, v)| size_of(k, v)).sum();
        let max_bytes = self.max_bytes.load(Ordering::Relaxed);
        if bytes > max_bytes {
            return Err(format!(
                "kv state would grow to {bytes} bytes, over the grant's max_bytes of {max_bytes}"
            ));
        }
        persist(&self.path, &encode(&next))
            .map_err(|e| format!("writing {}: {e}", self.path.display()))?;
        *guard = Arc::new(next);
        Ok(())
    }
}

/// One call's view of a plugin's state.
#[derive(Debug)]
pub struct KvTxn {
    base: Arc<BTreeMap<String, Vec<u8>>>,
    writes: BTreeMap<String, Option<Vec<u8>>>,
    bytes: usize,
    max_bytes: usize,
}

impl KvTxn {
    fn current(&self, key: &str) -> Option<&Vec<u8>> {
        match self.writes.get(key) {
            Some(write) => write.as_ref(),
            None => self.base.get(key),
        }
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.current(key).cloned()
    }

    /// Sets `key`, refusing bad keys and anything over quota.
    pub fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(format!("kv keys must be 1 to {MAX_KEY_BYTES} bytes"));
        }
        let old = self.current(&key).map_or(0, |v| size_of(&key, v));
        let after = self.bytes - old + size_of(&key, &value);
        if after > self.max_bytes {
            return Err(format!(
                "kv state would grow to {after} bytes, over the grant's max_bytes of {}",
                self.max_bytes
            ));
        }
        self.bytes = after;
        self.writes.insert(key, Some(value));
        Ok(())
    }

    /// Removes `key`. A key only this call wrote leaves nothing behind, so the call's writes
    /// never hold more than its quota plus a mark per key of the stored state.
    pub fn delete(&mut self, key: String) {
        if let Some(old) = self.current(&key) {
            self.bytes -= size_of(&key, old);
            if self.base.contains_key(&key) {
                self.writes.insert(key, None);
            } else {
                self.writes.remove(&key);
            }
        }
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .base
            .keys()
            .filter(|k| !self.writes.contains_key(*k))
            .cloned()
            .collect();
        keys.extend(
            self.writes
                .iter()
                .filter(|(_, v)| v.is_some())
                .map(|(k, _)| k.clone()),
        );
        keys.sort();
        keys
    }

    /// Whether the call changed anything.
    pub fn is_dirty(&self) -> bool {
        !self.writes.is_empty()
    }
}

const FORMAT: &str = "wasmcni-kv/2";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    entries: usize,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    key: String,
    /// Hex: small, diffable, no extra dependency.
    value: String,
}

fn hex(value: &[u8]) -> String {
    value.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hex, by bytes: a damaged file may hold any text, and slicing a `str` inside a
/// character would panic.
fn unhex(digits: &str) -> Result<Vec<u8>, &'static str> {
    let digits = digits.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err("an odd number of hex digits");
    }
    let nibble = |d: u8| char::from(d).to_digit(16);
    digits
        .chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4 | nibble(pair[1])?) as u8))
        .collect::<Option<Vec<u8>>>()
        .ok_or("not hex")
}

/// A header line, then one line per key.
fn encode(map: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let header = Header {
        format: FORMAT.to_owned(),
        entries: map.len(),
    };
    let mut out = framing::frame(&serde_json::to_vec(&header).unwrap_or_default());
    for (key, value) in map {
        let entry = Entry {
            key: key.clone(),
            value: hex(value),
        };
        out.extend_from_slice(&framing::frame(
            &serde_json::to_vec(&entry).unwrap_or_default(),
        ));
    }
    out
}

/// The format a file's readable header names, when it is not this build's: a newer version's
/// state, not damage, and never rewritten.
fn newer_format(bytes: &[u8]) -> Option<String> {
    let first = framing::lines(bytes).next()?;
    let json = framing::unframe(first.bytes).ok()?;
    let header: serde_json::Value = serde_json::from_slice(json).ok()?;
    let format = header.get("format")?.as_str()?;
    (format != FORMAT).then(|| format.to_owned())
}

/// What the file holds that can be read, and a line for each thing that cannot.
fn decode(bytes: &[u8]) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    if bytes.trim_ascii_start().starts_with(b"{") {
        return decode_format_1(bytes);
    }
    let mut map = BTreeMap::new();
    let mut lost = Vec::new();
    let mut declared = None;
    let mut entries = 0usize;
    for (n, line) in framing::lines(bytes).enumerate() {
        let at = line.offset;
        let json = if line.complete {
            framing::unframe(line.bytes)
        } else {
            Err("the file was cut short".to_owned())
        };
        let json = match json {
            Ok(json) => json,
            Err(reason) => {
                let what = if n == 0 { "the header" } else { "a key" };
                lost.push(format!("byte {at}: {what} unreadable ({reason})"));
                entries += usize::from(n > 0);
                continue;
            }
        };
        if n == 0 {
            match serde_json::from_slice::<Header>(json) {
                // Another format was refused before.
                Ok(header) => declared = Some(header.entries),
                Err(e) => lost.push(format!("byte {at}: not a header ({e})")),
            }
            continue;
        }
        entries += 1;
        match serde_json::from_slice::<Entry>(json) {
            Ok(entry) => match unhex(&entry.value) {
                Ok(value) => {
                    map.insert(entry.key, value);
                }
                Err(why) => lost.push(format!("byte {at}: the value of {:?} is {why}", entry.key)),
            },
            Err(e) => lost.push(format!("byte {at}: not a key and value ({e})")),
        }
    }
    match declared {
        Some(declared) if declared != entries => lost.push(format!(
            "the header declares {declared} keys, the file has {entries} lines of them"
        )),
        None if bytes.is_empty() => lost.push("the file is empty".to_owned()),
        _ => {}
    }
    (map, lost)
}

/// The format-1 file: `{"key": "hex", ...}`, no checksum, so a damaged file loses what cannot
/// be parsed.
fn decode_format_1(bytes: &[u8]) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let hex: BTreeMap<String, String> = match serde_json::from_slice(bytes) {
        Ok(hex) => hex,
        Err(e) => {
            return (
                BTreeMap::new(),
                vec![format!("not a JSON object of hex values: {e}")],
            )
        }
    };
    let mut map = BTreeMap::new();
    let mut lost = Vec::new();
    for (key, value) in hex {
        match unhex(&value) {
            Ok(value) => {
                map.insert(key, value);
            }
            Err(why) => lost.push(format!("the value of {key:?} is {why}")),
        }
    }
    (map, lost)
}

#[cfg(test)]
impl KvStore {
    fn open_bytes_for_test(bytes: &[u8]) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
        decode(bytes)
    }
}

/// Durably replaces `path` with `bytes` (see [`wasmcni_cni::durable`]).
fn persist(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    wasmcni_cni::durable::replace_file(path, bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_apply_only_on_commit_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.kv");
        let store = KvStore::open(path.clone(), 100).unwrap();
        let mut txn = store.begin();
        txn.set("a".into(), vec![1, 2]).unwrap();
        assert_eq!(txn.get("a"), Some(vec![1, 2]));
        assert_eq!(
            store.begin().get("a"),
            None,
            "uncommitted writes are private"
        );
        drop(txn); // a failed call: nothing kept
        assert!(!path.exists());

        let mut txn = store.begin();
        txn.set("a".into(), vec![1, 2]).unwrap();
        txn.set("b".into(), vec![3]).unwrap();
        txn.delete("b".into());
        assert_eq!(txn.keys(), vec!["a".to_owned()]);
        store.commit(txn).unwrap();
        let reopened = KvStore::open(path, 100).unwrap();
        assert_eq!(reopened.begin().get("a"), Some(vec![1, 2]));
        assert_eq!(reopened.begin().keys(), vec!["a".to_owned()]);
    }

    #[test]
    fn quota_is_enforced_per_set_and_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open(dir.path().join("p.kv"), 10).unwrap();
        let mut txn = store.begin();
        txn.set("k".into(), vec![0; 9]).unwrap();
        let err = txn.set("j".into(), vec![0; 1]).unwrap_err();
        assert!(err.contains("over the grant's max_bytes of 10"), "{err}");
        // Two calls each within quota, together over it: the second commit is refused.
        let mut first = store.begin();
        let mut second = store.begin();
        first.set("x".into(), vec![0; 5]).unwrap();
        second.set("y".into(), vec![0; 5]).unwrap();
        store.commit(first).unwrap();
        assert!(store.commit(second).unwrap_err().contains("max_bytes"));
        assert_eq!(store.begin().keys(), vec!["x".to_owned()]);
        assert!(store.begin().set(String::new(), vec![]).is_err());
    }

    #[test]
    fn setting_and_deleting_new_keys_leaves_no_trace_in_the_call() {
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open(dir.path().join("p.kv"), 1000).unwrap();
        let mut txn = store.begin();
        txn.set("kept".into(), vec![1]).unwrap();
        store.commit(txn).unwrap();
        let mut txn = store.begin();
        for n in 0..10_000 {
            let key = format!("{n:0>100}");
            txn.set(key.clone(), vec![0]).unwrap();
            txn.delete(key);
        }
        txn.delete("kept".into());
        assert_eq!(
            txn.writes.len(),
            1,
            "only the stored key's deletion is held"
        );
        assert!(txn.is_dirty());
        store.commit(txn).unwrap();
        assert!(store.begin().keys().is_empty());
    }

    #[test]
    fn a_damaged_format_1_file_loses_what_it_cannot_read_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.kv");
        // Not hex; odd length; multi-byte characters where hex digits belong (slicing the
        // text by bytes would panic inside a character); not JSON at all.
        for (damaged, kept) in [
            ("{\"a\": \"zz\", \"b\": \"01\"}", 1),
            ("{\"a\": \"abc\"}", 0),
            ("{\"a\": \"é0\"}", 0),
            ("{\"a\": \"0é\"}", 0),
            ("{\"a\": \"€€\"}", 0),
            ("{\"a\": \"0", 0),
        ] {
            std::fs::write(&path, damaged).unwrap();
            let store = KvStore::open(path.clone(), 10).unwrap();
            assert_eq!(store.lost().len(), 1, "{damaged}: {:?}", store.lost());
            assert_eq!(store.begin().keys().len(), kept, "{damaged}");
            assert_eq!(
                std::fs::read_to_string(path.with_extension("kv.damaged")).unwrap(),
                damaged
            );
            // Rewritten clean: nothing lost the second time.
            assert!(KvStore::open(path.clone(), 10).unwrap().lost().is_empty());
        }
        std::fs::write(&path, "{\"a\": \"0aFf\"}").unwrap();
        let store = KvStore::open(path.clone(), 10).unwrap();
        assert_eq!(store.begin().get("a"), Some(vec![0x0a, 0xff]));
        // A newer version's file is refused and left as it is, not salvaged.
        let header = br#"{"format":"wasmcni-kv/3","entries":0}"#;
        let newer = framing::frame(header);
        std::fs::write(&path, &newer).unwrap();
        let err = KvStore::open(path.clone(), 10).unwrap_err();
        assert!(err.contains("wasmcni-kv/3"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), newer);
    }

    #[test]
    fn a_bit_flip_anywhere_costs_at_most_the_keys_on_its_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.kv");
        let store = KvStore::open(path.clone(), 1000).unwrap();
        let mut txn = store.begin();
        for (key, value) in [
            ("alpha", vec![1u8, 2]),
            ("beta", vec![3]),
            ("gamma", vec![]),
        ] {
            txn.set(key.into(), value).unwrap();
        }
        store.commit(txn).unwrap();
        let good = std::fs::read(&path).unwrap();
        let all = store.begin().keys();
        for offset in 0..good.len() {
            let mut bytes = good.clone();
            bytes[offset] ^= 1 << (offset % 8);
            std::fs::write(&path, &bytes).unwrap();
            let store = KvStore::open(path.clone(), 1000)
                .unwrap_or_else(|e| panic!("byte {offset}: refused: {e}"));
            let kept = store.begin().keys();
            // Every key kept is intact; a lost one is named.
            for key in &kept {
                let value = store.begin().get(key);
                let original = KvStore::open_bytes_for_test(&good).0.get(key).cloned();
                assert_eq!(value, original, "byte {offset}: {key} changed");
            }
            // A flip hits one line (two, if it is a newline), so at most two keys go.
            assert!(kept.len() + 2 >= all.len(), "byte {offset}: {kept:?}");
            if kept.len() < all.len() {
                assert!(
                    !store.lost().is_empty(),
                    "byte {offset}: a key went unreported"
                );
            }
            std::fs::write(&path, &good).unwrap();
        }
    }
}
