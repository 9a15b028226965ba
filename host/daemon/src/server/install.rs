//! Installing wasmcni on the node (`[install]`), as AWS VPC CNI's aws-node does: the `wasmcni`
//! shim is copied into kubelet's CNI binary directory, and the conflist is written only once
//! the daemon answers STATUS ready — kubelet reports the node's network ready when a conflist
//! exists, so it must not exist before a pod can get an address. Both files are written to a
//! temporary name and renamed, so kubelet never reads half a file, and the binary is in place
//! before the conflist that names it.

#[cfg(test)]
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::Handler;
use wasmcni_config::InstallConfig;
use wasmcni_datapath::Datapath;

/// Why the installation failed; names the file.
#[derive(Debug, thiserror::Error)]
#[error("installing {path}: {reason}")]
pub struct InstallError {
    /// The file being written or read.
    pub path: PathBuf,
    /// What failed.
    pub reason: String,
}

/// The conflist kubelet will use: wasmcni, then portmap and bandwidth when asked.
pub fn conflist(install: &InstallConfig, socket: &Path) -> Value {
    // Pod annotations reach policy hooks only when the entry declares the capability: libcni
    // passes a runtime's annotations (containerd's CRI sends them) only to plugins that do.
    let mut wasmcni = json!({
        "type": "wasmcni",
        "capabilities": { "io.kubernetes.cri.pod-annotations": true },
    });
    if socket != Path::new(wasmcni_cni::proto::DEFAULT_SOCKET) {
        wasmcni["daemonSocket"] = json!(socket.display().to_string());
    }
    let mut plugins = vec![wasmcni];
    if install.portmap {
        plugins
            .push(json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}));
    }
    if install.bandwidth {
        plugins.push(json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}));
    }
    json!({
        "cniVersion": "1.0.0",
        "name": "wasmcni",
        "disableCheck": true,
        "plugins": plugins,
    })
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let fail = |reason: String| InstallError {
        path: path.to_owned(),
        reason,
    };
    let dir = path
        .parent()
        .ok_or_else(|| fail("has no parent directory".into()))?;
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
    wasmcni_cni::durable::replace_file(path, bytes, mode).map_err(|e| fail(e.to_string()))
}

/// Copies the shim into the binary directory, then writes the conflist.
pub fn install_files(install: &InstallConfig, socket: &Path) -> Result<(), InstallError> {
    let shim = match &install.shim {
        Some(shim) => shim.clone(),
        None => std::env::current_exe()
            .map_err(|e| InstallError {
                path: PathBuf::from("wasmcni"),
                reason: format!("cannot find the running executable: {e}"),
            })?
            .with_file_name("wasmcni"),
    };
    let binary = std::fs::read(&shim).map_err(|e| InstallError {
        path: shim.clone(),
        reason: e.to_string(),
    })?;
    write_atomically(&install.cni_bin_dir.join("wasmcni"), &binary, 0o755)?;
    let text =
        serde_json::to_string_pretty(&conflist(install, socket)).map_err(|e| InstallError {
            path: install.cni_conf_dir.join(&install.conflist_name),
            reason: e.to_string(),
        })?;
    write_atomically(
        &install.cni_conf_dir.join(&install.conflist_name),
        format!("{text}\n").as_bytes(),
        0o644,
    )
}

/// Waits until the daemon is ready (STATUS would succeed), then installs.
pub async fn when_ready<D: Datapath>(handler: Arc<Handler<D>>, install: InstallConfig) {
    let started = std::time::Instant::now();
    let mut next_warning = Duration::from_secs(60);
    while !handler.is_ready() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if started.elapsed() >= next_warning {
            tracing::warn!(
                waited_s = next_warning.as_secs(),
                "not ready yet: the CNI configuration is not installed"
            );
            next_warning += Duration::from_secs(60);
        }
    }
    let socket = handler.config.daemon.socket.clone();
    let conf = install.cni_conf_dir.join(&install.conflist_name);
    match tokio::task::spawn_blocking(move || install_files(&install, &socket)).await {
        Ok(Ok(())) => {
            tracing::info!(conflist = %conf.display(), "ready: wasmcni installed for kubelet")
        }
        Ok(Err(e)) => tracing::error!(error = %e, "installing wasmcni on the node failed"),
        Err(e) => tracing::error!(error = %e, "install task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(dir: &Path) -> InstallConfig {
        InstallConfig {
            cni_bin_dir: dir.join("bin"),
            cni_conf_dir: dir.join("net.d"),
            conflist_name: "10-wasmcni.conflist".into(),
            shim: None,
            portmap: true,
            bandwidth: false,
        }
    }

    #[test]
    fn the_conflist_chains_portmap_and_bandwidth_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = install(dir.path());
        let default = conflist(&config, Path::new(wasmcni_cni::proto::DEFAULT_SOCKET));
        assert_eq!(
            default.to_string(),
            r#"{"cniVersion":"1.0.0","disableCheck":true,"name":"wasmcni","plugins":[{"capabilities":{"io.kubernetes.cri.pod-annotations":true},"type":"wasmcni"},{"capabilities":{"portMappings":true},"snat":true,"type":"portmap"}]}"#
        );
        config.bandwidth = true;
        config.portmap = false;
        let other = conflist(&config, Path::new("/run/wasmcni/other/wasmcni.sock"));
        assert_eq!(
            other["plugins"][0]["daemonSocket"],
            "/run/wasmcni/other/wasmcni.sock"
        );
        assert_eq!(other["plugins"][1]["type"], "bandwidth");
    }

    #[test]
    fn installs_the_shim_then_the_conflist_and_names_a_missing_shim() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = install(dir.path());
        let shim = dir.path().join("wasmcni-built");
        std::fs::write(&shim, b"#!/bin/sh\n").unwrap();
        config.shim = Some(shim.clone());
        install_files(&config, Path::new(wasmcni_cni::proto::DEFAULT_SOCKET)).unwrap();
        let installed = config.cni_bin_dir.join("wasmcni");
        assert_eq!(std::fs::read(&installed).unwrap(), b"#!/bin/sh\n");
        let mode = std::fs::metadata(&installed).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let text =
            std::fs::read_to_string(config.cni_conf_dir.join("10-wasmcni.conflist")).unwrap();
        assert!(text.contains("\"portmap\""), "{text}");
        // Nothing temporary left behind.
        assert_eq!(std::fs::read_dir(&config.cni_conf_dir).unwrap().count(), 1);

        // A symlink planted where the temporary file goes is removed, never written through.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"untouched").unwrap();
        let planted = config
            .cni_conf_dir
            .join(format!(".10-wasmcni.conflist.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        install_files(&config, Path::new(wasmcni_cni::proto::DEFAULT_SOCKET)).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        assert!(!planted.exists());

        config.shim = Some(dir.path().join("missing"));
        let err = install_files(&config, Path::new("/run/wasmcni/wasmcni.sock")).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "installing {}",
                dir.path().join("missing").display()
            )),
            "{err}"
        );
    }
}
