//! `[[plugins]]`: each WebAssembly component, its grants with their scopes, its limits and
//! failure policy, resolved into the [`wasmcni_core::PluginSpec`]s the runtime loads.

use std::path::PathBuf;

use serde::Deserialize;

use super::*;

/// `[[plugins]]`: one WebAssembly component.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Unique name, referred to by `[allocator]`, `[tagger]` and `[policy]`.
    pub name: String,
    /// Plugin kind: `allocator`, `tagger` or `policy` (the WIT world it implements).
    pub kind: String,
    /// Absolute path of the component file (this or `oci`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `oci://registry/repository@sha256:<manifest digest>`: pulled into the node's cache
    /// when the cache lacks it (this or `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<String>,
    /// `sha256:<64 hex>` of the component: the daemon refuses any other content, from a file
    /// or a registry.
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
    /// Largest linear memory, in bytes (default 16 MiB; 32 MiB for a plugin granted `wasi`,
    /// whose component bundles an interpreter).
    #[serde(default)]
    pub memory_bytes: Option<usize>,
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
    /// `wasi = { clocks = bool, random = bool, read_dirs = [...] }` (`{}`: a WASI that holds
    /// nothing).
    pub wasi: Option<WasiScopeConfig>,
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

/// Scope of `wasi`: each key opens one thing; all closed by default.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WasiScopeConfig {
    /// The real clocks instead of deterministic ones.
    #[serde(default)]
    pub clocks: bool,
    /// The system's randomness instead of a fixed-seed stream.
    #[serde(default)]
    pub random: bool,
    /// Absolute host directories the plugin may read, each under its own path.
    #[serde(default)]
    pub read_dirs: Vec<String>,
}

fn default_plugin_fuel() -> u64 {
    wasmcni_core::Limits::default().fuel
}
fn default_plugin_host_calls() -> u32 {
    wasmcni_core::limits::DEFAULT_HOST_CALLS
}

impl ClusterConfig {
    /// Validates every `[[plugins]]` entry and the `[allocator]`, `[tagger]` and `[policy]`
    /// references, resolving them into what the runtime loads.
    pub(crate) fn resolve_plugins(
        &self,
        origin: &str,
    ) -> Result<Vec<wasmcni_core::PluginSpec>, ConfigError> {
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
            if !wasmcni_core::oci::is_sha256_digest(&plugin.digest) {
                return Err(invalid(
                    key("digest"),
                    quoted(&plugin.digest),
                    "must be \"sha256:\" followed by 64 lowercase hex digits (wasmcni-plugin-build prints it)".into(),
                ));
            }
            let (path, pulled_from) = match (&plugin.path, &plugin.oci) {
                (Some(path), None) if path.is_absolute() => (path.clone(), None),
                (Some(path), None) => {
                    return Err(invalid(
                        key("path"),
                        quoted(&path.display().to_string()),
                        "must be an absolute path".into(),
                    ))
                }
                (None, Some(oci)) => {
                    let reference = wasmcni_core::OciReference::parse(oci)
                        .map_err(|reason| invalid(key("oci"), quoted(oci), reason))?;
                    (
                        cached_component(&self.component_cache_dir(), &plugin.digest),
                        Some(reference),
                    )
                }
                (Some(_), Some(oci)) => {
                    return Err(invalid(
                        key("oci"),
                        quoted(oci),
                        "name the component by `path` or by `oci`, not both".into(),
                    ))
                }
                (None, None) => {
                    return Err(invalid(
                        key("path"),
                        "(missing)".into(),
                        "name the component: `path` (a file) or `oci` (oci://registry/repository@sha256:…)".into(),
                    ))
                }
            };
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
            let memory_bytes =
                plugin
                    .memory_bytes
                    .unwrap_or(if grants.has(wasmcni_core::Capability::Wasi) {
                        wasmcni_core::limits::INTERPRETER_MEMORY_BYTES
                    } else {
                        wasmcni_core::Limits::default().memory_bytes
                    });
            if !((1 << 20)..=wasmcni_core::MAX_PLUGIN_MEMORY).contains(&memory_bytes) {
                return Err(invalid(
                    key("memory_bytes"),
                    memory_bytes.to_string(),
                    format!(
                        "must be between 1 MiB and {} MiB",
                        wasmcni_core::MAX_PLUGIN_MEMORY >> 20
                    ),
                ));
            }
            let mut limits = wasmcni_core::Limits {
                fuel: plugin.fuel,
                memory_bytes,
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
                path,
                plugin.digest.clone(),
                grants,
            );
            spec.origin = pulled_from;
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
    pub(crate) fn resolve_grants(
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
            (Capability::Wasi, config.wasi.is_some()),
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
        if let Some(scope) = &config.wasi {
            use wasmcni_core::grants::wasi::{check_read_dir, MAX_READ_DIRS};
            let key = |field: &str| format!("plugins[{i}].grants.wasi.{field}");
            if scope.read_dirs.len() > MAX_READ_DIRS {
                return Err(invalid(
                    key("read_dirs"),
                    format!("{} directories", scope.read_dirs.len()),
                    format!("at most {MAX_READ_DIRS} directories may be granted"),
                ));
            }
            let mut read_dirs = Vec::new();
            for (n, dir) in scope.read_dirs.iter().enumerate() {
                let dir_key = key(&format!("read_dirs[{n}]"));
                let path = check_read_dir(dir)
                    .map_err(|reason| invalid(dir_key.clone(), format!("{dir:?}"), reason))?;
                if read_dirs.contains(&path) {
                    return Err(invalid(dir_key, format!("{dir:?}"), "granted twice".into()));
                }
                read_dirs.push(path);
            }
            grants.wasi = wasmcni_core::grants::WasiScope {
                clocks: scope.clocks,
                random: scope.random,
                read_dirs,
            };
        }
        Ok(grants)
    }
}
