//! The cluster configuration: a versioned TOML file the node daemon validates at start.
//!
//! Parsing is strict (`deny_unknown_fields`) and validation names the key and the offending
//! value, so a typo or a bad CIDR stops the daemon with a message an operator can act on
//! instead of a half-working node. `policies/default.toml` is the documented example and the
//! embedded default.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::Deserialize;

/// The only schema version this build understands.
pub const SCHEMA_VERSION: u32 = 1;

/// The embedded default configuration (`policies/default.toml`): a static pool for nodes without EC2.
pub const DEFAULT_CONFIG: &str = include_str!("../../../policies/default.toml");

/// Largest static CIDR (a /16: 65 534 pod addresses, far above any node's pod limit), which
/// also bounds the pool's scan for a free address.
pub const MIN_STATIC_PREFIX_LEN: u8 = 16;

/// Longest host-veth prefix: the kernel allows 15-byte names and the hash suffix takes 11.
pub const MAX_VETH_PREFIX_LEN: usize = 4;

/// A validated cluster configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Schema version; must equal [`SCHEMA_VERSION`].
    pub version: u32,
    /// Node daemon settings.
    pub daemon: DaemonConfig,
    /// Data path settings.
    pub datapath: DatapathConfig,
    /// Where pod addresses come from.
    pub provider: ProviderConfig,
    /// Which allocation strategy chooses each pod's address.
    #[serde(default)]
    pub allocator: AllocatorConfig,
    /// The WebAssembly plugins, each pinned by digest with its grants and limits.
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
}

/// `[allocator]`: the allocation strategy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocatorConfig {
    /// Name of an allocator plugin from `[[plugins]]`; absent: the built-in rotating allocator.
    pub plugin: Option<String>,
}

/// `[[plugins]]`: one WebAssembly component.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Unique name, referred to by `[allocator] plugin`.
    pub name: String,
    /// Plugin kind: `allocator` (the WIT world it implements).
    pub kind: String,
    /// Absolute path of the component file.
    pub path: PathBuf,
    /// `sha256:<64 hex>`: the daemon refuses a file with any other content.
    pub digest: String,
    /// Capabilities (WIT interfaces) it may import: `pool-view`, `log`, `clock`.
    #[serde(default)]
    pub grants: Vec<String>,
    /// Fuel per call (about one unit per instruction).
    #[serde(default = "default_plugin_fuel")]
    pub fuel: u64,
    /// Largest linear memory, in bytes.
    #[serde(default = "default_plugin_memory")]
    pub memory_bytes: usize,
}

fn default_plugin_fuel() -> u64 {
    crate::runtime::Limits::default().fuel
}
fn default_plugin_memory() -> usize {
    crate::runtime::Limits::default().memory_bytes
}

/// `[daemon]`: the node daemon's socket, state and request limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Path of the root-only Unix socket the CNI shim connects to.
    pub socket: PathBuf,
    /// Directory of the crash-safe datastore.
    pub state_dir: PathBuf,
    /// Time a client gets to send its whole request.
    #[serde(default = "default_read_timeout_ms")]
    pub request_read_timeout_ms: u64,
    /// Largest request frame accepted.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
}

/// `[datapath]`: how pod interfaces are named and sized.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatapathConfig {
    /// Host-side veth name prefix (VPC CNI's `AWS_VPC_K8S_CNI_VETHPREFIX`, default `eni`).
    #[serde(default = "default_veth_prefix")]
    pub veth_prefix: String,
    /// MTU of both veth ends.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
}

/// `[provider]`: the source of pod addresses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Which provider: only `static` in this build.
    pub kind: String,
    /// Settings of the static provider (`[provider.static]`).
    #[serde(rename = "static")]
    pub static_pool: Option<StaticPoolConfig>,
}

/// `[provider.static]`: fixed IPv4 CIDRs for nodes without EC2.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticPoolConfig {
    /// CIDRs pod addresses are taken from.
    pub cidrs: Vec<String>,
    /// Addresses never handed out.
    #[serde(default)]
    pub exclude: Vec<String>,
}

fn default_read_timeout_ms() -> u64 {
    5_000
}
fn default_max_request_bytes() -> usize {
    1 << 20
}
fn default_veth_prefix() -> String {
    "eni".to_owned()
}
fn default_mtu() -> u32 {
    9001
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read cluster configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key, or a value of the wrong type.
    #[error("cluster configuration {origin} is not valid: {message}")]
    Syntax {
        /// File path or "embedded default".
        origin: String,
        /// The parser's message, with line, column and key.
        message: String,
    },
    /// A key has a value the daemon cannot use.
    #[error("cluster configuration {origin}: `{key}` = {value}: {reason}")]
    Invalid {
        /// File path or "embedded default".
        origin: String,
        /// Dotted key path, e.g. `provider.static.cidrs[1]`.
        key: String,
        /// The offending value as written.
        value: String,
        /// What is wrong and what is expected.
        reason: String,
    },
}

/// The static provider's validated pool, ready for [`crate::ipam`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPool {
    /// Pod CIDRs, in configuration order.
    pub cidrs: Vec<Ipv4Net>,
    /// Excluded addresses.
    pub exclude: Vec<Ipv4Addr>,
}

impl ClusterConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The embedded default ([`DEFAULT_CONFIG`]).
    pub fn embedded_default() -> Result<ClusterConfig, ConfigError> {
        Self::parse(DEFAULT_CONFIG, "embedded default")
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<ClusterConfig, ConfigError> {
        let config: ClusterConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// The static pool, parsed. Only valid after [`ClusterConfig::parse`] accepted the file.
    pub fn static_pool(&self, origin: &str) -> Result<StaticPool, ConfigError> {
        let invalid = |key: String, value: &str, reason: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            value: format!("{value:?}"),
            reason,
        };
        let Some(pool) = &self.provider.static_pool else {
            return Err(invalid(
                "provider.static".into(),
                "",
                "the static provider needs a [provider.static] table with `cidrs`".into(),
            ));
        };
        if pool.cidrs.is_empty() {
            return Err(invalid(
                "provider.static.cidrs".into(),
                "[]",
                "give at least one IPv4 CIDR, e.g. \"10.88.0.0/24\"".into(),
            ));
        }
        let mut cidrs: Vec<Ipv4Net> = Vec::with_capacity(pool.cidrs.len());
        for (i, text) in pool.cidrs.iter().enumerate() {
            let key = format!("provider.static.cidrs[{i}]");
            let net: Ipv4Net = text.parse().map_err(|_| {
                invalid(
                    key.clone(),
                    text,
                    "not an IPv4 CIDR (expected a.b.c.d/len)".into(),
                )
            })?;
            if net.prefix_len() < MIN_STATIC_PREFIX_LEN {
                return Err(invalid(
                    key,
                    text,
                    format!("a node never needs more than a /{MIN_STATIC_PREFIX_LEN}; split it or give several CIDRs"),
                ));
            }
            if net.trunc() != net {
                return Err(invalid(
                    key,
                    text,
                    format!("host bits are set; did you mean {}?", net.trunc()),
                ));
            }
            if let Some(other) = cidrs
                .iter()
                .find(|o| o.contains(&net.network()) || net.contains(&o.network()))
            {
                return Err(invalid(key, text, format!("overlaps {other}")));
            }
            cidrs.push(net);
        }
        let mut exclude = Vec::with_capacity(pool.exclude.len());
        for (i, text) in pool.exclude.iter().enumerate() {
            let key = format!("provider.static.exclude[{i}]");
            let ip: Ipv4Addr = text
                .parse()
                .map_err(|_| invalid(key.clone(), text, "not an IPv4 address".into()))?;
            if !cidrs.iter().any(|c| c.contains(&ip)) {
                return Err(invalid(
                    key,
                    text,
                    "is outside every CIDR in provider.static.cidrs".into(),
                ));
            }
            exclude.push(ip);
        }
        Ok(StaticPool { cidrs, exclude })
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, value: String, reason: &str| ConfigError::Invalid {
            origin: origin.to_owned(),
            key: key.to_owned(),
            value,
            reason: reason.to_owned(),
        };
        if self.version != SCHEMA_VERSION {
            return Err(invalid(
                "version",
                self.version.to_string(),
                "this build reads schema version 1 only",
            ));
        }
        if !self.daemon.socket.is_absolute() {
            return Err(invalid(
                "daemon.socket",
                format!("{:?}", self.daemon.socket.display().to_string()),
                "must be an absolute path",
            ));
        }
        if !self.daemon.state_dir.is_absolute() {
            return Err(invalid(
                "daemon.state_dir",
                format!("{:?}", self.daemon.state_dir.display().to_string()),
                "must be an absolute path",
            ));
        }
        if !(100..=600_000).contains(&self.daemon.request_read_timeout_ms) {
            return Err(invalid(
                "daemon.request_read_timeout_ms",
                self.daemon.request_read_timeout_ms.to_string(),
                "must be between 100 and 600000",
            ));
        }
        if !(4096..=(64 << 20)).contains(&self.daemon.max_request_bytes) {
            return Err(invalid(
                "daemon.max_request_bytes",
                self.daemon.max_request_bytes.to_string(),
                "must be between 4096 and 67108864",
            ));
        }
        let prefix = &self.datapath.veth_prefix;
        if prefix.is_empty()
            || prefix.len() > MAX_VETH_PREFIX_LEN
            || !prefix.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(invalid(
                "datapath.veth_prefix",
                format!("{prefix:?}"),
                "must be 1 to 4 ASCII letters or digits (the kernel allows 15-byte names; 11 go to the hash)",
            ));
        }
        if !(576..=65_535).contains(&self.datapath.mtu) {
            return Err(invalid(
                "datapath.mtu",
                self.datapath.mtu.to_string(),
                "must be between 576 and 65535",
            ));
        }
        match self.provider.kind.as_str() {
            "static" => self.static_pool(origin).map(|_| ())?,
            other => {
                return Err(invalid(
                    "provider.kind",
                    format!("{other:?}"),
                    "this build knows only \"static\"",
                ))
            }
        }
        self.validate_plugins(origin)
    }

    fn validate_plugins(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, value: String, reason: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            value,
            reason,
        };
        let mut names = std::collections::BTreeSet::new();
        for (i, plugin) in self.plugins.iter().enumerate() {
            let key = |field: &str| format!("plugins[{i}].{field}");
            let valid_name = !plugin.name.is_empty()
                && plugin.name.len() <= 64
                && plugin
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid_name {
                return Err(invalid(
                    key("name"),
                    format!("{:?}", plugin.name),
                    "must be 1 to 64 letters, digits, '-' or '_'".into(),
                ));
            }
            if !names.insert(plugin.name.as_str()) {
                return Err(invalid(
                    key("name"),
                    format!("{:?}", plugin.name),
                    "another plugin has this name".into(),
                ));
            }
            if plugin.kind != "allocator" {
                return Err(invalid(
                    key("kind"),
                    format!("{:?}", plugin.kind),
                    "this build knows only \"allocator\"".into(),
                ));
            }
            if !plugin.path.is_absolute() {
                return Err(invalid(
                    key("path"),
                    format!("{:?}", plugin.path.display().to_string()),
                    "must be an absolute path".into(),
                ));
            }
            let hex = plugin.digest.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64
                || !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(invalid(
                    key("digest"),
                    format!("{:?}", plugin.digest),
                    "must be \"sha256:\" followed by 64 lowercase hex digits (wasmcni-plugin-build prints it)".into(),
                ));
            }
            let mut seen = std::collections::BTreeSet::new();
            for (g, grant) in plugin.grants.iter().enumerate() {
                if crate::runtime::Capability::parse(grant).is_none() {
                    return Err(invalid(
                        format!("plugins[{i}].grants[{g}]"),
                        format!("{grant:?}"),
                        format!(
                            "not a capability; this build offers {}",
                            crate::runtime::Capability::ALL
                                .map(|c| c.as_str())
                                .join(", ")
                        ),
                    ));
                }
                if !seen.insert(grant) {
                    return Err(invalid(
                        format!("plugins[{i}].grants[{g}]"),
                        format!("{grant:?}"),
                        "granted twice".into(),
                    ));
                }
            }
            if !(100_000..=10_000_000_000).contains(&plugin.fuel) {
                return Err(invalid(
                    key("fuel"),
                    plugin.fuel.to_string(),
                    "must be between 100000 and 10000000000".into(),
                ));
            }
            if !((1 << 20)..=(1 << 30)).contains(&plugin.memory_bytes) {
                return Err(invalid(
                    key("memory_bytes"),
                    plugin.memory_bytes.to_string(),
                    "must be between 1 MiB and 1 GiB".into(),
                ));
            }
        }
        if let Some(name) = &self.allocator.plugin {
            if !self
                .plugins
                .iter()
                .any(|p| &p.name == name && p.kind == "allocator")
            {
                return Err(invalid(
                    "allocator.plugin".into(),
                    format!("{name:?}"),
                    "no [[plugins]] entry of kind \"allocator\" has this name".into(),
                ));
            }
        }
        Ok(())
    }

    /// The configured allocator plugin, as the runtime loads it; `None` for the built-in one.
    pub fn allocator_spec(&self) -> Option<crate::runtime::PluginSpec> {
        let name = self.allocator.plugin.as_ref()?;
        self.plugin_specs().into_iter().find(|p| &p.name == name)
    }

    /// Every `[[plugins]]` entry, as the runtime loads it.
    pub fn plugin_specs(&self) -> Vec<crate::runtime::PluginSpec> {
        self.plugins
            .iter()
            .map(|plugin| crate::runtime::PluginSpec {
                name: plugin.name.clone(),
                path: plugin.path.clone(),
                digest: plugin.digest.clone(),
                grants: plugin
                    .grants
                    .iter()
                    .filter_map(|g| crate::runtime::Capability::parse(g))
                    .collect(),
                limits: crate::runtime::Limits {
                    fuel: plugin.fuel,
                    memory_bytes: plugin.memory_bytes,
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(replace: &str, by: &str) -> String {
        assert!(
            DEFAULT_CONFIG.contains(replace),
            "fixture drifted: {replace}"
        );
        DEFAULT_CONFIG.replacen(replace, by, 1)
    }

    #[test]
    fn embedded_default_is_valid() {
        let config = ClusterConfig::embedded_default().expect("default config");
        assert_eq!(config.datapath.veth_prefix, "eni");
        let pool = config.static_pool("t").unwrap();
        assert_eq!(pool.cidrs, vec!["10.88.0.0/24".parse::<Ipv4Net>().unwrap()]);
    }

    #[test]
    fn example_under_policies_matches_embedded_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/default.toml");
        assert_eq!(
            ClusterConfig::load(&path).unwrap(),
            ClusterConfig::embedded_default().unwrap()
        );
    }

    #[test]
    fn errors_name_the_key_and_the_value() {
        let cases: &[(String, &str)] = &[
            (
                with("version = 1", "version = 2"),
                "`version` = 2: this build reads schema version 1",
            ),
            (
                with(
                    "cidrs = [\"10.88.0.0/24\"]",
                    "cidrs = [\"10.88.0.0/24\", \"10.0.0.0/33\"]",
                ),
                "`provider.static.cidrs[1]` = \"10.0.0.0/33\": not an IPv4 CIDR",
            ),
            (
                with("cidrs = [\"10.88.0.0/24\"]", "cidrs = [\"10.88.0.5/24\"]"),
                "host bits are set; did you mean 10.88.0.0/24?",
            ),
            (
                with(
                    "cidrs = [\"10.88.0.0/24\"]",
                    "cidrs = [\"10.88.0.0/24\", \"10.88.0.128/25\"]",
                ),
                "`provider.static.cidrs[1]` = \"10.88.0.128/25\": overlaps 10.88.0.0/24",
            ),
            (
                with("exclude = []", "exclude = [\"10.1.0.1\"]"),
                "`provider.static.exclude[0]` = \"10.1.0.1\": is outside every CIDR",
            ),
            (
                with("veth_prefix = \"eni\"", "veth_prefix = \"toolong\""),
                "`datapath.veth_prefix` = \"toolong\"",
            ),
            (
                with("cidrs = [\"10.88.0.0/24\"]", "cidrs = [\"10.0.0.0/8\"]"),
                "`provider.static.cidrs[0]` = \"10.0.0.0/8\": a node never needs more than a /16",
            ),
            (with("mtu = 9001", "mtu = 70000"), "`datapath.mtu` = 70000"),
            (
                with("kind = \"static\"", "kind = \"ec3\""),
                "`provider.kind` = \"ec3\": this build knows only",
            ),
            (
                with("socket = \"/run", "socket = \"run"),
                "`daemon.socket` = \"run/wasmcni/wasmcni.sock\": must be an absolute path",
            ),
        ];
        for (text, expected) in cases {
            let err = ClusterConfig::parse(text, "test.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
            assert!(err.starts_with("cluster configuration test.toml"), "{err}");
        }
    }

    #[test]
    fn plugin_entries_are_validated_key_by_key() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let plugin = |extra: &str| {
            format!(
                "{DEFAULT_CONFIG}\n[allocator]\nplugin = \"pack\"\n\n[[plugins]]\nname = \"pack\"\nkind = \"allocator\"\npath = \"/usr/lib/wasmcni/pack.wasm\"\ndigest = \"{digest}\"\ngrants = [\"pool-view\", \"log\"]\n{extra}"
            )
        };
        let config = ClusterConfig::parse(&plugin(""), "t").unwrap();
        let spec = config.allocator_spec().unwrap();
        assert_eq!(spec.grants.len(), 2);
        assert_eq!(spec.limits, crate::runtime::Limits::default());
        let cases = [
            (plugin("").replace("grants = [\"pool-view\", \"log\"]", "grants = [\"netlink\"]"), "`plugins[0].grants[0]` = \"netlink\": not a capability; this build offers pool-view, log, clock"),
            (plugin("").replace(&digest, "sha256:1234"), "`plugins[0].digest` = \"sha256:1234\": must be"),
            (plugin("").replace("/usr/lib/wasmcni/pack.wasm", "pack.wasm"), "`plugins[0].path` = \"pack.wasm\": must be an absolute path"),
            (plugin("").replace("plugin = \"pack\"", "plugin = \"packer\""), "`allocator.plugin` = \"packer\": no [[plugins]] entry"),
            (plugin("fuel = 10"), "`plugins[0].fuel` = 10"),
            (plugin("").replace("kind = \"allocator\"", "kind = \"tagger\""), "`plugins[0].kind` = \"tagger\""),
        ];
        for (text, expected) in cases {
            let err = ClusterConfig::parse(&text, "t").unwrap_err().to_string();
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused_with_position() {
        let err = ClusterConfig::parse(&with("mtu = 9001", "mtu = 9001\nmut = 1"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `mut`"), "{err}");
        assert!(err.contains("line"), "{err}");
        let err = ClusterConfig::parse(&with("mtu = 9001", "mtu = \"big\""), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mtu"), "{err}");
    }
}
