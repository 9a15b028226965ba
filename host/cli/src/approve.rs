//! `wasmcni-host keygen` and `wasmcni-host audit --approve`: a reviewer's key pair, and their
//! signed approval of one plugin as the configuration gives it (docs/security.md).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use wasmcni_config::ClusterConfig;
use wasmcni_trust::{Envelope, SigningKey};

/// Writes `<out>.key` (PKCS#8 PEM, 0600) and `<out>.pub`, neither overwriting a file; returns the
/// message to print (the files and the key's id).
pub(crate) fn keygen(out: &Path) -> Result<String, String> {
    let key = SigningKey::generate().map_err(|e| e.to_string())?;
    let private = with_suffix(out, "key");
    let public = with_suffix(out, "pub");
    let pem = key.to_pem().map_err(|e| e.to_string())?;
    let public_pem = key.public().to_pem().map_err(|e| e.to_string())?;
    // Neither file is overwritten (nor a link followed); a failure leaves neither behind.
    write_new(&private, pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public, public_pem.as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&private);
        return Err(e);
    }
    Ok(format!(
        "private key {} (keep it to yourself), public key {} (list it in [trust] keys); key id {}",
        private.display(),
        public.display(),
        key.public().id()
    ))
}

/// The approval of plugin `name` signed with the key in `key_file`; with `cosign`, that
/// approval file gains this signature instead (it must approve the same terms).
pub(crate) fn approve(
    config: &ClusterConfig,
    name: &str,
    key_file: &Path,
    cosign: Option<&Path>,
) -> Result<String, String> {
    let text =
        std::fs::read_to_string(key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let key =
        SigningKey::from_pem(&text, &key_file.display().to_string()).map_err(|e| e.to_string())?;
    let fresh = wasmcni_daemon::audit::approve(config, name, &key)?;
    let envelope = match cosign {
        None => fresh,
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut existing: Envelope = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not a DSSE envelope: {e}", path.display()))?;
            let (theirs, ours) = (
                existing.statement().map_err(|e| e.to_string())?,
                fresh.statement().map_err(|e| e.to_string())?,
            );
            if theirs != ours {
                return Err(format!(
                    "{} approves other terms than the configuration gives plugin {name}: {}",
                    path.display(),
                    wasmcni_trust::differences(&theirs, &ours).join("; ")
                ));
            }
            existing.cosign(&key).map_err(|e| e.to_string())?;
            existing
        }
    };
    serde_json::to_string_pretty(&envelope).map_err(|e| e.to_string())
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            format!(
                "{}: {e} (an existing file is never overwritten)",
                path.display()
            )
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn with_suffix(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}
