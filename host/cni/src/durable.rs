//! Replacing a file so that a crash, a concurrent reader or something planted in the directory
//! can never see or cause half a file: the one way the daemon and the shim write state
//! (plugin `kv` state, compiled plugins, spooled DELs, the files install mode puts on the node).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` with exactly `mode`: a temporary file beside it (any leftover of
/// a crashed earlier write removed first, then created exclusively and never through a
/// symlink), synced, renamed over `path`, and the directory synced so that the rename survives
/// a crash. On error the temporary file is removed and `path` is untouched.
pub fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let temporary = temporary_for(path)?;
    let _ = std::fs::remove_file(&temporary);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&temporary)?;
        file.write_all(bytes)?;
        // The mode asked for, whatever the umask took away at creation.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        std::fs::File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// `.<name>.tmp-<pid>` beside `path`: hidden, and never ending like the real file.
fn temporary_for(path: &Path) -> std::io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    Ok(path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_with_the_exact_mode_and_never_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        replace_file(&path, b"one", 0o600).unwrap();
        replace_file(&path, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        // A symlink where the temporary file goes is removed, never written through.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"untouched").unwrap();
        std::os::unix::fs::symlink(&victim, temporary_for(&path).unwrap()).unwrap();
        replace_file(&path, b"three", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
        // Nothing but the file and the victim is left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        assert!(replace_file(Path::new("/"), b"x", 0o600).is_err());
    }
}
