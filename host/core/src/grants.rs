//! What a plugin may do: its kind, the capabilities it is granted with their scopes, and what
//! happens when one of its hooks fails. Pure data and pure checks, table-tested without wasm.
//!
//! The checks here are the second lock (call time): every request a plugin makes through a
//! capability is answered by one of these functions before anything is queued.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::pool_view::PoolSnapshot;

pub mod wasi;
pub use wasi::WasiScope;

/// A capability a plugin may be granted: one WIT interface of `wasmcni:plugin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// `pool-view`: read the node's address pool, ENIs and candidate subnets.
    PoolView,
    /// `eni-ops`: request ENI changes (within subnets, security groups and an ENI count).
    EniOps,
    /// `netlink`: adjust the pod's own datapath (MTU within a range, routes within CIDRs).
    Netlink,
    /// `log`: write to the daemon's log.
    Log,
    /// `kv`: plugin-private persistent state, up to a byte quota.
    Kv,
    /// `clock`: read wall-clock time.
    Clock,
    /// `wasi`: the WASI 0.2 interfaces a bundled interpreter imports (Python, JavaScript),
    /// holding nothing unless its scope opens clocks, randomness or read-only directories
    /// ([`wasi`]).
    Wasi,
}

impl Capability {
    /// Every capability this build offers.
    pub const ALL: [Capability; 7] = [
        Capability::PoolView,
        Capability::EniOps,
        Capability::Netlink,
        Capability::Log,
        Capability::Kv,
        Capability::Clock,
        Capability::Wasi,
    ];

    /// The WIT interface name.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::PoolView => "pool-view",
            Capability::EniOps => "eni-ops",
            Capability::Netlink => "netlink",
            Capability::Log => "log",
            Capability::Kv => "kv",
            Capability::Clock => "clock",
            Capability::Wasi => "wasi",
        }
    }

    /// Parses a grant name as written in the cluster configuration.
    pub fn parse(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an import of a component is, as far as grants go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Import {
    /// `types` or `config`: always available, grants nothing.
    Free,
    /// A capability that must be granted.
    Needs(Capability),
    /// Not something wasmcni offers at all (another package, another version, a WASI
    /// interface outside [`wasi::INTERFACES`]).
    Foreign,
}

impl Import {
    /// Classifies a component import name such as `wasmcni:plugin/log@0.3.0`.
    pub fn classify(import: &str) -> Import {
        if wasi::interface_of(import).is_some() {
            return Import::Needs(Capability::Wasi);
        }
        match package_item(import) {
            Some((interface, version)) if compatible(version) => match interface {
                "types" | "config" => Import::Free,
                other => Capability::parse(other).map_or(Import::Foreign, Import::Needs),
            },
            _ => Import::Foreign,
        }
    }
}

/// The interface and version of a `wasmcni:plugin/<interface>@<version>` name.
fn package_item(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("wasmcni:plugin/")?;
    Some(rest.split_once('@').unwrap_or((rest, "")))
}

/// The version of the `wasmcni:plugin` package this build implements.
pub const WIT_VERSION: &str = "0.3.0";

/// The `x.y.z` numbers of a version, if it is one: build metadata (`+…`) is ignored, as semver
/// does; a pre-release (`-rc1`) is none.
pub fn version_numbers(version: &str) -> Option<[u64; 3]> {
    let version = version
        .split_once('+')
        .map_or(version, |(numbers, _)| numbers);
    let mut parts = version.split('.').map(|part| {
        (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse().ok())
            .flatten()
    });
    let numbers = [parts.next()??, parts.next()??, parts.next()??];
    parts.next().is_none().then_some(numbers)
}

/// Whether a component built against `version` of the package may load here: any 0.3.x (what
/// it imports must then exist in this build's version, which linking checks).
pub fn compatible(version: &str) -> bool {
    let ours = version_numbers(WIT_VERSION).expect("WIT_VERSION is x.y.z");
    version_numbers(version).is_some_and(|theirs| theirs[..2] == ours[..2])
}

/// Whether `version` is a compatible one newer than this build's: the component may use
/// additions this daemon does not have.
pub fn newer(version: &str) -> bool {
    let ours = version_numbers(WIT_VERSION).expect("WIT_VERSION is x.y.z");
    compatible(version) && version_numbers(version).is_some_and(|theirs| theirs > ours)
}

/// The version of the `wasmcni:plugin` package an import or export names, when a component
/// built against it cannot load here (0.2, or a later major or minor).
pub fn incompatible_package_version(name: &str) -> Option<&str> {
    package_item(name)
        .map(|(_, version)| version)
        .filter(|version| !compatible(version))
}

/// Why a component whose imports and exports are `names` cannot load here, when the package
/// version they name says so: built against 0.2, or another minor or major.
pub fn version_refusal<'a>(names: impl IntoIterator<Item = &'a String>) -> Option<String> {
    let version = names
        .into_iter()
        .find_map(|name| incompatible_package_version(name))?;
    Some(format!(
        "built against wasmcni:plugin@{version}, but this daemon implements \
         wasmcni:plugin@{WIT_VERSION} (it loads components built against any 0.3.x): rebuild it \
         with this release's SDK"
    ))
}

/// Why a component built against the newer `version` of 0.3 did not link here: it uses
/// something this version lacks (`missing`, the linker's words).
pub fn newer_link_refusal(version: &str, missing: &str) -> String {
    format!(
        "linking: built against wasmcni:plugin@{version}, newer than this daemon's {WIT_VERSION}, \
         and it uses something {WIT_VERSION} does not have: {missing}"
    )
}

/// Why a component built against the newer `version` of 0.3 cannot load here when it imports
/// an interface of that version this build does not know: no grant can give it.
pub fn unknown_newer_import(imports: &[String], version: &str) -> Option<String> {
    let unknown = imports.iter().find(|import| {
        package_version(import).is_some_and(compatible)
            && Import::classify(import) == Import::Foreign
    })?;
    Some(format!(
        "built against wasmcni:plugin@{version}, newer than this daemon's {WIT_VERSION}, and it \
         imports {unknown}, which {WIT_VERSION} does not have"
    ))
}

/// The newest 0.3 version newer than this build's that any of `names` (imports and exports)
/// is built against.
pub fn newest_newer<'a>(names: impl IntoIterator<Item = &'a String>) -> Option<String> {
    names
        .into_iter()
        .filter_map(|name| package_version(name))
        .filter(|version| newer(version))
        .max_by_key(|version| version_numbers(version))
        .map(str::to_owned)
}

/// The version of the `wasmcni:plugin` package an import or export names.
pub fn package_version(name: &str) -> Option<&str> {
    package_item(name).map(|(_, version)| version)
}

/// The plugin kind whose interface an export name is (`wasmcni:plugin/allocator@0.3.x`).
pub fn exported_kind(export: &str) -> Option<PluginKind> {
    let (interface, version) = package_item(export)?;
    compatible(version)
        .then(|| {
            PluginKind::ALL
                .into_iter()
                .find(|k| k.as_str() == interface)
        })
        .flatten()
}

/// The kind of a plugin: which world it implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    /// Chooses pod addresses and plans the pool.
    Allocator,
    /// Tags new ENIs.
    Tagger,
    /// Allows or denies attachments.
    Policy,
}

impl PluginKind {
    /// Every kind.
    pub const ALL: [PluginKind; 3] = [
        PluginKind::Allocator,
        PluginKind::Tagger,
        PluginKind::Policy,
    ];

    /// The name in the configuration and the WIT world.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Allocator => "allocator",
            PluginKind::Tagger => "tagger",
            PluginKind::Policy => "policy",
        }
    }

    /// Parses a kind as written in the configuration.
    pub fn parse(name: &str) -> Option<PluginKind> {
        PluginKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The capabilities the kind's world imports (and `wasi`, which any kind's component may
    /// import beside its world): granting anything else is a mistake.
    pub fn offered(self) -> &'static [Capability] {
        match self {
            PluginKind::Allocator => &[
                Capability::PoolView,
                Capability::EniOps,
                Capability::Log,
                Capability::Kv,
                Capability::Clock,
                Capability::Wasi,
            ],
            PluginKind::Tagger => &[Capability::Log, Capability::Clock, Capability::Wasi],
            PluginKind::Policy => &[
                Capability::Netlink,
                Capability::Log,
                Capability::Kv,
                Capability::Clock,
                Capability::Wasi,
            ],
        }
    }

    /// The hooks (exports) that have a failure policy, with its default.
    pub fn hooks(self) -> &'static [(Hook, FailureMode)] {
        match self {
            PluginKind::Allocator => &[(Hook::Allocate, FailureMode::Closed)],
            PluginKind::Tagger => &[(Hook::Tags, FailureMode::Closed)],
            PluginKind::Policy => &[
                (Hook::Add, FailureMode::Closed),
                (Hook::Del, FailureMode::Open),
                (Hook::Check, FailureMode::Closed),
            ],
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A hook whose failure (trap, exhausted fuel or memory, refused answer) has a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// Allocator `allocate` (closed: the ADD fails; open: the host picks the lowest free address).
    Allocate,
    /// Tagger `tags` (closed: no ENI is created; open: the ENI gets the host's own tags only).
    Tags,
    /// Policy on ADD (closed: the ADD is denied; open: allowed).
    Add,
    /// Policy on DEL (the cleanup happens either way; closed: the DEL then reports the failure).
    Del,
    /// Policy on CHECK (closed: the CHECK fails; open: it passes).
    Check,
}

impl Hook {
    /// The name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Allocate => "allocate",
            Hook::Tags => "tags",
            Hook::Add => "add",
            Hook::Del => "del",
            Hook::Check => "check",
        }
    }
}

/// What a hook's failure does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureMode {
    /// The operation fails (the safe default where a wrong answer could do harm).
    Closed,
    /// The operation goes on as if the plugin had not been asked.
    Open,
}

impl FailureMode {
    /// Parses `closed` or `open`.
    pub fn parse(text: &str) -> Option<FailureMode> {
        match text {
            "closed" => Some(FailureMode::Closed),
            "open" => Some(FailureMode::Open),
            _ => None,
        }
    }
}

/// `eni-ops` scope: where an allocator may create ENIs and how many the node may have.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EniScope {
    /// Subnet ids new ENIs may be created in; `node` is the primary ENI's subnet.
    pub subnets: BTreeSet<String>,
    /// Security groups new ENIs may carry; `node` is the primary ENI's groups.
    pub security_groups: BTreeSet<String>,
    /// ENIs the node may have in all, the primary included (`None`: the instance's limit).
    pub max_enis: Option<u32>,
}

/// `netlink` scope: how far a policy hook may adjust the pod's datapath.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetlinkScope {
    /// Inclusive MTU range `set-mtu` may set (`None`: `set-mtu` is refused).
    pub mtu: Option<(u32, u32)>,
    /// Networks `add-route` destinations must lie within.
    pub routes: Vec<Ipv4Net>,
}

/// `kv` scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct KvScope {
    /// Bytes of keys and values the plugin may keep in all.
    pub max_bytes: usize,
}

impl Default for KvScope {
    fn default() -> Self {
        KvScope {
            max_bytes: 64 << 10,
        }
    }
}

/// Everything a plugin is granted, with scopes. A capability absent here is not linked.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Grants {
    /// Granted capabilities.
    pub capabilities: BTreeSet<Capability>,
    /// Scope of `eni-ops`, when granted.
    pub eni_ops: EniScope,
    /// Scope of `netlink`, when granted.
    pub netlink: NetlinkScope,
    /// Scope of `kv`, when granted.
    pub kv: KvScope,
    /// Scope of `wasi`, when granted. Left out of the serialized form while closed, so a
    /// reviewer's statement of a plugin without it is what it was before `wasi` existed (its
    /// approvals still match) and one that opens anything differs.
    #[serde(skip_serializing_if = "WasiScope::is_closed")]
    pub wasi: WasiScope,
}

impl Grants {
    /// Grants of just these capabilities, with default (narrowest) scopes.
    pub fn of(capabilities: &[Capability]) -> Grants {
        Grants {
            capabilities: capabilities.iter().copied().collect(),
            ..Grants::default()
        }
    }

    /// Whether `capability` is granted.
    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }
}

/// Tag keys the daemon never lets a plugin write: AWS's own (`aws:`) and the ownership tags
/// the daemon writes itself (anything containing `k8s.amazonaws.com`).
pub fn is_reserved_tag_key(key: &str) -> bool {
    key.to_ascii_lowercase().starts_with("aws:") || key.contains("k8s.amazonaws.com")
}

/// Most tags an ENI may carry (EC2's limit), the daemon's own included.
pub const MAX_TAGS: usize = 50;

/// Checks a tagger's answer: every key allowed by the scope and none reserved, EC2's length
/// limits, no duplicates, and room left for the daemon's `own` tags. Refuses the whole answer.
pub fn check_tags(
    tags: &[(String, String)],
    tag_keys: &BTreeSet<String>,
    own: usize,
) -> Result<(), String> {
    if tags.len() + own > MAX_TAGS {
        return Err(format!(
            "{} tags plus the daemon's {own} exceed EC2's limit of {MAX_TAGS}",
            tags.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for (key, value) in tags {
        if is_reserved_tag_key(key) {
            return Err(format!(
                "tag key {key:?} is reserved (aws:* and *k8s.amazonaws.com* belong to AWS and to wasmcni)"
            ));
        }
        if !tag_keys.contains(key) {
            return Err(format!(
                "tag key {key:?} is outside the plugin's tag_keys scope [{}]",
                tag_keys.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
            return Err(format!(
                "tag {key:?}: keys must be 1 to 128 characters and values at most 256"
            ));
        }
        if !seen.insert(key) {
            return Err(format!("tag key {key:?} appears twice"));
        }
    }
    Ok(())
}

/// One ENI change an allocator asked for, checked and queued for the daemon to carry out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum EniRequest {
    /// Create and attach an ENI.
    CreateEni {
        /// Subnet id (resolved: never `node`).
        subnet_id: String,
        /// Security group ids (resolved).
        security_groups: Vec<String>,
        /// Secondary IPv4 addresses at creation.
        secondary_ips: u32,
        /// /28 prefixes at creation.
        prefixes: u32,
    },
    /// Assign more secondary addresses.
    AssignIps {
        /// The ENI.
        eni_id: String,
        /// How many.
        count: u32,
    },
    /// Delegate more /28 prefixes.
    AssignPrefixes {
        /// The ENI.
        eni_id: String,
        /// How many.
        count: u32,
    },
    /// Give back free secondary addresses.
    ReleaseIps {
        /// The ENI.
        eni_id: String,
        /// The addresses.
        addresses: Vec<Ipv4Addr>,
    },
    /// Give back empty prefixes.
    ReleasePrefixes {
        /// The ENI.
        eni_id: String,
        /// The prefixes.
        prefixes: Vec<Ipv4Net>,
    },
    /// Detach and delete an unused secondary ENI.
    DeleteEni {
        /// The ENI.
        eni_id: String,
    },
}

/// The `eni-ops` function an [`EniRequest`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestKind {
    /// `create-eni`.
    CreateEni,
    /// `assign-ips`.
    AssignIps,
    /// `assign-prefixes`.
    AssignPrefixes,
    /// `release-ips`.
    ReleaseIps,
    /// `release-prefixes`.
    ReleasePrefixes,
    /// `delete-eni`.
    DeleteEni,
}

impl RequestKind {
    /// The function's WIT name.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::CreateEni => "create-eni",
            RequestKind::AssignIps => "assign-ips",
            RequestKind::AssignPrefixes => "assign-prefixes",
            RequestKind::ReleaseIps => "release-ips",
            RequestKind::ReleasePrefixes => "release-prefixes",
            RequestKind::DeleteEni => "delete-eni",
        }
    }
}

impl EniRequest {
    /// Which `eni-ops` function it is.
    pub fn kind(&self) -> RequestKind {
        match self {
            EniRequest::CreateEni { .. } => RequestKind::CreateEni,
            EniRequest::AssignIps { .. } => RequestKind::AssignIps,
            EniRequest::AssignPrefixes { .. } => RequestKind::AssignPrefixes,
            EniRequest::ReleaseIps { .. } => RequestKind::ReleaseIps,
            EniRequest::ReleasePrefixes { .. } => RequestKind::ReleasePrefixes,
            EniRequest::DeleteEni { .. } => RequestKind::DeleteEni,
        }
    }

    /// The ENI it is for (none for a new ENI).
    pub fn eni_id(&self) -> Option<&str> {
        match self {
            EniRequest::CreateEni { .. } => None,
            EniRequest::AssignIps { eni_id, .. }
            | EniRequest::AssignPrefixes { eni_id, .. }
            | EniRequest::ReleaseIps { eni_id, .. }
            | EniRequest::ReleasePrefixes { eni_id, .. }
            | EniRequest::DeleteEni { eni_id } => Some(eni_id),
        }
    }

    /// The subnet of a new ENI.
    pub fn subnet_id(&self) -> Option<&str> {
        match self {
            EniRequest::CreateEni { subnet_id, .. } => Some(subnet_id),
            _ => None,
        }
    }
}

/// Checks `eni-ops` requests of one call against the scope, the instance's limits and the pool,
/// counting what was already queued in the same call.
pub struct EniChecker<'a> {
    scope: &'a EniScope,
    pool: &'a PoolSnapshot,
    queued: &'a [EniRequest],
}

impl<'a> EniChecker<'a> {
    /// A checker for one request, given what the call queued before it.
    pub fn new(scope: &'a EniScope, pool: &'a PoolSnapshot, queued: &'a [EniRequest]) -> Self {
        EniChecker {
            scope,
            pool,
            queued,
        }
    }

    fn ec2(&self) -> Result<(), String> {
        if self.pool.node.provider != crate::pool_view::ProviderKind::Ec2 {
            return Err(format!(
                "the {} provider has no ENIs; eni-ops requests need the EC2 provider",
                self.pool.node.provider
            ));
        }
        Ok(())
    }

    fn primary(&self) -> Option<&crate::pool_view::EniInfo> {
        self.pool.enis.iter().find(|e| e.primary)
    }

    /// Resolves a requested subnet against the scope (`node` → the primary ENI's subnet).
    fn resolve_subnet(&self, subnet: &str) -> Result<String, String> {
        let node_subnet = self.primary().map(|e| e.subnet_id.as_str());
        let resolved = if subnet == "node" {
            node_subnet.ok_or("the node has no primary ENI")?
        } else {
            subnet
        };
        let allowed = self.scope.subnets.contains(resolved)
            || (self.scope.subnets.contains("node") && node_subnet == Some(resolved));
        if !allowed {
            return Err(format!(
                "subnet {subnet} is outside the plugin's eni-ops grant (subnets: [{}])",
                join(&self.scope.subnets)
            ));
        }
        let known =
            node_subnet == Some(resolved) || self.pool.subnets.iter().any(|s| s.id == resolved);
        if !known {
            return Err(format!(
                "subnet {resolved} is not a subnet of this node's VPC and availability zone"
            ));
        }
        Ok(resolved.to_owned())
    }

    fn resolve_groups(&self, groups: &[String]) -> Result<Vec<String>, String> {
        if groups.is_empty() || groups.len() > 5 {
            return Err(format!(
                "an ENI needs 1 to 5 security groups, not {}",
                groups.len()
            ));
        }
        let node_groups: Vec<String> = self
            .primary()
            .map(|e| e.security_groups.clone())
            .unwrap_or_default();
        let mut resolved = Vec::new();
        for group in groups {
            if group == "node" {
                if !self.scope.security_groups.contains("node") {
                    return Err(
                        "security group `node` is outside the plugin's eni-ops grant".to_owned(),
                    );
                }
                resolved.extend(node_groups.iter().cloned());
            } else if self.scope.security_groups.contains(group)
                || (self.scope.security_groups.contains("node") && node_groups.contains(group))
            {
                resolved.push(group.clone());
            } else {
                return Err(format!(
                    "security group {group} is outside the plugin's eni-ops grant (security_groups: [{}])",
                    join(&self.scope.security_groups)
                ));
            }
        }
        resolved.sort();
        resolved.dedup();
        // EC2 gives an ENI created without groups the VPC's default group, which no grant names.
        if resolved.is_empty() {
            return Err(
                "security group `node` names no group: the node's primary ENI has none in the pool view; name the groups"
                    .to_owned(),
            );
        }
        // `node` stands for several: the limit holds for what EC2 would be sent.
        if resolved.len() > 5 {
            return Err(format!(
                "an ENI needs 1 to 5 security groups, and these resolve to {} ({})",
                resolved.len(),
                resolved.join(", ")
            ));
        }
        Ok(resolved)
    }

    fn max_enis(&self) -> u32 {
        let limit = self.pool.node.limits.max_enis;
        self.scope.max_enis.map_or(limit, |m| m.min(limit))
    }

    fn eni(&self, eni_id: &str) -> Result<&crate::pool_view::EniInfo, String> {
        self.pool
            .enis
            .iter()
            .find(|e| e.id == eni_id)
            .ok_or_else(|| format!("ENI {eni_id} is not an ENI of this node the daemon manages (trunk, branch, EFA and no_manage ENIs never are)"))
    }

    /// An ENI a request may change: one the daemon manages, that it owns (the primary ENI or
    /// one created for this instance and cluster), in a subnet of the grant.
    fn changeable(&self, eni_id: &str) -> Result<&crate::pool_view::EniInfo, String> {
        let eni = self.eni(eni_id)?;
        if !eni.owned {
            return Err(format!(
                "ENI {eni_id} was not created by wasmcni for this node and cluster (no ownership tags); the daemon never changes it"
            ));
        }
        let node_subnet = self.primary().map(|e| e.subnet_id.as_str());
        let in_scope = self.scope.subnets.contains(&eni.subnet_id)
            || (self.scope.subnets.contains("node") && node_subnet == Some(eni.subnet_id.as_str()));
        if !in_scope {
            return Err(format!(
                "ENI {eni_id} is in subnet {}, outside the plugin's eni-ops grant (subnets: [{}])",
                eni.subnet_id,
                join(&self.scope.subnets)
            ));
        }
        Ok(eni)
    }

    /// Address slots (primary, secondary IPs, prefixes) the ENI uses, queued ones included.
    fn slots(&self, eni_id: &str) -> u64 {
        let held = self
            .pool
            .inventory
            .blocks
            .iter()
            .filter(|b| b.eni_id.as_deref() == Some(eni_id))
            .count() as u64;
        let queued: u64 = self
            .queued
            .iter()
            .map(|r| match r {
                EniRequest::AssignIps { eni_id: e, count }
                | EniRequest::AssignPrefixes { eni_id: e, count }
                    if e == eni_id =>
                {
                    u64::from(*count)
                }
                _ => 0,
            })
            .sum();
        1 + held + queued
    }

    fn room(&self, eni_id: &str, count: u32) -> Result<(), String> {
        let limit = u64::from(self.pool.node.limits.ipv4_per_eni);
        let used = self.slots(eni_id);
        // In u64: no count a plugin can pass wraps the sum.
        if count == 0 || used + u64::from(count) > limit {
            return Err(format!(
                "ENI {eni_id} has {used} of {limit} address slots in use; {count} more do not fit"
            ));
        }
        Ok(())
    }

    fn held_by_pod(&self, net: Ipv4Net) -> Option<Ipv4Addr> {
        self.pool.in_use.iter().copied().find(|ip| net.contains(ip))
    }

    fn queued_release_of(&self, eni_id: &str) -> bool {
        self.queued
            .iter()
            .any(|r| matches!(r, EniRequest::DeleteEni { eni_id: e } if e == eni_id))
    }

    /// Whether `net` is already queued for release in this call.
    fn queued_for_release(&self, net: Ipv4Net) -> bool {
        self.queued.iter().any(|r| match r {
            EniRequest::ReleaseIps { addresses, .. } => {
                addresses.iter().any(|ip| Ipv4Net::from(*ip) == net)
            }
            EniRequest::ReleasePrefixes { prefixes, .. } => prefixes.contains(&net),
            _ => false,
        })
    }

    /// `create-eni`.
    pub fn create(
        &self,
        subnet: &str,
        groups: &[String],
        secondary_ips: u32,
        prefixes: u32,
    ) -> Result<EniRequest, String> {
        self.ec2()?;
        let subnet_id = self.resolve_subnet(subnet)?;
        let security_groups = self.resolve_groups(groups)?;
        let creating = self
            .queued
            .iter()
            .filter(|r| matches!(r, EniRequest::CreateEni { .. }))
            .count() as u64;
        let deleting = self
            .queued
            .iter()
            .filter(|r| matches!(r, EniRequest::DeleteEni { .. }))
            .count() as u64;
        let after =
            (self.pool.enis.len() as u64 + creating + 1).saturating_sub(deleting.min(creating + 1));
        if after > u64::from(self.max_enis()) {
            return Err(format!(
                "the node would have {after} ENIs; the limit is {} ({})",
                self.max_enis(),
                if self
                    .scope
                    .max_enis
                    .is_some_and(|m| m < self.pool.node.limits.max_enis)
                {
                    "the plugin's eni-ops grant"
                } else {
                    "the instance type"
                }
            ));
        }
        if secondary_ips > 0 && prefixes > 0 {
            return Err("ask for secondary IPs or prefixes at creation, not both".to_owned());
        }
        if prefixes > 0 && !self.pool.node.limits.prefix_delegation {
            return Err(format!(
                "instance type {} cannot take /28 prefixes (not Nitro)",
                self.pool.node.instance_type
            ));
        }
        let limit = u64::from(self.pool.node.limits.ipv4_per_eni);
        if 1 + u64::from(secondary_ips) + u64::from(prefixes) > limit {
            return Err(format!(
                "a new ENI holds at most {} secondary addresses or prefixes on {}",
                limit.saturating_sub(1),
                self.pool.node.instance_type
            ));
        }
        Ok(EniRequest::CreateEni {
            subnet_id,
            security_groups,
            secondary_ips,
            prefixes,
        })
    }

    /// `assign-ips`.
    pub fn assign_ips(&self, eni_id: &str, count: u32) -> Result<EniRequest, String> {
        self.ec2()?;
        self.changeable(eni_id)?;
        self.not_being_deleted(eni_id)?;
        self.room(eni_id, count)?;
        Ok(EniRequest::AssignIps {
            eni_id: eni_id.to_owned(),
            count,
        })
    }

    /// `assign-prefixes`.
    pub fn assign_prefixes(&self, eni_id: &str, count: u32) -> Result<EniRequest, String> {
        self.ec2()?;
        self.changeable(eni_id)?;
        self.not_being_deleted(eni_id)?;
        if !self.pool.node.limits.prefix_delegation {
            return Err(format!(
                "instance type {} cannot take /28 prefixes (not Nitro)",
                self.pool.node.instance_type
            ));
        }
        self.room(eni_id, count)?;
        Ok(EniRequest::AssignPrefixes {
            eni_id: eni_id.to_owned(),
            count,
        })
    }

    fn not_being_deleted(&self, eni_id: &str) -> Result<(), String> {
        if self.queued_release_of(eni_id) {
            return Err(format!(
                "ENI {eni_id} is already queued for deletion in this call"
            ));
        }
        Ok(())
    }

    fn released_block(
        &self,
        eni_id: &str,
        net: Ipv4Net,
        kind: crate::ipam::BlockKind,
    ) -> Result<(), String> {
        let ours = self
            .pool
            .inventory
            .blocks
            .iter()
            .any(|b| b.cidr == net && b.kind == kind && b.eni_id.as_deref() == Some(eni_id));
        if !ours {
            return Err(format!("{net} is not a {kind} of ENI {eni_id}"));
        }
        if let Some(ip) = self.held_by_pod(net) {
            return Err(format!(
                "{ip} in {net} is held by a pod; it cannot be released"
            ));
        }
        if self.queued_for_release(net) {
            return Err(format!("{net} is already queued for release in this call"));
        }
        Ok(())
    }

    /// Checks a release list: not empty, no entry twice, each a free block of the ENI.
    fn release_list(
        &self,
        eni_id: &str,
        nets: &[Ipv4Net],
        kind: crate::ipam::BlockKind,
    ) -> Result<(), String> {
        self.ec2()?;
        self.changeable(eni_id)?;
        self.not_being_deleted(eni_id)?;
        if nets.is_empty() {
            return Err("nothing to release: the list is empty".to_owned());
        }
        let mut seen = BTreeSet::new();
        for net in nets {
            if !seen.insert(*net) {
                return Err(format!("{net} is listed twice"));
            }
            self.released_block(eni_id, *net, kind)?;
        }
        Ok(())
    }

    /// `release-ips`.
    pub fn release_ips(&self, eni_id: &str, addresses: &[Ipv4Addr]) -> Result<EniRequest, String> {
        let nets: Vec<Ipv4Net> = addresses.iter().map(|ip| Ipv4Net::from(*ip)).collect();
        self.release_list(eni_id, &nets, crate::ipam::BlockKind::SecondaryIp)?;
        Ok(EniRequest::ReleaseIps {
            eni_id: eni_id.to_owned(),
            addresses: addresses.to_vec(),
        })
    }

    /// `release-prefixes`.
    pub fn release_prefixes(
        &self,
        eni_id: &str,
        prefixes: &[Ipv4Net],
    ) -> Result<EniRequest, String> {
        self.release_list(eni_id, prefixes, crate::ipam::BlockKind::Prefix)?;
        Ok(EniRequest::ReleasePrefixes {
            eni_id: eni_id.to_owned(),
            prefixes: prefixes.to_vec(),
        })
    }

    /// `delete-eni`.
    pub fn delete(&self, eni_id: &str) -> Result<EniRequest, String> {
        self.ec2()?;
        let eni = self.eni(eni_id)?;
        if eni.primary {
            return Err(format!("ENI {eni_id} is the node's primary ENI"));
        }
        self.changeable(eni_id)?;
        if self.queued_release_of(eni_id) {
            return Err(format!("ENI {eni_id} is already being deleted"));
        }
        if self.queued.iter().any(|r| r.eni_id() == Some(eni_id)) {
            return Err(format!(
                "ENI {eni_id} has other requests queued in this call; delete it in a later plan"
            ));
        }
        let blocks = self
            .pool
            .inventory
            .blocks
            .iter()
            .filter(|b| b.eni_id.as_deref() == Some(eni_id));
        for block in blocks {
            if let Some(ip) = self.held_by_pod(block.cidr) {
                return Err(format!("ENI {eni_id} still carries pod address {ip}"));
            }
            if let Some(ip) = self.pool.cooling.iter().find(|ip| block.cidr.contains(*ip)) {
                return Err(format!("ENI {eni_id} has address {ip} cooling down"));
            }
        }
        Ok(EniRequest::DeleteEni {
            eni_id: eni_id.to_owned(),
        })
    }
}

/// A datapath adjustment a policy hook asked for, applied inside the pod's netns after an ADD
/// is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum NetlinkRequest {
    /// Set the pod interface's MTU.
    SetMtu {
        /// The MTU.
        mtu: u32,
    },
    /// Add a route via the pod's gateway.
    AddRoute {
        /// Its destination.
        destination: Ipv4Net,
    },
}

impl NetlinkScope {
    /// Checks a `set-mtu` request.
    pub fn check_mtu(&self, mtu: u32) -> Result<NetlinkRequest, String> {
        match self.mtu {
            Some((low, high)) if (low..=high).contains(&mtu) => Ok(NetlinkRequest::SetMtu { mtu }),
            Some((low, high)) => Err(format!(
                "MTU {mtu} is outside the plugin's netlink grant ({low} to {high})"
            )),
            None => Err("the plugin's netlink grant has no mtu range".to_owned()),
        }
    }

    /// Checks an `add-route` request.
    pub fn check_route(&self, destination: Ipv4Net) -> Result<NetlinkRequest, String> {
        if destination.trunc() != destination {
            return Err(format!(
                "{destination} has host bits set; did you mean {}?",
                destination.trunc()
            ));
        }
        if self
            .routes
            .iter()
            .any(|allowed| allowed.contains(&destination))
        {
            Ok(NetlinkRequest::AddRoute { destination })
        } else {
            Err(format!(
                "route to {destination} is outside the plugin's netlink grant (routes: [{}])",
                self.routes
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }
}

/// The failure policy of each hook of a plugin, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailurePolicy(pub BTreeMap<Hook, FailureMode>);

impl FailurePolicy {
    /// The kind's defaults.
    pub fn defaults(kind: PluginKind) -> FailurePolicy {
        FailurePolicy(kind.hooks().iter().copied().collect())
    }

    /// The mode of `hook` (closed for a hook the kind does not have).
    pub fn of(&self, hook: Hook) -> FailureMode {
        self.0.get(&hook).copied().unwrap_or(FailureMode::Closed)
    }
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests;
