//! `[registry]`: how the node reaches the OCI registries `oci://` plugins come from (extra CAs,
//! plain-HTTP mirrors, credentials, bounds), and where pulled components are kept.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::{ClusterConfig, ConfigError};

/// Default bound on one component pulled from a registry.
pub const DEFAULT_MAX_COMPONENT_BYTES: u64 = 64 << 20;
/// Largest `registry.max_component_bytes` accepted.
pub const MAX_COMPONENT_BYTES: u64 = 512 << 20;
/// Default time one plugin's pull may take, manifest and blob together.
pub const DEFAULT_PULL_TIMEOUT_MS: u64 = 60_000;
/// The directory `[registry.auth]` password files must lie in, unless the node sets
/// [`REGISTRY_AUTH_DIR_ENV`]: whoever edits the cluster configuration may name credentials
/// the node was given, not any file the daemon can read.
pub const REGISTRY_AUTH_DIR: &str = "/etc/wasmcni/registry-auth";
/// The environment variable that moves [`REGISTRY_AUTH_DIR`] (set by whoever runs the node,
/// like `WASMCNI_TRUST`).
pub const REGISTRY_AUTH_DIR_ENV: &str = "WASMCNI_REGISTRY_AUTH_DIR";

/// `[registry]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// PEM files of certificate authorities trusted beside the system's.
    #[serde(default)]
    pub ca_files: Vec<PathBuf>,
    /// Registries (`host:port`) reached over plain HTTP: a loopback mirror, a test. The
    /// digest still pins every byte; HTTP gives up only the privacy of the pull.
    #[serde(default)]
    pub plain_http: Vec<String>,
    /// Time one plugin's pull may take, manifest and component together, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest component the node pulls, in bytes.
    #[serde(default = "default_max_component_bytes")]
    pub max_component_bytes: u64,
    /// Credentials per registry (`host:port`); anonymous elsewhere.
    #[serde(default)]
    pub auth: BTreeMap<String, RegistryAuthConfig>,
}

/// `[registry.auth."host:port"]`: HTTP basic credentials (the registry may trade them for a
/// bearer token). For ECR: username `AWS`, the password `aws ecr get-login-password` prints,
/// kept fresh in the file by whoever rotates it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuthConfig {
    /// The user name.
    pub username: String,
    /// A file holding the password (read at each pull; never logged).
    pub password_file: PathBuf,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            ca_files: Vec::new(),
            plain_http: Vec::new(),
            timeout_ms: DEFAULT_PULL_TIMEOUT_MS,
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            auth: BTreeMap::new(),
        }
    }
}

fn default_timeout_ms() -> u64 {
    DEFAULT_PULL_TIMEOUT_MS
}
fn default_max_component_bytes() -> u64 {
    DEFAULT_MAX_COMPONENT_BYTES
}

impl RegistryConfig {
    /// Checks every field, naming the first that is wrong; `origin` names the configuration.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, value: String, reason: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            value,
            reason,
        };
        for (i, file) in self.ca_files.iter().enumerate() {
            if !file.is_absolute() {
                return Err(invalid(
                    format!("registry.ca_files[{i}]"),
                    format!("{:?}", file.display().to_string()),
                    "must be an absolute path".into(),
                ));
            }
        }
        for (i, host) in self.plain_http.iter().enumerate() {
            wasmcni_core::oci::check_registry(host).map_err(|reason| {
                invalid(
                    format!("registry.plain_http[{i}]"),
                    format!("{host:?}"),
                    reason,
                )
            })?;
        }
        if !(1..=600_000).contains(&self.timeout_ms) {
            return Err(invalid(
                "registry.timeout_ms".into(),
                self.timeout_ms.to_string(),
                "must be between 1 and 600000 milliseconds".into(),
            ));
        }
        if !(1..=MAX_COMPONENT_BYTES).contains(&self.max_component_bytes) {
            return Err(invalid(
                "registry.max_component_bytes".into(),
                self.max_component_bytes.to_string(),
                format!("must be between 1 and {MAX_COMPONENT_BYTES} bytes"),
            ));
        }
        for (host, auth) in &self.auth {
            let key = format!("registry.auth.{host:?}");
            wasmcni_core::oci::check_registry(host)
                .map_err(|reason| invalid(key.clone(), format!("{host:?}"), reason))?;
            if auth.username.is_empty() || auth.username.chars().any(|c| c.is_control() || c == ':')
            {
                return Err(invalid(
                    format!("{key}.username"),
                    format!("{:?}", auth.username),
                    "must be a non-empty name without ':' or control characters".into(),
                ));
            }
            if !auth.password_file.is_absolute() {
                return Err(invalid(
                    format!("{key}.password_file"),
                    format!("{:?}", auth.password_file.display().to_string()),
                    "must be an absolute path".into(),
                ));
            }
            if self.plain_http.contains(host) && !is_loopback(host) {
                return Err(invalid(
                    key,
                    format!("{host:?}"),
                    "is also in registry.plain_http: credentials are not sent in clear text \
                     (only to a loopback registry)"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// Refuses a `password_file` outside the node's credentials directory
    /// ([`REGISTRY_AUTH_DIR`], or `$WASMCNI_REGISTRY_AUTH_DIR`): the daemon reads it as root
    /// and sends it to the registry the configuration names.
    pub(crate) fn validate_confined(&self, origin: &str) -> Result<(), ConfigError> {
        let dir = std::env::var_os(REGISTRY_AUTH_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(REGISTRY_AUTH_DIR));
        for (host, auth) in &self.auth {
            let file = &auth.password_file;
            let inside = file.starts_with(&dir)
                && file != &dir
                && file
                    .components()
                    .all(|c| !matches!(c, std::path::Component::ParentDir));
            if !inside {
                return Err(ConfigError::Invalid {
                    origin: origin.to_owned(),
                    key: format!("registry.auth.{host:?}.password_file"),
                    value: format!("{:?}", file.display().to_string()),
                    reason: format!(
                        "must lie in {} (the node's registry credentials; \
                         {REGISTRY_AUTH_DIR_ENV} moves it)",
                        dir.display()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// `127.x.x.x[:port]` or `localhost[:port]`.
fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    name == "localhost"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl ClusterConfig {
    /// Where components pulled from registries are kept, each named by its digest.
    pub fn component_cache_dir(&self) -> PathBuf {
        self.component_cache
            .clone()
            .unwrap_or_else(|| self.daemon.state_dir.join("components"))
    }

    /// Keeps pulled components in `dir` instead of the state directory's cache: for tools
    /// run away from a node (a reviewer's `audit` on a workstation), never for the daemon.
    pub fn relocate_component_cache(&mut self, dir: &std::path::Path) {
        self.component_cache = Some(dir.to_owned());
        for spec in &mut self.specs {
            if spec.origin.is_some() {
                spec.path = cached_component(dir, &spec.digest);
            }
        }
    }
}

/// The cached component of `digest` (`sha256:<hex>`) in `cache_dir`.
pub fn cached_component(cache_dir: &std::path::Path, digest: &str) -> PathBuf {
    cache_dir.join(format!("{}.wasm", digest.replace(':', "-")))
}
