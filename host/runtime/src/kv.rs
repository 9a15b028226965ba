//! Plugin-private persistent key/value state (`kv`): one file per plugin under the daemon's
//! state directory, changed only by calls that succeed.
//!
//! A call works on a transaction: it reads the state as it was when it first touched `kv`, plus
//! its own writes; the writes are merged into the store (and written to disk) only after the
//! call returned successfully, so a plugin that traps or errs leaves its state untouched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub use wasmcni_core::limits::MAX_KEY_BYTES;

/// One plugin's state.
#[derive(Debug)]
pub struct KvStore {
    path: PathBuf,
    /// The grant's quota; a reload may change it for the same plugin's state.
    max_bytes: AtomicUsize,
    map: Mutex<Arc<BTreeMap<String, Vec<u8>>>>,
}

fn size_of(key: &str, value: &[u8]) -> usize {
    key.len() + value.len()
}

impl KvStore {
    /// Opens (or starts) the state kept in `path`, allowing `max_bytes` of keys and values.
    pub fn open(path: PathBuf, max_bytes: usize) -> Result<KvStore, String> {
        let map = match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes)
                .map_err(|e| format!("{} is not a wasmcni kv file: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        Ok(KvStore {
            path,
            max_bytes: AtomicUsize::new(max_bytes),
            map: Mutex::new(Arc::new(map)),
        })
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

/// `{"key": "hex", ...}`: small, diffable, no extra dependency.
fn encode(map: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let hex: BTreeMap<&str, String> = map
        .iter()
        .map(|(k, v)| (k.as_str(), v.iter().map(|b| format!("{b:02x}")).collect()))
        .collect();
    serde_json::to_vec_pretty(&hex).unwrap_or_default()
}

fn decode(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let hex: BTreeMap<String, String> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    hex.into_iter()
        .map(|(k, v)| {
            // By bytes: a damaged file may hold any text, and slicing a `str` inside a
            // character would panic.
            let digits = v.as_bytes();
            if digits.len() % 2 != 0 {
                return Err(format!("value of {k:?} has an odd number of hex digits"));
            }
            let nibble = |d: u8| char::from(d).to_digit(16);
            let value = digits
                .chunks_exact(2)
                .map(|pair| Some((nibble(pair[0])? << 4 | nibble(pair[1])?) as u8))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| format!("value of {k:?} is not hex"))?;
            Ok((k, value))
        })
        .collect()
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
    fn a_corrupt_file_is_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.kv");
        // Not hex; odd length; multi-byte characters where hex digits belong (slicing the
        // text by bytes would panic inside a character).
        for damaged in [
            "{\"a\": \"zz\"}",
            "{\"a\": \"abc\"}",
            "{\"a\": \"é0\"}",
            "{\"a\": \"0é\"}",
            "{\"a\": \"€€\"}",
        ] {
            std::fs::write(&path, damaged).unwrap();
            let err = KvStore::open(path.clone(), 10).unwrap_err();
            assert!(err.contains("not a wasmcni kv file"), "{damaged}: {err}");
        }
        std::fs::write(&path, "{\"a\": \"0aFf\"}").unwrap();
        let store = KvStore::open(path, 10).unwrap();
        assert_eq!(store.begin().get("a"), Some(vec![0x0a, 0xff]));
    }
}
