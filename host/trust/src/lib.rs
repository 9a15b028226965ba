//! Reviewer approvals: what binds the plugin a security reviewer read (`wasmcni-host audit`)
//! to what a node runs.
//!
//! A reviewer signs a [`statement`] of one plugin — its name, digest, world, WIT version, real
//! imports, every grant with its scope, tag keys, limits, failure policy and settings — with their
//! ed25519 key into a DSSE [`Envelope`]. A configuration with `[trust]` names the reviewers'
//! public keys, how many of them must have approved each plugin, and the directory of
//! approvals; the daemon then loads a plugin (at start and on every reload) only if at least
//! that many of those keys signed exactly the statement the configuration now gives, and
//! otherwise says which approvals it found and how each differs.

mod envelope;
mod keys;
mod statement;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use envelope::{Envelope, Signature, Verified, MAX_SIGNATURES, PAYLOAD_TYPE};
pub use keys::{PublicKey, SigningKey};
pub use statement::{differences, statement, STATEMENT_TYPE};

/// Approval files read from the directory, at most.
pub const MAX_APPROVAL_FILES: usize = 1024;
/// Bytes of one approval file, at most.
pub const MAX_APPROVAL_BYTES: u64 = 1 << 20;

/// Why approvals could not be read or a plugin is not approved.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A key file is unreadable or not an ed25519 key.
    #[error("{0}")]
    Key(String),
    /// An approval file is not a DSSE envelope of an approval.
    #[error("{0}")]
    Envelope(String),
    /// A file or the directory could not be read.
    #[error("{what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The plugin is not approved as configured.
    #[error("plugin {plugin} ({digest}) is not approved as configured: {why}")]
    NotApproved {
        /// Its name.
        plugin: String,
        /// Its digest.
        digest: String,
        /// What was found, and how it differs.
        why: String,
    },
}

/// The reviewers' keys, how many must approve, and the approvals found.
#[derive(Debug)]
pub struct Trust {
    keys: Vec<PublicKey>,
    required: usize,
    dir: PathBuf,
    approvals: Vec<(PathBuf, Envelope)>,
    /// Files of the directory that are no approval, with why.
    unreadable: Vec<String>,
}

impl Trust {
    /// Reads the public keys `keys` (PEM files) and every `*.json` approval in `dir`. A key
    /// that cannot be read, or the same key twice, fails; an approval file that cannot be
    /// read is noted (and named when a plugin then lacks an approval).
    pub fn load(keys: &[PathBuf], required: usize, dir: &Path) -> Result<Trust, TrustError> {
        let mut loaded: Vec<PublicKey> = Vec::new();
        for path in keys {
            let text = std::fs::read_to_string(path).map_err(|source| TrustError::Io {
                what: format!("reviewer key {}", path.display()),
                source,
            })?;
            let key = PublicKey::from_pem(&text, &path.display().to_string())?;
            if loaded.iter().any(|k| k.id() == key.id()) {
                return Err(TrustError::Key(format!(
                    "{} is a key listed already ({}): one reviewer would count twice",
                    path.display(),
                    key.id()
                )));
            }
            loaded.push(key);
        }
        let entries = std::fs::read_dir(dir).map_err(|source| TrustError::Io {
            what: format!("approvals directory {}", dir.display()),
            source,
        })?;
        let mut trust = Trust {
            keys: loaded,
            required,
            dir: dir.to_path_buf(),
            approvals: Vec::new(),
            unreadable: Vec::new(),
        };
        let mut names: Vec<PathBuf> = Vec::new();
        for entry in entries {
            let path = match entry {
                Ok(entry) => entry.path(),
                Err(e) => {
                    trust.unreadable.push(format!("{}: {e}", dir.display()));
                    continue;
                }
            };
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            if names.len() == MAX_APPROVAL_FILES {
                trust.unreadable.push(format!(
                    "{} holds more than {MAX_APPROVAL_FILES} approval files; the others are not read",
                    dir.display()
                ));
                break;
            }
            names.push(path);
        }
        names.sort();
        for path in names {
            match read_envelope(&path) {
                Ok(envelope) => trust.approvals.push((path, envelope)),
                Err(why) => trust.unreadable.push(format!("{}: {why}", shown(&path))),
            }
        }
        Ok(trust)
    }

    /// The ids of the reviewers' keys.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(PublicKey::id).collect()
    }

    /// Approval files read.
    pub fn approvals(&self) -> usize {
        self.approvals.len()
    }

    /// Files of the directory that are no approval, with why.
    pub fn unreadable(&self) -> &[String] {
        &self.unreadable
    }

    /// Whether some reviewer approved any terms for `digest` — checked before the daemon
    /// compiles a component to learn its world and imports, so nothing nobody approved is
    /// compiled. Otherwise the [`TrustError::NotApproved`] a full check would give.
    pub fn vouched(&self, plugin: &str, digest: &str) -> Result<(), TrustError> {
        let mut found = Vec::new();
        for (path, envelope) in self.of_digest(digest) {
            match envelope.verify(&self.keys) {
                Ok(verified) if !verified.signers.is_empty() => return Ok(()),
                Ok(verified) => found.extend(
                    verified
                        .problems
                        .into_iter()
                        .map(|p| format!("{}: {p}", shown(path))),
                ),
                Err(e) => found.push(format!("{}: {e}", shown(path))),
            }
        }
        Err(self.not_approved(plugin, digest, found))
    }

    /// The ids of the keys whose approvals of `expected` (the plugin's statement as
    /// configured now) make it approved, or why it is not.
    pub fn check(
        &self,
        plugin: &str,
        expected: &serde_json::Value,
    ) -> Result<Vec<String>, TrustError> {
        let digest = expected["digest"].as_str().unwrap_or_default();
        let mut approving: BTreeSet<String> = BTreeSet::new();
        let mut found: Vec<String> = Vec::new();
        for (path, envelope) in self.of_digest(digest) {
            let file = shown(path);
            let verified = match envelope.verify(&self.keys) {
                Ok(verified) => verified,
                Err(e) => {
                    found.push(format!("{file}: {e}"));
                    continue;
                }
            };
            found.extend(verified.problems.iter().map(|p| format!("{file}: {p}")));
            if verified.signers.is_empty() {
                continue;
            }
            let Ok(approved) = envelope.statement() else {
                continue;
            };
            if &approved == expected {
                approving.extend(verified.signers);
            } else {
                let signers: Vec<String> = verified.signers.into_iter().collect();
                found.push(format!(
                    "{file} (signed by {}) approves other terms: {}",
                    signers.join(", "),
                    differences(&approved, expected).join("; ")
                ));
            }
        }
        if approving.len() >= self.required {
            return Ok(approving.into_iter().collect());
        }
        if !approving.is_empty() {
            found.insert(
                0,
                format!(
                    "approved as configured by {} of the {} reviewers required ({})",
                    approving.len(),
                    self.required,
                    approving.into_iter().collect::<Vec<_>>().join(", ")
                ),
            );
        }
        Err(self.not_approved(plugin, digest, found))
    }

    /// The approvals whose statement is of `digest`.
    fn of_digest<'a>(&'a self, digest: &'a str) -> impl Iterator<Item = (&'a Path, &'a Envelope)> {
        self.approvals.iter().filter_map(move |(path, envelope)| {
            let statement = envelope.statement().ok()?;
            (statement["digest"].as_str() == Some(digest)).then_some((path.as_path(), envelope))
        })
    }

    /// The refusal of `plugin`: what was `found` (at most [`MAX_REASONS`] items), and the
    /// files of the directory that could not be read.
    fn not_approved(&self, plugin: &str, digest: &str, mut found: Vec<String>) -> TrustError {
        if found.is_empty() {
            found.push(format!(
                "no approval of this digest in {} ({} approval file(s) read)",
                self.dir.display(),
                self.approvals.len()
            ));
        }
        if found.len() > MAX_REASONS {
            let more = found.len() - MAX_REASONS;
            found.truncate(MAX_REASONS);
            found.push(format!("and {more} more"));
        }
        if !self.unreadable.is_empty() {
            let mut unread: Vec<String> =
                self.unreadable.iter().take(MAX_REASONS).cloned().collect();
            if self.unreadable.len() > MAX_REASONS {
                unread.push(format!("and {} more", self.unreadable.len() - MAX_REASONS));
            }
            found.push(format!("not read: {}", unread.join("; ")));
        }
        TrustError::NotApproved {
            plugin: plugin.to_owned(),
            digest: digest.to_owned(),
            why: format!(
                "{}; a reviewer approves it with `wasmcni-host audit --approve {plugin} --key <their key>`",
                found.join("; ")
            ),
        }
    }
}

/// Reasons a refusal lists, at most.
const MAX_REASONS: usize = 8;

/// A path from a directory listing, for a message: control characters escaped.
fn shown(path: &Path) -> String {
    wasmcni_cni::text::escape_controls(&path.display().to_string())
}

/// Reads one approval: a regular file (not followed through a link, never a FIFO or a
/// device, which could block the daemon), at most [`MAX_APPROVAL_BYTES`].
fn read_envelope(path: &Path) -> Result<Envelope, String> {
    let bytes =
        wasmcni_cni::regular::read_regular(path, MAX_APPROVAL_BYTES).map_err(|e| e.to_string())?;
    let envelope: Envelope =
        serde_json::from_slice(&bytes).map_err(|e| format!("not a DSSE envelope: {e}"))?;
    envelope.statement().map_err(|e| e.to_string())?;
    Ok(envelope)
}

#[cfg(test)]
mod tests;
