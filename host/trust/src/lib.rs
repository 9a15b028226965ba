//! Reviewer approvals: what binds the plugin a security reviewer read (`wasmcni-host audit`)
//! to what a node runs.
//!
//! A reviewer signs a [`statement`] of one plugin — its digest, world, WIT version, real
//! imports, every grant with its scope, tag keys, limits and failure policy — with their
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

pub use envelope::{Envelope, Signature, PAYLOAD_TYPE};
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
    /// that cannot be read fails; an approval file that cannot be read is noted (and named
    /// when a plugin then lacks an approval).
    pub fn load(keys: &[PathBuf], required: usize, dir: &Path) -> Result<Trust, TrustError> {
        let keys = keys
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).map_err(|source| TrustError::Io {
                    what: format!("reviewer key {}", path.display()),
                    source,
                })?;
                PublicKey::from_pem(&text, &path.display().to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| TrustError::Io {
                what: format!("approvals directory {}", dir.display()),
                source,
            })?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .collect();
        names.sort();
        let mut trust = Trust {
            keys,
            required,
            dir: dir.to_path_buf(),
            approvals: Vec::new(),
            unreadable: Vec::new(),
        };
        if names.len() > MAX_APPROVAL_FILES {
            trust.unreadable.push(format!(
                "{} holds {} approval files; only the first {MAX_APPROVAL_FILES} are read",
                dir.display(),
                names.len()
            ));
            names.truncate(MAX_APPROVAL_FILES);
        }
        for path in names {
            match read_envelope(&path) {
                Ok(envelope) => trust.approvals.push((path, envelope)),
                Err(why) => trust.unreadable.push(format!("{}: {why}", path.display())),
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

    /// The ids of the keys whose approvals of `expected` (the plugin's statement as
    /// configured now) make it approved, or why it is not.
    pub fn check(
        &self,
        plugin: &str,
        expected: &serde_json::Value,
    ) -> Result<Vec<String>, TrustError> {
        let digest = expected["digest"].as_str().unwrap_or_default();
        let not_approved = |why: String| TrustError::NotApproved {
            plugin: plugin.to_owned(),
            digest: digest.to_owned(),
            why,
        };
        let mut approving: BTreeSet<String> = BTreeSet::new();
        let mut found: Vec<String> = Vec::new();
        for (path, envelope) in &self.approvals {
            let file = path.display();
            let Ok(approved) = envelope.statement() else {
                continue;
            };
            if approved["digest"] != expected["digest"] {
                continue;
            }
            let mut signers = Vec::new();
            for signature in &envelope.signatures {
                match self.keys.iter().find(|k| k.id() == signature.keyid) {
                    None => found.push(format!(
                        "{file} carries a signature by {}, which is not one of [trust] keys",
                        signature.keyid
                    )),
                    Some(key) if envelope.signed_by(key)? => signers.push(key.id().to_owned()),
                    Some(key) => found.push(format!(
                        "{file}: the signature by {} does not verify (the file changed after it was signed)",
                        key.id()
                    )),
                }
            }
            if signers.is_empty() {
                continue;
            }
            if &approved == expected {
                approving.extend(signers);
            } else {
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
        if found.is_empty() {
            found.push(format!(
                "no approval of this digest in {} ({} approval file(s) read{})",
                self.dir.display(),
                self.approvals.len(),
                if self.unreadable.is_empty() {
                    String::new()
                } else {
                    format!("; not read: {}", self.unreadable.join("; "))
                }
            ));
        }
        Err(not_approved(format!(
            "{}; a reviewer approves it with `wasmcni-host audit --approve {plugin} --key <their key>`",
            found.join("; ")
        )))
    }
}

fn read_envelope(path: &Path) -> Result<Envelope, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    if size > MAX_APPROVAL_BYTES {
        return Err(format!("{size} bytes, more than {MAX_APPROVAL_BYTES}"));
    }
    let envelope: Envelope = serde_json::from_reader(std::io::BufReader::new(file))
        .map_err(|e| format!("not a DSSE envelope: {e}"))?;
    envelope.statement().map_err(|e| e.to_string())?;
    Ok(envelope)
}

#[cfg(test)]
mod tests;
