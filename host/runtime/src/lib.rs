//! The WebAssembly plugin runtime: loads components pinned by sha256 digest, links only the
//! capabilities each one was granted, and runs every call in a fresh instance with fuel and
//! memory limits.
//!
//! Three locks, all deny by default:
//! 1. link time — a component importing an interface its grant does not name is refused at
//!    load, with an error naming the plugin and the import;
//! 2. call time — every request made through a capability is checked against the grant's
//!    scope ([`grants`]) and only queued; the caller applies the queue after the call returned
//!    successfully, so a failing plugin leaves nothing half-done. Whatever a plugin answers,
//!    the daemon holds it to its invariants (an address must be a free one of the pool);
//! 3. resources — fuel per call (guest instructions), a memory cap, a bounded wasm stack, a
//!    wall-clock deadline per export enforced by epoch interruption (an OS thread advances the
//!    epoch every millisecond while calls run, and each running call checks its deadline at
//!    every tick, in wasm loops and in every wasmcni host call), a budget of host calls, a cap on the
//!    bytes one host call may copy out of the guest, and a fresh instance per call (from the
//!    pooling allocator) so a trapped instance is never reused. No wasmcni host function
//!    blocks: they answer from the snapshot taken before the call. A plugin granted WASI gets
//!    it bounded too (`wasi.rs`: sleeps end at the deadline, resources are counted, output is
//!    capped). [`limits`] lists every bound.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, Trap, UpdateDeadline};

mod audit_log;
mod cache;
mod compiler;
mod gate;
mod host;
pub mod kv;
mod wasi;

pub use audit_log::{
    timestamp_of_unix_ms, AuditEntry, AuditLog, AUDIT_LOG_KEEP, AUDIT_LOG_MAX_BYTES,
};
pub use compiler::{Compiler, CHILD_COMPILE_TIMEOUT};
pub use host::HostCall;

use cache::ArtifactCache;
use gate::Gate;
use host::{CallLimiter, Clock, HostState};
use wasmcni_core::grants;
use wasmcni_core::limits::{truncate, CONCURRENT_CALLS};
use wasmcni_core::{
    Attachment, Capability, EniRequest, EniTagRequest, Export, FailurePolicy, Grants, HostLimit,
    Import, Limits, PluginKind, PluginSpec, PodInfo, PoolSnapshot, Verb, Verdict,
    MAX_PLUGIN_MEMORY,
};

/// Bytes of a linear memory slot reset by copying back only its dirtied pages (and kept
/// resident) instead of madvise: more than a Rust plugin's call dirties (its stack top, data
/// and first heap pages; 64 KiB measured the same per call).
const RESIDENT_MEMORY_BYTES: usize = 128 << 10;

/// The same for a table slot.
const RESIDENT_TABLE_BYTES: usize = 64 << 10;

pub(crate) mod bindings {
    pub(crate) mod allocator {
        wasmtime::component::bindgen!({
            path: "../../wit",
            world: "allocator-plugin",
            // Every host function may trap: past its call's deadline or host-call budget.
            imports: { default: trappable },
        });
    }
    pub(crate) mod tagger {
        wasmtime::component::bindgen!({
            path: "../../wit",
            world: "tagger-plugin",
            imports: { default: trappable },
            with: {
                "wasmcni:plugin/types": crate::bindings::allocator::wasmcni::plugin::types,
                "wasmcni:plugin/config": crate::bindings::allocator::wasmcni::plugin::config,
                "wasmcni:plugin/log": crate::bindings::allocator::wasmcni::plugin::log,
                "wasmcni:plugin/clock": crate::bindings::allocator::wasmcni::plugin::clock,
            },
        });
    }
    pub(crate) mod policy {
        wasmtime::component::bindgen!({
            path: "../../wit",
            world: "policy-plugin",
            imports: { default: trappable },
            with: {
                "wasmcni:plugin/types": crate::bindings::allocator::wasmcni::plugin::types,
                "wasmcni:plugin/config": crate::bindings::allocator::wasmcni::plugin::config,
                "wasmcni:plugin/log": crate::bindings::allocator::wasmcni::plugin::log,
                "wasmcni:plugin/kv": crate::bindings::allocator::wasmcni::plugin::kv,
                "wasmcni:plugin/clock": crate::bindings::allocator::wasmcni::plugin::clock,
            },
        });
    }
}

use bindings::allocator::wasmcni::plugin::{
    clock, config, eni_ops, kv as kv_wit, log, pool_view, types,
};
use bindings::policy::wasmcni::plugin::netlink;

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
    /// Compiling or linking the component failed, or it is not of its configured kind.
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
    /// The daemon is shutting down and ended (or never started) the call: not the plugin's
    /// failure, so no failure policy applies; the request is answered "try again later".
    #[error("plugin {plugin}: {call} was not completed: the daemon is shutting down")]
    Stopped {
        /// Plugin name.
        plugin: String,
        /// The export called.
        call: &'static str,
    },
    /// The plugin answered with an error of its own, or an answer the host refuses.
    #[error("plugin {plugin} refused: {message}")]
    Refused {
        /// Plugin name.
        plugin: String,
        /// Its message (truncated to 1 KiB), or why the host refused its answer.
        message: String,
    },
}

/// The pod as the WIT `types.pod` record.
fn pod_to_wit(pod: &PodInfo) -> types::Pod {
    let pairs = |list: &[(String, String)]| {
        list.iter()
            .map(|(key, value)| types::Pair {
                key: key.clone(),
                value: value.clone(),
            })
            .collect()
    };
    types::Pod {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        container_id: pod.container_id.clone(),
        ifname: pod.ifname.clone(),
        annotations: pairs(&pod.annotations),
        cni_args: pairs(&pod.cni_args),
    }
}

/// One engine for every plugin of the daemon.
#[derive(Clone)]
pub struct PluginRuntime {
    engine: Engine,
    /// Compiled components kept between starts (`None`: compile every time).
    cache: Option<ArtifactCache>,
    /// Where a component missing from the cache is compiled.
    compiler: Compiler,
    /// Where plugins' `kv` state is kept (`None`: `kv` refuses writes).
    kv_dir: Option<PathBuf>,
    /// Runtime audit log of privileged requests.
    audit_log: Option<AuditLog>,
    gate: Arc<Gate>,
    /// Each plugin's `kv` state, opened once per name: the sets of a reload share it with
    /// the running set, so calls in flight and new calls never keep two copies of one file.
    kv_stores: Arc<Mutex<BTreeMap<String, Arc<kv::KvStore>>>>,
}

/// The component, ready to instantiate, as its world's bindings see it.
enum Pre {
    Allocator(bindings::allocator::AllocatorPluginPre<HostState>),
    Tagger(bindings::tagger::TaggerPluginPre<HostState>),
    Policy(bindings::policy::PolicyPluginPre<HostState>),
}

/// A loaded plugin, ready to be instantiated per call.
///
/// Its calls are synchronous and may block their thread up to their deadline: call them from
/// a blocking thread (`tokio::task::spawn_blocking`, as the daemon does), never from async
/// code (a WASI call of a plugin granted `wasi` blocks on the current tokio runtime's handle,
/// which panics inside an async context).
pub struct Plugin {
    spec: PluginSpec,
    name: Arc<str>,
    grants: Arc<Grants>,
    settings: Arc<BTreeMap<String, String>>,
    pre: Pre,
    imports: Vec<String>,
    kv: Option<Arc<KvStoreHandle>>,
    audit_log: Option<AuditLog>,
    gate: Arc<Gate>,
}

type KvStoreHandle = kv::KvStore;

/// What one successful call left behind besides its answer.
struct Finished<R> {
    answer: R,
    state: HostState,
}

impl PluginRuntime {
    /// The engine: fuel metering, epoch interruption (deadlines), a 512 KiB wasm stack,
    /// Cranelift, and the pooling instance allocator (a fresh instance per call costs
    /// microseconds); and the gate with its epoch ticker thread.
    pub fn new() -> Result<PluginRuntime, PluginError> {
        Self::with_calls(CONCURRENT_CALLS)
    }

    /// A runtime running at most `calls` plugin calls at once (tests use a few, so that
    /// filling every slot does not take every core of the machine).
    pub(crate) fn with_calls(calls: u32) -> Result<PluginRuntime, PluginError> {
        let pagemap_scan = wasmtime::PoolingAllocationConfig::is_pagemap_scan_available();
        let mut pooling = wasmtime::PoolingAllocationConfig::default();
        pooling
            .total_component_instances(calls)
            // Enough for every call at once to be one of the largest plugins (an interpreter).
            .total_core_instances(calls * host::CORE_INSTANCES_PER_CALL)
            .total_memories(calls * host::MEMORIES_PER_CALL)
            .total_tables(calls * host::TABLES_PER_CALL)
            .max_memory_size(MAX_PLUGIN_MEMORY)
            // Where the kernel has PAGEMAP_SCAN (Linux 6.7+), a slot is reset by copying back
            // (or zeroing) only the pages the last call dirtied, up to this much, and keeps
            // them resident: no madvise, so no TLB shootdown and no page faults on the next
            // call; a call that dirtied more is reset by madvise beyond it. Without the scan
            // the first bytes would be memset whether dirtied or not (a Rust guest's live
            // pages sit above its 1 MiB stack: slower than madvise, measured), so slots are
            // released as before.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(if pagemap_scan {
                RESIDENT_MEMORY_BYTES
            } else {
                0
            })
            .table_keep_resident(if pagemap_scan {
                RESIDENT_TABLE_BYTES
            } else {
                0
            });
        let mut config = Config::new();
        config.consume_fuel(true);
        config.epoch_interruption(true);
        config.max_wasm_stack(512 << 10);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling));
        let invalid = |message: String| PluginError::Invalid {
            plugin: "(engine)".into(),
            message,
        };
        let engine = Engine::new(&config).map_err(|e| invalid(format!("{e:#}")))?;
        let gate = Gate::start(engine.clone(), calls)
            .map_err(|e| invalid(format!("starting the epoch ticker thread: {e}")))?;
        Ok(PluginRuntime {
            engine,
            cache: None,
            compiler: Compiler::InProcess,
            kv_dir: None,
            audit_log: None,
            gate,
            kv_stores: Arc::default(),
        })
    }

    /// Ends every running plugin call at its next epoch tick (within a millisecond or so)
    /// and refuses new ones: the daemon is stopping.
    pub fn stop_calls(&self) {
        self.gate.stop();
    }

    /// Plugin calls running now.
    pub fn running_calls(&self) -> u32 {
        self.gate.running()
    }

    /// The audit log, when one was set.
    pub fn audit_log(&self) -> Option<&AuditLog> {
        self.audit_log.as_ref()
    }

    /// Keeps compiled components in `dir` (created 0700; refused unless private to this
    /// user), keyed by the component's digest and the engine's configuration, so a restart
    /// loads each plugin in well under a millisecond instead of compiling it again.
    pub fn with_cache(mut self, dir: &Path) -> Result<PluginRuntime, PluginError> {
        self.cache = Some(ArtifactCache::new(
            private_dir(dir, "(cache)")?,
            &self.engine,
        ));
        Ok(self)
    }

    /// Keeps plugins' `kv` state in `dir` (one `<plugin>.kv` file each, directory 0700).
    pub fn with_kv_dir(mut self, dir: &Path) -> Result<PluginRuntime, PluginError> {
        self.kv_dir = Some(private_dir(dir, "(kv)")?);
        Ok(self)
    }

    /// Records every privileged request plugins make in `log`.
    pub fn with_audit_log(mut self, log: AuditLog) -> PluginRuntime {
        self.audit_log = Some(log);
        self
    }

    /// Compiles components missing from the cache with `compiler` (with no cache, every
    /// component is compiled in process).
    pub fn with_compiler(mut self, compiler: Compiler) -> PluginRuntime {
        self.compiler = compiler;
        self
    }

    /// Compiles `bytes` (whose digest the caller verified, read from `path`), or loads the
    /// cached compilation. With a child compiler, a component missing from the cache is
    /// compiled by the child first; if the child fails, here.
    fn compile(
        &self,
        path: &Path,
        bytes: &[u8],
        digest: &str,
    ) -> Result<Component, wasmtime::Error> {
        let Some(cache) = &self.cache else {
            return Component::new(&self.engine, bytes);
        };
        if let Compiler::Child {
            program,
            args,
            timeout,
        } = &self.compiler
        {
            if !cache.path(digest).exists() {
                let started = Instant::now();
                match compiler::run_child(program, args, *timeout, path, digest, cache.dir()) {
                    Ok(()) if cache.path(digest).exists() => tracing::info!(
                        component = %path.display(),
                        ms = started.elapsed().as_millis() as u64,
                        "compiled in a child process into the cache"
                    ),
                    Ok(()) => tracing::warn!(
                        component = %path.display(),
                        "the child compiler succeeded but left no artifact in the cache; compiling in the daemon"
                    ),
                    Err(failed) => {
                        tracing::warn!(
                            component = %path.display(),
                            "compiling in a child process failed ({}); compiling in the daemon",
                            failed.message
                        );
                        if let Some(pid) = failed.pid {
                            cache.remove_temporary_of(digest, pid);
                        }
                    }
                }
            }
        }
        cache.load_or_compile(&self.engine, bytes, digest)
    }

    /// Compiles the component at `path`, whose sha256 must be `digest`, into the cache (what
    /// `wasmcni-host compile-plugin`, the daemon's child compiler, runs). Nothing to do when
    /// the cache already holds it whole.
    pub fn precompile(&self, path: &Path, digest: &str) -> Result<(), PluginError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            plugin: name.clone(),
            path: path.to_owned(),
            source,
        })?;
        let actual = digest_of(&bytes);
        if actual != digest {
            return Err(PluginError::DigestMismatch {
                plugin: name,
                path: path.to_owned(),
                expected: digest.to_owned(),
                actual,
            });
        }
        let invalid = |message: String| PluginError::Invalid {
            plugin: name.clone(),
            message,
        };
        let cache = self
            .cache
            .as_ref()
            .ok_or_else(|| invalid("no artifact cache to compile into".into()))?;
        cache
            .compile_into(&self.engine, &bytes, digest)
            .map_err(invalid)
    }

    /// A linker offering `types`, `config` and the interfaces of `capabilities`, nothing else.
    fn linker(
        &self,
        capabilities: impl IntoIterator<Item = Capability>,
    ) -> wasmtime::Result<Linker<HostState>> {
        let mut linker: Linker<HostState> = Linker::new(&self.engine);
        types::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        config::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        for capability in capabilities {
            match capability {
                Capability::PoolView => {
                    pool_view::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
                }
                Capability::EniOps => {
                    eni_ops::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
                }
                Capability::Netlink => {
                    netlink::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
                }
                Capability::Log => {
                    log::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
                }
                Capability::Kv => {
                    kv_wit::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
                }
                Capability::Clock => {
                    clock::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
                }
                Capability::Wasi => wasi::add_to_linker(&mut linker),
            }?;
        }
        Ok(linker)
    }

    /// Loads a plugin: verifies the digest, refuses ungranted imports by name, links only the
    /// granted interfaces, checks the component implements its kind's world, pre-instantiates,
    /// and starts it once with its calls' limits (one that cannot start would fail every call).
    pub fn load(&self, spec: &PluginSpec) -> Result<Plugin, PluginError> {
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
            .compile(&spec.path, &bytes, &actual)
            .map_err(|e| invalid(format!("not a valid component: {e:#}")))?;
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let names = || imports.iter().chain(&exports);
        if let Some(refusal) = grants::version_refusal(names()) {
            return Err(invalid(refusal));
        }
        // A component built against a newer 0.3.x links only if it uses nothing this version
        // lacks; when linking fails, say which version it wanted.
        let newer = grants::newest_newer(names());
        // An interface of that newer version this daemon does not know is no grant's to give.
        if let Some(refusal) = newer
            .as_deref()
            .and_then(|version| grants::unknown_newer_import(&imports, version))
        {
            return Err(invalid(refusal));
        }
        let refused: Vec<String> = imports
            .iter()
            .filter(|import| match Import::classify(import) {
                Import::Free => false,
                Import::Needs(capability) => !spec.grants.has(capability),
                Import::Foreign => true,
            })
            .cloned()
            .collect();
        if !refused.is_empty() {
            return Err(PluginError::Ungranted {
                plugin,
                imports: refused,
                granted: spec
                    .grants
                    .capabilities
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
            });
        }
        let link = |e: wasmtime::Error| match &newer {
            Some(version) => invalid(grants::newer_link_refusal(version, &format!("{e:#}"))),
            None => invalid(format!("linking: {e:#}")),
        };
        let linker = self
            .linker(spec.grants.capabilities.iter().copied())
            .map_err(link)?;
        let instance_pre = linker.instantiate_pre(&component).map_err(link)?;
        let not_kind = |e: wasmtime::Error| {
            invalid(format!(
                "configured as kind {}, but the component does not implement the {} world: {e:#}",
                spec.kind, spec.kind
            ))
        };
        let pre = match spec.kind {
            PluginKind::Allocator => Pre::Allocator(
                bindings::allocator::AllocatorPluginPre::new(instance_pre).map_err(not_kind)?,
            ),
            PluginKind::Tagger => {
                Pre::Tagger(bindings::tagger::TaggerPluginPre::new(instance_pre).map_err(not_kind)?)
            }
            PluginKind::Policy => {
                Pre::Policy(bindings::policy::PolicyPluginPre::new(instance_pre).map_err(not_kind)?)
            }
        };
        let kv = match (&self.kv_dir, spec.grants.has(Capability::Kv)) {
            (Some(dir), true) => {
                let mut stores = self.kv_stores.lock().unwrap_or_else(|p| p.into_inner());
                let store = match stores.get(&spec.name) {
                    Some(store) => store.clone(),
                    None => Arc::new(
                        kv::KvStore::open(
                            dir.join(format!("{}.kv", spec.name)),
                            spec.grants.kv.max_bytes,
                        )
                        .map_err(invalid)?,
                    ),
                };
                store.set_max_bytes(spec.grants.kv.max_bytes);
                stores.insert(spec.name.clone(), store.clone());
                Some(store)
            }
            _ => None,
        };
        let loaded = Plugin {
            name: Arc::from(spec.name.as_str()),
            grants: Arc::new(spec.grants.clone()),
            settings: Arc::new(spec.settings.clone()),
            spec: spec.clone(),
            pre,
            imports,
            kv,
            audit_log: self.audit_log.clone(),
            gate: self.gate.clone(),
        };
        loaded.init()?;
        Ok(loaded)
    }
}

fn private_dir(dir: &Path, what: &str) -> Result<PathBuf, PluginError> {
    use std::os::unix::fs::DirBuilderExt;
    let invalid = |message: String| PluginError::Invalid {
        plugin: what.into(),
        message,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| invalid(format!("creating {}: {e}", dir.display())))?;
    // Only this daemon may write there: cached artifacts are trusted as machine code and kv
    // files as the plugins' own state.
    wasmcni_cni::proto::check_private(dir, true).map_err(|e| invalid(e.to_string()))?;
    Ok(dir.to_owned())
}

impl Plugin {
    /// Calls the component's `init` once, on an instance of its own with the limits of its
    /// calls. A component that cannot start within them (its initial linear memory above
    /// `memory_bytes`, a start function that traps or runs out of fuel) would fail every call
    /// with the same error, and one whose `init` refuses its settings would fail every call
    /// the settings reach: [`PluginRuntime::load`] refuses both with the reason. What `init`
    /// asks of `eni-ops`, `netlink` or `kv` is never applied.
    fn init(&self) -> Result<(), PluginError> {
        let export = match &self.pre {
            Pre::Allocator(_) => Export::Allocate,
            Pre::Tagger(_) => Export::Tags,
            Pre::Policy(_) => Export::Evaluate,
        };
        let init = |store: &mut Store<HostState>| match &self.pre {
            Pre::Allocator(pre) => pre
                .instantiate(&mut *store)?
                .wasmcni_plugin_allocator()
                .call_init(store),
            Pre::Tagger(pre) => pre
                .instantiate(&mut *store)?
                .wasmcni_plugin_tagger()
                .call_init(store),
            Pre::Policy(pre) => pre
                .instantiate(&mut *store)?
                .wasmcni_plugin_policy()
                .call_init(store),
        };
        let done = self.run(export, "init", Arc::new(PoolSnapshot::default()), init)?;
        self.finish("init", done.state, false);
        done.answer.map_err(|message| PluginError::Invalid {
            plugin: self.spec.name.clone(),
            message: format!("refused to start (init): {}", truncate(message)),
        })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Its configuration.
    pub fn spec(&self) -> &PluginSpec {
        &self.spec
    }

    /// What the component imports (for the audit report).
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// Runs `call` (of `export`) on a fresh instance with the plugin's limits, `snapshot` as
    /// its view: fuel, memory, the export's deadline (the wait for an instance slot included),
    /// the host-call budget and the bytes one host call may pass in.
    fn run<R>(
        &self,
        export: Export,
        call: &'static str,
        snapshot: Arc<PoolSnapshot>,
        invoke: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<Finished<R>, PluginError> {
        let limits = &self.spec.limits;
        let budget = limits.deadline(export);
        let deadline = Instant::now() + budget;
        let trapped = |reason: String| PluginError::Trapped {
            plugin: self.spec.name.clone(),
            call,
            reason: truncate(reason),
        };
        let stopped = || PluginError::Stopped {
            plugin: self.spec.name.clone(),
            call,
        };
        let _slot = self
            .gate
            .enter(deadline, budget)
            .map_err(|limit| match limit {
                HostLimit::ShuttingDown => stopped(),
                other => trapped(other.to_string()),
            })?;
        let clock = Clock {
            deadline,
            budget,
            gate: self.gate.clone(),
        };
        let mut state = HostState::new(
            self.name.clone(),
            self.grants.clone(),
            self.settings.clone(),
            snapshot,
            CallLimiter::new(limits.memory_bytes),
            clock,
            limits.host_calls,
            self.kv.clone(),
        );
        let wasi_granted = self.grants.has(Capability::Wasi);
        if wasi_granted {
            let call_wasi = wasi::CallWasi::new(&self.grants.wasi, deadline).map_err(trapped)?;
            state.wasi = Some(Box::new(call_wasi));
        }
        let mut store = Store::new(self.engine(), state);
        store.limiter(|s| &mut s.limits);
        // WASI's streams and pollables are bounded here as in the call's resource table (a
        // handle lent to a call counts twice: a poll of N pollables takes 2N). The wasmcni
        // interfaces pass no resources, so other plugins keep wasmtime's default.
        if wasi_granted {
            store.set_max_component_handles(2 * wasi::MAX_WASI_RESOURCES);
        }
        let kv_quota = self.kv.as_ref().map(|_| self.spec.grants.kv.max_bytes);
        store.set_hostcall_fuel(Limits::hostcall_bytes(kv_quota));
        // Every tick while the call runs: stop it once its deadline passed or the daemon stops.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|context| {
            context.data().clock.check()?;
            Ok(UpdateDeadline::Continue(1))
        });
        store
            .set_fuel(limits.fuel)
            .map_err(|e| trapped(describe_trap(&e, limits)))?;
        let outcome = invoke(&mut store);
        let metrics = wasmcni_telemetry::metrics::Metrics::global();
        let label = wasmcni_telemetry::metrics::PluginCallLabel {
            plugin: self.spec.name.clone(),
            call: call.to_owned(),
        };
        let used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        metrics.plugin_fuel.get_or_create(&label).inc_by(used);
        metrics
            .plugin_host_calls
            .get_or_create(&label)
            .inc_by(u64::from(store.data().calls()));
        match outcome {
            Ok(answer) => Ok(Finished {
                answer,
                state: store.into_data(),
            }),
            Err(e) => {
                let shutting_down = e
                    .chain()
                    .any(|e| matches!(e.downcast_ref(), Some(HostLimit::ShuttingDown)));
                let error = if shutting_down {
                    stopped()
                } else {
                    metrics.plugin_traps.get_or_create(&label).inc();
                    // An interpreter prints why it failed (a traceback) before it traps.
                    let output = store.data().wasi.as_ref().map(|w| w.output_tail());
                    match output.filter(|text| !text.is_empty()) {
                        // The trap is cut first, so the output's end (trimmed and escaped
                        // by `output_tail`) survives the message's 1 KiB cut.
                        Some(text) => trapped(format!(
                            "{}; its output ended with: {text}",
                            wasmcni_core::limits::truncate_to(describe_trap(&e, limits), 300),
                        )),
                        None => trapped(describe_trap(&e, limits)),
                    }
                };
                self.finish(call, store.into_data(), false);
                Err(error)
            }
        }
    }

    fn engine(&self) -> &Engine {
        match &self.pre {
            Pre::Allocator(pre) => pre.engine(),
            Pre::Tagger(pre) => pre.engine(),
            Pre::Policy(pre) => pre.engine(),
        }
    }

    /// Ends a call: keeps its `kv` writes only if it `succeeded`, and writes its privileged
    /// requests to the audit log (queued, refused, or dropped with the failed call).
    fn finish(&self, call: &str, mut state: HostState, succeeded: bool) {
        if let (true, Some(txn), Some(store)) = (succeeded, state.kv.take(), &self.kv) {
            if txn.is_dirty() {
                if let Err(e) = store.commit(txn) {
                    tracing::warn!(plugin = %self.name, "kv writes of {call} not kept: {e}");
                    state.host_calls.push(HostCall {
                        call: "kv.commit".into(),
                        args: serde_json::Value::Null,
                        refused: Some(e),
                    });
                }
            }
        }
        let Some(audit) = &self.audit_log else {
            return;
        };
        for host_call in &state.host_calls {
            let outcome = match (&host_call.refused, succeeded) {
                (Some(_), _) => "refused",
                (None, true) => "accepted",
                (None, false) => "dropped",
            };
            audit.record(&AuditEntry {
                ts_ms: now_unix_ms(),
                plugin: &self.name,
                call: &host_call.call,
                args: host_call.args.clone(),
                outcome,
                result: host_call.refused.clone().unwrap_or_else(|| {
                    if succeeded {
                        format!("queued by {call}")
                    } else if call == "init" {
                        "made in init; init's requests are never applied".to_owned()
                    } else {
                        format!("{call} failed; not applied")
                    }
                }),
                duration_us: 0,
            });
        }
        if state.unrecorded_calls > 0 {
            audit.record(&AuditEntry {
                ts_ms: now_unix_ms(),
                plugin: &self.name,
                call: "(more requests)",
                args: serde_json::json!({ "count": state.unrecorded_calls }),
                outcome: "truncated",
                result: format!(
                    "{} further requests in one {call} call were not recorded individually",
                    state.unrecorded_calls
                ),
                duration_us: 0,
            });
        }
    }

    fn refused(&self, message: String) -> PluginError {
        PluginError::Refused {
            plugin: self.spec.name.clone(),
            message: truncate(message),
        }
    }

    fn wrong_kind(&self, call: &'static str) -> PluginError {
        PluginError::Invalid {
            plugin: self.spec.name.clone(),
            message: format!("is a {} plugin; it has no {call}", self.spec.kind),
        }
    }

    /// Asks an allocator for `pod`'s address. The answer is only a proposal: the caller checks
    /// it against the pool and the datastore.
    pub fn allocate(
        &self,
        snapshot: impl Into<Arc<PoolSnapshot>>,
        pod: &PodInfo,
    ) -> Result<Ipv4Addr, PluginError> {
        let Pre::Allocator(pre) = &self.pre else {
            return Err(self.wrong_kind("allocate"));
        };
        let request = pod_to_wit(pod);
        let done = self.run(Export::Allocate, "allocate", snapshot.into(), |store| {
            pre.instantiate(&mut *store)?
                .wasmcni_plugin_allocator()
                .call_allocate(store, &request)
        })?;
        let ok = done.answer.is_ok();
        self.finish("allocate", done.state, ok);
        match done.answer.map_err(|message| self.refused(message))? {
            types::IpAddress::V4(ip) => Ok(Ipv4Addr::from(ip)),
            types::IpAddress::V6(ip) => Err(self.refused(format!(
                "answer refused by the host: {} is an IPv6 address, and this node's pool hands \
                 pods IPv4 addresses",
                std::net::Ipv6Addr::from((u128::from(ip.high) << 64) | u128::from(ip.low))
            ))),
        }
    }

    /// Asks an allocator to plan the pool; returns the ENI requests it made that its grant
    /// and the instance's limits allow, in order. An error drops every request.
    pub fn plan(&self, snapshot: PoolSnapshot) -> Result<Vec<EniRequest>, PluginError> {
        let Pre::Allocator(pre) = &self.pre else {
            return Err(self.wrong_kind("plan"));
        };
        let mut done = self.run(Export::Plan, "plan", Arc::new(snapshot), |store| {
            pre.instantiate(&mut *store)?
                .wasmcni_plugin_allocator()
                .call_plan(store)
        })?;
        let requests = std::mem::take(&mut done.state.eni_requests);
        let ok = done.answer.is_ok();
        self.finish("plan", done.state, ok);
        done.answer.map_err(|message| self.refused(message))?;
        Ok(requests)
    }

    /// Asks a tagger for a new ENI's tags, and holds the answer to the plugin's `tag_keys`
    /// scope and the reserved keys (the whole answer is refused otherwise). `own` is how many
    /// tags the daemon itself adds.
    pub fn tags(
        &self,
        request: &EniTagRequest,
        own: usize,
    ) -> Result<Vec<(String, String)>, PluginError> {
        let Pre::Tagger(pre) = &self.pre else {
            return Err(self.wrong_kind("tags"));
        };
        let wit = bindings::tagger::exports::wasmcni::plugin::tagger::EniRequest {
            instance_id: request.instance_id.clone(),
            instance_type: request.instance_type.clone(),
            availability_zone: request.availability_zone.clone(),
            subnet_id: request.subnet_id.clone(),
            cluster_name: request.cluster_name.clone(),
        };
        let done = self.run(
            Export::Tags,
            "tags",
            Arc::new(PoolSnapshot::default()),
            |store| {
                pre.instantiate(&mut *store)?
                    .wasmcni_plugin_tagger()
                    .call_tags(store, &wit)
            },
        )?;
        let ok = done.answer.is_ok();
        self.finish("tags", done.state, ok);
        let tags: Vec<(String, String)> = done
            .answer
            .map_err(|message| self.refused(message))?
            .into_iter()
            .map(|pair| (pair.key, pair.value))
            .collect();
        grants::check_tags(&tags, &self.spec.tag_keys, own)
            .map_err(|why| self.refused(format!("answer refused by the host: {why}")))?;
        Ok(tags)
    }

    /// Asks a policy hook about `attachment`.
    pub fn evaluate(&self, attachment: &Attachment) -> Result<Verdict, PluginError> {
        let Pre::Policy(pre) = &self.pre else {
            return Err(self.wrong_kind("evaluate"));
        };
        use bindings::policy::exports::wasmcni::plugin::policy as wit;
        let request = wit::Attachment {
            verb: match attachment.verb {
                Verb::Add => wit::Verb::Add,
                Verb::Del => wit::Verb::Del,
                Verb::Check => wit::Verb::Check,
            },
            pod: pod_to_wit(&attachment.pod),
            addresses: attachment
                .addresses
                .iter()
                .filter_map(|net| match net {
                    ipnet::IpNet::V4(net) => Some(types::Cidr {
                        network: u32::from(net.network()),
                        prefix_len: net.prefix_len(),
                    }),
                    ipnet::IpNet::V6(_) => None,
                })
                .collect(),
            addresses_v6: attachment
                .addresses
                .iter()
                .filter_map(|net| match net {
                    ipnet::IpNet::V6(net) => {
                        let bits = u128::from(net.network());
                        Some(types::CidrV6 {
                            network: types::Ipv6 {
                                high: (bits >> 64) as u64,
                                low: bits as u64,
                            },
                            prefix_len: net.prefix_len(),
                        })
                    }
                    ipnet::IpNet::V4(_) => None,
                })
                .collect(),
            eni_id: attachment.eni_id.clone(),
            subnet_id: attachment.subnet_id.clone(),
            chained: attachment.chained,
        };
        let call = match attachment.verb {
            Verb::Add => "evaluate(add)",
            Verb::Del => "evaluate(del)",
            Verb::Check => "evaluate(check)",
        };
        let mut done = self.run(
            Export::Evaluate,
            call,
            Arc::new(PoolSnapshot::default()),
            |store| {
                pre.instantiate(&mut *store)?
                    .wasmcni_plugin_policy()
                    .call_evaluate(store, &request)
            },
        )?;
        let adjustments = std::mem::take(&mut done.state.netlink_requests);
        let verdict = match done.answer {
            wit::Verdict::Allow => Verdict::Allow(adjustments),
            wit::Verdict::Deny(reason) => Verdict::Deny(truncate(reason)),
        };
        // A deny drops the adjustments; kv writes are kept either way (the hook succeeded).
        self.finish(call, done.state, true);
        Ok(verdict)
    }
}

/// The wall clock in Unix milliseconds ([`wasmcni_clock`]: the system's, or a simulation's).
pub fn now_unix_ms() -> u64 {
    wasmcni_clock::unix_ms()
}

/// What a reviewer needs to know about one plugin, read from the component itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Inspection {
    /// Plugin name.
    pub name: String,
    /// Configured kind.
    pub kind: PluginKind,
    /// The world the component's exports match (`None` when they match no world).
    pub world: Option<PluginKind>,
    /// The component file.
    pub path: PathBuf,
    /// The registry manifest it is pulled from, if it comes from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Digest pinned by the configuration.
    pub pinned_digest: String,
    /// Digest of the file as it is now (`None` when it cannot be read).
    pub actual_digest: Option<String>,
    /// Every import of the component (WIT interface names).
    pub imports: Vec<String>,
    /// Every export of the component.
    pub exports: Vec<String>,
    /// Each WASI interface the component imports and what the daemon gives it there.
    pub wasi: Vec<WasiUse>,
    /// Capabilities granted, with their scopes.
    pub grants: Grants,
    /// Tag keys a tagger may set.
    pub tag_keys: Vec<String>,
    /// Imports the grant does not cover: the daemon would refuse to load it.
    pub under_granted: Vec<String>,
    /// Grants the component never imports: harmless now, but more than it needs.
    pub over_granted: Vec<String>,
    /// Per-call limits.
    pub limits: Limits,
    /// What each hook's failure does.
    pub on_failure: FailurePolicy,
    /// Its settings.
    pub settings: BTreeMap<String, String>,
    /// Why the component could not be inspected or would not load, if so.
    pub problem: Option<String>,
}

/// A WASI interface a component imports, and what it gets (for the audit report).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WasiUse {
    /// The import (`wasi:cli/environment@0.2.9`).
    pub interface: String,
    /// What the daemon gives it under the plugin's grant: `granted: …`, `stubbed: …`, or
    /// why it is refused.
    pub treatment: String,
}

/// The WASI imports among `imports` and their treatment under `grants`.
fn wasi_uses(imports: &[String], grants: &Grants) -> Vec<WasiUse> {
    imports
        .iter()
        .filter(|import| import.starts_with("wasi:"))
        .map(|import| WasiUse {
            interface: import.clone(),
            treatment: match grants::wasi::treatment(import, &grants.wasi) {
                Some(_) if !grants.has(Capability::Wasi) => {
                    "refused at load: `wasi` is not granted".into()
                }
                Some(treatment) => treatment,
                None => "refused at load: not a WASI 0.2 interface the daemon links".into(),
            },
        })
        .collect()
}

/// The kind whose interface `exports` holds: `wasmcni:plugin/<kind>@0.3.x`.
fn world_of(exports: &[String]) -> Option<PluginKind> {
    PluginKind::ALL.into_iter().find(|kind| {
        exports
            .iter()
            .any(|export| grants::exported_kind(export) == Some(*kind))
    })
}

impl PluginRuntime {
    /// Inspects a plugin for the audit report: verifies the digest and lists imports, exports,
    /// the world, and what is under- or over-granted. Never fails; problems are reported in
    /// the result.
    pub fn inspect(&self, spec: &PluginSpec) -> Inspection {
        let mut inspection = Inspection {
            name: spec.name.clone(),
            kind: spec.kind,
            world: None,
            path: spec.path.clone(),
            origin: spec.origin.as_ref().map(ToString::to_string),
            pinned_digest: spec.digest.clone(),
            actual_digest: None,
            imports: Vec::new(),
            exports: Vec::new(),
            wasi: Vec::new(),
            grants: spec.grants.clone(),
            tag_keys: spec.tag_keys.iter().cloned().collect(),
            under_granted: Vec::new(),
            over_granted: Vec::new(),
            limits: spec.limits.clone(),
            on_failure: spec.on_failure.clone(),
            settings: spec.settings.clone(),
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
        // The precompiled cache serves a file whose digest it knows (`/v1/plugins` and the
        // audit report need no fresh compilation of a plugin the daemon runs).
        let compiled = if actual == spec.digest {
            self.compile(&spec.path, &bytes, &actual)
        } else {
            Component::new(&self.engine, &bytes)
        };
        inspection.actual_digest = Some(actual);
        let component = match compiled {
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
        inspection.world = world_of(&inspection.exports);
        inspection.wasi = wasi_uses(&inspection.imports, &spec.grants);
        if let Some(refusal) =
            grants::version_refusal(inspection.imports.iter().chain(&inspection.exports))
        {
            inspection.problem.get_or_insert(refusal);
        }
        let exports_kind = inspection
            .exports
            .iter()
            .any(|export| grants::exported_kind(export) == Some(spec.kind));
        if exports_kind {
            inspection.world = Some(spec.kind);
        }
        // Built against a newer 0.3.x: it loads only if it links with what this version offers.
        if let Some(version) =
            grants::newest_newer(inspection.imports.iter().chain(&inspection.exports))
        {
            let refusal =
                grants::unknown_newer_import(&inspection.imports, &version).or_else(|| {
                    self.linker(Capability::ALL)
                        .and_then(|linker| linker.instantiate_pre(&component))
                        .err()
                        .map(|e| grants::newer_link_refusal(&version, &format!("{e:#}")))
                });
            if let Some(refusal) = refusal {
                inspection.problem.get_or_insert(refusal);
            }
        }
        if inspection.problem.is_none() && !exports_kind {
            inspection.problem = Some(format!(
                "configured as {}, but its exports [{}] are not the {} world",
                spec.kind,
                inspection.exports.join(", "),
                spec.kind
            ));
        }
        let mut used = BTreeSet::new();
        for import in &inspection.imports {
            match Import::classify(import) {
                Import::Needs(capability) if spec.grants.has(capability) => {
                    used.insert(capability);
                }
                Import::Free => {}
                _ => inspection.under_granted.push(import.clone()),
            }
        }
        inspection.over_granted = spec
            .grants
            .capabilities
            .iter()
            .filter(|c| !used.contains(c))
            .map(|c| c.to_string())
            .collect();
        inspection
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

/// What stopped a call, in words an operator and a plugin author can act on.
fn describe_trap(error: &wasmtime::Error, limits: &Limits) -> String {
    if let Some(limit) = error.chain().find_map(|e| e.downcast_ref::<HostLimit>()) {
        return limit.to_string();
    }
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
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return format!("exited with status {} (wasi:cli/exit)", exit.0);
    }
    // The causes, without the wasm backtrace wasmtime adds as context (frames of an
    // interpreter's internals, which would push the cause past the message's cut).
    let chain = error
        .chain()
        .map(ToString::to_string)
        .filter(|cause| !cause.starts_with("error while executing at wasm backtrace"))
        .collect::<Vec<_>>()
        .join(": ");
    if chain.contains("store handle limit exceeded")
        || chain.contains("resource table has no free keys")
    {
        return format!(
            "held more than {} WASI resources at once (open files, streams, pollables)",
            wasi::MAX_WASI_RESOURCES
        );
    }
    if chain.contains("fuel allocated for hostcalls has been exhausted") {
        return "passed more data to the host in one call than it accepts (hostcall fuel; an oversized string or list)".to_owned();
    }
    chain
}

/// Test support for this crate's tests and the daemon's: the components `wasmcni-plugin-build`
/// writes under `target/plugins`, as specs. Compiled always (a feature for it would build this
/// crate and everything above it twice in one workspace test run); hidden from the docs.
#[doc(hidden)]
pub mod testing {
    use super::*;

    /// The built component `name`; panics with the command to build it when missing.
    pub fn component(name: &str) -> PathBuf {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
        let path = target.join("plugins").join(format!("{name}.wasm"));
        assert!(
            path.exists(),
            "{} is missing: build the plugins first with `cargo run --release -p wasmcni-plugin-build -- tests/plugins`",
            path.display()
        );
        path
    }

    /// A spec for the built component `name` of `kind` with its real digest, default limits
    /// and narrowest scopes.
    pub fn spec(name: &str, kind: PluginKind, grants: &[Capability]) -> PluginSpec {
        let path = component(name);
        let digest = digest_of_file(&path).expect("read the component");
        PluginSpec::new(name, kind, path, digest, Grants::of(grants))
    }

    /// `spec` with these `[plugins.config]` settings.
    #[cfg(test)]
    pub(crate) fn with_settings(mut spec: PluginSpec, settings: &[(&str, &str)]) -> PluginSpec {
        spec.settings = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        spec
    }

    /// A pod of namespace `default`, container `c1`, interface `eth0`.
    #[cfg(test)]
    pub(crate) fn pod() -> PodInfo {
        PodInfo {
            namespace: Some("default".into()),
            name: Some("web".into()),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            ..PodInfo::default()
        }
    }

    /// A static pool of `blocks` with `in_use` held.
    #[cfg(test)]
    pub(crate) fn snapshot(blocks: &[&str], in_use: &[&str]) -> PoolSnapshot {
        use wasmcni_core::ipam::{AddressBlock, BlockKind, Inventory};
        PoolSnapshot::of_static(
            Inventory {
                blocks: blocks
                    .iter()
                    .map(|cidr| AddressBlock {
                        cidr: cidr.parse().unwrap(),
                        route_table: None,
                        kind: BlockKind::StaticRange,
                        eni_id: None,
                    })
                    .collect(),
                excluded: Default::default(),
                ipv6: Vec::new(),
                excluded_v6: Default::default(),
            },
            in_use.iter().map(|ip| ip.parse().unwrap()).collect(),
        )
    }

    /// The audit log's entries.
    #[cfg(test)]
    pub(crate) fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[cfg(test)]
mod package_tests;
#[cfg(test)]
mod sandbox_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod wasi_tests;
