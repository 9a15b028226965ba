//! Plugins from OCI registries.
//!
//! A `[[plugins]]` entry may name `oci = "oci://registry/repository@sha256:<manifest>"` beside
//! the component's own `digest`. Before a start or a reload loads plugins, [`ensure_cached`]
//! makes sure the node's cache holds each one: a cached component (named by its digest) is
//! used as it is, so a node starts while the registry is down; a missing one is pulled — the
//! manifest by its digest, checked to be a Wasm component artifact whose one layer is the
//! configured component, the layer streamed to a partial file no larger than the manifest
//! says and `registry.max_component_bytes` allows, its digest checked, then renamed into
//! place — all within `registry.timeout_ms`. The runtime then verifies the digest again when
//! it loads the file, and `[trust]` approvals bind that same digest: where bytes came from
//! never decides whether they run.
//!
//! [`Registry::push`] is the other direction, for `wasmcni-host plugin push`.

pub mod artifact;
pub mod cache;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::manifest::OCI_IMAGE_MEDIA_TYPE;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use wasmcni_config::RegistryConfig;
use wasmcni_core::{OciReference, PluginSpec};

pub use artifact::{Artifact, ComponentInfo, WasmConfig, WASM_CONFIG, WASM_LAYER};

/// Largest manifest accepted. oci-client reads a manifest whole before it returns it, so this
/// is checked after the read; the pull's time bound is what limits a registry that streams
/// an endless one.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// Largest CA or password file read.
const MAX_SETTINGS_FILE: u64 = 1 << 20;
/// Time to open a connection to a registry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong reaching a registry or keeping the cache.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// `[registry]` cannot be used (a CA or password file unreadable or invalid).
    #[error("registry settings: {0}")]
    Settings(String),
    /// A plugin's component is neither cached nor pullable.
    #[error("plugin {plugin}: {detail}")]
    Pull {
        /// The plugin's name.
        plugin: String,
        /// Its reference, the cache, and why the pull failed.
        detail: String,
    },
    /// A push failed.
    #[error("pushing to {target}: {reason}")]
    Push {
        /// Where to.
        target: String,
        /// Why.
        reason: String,
    },
}

/// Where one plugin's component came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The cache held it.
    Cached,
    /// Pulled now.
    Pulled {
        /// Component bytes.
        bytes: u64,
        /// Wall time of the pull.
        elapsed: Duration,
    },
}

/// Makes sure the cache holds the component of every plugin in `specs` that comes from a
/// registry, pulling what it lacks; returns, per such plugin, where it came from. The first
/// plugin that can be neither found nor pulled fails the whole set (nothing is loaded).
pub async fn ensure_cached(
    specs: &[&PluginSpec],
    settings: &RegistryConfig,
) -> Result<Vec<(String, Fetched)>, RegistryError> {
    let mut registry: Option<Registry> = None;
    let mut report = Vec::new();
    for spec in specs {
        let Some(reference) = &spec.origin else {
            continue;
        };
        let fail = |reason: String| RegistryError::Pull {
            plugin: spec.name.clone(),
            detail: format!(
                "{reference} is not in the component cache ({}) and could not be pulled: {reason}",
                spec.path
                    .parent()
                    .map_or_else(String::new, |d| d.display().to_string()),
            ),
        };
        let path = spec.path.clone();
        let digest = spec.digest.clone();
        let cached = tokio::task::spawn_blocking(move || cache::holds(&path, &digest))
            .await
            .map_err(|e| fail(format!("checking the cache: {e}")))?
            .map_err(|e| fail(format!("checking the cache: {e}")))?;
        if cached {
            // Pruning keeps the most recently used: a hit counts as a use.
            cache::touch(&spec.path);
            tracing::debug!(plugin = %spec.name, %reference, "component from the cache");
            report.push((spec.name.clone(), Fetched::Cached));
            continue;
        }
        let registry = match &mut registry {
            Some(registry) => registry,
            slot => slot.insert(Registry::new(settings)?),
        };
        let started = Instant::now();
        let bytes = registry
            .pull(reference, &spec.digest, &spec.path)
            .await
            .map_err(fail)?;
        let elapsed = started.elapsed();
        tracing::debug!(plugin = %spec.name, %reference, bytes, elapsed_ms = elapsed.as_millis() as u64, "pulled the component into the cache");
        report.push((spec.name.clone(), Fetched::Pulled { bytes, elapsed }));
    }
    Ok(report)
}

/// A client of the registries `[registry]` describes.
pub struct Registry {
    client: Client,
    settings: RegistryConfig,
}

impl Registry {
    /// A client with `settings`' CAs, plain-HTTP registries and bounds.
    pub fn new(settings: &RegistryConfig) -> Result<Registry, RegistryError> {
        // reqwest is built without a crypto provider; ring is the tree's one TLS stack. An
        // error means one is installed already, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = Vec::new();
        for file in &settings.ca_files {
            let pem = read_bounded(file).map_err(|e| {
                RegistryError::Settings(format!("registry.ca_files: {}: {e}", file.display()))
            })?;
            if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                return Err(RegistryError::Settings(format!(
                    "registry.ca_files: {} holds no PEM certificate",
                    file.display()
                )));
            }
            roots.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem,
            });
        }
        let config = ClientConfig {
            protocol: if settings.plain_http.is_empty() {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(settings.plain_http.clone())
            },
            extra_root_certificates: roots,
            // A component artifact is one manifest: an index is refused, not resolved.
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(Duration::from_millis(settings.timeout_ms)),
            user_agent: concat!("wasmcni/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config)
            .map_err(|e| RegistryError::Settings(format!("building the registry client: {e}")))?;
        Ok(Registry {
            client,
            settings: settings.clone(),
        })
    }

    /// The credentials `[registry.auth]` names for `registry`, or anonymous.
    fn auth(&self, registry: &str) -> Result<RegistryAuth, String> {
        let Some(auth) = self.settings.auth.get(registry) else {
            return Ok(RegistryAuth::Anonymous);
        };
        let password = read_bounded(&auth.password_file)
            .map_err(|e| format!("reading {}: {e}", auth.password_file.display()))?;
        let password = String::from_utf8(password)
            .map_err(|_| format!("{} is not UTF-8", auth.password_file.display()))?;
        Ok(RegistryAuth::Basic(
            auth.username.clone(),
            password.trim_end_matches(['\n', '\r']).to_owned(),
        ))
    }

    /// Pulls the component `component_digest` of the manifest `reference` into `dest`
    /// (created only once complete and verified); returns its size. Bounded by
    /// `registry.timeout_ms` and `registry.max_component_bytes`.
    pub async fn pull(
        &self,
        reference: &OciReference,
        component_digest: &str,
        dest: &Path,
    ) -> Result<u64, String> {
        // The digest names the partial file: only a digest's characters may reach a path.
        if !wasmcni_core::oci::is_sha256_digest(component_digest) {
            return Err(format!(
                "{:?} is not a sha256 digest",
                wasmcni_cni::text::escape_controls(component_digest)
            ));
        }
        let timeout = Duration::from_millis(self.settings.timeout_ms);
        match tokio::time::timeout(
            timeout,
            self.pull_unbounded(reference, component_digest, dest),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(format!(
                "the pull took longer than registry.timeout_ms ({} ms)",
                self.settings.timeout_ms
            )),
        }
    }

    async fn pull_unbounded(
        &self,
        reference: &OciReference,
        component_digest: &str,
        dest: &Path,
    ) -> Result<u64, String> {
        let image = Reference::with_digest(
            reference.registry.clone(),
            reference.repository.clone(),
            reference.digest.clone(),
        );
        let auth = self.auth(&reference.registry)?;
        let (manifest, _) = self
            .client
            .pull_manifest_raw(&image, &auth, &[OCI_IMAGE_MEDIA_TYPE])
            .await
            .map_err(|e| format!("fetching the manifest: {}", describe(&e)))?;
        if manifest.len() > MAX_MANIFEST_BYTES {
            return Err(format!(
                "the manifest is {} bytes; at most {MAX_MANIFEST_BYTES} are read",
                manifest.len()
            ));
        }
        let served = artifact::sha256(&manifest);
        if served != reference.digest {
            return Err(format!(
                "the registry served a manifest of digest {served}, not the {} asked for",
                reference.digest
            ));
        }
        let layer = artifact::component_layer(
            &manifest,
            component_digest,
            self.settings.max_component_bytes,
        )?;
        let size = layer.size as u64;
        let dir = dest
            .parent()
            .ok_or_else(|| format!("{} has no directory", dest.display()))?;
        cache::create(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let partial = Partial::new(dir, component_digest);
        let mut file = tokio::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial.path)
            .await
            .map_err(|e| format!("creating {}: {e}", partial.path.display()))?;
        let mut stream = self
            .client
            .pull_blob_stream(&image, &layer)
            .await
            .map_err(|e| format!("fetching the component: {}", describe(&e)))?;
        if stream.content_length.is_some_and(|length| length > size) {
            return Err(format!(
                "the registry announces {} bytes for a component the manifest says is {size}",
                stream.content_length.unwrap_or_default()
            ));
        }
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        while let Some(chunk) = stream.stream.next().await {
            let chunk = chunk.map_err(|e| {
                format!(
                    "fetching the component: {}",
                    wasmcni_cni::text::escape_controls(&e.to_string())
                )
            })?;
            written += chunk.len() as u64;
            if written > size {
                return Err(format!(
                    "the registry sent more than the {size} bytes the manifest names"
                ));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("writing {}: {e}", partial.path.display()))?;
        }
        let got = format!("sha256:{:x}", hasher.finalize());
        if got != component_digest || written != size {
            return Err(format!(
                "the registry served {written} bytes of digest {got} for the component \
                 {component_digest} ({size} bytes): refused (a tampered or corrupted blob)"
            ));
        }
        file.sync_all()
            .await
            .map_err(|e| format!("writing {}: {e}", partial.path.display()))?;
        drop(file);
        partial.persist(dest)?;
        Ok(written)
    }

    /// Pushes `artifact` to `target` (by its tag, or by digest when it has none); returns the
    /// reference that pins it.
    pub async fn push(
        &self,
        artifact: &Artifact,
        target: &PushTarget,
    ) -> Result<OciReference, RegistryError> {
        let fail = |reason: String| RegistryError::Push {
            target: target.to_string(),
            reason,
        };
        let image = match &target.tag {
            Some(tag) => Reference::with_tag(
                target.registry.clone(),
                target.repository.clone(),
                tag.clone(),
            ),
            None => Reference::with_digest(
                target.registry.clone(),
                target.repository.clone(),
                artifact.manifest_digest.clone(),
            ),
        };
        let auth = self.auth(&target.registry).map_err(fail)?;
        self.client
            .store_auth_if_needed(image.resolve_registry(), &auth)
            .await;
        for (bytes, digest) in [&artifact.component, &artifact.config] {
            self.client
                .push_blob(&image, bytes.clone(), digest)
                .await
                .map_err(|e| fail(format!("uploading {digest}: {}", describe(&e))))?;
        }
        self.client
            .push_manifest_raw(
                &image,
                artifact.manifest.clone(),
                OCI_IMAGE_MEDIA_TYPE
                    .parse()
                    .map_err(|e| fail(format!("{e}")))?,
            )
            .await
            .map_err(|e| fail(format!("uploading the manifest: {}", describe(&e))))?;
        Ok(OciReference {
            registry: target.registry.clone(),
            repository: target.repository.clone(),
            digest: artifact.manifest_digest.clone(),
        })
    }
}

/// Where `plugin push` puts a component: `oci://registry/repository[:tag]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    /// `host[:port]`.
    pub registry: String,
    /// The repository.
    pub repository: String,
    /// A tag for people to find it by (never what a node pulls).
    pub tag: Option<String>,
}

impl PushTarget {
    /// Parses `oci://registry/repository[:tag]`.
    pub fn parse(text: &str) -> Result<PushTarget, String> {
        let rest = text
            .strip_prefix(wasmcni_core::oci::OCI_SCHEME)
            .ok_or_else(|| format!("{text:?} must start with \"oci://\""))?;
        if rest.contains('@') {
            return Err(format!(
                "{text:?}: a push names a repository and perhaps a tag; the digest is the push's result"
            ));
        }
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("{text:?} must name a registry and a repository"))?;
        wasmcni_core::oci::check_registry(registry)?;
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag)),
            _ => (path, None),
        };
        wasmcni_core::oci::check_repository(repository)?;
        if let Some(tag) = tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && !tag.starts_with(['.', '-'])
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return Err(format!(
                    "tag {tag:?} must be 1 to 128 letters, digits, '_', '.' or '-', not \
                     starting with '.' or '-'"
                ));
            }
        }
        Ok(PushTarget {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
        })
    }
}

impl std::fmt::Display for PushTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        Ok(())
    }
}

/// The standard annotations of a pushed component.
pub fn annotations(title: &str, version: Option<&str>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    map.insert("org.opencontainers.image.title".into(), title.to_owned());
    if let Some(version) = version {
        map.insert(
            "org.opencontainers.image.version".into(),
            version.to_owned(),
        );
    }
    map
}

/// A pull in progress, removed unless persisted.
struct Partial {
    path: PathBuf,
    persisted: bool,
}

impl Partial {
    fn new(dir: &Path, digest: &str) -> Partial {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        Partial {
            path: dir.join(format!(
                "{}{hex}-{}-{n}",
                cache::PARTIAL_PREFIX,
                std::process::id()
            )),
            persisted: false,
        }
    }

    /// Renames the verified file into place and makes the rename durable.
    fn persist(mut self, dest: &Path) -> Result<(), String> {
        std::fs::rename(&self.path, dest)
            .map_err(|e| format!("renaming into {}: {e}", dest.display()))?;
        self.persisted = true;
        // The verified file is in place; a rename that a crash undoes costs a pull, not a
        // wrong component, so a failed directory sync is worth a warning only.
        if let Some(dir) = dest.parent() {
            if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
                tracing::warn!(dir = %dir.display(), "syncing the component cache: {e}");
            }
        }
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A settings file read whole ([`wasmcni_cni::regular::read_regular`]: a regular file, not
/// followed through a link, a FIFO refused rather than waited on), at most
/// [`MAX_SETTINGS_FILE`] bytes.
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    wasmcni_cni::regular::read_regular(path, MAX_SETTINGS_FILE)
}

/// An oci-client error with its causes, control characters escaped (a registry's message is
/// not ours to print raw) and cut to a readable length.
fn describe(error: &oci_client::errors::OciDistributionError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    let mut text = wasmcni_cni::text::escape_controls(&text);
    if text.len() > 600 {
        let mut cut = 600;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}
