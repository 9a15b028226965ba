//! Which allocation strategy a simulated node runs: a `[[plugins]]` entry of the cluster
//! configuration, as the daemon reads it.
//!
//! A strategy comes either from a component file (a strategy being written: granted
//! everything an allocator may import, `eni-ops` scoped to the node's own subnet and security
//! groups) or from a cluster configuration's `[[plugins]]` entry (a strategy as it is deployed:
//! its digest, grants, limits and settings exactly). Either way `settings` override its
//! `[plugins.config]`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::SimError;

/// The baseline of every report: `vpc-warm-pool` on VPC CNI's defaults (`WARM_ENI_TARGET=1`).
pub const BASELINE: &str = "vpc-warm-pool";

/// One strategy to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct Strategy {
    /// How reports name it: the plugin's name and its settings.
    pub label: String,
    /// The plugin's name (`[allocator] plugin`).
    pub name: String,
    /// Its `[[plugins]]` entry.
    pub entry: toml::Table,
}

impl Strategy {
    /// The component at `path` (its name is the file's stem), with `settings` as its
    /// `[plugins.config]`.
    pub fn from_component(
        path: &Path,
        settings: &BTreeMap<String, String>,
    ) -> Result<Strategy, SimError> {
        let path = path.canonicalize().map_err(|e| SimError::Strategy {
            strategy: path.display().to_string(),
            message: format!("cannot read the component: {e}"),
        })?;
        let name = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        let digest = wasmcni_runtime::digest_of_file(&path).map_err(|e| SimError::Strategy {
            strategy: path.display().to_string(),
            message: format!("cannot read the component: {e}"),
        })?;
        let mut entry = toml::Table::new();
        entry.insert("name".into(), name.clone().into());
        entry.insert("kind".into(), "allocator".into());
        entry.insert("path".into(), path.display().to_string().into());
        entry.insert("digest".into(), digest.into());
        entry.insert("grants".into(), allocator_grants().into());
        Self::with_settings(name, entry, settings)
    }

    /// The plugin `name` of the cluster configuration `text` (from `origin`), with `settings`
    /// over its own.
    pub fn from_cluster_config(
        text: &str,
        origin: &str,
        name: &str,
        settings: &BTreeMap<String, String>,
    ) -> Result<Strategy, SimError> {
        // Checked as the daemon would first: an entry that does not load there is refused here.
        let config = wasmcni_config::ClusterConfig::parse(text, origin)?;
        let fail = |message: String| SimError::Strategy {
            strategy: name.to_owned(),
            message,
        };
        let known = || {
            config
                .plugins
                .iter()
                .filter(|p| p.kind == "allocator")
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match config.plugins.iter().find(|p| p.name == name) {
            Some(plugin) if plugin.kind == "allocator" => {}
            Some(plugin) => {
                return Err(fail(format!(
                    "{origin} names it a {} plugin, not an allocator",
                    plugin.kind
                )))
            }
            None => {
                return Err(fail(format!(
                    "{origin} has no [[plugins]] entry of that name (its allocators: {})",
                    known()
                )))
            }
        }
        let table: toml::Table = toml::from_str(text).map_err(|e| fail(e.to_string()))?;
        let entry = table
            .get("plugins")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(toml::Value::as_table)
            .find(|entry| entry.get("name").and_then(toml::Value::as_str) == Some(name))
            .cloned()
            .ok_or_else(|| fail(format!("{origin} has no [[plugins]] entry of that name")))?;
        Self::with_settings(name.to_owned(), entry, settings)
    }

    fn with_settings(
        name: String,
        mut entry: toml::Table,
        settings: &BTreeMap<String, String>,
    ) -> Result<Strategy, SimError> {
        let mut label = name.clone();
        if !settings.is_empty() {
            let config = entry
                .entry("config")
                .or_insert_with(|| toml::Table::new().into());
            let Some(config) = config.as_table_mut() else {
                return Err(SimError::Strategy {
                    strategy: name,
                    message: "its [plugins.config] is not a table".into(),
                });
            };
            for (key, value) in settings {
                config.insert(key.clone(), value.clone().into());
            }
            let shown: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
            label = format!("{name} ({})", shown.join(", "));
        }
        Ok(Strategy { label, name, entry })
    }
}

/// What an allocator may import, each granted: the node's pool, ENI operations on the node's
/// own subnet and security groups, a log, `kv` with its default quota, the clock, and a WASI
/// that holds nothing (what a Python allocator's interpreter imports; its clocks are
/// deterministic, not the simulation's).
fn allocator_grants() -> toml::Table {
    let mut grants = toml::Table::new();
    for capability in ["pool-view", "log", "clock", "kv", "wasi"] {
        grants.insert(capability.into(), toml::Table::new().into());
    }
    let mut eni_ops = toml::Table::new();
    for key in ["subnets", "security_groups"] {
        eni_ops.insert(key.into(), toml::Value::Array(vec!["node".into()]));
    }
    grants.insert("eni-ops".into(), eni_ops.into());
    grants
}

/// `KEY=VALUE` settings of a strategy on the command line (`pack,WARM_IPS=8,MIN_FREE=2`):
/// the component (a path ending in `.wasm`, or a plugin name) and its settings.
pub fn parse_spec(spec: &str) -> Result<(String, BTreeMap<String, String>), SimError> {
    let mut parts = spec.split(',');
    let subject = parts.next().unwrap_or_default().trim().to_owned();
    if subject.is_empty() {
        return Err(SimError::Strategy {
            strategy: spec.to_owned(),
            message: "names no plugin (NAME or PATH.wasm, then ,KEY=VALUE settings)".into(),
        });
    }
    let mut settings = BTreeMap::new();
    for part in parts {
        let Some((key, value)) = part.split_once('=') else {
            return Err(SimError::Strategy {
                strategy: spec.to_owned(),
                message: format!("{part:?} is not KEY=VALUE"),
            });
        };
        settings.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    Ok((subject, settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_names_a_plugin_and_its_settings() {
        let (subject, settings) = parse_spec("pack,WARM_IPS=8, MIN_FREE = 2").unwrap();
        assert_eq!(subject, "pack");
        assert_eq!(settings["WARM_IPS"], "8");
        assert_eq!(settings["MIN_FREE"], "2");
        assert!(parse_spec(",A=1").is_err());
        let error = parse_spec("pack,WARM_IPS").unwrap_err().to_string();
        assert!(error.contains("KEY=VALUE"), "{error}");
    }

    #[test]
    fn a_missing_component_is_named() {
        let error = Strategy::from_component(Path::new("/nonexistent/x.wasm"), &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent/x.wasm"), "{error}");
    }

    #[test]
    fn a_cluster_configurations_entry_is_taken_whole_with_settings_over_its_own() {
        let text = format!(
            "{}\n[allocator]\nplugin = \"mine\"\n[[plugins]]\nname = \"mine\"\nkind = \"allocator\"\npath = \"/opt/mine.wasm\"\ndigest = \"sha256:{}\"\nfuel = 123456\n[plugins.grants]\npool-view = {{}}\n[plugins.config]\nA = \"1\"\nB = \"2\"\n[[plugins]]\nname = \"guard\"\nkind = \"policy\"\npath = \"/opt/guard.wasm\"\ndigest = \"sha256:{}\"\n",
            wasmcni_config::DEFAULT_CONFIG,
            "a".repeat(64),
            "b".repeat(64)
        );
        let settings = BTreeMap::from([("B".to_owned(), "3".to_owned())]);
        let strategy = Strategy::from_cluster_config(&text, "c.toml", "mine", &settings).unwrap();
        assert_eq!(strategy.label, "mine (B=3)");
        assert_eq!(strategy.entry["fuel"].as_integer(), Some(123456));
        assert_eq!(strategy.entry["config"]["A"].as_str(), Some("1"));
        assert_eq!(strategy.entry["config"]["B"].as_str(), Some("3"));
        assert_eq!(strategy.entry["path"].as_str(), Some("/opt/mine.wasm"));
        let error = Strategy::from_cluster_config(&text, "c.toml", "guard", &settings)
            .unwrap_err()
            .to_string();
        assert!(error.contains("policy plugin, not an allocator"), "{error}");
        let error = Strategy::from_cluster_config(&text, "c.toml", "other", &settings)
            .unwrap_err()
            .to_string();
        assert!(error.contains("its allocators: mine"), "{error}");
    }
}
