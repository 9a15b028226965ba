//! `wasmcni-plugin-build`: builds the guest plugins in `plugins/` (and any extra plugin
//! workspaces given as arguments, such as the hostile test plugins) for
//! `wasm32-unknown-unknown`, turns each core module into a component, and writes
//! `target/plugins/<name>.wasm` plus `target/plugins/digests.json` (name → `sha256:<hex>`).
//!
//! Plugins written in Python or JavaScript (a directory with `world.wit` and `app.py` or
//! `plugin.js`) are built too, with componentize-py and componentize-js, when those are
//! installed (`interpreted.rs`).
//!
//! `wasmcni-plugin-build new <name> --kind <allocator|tagger|policy>` creates a plugin from the
//! kind's template instead (`scaffold.rs`).
//!
//! Why `wasm32-unknown-unknown` and not `wasm32-wasip2`: a component built from it imports only
//! the wasmcni interfaces the plugin actually calls, no WASI at all, so what a security
//! reviewer must grant is exactly what the plugin uses.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use sha2::{Digest, Sha256};

mod interpreted;
mod scaffold;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasmcni-plugin-build: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("new") {
        return scaffold::run(&args[1..], &root, &target);
    }
    let out_dir = target.join("plugins");
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let mut workspaces = vec![root.join("plugins")];
    workspaces.extend(args.iter().map(|a| root.join(a)));
    let mut digests = serde_json::Map::new();
    let digests_path = out_dir.join("digests.json");
    if let Ok(existing) = std::fs::read(&digests_path) {
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(&existing) {
            digests = map;
        }
    }
    // Every name built in this run, and where: two plugins of one name would overwrite each
    // other's component and digest.
    let mut built_from = std::collections::BTreeMap::<String, PathBuf>::new();
    for workspace in workspaces {
        // A directory of Python or JavaScript plugins alone has no Cargo workspace.
        let cargo = workspace.join("Cargo.toml").exists();
        let interpreted = interpreted::find(&workspace)?;
        if !cargo && interpreted.is_empty() {
            return Err(format!(
                "{} holds neither a Cargo workspace of plugins nor a directory with world.wit \
                 and app.py or plugin.js (give the parent of a Python or JavaScript plugin)",
                workspace.display()
            ));
        }
        let mut components = if cargo {
            build_workspace(&workspace, &target)?
        } else {
            Vec::new()
        };
        for (name, dir, language) in interpreted {
            if components.iter().any(|(built, _)| *built == name) {
                return Err(format!(
                    "{}: a Rust plugin of {} is named {name} too; rename one",
                    dir.display(),
                    workspace.display()
                ));
            }
            if let Some(component) = interpreted::build(&name, &dir, language, &root, &target)? {
                components.push((name, component));
            }
        }
        for (name, _) in &components {
            if let Some(other) = built_from.insert(name.clone(), workspace.clone()) {
                if other != workspace {
                    return Err(format!(
                        "{name} is a plugin of both {} and {}; rename one",
                        other.display(),
                        workspace.display()
                    ));
                }
            }
        }
        for (name, component) in components {
            let digest = format!("sha256:{:x}", Sha256::digest(&component));
            let path = out_dir.join(format!("{name}.wasm"));
            std::fs::write(&path, &component)
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            println!("{name:<24} {digest}  {} bytes", component.len());
            digests.insert(name, serde_json::Value::String(digest));
        }
    }
    let text = serde_json::to_string_pretty(&digests).map_err(|e| e.to_string())?;
    std::fs::write(&digests_path, text + "\n")
        .map_err(|e| format!("writing {}: {e}", digests_path.display()))
}

/// Builds every cdylib of the guest workspace and returns (name, component bytes).
pub(crate) fn build_workspace(
    workspace: &Path,
    target: &Path,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let guest_target = target.join("wasm-guests");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "--manifest-path",
        ])
        .arg(workspace.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &guest_target)
        .status()
        .map_err(|e| format!("running cargo for {}: {e}", workspace.display()))?;
    if !status.success() {
        return Err(format!(
            "building the guests in {} failed ({status})",
            workspace.display()
        ));
    }
    let members = guest_members(workspace)?;
    let mut components = Vec::new();
    for name in members {
        let module_path = guest_target
            .join("wasm32-unknown-unknown/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let module = std::fs::read(&module_path)
            .map_err(|e| format!("reading {}: {e}", module_path.display()))?;
        let component = wit_component::ComponentEncoder::default()
            .module(&module)
            .and_then(|encoder| encoder.validate(true).encode())
            .map_err(|e| format!("turning {} into a component: {e:#}", module_path.display()))?;
        components.push((name, component));
    }
    Ok(components)
}

/// The package names of the workspace's members (read from `cargo metadata`).
pub(crate) fn guest_members(workspace: &Path) -> Result<Vec<String>, String> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(workspace.join("Cargo.toml"))
        .output()
        .map_err(|e| format!("cargo metadata for {}: {e}", workspace.display()))?;
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cargo metadata for {}: {e}", workspace.display()))?;
    Ok(metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["targets"].as_array().into_iter().flatten().any(|t| {
                t["kind"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|k| k == "cdylib")
            })
        })
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect())
}
