//! The node's cache of pulled components: `<state_dir>/components/sha256-<hex>.wasm`, named
//! by the component's digest, so an entry is either exactly those bytes or absent (a partial
//! pull is written beside it under another name and renamed only once its digest checked).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

/// Unused components kept beside the ones the configuration names (the newest first), so a
/// rollback to a recent configuration starts while the registry is down.
pub const KEEP_UNUSED: usize = 8;

/// Partial pulls older than this are leftovers of a crash and removed.
const STALE_PARTIAL: Duration = Duration::from_secs(3600);

/// Prefix of a pull in progress.
pub(crate) const PARTIAL_PREFIX: &str = ".partial-";

/// Creates the cache directory (mode 0700) if it is missing.
pub(crate) fn create(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Whether `path` holds exactly the bytes of `digest` (a regular file, not followed through a
/// link); a missing file is `false`, other failures an error.
pub fn holds(path: &Path, digest: &str) -> std::io::Result<bool> {
    let mut file = match wasmcni_cni::regular::open_regular(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        // A link, a directory or a FIFO is not the cached file: a pull renames the component
        // over it.
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{:x}", hasher.finalize()) == digest)
}

/// Marks `path` as used now (its modification time), so pruning keeps it among the newest.
pub(crate) fn touch(path: &Path) {
    let result = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = result {
        tracing::debug!(path = %path.display(), "could not mark the cached component used: {e}");
    }
}

/// Removes cached components no longer named (beyond the [`KEEP_UNUSED`] newest) and stale
/// partial pulls; returns what it removed. Failures are logged, never fatal: the cache is an
/// optimisation of availability, not state.
pub fn prune(dir: &Path, named: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    let mut unused = Vec::new();
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let modified = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if name.starts_with(PARTIAL_PREFIX) {
            if now.duration_since(modified).unwrap_or_default() > STALE_PARTIAL {
                removed.push(path);
            }
        } else if name.ends_with(".wasm") && !named.contains(&path) {
            unused.push((modified, path));
        }
    }
    unused.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    removed.extend(unused.into_iter().skip(KEEP_UNUSED).map(|(_, path)| path));
    removed.retain(|path| match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(path = %path.display(), "could not prune the component cache: {e}");
            false
        }
    });
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_only_the_exact_bytes_of_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.wasm");
        let digest = crate::artifact::sha256(b"component");
        assert!(!holds(&path, &digest).unwrap(), "missing");
        std::fs::write(&path, b"component").unwrap();
        assert!(holds(&path, &digest).unwrap());
        std::fs::write(&path, b"componenT").unwrap();
        assert!(!holds(&path, &digest).unwrap(), "other bytes");
        let link = dir.path().join("l.wasm");
        std::fs::write(&path, b"component").unwrap();
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(!holds(&link, &digest).unwrap(), "a link is not followed");
        std::fs::create_dir(dir.path().join("d.wasm")).unwrap();
        assert!(!holds(&dir.path().join("d.wasm"), &digest).unwrap());
    }

    #[test]
    fn prune_keeps_what_is_named_and_the_newest_unused() {
        let dir = tempfile::tempdir().unwrap();
        let mut named = BTreeSet::new();
        let base = SystemTime::now() - Duration::from_secs(10_000);
        let mut paths = Vec::new();
        for i in 0..(KEEP_UNUSED + 4) {
            let path = dir.path().join(format!("sha256-{i:064x}.wasm"));
            std::fs::write(&path, b"x").unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(base + Duration::from_secs(i as u64 * 10))
                .unwrap();
            paths.push(path);
        }
        // The oldest is named: kept although it is the oldest.
        named.insert(paths[0].clone());
        let stale = dir.path().join(format!("{PARTIAL_PREFIX}old"));
        std::fs::write(&stale, b"x").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(base)
            .unwrap();
        let fresh = dir.path().join(format!("{PARTIAL_PREFIX}new"));
        std::fs::write(&fresh, b"x").unwrap();
        let removed: BTreeSet<PathBuf> = prune(dir.path(), &named).into_iter().collect();
        // Unused: paths[1..]; the KEEP_UNUSED newest stay, the 3 oldest go.
        let expected: BTreeSet<PathBuf> =
            paths[1..4].iter().cloned().chain([stale.clone()]).collect();
        assert_eq!(removed, expected);
        assert!(paths[0].exists() && fresh.exists() && !stale.exists());
        assert!(paths[4..].iter().all(|p| p.exists()));
    }
}
