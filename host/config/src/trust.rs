//! `[trust]`: plugins load only with reviewers' approvals (docs/security.md).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{ClusterConfig, ConfigError};

/// `[trust]`: the reviewers whose approvals a plugin needs before the daemon loads it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// The reviewers' ed25519 public keys: PEM files (`wasmcni-host keygen` writes them).
    pub keys: Vec<PathBuf>,
    /// How many different reviewers must have approved each plugin as configured.
    #[serde(default = "one")]
    pub required: usize,
    /// The directory of approvals (`*.json` DSSE envelopes that `wasmcni-host audit
    /// --approve` writes).
    pub approvals: PathBuf,
}

fn one() -> usize {
    1
}

/// A trust file (`wasmcni-host --trust FILE`): a `[trust]` table and nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    trust: TrustConfig,
}

impl ClusterConfig {
    /// Makes the `[trust]` of the file at `path` this configuration's, whatever the cluster
    /// configuration says: whoever edits plugins in the cluster configuration cannot drop or
    /// weaken approvals kept in a file they cannot write (the node image, a separate mount).
    /// A cluster configuration with a `[trust]` of its own must say the same.
    pub fn pin_trust(&mut self, path: &Path) -> Result<(), ConfigError> {
        let origin = format!("trust file {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: TrustFile = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            origin: origin.clone(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        if self.trust.as_ref().is_some_and(|own| *own != file.trust) {
            return Err(ConfigError::Invalid {
                origin: "cluster configuration".into(),
                key: "trust".into(),
                value: "a table".into(),
                reason: format!(
                    "differs from the [trust] pinned by {}; remove it (the pinned one applies) or make it the same",
                    path.display()
                ),
            });
        }
        let own = self.trust.replace(file.trust);
        if let Err(e) = self.validate_trust(&origin) {
            self.trust = own;
            return Err(e);
        }
        self.trust_pin = Some(path.to_owned());
        Ok(())
    }

    /// The trust file `[trust]` was pinned from, if it was.
    pub fn trust_pin(&self) -> Option<&Path> {
        self.trust_pin.as_deref()
    }

    pub(crate) fn validate_trust(&self, origin: &str) -> Result<(), ConfigError> {
        let Some(trust) = &self.trust else {
            return Ok(());
        };
        let invalid = |key: &str, value: String, reason: &str| ConfigError::Invalid {
            origin: origin.to_owned(),
            key: key.to_owned(),
            value,
            reason: reason.to_owned(),
        };
        if trust.keys.is_empty() {
            return Err(invalid(
                "trust.keys",
                "[]".into(),
                "name at least one reviewer's public key file",
            ));
        }
        for (i, key) in trust.keys.iter().enumerate() {
            if !key.is_absolute() {
                return Err(invalid(
                    &format!("trust.keys[{i}]"),
                    format!("{:?}", key.display().to_string()),
                    "must be an absolute path",
                ));
            }
            if trust.keys[..i].contains(key) {
                return Err(invalid(
                    &format!("trust.keys[{i}]"),
                    format!("{:?}", key.display().to_string()),
                    "is listed twice (one reviewer would count twice)",
                ));
            }
        }
        if !(1..=trust.keys.len()).contains(&trust.required) {
            return Err(invalid(
                "trust.required",
                trust.required.to_string(),
                &format!(
                    "must be between 1 and the {} key(s) in trust.keys",
                    trust.keys.len()
                ),
            ));
        }
        if !trust.approvals.is_absolute() {
            return Err(invalid(
                "trust.approvals",
                format!("{:?}", trust.approvals.display().to_string()),
                "must be an absolute path (a directory of approvals)",
            ));
        }
        Ok(())
    }
}
