//! The CNI verbs as the daemon executes them: ADD, DEL, CHECK, GC and STATUS.
//!
//! Ordering is what makes a crash harmless. ADD reserves the address in the datastore before it
//! touches the kernel and commits (durably) before it answers, so a pod that got a result keeps
//! its address across a crash, and an ADD cut short is rolled back by recovery. DEL undoes the
//! data path from the datastore's record, never from the pod's namespace, and only then
//! releases the address, so an address is never handed out while a route to it remains.
//!
//! One file per verb (`add`, `del`, `check`, `gc`, `status`); `pool_state` holds what
//! the pool keeps besides the datastore (cooling and foreign addresses, the plugins' snapshot,
//! EC2 request failures); this file holds the handler, its dispatch and its locks.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
// tokio's clock, the system's outside a paused runtime: `simulate` runs the handler in virtual time.
use tokio::time::Instant;

use ipnet::{IpNet, Ipv4Net};

use super::keylock::KeyLocks;
use super::plugins::{now_unix_ms, run_policies, PluginSet, PolicyOutcome};
use wasmcni_cni::error::{codes, CniError};
use wasmcni_cni::netconf::NetConf;
use wasmcni_cni::proto::DaemonResponse;
use wasmcni_cni::request::{CniRequest, Command};
use wasmcni_cni::result::{CniResult, Interface, IpConfig, Route};
use wasmcni_cni::version::CniVersion;
use wasmcni_config::ClusterConfig;
use wasmcni_core::ipam::{Choice, IpFamily, Pool, Provider, ProviderView};
use wasmcni_core::{
    Attachment, FailureMode, Hook, NetlinkRequest, PodInfo, PoolSnapshot, RequestFailure, Verb,
};
use wasmcni_datapath::{
    format_mac, host_veth_name, pod_gateway, Datapath, DatapathError, DefaultRoute, HostSide,
    PodAttachment, PodRoutes, PodRule,
};
use wasmcni_datastore::{
    Allocation, AllocationState, AttachmentKey, Datastore, DatastoreError, Lsn, PodRef, WalSyncer,
};
use wasmcni_runtime::{AuditEntry, AuditLog, Plugin, PluginError};

/// How many failed ENI requests plans are told about.
const REQUEST_FAILURES_KEPT: usize = 16;
/// For how long.
const REQUEST_FAILURES_FOR: Duration = Duration::from_secs(600);

/// Everything a request needs: configuration, datastore, pool and data path.
pub struct Handler<D: Datapath> {
    pub(crate) config: ClusterConfig,
    /// The pods' MTU, resolved at start (the configuration's `datapath.mtu` stays as the file
    /// says, so a reload compares like with like).
    pub(crate) pod_mtu: u32,
    pub(crate) datapath: D,
    store: Mutex<Datastore>,
    syncer: WalSyncer,
    pool: Mutex<Pool>,
    pub(crate) locks: KeyLocks<AttachmentKey>,
    pub(crate) veth_locks: KeyLocks<String>,
    /// The plugins now in force; a reload swaps the whole set, a request keeps the one it
    /// started with.
    plugins: std::sync::RwLock<Arc<PluginSet>>,
    /// The engine plugins run on (reloads load new sets with it).
    pub(crate) runtime: wasmcni_runtime::PluginRuntime,
    /// Every plugin call, recorded for reviewers (`<state_dir>/plugin-audit.log`).
    pub(crate) audit_log: AuditLog,
    /// Serialises "propose an address, check it, reserve it" across concurrent ADDs, so two
    /// pods never get the same proposal from a deterministic plugin; the reconciler holds it
    /// while addresses leave the pool.
    allocation: tokio::sync::Mutex<()>,
    /// Where the pool's addresses come from.
    pub(crate) provider: Arc<dyn Provider>,
    /// Released addresses and when they were released; not handed out for the provider's
    /// cooldown.
    cooling: Mutex<HashMap<IpAddr, Instant>>,
    /// Counts changes of `cooling` written to disk, and the last one written
    /// (`<state_dir>/cooling.json`).
    cooling_generation: std::sync::atomic::AtomicU64,
    cooling_written: Mutex<u64>,
    cooldown: Duration,
    /// Whether the provider's pool grows on demand.
    dynamic: bool,
    /// The family pods get their address in.
    family: IpFamily,
    /// IPv6 pods' node-local IPv4 egress addresses (`datapath.ipv4_egress`); `None` for
    /// IPv4 pods or when switched off. Chosen under the allocation lock.
    egress: Option<Mutex<wasmcni_core::egress::EgressPool>>,
    /// How long an ADD waits for a growing pool (`provider.ec2.add_wait_ms`; 0 for static).
    add_wait: Duration,
    /// Wakes the pool reconciler (an ADD found the pool empty, a DEL freed an address).
    pub(crate) wake_warm_pool: tokio::sync::Notify,
    /// Counts inventory changes; an ADD waiting for the pool to grow watches it.
    pool_changed: tokio::sync::watch::Sender<u64>,
    /// STATUS answers ready only once this is set (static: at once; EC2: when the pool first
    /// reached its minimum).
    ready: AtomicBool,
    /// Why the pool last failed to grow, for the ADD that finds it empty.
    grow_error: Mutex<Option<String>>,
    /// ENI requests that failed recently (newest last), for the next plans
    /// (`pool-view.failures`).
    request_failures: Mutex<std::collections::VecDeque<(Instant, RequestFailure)>>,
    /// Addresses pods the datastore does not know hold on this node: another CNI's (a /32
    /// route through a veth that is not wasmcni's), and wasmcni's own whose record was lost to
    /// damage (a host route through a wasmcni veth no record holds the address for). Never
    /// handed out, never given back, while the route exists.
    foreign_held: Mutex<Vec<IpAddr>>,
    /// Set when the datastore's recovery lost records to damage: start-up then trusts the
    /// node's routed veths over the store (see `recovery`).
    pub(crate) records_lost: AtomicBool,
    /// Serialises [`Handler::refresh_node_held`].
    refreshing: tokio::sync::Mutex<()>,
    /// The reservations the datastore held when it was opened: an earlier daemon's ADDs, which
    /// may have been answered (an ADD answers once its reservation is durable). Recovery
    /// commits those whose data path is complete (`recovery`); a reservation made since is an
    /// ADD this daemon did not answer with success, rolled back as ever.
    pub(crate) inherited_reservations: Vec<Allocation>,
    /// Requested addresses EC2 is being asked to assign, and the ENI each goes to: taken for
    /// every other chooser, and neither released nor its ENI deleted by the reconciler,
    /// until the ADD that asked has reserved it or given up.
    assigning: Mutex<HashMap<IpAddr, String>>,
    /// Addresses whose DEL has answered while their veth is still being deleted
    /// ([`draining`]): taken for every chooser until it is gone.
    draining: Mutex<HashMap<IpAddr, draining::Drain>>,
    /// Paces the task deleting draining veths.
    reaper: draining::ReaperHandle,
    /// The handler itself, for the tasks it starts (veth deletions outliving their DEL).
    me: std::sync::Weak<Handler<D>>,
    /// The EC2 provider, when it is the provider (the reconciler drives it).
    pub(crate) ec2: std::sync::OnceLock<Arc<dyn wasmcni_core::eni::EniProvider>>,
}

impl<D: Datapath> Handler<D> {
    /// A handler over an opened datastore. Recovery is the caller's job
    /// ([`super::recovery::reconcile_node`]) before the first request is served. `pod_mtu` is
    /// the pods' MTU as resolved at start (`datapath.mtu`, or the provider's default: for the
    /// static provider the uplink's).
    pub fn new(
        config: ClusterConfig,
        pod_mtu: u32,
        datapath: D,
        store: Datastore,
        provider: Arc<dyn Provider>,
        runtime: wasmcni_runtime::PluginRuntime,
        plugins: PluginSet,
    ) -> Arc<Handler<D>> {
        let syncer = store.syncer();
        let inherited_reservations = store
            .allocations()
            .filter(|a| a.state == AllocationState::Reserved)
            .cloned()
            .collect();
        let view = provider.view();
        let add_wait = Duration::from_millis(if view.dynamic {
            config.ec2().add_wait_ms
        } else {
            0
        });
        // One audit log per file: the runtime's (its clones share the rotation).
        let audit_log = runtime
            .audit_log()
            .cloned()
            .unwrap_or_else(|| AuditLog::new(config.daemon.state_dir.join("plugin-audit.log")));
        // Addresses released before a restart rest out their cooldown.
        let cooling = if view.cooldown > Duration::ZERO {
            super::cooling::load(&config.daemon.state_dir, view.cooldown)
        } else {
            HashMap::new()
        };
        let egress = (view.family == IpFamily::Ipv6 && config.datapath.ipv4_egress).then(|| {
            Mutex::new(wasmcni_core::egress::EgressPool::new(
                config.datapath.ipv4_egress_range,
            ))
        });
        Arc::new_cyclic(|me| Handler {
            me: me.clone(),
            draining: Mutex::new(HashMap::new()),
            reaper: draining::ReaperHandle::default(),
            config,
            pod_mtu,
            datapath,
            store: Mutex::new(store),
            syncer,
            pool: Mutex::new(Pool::new(provider.inventory())),
            locks: KeyLocks::default(),
            veth_locks: KeyLocks::default(),
            plugins: std::sync::RwLock::new(Arc::new(plugins)),
            runtime,
            audit_log,
            allocation: tokio::sync::Mutex::new(()),
            provider,
            cooling: Mutex::new(cooling),
            cooling_generation: std::sync::atomic::AtomicU64::new(0),
            cooling_written: Mutex::new(0),
            cooldown: view.cooldown,
            dynamic: view.dynamic,
            family: view.family,
            egress,
            add_wait,
            wake_warm_pool: tokio::sync::Notify::new(),
            pool_changed: tokio::sync::watch::channel(0).0,
            ready: AtomicBool::new(!view.dynamic),
            grow_error: Mutex::new(None),
            request_failures: Mutex::new(std::collections::VecDeque::new()),
            ec2: std::sync::OnceLock::new(),
            foreign_held: Mutex::new(Vec::new()),
            records_lost: AtomicBool::new(false),
            refreshing: tokio::sync::Mutex::new(()),
            inherited_reservations,
            assigning: Mutex::new(HashMap::new()),
        })
    }

    /// Holds the allocation lock: no ADD chooses an address meanwhile.
    pub(crate) async fn allocation_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.allocation.lock().await
    }

    /// The plugins now in force.
    pub fn plugins(&self) -> Arc<PluginSet> {
        self.plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `set` in force for every request that starts from now on; requests already
    /// running finish with the set they started with. Allocations are untouched.
    pub fn swap_plugins(&self, set: PluginSet) {
        let described = set.describe();
        let generation = set.generation;
        *self.plugins.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        tracing::info!(generation, plugins = %described, "plugin set in force");
    }

    /// The datastore, locked. Never held across an `.await`.
    pub(crate) fn store(&self) -> MutexGuard<'_, Datastore> {
        // A panic while holding the lock cannot leave a half-applied record: each datastore
        // method validates before it appends. So a poisoned lock still guards a consistent map.
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until every record up to `lsn` is on disk, off the async threads.
    pub(crate) async fn make_durable(&self, lsn: Lsn) -> Result<(), CniError> {
        self.start_sync(lsn).wait().await
    }

    /// Starts making every record up to `lsn` durable, off the async threads;
    /// [`PendingSync::wait`] waits for it. Dropped unawaited, the sync still runs to its end (a
    /// failed fdatasync is logged by the datastore, and fails every later sync until a
    /// compaction rewrote the state).
    pub(crate) fn start_sync(&self, lsn: Lsn) -> PendingSync {
        let syncer = self.syncer.clone();
        PendingSync(tokio::task::spawn_blocking(move || {
            syncer.sync_through(lsn)
        }))
    }

    /// Executes one forwarded CNI request and renders the shim's stdout. Every log event of
    /// the request carries its verb, container id, ifname and pod; a failed request leaves a
    /// warning with the error's code, message and details (STATUS, which runtimes poll, only
    /// at debug), so grepping the daemon's log for a container finds why it got no network.
    pub async fn handle(&self, request: &CniRequest, config: &str) -> DaemonResponse {
        use tracing::Instrument;
        let pod = request
            .k8s_pod()
            .map(|(namespace, name)| format!("{namespace}/{name}"));
        let span = tracing::info_span!(
            "cni",
            verb = request.command.as_str(),
            container_id = %request.container_id,
            ifname = %request.ifname,
            pod = pod.as_deref().unwrap_or(""),
            phase = tracing::field::Empty,
        );
        let response = self
            .handle_in_span(request, config)
            .instrument(span.clone())
            .await;
        if let DaemonResponse::Failure { error, .. } = &response {
            span.in_scope(|| log_failure(request.command, error));
        }
        response
    }

    async fn handle_in_span(&self, request: &CniRequest, config: &str) -> DaemonResponse {
        let peeked = || {
            wasmcni_cni::netconf::peek_version(config.as_bytes())
                .unwrap_or_else(|| CniVersion::LATEST.as_str().to_owned())
        };
        // What arrives over the socket or from the spool is checked like the environment was.
        if let Err(error) = request.validate() {
            return failure(error, &peeked());
        }
        let netconf = match NetConf::parse(config.as_bytes()) {
            Ok(netconf) => netconf,
            Err(error) if request.command == Command::Del => {
                // DEL needs only the attachment key; a cached prevResult or capability argument
                // that no longer decodes must not make a pod undeletable.
                tracing::warn!(error = %error.msg, container_id = %request.container_id, "DEL with a configuration that does not decode; deleting by key");
                return match self.del_by_key(request).await {
                    Ok(()) => DaemonResponse::Success {
                        stdout: String::new(),
                    },
                    Err(e) => failure(e, &peeked()),
                };
            }
            Err(error) => return failure(error, &peeked()),
        };
        let version = netconf.cni_version;
        let started = Instant::now();
        let outcome = match request.command.check_version(version) {
            Err(e) => Err(e),
            Ok(()) => match request.command {
                Command::Add if netconf.chained => {
                    self.add_chained(request, &netconf).await.map(Some)
                }
                Command::Del if netconf.chained => self
                    .hooks_chained(request, &netconf, Verb::Del)
                    .await
                    .map(|()| None),
                Command::Check if netconf.chained => self
                    .hooks_chained(request, &netconf, Verb::Check)
                    .await
                    .map(|()| None),
                Command::Add => self.add(request, &netconf).await.map(Some),
                Command::Del => self.del(request, &netconf).await.map(|()| None),
                Command::Check => self.check(request, &netconf).await.map(|()| None),
                Command::Gc => self.gc(&netconf).await.map(|()| None),
                Command::Status => self.status().map(|()| None),
                Command::Version => Ok(None),
            },
        };
        let metrics = wasmcni_telemetry::metrics::Metrics::global();
        let verb = request.command.as_str().to_owned();
        metrics
            .cni_duration
            .get_or_create(&wasmcni_telemetry::metrics::VerbLabel { verb: verb.clone() })
            .observe(started.elapsed().as_secs_f64());
        metrics
            .cni_requests
            .get_or_create(&wasmcni_telemetry::metrics::VerbResult {
                verb,
                result: if outcome.is_ok() { "ok" } else { "error" }.to_owned(),
            })
            .inc();
        match outcome {
            Ok(Some(result)) => DaemonResponse::Success {
                stdout: String::from_utf8_lossy(&result.to_stdout_bytes(version)).into_owned(),
            },
            Ok(None) => DaemonResponse::Success {
                stdout: String::new(),
            },
            Err(error) => failure(error, version.as_str()),
        }
    }
}

fn log_failure(command: Command, error: &CniError) {
    let details = error.details.as_deref().unwrap_or("");
    if command == Command::Status {
        tracing::debug!(code = error.code, error = %error.msg, details, "STATUS: not ready");
    } else {
        tracing::warn!(code = error.code, error = %error.msg, details, "{} failed", command.as_str());
    }
}

/// A sync of the datastore's log under way ([`Handler::start_sync`]).
pub(crate) struct PendingSync(
    tokio::task::JoinHandle<Result<(), wasmcni_datastore::DatastoreError>>,
);

impl PendingSync {
    /// Waits for the sync.
    pub(crate) async fn wait(self) -> Result<(), CniError> {
        self.0
            .await
            .map_err(|e| {
                CniError::new(
                    codes::DATASTORE_FAILURE,
                    format!("datastore sync task failed: {e}"),
                )
            })?
            .map_err(store_error)
    }
}

/// Notes the phase a request enters: its log events carry it (`span.phase`), and the returned
/// instant times it.
fn enter_phase(phase: &'static str) -> Instant {
    tracing::Span::current().record("phase", phase);
    Instant::now()
}

fn ipv4_of(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    }
}

fn failure(error: CniError, version: &str) -> DaemonResponse {
    DaemonResponse::Failure {
        stdout: String::from_utf8_lossy(&error.to_stdout_bytes(version)).into_owned(),
        error,
    }
}

fn key_of(request: &CniRequest) -> AttachmentKey {
    AttachmentKey {
        container_id: request.container_id.clone(),
        ifname: request.ifname.clone(),
    }
}

/// The host side of a recorded allocation.
pub(crate) fn reserved_host(allocation: &Allocation) -> HostSide {
    HostSide {
        host_veth: allocation.host_veth.clone(),
        ip: allocation.ip,
        ipv6: allocation.ipv6,
        route_table: allocation.route_table,
        pod_rule: allocation.pod_routes.table.map(|table| PodRule {
            netns: allocation.netns.clone(),
            table,
        }),
    }
}

/// The attachment's own CNI result: its veth pair (with their MTUs, host's and pod's, and
/// their MACs when known) and the pod's addresses with their gateway and `routes`.
fn own_result(
    allocation: &Allocation,
    (host_mtu, pod_mtu): (u32, u32),
    macs: Option<([u8; 6], [u8; 6])>,
    routes: &PodRoutes,
) -> CniResult {
    CniResult {
        interfaces: vec![
            Interface {
                name: allocation.host_veth.clone(),
                mac: macs.map(|(host, _)| format_mac(&host)),
                mtu: Some(host_mtu),
                sandbox: None,
                socket_path: None,
                pci_id: None,
            },
            Interface {
                name: allocation.key.ifname.clone(),
                mac: macs.map(|(_, pod)| format_mac(&pod)),
                mtu: Some(pod_mtu),
                sandbox: Some(allocation.netns.clone()),
                socket_path: None,
                pci_id: None,
            },
        ],
        ips: allocation
            .pod_addresses()
            .map(|ip| IpConfig {
                address: IpNet::from(ip),
                gateway: Some(pod_gateway(ip)),
                interface: Some(1),
            })
            .collect(),
        routes: allocation
            .pod_addresses()
            .flat_map(|ip| result_routes(ip, &routes.of_family(ip)))
            .collect(),
        dns: Default::default(),
    }
}

fn attachment_of(allocation: &Allocation, ifname: &str, mtu: u32) -> PodAttachment {
    PodAttachment {
        host: reserved_host(allocation),
        netns: allocation.netns.clone(),
        pod_ifname: ifname.to_owned(),
        mtu,
        pod_mac: None,
        routes: allocation.pod_routes.clone(),
        egress_v4: allocation.egress_v4,
    }
}

/// The routes the netconf asks for the interface (`defaultRoute`, `routes`, `routeTable`),
/// refused with code 7 when a destination is not of a family the pool hands out (on a
/// dual-stack node each address routes the destinations of its family).
fn requested_routes(netconf: &NetConf, family: IpFamily) -> Result<PodRoutes, CniError> {
    let config = &netconf.routes;
    let (wanted, other) = match family {
        IpFamily::Ipv4 => ("IPv4", "IPv6"),
        IpFamily::Ipv6 => ("IPv6", "IPv4"),
        IpFamily::Dual => ("", ""),
    };
    if let Some(bad) = config
        .destinations
        .iter()
        .filter(|_| family != IpFamily::Dual)
        .find(|d| d.addr().is_ipv4() != (family == IpFamily::Ipv4))
    {
        return Err(CniError::invalid_config(format!(
            "routes: {bad} is an {other} destination, but this node gives pods {wanted} addresses"
        )));
    }
    Ok(PodRoutes {
        default_route: match config.default_route {
            None => DefaultRoute::UnlessPresent,
            Some(true) => DefaultRoute::Install,
            Some(false) => DefaultRoute::Skip,
        },
        destinations: config.destinations.clone(),
        table: config.table,
        default_route_v6: None,
    })
}

/// The routes of a CNI result for what the interface routes in the pod.
fn result_routes(ip: IpAddr, routes: &PodRoutes) -> Vec<Route> {
    let default = match ip {
        IpAddr::V4(_) => IpNet::V4(Ipv4Net::default()),
        IpAddr::V6(_) => IpNet::V6(ipnet::Ipv6Net::default()),
    };
    routes
        .has_default()
        .then_some(default)
        .into_iter()
        .chain(routes.destinations.iter().copied())
        .map(|dst| Route {
            dst,
            gw: Some(pod_gateway(ip)),
            mtu: None,
            advmss: None,
            priority: None,
            table: routes.table,
            scope: None,
        })
        .collect()
}

fn datapath_error(e: DatapathError, verb: &str) -> CniError {
    CniError::new(
        codes::DATAPATH_FAILURE,
        format!("{verb} failed in the data path: {e}"),
    )
}

fn store_error(e: DatastoreError) -> CniError {
    CniError::new(codes::DATASTORE_FAILURE, format!("datastore: {e}"))
}

/// The attachment as plugins see it.
fn pod_info(request: &CniRequest, netconf: &NetConf) -> PodInfo {
    PodInfo {
        namespace: request.k8s_pod().map(|(ns, _)| ns.to_owned()),
        name: request.k8s_pod().map(|(_, name)| name.to_owned()),
        container_id: request.container_id.clone(),
        ifname: request.ifname.clone(),
        annotations: netconf
            .runtime_config
            .pod_annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        cni_args: request.args.clone(),
    }
}

/// The addresses of a result, both families (what a chained policy hook is told about).
fn result_addresses(result: &CniResult) -> Vec<IpNet> {
    result.ips.iter().map(|ip| ip.address).collect()
}

mod add;
mod check;
mod del;
mod draining;
mod gc;
mod pool_state;
mod requested;
mod status;

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_attachments;
#[cfg(test)]
mod tests_draining;
#[cfg(test)]
mod tests_dual;
#[cfg(test)]
mod tests_egress;
#[cfg(test)]
mod tests_lost;
#[cfg(test)]
mod tests_requested;
#[cfg(test)]
mod tests_unconfirmed;
