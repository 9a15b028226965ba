//! What a reviewer approves of one plugin: the component (its digest, the world its exports
//! match, the WIT package version and every interface it really imports) and what the
//! configuration gives it (each grant with its scope, tag keys, limits, failure policy). Its
//! name and its `[plugins.config]` settings are not part of it: a reviewer approves what the
//! component is and may do, not what an operator calls it or tunes.

use serde_json::{json, Value};
use wasmcni_core::{PluginKind, PluginSpec};

/// The `type` of a statement of this layout.
pub const STATEMENT_TYPE: &str = "wasmcni.approval/v1";

/// The statement for `spec`, whose component exports match `world` and imports `imports`
/// (as the runtime's inspection reports them).
pub fn statement(spec: &PluginSpec, world: Option<PluginKind>, imports: &[String]) -> Value {
    let wit = imports
        .iter()
        .filter_map(|i| i.strip_prefix("wasmcni:plugin/"))
        .filter_map(|i| {
            i.split_once('@')
                .map(|(_, v)| format!("wasmcni:plugin@{v}"))
        })
        .next();
    let mut imports = imports.to_vec();
    imports.sort();
    json!({
        "type": STATEMENT_TYPE,
        "digest": spec.digest,
        "kind": spec.kind,
        "world": world,
        "wit": wit,
        "imports": imports,
        "grants": spec.grants,
        "tag_keys": spec.tag_keys,
        "limits": spec.limits,
        "on_failure": spec.on_failure,
    })
}

/// Each place where the `configured` statement differs from the `approved` one, as
/// `path: approved X, configured Y`.
pub fn differences(approved: &Value, configured: &Value) -> Vec<String> {
    let mut found = Vec::new();
    walk("", approved, configured, &mut found);
    found
}

fn walk(path: &str, approved: &Value, configured: &Value, found: &mut Vec<String>) {
    match (approved, configured) {
        (Value::Object(a), Value::Object(c)) => {
            let mut keys: Vec<&String> = a.keys().chain(c.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let inner = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                walk(
                    &inner,
                    a.get(key).unwrap_or(&Value::Null),
                    c.get(key).unwrap_or(&Value::Null),
                    found,
                );
            }
        }
        (a, c) if a != c => found.push(format!("{path}: approved {a}, configured {c}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmcni_core::{Capability, Grants};

    #[test]
    fn the_statement_names_what_a_reviewer_approves_and_nothing_an_operator_tunes() {
        let mut spec = PluginSpec::new(
            "pack",
            PluginKind::Allocator,
            "/x/pack.wasm".into(),
            format!("sha256:{}", "ab".repeat(32)),
            Grants::of(&[Capability::PoolView, Capability::EniOps]),
        );
        spec.grants.eni_ops.subnets = ["node".to_owned()].into();
        let imports = vec![
            "wasmcni:plugin/pool-view@0.2.0".to_owned(),
            "wasmcni:plugin/eni-ops@0.2.0".to_owned(),
        ];
        let approved = statement(&spec, Some(PluginKind::Allocator), &imports);
        assert_eq!(approved["wit"], "wasmcni:plugin@0.2.0");
        assert_eq!(approved["imports"][0], "wasmcni:plugin/eni-ops@0.2.0");
        // Renamed and retuned: the same statement.
        let mut renamed = spec.clone();
        renamed.name = "strategy".into();
        renamed.settings.insert("WARM_IPS".into(), "9".into());
        assert_eq!(
            statement(&renamed, Some(PluginKind::Allocator), &imports),
            approved
        );
        // Widened: the difference is named, path and both values.
        let mut widened = spec.clone();
        widened.grants.eni_ops.subnets.insert("subnet-0abc".into());
        widened.limits.fuel *= 2;
        let found = differences(
            &approved,
            &statement(&widened, Some(PluginKind::Allocator), &imports),
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found.contains(
                &r#"grants.eni_ops.subnets: approved ["node"], configured ["node","subnet-0abc"]"#
                    .to_owned()
            ),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("limits.fuel: approved ")),
            "{found:?}"
        );
    }
}
