//! The WebAssembly plugin runtime: loads components pinned by sha256 digest, links only the
//! capabilities each one was granted, and runs every call in a fresh store with fuel and
//! memory limits.
//!
//! Three locks, all deny by default:
//! 1. link time — a component importing an interface its grant does not name is refused at
//!    load, with an error naming the plugin and the import;
//! 2. call time — host invariants hold whatever a plugin returns (the daemon checks every
//!    address an allocator proposes against the pool and the datastore);
//! 3. resources — fuel per call (an infinite loop traps in milliseconds), a memory cap, a
//!    bounded wasm stack, and a fresh store per call so a trapped instance is never reused.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};

use crate::ipam::Inventory;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "allocator",
    });
}

use bindings::wasmcni::plugin::{clock, log, pool_view, types};

/// A capability a plugin may be granted: one WIT interface of `wasmcni:plugin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// `pool-view`: read the node's address blocks and which addresses are in use.
    PoolView,
    /// `log`: write to the daemon's log.
    Log,
    /// `clock`: read wall-clock time.
    Clock,
}

impl Capability {
    /// Every capability this build offers.
    pub const ALL: [Capability; 3] = [Capability::PoolView, Capability::Log, Capability::Clock];

    /// The WIT interface name (`pool-view`, `log`, `clock`).
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::PoolView => "pool-view",
            Capability::Log => "log",
            Capability::Clock => "clock",
        }
    }

    /// Parses a grant name as written in the cluster configuration.
    pub fn parse(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The capability a component import names, e.g. `wasmcni:plugin/log@0.1.0` → `log`.
    /// `types` carries no functions and needs no grant; anything else is not offered at all.
    fn of_import(import: &str) -> Option<Option<Capability>> {
        let interface = import.strip_prefix("wasmcni:plugin/")?.split('@').next()?;
        if interface == "types" {
            return Some(None);
        }
        Capability::parse(interface).map(Some)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-call resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel per call (roughly one unit per wasm instruction).
    pub fuel: u64,
    /// Largest linear memory, in bytes.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 50_000_000,
            memory_bytes: 16 << 20,
        }
    }
}

/// What to load: a component file, the digest it must have, and what it is granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    /// Name in logs and errors.
    pub name: String,
    /// The component file.
    pub path: PathBuf,
    /// `sha256:<64 hex>`; the file is refused unless its content hashes to it.
    pub digest: String,
    /// The interfaces it may import.
    pub grants: BTreeSet<Capability>,
    /// Resource limits per call.
    pub limits: Limits,
}

/// Why a plugin could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The component file could not be read.
    #[error("plugin {plugin}: cannot read {path}: {source}")]
    Read {
        /// Plugin name.
        plugin: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not the one the configuration pinned.
    #[error("plugin {plugin}: {path} has digest {actual}, but the configuration pins {expected}; refusing to load it")]
    DigestMismatch {
        /// Plugin name.
        plugin: String,
        /// The file.
        path: PathBuf,
        /// Pinned digest.
        expected: String,
        /// Digest of the file.
        actual: String,
    },
    /// The component imports interfaces it was not granted (or that wasmcni does not offer).
    #[error("plugin {plugin} imports {} which its grant does not include (granted: [{}]); grant them or use another plugin", .imports.join(", "), .granted.join(", "))]
    Ungranted {
        /// Plugin name.
        plugin: String,
        /// The imports refused.
        imports: Vec<String>,
        /// What was granted.
        granted: Vec<String>,
    },
    /// Compiling or linking the component failed.
    #[error("plugin {plugin}: {message}")]
    Invalid {
        /// Plugin name.
        plugin: String,
        /// What failed.
        message: String,
    },
    /// A call trapped or ran out of a resource.
    #[error("plugin {plugin} failed in {call}: {reason}")]
    Trapped {
        /// Plugin name.
        plugin: String,
        /// The export called.
        call: &'static str,
        /// Out of fuel, out of memory, stack overflow, or the trap.
        reason: String,
    },
    /// The plugin answered with an error of its own.
    #[error("plugin {plugin} refused: {message}")]
    Refused {
        /// Plugin name.
        plugin: String,
        /// Its message (truncated to 1 KiB).
        message: String,
    },
}

/// What a call may see of the pool: a snapshot taken by the daemon before the call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSnapshot {
    /// The provider's blocks.
    pub inventory: Inventory,
    /// Addresses held now.
    pub in_use: Vec<Ipv4Addr>,
}

/// The attachment an address is wanted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// `K8S_POD_NAMESPACE`.
    pub namespace: Option<String>,
    /// `K8S_POD_NAME`.
    pub name: Option<String>,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

/// One engine for every plugin of the daemon.
#[derive(Clone)]
pub struct PluginRuntime {
    engine: Engine,
    /// Where compiled components are kept between starts (`None`: compile every time).
    cache: Option<PathBuf>,
}

/// Per-call host state: the snapshot the plugin may read and its limits.
struct HostState {
    plugin: String,
    snapshot: PoolSnapshot,
    limits: StoreLimits,
}

/// A loaded allocator, ready to be instantiated per call.
pub struct AllocatorPlugin {
    spec: PluginSpec,
    pre: bindings::AllocatorPre<HostState>,
    imports: Vec<String>,
}

/// Largest plugin message kept (log lines, refusal reasons).
const MAX_MESSAGE_BYTES: usize = 1024;

impl PluginRuntime {
    /// The engine: fuel metering on, a 512 KiB wasm stack, Cranelift.
    pub fn new() -> Result<PluginRuntime, PluginError> {
        let mut config = Config::new();
        config.consume_fuel(true);
        config.max_wasm_stack(512 << 10);
        let engine = Engine::new(&config).map_err(|e| PluginError::Invalid {
            plugin: "(engine)".into(),
            message: format!("{e:#}"),
        })?;
        Ok(PluginRuntime {
            engine,
            cache: None,
        })
    }

    /// Keeps compiled components in `dir` (created 0700; refused unless private to this
    /// user), keyed by the component's digest and the engine's configuration, so a restart
    /// loads each plugin in well under a millisecond instead of compiling it again.
    pub fn with_cache(mut self, dir: &Path) -> Result<PluginRuntime, PluginError> {
        use std::os::unix::fs::DirBuilderExt;
        let invalid = |message: String| PluginError::Invalid {
            plugin: "(cache)".into(),
            message,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| invalid(format!("creating {}: {e}", dir.display())))?;
        // Loading a cached artifact trusts its bytes as machine code: only this daemon may
        // write there.
        crate::proto::check_private(dir, true).map_err(|e| invalid(e.to_string()))?;
        self.cache = Some(dir.to_owned());
        Ok(self)
    }

    /// The cache file for a component with `digest` under this engine's configuration.
    fn cache_path(&self, digest: &str) -> Option<PathBuf> {
        use std::hash::{Hash, Hasher};
        let dir = self.cache.as_ref()?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        Some(dir.join(format!("{hex}-{:016x}.cwasm", hasher.finish())))
    }

    /// Compiles `bytes` (whose digest the caller verified), or loads the cached compilation.
    fn compile(&self, bytes: &[u8], digest: &str) -> Result<Component, wasmtime::Error> {
        let Some(path) = self.cache_path(digest) else {
            return Component::new(&self.engine, bytes);
        };
        if let Ok(artifact) = std::fs::read(&path) {
            // Read into memory rather than mapped: a mapped file truncated under a running
            // daemon would kill it with SIGBUS; a copy of a few hundred KiB costs microseconds.
            // SAFETY: the cache directory is private to this daemon (checked in `with_cache`),
            // its files are written only below, from a component whose sha256 was verified
            // against the configuration, and their names bind that digest and this engine's
            // configuration, so the artifact is the compilation of exactly these bytes; wasmtime
            // still checks its header and engine compatibility.
            match unsafe { Component::deserialize(&self.engine, &artifact) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring an unusable cached compilation")
                }
            }
        }
        let component = Component::new(&self.engine, bytes)?;
        let write = || -> std::io::Result<()> {
            let serialized = component.serialize().map_err(std::io::Error::other)?;
            let temporary = path.with_extension("tmp");
            std::fs::write(&temporary, serialized)?;
            std::fs::rename(&temporary, &path)
        };
        if let Err(e) = write() {
            tracing::warn!(path = %path.display(), error = %e, "could not cache the compiled plugin; it will be compiled again next start");
        }
        Ok(component)
    }

    /// Loads an allocator: verifies the digest, refuses ungranted imports by name, links only
    /// the granted interfaces and pre-instantiates.
    pub fn load_allocator(&self, spec: &PluginSpec) -> Result<AllocatorPlugin, PluginError> {
        let plugin = spec.name.clone();
        let bytes = std::fs::read(&spec.path).map_err(|source| PluginError::Read {
            plugin: plugin.clone(),
            path: spec.path.clone(),
            source,
        })?;
        let actual = digest_of(&bytes);
        if actual != spec.digest {
            return Err(PluginError::DigestMismatch {
                plugin,
                path: spec.path.clone(),
                expected: spec.digest.clone(),
                actual,
            });
        }
        let invalid = |message: String| PluginError::Invalid {
            plugin: spec.name.clone(),
            message,
        };
        let component = self
            .compile(&bytes, &actual)
            .map_err(|e| invalid(format!("not a valid component: {e:#}")))?;
        let imports: Vec<String> = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let refused: Vec<String> = imports
            .iter()
            .filter(|import| match Capability::of_import(import) {
                Some(None) => false,
                Some(Some(capability)) => !spec.grants.contains(&capability),
                None => true,
            })
            .cloned()
            .collect();
        if !refused.is_empty() {
            return Err(PluginError::Ungranted {
                plugin,
                imports: refused,
                granted: spec.grants.iter().map(|c| c.to_string()).collect(),
            });
        }
        let mut linker: Linker<HostState> = Linker::new(&self.engine);
        let link = |e: wasmtime::Error| invalid(format!("linking: {e:#}"));
        types::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s).map_err(link)?;
        for capability in &spec.grants {
            match capability {
                Capability::PoolView => {
                    pool_view::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
                }
                Capability::Log => {
                    log::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
                }
                Capability::Clock => {
                    clock::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
                }
            }
            .map_err(link)?;
        }
        let instance_pre = linker.instantiate_pre(&component).map_err(link)?;
        let pre = bindings::AllocatorPre::new(instance_pre)
            .map_err(|e| invalid(format!("not an allocator: {e:#}")))?;
        Ok(AllocatorPlugin {
            spec: spec.clone(),
            pre,
            imports,
        })
    }
}

/// What a reviewer needs to know about one plugin, read from the component itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Inspection {
    /// Plugin name.
    pub name: String,
    /// The component file.
    pub path: PathBuf,
    /// Digest pinned by the configuration.
    pub pinned_digest: String,
    /// Digest of the file as it is now (`None` when it cannot be read).
    pub actual_digest: Option<String>,
    /// Every import of the component (WIT interface names).
    pub imports: Vec<String>,
    /// Every export of the component.
    pub exports: Vec<String>,
    /// Capabilities granted.
    pub grants: Vec<String>,
    /// Imports the grant does not cover: the daemon would refuse to load it.
    pub under_granted: Vec<String>,
    /// Grants the component never imports: harmless now, but more than it needs.
    pub over_granted: Vec<String>,
    /// Per-call limits.
    pub fuel: u64,
    /// Memory cap, bytes.
    pub memory_bytes: usize,
    /// Why the component could not be inspected, if it could not.
    pub problem: Option<String>,
}

impl PluginRuntime {
    /// Inspects a plugin for the audit report: verifies the digest and lists imports, exports,
    /// and what is under- or over-granted. Never fails; problems are reported in the result.
    pub fn inspect(&self, spec: &PluginSpec) -> Inspection {
        let mut inspection = Inspection {
            name: spec.name.clone(),
            path: spec.path.clone(),
            pinned_digest: spec.digest.clone(),
            actual_digest: None,
            imports: Vec::new(),
            exports: Vec::new(),
            grants: spec.grants.iter().map(|c| c.to_string()).collect(),
            under_granted: Vec::new(),
            over_granted: Vec::new(),
            fuel: spec.limits.fuel,
            memory_bytes: spec.limits.memory_bytes,
            problem: None,
        };
        let bytes = match std::fs::read(&spec.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                inspection.problem = Some(format!("cannot read {}: {e}", spec.path.display()));
                return inspection;
            }
        };
        let actual = digest_of(&bytes);
        if actual != spec.digest {
            inspection.problem = Some("digest mismatch: the daemon refuses to load it".into());
        }
        inspection.actual_digest = Some(actual);
        let component = match Component::new(&self.engine, &bytes) {
            Ok(component) => component,
            Err(e) => {
                inspection.problem = Some(format!("not a valid component: {e:#}"));
                return inspection;
            }
        };
        let ty = component.component_type();
        inspection.imports = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        inspection.exports = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let mut used = BTreeSet::new();
        for import in &inspection.imports {
            match Capability::of_import(import) {
                Some(Some(capability)) if spec.grants.contains(&capability) => {
                    used.insert(capability);
                }
                Some(None) => {}
                _ => inspection.under_granted.push(import.clone()),
            }
        }
        inspection.over_granted = spec
            .grants
            .iter()
            .filter(|c| !used.contains(c))
            .map(|c| c.to_string())
            .collect();
        inspection
    }
}

impl AllocatorPlugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// What the component imports (for the audit report).
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// Asks the plugin for `pod`'s address, in a fresh store with the plugin's limits. The
    /// answer is only a proposal: the caller checks it against the pool and the datastore.
    pub fn allocate(&self, snapshot: PoolSnapshot, pod: &PodInfo) -> Result<Ipv4Addr, PluginError> {
        let limits = self.spec.limits;
        let state = HostState {
            plugin: self.spec.name.clone(),
            snapshot,
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(4)
                .tables(8)
                .memories(2)
                .trap_on_grow_failure(true)
                .build(),
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        let trapped = |e: wasmtime::Error| PluginError::Trapped {
            plugin: self.spec.name.clone(),
            call: "allocate",
            reason: describe_trap(&e, limits),
        };
        store.set_fuel(limits.fuel).map_err(trapped)?;
        let instance = self.pre.instantiate(&mut store).map_err(trapped)?;
        let request = types::Pod {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            container_id: pod.container_id.clone(),
            ifname: pod.ifname.clone(),
        };
        match instance
            .call_allocate(&mut store, &request)
            .map_err(trapped)?
        {
            Ok(ip) => Ok(Ipv4Addr::from(ip)),
            Err(message) => Err(PluginError::Refused {
                plugin: self.spec.name.clone(),
                message: truncate(message),
            }),
        }
    }
}

/// The runtime audit log: one JSON line per plugin call (plugin, call, arguments, outcome,
/// duration), appended with a single write to a file only root can read, so a reviewer can
/// see afterwards what every plugin was asked and what it did.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

/// One plugin call, as the audit log records it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry<'a> {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// Plugin name.
    pub plugin: &'a str,
    /// The export called.
    pub call: &'a str,
    /// Its arguments.
    pub args: serde_json::Value,
    /// `ok` or `error`.
    pub outcome: &'a str,
    /// The answer (an address) or the error.
    pub result: String,
    /// Wall time of the call, microseconds.
    pub duration_us: u64,
}

impl AuditLog {
    /// An audit log appending to `path` (created 0600 on first use).
    pub fn new(path: PathBuf) -> AuditLog {
        AuditLog { path }
    }

    /// Where it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry`. A failure is logged, never fails the request: the plugin's answer was
    /// already checked by the host either way.
    pub fn record(&self, entry: &AuditEntry<'_>) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let write = || -> std::io::Result<()> {
            let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
            line.push(b'\n');
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)?
                .write_all(&line)
        };
        if let Err(e) = write() {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the plugin audit log");
        }
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// Loads and checks a component file's digest without compiling it (for the audit report).
pub fn digest_of_file(path: &Path) -> std::io::Result<String> {
    Ok(digest_of(&std::fs::read(path)?))
}

fn describe_trap(error: &wasmtime::Error, limits: Limits) -> String {
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => format!(
                "ran out of fuel ({} units per call): an endless or too long computation",
                limits.fuel
            ),
            Trap::StackOverflow => "overflowed its stack (unbounded recursion?)".to_owned(),
            other => format!(
                "trapped: {}",
                other.to_string().trim_start_matches("wasm trap: ")
            ),
        };
    }
    let chain = format!("{error:#}");
    if chain.contains("forcing trap when growing memory") {
        return format!("exceeded its memory limit of {} bytes", limits.memory_bytes);
    }
    chain
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("… (truncated)");
    }
    message
}

impl types::Host for HostState {}

impl pool_view::Host for HostState {
    fn blocks(&mut self) -> Vec<types::AddressBlock> {
        self.snapshot
            .inventory
            .blocks
            .iter()
            .map(|b| types::AddressBlock {
                network: u32::from(b.cidr.network()),
                prefix_len: b.cidr.prefix_len(),
                route_table: b.route_table,
                source: b.source.clone(),
            })
            .collect()
    }

    fn in_use(&mut self) -> Vec<u32> {
        self.snapshot
            .in_use
            .iter()
            .map(|ip| u32::from(*ip))
            .collect()
    }

    fn excluded(&mut self) -> Vec<u32> {
        self.snapshot
            .inventory
            .excluded
            .iter()
            .map(|ip| u32::from(*ip))
            .collect()
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let message = truncate(message);
        let plugin = &self.plugin;
        match level {
            log::Level::Debug => tracing::debug!(plugin = %plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin = %plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin = %plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin = %plugin, "{message}"),
        }
    }
}

impl clock::Host for HostState {
    fn now_unix_ms(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default()
    }
}

/// Test support: the components built by `wasmcni-plugin-build` under `target/plugins`.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// The built component `name`; panics with the command to build it when missing.
    pub(crate) fn component(name: &str) -> PathBuf {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
        let path = target.join("plugins").join(format!("{name}.wasm"));
        assert!(
            path.exists(),
            "{} is missing: build the plugins first with `cargo run --release -p wasmcni-plugin-build -- tests/plugins`",
            path.display()
        );
        path
    }

    /// A spec for the built component `name` with its real digest and default limits.
    pub(crate) fn spec(name: &str, grants: &[Capability]) -> PluginSpec {
        let path = component(name);
        PluginSpec {
            name: name.to_owned(),
            digest: digest_of_file(&path).expect("read the component"),
            path,
            grants: grants.iter().copied().collect(),
            limits: Limits::default(),
        }
    }
}

#[cfg(test)]
mod tests;
