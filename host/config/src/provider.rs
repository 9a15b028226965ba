//! `[provider]`: where pod addresses come from — fixed CIDRs (`[provider.static]`) or the
//! node's ENIs (`[provider.ec2]`, with VPC CNI's SNAT switches under `[provider.ec2.snat]`).

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;
use wasmcni_core::ipam::StaticPool;

use super::*;

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
    /// the allocator plugin), `ipv6` (IPv6 prefix mode: one /80 delegated to the primary
    /// ENI at start and never released; every pod gets a /128 of it), or `dual` (dual stack:
    /// both, an IPv4 address as with `ipv4` and a /128 as with `ipv6`).
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
        .enumerate()
        .map(|(i, cidr)| {
            cidr.parse().map_err(|_| {
                serde::de::Error::custom(format!(
                    "[{i}] = {cidr:?}: not an IPv4 CIDR (expected a.b.c.d/len)"
                ))
            })
        })
        .collect()
}

/// `provider.kind`: where pod addresses come from (`static`: the CIDRs of `[provider.static]`,
/// for nodes without EC2; `ec2`: secondary IPs and prefixes of the node's ENIs), the same kind a
/// plugin's `pool-view` names.
pub use wasmcni_core::pool_view::ProviderKind;

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

/// `[provider.static]`: fixed CIDRs for nodes without EC2: IPv4, IPv6, or both (dual stack).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticPoolConfig {
    /// CIDRs pod addresses are taken from. With CIDRs of both families, every pod gets one
    /// address of each.
    pub cidrs: Vec<String>,
    /// Addresses never handed out.
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl ClusterConfig {
    /// The pods' MTU on a node whose uplink has MTU `uplink` (`None`: no default route):
    /// `datapath.mtu` when set; otherwise the EC2 provider's [`crate::EC2_MTU`], and for the
    /// static provider the uplink's (within 576–65535), or [`crate::FALLBACK_MTU`] without
    /// one.
    pub fn pod_mtu(&self, uplink: Option<u32>) -> u32 {
        match (self.datapath.mtu, self.provider.kind) {
            (Some(mtu), _) => mtu,
            (None, ProviderKind::Ec2) => crate::EC2_MTU,
            (None, ProviderKind::Static) => {
                uplink.map_or(crate::FALLBACK_MTU, |mtu| mtu.clamp(576, 65_535))
            }
        }
    }

    /// The static provider's checks beyond the pool itself: IPv6 pods get their /128 from
    /// the host (no allocator plugin) and an MTU of at least 1280.
    pub(crate) fn validate_static(&self, origin: &str) -> Result<(), ConfigError> {
        let pool = self.static_pool(origin)?;
        if pool.ipv6.is_empty() {
            return Ok(());
        }
        // Dual stack: the allocator chooses the IPv4 address, the host the /128.
        if let Some(name) = self
            .allocator
            .plugin
            .as_ref()
            .filter(|_| pool.cidrs.is_empty())
        {
            return Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                key: "allocator.plugin".into(),
                value: format!("{name:?}"),
                reason: "with only IPv6 CIDRs in provider.static.cidrs every pod gets the next free /128, which the host hands out; the allocator interface speaks IPv4: remove [allocator] (or add IPv4 CIDRs for dual stack, where it chooses the IPv4 address)".into(),
            });
        }
        if let Some(mtu) = self.datapath.mtu.filter(|mtu| *mtu < IPV6_MIN_MTU) {
            return Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                key: "datapath.mtu".into(),
                value: mtu.to_string(),
                reason: format!("with IPv6 CIDRs in provider.static.cidrs it must be at least {IPV6_MIN_MTU} (IPv6's minimum)"),
            });
        }
        Ok(())
    }

    /// Whether [`ClusterConfig::pod_mtu`] needs the node's uplink MTU.
    pub fn pod_mtu_follows_uplink(&self) -> bool {
        self.datapath.mtu.is_none() && self.provider.kind == ProviderKind::Static
    }

    /// The EC2 provider's settings (defaults when `[provider.ec2]` is absent).
    pub fn ec2(&self) -> Ec2ProviderConfig {
        self.provider.ec2.clone().unwrap_or_default()
    }

    pub(crate) fn validate_ec2(&self, origin: &str) -> Result<(), ConfigError> {
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
        let family = ec2.ip_family;
        match (family, &self.allocator.plugin) {
            (wasmcni_core::ipam::IpFamily::Ipv4 | wasmcni_core::ipam::IpFamily::Dual, None) => {
                return Err(ConfigError::Invalid {
                    origin: origin.to_owned(),
                    key: "allocator.plugin".into(),
                    value: "absent".into(),
                    reason: "the ec2 provider grows and shrinks the pool on an allocator plugin's plan: name one (e.g. vpc-warm-pool or pack)".into(),
                });
            }
            _ if family.has_ipv6() && self.pod_mtu(None) < IPV6_MIN_MTU => {
                return Err(ConfigError::Invalid {
                    origin: origin.to_owned(),
                    key: "datapath.mtu".into(),
                    value: self.pod_mtu(None).to_string(),
                    reason: format!("with provider.ec2.ip_family = \"{family}\" it must be at least {IPV6_MIN_MTU} (IPv6's minimum)"),
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
                "give at least one CIDR, e.g. \"10.88.0.0/24\" (IPv4 pods) or \"fd00:88::/112\" (IPv6 pods)".into(),
            ));
        }
        let mut cidrs: Vec<Ipv4Net> = Vec::new();
        let mut ipv6: Vec<Ipv6Net> = Vec::new();
        for (i, text) in pool.cidrs.iter().enumerate() {
            let key = format!("provider.static.cidrs[{i}]");
            let net: IpNet = text.parse().map_err(|_| {
                invalid(
                    key.clone(),
                    text,
                    "not a CIDR (expected a.b.c.d/len or an IPv6 prefix such as fd00:88::/112)"
                        .into(),
                )
            })?;
            let widest = match net {
                IpNet::V4(_) => MIN_STATIC_PREFIX_LEN,
                IpNet::V6(_) => MIN_STATIC_PREFIX_LEN_V6,
            };
            if net.prefix_len() < widest {
                return Err(invalid(
                    key,
                    text,
                    format!(
                        "a node never needs more than a /{widest}; split it or give several CIDRs"
                    ),
                ));
            }
            if net.trunc() != net {
                return Err(invalid(
                    key,
                    text,
                    format!("host bits are set; did you mean {}?", net.trunc()),
                ));
            }
            let overlapping =
                |other: &IpNet| other.contains(&net.network()) || net.contains(&other.network());
            if let Some(other) = cidrs
                .iter()
                .map(|c| IpNet::V4(*c))
                .chain(ipv6.iter().map(|c| IpNet::V6(*c)))
                .find(overlapping)
            {
                return Err(invalid(key, text, format!("overlaps {other}")));
            }
            match net {
                IpNet::V4(net) => cidrs.push(net),
                // A pod gets any address of the prefix but its first (the subnet-router
                // anycast address).
                IpNet::V6(net) if net.prefix_len() == 128 => {
                    return Err(invalid(
                        key,
                        text,
                        "a /128 holds no pod address (the first address of a prefix is never handed out)".into(),
                    ))
                }
                IpNet::V6(net) => ipv6.push(net),
            }
        }
        let mut exclude = Vec::new();
        let mut exclude_v6 = Vec::new();
        for (i, text) in pool.exclude.iter().enumerate() {
            let key = format!("provider.static.exclude[{i}]");
            let ip: IpAddr = text
                .parse()
                .map_err(|_| invalid(key.clone(), text, "not an IP address".into()))?;
            let inside = match ip {
                IpAddr::V4(v4) => cidrs.iter().any(|c| c.contains(&v4)),
                IpAddr::V6(v6) => ipv6.iter().any(|c| c.contains(&v6)),
            };
            if !inside {
                return Err(invalid(
                    key,
                    text,
                    "is outside every CIDR in provider.static.cidrs".into(),
                ));
            }
            match ip {
                IpAddr::V4(v4) => exclude.push(v4),
                IpAddr::V6(v6) => exclude_v6.push(v6),
            }
        }
        Ok(StaticPool {
            cidrs,
            exclude,
            ipv6,
            exclude_v6,
        })
    }
}
