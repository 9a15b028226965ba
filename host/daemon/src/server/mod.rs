//! The node daemon's request server: a root-only Unix socket, one task per connection.
//!
//! A connection carries one request. Each is read under a deadline and a size limit, so a
//! client that sends junk, too much, or nothing is answered (or dropped) without blocking
//! anyone else, and a panic in one request's task ends that task only.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use wasmcni_cni::error::{codes, CniError};
use wasmcni_cni::proto::{
    pending_del_dir, DaemonRequest, DaemonResponse, FrameError, PROTOCOL_VERSION,
};
use wasmcni_cni::version::CniVersion;
use wasmcni_config::{ClusterConfig, ProviderKind};
use wasmcni_core::eni::EniProvider;
use wasmcni_core::ipam::{Provider, StaticProvider};
use wasmcni_datapath::Datapath;
use wasmcni_datastore::{Datastore, WalOptions};
use wasmcni_runtime::{AuditLog, Compiler, PluginRuntime};

pub(crate) mod cooling;
pub mod framed;
pub mod handler;
pub mod install;
pub mod keylock;
pub mod ops;
pub mod plugins;
pub mod recovery;
pub mod warm_pool;

use plugins::PluginSet;

pub use handler::Handler;
pub use recovery::ReconcileReport;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] wasmcni_config::ConfigError),
    /// The datastore could not be opened.
    #[error("datastore in {dir}: {source}")]
    Datastore {
        /// State directory.
        dir: PathBuf,
        /// Cause.
        source: wasmcni_datastore::DatastoreError,
    },
    /// The address provider could not start (IMDS or EC2 unreachable, refused, malformed).
    #[error("provider: {0}")]
    Provider(#[source] wasmcni_core::eni::Ec2Error),
    /// The caller's EC2 provider does not match the configuration's `provider.kind`.
    #[error("provider.kind is \"{configured}\", but {}", if *.started { "an EC2 provider was started" } else { "no EC2 provider was started" })]
    ProviderMismatch {
        /// What the configuration names.
        configured: ProviderKind,
        /// Whether an EC2 provider was given.
        started: bool,
    },
    /// The EC2 provider serves another address family than the configuration names (it was
    /// not started from this configuration).
    #[error("provider.ec2.ip_family is \"{configured}\", but the EC2 provider serves {provider}")]
    ProviderFamily {
        /// What the configuration names.
        configured: wasmcni_core::ipam::IpFamily,
        /// What the provider serves.
        provider: wasmcni_core::ipam::IpFamily,
    },
    /// The node could not be prepared for the EC2 provider (ENI links, SNAT).
    #[error("provider: {0}")]
    PrepareProvider(#[source] warm_pool::PrepareError),
    /// A plugin could not be loaded (digest, grants, not a valid component).
    #[error(transparent)]
    Plugin(wasmcni_runtime::PluginError),
    /// The node could not be prepared (IPv4 forwarding).
    #[error("preparing the node failed: {0}")]
    PrepareNode(#[source] wasmcni_datapath::DatapathError),
    /// IPv6 pods on links below IPv6's minimum MTU (the uplink's, `datapath.mtu` being unset).
    #[error("the pods' MTU would be {mtu} (the uplink's), below IPv6's minimum of 1280: IPv6 pods need datapath.mtu of at least 1280 and a path that carries it")]
    Ipv6Mtu {
        /// The MTU the pods would get.
        mtu: u32,
    },
    /// The socket could not be set up.
    #[error("socket {path}: {step}: {source}")]
    Socket {
        /// Socket path.
        path: PathBuf,
        /// What was being done.
        step: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The plugin runtime of a daemon with `config`: compiled components cached (components the
/// cache lacks compiled by `compiler`), `kv` state and the audit log under the state
/// directory.
pub fn plugin_runtime(
    config: &ClusterConfig,
    compiler: Compiler,
) -> Result<PluginRuntime, wasmcni_runtime::PluginError> {
    let state = &config.daemon.state_dir;
    Ok(PluginRuntime::new()?
        .with_cache(&state.join("plugin-cache"))?
        .with_compiler(compiler)
        .with_kv_dir(&state.join("plugin-kv"))?
        .with_audit_log(AuditLog::new(state.join("plugin-audit.log"))))
}

/// Opens the datastore, reconciles it with the node and returns a handler ready to serve.
///
/// `ec2` is the EC2 provider when the configuration's `provider.kind` is `ec2`, started by
/// the caller from this configuration's `[provider.ec2]` (`wasmcni_ec2::Ec2Provider::start`:
/// this crate sees only the [`EniProvider`] trait and links no AWS SDK), whose settings the
/// daemon reads too; the static provider is built here from the configuration. `compiler`
/// compiles the plugins the cache lacks (the daemon: a child process of itself).
pub async fn start<D: Datapath>(
    config: ClusterConfig,
    datapath: D,
    ec2: Option<Arc<dyn EniProvider>>,
    compiler: Compiler,
) -> Result<(Arc<Handler<D>>, ReconcileReport), StartError> {
    if (config.provider.kind == ProviderKind::Ec2) != ec2.is_some() {
        return Err(StartError::ProviderMismatch {
            configured: config.provider.kind,
            started: ec2.is_some(),
        });
    }
    if let Some(ec2) = &ec2 {
        let configured = config.ec2().ip_family;
        if ec2.family() != configured {
            return Err(StartError::ProviderFamily {
                configured,
                provider: ec2.family(),
            });
        }
    }
    let provider: Arc<dyn Provider> = match &ec2 {
        Some(ec2) => ec2.clone(),
        None => Arc::new(StaticProvider::new(&config.static_pool("configuration")?)),
    };
    let (store, recovery) = Datastore::open(&config.daemon.state_dir, WalOptions::default())
        .map_err(|source| StartError::Datastore {
            dir: config.daemon.state_dir.clone(),
            source,
        })?;
    tracing::info!(
        records = recovery.records_replayed,
        torn_tail_bytes = recovery.torn_tail_bytes,
        incomplete = recovery.incomplete.len(),
        lost = recovery.lost.len(),
        repaired = recovery.repaired.len(),
        provider = provider.name(),
        "datastore recovered"
    );
    datapath
        .prepare_node()
        .await
        .map_err(StartError::PrepareNode)?;
    // IPv6 pods (and dual-stack pods' IPv6 traffic) from a static pool leave by the link of
    // the node's IPv6 default route (the EC2 provider prepares its own).
    let family = provider.view().family;
    let static_v6 = family.has_ipv6() && ec2.is_none();
    let uplink_v6 = if static_v6 {
        datapath
            .uplink_v6()
            .await
            .map_err(StartError::PrepareNode)?
    } else {
        None
    };
    // A pod's veth no bigger than the path out of the node: for IPv6 pods the IPv6 uplink's,
    // else (or without one) the IPv4 default route's link; for dual-stack pods the smaller of
    // the two.
    let uplink = if config.pod_mtu_follows_uplink() {
        let v6 = uplink_v6
            .as_ref()
            .and_then(|uplink| uplink.mtu)
            .map(|mtu| mtu.clamp(576, 65_535));
        let v4 = if family.has_ipv4() || v6.is_none() {
            datapath
                .uplink_mtu()
                .await
                .map_err(StartError::PrepareNode)?
        } else {
            None
        };
        match (v4, v6) {
            (Some(v4), Some(v6)) => Some(v4.min(v6)),
            (v4, v6) => v6.or(v4),
        }
    } else {
        None
    };
    let pod_mtu = config.pod_mtu(uplink);
    if static_v6 {
        if pod_mtu < wasmcni_config::IPV6_MIN_MTU {
            return Err(StartError::Ipv6Mtu { mtu: pod_mtu });
        }
        // Forwarding on, and router advertisements still accepted where the node learns its
        // IPv6 default route.
        datapath
            .prepare_ipv6(uplink_v6.as_ref().map(|uplink| uplink.name.as_str()))
            .await
            .map_err(StartError::PrepareNode)?;
    }
    // IPv6 pods' IPv4 egress leaves as the node's own IPv4 address; switched off, a rule an
    // earlier run installed goes.
    if family == wasmcni_core::ipam::IpFamily::Ipv6 {
        use wasmcni_config::{SnatBackend, SnatRandomize};
        use wasmcni_datapath::snat::{Backend, EgressRules, Randomize};
        let ec2_settings = config.ec2().snat;
        let (backend, randomize) = match config.provider.kind {
            ProviderKind::Ec2 => (
                match ec2_settings.backend {
                    SnatBackend::Iptables => Some(Backend::Iptables),
                    SnatBackend::Nftables => Some(Backend::Nftables),
                    SnatBackend::Auto => None,
                },
                match ec2_settings.randomize {
                    SnatRandomize::Prng => Randomize::Fully,
                    SnatRandomize::Hashrandom => Randomize::Hash,
                    SnatRandomize::None => Randomize::None,
                },
            ),
            ProviderKind::Static => (None, Randomize::Fully),
        };
        let rules = config.datapath.ipv4_egress.then_some(EgressRules {
            range: config.datapath.ipv4_egress_range,
            randomize,
        });
        match datapath.apply_egress_snat(rules.as_ref(), backend).await {
            Ok(backend) => {
                tracing::info!(%backend, egress = rules.is_some(), "IPv4 egress for IPv6 pods: with it, each pod gets a node-local IPv4 address, translated to the node's on the way out")
            }
            Err(e) if rules.is_some() => return Err(StartError::PrepareNode(e)),
            Err(e) => {
                tracing::warn!(error = %e, "IPv4 egress is off, and removing an earlier run's translation rule failed")
            }
        }
    }
    match (config.pod_mtu_follows_uplink(), uplink) {
        (true, Some(_)) => {
            tracing::info!(pod_mtu, "pod MTU: datapath.mtu is unset, so the uplink's")
        }
        (true, None) => tracing::warn!(
            pod_mtu,
            "pod MTU: datapath.mtu is unset and the node has no default route to take it from; set datapath.mtu if the path out is smaller"
        ),
        (false, _) => tracing::info!(pod_mtu, "pod MTU"),
    }
    let pending = pending_del_dir(&config.daemon.socket);
    let runtime = plugin_runtime(&config, compiler).map_err(StartError::Plugin)?;
    // Off the async workers: a component missing from the cache is compiled (by a child
    // process) for as long as that takes.
    PluginSet::fetch(&config)
        .await
        .map_err(StartError::Plugin)?;
    let plugins = {
        let (runtime, config) = (runtime.clone(), config.clone());
        tokio::task::spawn_blocking(move || PluginSet::load(&runtime, &config, 1))
            .await
            .map_err(|e| {
                StartError::Plugin(wasmcni_runtime::PluginError::Invalid {
                    plugin: "(plugins)".into(),
                    message: format!("loading the plugins failed: {e}"),
                })
            })?
            .map_err(StartError::Plugin)?
    };
    tracing::info!(plugins = %plugins.describe(), "plugins loaded");
    PluginSet::prune_cache(&config);
    let handler = Handler::new(config, pod_mtu, datapath, store, provider, runtime, plugins);
    warn_egress_outside_range(&handler);
    if !recovery.lost.is_empty() {
        tracing::error!(
            lost = recovery.lost.len(),
            set_aside = ?recovery.set_aside,
            "the datastore lost records to damage (each is logged above); the node's routed veths are trusted over it: their addresses are held until they go"
        );
        handler
            .records_lost
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    // Before the warm pool plans anything: what the node holds outside the store is never given
    // back.
    handler.refresh_node_held().await;
    if let Some(ec2) = ec2 {
        warm_pool::prepare(&handler, ec2.as_ref())
            .await
            .map_err(StartError::PrepareProvider)?;
        let (free_v4, free_v6) = handler.free_by_family();
        tracing::info!(
            instance = %ec2.identity().instance_id,
            instance_type = %ec2.identity().instance_type,
            enis = ec2.enis().len(),
            addresses_v4 = free_v4,
            addresses_v6 = free_v6,
            max_pods = ec2.max_pods(),
            "EC2 provider ready"
        );
        let _ = handler.ec2.set(ec2);
    }
    let report = recovery::reconcile_node(&handler, &pending, recovery::Orphans::Remove).await;
    if report.failures.is_empty() {
        tracing::info!(?report, "node reconciled");
    } else {
        // Serve anyway: the rest of the node must not wait for one stuck item, which the
        // periodic sweep retries.
        tracing::error!(
            ?report,
            "node reconciled with failures; the sweep retries them"
        );
    }
    Ok((handler, report))
}

/// Binds the daemon socket: parent directory 0700, socket 0600, a stale socket replaced, a live
/// one (another daemon) refused.
pub fn bind(path: &Path) -> Result<UnixListener, StartError> {
    let fail = |step: String| {
        let path = path.to_owned();
        move |source: std::io::Error| StartError::Socket { path, step, source }
    };
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(fail(format!("create {}", parent.display())))?;
        // A directory others can write to would let them replace the socket or plant DELs.
        wasmcni_cni::proto::check_private(parent, true)
            .map_err(|e| fail(format!("check {}", parent.display()))(std::io::Error::other(e)))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(fail("check for a running daemon".into())(
                std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another wasmcni-host is already serving on it",
                ),
            ));
        }
        std::fs::remove_file(path).map_err(fail("remove the stale socket".into()))?;
    }
    // Created 0600 from the start (no window with the umask's mode), then checked.
    let previous = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(previous);
    let listener = bound.map_err(fail("bind".into()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(fail("chmod 0600".into()))?;
    Ok(listener)
}

/// How often the daemon looks for pods whose namespace was deleted without a DEL.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// The operations listeners: the root-only Unix socket (metrics and introspection) and,
/// when configured, a loopback TCP address for `/metrics`.
pub struct OpsListeners {
    /// `daemon.ops_socket`.
    pub unix: UnixListener,
    /// `daemon.metrics_listen`.
    pub tcp: Option<tokio::net::TcpListener>,
}

/// Binds the operations socket (as [`bind`] does the CNI socket) and the metrics address.
pub async fn bind_ops(config: &ClusterConfig) -> Result<OpsListeners, StartError> {
    let unix = bind(&config.ops_socket())?;
    let tcp =
        match config.daemon.metrics_listen {
            Some(address) => Some(tokio::net::TcpListener::bind(address).await.map_err(
                |source| StartError::Socket {
                    path: PathBuf::from(address.to_string()),
                    step: "bind".into(),
                    source,
                },
            )?),
            None => None,
        };
    Ok(OpsListeners { unix, tcp })
}

/// Serves until `shutdown` resolves, then waits (bounded) for in-flight requests. Every
/// [`SWEEP_INTERVAL`] a background sweep releases pods whose veth vanished. With `ops`, the
/// operations endpoint ([`ops`]) is served too.
pub async fn serve<D: Datapath>(
    handler: Arc<Handler<D>>,
    listener: UnixListener,
    ops: Option<OpsListeners>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut tasks = JoinSet::new();
    let sweeper = tokio::spawn({
        let handler = handler.clone();
        async move {
            let pending = pending_del_dir(&handler.config.daemon.socket);
            let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
            ticks.tick().await; // the first tick is immediate; recovery just ran
            loop {
                ticks.tick().await;
                let report =
                    recovery::reconcile_node(&handler, &pending, recovery::Orphans::Keep).await;
                let quiet = ReconcileReport {
                    kept: report.kept,
                    ..ReconcileReport::default()
                };
                if report != quiet {
                    tracing::info!(?report, "sweep");
                }
            }
        }
    });
    // The EC2 provider's warm pool and leaked-ENI collector.
    let mut background: Vec<tokio::task::JoinHandle<()>> = match handler.ec2.get() {
        // IPv6 prefix mode creates no ENIs, so there are none to leak (VPC CNI turns its
        // collector off there too). Dual stack runs the IPv4 warm pool, which also keeps the
        // primary ENI's IPv6 prefix.
        Some(ec2) if ec2.family() == wasmcni_core::ipam::IpFamily::Ipv6 => {
            vec![tokio::spawn(warm_pool::run_ipv6(
                handler.clone(),
                ec2.clone(),
            ))]
        }
        Some(ec2) => vec![
            tokio::spawn(warm_pool::run(handler.clone(), ec2.clone())),
            tokio::spawn(warm_pool::collect_leaks(ec2.clone(), handler.config.ec2())),
        ],
        None => Vec::new(),
    };
    if let Some(ops) = ops {
        background.push(tokio::spawn(ops::serve(handler.clone(), ops.unix, ops.tcp)));
    }
    if let Some(install) = handler.config.install.clone() {
        background.push(tokio::spawn(install::when_ready(handler.clone(), install)));
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handler = handler.clone();
                    tasks.spawn(async move { serve_connection(&handler, stream).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(finished) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = finished {
                    tracing::error!(error = %e, "a request task panicked; the daemon keeps serving");
                }
            }
            () = &mut shutdown => break,
        }
    }
    sweeper.abort();
    for task in &background {
        task.abort();
    }
    // Running plugin calls end at their next epoch tick, whatever they are doing, and new ones
    // are refused: nothing a plugin does can hold the daemon up.
    handler.runtime.stop_calls();
    tracing::info!(in_flight = tasks.len(), "shutting down");
    let deadline = tokio::time::Instant::now() + SHUTDOWN_DRAIN;
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout_at(deadline, drain).await.is_err() {
        // An ADD cut short here was never committed: the next start rolls it back.
        tracing::warn!(
            in_flight = tasks.len(),
            "in-flight requests did not finish within {} ms; the next start recovers them",
            SHUTDOWN_DRAIN.as_millis()
        );
    }
    // Veths of answered DELs still being deleted: a down veth no record owns, which the next
    // start removes before serving if it is still there.
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if !handler.drained(None, left).await {
        tracing::info!(
            veths = handler.draining_now().len(),
            "veths of answered DELs were still being deleted; the next start removes what is left"
        );
    }
}

/// Pods whose IPv4 egress address an earlier `datapath.ipv4_egress_range` gave: they keep it,
/// but the node's translation now covers the new range only.
fn warn_egress_outside_range<D: Datapath>(handler: &Handler<D>) {
    let range = handler.config.datapath.ipv4_egress_range;
    let store = handler.store();
    for allocation in store.allocations() {
        if let Some(egress) = allocation.egress_v4.filter(|ip| !range.contains(ip)) {
            tracing::warn!(
                container_id = %allocation.key.container_id, ifname = %allocation.key.ifname, %egress, %range,
                "a pod's IPv4 egress address is outside datapath.ipv4_egress_range (changed since its ADD): its IPv4 traffic is no longer translated until the pod is recreated"
            );
        }
    }
}

/// How long a stopping daemon waits for in-flight requests (and veth deletions): together with the runtime's own
/// shutdown, SIGTERM ends the daemon within a second, whatever plugins are doing. What is cut
/// short is recovered at the next start (an uncommitted ADD is rolled back, or committed when
/// its data path is complete; a DEL replayed).
pub const SHUTDOWN_DRAIN: Duration = Duration::from_millis(500);

async fn serve_connection<D: Datapath>(handler: &Handler<D>, mut stream: UnixStream) {
    let limits = &handler.config.daemon;
    let deadline = Duration::from_millis(limits.request_read_timeout_ms);
    let reading = std::time::Instant::now();
    let body = match tokio::time::timeout(
        deadline,
        framed::read_body(&mut stream, limits.max_request_bytes),
    )
    .await
    {
        Err(_) => {
            tracing::warn!(
                timeout_ms = limits.request_read_timeout_ms,
                "a client sent no complete request in time"
            );
            return reply_error(
                &mut stream,
                CniError::new(codes::IO_FAILURE, "request not received in time"),
            )
            .await;
        }
        Ok(Err(FrameError::Io(e))) => {
            tracing::debug!(error = %e, "client went away before sending a request");
            return;
        }
        Ok(Err(e @ FrameError::TooLarge { .. })) => {
            return reply_error(
                &mut stream,
                CniError::new(codes::INVALID_CONFIG, format!("request refused: {e}")),
            )
            .await;
        }
        Ok(Err(e)) => {
            return reply_error(
                &mut stream,
                CniError::new(codes::DECODE_FAILURE, e.to_string()),
            )
            .await
        }
        Ok(Ok(body)) => body,
    };
    let read_for = reading.elapsed();
    let request: DaemonRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return reply_error(
                &mut stream,
                CniError::new(
                    codes::DECODE_FAILURE,
                    format!("malformed request to the wasmcni daemon: {e}"),
                ),
            )
            .await
        }
    };
    if request.protocol != PROTOCOL_VERSION {
        let error = CniError::new(
            codes::PROTOCOL_FAILURE,
            format!(
                "the wasmcni shim speaks protocol {} but the daemon speaks {PROTOCOL_VERSION}; install matching versions",
                request.protocol
            ),
        );
        return reply_error(&mut stream, error).await;
    }
    wasmcni_telemetry::metrics::Metrics::global().phase(
        request.request.command.as_str(),
        "socket",
        read_for,
    );
    let response = handler.handle(&request.request, &request.config).await;
    if let Err(e) = framed::write(&mut stream, &response).await {
        // The shim died or timed out. An ADD is already committed; the runtime will DEL it.
        tracing::warn!(error = %e, command = request.request.command.as_str(), "could not deliver the response");
    }
}

/// Answers a request refused before it reached a verb (timed out, too large, malformed, another
/// protocol), with a warning in the daemon's log: the runtime sees the error, the operator the
/// line.
async fn reply_error(stream: &mut UnixStream, error: CniError) {
    tracing::warn!(code = error.code, error = %error.msg, "request refused before its verb");
    let response = DaemonResponse::Failure {
        stdout: String::from_utf8_lossy(&error.to_stdout_bytes(CniVersion::LATEST.as_str()))
            .into_owned(),
        error,
    };
    let _ = framed::write(stream, &response).await;
}
