//! `[trust]`: plugins load only with reviewers' approvals (docs/security.md).

use std::path::PathBuf;

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

impl ClusterConfig {
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
