//! `wasmcni-host audit`: what a security reviewer reads before a configuration ships — for
//! every plugin its digest (verified against the file), what the component really imports and
//! exports, what it is granted, what is under-granted (the daemon would refuse it) or
//! over-granted (granted but never used), its limits, and the failure policy.

use serde::Serialize;

use crate::config::ClusterConfig;
use crate::runtime::{Inspection, PluginError, PluginRuntime};

/// The audit of one cluster configuration.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// Which allocator chooses addresses: a plugin name, or `built-in`.
    pub allocator: String,
    /// What happens when the allocator fails.
    pub failure_policy: String,
    /// Every configured plugin.
    pub plugins: Vec<Inspection>,
}

impl AuditReport {
    /// Inspects every plugin of `config` (compiling each component, never running it).
    pub fn of(config: &ClusterConfig) -> Result<AuditReport, PluginError> {
        let runtime = PluginRuntime::new()?;
        Ok(AuditReport {
            allocator: config.allocator.plugin.clone().unwrap_or_else(|| "built-in".into()),
            failure_policy: "ADD fails closed: a trap, an exhausted fuel or memory budget, an error, or an address outside the pool or in use fails the ADD (code 106) and reserves nothing".into(),
            plugins: config.plugin_specs().iter().map(|spec| runtime.inspect(spec)).collect(),
        })
    }

    /// Whether every plugin would load: digest verified, nothing under-granted.
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
            "digest".to_owned(),
            "imports".to_owned(),
            "grants".to_owned(),
            "under-granted".to_owned(),
            "over-granted".to_owned(),
            "fuel / memory".to_owned(),
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
                (Some(_), None) => "ok (digest verified)".into(),
                (None, None) => "unreadable".into(),
            };
            let imports: Vec<String> = p.imports.iter().map(|i| short(i)).collect();
            let under: Vec<String> = p.under_granted.iter().map(|i| short(i)).collect();
            rows.push([
                p.name.clone(),
                digest,
                list(&imports),
                list(&p.grants),
                list(&under),
                list(&p.over_granted),
                format!("{} / {} MiB", p.fuel, p.memory_bytes >> 20),
                verified,
            ]);
        }
        let widths: Vec<usize> = (0..8)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = format!(
            "allocator: {}\nfailure policy: {}\n\n",
            self.allocator, self.failure_policy
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
        out
    }
}
