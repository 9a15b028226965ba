//! What a reviewer approves of one plugin: the component (its digest, the world its exports
//! match, the WIT package version and every interface it really imports) and what the
//! configuration gives it: its name (which keys its `kv` state and its audit entries), each
//! grant with its scope, tag keys, limits, failure policy, and its `[plugins.config]`
//! settings (a policy's settings are its rules). Only the component's file path is left out:
//! the digest binds the bytes wherever they lie.

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
    let mut statement = json!({
        "type": STATEMENT_TYPE,
        "name": spec.name,
        "digest": spec.digest,
        "kind": spec.kind,
        "world": world,
        "wit": wit,
        "imports": imports,
        "grants": spec.grants,
        "tag_keys": spec.tag_keys,
        "limits": spec.limits,
        "on_failure": spec.on_failure,
        "settings": spec.settings,
    });
    // The same routes in another order (or twice) are the same grant.
    if let Some(Value::Array(routes)) = statement.pointer_mut("/grants/netlink/routes") {
        routes.sort_by_key(|r| r.to_string());
        routes.dedup();
    }
    statement
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
    use wasmcni_core::{Capability, Export, FailureMode, Hook};

    const IMPORTS: [&str; 2] = [
        "wasmcni:plugin/pool-view@0.3.0",
        "wasmcni:plugin/eni-ops@0.3.0",
    ];

    fn of(spec: &PluginSpec) -> Value {
        let imports: Vec<String> = IMPORTS.iter().map(|i| (*i).to_owned()).collect();
        statement(spec, Some(PluginKind::Allocator), &imports)
    }

    #[test]
    fn the_statement_names_each_difference_with_both_values() {
        let spec = crate::tests::spec();
        let approved = of(&spec);
        assert_eq!(approved["wit"], "wasmcni:plugin@0.3.0");
        assert_eq!(approved["imports"][0], "wasmcni:plugin/eni-ops@0.3.0");
        // Renamed (its kv state and audit entries would be another plugin's) and retuned (a
        // policy's settings are its rules), widened and given more fuel: each named.
        let mut changed = spec.clone();
        changed.name = "strategy".into();
        changed.settings.insert("WARM_IPS".into(), "9".into());
        changed.grants.eni_ops.subnets.insert("subnet-0abc".into());
        changed.limits.fuel *= 2;
        let found = differences(&approved, &of(&changed));
        assert_eq!(found.len(), 4, "{found:?}");
        for expected in [
            r#"grants.eni_ops.subnets: approved ["node"], configured ["node","subnet-0abc"]"#,
            r#"name: approved "pack", configured "strategy""#,
            r#"settings.WARM_IPS: approved null, configured "9""#,
        ] {
            assert!(found.iter().any(|f| f == expected), "{expected}: {found:?}");
        }
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("limits.fuel: approved ")),
            "{found:?}"
        );
    }

    /// Every field of a plugin's terms the runtime acts on changes the statement: a field a
    /// future change left out of its serialization fails here.
    #[test]
    fn every_field_the_runtime_acts_on_is_in_the_statement() {
        let spec = crate::tests::spec();
        let base = of(&spec);
        type Change = Box<dyn Fn(&mut PluginSpec)>;
        let changes: Vec<(&str, Change)> = vec![
            ("name", Box::new(|s| s.name = "other".into())),
            ("kind", Box::new(|s| s.kind = PluginKind::Policy)),
            (
                "digest",
                Box::new(|s| s.digest = format!("sha256:{}", "cd".repeat(32))),
            ),
            (
                "capabilities",
                Box::new(|s| {
                    s.grants.capabilities.insert(Capability::Kv);
                }),
            ),
            (
                "eni subnets",
                Box::new(|s| {
                    s.grants.eni_ops.subnets.insert("subnet-1".into());
                }),
            ),
            (
                "eni groups",
                Box::new(|s| {
                    s.grants.eni_ops.security_groups.insert("sg-1".into());
                }),
            ),
            (
                "max enis",
                Box::new(|s| s.grants.eni_ops.max_enis = Some(2)),
            ),
            (
                "mtu",
                Box::new(|s| s.grants.netlink.mtu = Some((1280, 1500))),
            ),
            (
                "routes",
                Box::new(|s| s.grants.netlink.routes.push("10.0.0.0/8".parse().unwrap())),
            ),
            ("kv", Box::new(|s| s.grants.kv.max_bytes += 1)),
            ("wasi clocks", Box::new(|s| s.grants.wasi.clocks = true)),
            ("wasi random", Box::new(|s| s.grants.wasi.random = true)),
            (
                "wasi read_dirs",
                Box::new(|s| s.grants.wasi.read_dirs.push("/etc/wasmcni/data".into())),
            ),
            ("fuel", Box::new(|s| s.limits.fuel += 1)),
            ("memory", Box::new(|s| s.limits.memory_bytes += 1)),
            (
                "deadline",
                Box::new(|s| {
                    s.limits.deadline_ms.insert(Export::Plan, 1);
                }),
            ),
            ("host calls", Box::new(|s| s.limits.host_calls += 1)),
            (
                "on failure",
                Box::new(|s| {
                    s.on_failure.0.insert(Hook::Allocate, FailureMode::Open);
                }),
            ),
            (
                "tag keys",
                Box::new(|s| {
                    s.tag_keys.insert("team".into());
                }),
            ),
            (
                "settings",
                Box::new(|s| {
                    s.settings.insert("k".into(), "v".into());
                }),
            ),
        ];
        for (what, change) in changes {
            let mut changed = spec.clone();
            change(&mut changed);
            assert_ne!(of(&changed), base, "{what} is not bound");
        }
        assert_ne!(
            statement(&spec, None, &[]),
            base,
            "world and imports are not bound"
        );
        // A closed `wasi` scope is left out, so statements (and approvals) made before `wasi`
        // existed still match.
        assert_eq!(base["grants"].get("wasi"), None, "{base}");
        // Two routes in either order, or one twice, are one grant.
        let mut a = spec.clone();
        a.grants.netlink.routes = vec![
            "10.0.0.0/8".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
        ];
        let mut b = spec.clone();
        b.grants.netlink.routes = vec![
            "10.1.0.0/16".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
        ];
        assert_eq!(of(&a), of(&b));
    }
}
