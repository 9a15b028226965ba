//! `wasmcni-host plugin push`: publishes a built component to an OCI registry as a Wasm
//! artifact and prints the `[[plugins]]` lines that pin it (manifest and component digests).

use std::path::{Path, PathBuf};

use wasmcni_config::{ClusterConfig, RegistryAuthConfig, RegistryConfig};
use wasmcni_core::{PluginKind, PluginSpec};
use wasmcni_registry::{
    annotations, artifact::sha256, Artifact, ComponentInfo, PushTarget, Registry,
};

/// How `plugin push` reaches the registry beyond the configuration's `[registry]`.
pub(crate) struct PushOptions {
    /// Reach the target registry over plain HTTP.
    pub(crate) plain_http: bool,
    /// Trust these CAs.
    pub(crate) ca_files: Vec<PathBuf>,
    /// Basic-auth user, with `password_file`.
    pub(crate) username: Option<String>,
    /// The password's file.
    pub(crate) password_file: Option<PathBuf>,
    /// Print JSON.
    pub(crate) json: bool,
}

/// Pushes `component` to `target`; returns what to print.
pub(crate) fn push(
    config: &ClusterConfig,
    component: &Path,
    target: &str,
    options: PushOptions,
) -> Result<String, String> {
    let target = PushTarget::parse(target)?;
    let bytes = std::fs::read(component).map_err(|e| format!("{}: {e}", component.display()))?;
    let digest = sha256(&bytes);
    // What the component is, read as the daemon reads it: a file that is no wasmcni plugin is
    // not published.
    let runtime = wasmcni_runtime::PluginRuntime::new().map_err(|e| e.to_string())?;
    let name = component
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    let inspection = runtime.inspect(&PluginSpec::new(
        &name,
        PluginKind::Allocator,
        component.to_owned(),
        digest.clone(),
        Default::default(),
    ));
    let Some(kind) = inspection.world else {
        return Err(format!(
            "{}: {}",
            component.display(),
            inspection.problem.unwrap_or_else(|| format!(
                "its exports [{}] match no wasmcni world (allocator, tagger, policy)",
                inspection.exports.join(", ")
            ))
        ));
    };
    let mut settings: RegistryConfig = config.registry.clone();
    if options.plain_http {
        settings.plain_http.push(target.registry.clone());
    }
    settings.ca_files.extend(options.ca_files);
    match (options.username, options.password_file) {
        (Some(username), Some(password_file)) => {
            settings.auth.insert(
                target.registry.clone(),
                RegistryAuthConfig {
                    username,
                    password_file,
                },
            );
        }
        (None, None) => {}
        _ => return Err("--username and --password-file go together".into()),
    }
    settings
        .validate("plugin push")
        .map_err(|e| e.to_string())?;
    let artifact = Artifact::new(
        bytes,
        Some(ComponentInfo {
            exports: inspection.exports.clone(),
            imports: inspection.imports.clone(),
        }),
        Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()),
        annotations(&name, None),
    )
    .map_err(|e| format!("laying out the artifact: {e}"))?;
    let size = artifact.component.0.len();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let reference = runtime.block_on(async {
        let registry = Registry::new(&settings).map_err(|e| e.to_string())?;
        registry
            .push(&artifact, &target)
            .await
            .map_err(|e| e.to_string())
    })?;
    if options.json {
        return serde_json::to_string_pretty(&serde_json::json!({
            "oci": reference.to_string(),
            "digest": digest,
            "kind": kind.to_string(),
            "bytes": size,
            "imports": inspection.imports,
        }))
        .map_err(|e| e.to_string());
    }
    // A JSON string is a valid TOML basic string: a file name with quotes or newlines
    // cannot break the snippet.
    let quoted = serde_json::to_string(&name).map_err(|e| e.to_string())?;
    Ok(format!(
        "pushed {} ({size} bytes, a {kind}) to {target}\n\nPin it in the cluster configuration \
         (grants as reviewed; `wasmcni-host audit` shows what it imports):\n\n[[plugins]]\n\
         name = {quoted}\nkind = \"{kind}\"\noci = \"{reference}\"\ndigest = \"{digest}\"",
        wasmcni_cni::text::escape_controls(&component.display().to_string())
    ))
}
