//! Compiled components kept between starts, so a restart loads each plugin in well under a
//! millisecond instead of compiling it again.
//!
//! An artifact is machine code the daemon will run, so it is trusted only when it is exactly
//! what this daemon wrote: the directory is private to it (0700, checked), each file carries
//! a sha256 of its artifact that is verified before wasmtime sees a byte of it, and a file is
//! written to a temporary name, synced and renamed (and the directory synced), so a crash
//! leaves either the old file or the new one. A damaged file (wrong checksum, short, not ours)
//! is compiled again and replaced, never run. The name binds the component's digest and the
//! engine's configuration through a stable hash (sha256, not `DefaultHasher`, whose output may
//! change between Rust releases).

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// First bytes of every cache file; the version changes with the format.
const MAGIC: &[u8; 16] = b"wasmcni-cwasm-1\n";

/// A [`Hasher`] over sha256, so that a `Hash` value gives the same key in every build.
struct StableHasher(Sha256);

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
    }
}

/// The cache of one engine's compilations.
#[derive(Debug, Clone)]
pub(super) struct ArtifactCache {
    dir: PathBuf,
    /// Hex of sha256 over wasmtime's version and the engine's compatibility hash.
    engine_key: String,
}

/// Why a cache file was not used.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unusable {
    /// No file yet.
    Missing,
    /// The file is not one this daemon wrote whole (short, foreign, checksum mismatch).
    Damaged(String),
}

impl ArtifactCache {
    /// The cache in `dir` (already created private by the caller) for `engine`.
    pub(super) fn new(dir: PathBuf, engine: &Engine) -> ArtifactCache {
        let mut hasher = StableHasher(Sha256::new());
        // wasmtime's compatibility hash covers its own version and the engine's settings.
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = format!("{:x}", hasher.0.finalize());
        ArtifactCache { dir, engine_key }
    }

    /// The cache's directory.
    pub(super) fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The file of the component with `digest` (`sha256:<hex>`).
    pub(super) fn path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir
            .join(format!("{hex}-{}.cwasm", &self.engine_key[..16]))
    }

    /// The artifact bytes of `digest` if the file is whole and checks out.
    pub(super) fn read(&self, digest: &str) -> Result<Vec<u8>, Unusable> {
        let path = self.path(digest);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unusable::Missing),
            Err(e) => return Err(Unusable::Damaged(format!("cannot read it: {e}"))),
        };
        verify(bytes)
    }

    /// Loads the cached compilation of `digest`, or compiles `bytes` and caches the result.
    /// Failing to write the cache only costs the next start a compilation.
    // The one unsafe call of the runtime: wasmtime cannot check precompiled machine code, so
    // deserializing it is unsafe; the SAFETY comment below says what makes it sound here.
    #[allow(unsafe_code)]
    pub(super) fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> Result<Component, wasmtime::Error> {
        match self.read(digest) {
            Ok(artifact) => {
                // SAFETY: `artifact` passed the checksum this daemon wrote beside it when it
                // serialized the compilation of a component whose sha256 it had verified
                // against the configuration, in a directory only this daemon may write
                // (checked when the runtime was set up); the file name binds that digest and
                // this engine's configuration. wasmtime still checks the header and the engine
                // compatibility. Read into memory rather than mapped: a mapped file truncated
                // under a running daemon would kill it with SIGBUS.
                match unsafe { Component::deserialize(engine, &artifact) } {
                    Ok(component) => return Ok(component),
                    Err(e) => {
                        tracing::warn!(path = %self.path(digest).display(), error = %e, "ignoring an unusable cached compilation; compiling again")
                    }
                }
            }
            Err(Unusable::Missing) => {}
            Err(Unusable::Damaged(why)) => {
                tracing::warn!(path = %self.path(digest).display(), "ignoring a damaged cached compilation ({why}); compiling again")
            }
        }
        let component = Component::new(engine, bytes)?;
        match component.serialize() {
            Ok(artifact) => {
                if let Err(e) = self.write(digest, &artifact) {
                    tracing::warn!(path = %self.path(digest).display(), error = %e, "could not cache the compiled plugin; it will be compiled again next start");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not serialize the compiled plugin"),
        }
        Ok(component)
    }

    /// Compiles `bytes` (of `digest`) into the cache unless it already holds the artifact
    /// whole; unlike [`ArtifactCache::load_or_compile`], a failure to write is an error (the
    /// daemon's child compiler has nothing else to do).
    pub(super) fn compile_into(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> Result<(), String> {
        if self.read(digest).is_ok() {
            return Ok(());
        }
        let artifact = Component::new(engine, bytes)
            .and_then(|component| component.serialize())
            .map_err(|e| format!("not a valid component: {e:#}"))?;
        self.write(digest, &artifact)
            .map_err(|e| format!("writing {}: {e}", self.path(digest).display()))
    }

    /// Removes what the process `pid`, writing `digest`'s file, left behind when it was killed
    /// before its rename (the temporary file [`wasmcni_cni::durable::replace_file`] names
    /// `.<name>.tmp-<pid>`).
    pub(super) fn remove_temporary_of(&self, digest: &str, pid: u32) {
        let path = self.path(digest);
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            let _ = std::fs::remove_file(self.dir.join(format!(".{name}.tmp-{pid}")));
        }
    }

    /// Writes `artifact` as the compilation of `digest`, behind its checksum, durably and never
    /// through a symlink ([`wasmcni_cni::durable::replace_file`]).
    pub(super) fn write(&self, digest: &str, artifact: &[u8]) -> std::io::Result<()> {
        let mut file = Vec::with_capacity(MAGIC.len() + 32 + artifact.len());
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&Sha256::digest(artifact));
        file.extend_from_slice(artifact);
        wasmcni_cni::durable::replace_file(&self.path(digest), &file, 0o600)
    }
}

fn verify(mut bytes: Vec<u8>) -> Result<Vec<u8>, Unusable> {
    let header = MAGIC.len() + 32;
    if bytes.len() < header || &bytes[..MAGIC.len()] != MAGIC {
        return Err(Unusable::Damaged("not a wasmcni cache file".into()));
    }
    let expected = bytes[MAGIC.len()..header].to_vec();
    let artifact = bytes.split_off(header);
    if Sha256::digest(&artifact).as_slice() != expected.as_slice() {
        return Err(Unusable::Damaged("checksum mismatch".into()));
    }
    Ok(artifact)
}

/// Whether `path` is a file of this cache's format (for tests and tooling).
#[cfg(test)]
pub(super) fn is_cache_file(path: &std::path::Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(MAGIC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stable_hasher_is_sha256() {
        let mut a = StableHasher(Sha256::new());
        let mut b = StableHasher(Sha256::new());
        "same".hash(&mut a);
        "same".hash(&mut b);
        assert_eq!(a.finish(), b.finish());
        let mut c = StableHasher(Sha256::new());
        "other".hash(&mut c);
        assert_ne!(a.finish(), c.finish());
    }

    #[test]
    fn only_whole_files_of_this_format_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = ArtifactCache::new(dir.path().to_owned(), &engine);
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(cache.read(&digest), Err(Unusable::Missing));
        cache.write(&digest, b"machine code").unwrap();
        assert!(is_cache_file(&cache.path(&digest)));
        assert_eq!(cache.read(&digest).unwrap(), b"machine code");

        // A flipped bit in the artifact, a truncated file, a foreign file: all refused.
        let path = cache.path(&digest);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            cache.read(&digest),
            Err(Unusable::Damaged("checksum mismatch".into()))
        );
        std::fs::write(&path, &bytes[..20]).unwrap();
        assert!(matches!(cache.read(&digest), Err(Unusable::Damaged(_))));
        std::fs::write(&path, b"WASMTIME compiled code").unwrap();
        assert!(matches!(cache.read(&digest), Err(Unusable::Damaged(_))));
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
