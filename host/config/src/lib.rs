//! The cluster configuration: a versioned TOML file the node daemon validates at start.
//!
//! Parsing is strict (`deny_unknown_fields`) and validation names the key and the offending
//! value, so a typo or a bad CIDR stops the daemon with a message an operator can act on
//! instead of a half-working node. `policies/default.toml` is the documented example and the
//! embedded default.
//!
//! One file per section: `node` (`[install]`, `[daemon]`, `[datapath]`),
//! `plugins` (`[[plugins]]`, resolved into plugin specs), `provider` (`[provider]`); this file
//! holds the whole ([`ClusterConfig`]), its parsing and the checks across sections.

use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::Deserialize;

mod node;
mod plugins;
mod provider;
mod registry;
mod trust;

pub use node::{DaemonConfig, DatapathConfig, InstallConfig, EC2_MTU, FALLBACK_MTU};
pub use plugins::{
    EniOpsScopeConfig, GrantsConfig, KvScopeConfig, NetlinkScopeConfig, NoScope, PluginConfig,
};
pub use provider::{
    Ec2ProviderConfig, ProviderConfig, ProviderKind, SnatBackend, SnatConfig, SnatRandomize,
    StaticPoolConfig,
};
pub use registry::{
    cached_component, RegistryAuthConfig, RegistryConfig, DEFAULT_MAX_COMPONENT_BYTES,
    DEFAULT_PULL_TIMEOUT_MS, MAX_COMPONENT_BYTES, REGISTRY_AUTH_DIR, REGISTRY_AUTH_DIR_ENV,
};
pub use trust::TrustConfig;

/// The only schema version this build understands.
pub const SCHEMA_VERSION: u32 = 1;

/// The embedded default configuration (`policies/default.toml`): a static pool for nodes without EC2.
pub const DEFAULT_CONFIG: &str = include_str!("../../../policies/default.toml");

/// Largest static CIDR (a /16: 65 534 pod addresses, far above any node's pod limit), which
/// also bounds the pool's scan for a free address.
pub const MIN_STATIC_PREFIX_LEN: u8 = 16;

/// Largest static IPv6 prefix: a /64, the subnet size IPv6 networks hand out (the pool counts
/// its addresses without walking them).
pub const MIN_STATIC_PREFIX_LEN_V6: u8 = 64;

/// Link-local addresses the node or its pods talk to, which no configured range may hold:
/// the pods' IPv4 gateway (answered by a permanent neighbour entry) and AWS's link-local
/// services.
const RESERVED_LINK_LOCAL: [(std::net::Ipv4Addr, &str); 5] = [
    (
        std::net::Ipv4Addr::new(169, 254, 1, 1),
        "the pods' IPv4 gateway",
    ),
    (
        std::net::Ipv4Addr::new(169, 254, 169, 254),
        "the instance metadata service (IMDS)",
    ),
    (
        std::net::Ipv4Addr::new(169, 254, 169, 253),
        "the Amazon DNS server",
    ),
    (
        std::net::Ipv4Addr::new(169, 254, 170, 2),
        "the ECS task metadata endpoint",
    ),
    (
        std::net::Ipv4Addr::new(169, 254, 170, 23),
        "the EKS Pod Identity agent",
    ),
];

/// IPv6's minimum link MTU: below it the kernel turns IPv6 off on the interface.
pub const IPV6_MIN_MTU: u32 = 1280;

/// Longest host-veth prefix: the kernel allows 15-byte names and the hash suffix takes 11.
pub const MAX_VETH_PREFIX_LEN: usize = 4;

/// A validated cluster configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
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
    /// Which plugin tags new ENIs (none: only the daemon's own ownership tags).
    #[serde(default)]
    pub tagger: TaggerConfig,
    /// Which policy hooks run on ADD, DEL and CHECK, in order.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// The cluster this node belongs to.
    #[serde(default)]
    pub cluster: ClusterInfo,
    /// Install the CNI binary and conflist on the node once the daemon is ready (as VPC CNI's
    /// aws-node does), so kubelet's "network ready" means ready.
    pub install: Option<InstallConfig>,
    /// Reviewers' approvals every plugin needs before it loads (none: no approvals needed).
    #[serde(default)]
    pub trust: Option<TrustConfig>,
    /// The file `trust` was pinned from ([`ClusterConfig::pin_trust`]), if it was.
    #[serde(skip)]
    trust_pin: Option<std::path::PathBuf>,
    /// How `oci://` plugins are pulled.
    #[serde(default)]
    pub registry: RegistryConfig,
    /// The WebAssembly plugins, each pinned by digest with its grants and limits.
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    /// `plugins`, validated and resolved into what the runtime loads (filled by `parse`).
    #[serde(skip)]
    specs: Vec<wasmcni_core::PluginSpec>,
    /// Where pulled components are kept, if not under `daemon.state_dir`
    /// ([`ClusterConfig::relocate_component_cache`]).
    #[serde(skip)]
    component_cache: Option<PathBuf>,
}

/// `[allocator]`: the allocation strategy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllocatorConfig {
    /// Name of an allocator plugin from `[[plugins]]`; absent: the built-in rotating allocator.
    pub plugin: Option<String>,
}

/// `[tagger]`: the ENI tagger.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaggerConfig {
    /// Name of a tagger plugin from `[[plugins]]`.
    pub plugin: Option<String>,
}

/// `[policy]`: the policy hooks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Names of policy plugins from `[[plugins]]`, asked in order; the first deny wins.
    #[serde(default)]
    pub plugins: Vec<String>,
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterInfo {
    /// The cluster's name (given to taggers; empty when unset).
    #[serde(default)]
    pub name: String,
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
        let mut config: ClusterConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.validate(origin)?;
        config.specs = config.resolve_plugins(origin)?;
        Ok(config)
    }

    /// The operations socket (metrics and introspection).
    pub fn ops_socket(&self) -> PathBuf {
        self.daemon.ops_socket.clone().unwrap_or_else(|| {
            self.daemon
                .socket
                .parent()
                .unwrap_or_else(|| Path::new("/run/wasmcni"))
                .join("ops.sock")
        })
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
        // The shim connects only below /run/wasmcni (a netconf cannot point it elsewhere), so
        // a daemon listening anywhere else could never be reached.
        if let Err(why) = wasmcni_cni::paths::daemon_socket(&self.daemon.socket.to_string_lossy()) {
            return Err(invalid(
                "daemon.socket",
                format!("{:?}", self.daemon.socket.display().to_string()),
                &format!("must lie below {}: {why}", wasmcni_cni::proto::SOCKET_DIR),
            ));
        }
        if let Some(ops) = &self.daemon.ops_socket {
            if !ops.is_absolute() || *ops == self.daemon.socket {
                return Err(invalid(
                    "daemon.ops_socket",
                    format!("{:?}", ops.display().to_string()),
                    "must be an absolute path other than daemon.socket",
                ));
            }
        }
        if let Some(log) = &self.daemon.log_file {
            if !log.is_absolute() {
                return Err(invalid(
                    "daemon.log_file",
                    format!("{:?}", log.display().to_string()),
                    "must be an absolute path",
                ));
            }
        }
        if !(4096..=(1u64 << 30)).contains(&self.daemon.log_max_bytes) {
            return Err(invalid(
                "daemon.log_max_bytes",
                self.daemon.log_max_bytes.to_string(),
                "must be between 4096 and 1073741824",
            ));
        }
        if self.daemon.log_keep > 100 {
            return Err(invalid(
                "daemon.log_keep",
                self.daemon.log_keep.to_string(),
                "must be at most 100",
            ));
        }
        if let Some(listen) = &self.daemon.metrics_listen {
            if !listen.ip().is_loopback() {
                return Err(invalid(
                    "daemon.metrics_listen",
                    format!("{:?}", listen.to_string()),
                    "must be a loopback address (metrics name pods and plugins); scrape it through a node-local agent",
                ));
            }
        }
        if let Some(install) = &self.install {
            for (key, dir) in [
                ("install.cni_bin_dir", &install.cni_bin_dir),
                ("install.cni_conf_dir", &install.cni_conf_dir),
            ] {
                if !dir.is_absolute() {
                    return Err(invalid(
                        key,
                        format!("{:?}", dir.display().to_string()),
                        "must be an absolute path",
                    ));
                }
            }
            let name = &install.conflist_name;
            if !name.ends_with(".conflist") || name.contains('/') || name.starts_with('.') {
                return Err(invalid(
                    "install.conflist_name",
                    format!("{name:?}"),
                    "must be a plain file name ending in .conflist (e.g. 10-wasmcni.conflist)",
                ));
            }
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
        let egress = self.datapath.ipv4_egress_range;
        if egress.trunc() != egress {
            return Err(invalid(
                "datapath.ipv4_egress_range",
                format!("\"{egress}\""),
                &format!("host bits are set; did you mean {}?", egress.trunc()),
            ));
        }
        if !(16..=30).contains(&egress.prefix_len()) {
            return Err(invalid(
                "datapath.ipv4_egress_range",
                format!("\"{egress}\""),
                "must be a /16 to a /30: one address per IPv6 pod, node-local",
            ));
        }
        let link_local = ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(169, 254, 0, 0), 16)
            .expect("a valid prefix");
        if !link_local.contains(&egress) {
            return Err(invalid(
                "datapath.ipv4_egress_range",
                format!("\"{egress}\""),
                "must be inside 169.254.0.0/16: link-local addresses never leave the node untranslated and are no other network's",
            ));
        }
        if let Some((ip, what)) = RESERVED_LINK_LOCAL
            .iter()
            .find(|(ip, _)| egress.contains(ip))
        {
            return Err(invalid(
                "datapath.ipv4_egress_range",
                format!("\"{egress}\""),
                &format!(
                    "holds {ip}, {what}: a pod given it would capture the node's traffic to it"
                ),
            ));
        }
        if let Some(mtu) = self.datapath.mtu.filter(|m| !(576..=65_535).contains(m)) {
            return Err(invalid(
                "datapath.mtu",
                mtu.to_string(),
                "must be between 576 and 65535",
            ));
        }
        match self.provider.kind {
            ProviderKind::Static => self.validate_static(origin)?,
            ProviderKind::Ec2 => self.validate_ec2(origin)?,
        }
        self.registry.validate(origin)?;
        self.registry.validate_confined(origin)?;
        self.validate_trust(origin)
    }

    /// Every `[[plugins]]` entry, as the runtime loads it.
    pub fn plugin_specs(&self) -> &[wasmcni_core::PluginSpec] {
        &self.specs
    }

    /// The configured allocator plugin; `None` for the built-in one.
    pub fn allocator_spec(&self) -> Option<&wasmcni_core::PluginSpec> {
        let name = self.allocator.plugin.as_ref()?;
        self.specs.iter().find(|p| &p.name == name)
    }

    /// The configured tagger plugin, if any.
    pub fn tagger_spec(&self) -> Option<&wasmcni_core::PluginSpec> {
        let name = self.tagger.plugin.as_ref()?;
        self.specs.iter().find(|p| &p.name == name)
    }

    /// The configured policy hooks, in order.
    pub fn policy_specs(&self) -> Vec<&wasmcni_core::PluginSpec> {
        self.policy
            .plugins
            .iter()
            .filter_map(|name| self.specs.iter().find(|p| &p.name == name))
            .collect()
    }
}

/// A `#[serde(default)]` of `true`.
fn default_true() -> bool {
    true
}

/// Whether `text` is an AWS resource id with `prefix` (`subnet-`, `sg-`) and 8 or 17 hex digits.
fn is_aws_id(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix).is_some_and(|hex| {
        (hex.len() == 8 || hex.len() == 17) && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests;
