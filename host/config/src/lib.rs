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

use wasmcni_core::ipam::StaticPool;

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
    /// The WebAssembly plugins, each pinned by digest with its grants and limits.
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    /// `plugins`, validated and resolved into what the runtime loads (filled by `parse`).
    #[serde(skip)]
    specs: Vec<wasmcni_core::PluginSpec>,
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

/// `[install]`: where the node's CNI binaries and configuration live.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstallConfig {
    /// kubelet's CNI binary directory.
    #[serde(default = "default_cni_bin_dir")]
    pub cni_bin_dir: PathBuf,
    /// kubelet's CNI configuration directory.
    #[serde(default = "default_cni_conf_dir")]
    pub cni_conf_dir: PathBuf,
    /// File name of the conflist (kubelet uses the first in lexical order).
    #[serde(default = "default_conflist_name")]
    pub conflist_name: String,
    /// The `wasmcni` shim to copy (default: `wasmcni` beside the running `wasmcni-host`).
    pub shim: Option<PathBuf>,
    /// Chain `portmap` (hostPort, with SNAT) after wasmcni.
    #[serde(default = "default_true")]
    pub portmap: bool,
    /// Chain `bandwidth` (VPC CNI's `ENABLE_BANDWIDTH_PLUGIN`).
    #[serde(default)]
    pub bandwidth: bool,
}

fn default_cni_bin_dir() -> PathBuf {
    PathBuf::from("/opt/cni/bin")
}
fn default_cni_conf_dir() -> PathBuf {
    PathBuf::from("/etc/cni/net.d")
}
fn default_conflist_name() -> String {
    "10-wasmcni.conflist".to_owned()
}

/// `[[plugins]]`: one WebAssembly component.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Unique name, referred to by `[allocator]`, `[tagger]` and `[policy]`.
    pub name: String,
    /// Plugin kind: `allocator`, `tagger` or `policy` (the WIT world it implements).
    pub kind: String,
    /// Absolute path of the component file.
    pub path: PathBuf,
    /// `sha256:<64 hex>`: the daemon refuses a file with any other content.
    pub digest: String,
    /// Capabilities (WIT interfaces) it may import, each with its scope.
    #[serde(default)]
    pub grants: GrantsConfig,
    /// Tag keys a tagger may set.
    #[serde(default)]
    pub tag_keys: Vec<String>,
    /// Failure policy per hook: `closed` or `open`.
    #[serde(default)]
    pub on_failure: std::collections::BTreeMap<String, String>,
    /// The plugin's own settings (strings, numbers or booleans), read through `config`.
    #[serde(default)]
    pub config: std::collections::BTreeMap<String, toml::Value>,
    /// Fuel per call (about one unit per instruction).
    #[serde(default = "default_plugin_fuel")]
    pub fuel: u64,
    /// Largest linear memory, in bytes.
    #[serde(default = "default_plugin_memory")]
    pub memory_bytes: usize,
    /// Wall-clock deadline per export, milliseconds (`allocate`, `plan`, `tags`, `evaluate`);
    /// unlisted exports keep their defaults (50 ms; `plan` 500 ms).
    #[serde(default)]
    pub deadline_ms: std::collections::BTreeMap<String, u64>,
    /// Host calls one call may make (default 1000).
    #[serde(default = "default_plugin_host_calls")]
    pub host_calls: u32,
}

/// `[plugins.grants]`: a key per granted capability, its value the scope.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsConfig {
    /// `pool-view = {}`.
    #[serde(rename = "pool-view")]
    pub pool_view: Option<NoScope>,
    /// `eni-ops = { subnets = [...], security_groups = [...], max_enis = N }`.
    #[serde(rename = "eni-ops")]
    pub eni_ops: Option<EniOpsScopeConfig>,
    /// `netlink = { mtu = [min, max], routes = [...] }`.
    pub netlink: Option<NetlinkScopeConfig>,
    /// `log = {}`.
    pub log: Option<NoScope>,
    /// `kv = { max_bytes = N }`.
    pub kv: Option<KvScopeConfig>,
    /// `clock = {}`.
    pub clock: Option<NoScope>,
}

/// A capability without a scope: `{}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct NoScope {}

/// Scope of `eni-ops`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EniOpsScopeConfig {
    /// Subnet ids new ENIs may go to; `node` is the primary ENI's subnet.
    #[serde(default)]
    pub subnets: Vec<String>,
    /// Security groups new ENIs may carry; `node` is the primary ENI's groups.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// ENIs the node may have in all (default: the instance type's limit).
    pub max_enis: Option<u32>,
}

/// Scope of `netlink`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetlinkScopeConfig {
    /// `[min, max]` MTU `set-mtu` may set.
    pub mtu: Option<[u32; 2]>,
    /// CIDRs `add-route` destinations must lie within.
    #[serde(default)]
    pub routes: Vec<String>,
}

/// Scope of `kv`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct KvScopeConfig {
    /// Bytes of keys and values the plugin may keep (default 65536, at most 1 MiB).
    pub max_bytes: Option<usize>,
}

fn default_plugin_fuel() -> u64 {
    wasmcni_core::Limits::default().fuel
}
fn default_plugin_memory() -> usize {
    wasmcni_core::Limits::default().memory_bytes
}
fn default_plugin_host_calls() -> u32 {
    wasmcni_core::limits::DEFAULT_HOST_CALLS
}

/// `[daemon]`: the node daemon's socket, state and request limits.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
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
    /// Root-only Unix socket serving metrics (`/metrics`) and introspection (`/v1/...`);
    /// default `ops.sock` next to `socket`.
    pub ops_socket: Option<PathBuf>,
    /// Also serve `/metrics` on this loopback TCP address (e.g. `127.0.0.1:61678`).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// JSON-lines log file (absent: stderr only).
    pub log_file: Option<PathBuf>,
    /// The log file rotates before it passes this size.
    #[serde(default = "default_log_max_bytes")]
    pub log_max_bytes: u64,
    /// Rotated log files kept.
    #[serde(default = "default_log_keep")]
    pub log_keep: u32,
}

fn default_log_max_bytes() -> u64 {
    10 << 20
}
fn default_log_keep() -> u32 {
    5
}

/// `[datapath]`: how pod interfaces are named and sized.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Which provider.
    pub kind: ProviderKind,
    /// Settings of the static provider (`[provider.static]`).
    #[serde(rename = "static")]
    pub static_pool: Option<StaticPoolConfig>,
    /// Settings of the EC2 ENI provider (`[provider.ec2]`; every key has a default).
    pub ec2: Option<Ec2ProviderConfig>,
}

/// `[provider.ec2]`: pod addresses are secondary IPs and /28 prefixes of the node's ENIs,
/// which the daemon creates, attaches and releases through the EC2 API on the allocator
/// plugin's plan.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2ProviderConfig {
    /// EC2 API endpoint override (absent: the region's endpoint). `http://` only for emulators.
    pub ec2_endpoint: Option<String>,
    /// IMDS endpoint override (absent: `http://169.254.169.254`).
    pub imds_endpoint: Option<String>,
    /// Attempts per EC2 call, the first included; each attempt takes a token of the bucket.
    #[serde(default = "default_ec2_attempts")]
    pub max_attempts: u32,
    /// Bound on one EC2 attempt, in milliseconds.
    #[serde(default = "default_ec2_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// Client-side token bucket shared by every EC2 call: burst size.
    #[serde(default = "default_api_burst")]
    pub api_burst: u32,
    /// Client-side token bucket: calls per second it refills.
    #[serde(default = "default_api_rate")]
    pub api_rate_per_s: f64,
    /// How long an ADD that finds the pool empty waits for the pool to grow before failing.
    #[serde(default = "default_add_wait_ms")]
    pub add_wait_ms: u64,
    /// Period of the warm-pool reconciler when nothing wakes it earlier.
    #[serde(default = "default_reconcile_interval_ms")]
    pub reconcile_interval_ms: u64,
    /// A released pod address is not handed out again before this many milliseconds
    /// (VPC CNI's 30 s cooldown).
    #[serde(default = "default_ip_cooldown_ms")]
    pub ip_cooldown_ms: u64,
    /// How long to wait for an attached ENI's link to appear on the node.
    #[serde(default = "default_link_wait_ms")]
    pub link_wait_ms: u64,
    /// STATUS reports not ready until this many addresses are free after start.
    #[serde(default = "default_ready_free")]
    pub ready_min_free: u32,
    /// Pods the node may run (kubelet's `--max-pods`); absent: VPC CNI's figure for the
    /// instance type.
    pub max_pods: Option<u32>,
    /// When a subnet has no free aligned /28, assign secondary IPs instead (VPC CNI has no
    /// such fallback, see its #2749).
    #[serde(default = "default_true")]
    pub prefix_fallback: bool,
    /// How often the leaked-ENI collector runs, in seconds.
    #[serde(default = "default_leak_interval_s")]
    pub leaked_eni_interval_s: u64,
    /// An `available` ENI tagged as wasmcni's is deleted once older than this, in seconds.
    #[serde(default = "default_leak_age_s")]
    pub leaked_eni_min_age_s: u64,
    /// SNAT of traffic leaving the VPC (IPv4 only: IPv6 pods use their own global address,
    /// as with VPC CNI).
    #[serde(default)]
    pub snat: SnatConfig,
    /// The family pods get their address in: `ipv4` (secondary IPs or /28 prefixes, planned by
    /// the allocator plugin) or `ipv6` (IPv6 prefix mode: one /80 delegated to the primary
    /// ENI at start and never released; every pod gets a /128 of it).
    #[serde(default)]
    pub ip_family: wasmcni_core::ipam::IpFamily,
}

/// `[provider.ec2.snat]`: VPC CNI's SNAT switches under their own names.
#[derive(Debug, Clone, PartialEq, Deserialize, Default, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SnatConfig {
    /// `AWS_VPC_K8S_CNI_EXTERNALSNAT`: no node SNAT and no connmark rules (a NAT gateway
    /// translates).
    #[serde(default)]
    pub external: bool,
    /// `AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS`: destinations never translated.
    #[serde(default, deserialize_with = "ipv4_cidrs")]
    pub exclude_cidrs: Vec<Ipv4Net>,
    /// `AWS_VPC_K8S_CNI_RANDOMIZESNAT`.
    #[serde(default)]
    pub randomize: SnatRandomize,
    /// `AWS_VPC_K8S_CNI_CONNMARK`: the connmark bit (default 0x80).
    pub connmark: Option<u32>,
    /// Which firewall the rules are written to.
    #[serde(default)]
    pub backend: SnatBackend,
}

/// A list of IPv4 CIDRs, each refused by name when it is not one.
fn ipv4_cidrs<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Ipv4Net>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|cidr| {
            cidr.parse().map_err(|_| {
                serde::de::Error::custom(format!(
                    "{cidr:?} is not an IPv4 CIDR (a.b.c.d/n with n at most 32)"
                ))
            })
        })
        .collect()
}

/// `provider.kind`: where pod addresses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Fixed CIDRs (`[provider.static]`), for nodes without EC2.
    Static,
    /// Secondary IPs and prefixes of the node's ENIs (`[provider.ec2]`).
    Ec2,
}

/// `provider.ec2.snat.randomize`: how SNAT picks the source port (VPC CNI's
/// `AWS_VPC_K8S_CNI_RANDOMIZESNAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SnatRandomize {
    /// Fully random ports (`--random-fully`), VPC CNI's default.
    #[default]
    Prng,
    /// Hash-based random ports (`--random`).
    Hashrandom,
    /// The kernel's default port choice.
    None,
}

/// `provider.ec2.snat.backend`: which firewall holds the SNAT rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SnatBackend {
    /// The one the node's other rules use (kube-proxy's), detected at start.
    #[default]
    Auto,
    /// iptables (legacy or nft-backed, whichever `iptables` is).
    Iptables,
    /// nftables, in wasmcni's own table.
    Nftables,
}

fn default_ec2_attempts() -> u32 {
    8
}
fn default_ec2_call_timeout_ms() -> u64 {
    10_000
}
fn default_api_burst() -> u32 {
    20
}
fn default_api_rate() -> f64 {
    10.0
}
fn default_add_wait_ms() -> u64 {
    10_000
}
fn default_reconcile_interval_ms() -> u64 {
    5_000
}
fn default_ip_cooldown_ms() -> u64 {
    30_000
}
fn default_link_wait_ms() -> u64 {
    15_000
}
fn default_ready_free() -> u32 {
    1
}
fn default_true() -> bool {
    true
}
fn default_leak_interval_s() -> u64 {
    300
}
fn default_leak_age_s() -> u64 {
    300
}

impl Default for Ec2ProviderConfig {
    fn default() -> Self {
        Ec2ProviderConfig {
            ec2_endpoint: None,
            imds_endpoint: None,
            max_attempts: default_ec2_attempts(),
            call_timeout_ms: default_ec2_call_timeout_ms(),
            api_burst: default_api_burst(),
            api_rate_per_s: default_api_rate(),
            add_wait_ms: default_add_wait_ms(),
            reconcile_interval_ms: default_reconcile_interval_ms(),
            ip_cooldown_ms: default_ip_cooldown_ms(),
            link_wait_ms: default_link_wait_ms(),
            ready_min_free: default_ready_free(),
            max_pods: None,
            prefix_fallback: true,
            leaked_eni_interval_s: default_leak_interval_s(),
            leaked_eni_min_age_s: default_leak_age_s(),
            snat: SnatConfig::default(),
            ip_family: wasmcni_core::ipam::IpFamily::Ipv4,
        }
    }
}

/// `[provider.static]`: fixed IPv4 CIDRs for nodes without EC2.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
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

    /// The EC2 provider's settings (defaults when `[provider.ec2]` is absent).
    pub fn ec2(&self) -> Ec2ProviderConfig {
        self.provider.ec2.clone().unwrap_or_default()
    }

    fn validate_ec2(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, value: String, reason: &str| ConfigError::Invalid {
            origin: origin.to_owned(),
            key: format!("provider.ec2.{key}"),
            value,
            reason: reason.to_owned(),
        };
        if self.provider.static_pool.is_some() {
            return Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                key: "provider.static".into(),
                value: "a table".into(),
                reason: "is for kind = \"static\"; with kind = \"ec2\" addresses come from the node's ENIs".into(),
            });
        }
        let ec2 = self.ec2();
        match (ec2.ip_family, &self.allocator.plugin) {
            (wasmcni_core::ipam::IpFamily::Ipv4, None) => {
                return Err(ConfigError::Invalid {
                    origin: origin.to_owned(),
                    key: "allocator.plugin".into(),
                    value: "absent".into(),
                    reason: "the ec2 provider grows and shrinks the pool on an allocator plugin's plan: name one (e.g. vpc-warm-pool or pack)".into(),
                });
            }
            (wasmcni_core::ipam::IpFamily::Ipv6, _) if self.datapath.mtu < 1280 => {
                return Err(ConfigError::Invalid {
                    origin: origin.to_owned(),
                    key: "datapath.mtu".into(),
                    value: self.datapath.mtu.to_string(),
                    reason: "with provider.ec2.ip_family = \"ipv6\" it must be at least 1280 (IPv6's minimum)".into(),
                });
            }
            (wasmcni_core::ipam::IpFamily::Ipv6, Some(name)) => {
                return Err(ConfigError::Invalid {
                    origin: origin.to_owned(),
                    key: "allocator.plugin".into(),
                    value: format!("{name:?}"),
                    reason: "with provider.ec2.ip_family = \"ipv6\" every pod gets a /128 of the node's /80, which the host hands out; there is no pool to plan and the allocator interface speaks IPv4: remove [allocator]".into(),
                });
            }
            _ => {}
        }
        for (key, url) in [
            ("ec2_endpoint", &ec2.ec2_endpoint),
            ("imds_endpoint", &ec2.imds_endpoint),
        ] {
            if let Some(url) = url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(invalid(
                        key,
                        format!("{url:?}"),
                        "must be an http:// or https:// URL",
                    ));
                }
            }
        }
        if !(1..=20).contains(&ec2.max_attempts) {
            return Err(invalid(
                "max_attempts",
                ec2.max_attempts.to_string(),
                "must be between 1 and 20",
            ));
        }
        if !(100..=120_000).contains(&ec2.call_timeout_ms) {
            return Err(invalid(
                "call_timeout_ms",
                ec2.call_timeout_ms.to_string(),
                "must be between 100 and 120000",
            ));
        }
        if ec2.api_burst == 0 || ec2.api_burst > 1000 {
            return Err(invalid(
                "api_burst",
                ec2.api_burst.to_string(),
                "must be between 1 and 1000",
            ));
        }
        if !(ec2.api_rate_per_s.is_finite()
            && ec2.api_rate_per_s >= 0.1
            && ec2.api_rate_per_s <= 1000.0)
        {
            return Err(invalid(
                "api_rate_per_s",
                ec2.api_rate_per_s.to_string(),
                "must be between 0.1 and 1000",
            ));
        }
        if ec2.add_wait_ms > 120_000 {
            return Err(invalid(
                "add_wait_ms",
                ec2.add_wait_ms.to_string(),
                "must be at most 120000 (kubelet gives up on an ADD long before)",
            ));
        }
        if !(100..=600_000).contains(&ec2.reconcile_interval_ms) {
            return Err(invalid(
                "reconcile_interval_ms",
                ec2.reconcile_interval_ms.to_string(),
                "must be between 100 and 600000",
            ));
        }
        if ec2.ip_cooldown_ms > 600_000 {
            return Err(invalid(
                "ip_cooldown_ms",
                ec2.ip_cooldown_ms.to_string(),
                "must be at most 600000",
            ));
        }
        if !(100..=300_000).contains(&ec2.link_wait_ms) {
            return Err(invalid(
                "link_wait_ms",
                ec2.link_wait_ms.to_string(),
                "must be between 100 and 300000",
            ));
        }
        if !(60..=86_400).contains(&ec2.leaked_eni_interval_s) {
            return Err(invalid(
                "leaked_eni_interval_s",
                ec2.leaked_eni_interval_s.to_string(),
                "must be between 60 and 86400",
            ));
        }
        if !(60..=86_400).contains(&ec2.leaked_eni_min_age_s) {
            return Err(invalid("leaked_eni_min_age_s", ec2.leaked_eni_min_age_s.to_string(), "must be between 60 and 86400 (a younger ENI may be another node's, being attached)"));
        }
        if ec2.max_pods == Some(0) {
            return Err(invalid("max_pods", "0".into(), "must be at least 1"));
        }
        if let Some(mark) = ec2.snat.connmark {
            if mark == 0 || !mark.is_power_of_two() {
                return Err(invalid(
                    "snat.connmark",
                    format!("{mark:#x}"),
                    "must be a single bit, e.g. 0x80",
                ));
            }
        }
        Ok(())
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
        if !(576..=65_535).contains(&self.datapath.mtu) {
            return Err(invalid(
                "datapath.mtu",
                self.datapath.mtu.to_string(),
                "must be between 576 and 65535",
            ));
        }
        match self.provider.kind {
            ProviderKind::Static => self.static_pool(origin).map(|_| ())?,
            ProviderKind::Ec2 => self.validate_ec2(origin)?,
        }
        Ok(())
    }

    /// Validates every `[[plugins]]` entry and the `[allocator]`, `[tagger]` and `[policy]`
    /// references, resolving them into what the runtime loads.
    fn resolve_plugins(&self, origin: &str) -> Result<Vec<wasmcni_core::PluginSpec>, ConfigError> {
        use wasmcni_core::{FailureMode, FailurePolicy, PluginKind};
        let invalid = |key: String, value: String, reason: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            value,
            reason,
        };
        let quoted = |text: &str| format!("{text:?}");
        let mut names = std::collections::BTreeSet::new();
        let mut specs = Vec::with_capacity(self.plugins.len());
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
                    quoted(&plugin.name),
                    "must be 1 to 64 letters, digits, '-' or '_'".into(),
                ));
            }
            if !names.insert(plugin.name.as_str()) {
                return Err(invalid(
                    key("name"),
                    quoted(&plugin.name),
                    "another plugin has this name".into(),
                ));
            }
            let kind = PluginKind::parse(&plugin.kind).ok_or_else(|| {
                invalid(
                    key("kind"),
                    quoted(&plugin.kind),
                    "must be \"allocator\", \"tagger\" or \"policy\"".into(),
                )
            })?;
            if !plugin.path.is_absolute() {
                return Err(invalid(
                    key("path"),
                    quoted(&plugin.path.display().to_string()),
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
                    quoted(&plugin.digest),
                    "must be \"sha256:\" followed by 64 lowercase hex digits (wasmcni-plugin-build prints it)".into(),
                ));
            }
            let grants = self.resolve_grants(i, kind, &plugin.grants, origin)?;
            if kind != PluginKind::Tagger && !plugin.tag_keys.is_empty() {
                return Err(invalid(
                    key("tag_keys"),
                    format!("{:?}", plugin.tag_keys),
                    format!("only taggers set tags; this is a {kind}"),
                ));
            }
            for (t, tag) in plugin.tag_keys.iter().enumerate() {
                if wasmcni_core::grants::is_reserved_tag_key(tag) {
                    return Err(invalid(
                        format!("plugins[{i}].tag_keys[{t}]"),
                        quoted(tag),
                        "is reserved (aws:* belongs to AWS, *k8s.amazonaws.com* to wasmcni's own ownership tags)".into(),
                    ));
                }
                if tag.is_empty() || tag.chars().count() > 128 {
                    return Err(invalid(
                        format!("plugins[{i}].tag_keys[{t}]"),
                        quoted(tag),
                        "tag keys are 1 to 128 characters".into(),
                    ));
                }
            }
            let mut on_failure = FailurePolicy::defaults(kind);
            for (hook, mode) in &plugin.on_failure {
                let Some((hook, _)) = kind.hooks().iter().find(|(h, _)| h.as_str() == hook) else {
                    return Err(invalid(
                        format!("plugins[{i}].on_failure.{hook}"),
                        quoted(mode),
                        format!(
                            "a {kind} has no hook {hook:?}; its hooks are {}",
                            kind.hooks()
                                .iter()
                                .map(|(h, _)| h.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                };
                let mode = FailureMode::parse(mode).ok_or_else(|| {
                    invalid(
                        format!("plugins[{i}].on_failure.{}", hook.as_str()),
                        quoted(mode),
                        "must be \"closed\" or \"open\"".into(),
                    )
                })?;
                on_failure.0.insert(*hook, mode);
            }
            let mut settings = std::collections::BTreeMap::new();
            for (name, value) in &plugin.config {
                let text = match value {
                    toml::Value::String(text) => text.clone(),
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::Float(x) => x.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    other => {
                        return Err(invalid(
                            format!("plugins[{i}].config.{name}"),
                            format!("a {}", other.type_str()),
                            "settings are strings, numbers or booleans".into(),
                        ))
                    }
                };
                settings.insert(name.clone(), text);
            }
            if !(100_000..=10_000_000_000).contains(&plugin.fuel) {
                return Err(invalid(
                    key("fuel"),
                    plugin.fuel.to_string(),
                    "must be between 100000 and 10000000000".into(),
                ));
            }
            if !((1 << 20)..=wasmcni_core::MAX_PLUGIN_MEMORY).contains(&plugin.memory_bytes) {
                return Err(invalid(
                    key("memory_bytes"),
                    plugin.memory_bytes.to_string(),
                    format!(
                        "must be between 1 MiB and {} MiB",
                        wasmcni_core::MAX_PLUGIN_MEMORY >> 20
                    ),
                ));
            }
            let mut limits = wasmcni_core::Limits {
                fuel: plugin.fuel,
                memory_bytes: plugin.memory_bytes,
                host_calls: plugin.host_calls,
                ..wasmcni_core::Limits::default()
            };
            if !(1..=wasmcni_core::limits::MAX_HOST_CALLS).contains(&plugin.host_calls) {
                return Err(invalid(
                    key("host_calls"),
                    plugin.host_calls.to_string(),
                    format!(
                        "must be between 1 and {}",
                        wasmcni_core::limits::MAX_HOST_CALLS
                    ),
                ));
            }
            let exports = wasmcni_core::Export::of(kind);
            let max_ms = wasmcni_core::limits::MAX_DEADLINE.as_millis() as u64;
            for (name, ms) in &plugin.deadline_ms {
                let Some(export) = exports.iter().find(|e| e.as_str() == name) else {
                    return Err(invalid(
                        key(&format!("deadline_ms.{name}")),
                        ms.to_string(),
                        format!(
                            "a {kind} exports [{}]",
                            exports
                                .iter()
                                .map(|e| e.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                };
                if !(1..=max_ms).contains(ms) {
                    return Err(invalid(
                        key(&format!("deadline_ms.{name}")),
                        ms.to_string(),
                        format!("must be between 1 and {max_ms} milliseconds"),
                    ));
                }
                limits.deadline_ms.insert(*export, *ms);
            }
            let mut spec = wasmcni_core::PluginSpec::new(
                &plugin.name,
                kind,
                plugin.path.clone(),
                plugin.digest.clone(),
                grants,
            );
            spec.limits = limits;
            spec.on_failure = on_failure;
            spec.settings = settings;
            spec.tag_keys = plugin.tag_keys.iter().cloned().collect();
            specs.push(spec);
        }
        let find = |key: String, name: &str, kind: PluginKind| -> Result<(), ConfigError> {
            match specs.iter().find(|s| s.name == name) {
                Some(spec) if spec.kind == kind => Ok(()),
                Some(spec) => Err(invalid(
                    key,
                    quoted(name),
                    format!("is a {}, not a {kind}", spec.kind),
                )),
                None => Err(invalid(
                    key,
                    quoted(name),
                    format!("no [[plugins]] entry of kind \"{kind}\" has this name"),
                )),
            }
        };
        if let Some(name) = &self.allocator.plugin {
            find("allocator.plugin".into(), name, PluginKind::Allocator)?;
        }
        if let Some(name) = &self.tagger.plugin {
            find("tagger.plugin".into(), name, PluginKind::Tagger)?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for (p, name) in self.policy.plugins.iter().enumerate() {
            find(format!("policy.plugins[{p}]"), name, PluginKind::Policy)?;
            if !seen.insert(name) {
                return Err(invalid(
                    format!("policy.plugins[{p}]"),
                    quoted(name),
                    "listed twice".into(),
                ));
            }
        }
        Ok(specs)
    }

    /// Resolves one plugin's `[plugins.grants]` table, checking every scope.
    fn resolve_grants(
        &self,
        i: usize,
        kind: wasmcni_core::PluginKind,
        config: &GrantsConfig,
        origin: &str,
    ) -> Result<wasmcni_core::Grants, ConfigError> {
        use wasmcni_core::grants::{EniScope, KvScope, NetlinkScope};
        use wasmcni_core::{Capability, Grants};
        let invalid = |key: String, value: String, reason: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            value,
            reason,
        };
        let mut grants = Grants::default();
        let granted = [
            (Capability::PoolView, config.pool_view.is_some()),
            (Capability::EniOps, config.eni_ops.is_some()),
            (Capability::Netlink, config.netlink.is_some()),
            (Capability::Log, config.log.is_some()),
            (Capability::Kv, config.kv.is_some()),
            (Capability::Clock, config.clock.is_some()),
        ];
        for (capability, yes) in granted {
            if !yes {
                continue;
            }
            if !kind.offered().contains(&capability) {
                return Err(invalid(
                    format!("plugins[{i}].grants.{capability}"),
                    "{...}".into(),
                    format!(
                        "the {kind} world does not import {capability}; a {kind} may be granted {}",
                        kind.offered()
                            .iter()
                            .map(|c| c.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            grants.capabilities.insert(capability);
        }
        if let Some(scope) = &config.eni_ops {
            let key = |field: &str| format!("plugins[{i}].grants.eni-ops.{field}");
            for (n, subnet) in scope.subnets.iter().enumerate() {
                if subnet != "node" && !is_aws_id(subnet, "subnet-") {
                    return Err(invalid(
                        key(&format!("subnets[{n}]")),
                        format!("{subnet:?}"),
                        "must be \"node\" or a subnet id (subnet-<hex>)".into(),
                    ));
                }
            }
            for (n, group) in scope.security_groups.iter().enumerate() {
                if group != "node" && !is_aws_id(group, "sg-") {
                    return Err(invalid(
                        key(&format!("security_groups[{n}]")),
                        format!("{group:?}"),
                        "must be \"node\" or a security group id (sg-<hex>)".into(),
                    ));
                }
            }
            if let Some(max) = scope.max_enis {
                if !(1..=64).contains(&max) {
                    return Err(invalid(
                        key("max_enis"),
                        max.to_string(),
                        "must be between 1 and 64".into(),
                    ));
                }
            }
            grants.eni_ops = EniScope {
                subnets: scope.subnets.iter().cloned().collect(),
                security_groups: scope.security_groups.iter().cloned().collect(),
                max_enis: scope.max_enis,
            };
        }
        if let Some(scope) = &config.netlink {
            let key = |field: &str| format!("plugins[{i}].grants.netlink.{field}");
            if let Some([low, high]) = scope.mtu {
                if !(576..=65_535).contains(&low) || !(low..=65_535).contains(&high) {
                    return Err(invalid(
                        key("mtu"),
                        format!("[{low}, {high}]"),
                        "must be [min, max] with 576 <= min <= max <= 65535".into(),
                    ));
                }
            }
            let mut routes = Vec::new();
            for (n, text) in scope.routes.iter().enumerate() {
                let net: Ipv4Net = text.parse().map_err(|_| {
                    invalid(
                        key(&format!("routes[{n}]")),
                        format!("{text:?}"),
                        "not an IPv4 CIDR".into(),
                    )
                })?;
                if net.trunc() != net {
                    return Err(invalid(
                        key(&format!("routes[{n}]")),
                        format!("{text:?}"),
                        format!("host bits are set; did you mean {}?", net.trunc()),
                    ));
                }
                routes.push(net);
            }
            grants.netlink = NetlinkScope {
                mtu: scope.mtu.map(|[low, high]| (low, high)),
                routes,
            };
        }
        if let Some(scope) = &config.kv {
            let max_bytes = scope.max_bytes.unwrap_or(KvScope::default().max_bytes);
            if !(1..=(1 << 20)).contains(&max_bytes) {
                return Err(invalid(
                    format!("plugins[{i}].grants.kv.max_bytes"),
                    max_bytes.to_string(),
                    "must be between 1 and 1048576".into(),
                ));
            }
            grants.kv = KvScope { max_bytes };
        }
        Ok(grants)
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

/// Whether `text` is an AWS resource id with `prefix` (`subnet-`, `sg-`) and 8 or 17 hex digits.
fn is_aws_id(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix).is_some_and(|hex| {
        (hex.len() == 8 || hex.len() == 17) && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
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
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/default.toml");
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
                "kind = \"ec3\"\n   |        ^^^^^\nunknown variant `ec3`, expected `static` or `ec2`",
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

    /// The embedded default turned into an EC2 configuration with `ec2` as `[provider.ec2]`
    /// and pack as allocator.
    fn ec2_config(ec2: &str) -> String {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let base = DEFAULT_CONFIG
            .replace("kind = \"static\"", "kind = \"ec2\"")
            .replace("[provider.static]\ncidrs = [\"10.88.0.0/24\"]", "")
            .replace("exclude = []", "");
        format!(
            "{base}\n[provider.ec2]\n{ec2}\n[allocator]\nplugin = \"pack\"\n\n[[plugins]]\nname = \"pack\"\nkind = \"allocator\"\npath = \"/usr/lib/wasmcni/pack.wasm\"\ndigest = \"{digest}\"\n[plugins.grants]\npool-view = {{}}\neni-ops = {{ subnets = [\"node\"], security_groups = [\"node\"] }}\n"
        )
    }

    #[test]
    fn the_ec2_provider_has_defaults_for_every_key() {
        let config = ClusterConfig::parse(&ec2_config(""), "t").unwrap();
        assert_eq!(config.provider.kind, ProviderKind::Ec2);
        let ec2 = config.ec2();
        assert_eq!(ec2, Ec2ProviderConfig::default());
        assert_eq!(
            (
                ec2.ip_cooldown_ms,
                ec2.add_wait_ms,
                ec2.api_burst,
                ec2.max_attempts
            ),
            (30_000, 10_000, 20, 8)
        );
        assert!(ec2.prefix_fallback && !ec2.snat.external);
        let tuned = ClusterConfig::parse(
            &ec2_config("ec2_endpoint = \"http://127.0.0.1:4566\"\nmax_pods = 110\n[provider.ec2.snat]\nexternal = true\nexclude_cidrs = [\"192.168.0.0/16\"]\nrandomize = \"hashrandom\"\nbackend = \"nftables\""),
            "t",
        )
        .unwrap();
        assert_eq!(tuned.ec2().max_pods, Some(110));
        assert_eq!(
            tuned.ec2().snat,
            SnatConfig {
                external: true,
                exclude_cidrs: vec!["192.168.0.0/16".parse::<Ipv4Net>().unwrap()],
                randomize: SnatRandomize::Hashrandom,
                connmark: None,
                backend: SnatBackend::Nftables,
            }
        );
    }

    #[test]
    fn ec2_settings_are_validated_key_by_key() {
        let cases = [
            (
                "max_attempts = 0",
                "`provider.ec2.max_attempts` = 0: must be between 1 and 20",
            ),
            (
                "api_rate_per_s = 0.0",
                "`provider.ec2.api_rate_per_s` = 0: must be between 0.1 and 1000",
            ),
            (
                "ec2_endpoint = \"ftp://x\"",
                "`provider.ec2.ec2_endpoint` = \"ftp://x\": must be an http:// or https:// URL",
            ),
            (
                "leaked_eni_min_age_s = 5",
                "`provider.ec2.leaked_eni_min_age_s` = 5: must be between 60 and 86400",
            ),
            (
                "add_wait_ms = 600000",
                "`provider.ec2.add_wait_ms` = 600000: must be at most 120000",
            ),
            (
                "[provider.ec2.snat]\nexclude_cidrs = [\"10.0.0.0/40\"]",
                "exclude_cidrs = [\"10.0.0.0/40\"]\n   |                 ^^^^^^^^^^^^^^^\n\"10.0.0.0/40\" is not an IPv4 CIDR",
            ),
            (
                "[provider.ec2.snat]\nconnmark = 3",
                "`provider.ec2.snat.connmark` = 0x3: must be a single bit",
            ),
            (
                "[provider.ec2.snat]\nrandomize = \"maybe\"",
                "randomize = \"maybe\"\n   |             ^^^^^^^\nunknown variant `maybe`, expected one of `prng`, `hashrandom`, `none`",
            ),
            (
                "[provider.ec2.snat]\nbackend = \"pf\"",
                "unknown variant `pf`, expected one of `auto`, `iptables`, `nftables`",
            ),
            ("warm_ips = 3", "unknown field `warm_ips`"),
        ];
        for (ec2, expected) in cases {
            let err = ClusterConfig::parse(&ec2_config(ec2), "t")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(expected),
                "{ec2}: expected {expected:?} in {err:?}"
            );
        }
        let no_allocator = ec2_config("").replace("[allocator]\nplugin = \"pack\"", "");
        let err = ClusterConfig::parse(&no_allocator, "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`allocator.plugin` = absent: the ec2 provider grows and shrinks the pool on an allocator plugin's plan"), "{err}");
        // IPv6 prefix mode: the host hands out /128s; an allocator plugin has nothing to do.
        let ipv6 = ec2_config("ip_family = \"ipv6\"");
        let err = ClusterConfig::parse(&ipv6, "t").unwrap_err().to_string();
        assert!(
            err.contains("`allocator.plugin` = \"pack\": with provider.ec2.ip_family = \"ipv6\" every pod gets a /128 of the node's /80"),
            "{err}"
        );
        let ipv6 = ipv6.replace("[allocator]\nplugin = \"pack\"", "");
        let small = ipv6.replace("mtu = 9001", "mtu = 1200");
        assert_ne!(small, ipv6, "the default configuration sets datapath.mtu");
        let err = ClusterConfig::parse(&small, "t").unwrap_err().to_string();
        assert!(err.contains("`datapath.mtu` = 1200: with provider.ec2.ip_family = \"ipv6\" it must be at least 1280"), "{err}");
        let config = ClusterConfig::parse(&ipv6, "t").unwrap();
        assert_eq!(config.ec2().ip_family, wasmcni_core::ipam::IpFamily::Ipv6);
        assert_eq!(
            ClusterConfig::parse(&ec2_config(""), "t")
                .unwrap()
                .ec2()
                .ip_family,
            wasmcni_core::ipam::IpFamily::Ipv4,
            "IPv4 unless asked"
        );
        let err = ClusterConfig::parse(&ec2_config("ip_family = \"dual\""), "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ip_family") && err.contains("ipv6"), "{err}");
        let both = ec2_config("").replace(
            "[provider.ec2]",
            "[provider.static]\ncidrs = [\"10.1.0.0/24\"]\n[provider.ec2]",
        );
        let err = ClusterConfig::parse(&both, "t").unwrap_err().to_string();
        assert!(
            err.contains("`provider.static` = a table: is for kind = \"static\""),
            "{err}"
        );
    }

    #[test]
    fn plugin_entries_are_validated_key_by_key() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let plugin = |extra: &str| {
            format!(
                "{DEFAULT_CONFIG}\n[allocator]\nplugin = \"pack\"\n\n[[plugins]]\nname = \"pack\"\nkind = \"allocator\"\npath = \"/usr/lib/wasmcni/pack.wasm\"\ndigest = \"{digest}\"\n{extra}\n[plugins.grants]\npool-view = {{}}\nlog = {{}}\neni-ops = {{ subnets = [\"node\", \"subnet-0123abcd\"], security_groups = [\"node\"], max_enis = 3 }}\n[plugins.config]\nWARM_IPS = 8\nMODE = \"dense\"\n"
            )
        };
        let config = ClusterConfig::parse(&plugin(""), "t").unwrap();
        let spec = config.allocator_spec().unwrap();
        assert_eq!(spec.grants.capabilities.len(), 3);
        assert_eq!(spec.grants.eni_ops.max_enis, Some(3));
        assert!(spec.grants.eni_ops.subnets.contains("subnet-0123abcd"));
        assert_eq!(spec.settings["WARM_IPS"], "8");
        assert_eq!(spec.limits, wasmcni_core::Limits::default());
        assert_eq!(
            spec.on_failure.of(wasmcni_core::Hook::Allocate),
            wasmcni_core::FailureMode::Closed
        );
        let open =
            ClusterConfig::parse(&plugin("on_failure = { allocate = \"open\" }"), "t").unwrap();
        assert_eq!(
            open.allocator_spec()
                .unwrap()
                .on_failure
                .of(wasmcni_core::Hook::Allocate),
            wasmcni_core::FailureMode::Open
        );
        let cases = [
            (plugin("").replace("log = {}", "netlnk = {}"), "unknown field `netlnk`, expected one of `pool-view`, `eni-ops`, `netlink`, `log`, `kv`, `clock`"),
            (plugin("").replace("log = {}", "netlink = {}"), "`plugins[0].grants.netlink` = {...}: the allocator world does not import netlink; a allocator may be granted pool-view, eni-ops, log, kv, clock"),
            (plugin("").replace("\"subnet-0123abcd\"", "\"subnet-x\""), "`plugins[0].grants.eni-ops.subnets[1]` = \"subnet-x\": must be \"node\" or a subnet id"),
            (plugin("").replace("max_enis = 3", "max_enis = 0"), "`plugins[0].grants.eni-ops.max_enis` = 0"),
            (plugin("").replace(&digest, "sha256:1234"), "`plugins[0].digest` = \"sha256:1234\": must be"),
            (plugin("").replace("/usr/lib/wasmcni/pack.wasm", "pack.wasm"), "`plugins[0].path` = \"pack.wasm\": must be an absolute path"),
            (plugin("").replace("plugin = \"pack\"", "plugin = \"packer\""), "`allocator.plugin` = \"packer\": no [[plugins]] entry"),
            (plugin("fuel = 10"), "`plugins[0].fuel` = 10"),
            (plugin("").replace("kind = \"allocator\"", "kind = \"tagger\""), "`plugins[0].grants.pool-view` = {...}: the tagger world does not import pool-view"),
            (plugin("").replace("kind = \"allocator\"", "kind = \"shaper\""), "`plugins[0].kind` = \"shaper\": must be \"allocator\", \"tagger\" or \"policy\""),
            (plugin("on_failure = { add = \"open\" }"), "`plugins[0].on_failure.add` = \"open\": a allocator has no hook \"add\"; its hooks are allocate"),
            (plugin("on_failure = { allocate = \"maybe\" }"), "`plugins[0].on_failure.allocate` = \"maybe\": must be \"closed\" or \"open\""),
            (plugin("tag_keys = [\"team\"]"), "`plugins[0].tag_keys` = [\"team\"]: only taggers set tags; this is a allocator"),
            (plugin("").replace("MODE = \"dense\"", "MODE = [1]"), "`plugins[0].config.MODE` = a array: settings are strings, numbers or booleans"),
            (plugin("").replace("[allocator]\nplugin = \"pack\"", "[policy]\nplugins = [\"pack\"]"), "`policy.plugins[0]` = \"pack\": is a allocator, not a policy"),
        ];
        for (text, expected) in cases {
            let err = ClusterConfig::parse(&text, "t").unwrap_err().to_string();
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
    }

    #[test]
    fn tagger_and_policy_scopes_are_validated() {
        let digest = format!("sha256:{}", "cd".repeat(32));
        let tagger = |keys: &str| {
            format!("{DEFAULT_CONFIG}\n[tagger]\nplugin = \"tags\"\n\n[[plugins]]\nname = \"tags\"\nkind = \"tagger\"\npath = \"/p/t.wasm\"\ndigest = \"{digest}\"\ntag_keys = [{keys}]\n")
        };
        let config = ClusterConfig::parse(&tagger("\"team\""), "t").unwrap();
        assert!(config.tagger_spec().unwrap().tag_keys.contains("team"));
        for (keys, expected) in [
            (
                "\"aws:owner\"",
                "`plugins[0].tag_keys[0]` = \"aws:owner\": is reserved",
            ),
            (
                "\"team\", \"cluster.k8s.amazonaws.com/name\"",
                "`plugins[0].tag_keys[1]` = \"cluster.k8s.amazonaws.com/name\": is reserved",
            ),
        ] {
            let err = ClusterConfig::parse(&tagger(keys), "t")
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
        let policy = |netlink: &str| {
            format!("{DEFAULT_CONFIG}\n[policy]\nplugins = [\"guard\"]\n\n[[plugins]]\nname = \"guard\"\nkind = \"policy\"\npath = \"/p/g.wasm\"\ndigest = \"{digest}\"\n[plugins.grants]\nnetlink = {netlink}\n")
        };
        let config = ClusterConfig::parse(
            &policy("{ mtu = [1280, 9001], routes = [\"10.0.0.0/8\"] }"),
            "t",
        )
        .unwrap();
        let spec = config.policy_specs()[0];
        assert_eq!(spec.grants.netlink.mtu, Some((1280, 9001)));
        assert_eq!(
            spec.on_failure.of(wasmcni_core::Hook::Del),
            wasmcni_core::FailureMode::Open
        );
        for (netlink, expected) in [
            (
                "{ mtu = [9001, 1280] }",
                "`plugins[0].grants.netlink.mtu` = [9001, 1280]: must be [min, max]",
            ),
            (
                "{ routes = [\"10.0.0.1/8\"] }",
                "host bits are set; did you mean 10.0.0.0/8?",
            ),
            (
                "{ routes = [\"everything\"] }",
                "`plugins[0].grants.netlink.routes[0]` = \"everything\": not an IPv4 CIDR",
            ),
        ] {
            let err = ClusterConfig::parse(&policy(netlink), "t")
                .unwrap_err()
                .to_string();
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
