//! `wasmcni-host audit`: what a security reviewer reads before a configuration ships — for
//! every plugin its digest (verified against the file), what the component really imports and
//! exports, what it is granted, what is under-granted (the daemon would refuse it) or
//! over-granted (granted but never used), its limits, and the failure policy.

use serde::Serialize;

use wasmcni_config::ClusterConfig;
use wasmcni_runtime::{Inspection, PluginError, PluginRuntime};

/// The audit of one cluster configuration.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// Which allocator chooses addresses: a plugin name, or `built-in`.
    pub allocator: String,
    /// Which plugin tags new ENIs, if any.
    pub tagger: Option<String>,
    /// Policy hooks, in the order they are asked.
    pub policies: Vec<String>,
    /// What the failure modes mean.
    pub failure_modes: String,
    /// Every configured plugin.
    pub plugins: Vec<Inspection>,
}

impl AuditReport {
    /// Inspects every plugin of `config` (compiling each component, never running it).
    pub fn of(config: &ClusterConfig) -> Result<AuditReport, PluginError> {
        let runtime = PluginRuntime::new()?;
        Ok(AuditReport {
            allocator: config.allocator.plugin.clone().unwrap_or_else(|| "built-in".into()),
            tagger: config.tagger.plugin.clone(),
            policies: config.policy.plugins.clone(),
            failure_modes: "a hook fails when it traps, exhausts its fuel or memory, answers an error, or answers what the host refuses (an address outside the pool or in use, a tag outside tag_keys or reserved). closed: the operation fails (ADD, CHECK: the pod is not attached / the check fails; allocate: code 106; tags: no ENI is created); open: it goes on without the plugin (allocate: the built-in allocator chooses; tags: only the daemon's own tags). A DEL always cleans up; del = closed only reports the failure afterwards".into(),
            plugins: config.plugin_specs().iter().map(|spec| runtime.inspect(spec)).collect(),
        })
    }

    /// Whether every plugin would load: digest verified, world matching, nothing under-granted.
    pub fn is_clean(&self) -> bool {
        self.plugins
            .iter()
            .all(|p| p.problem.is_none() && p.under_granted.is_empty())
    }

    /// A table for people.
    pub fn render_table(&self) -> String {
        let short = |import: &str| {
            import
                .strip_prefix("wasmcni:plugin/")
                .map(|rest| rest.split('@').next().unwrap_or(rest).to_owned())
                .unwrap_or_else(|| import.to_owned())
        };
        let list = |items: &[String]| {
            if items.is_empty() {
                "-".to_owned()
            } else {
                items.join(", ")
            }
        };
        let mut rows = vec![[
            "plugin".to_owned(),
            "kind".to_owned(),
            "digest".to_owned(),
            "imports".to_owned(),
            "grants (scope)".to_owned(),
            "under-granted".to_owned(),
            "over-granted".to_owned(),
            "fuel / memory".to_owned(),
            "on failure".to_owned(),
            "status".to_owned(),
        ]];
        for p in &self.plugins {
            let digest = p
                .pinned_digest
                .get(..19)
                .unwrap_or(&p.pinned_digest)
                .to_owned()
                + "…";
            let verified = match (&p.actual_digest, &p.problem) {
                (_, Some(problem)) => problem.clone(),
                (Some(_), None) if !p.under_granted.is_empty() => {
                    "refused at load: under-granted".into()
                }
                (Some(_), None) => match &p.origin {
                    Some(origin) => format!("ok (digest verified; from {origin})"),
                    None => "ok (digest verified)".into(),
                },
                (None, None) => "unreadable".into(),
            };
            let mut imports: Vec<String> = p
                .imports
                .iter()
                .filter(|i| !i.starts_with("wasi:"))
                .map(|i| short(i))
                .filter(|i| i != "types")
                .collect();
            if !p.wasi.is_empty() {
                imports.push(format!("wasi ({} interfaces, below)", p.wasi.len()));
            }
            let mut under: Vec<String> = p
                .under_granted
                .iter()
                .filter(|i| !i.starts_with("wasi:"))
                .map(|i| short(i))
                .collect();
            let wasi_under = p.under_granted.len() - under.len();
            if wasi_under > 0 {
                under.push(format!("{wasi_under} wasi interfaces"));
            }
            let mut grants = describe_grants(&p.grants);
            if !p.tag_keys.is_empty() {
                grants.push(format!("tag_keys [{}]", p.tag_keys.join(", ")));
            }
            let failure: Vec<String> = p
                .on_failure
                .0
                .iter()
                .map(|(hook, mode)| format!("{}={}", hook.as_str(), mode_str(*mode)))
                .collect();
            rows.push([
                p.name.clone(),
                p.kind.to_string(),
                digest,
                list(&imports),
                list(&grants),
                list(&under),
                list(&p.over_granted),
                format!("{} / {} MiB", p.limits.fuel, p.limits.memory_bytes >> 20),
                list(&failure),
                verified,
            ]);
        }
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = format!(
            "allocator: {}\ntagger: {}\npolicy hooks: {}\n\n",
            self.allocator,
            self.tagger
                .as_deref()
                .unwrap_or("none (the daemon's own tags only)"),
            if self.policies.is_empty() {
                "none".to_owned()
            } else {
                self.policies.join(", ")
            },
        );
        for row in &rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        if self.plugins.is_empty() {
            out.push_str("(no plugins configured)\n");
        }
        // What each WASI import of a plugin gets: granted, stubbed, or refused.
        for p in self.plugins.iter().filter(|p| !p.wasi.is_empty()) {
            out.push_str(&format!("\nWASI imported by {}:\n", p.name));
            let width = p.wasi.iter().map(|w| w.interface.len()).max().unwrap_or(0);
            for used in &p.wasi {
                out.push_str(&format!(
                    "  {:<width$}  {}\n",
                    used.interface, used.treatment
                ));
            }
        }
        out.push_str(&format!("\nfailure modes: {}\n", self.failure_modes));
        out
    }
}

/// What a reviewer approves of `spec` ([`wasmcni_trust::statement`]), the component as
/// `inspection` found it.
pub fn approval_statement(
    spec: &wasmcni_core::PluginSpec,
    inspection: &Inspection,
) -> serde_json::Value {
    wasmcni_trust::statement(spec, inspection.world, &inspection.imports)
}

/// A reviewer's approval of plugin `name` of `config` as configured, signed with `key`: the
/// plugin must load as the daemon would load it (digest verified, nothing under-granted).
pub fn approve(
    config: &ClusterConfig,
    name: &str,
    key: &wasmcni_trust::SigningKey,
) -> Result<wasmcni_trust::Envelope, String> {
    let spec = config
        .plugin_specs()
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = config
                .plugin_specs()
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            format!(
                "no plugin {name:?} in the configuration (its plugins: {})",
                names.join(", ")
            )
        })?;
    let runtime = PluginRuntime::new().map_err(|e| e.to_string())?;
    let inspection = runtime.inspect(spec);
    if let Some(problem) = &inspection.problem {
        return Err(format!("plugin {name}: {problem}; nothing to approve"));
    }
    if !inspection.under_granted.is_empty() {
        return Err(format!(
            "plugin {name} imports {} which its grant does not include: the daemon would refuse it; fix the grant first",
            inspection.under_granted.join(", ")
        ));
    }
    Ok(wasmcni_trust::Envelope::sign(
        &approval_statement(spec, &inspection),
        key,
    ))
}

fn mode_str(mode: wasmcni_core::FailureMode) -> &'static str {
    match mode {
        wasmcni_core::FailureMode::Closed => "closed",
        wasmcni_core::FailureMode::Open => "open",
    }
}

/// `eni-ops (subnets node; security groups node; max 3 ENIs)`, one entry per grant.
fn describe_grants(grants: &wasmcni_core::Grants) -> Vec<String> {
    use wasmcni_core::Capability;
    let join = |set: &std::collections::BTreeSet<String>| {
        if set.is_empty() {
            "none".to_owned()
        } else {
            set.iter().cloned().collect::<Vec<_>>().join(" ")
        }
    };
    grants
        .capabilities
        .iter()
        .map(|capability| match capability {
            Capability::EniOps => format!(
                "eni-ops (subnets {}; security groups {}; {})",
                join(&grants.eni_ops.subnets),
                join(&grants.eni_ops.security_groups),
                grants
                    .eni_ops
                    .max_enis
                    .map_or("instance ENI limit".to_owned(), |m| format!("max {m} ENIs"))
            ),
            Capability::Netlink => format!(
                "netlink (mtu {}; routes {})",
                grants
                    .netlink
                    .mtu
                    .map_or("none".to_owned(), |(low, high)| format!("{low}-{high}")),
                if grants.netlink.routes.is_empty() {
                    "none".to_owned()
                } else {
                    grants
                        .netlink
                        .routes
                        .iter()
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                }
            ),
            Capability::Kv => format!("kv ({} bytes)", grants.kv.max_bytes),
            Capability::Wasi => format!(
                "wasi (clocks {}; random {}; read-only dirs {})",
                if grants.wasi.clocks {
                    "real"
                } else {
                    "deterministic"
                },
                if grants.wasi.random {
                    "system"
                } else {
                    "fixed seed"
                },
                if grants.wasi.read_dirs.is_empty() {
                    "none".to_owned()
                } else {
                    grants
                        .wasi
                        .read_dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                }
            ),
            other => other.to_string(),
        })
        .collect()
}
