//! The CNI verbs as the daemon executes them: ADD, DEL, CHECK, GC and STATUS.
//!
//! Ordering is what makes a crash harmless. ADD reserves the address in the datastore before it
//! touches the kernel and commits (durably) before it answers, so a pod that got a result keeps
//! its address across a crash, and an ADD cut short is rolled back by recovery. DEL undoes the
//! data path from the datastore's record, never from the pod's namespace, and only then
//! releases the address, so an address is never handed out while a route to it remains.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
    format_mac, host_veth_name, pod_gateway, Datapath, DatapathError, HostSide, PodAttachment,
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
    pub(crate) datapath: D,
    store: Mutex<Datastore>,
    syncer: WalSyncer,
    pool: Mutex<Pool>,
    pub(crate) locks: KeyLocks<AttachmentKey>,
    veth_locks: KeyLocks<String>,
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
    /// How long an ADD waits for a growing pool (`provider.ec2.add_wait_ms`; 0 for static).
    add_wait: Duration,
    /// Wakes the pool reconciler (an ADD found the pool empty, a DEL freed an address).
    pub(crate) wake_reconciler: tokio::sync::Notify,
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
    /// Addresses another CNI's pods hold on this node (a /32 route through a veth that is not
    /// wasmcni's): never handed out, never given back.
    foreign_held: Mutex<Vec<IpAddr>>,
    /// The EC2 provider, when it is the provider (the reconciler drives it).
    pub(crate) ec2: std::sync::OnceLock<Arc<wasmcni_ec2::Ec2Provider>>,
}

impl<D: Datapath> Handler<D> {
    /// A handler over an opened datastore. Recovery is the caller's job
    /// ([`super::recovery::reconcile`]) before the first request is served.
    pub fn new(
        config: ClusterConfig,
        datapath: D,
        store: Datastore,
        provider: Arc<dyn Provider>,
        runtime: wasmcni_runtime::PluginRuntime,
        plugins: PluginSet,
    ) -> Arc<Handler<D>> {
        let syncer = store.syncer();
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
        Arc::new(Handler {
            config,
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
            add_wait,
            wake_reconciler: tokio::sync::Notify::new(),
            pool_changed: tokio::sync::watch::channel(0).0,
            ready: AtomicBool::new(!view.dynamic),
            grow_error: Mutex::new(None),
            request_failures: Mutex::new(std::collections::VecDeque::new()),
            ec2: std::sync::OnceLock::new(),
            foreign_held: Mutex::new(Vec::new()),
        })
    }

    /// Re-reads the provider's inventory into the pool (after the reconciler changed it) and
    /// wakes ADDs waiting for addresses.
    pub(crate) fn refresh_inventory(&self) {
        let inventory = self.provider.inventory();
        self.pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace_inventory(inventory);
        self.pool_changed.send_modify(|n| *n += 1);
    }

    /// Attachments whose address is in none of the provider's blocks now (an ENI detached or
    /// an address unassigned behind the daemon's back). They are kept — a pod whose veth
    /// exists keeps its record — and reported.
    pub(crate) fn allocations_outside_pool(&self) -> Vec<(AttachmentKey, IpAddr)> {
        // Store before pool, as everywhere else.
        let store = self.store();
        let pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        store
            .allocations()
            .filter(|a| !pool.contains(a.ip))
            .map(|a| (a.key.clone(), a.ip))
            .collect()
    }

    /// A pod address whose traffic goes through `table`, if any.
    pub(crate) fn address_routed_through(&self, table: Option<u32>) -> Option<IpAddr> {
        table?;
        self.store()
            .allocations()
            .find(|a| a.route_table == table)
            .map(|a| a.ip)
    }

    /// Sets the pool gauges from the pool as it is now (at each scrape).
    pub(crate) fn update_pool_gauges(&self) {
        let metrics = wasmcni_telemetry::metrics::Metrics::global();
        let (total, assigned, cooling, free) = {
            let store = self.store();
            let resting = self.resting();
            let pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            let free = free_in(&pool, &store, &resting);
            (
                pool.capacity(),
                store.allocations().count() as u64,
                resting.cooling.len() as u64,
                free,
            )
        };
        for (state, value) in [
            ("total", total),
            ("assigned", assigned),
            ("cooling", cooling),
            ("free", free),
        ] {
            metrics
                .pool_addresses
                .get_or_create(&wasmcni_telemetry::metrics::StateLabel {
                    state: state.to_owned(),
                })
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
        if let Some(ec2) = self.ec2.get() {
            metrics.enis.set(ec2.enis().len() as i64);
            metrics.max_pods.set(i64::from(ec2.max_pods()));
        }
    }

    /// Holds the allocation lock: no ADD chooses an address meanwhile.
    pub(crate) async fn allocation_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.allocation.lock().await
    }

    /// Whether `ip` rests after a release; expired entries are dropped as they are met.
    pub(crate) fn cooling_now(&self) -> Vec<IpAddr> {
        let mut cooling = self.cooling.lock().unwrap_or_else(|p| p.into_inner());
        let cooldown = self.cooldown;
        cooling.retain(|_, at| at.elapsed() < cooldown);
        cooling.keys().copied().collect()
    }

    /// Whether an address is held by an attachment, cooling down, or held by another CNI's pod.
    pub(crate) fn is_taken(&self, ip: impl Into<IpAddr>) -> bool {
        let ip = ip.into();
        self.store().holder_of(ip).is_some() || self.is_cooling(ip) || self.is_foreign(ip)
    }

    fn is_foreign(&self, ip: IpAddr) -> bool {
        self.foreign_held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&ip)
    }

    fn foreign_now(&self) -> Vec<IpAddr> {
        self.foreign_held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads which addresses other CNIs' pods hold on the node (a migration from AWS VPC
    /// CNI leaves its pods running until they are replaced).
    pub(crate) async fn refresh_foreign_held(&self) {
        match self
            .datapath
            .node_state(&self.config.datapath.veth_prefix)
            .await
        {
            Ok(state) => {
                if !state.foreign_pod_routes.is_empty() {
                    tracing::info!(
                        count = state.foreign_pod_routes.len(),
                        "addresses held by another CNI's pods are left alone"
                    );
                }
                *self.foreign_held.lock().unwrap_or_else(|p| p.into_inner()) =
                    state.foreign_pod_routes;
            }
            Err(e) => tracing::warn!(error = %e, "reading other CNIs' pod routes failed"),
        }
    }

    fn is_cooling(&self, ip: IpAddr) -> bool {
        self.cooldown > Duration::ZERO
            && self
                .cooling
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&ip)
                .is_some_and(|at| at.elapsed() < self.cooldown)
    }

    /// Marks the pool as having reached its minimum (STATUS answers ready from now on).
    pub(crate) fn set_ready(&self) {
        if !self.ready.swap(true, Ordering::SeqCst) {
            tracing::info!("pool reached its minimum: the node is ready for pods");
        }
    }

    /// The snapshot a plugin call sees: the provider's view, the pool, the held and cooling
    /// addresses.
    pub(crate) fn pool_snapshot(&self) -> PoolSnapshot {
        let ProviderView {
            node,
            enis,
            subnets,
            ..
        } = self.provider.view();
        let store = self.store();
        let cooling = self.cooling_now();
        let pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        PoolSnapshot {
            node,
            enis,
            subnets,
            inventory: pool.inventory().clone(),
            // Plugins see IPv4 addresses only (their pool is IPv4).
            in_use: store
                .allocations()
                .map(|a| a.ip)
                .chain(self.foreign_now())
                .filter_map(ipv4_of)
                .collect(),
            cooling: cooling.into_iter().filter_map(ipv4_of).collect(),
            failures: self.recent_request_failures(),
        }
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
        let syncer = self.syncer.clone();
        tokio::task::spawn_blocking(move || syncer.sync_through(lsn))
            .await
            .map_err(|e| {
                CniError::new(
                    codes::DATASTORE_FAILURE,
                    format!("datastore sync task failed: {e}"),
                )
            })?
            .map_err(store_error)
    }

    /// Free addresses in the pool now (neither held nor cooling).
    pub fn free_addresses(&self) -> u64 {
        let store = self.store();
        let resting = self.resting();
        let pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        free_in(&pool, &store, &resting)
    }

    /// The addresses that are not free although no attachment holds them: cooling, and held
    /// by another CNI's pods. Read after taking the store lock (see [`Handler::release`]).
    fn resting(&self) -> Resting {
        Resting {
            cooling: self.cooling_now(),
            foreign: self.foreign_now(),
        }
    }

    /// Executes one forwarded CNI request and renders the shim's stdout. Every log event of
    /// the request carries its verb, container id, ifname and pod.
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
        self.handle_in_span(request, config).instrument(span).await
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

    async fn add(&self, request: &CniRequest, netconf: &NetConf) -> Result<CniResult, CniError> {
        let key = key_of(request);
        let pod = request.k8s_pod();
        let host_veth = host_veth_name(
            &self.config.datapath.veth_prefix,
            pod,
            &request.container_id,
            &request.ifname,
        );
        // The veth name is shared by every sandbox of one pod, so it is locked before the key
        // (always in this order): two sandboxes never build or replace the same veth at once.
        let _veth_guard = self.veth_locks.lock(host_veth.clone()).await;
        let _guard = self.locks.lock(key.clone()).await;
        let pod_ref = pod.map(|(namespace, name)| PodRef {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
        self.release_stale_owner_of(&host_veth, &key, pod_ref.as_ref())
            .await?;

        if let Some(existing) = self.store().get(&key) {
            return Err(CniError::new(
                codes::ATTACHMENT_EXISTS,
                format!(
                    "attachment {}/{} already holds {} (ADD without DEL); DEL it first",
                    key.container_id, key.ifname, existing.ip
                ),
            ));
        }
        let plugins = self.plugins();
        let pod_info = pod_info(request, netconf);
        let phase = enter_phase("allocate");
        let (choice, _allocating) = self.choose(&plugins, &pod_info).await?;
        let metrics = wasmcni_telemetry::metrics::Metrics::global();
        metrics.phase("ADD", "allocate", phase.elapsed());
        let reserved = Allocation {
            key: key.clone(),
            network: netconf.name.clone(),
            ip: choice.ip,
            host_veth: host_veth.clone(),
            netns: request.netns.clone(),
            pod: pod_ref.clone(),
            route_table: choice.route_table,
            state: AllocationState::Reserved,
            result: None,
            created_unix_ms: now_unix_ms(),
        };
        self.store()
            .reserve(reserved.clone())
            .map_err(store_error)?;
        drop(_allocating);
        if self.dynamic {
            // One address fewer: the plan may want to grow.
            self.wake_reconciler.notify_one();
        }

        let phase = enter_phase("policy");
        let adjustments = if plugins.policies.is_empty() {
            Vec::new()
        } else {
            let attachment = Attachment {
                verb: Verb::Add,
                pod: pod_info,
                addresses: vec![IpNet::from(reserved.ip)],
                eni_id: choice.eni_id.clone(),
                subnet_id: None,
                chained: false,
            };
            match run_policies(&plugins, &self.audit_log, attachment).await {
                PolicyOutcome::Allowed(adjustments) => adjustments,
                PolicyOutcome::Denied(error) => return Err(self.undo_add(&reserved, error).await),
            }
        };
        let mtu = adjustments
            .iter()
            .rev()
            .find_map(|a| match a {
                NetlinkRequest::SetMtu { mtu } => Some(*mtu),
                NetlinkRequest::AddRoute { .. } => None,
            })
            .unwrap_or(self.config.datapath.mtu);

        if !plugins.policies.is_empty() {
            metrics.phase("ADD", "policy", phase.elapsed());
        }
        let phase = enter_phase("datapath");
        let attachment = attachment_of(&reserved, &request.ifname, self.config.datapath.mtu);
        let created = match self.datapath.setup_pod(&attachment).await {
            Ok(created) => created,
            Err(e) => return Err(self.undo_add(&reserved, datapath_error(e, "ADD")).await),
        };
        if !adjustments.is_empty() {
            if let Err(e) = self.datapath.adjust_pod(&attachment, &adjustments).await {
                return Err(self
                    .undo_add(&reserved, datapath_error(e, "ADD (policy adjustments)"))
                    .await);
            }
        }

        let ours = CniResult {
            interfaces: vec![
                Interface {
                    name: host_veth.clone(),
                    mac: Some(format_mac(&created.host_mac)),
                    mtu: Some(self.config.datapath.mtu),
                    sandbox: None,
                    socket_path: None,
                    pci_id: None,
                },
                Interface {
                    name: request.ifname.clone(),
                    mac: Some(format_mac(&created.pod_mac)),
                    mtu: Some(mtu),
                    sandbox: Some(request.netns.clone()),
                    socket_path: None,
                    pci_id: None,
                },
            ],
            ips: vec![IpConfig {
                address: IpNet::from(reserved.ip),
                gateway: Some(pod_gateway(reserved.ip)),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: match reserved.ip {
                    IpAddr::V4(_) => IpNet::V4(Ipv4Net::default()),
                    IpAddr::V6(_) => IpNet::V6(ipnet::Ipv6Net::default()),
                },
                gw: Some(pod_gateway(reserved.ip)),
                mtu: None,
                advmss: None,
                priority: None,
                table: None,
                scope: None,
            }],
            dns: Default::default(),
        };
        let result = match &netconf.prev_result {
            Some(previous) => previous.merged_with(&ours),
            None => ours,
        };
        metrics.phase("ADD", "datapath", phase.elapsed());

        let phase = enter_phase("datastore");
        let committed = self
            .store()
            .commit(&key, result.to_json(CniVersion::LATEST))
            .map_err(store_error);
        let durable = match committed {
            Ok(lsn) => self.make_durable(lsn).await,
            Err(e) => Err(e),
        };
        if let Err(e) = durable {
            // The runtime will not get a result, so nothing of this ADD may stay behind.
            return Err(self.undo_add(&reserved, e).await);
        }
        metrics.phase("ADD", "datastore", phase.elapsed());
        tracing::info!(
            container_id = %key.container_id, ifname = %key.ifname, ip = %reserved.ip, veth = %host_veth,
            "ADD committed"
        );
        Ok(result)
    }

    /// Chooses an address and returns it with the allocation lock still held (the caller
    /// reserves it before letting go). With a growing provider, an empty pool wakes the
    /// reconciler and the ADD waits up to `add_wait_ms` for addresses to arrive.
    async fn choose(
        &self,
        plugins: &PluginSet,
        pod: &PodInfo,
    ) -> Result<(Choice, tokio::sync::MutexGuard<'_, ()>), CniError> {
        let wait = self.add_wait;
        let deadline = tokio::time::Instant::now() + wait;
        let mut changed = self.pool_changed.subscribe();
        loop {
            changed.borrow_and_update();
            let allocating = self.allocation.lock().await;
            let chosen = match &plugins.allocator {
                // IPv6 prefix mode: the host hands out /128s of the node's prefix (the
                // allocator interface speaks IPv4; configuration refuses one here).
                _ if self.family == IpFamily::Ipv6 => self.choose_v6(),
                None => self.choose_builtin(),
                Some(plugin) => self.choose_by_plugin(plugin, pod).await,
            };
            match chosen {
                Ok(choice) => return Ok((choice, allocating)),
                Err(e) if e.code == codes::POOL_EXHAUSTED && self.dynamic => {
                    drop(allocating);
                    self.wake_reconciler.notify_one();
                    let waiting = Instant::now();
                    let waited = tokio::time::timeout_at(deadline, async {
                        // A cooling address comes free with time, not with an inventory change.
                        tokio::select! {
                            _ = changed.changed() => {}
                            () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        }
                    })
                    .await;
                    wasmcni_telemetry::metrics::Metrics::global().phase(
                        "ADD",
                        "pool_wait",
                        waiting.elapsed(),
                    );
                    if waited.is_err() {
                        return Err(self.exhausted_after_wait(wait));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn exhausted_after_wait(&self, wait: Duration) -> CniError {
        let capacity = self
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .capacity();
        let cooling = self.cooling_now().len();
        let cause = self.provider_grow_error().map_or_else(String::new, |e| {
            format!("; the last attempt to grow it failed: {e}")
        });
        CniError::new(
            codes::POOL_EXHAUSTED,
            format!(
                "no free IPv4 address after waiting {} ms for the pool to grow ({capacity} addresses, all held or cooling ({cooling} cooling)){cause}",
                wait.as_millis()
            ),
        )
        .with_details("the pool grows on the allocator plugin's plan within the instance's ENI limits and the subnets' free addresses; retried pods get addresses once it has grown")
    }

    fn provider_grow_error(&self) -> Option<String> {
        self.grow_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Remembers a failed ENI request for the next plans: the last
    /// [`REQUEST_FAILURES_KEPT`] of the last [`REQUEST_FAILURES_FOR`].
    pub(crate) fn record_request_failure(&self, failure: RequestFailure) {
        let mut failures = self
            .request_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        failures.push_back((Instant::now(), failure));
        while failures.len() > REQUEST_FAILURES_KEPT {
            failures.pop_front();
        }
    }

    /// The failed ENI requests still remembered, newest first, with their age.
    fn recent_request_failures(&self) -> Vec<RequestFailure> {
        let mut failures = self
            .request_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        failures.retain(|(at, _)| at.elapsed() < REQUEST_FAILURES_FOR);
        failures
            .iter()
            .rev()
            .map(|(at, f)| RequestFailure {
                age_ms: at.elapsed().as_millis() as u64,
                ..f.clone()
            })
            .collect()
    }

    /// Records why the pool last failed to grow (`None`: it last grew fine).
    pub(crate) fn set_grow_error(&self, error: Option<String>) {
        *self.grow_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    /// The built-in allocator: the next free address after the pool's cursor.
    fn choose_builtin(&self) -> Result<Choice, CniError> {
        let store = self.store();
        let resting = self.resting();
        let cooling = &resting.cooling;
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.choose(|ip| resting.taken(&store, ip)).ok_or_else(|| {
            let details = if self.dynamic {
                "the pool grows on the allocator plugin's plan"
            } else {
                "free addresses return as pods are deleted; add CIDRs to provider.static.cidrs to grow the pool"
            };
            CniError::new(
                codes::POOL_EXHAUSTED,
                format!(
                    "no free IPv4 address: all {} addresses of the pool are assigned{}",
                    pool.capacity(),
                    if cooling.is_empty() { String::new() } else { format!(" or cooling down ({})", cooling.len()) }
                ),
            )
            .with_details(details)
        })
    }

    /// IPv6 prefix mode: the next /128 of the node's prefix that no pod holds and none cools.
    fn choose_v6(&self) -> Result<Choice, CniError> {
        let store = self.store();
        let resting = self.resting();
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.choose_v6(|ip| resting.taken(&store, ip)).ok_or_else(|| {
            CniError::new(
                codes::POOL_EXHAUSTED,
                "no free IPv6 address: the primary ENI has no IPv6 prefix (the daemon delegates a /80 at start and again when it finds it gone)",
            )
            .with_details("the daemon's log names EC2's answer to AssignIpv6Addresses")
        })
    }

    /// Asks the allocator plugin (off the async workers: a hostile plugin burns its whole fuel
    /// budget) and holds its answer to the host's invariants: an address of the pool, not
    /// excluded, not held by anyone. A failure (trap, limits, error, refused proposal) fails
    /// the ADD unless the plugin's `allocate` fails open, in which case the built-in
    /// allocator chooses.
    async fn choose_by_plugin(
        &self,
        plugin: &Arc<Plugin>,
        pod: &PodInfo,
    ) -> Result<Choice, CniError> {
        let started = std::time::Instant::now();
        let outcome = self.ask_plugin(plugin, pod).await;
        self.audit_log.record(&AuditEntry {
            ts_ms: now_unix_ms(),
            plugin: plugin.name(),
            call: "allocate",
            args: pod.audit_args(),
            outcome: if outcome.is_ok() { "ok" } else { "error" },
            result: match &outcome {
                Ok(choice) => choice.ip.to_string(),
                Err(e) => e.msg.clone(),
            },
            duration_us: started.elapsed().as_micros() as u64,
        });
        match outcome {
            Err(e) if e.code == codes::PLUGIN_FAILURE => {
                match plugin.spec().on_failure.of(Hook::Allocate) {
                    FailureMode::Open => {
                        tracing::warn!(plugin = %plugin.name(), "{}; allocate fails open: the built-in allocator chooses", e.msg);
                        self.choose_builtin()
                    }
                    FailureMode::Closed => Err(CniError::new(
                        e.code,
                        format!("{}; the ADD fails closed", e.msg),
                    )),
                }
            }
            other => other,
        }
    }

    async fn ask_plugin(&self, plugin: &Arc<Plugin>, pod: &PodInfo) -> Result<Choice, CniError> {
        // (Built under the allocation lock, so the snapshot's held addresses are current.)
        let snapshot = self.pool_snapshot();
        let task = {
            let plugin = plugin.clone();
            let pod = pod.clone();
            tokio::task::spawn_blocking(move || plugin.allocate(snapshot, &pod))
        };
        let answer = task.await.map_err(|e| {
            CniError::new(codes::PLUGIN_FAILURE, format!("allocator task failed: {e}"))
        })?;
        let proposal = match answer {
            Ok(proposal) => proposal,
            // A full pool is the same "exhausted" answer as without a plugin (counted only
            // here, off the happy path).
            Err(PluginError::Refused { .. }) if self.free_addresses() == 0 => {
                return self.choose_builtin();
            }
            Err(e @ PluginError::Stopped { .. }) => {
                return Err(CniError::new(codes::TRY_AGAIN_LATER, e.to_string()))
            }
            Err(e) => return Err(CniError::new(codes::PLUGIN_FAILURE, e.to_string())),
        };
        let name = plugin.name();
        let refuse = |why: String| {
            tracing::warn!(plugin = %name, ip = %proposal, "allocator proposal refused: {why}");
            Err(CniError::new(
                codes::PLUGIN_FAILURE,
                format!("allocator plugin {name} proposed {proposal}, which {why}"),
            ))
        };
        let store = self.store();
        let pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        let Some(block) = pool.locate(proposal) else {
            return refuse("is not a usable address of the pool".into());
        };
        if pool.inventory().excluded.contains(&proposal) {
            return refuse("is excluded by the configuration".into());
        }
        if let Some(holder) = store.holder_of(proposal) {
            return refuse(format!("is already held by {}", holder.key));
        }
        if self.is_cooling(IpAddr::V4(proposal)) {
            return refuse("is cooling down after its release".into());
        }
        if self.is_foreign(IpAddr::V4(proposal)) {
            return refuse("is held by another CNI's pod on this node".into());
        }
        Ok(Choice {
            ip: IpAddr::V4(proposal),
            route_table: block.route_table,
            eni_id: block.eni_id.clone(),
        })
    }

    /// ADD when wasmcni runs chained after another main plugin: the policy hooks judge the
    /// interface and addresses that plugin reported; the result passes through unchanged.
    async fn add_chained(
        &self,
        request: &CniRequest,
        netconf: &NetConf,
    ) -> Result<CniResult, CniError> {
        let previous = netconf.prev_result.clone().ok_or_else(|| {
            CniError::invalid_config(
                "mode \"chained\" needs a prevResult: list wasmcni after the main plugin in the conflist",
            )
        })?;
        let plugins = self.plugins();
        let attachment = Attachment {
            verb: Verb::Add,
            pod: pod_info(request, netconf),
            addresses: result_addresses(&previous),
            eni_id: None,
            subnet_id: None,
            chained: true,
        };
        match run_policies(&plugins, &self.audit_log, attachment).await {
            PolicyOutcome::Denied(error) => Err(error),
            PolicyOutcome::Allowed(adjustments) if adjustments.is_empty() => Ok(previous),
            PolicyOutcome::Allowed(adjustments) => {
                let target = PodAttachment {
                    host: HostSide {
                        host_veth: String::new(),
                        // The IPv4 address when there is one (route adjustments are IPv4).
                        ip: previous
                            .ips
                            .iter()
                            .map(|n| n.address.addr())
                            .min_by_key(IpAddr::is_ipv6)
                            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                        route_table: None,
                    },
                    netns: request.netns.clone(),
                    pod_ifname: request.ifname.clone(),
                    mtu: self.config.datapath.mtu,
                };
                self.datapath
                    .adjust_pod(&target, &adjustments)
                    .await
                    .map_err(|e| datapath_error(e, "ADD (policy adjustments)"))?;
                Ok(previous)
            }
        }
    }

    /// DEL and CHECK when chained: only the policy hooks run.
    async fn hooks_chained(
        &self,
        request: &CniRequest,
        netconf: &NetConf,
        verb: Verb,
    ) -> Result<(), CniError> {
        let plugins = self.plugins();
        let attachment = Attachment {
            verb,
            pod: pod_info(request, netconf),
            addresses: netconf
                .prev_result
                .as_ref()
                .map(result_addresses)
                .unwrap_or_default(),
            eni_id: None,
            subnet_id: None,
            chained: true,
        };
        match run_policies(&plugins, &self.audit_log, attachment).await {
            PolicyOutcome::Denied(error) => Err(error),
            PolicyOutcome::Allowed(_) => Ok(()),
        }
    }

    /// Undoes a failed ADD: removes whatever the data path built and only then frees the
    /// address. If the removal fails too, the address stays reserved (never handed out while a
    /// route or rule to it may remain) and the periodic sweep retries the rollback.
    async fn undo_add(&self, reserved: &Allocation, cause: CniError) -> CniError {
        if let Err(cleanup) = self.datapath.teardown_pod(&reserved_host(reserved)).await {
            tracing::error!(error = %cleanup, ip = %reserved.ip, veth = %reserved.host_veth, "rollback of a failed ADD failed; the address stays reserved until the sweep succeeds");
            return CniError::new(
                cause.code,
                format!(
                    "{}; removing what was built also failed ({cleanup}), so {} stays reserved until the daemon's sweep succeeds",
                    cause.msg, reserved.ip
                ),
            );
        }
        match self.release(&reserved.key).await {
            Ok(()) => cause,
            Err(e) => CniError::new(
                cause.code,
                format!("{}; then freeing {}: {}", cause.msg, reserved.ip, e.msg),
            ),
        }
    }

    /// If another attachment owns `host_veth` it is an older sandbox of the same pod (the
    /// name is derived from the pod): that sandbox is gone, so, as VPC CNI does, its veth is
    /// replaced — after its own lock is taken and its address released, so its late DEL finds
    /// nothing to undo. An owner that is a *different* pod is refused, never torn down.
    async fn release_stale_owner_of(
        &self,
        host_veth: &str,
        key: &AttachmentKey,
        pod: Option<&PodRef>,
    ) -> Result<(), CniError> {
        let stale = {
            let store = self.store();
            store
                .find_by_veth(host_veth)
                .filter(|a| &a.key != key)
                .cloned()
        };
        let Some(stale) = stale else {
            return Ok(());
        };
        if stale.pod.as_ref() != pod || stale.key.ifname != key.ifname {
            return Err(CniError::new(
                codes::ATTACHMENT_EXISTS,
                format!(
                    "host veth {host_veth} already belongs to attachment {}/{} ({}), not to an older sandbox of this pod; refusing to replace it",
                    stale.key.container_id,
                    stale.key.ifname,
                    stale.pod.as_ref().map_or_else(|| "no pod name".to_owned(), |p| format!("pod {}/{}", p.namespace, p.name)),
                ),
            ));
        }
        let _stale_guard = self.locks.lock(stale.key.clone()).await;
        if self.store().get(&stale.key) != Some(&stale) {
            // Its own DEL (or GC) got there first.
            return Ok(());
        }
        tracing::warn!(
            container_id = %stale.key.container_id, ip = %stale.ip, veth = %host_veth,
            "a new sandbox of the same pod replaces an older attachment"
        );
        self.datapath
            .teardown_pod(&reserved_host(&stale))
            .await
            .map_err(|e| datapath_error(e, "ADD (replacing an older sandbox)"))?;
        self.release(&stale.key).await
    }

    /// DEL: the policy hooks are told (they cannot stop it), then the cleanup runs whatever
    /// they said; a hook's objection is reported afterwards only if its `del` fails closed.
    async fn del(&self, request: &CniRequest, netconf: &NetConf) -> Result<(), CniError> {
        let key = key_of(request);
        let _guard = self.locks.lock(key.clone()).await;
        let plugins = self.plugins();
        let mut objection = None;
        let phase = enter_phase("policy");
        if !plugins.policies.is_empty() {
            let held = self.store().get(&key).map(|a| a.ip);
            if let Some(ip) = held {
                let attachment = Attachment {
                    verb: Verb::Del,
                    pod: pod_info(request, netconf),
                    addresses: vec![IpNet::from(ip)],
                    eni_id: None,
                    subnet_id: None,
                    chained: false,
                };
                if let PolicyOutcome::Denied(error) =
                    run_policies(&plugins, &self.audit_log, attachment).await
                {
                    objection = Some(error);
                }
            }
        }
        if !plugins.policies.is_empty() {
            wasmcni_telemetry::metrics::Metrics::global().phase("DEL", "policy", phase.elapsed());
        }
        self.del_locked(&key).await?;
        objection.map_or(Ok(()), Err)
    }

    /// DEL by attachment key only (the configuration did not decode): no hooks, just cleanup.
    async fn del_by_key(&self, request: &CniRequest) -> Result<(), CniError> {
        let key = key_of(request);
        let _guard = self.locks.lock(key.clone()).await;
        self.del_locked(&key).await
    }

    /// DEL without taking the key lock (for callers that hold it or run before serving).
    pub(crate) async fn del_locked(&self, key: &AttachmentKey) -> Result<(), CniError> {
        let allocation = self.store().get(key).cloned();
        let Some(allocation) = allocation else {
            // Nothing recorded: DEL twice, DEL after a failed ADD, or a foreign attachment.
            return Ok(());
        };
        let metrics = wasmcni_telemetry::metrics::Metrics::global();
        let phase = enter_phase("datapath");
        self.datapath
            .teardown_pod(&reserved_host(&allocation))
            .await
            .map_err(|e| datapath_error(e, "DEL"))?;
        metrics.phase("DEL", "datapath", phase.elapsed());
        let phase = enter_phase("datastore");
        self.release(key).await?;
        metrics.phase("DEL", "datastore", phase.elapsed());
        tracing::info!(container_id = %key.container_id, ifname = %key.ifname, ip = %allocation.ip, "DEL done");
        Ok(())
    }

    async fn check(&self, request: &CniRequest, netconf: &NetConf) -> Result<(), CniError> {
        let key = key_of(request);
        let _guard = self.locks.lock(key.clone()).await;
        let allocation = self.store().get(&key).cloned().ok_or_else(|| {
            CniError::new(
                codes::UNKNOWN_CONTAINER,
                format!(
                    "no attachment {}/{} is known to wasmcni",
                    key.container_id, key.ifname
                ),
            )
        })?;
        if let Some(previous) = &netconf.prev_result {
            let ours = IpNet::from(allocation.ip);
            if !previous.ips.iter().any(|ip| ip.address == ours) {
                return Err(CniError::new(
                    codes::CHECK_FAILED,
                    format!("prevResult does not list {ours}, the address wasmcni assigned"),
                ));
            }
        }
        let netns = if request.netns.is_empty() {
            allocation.netns.clone()
        } else {
            request.netns.clone()
        };
        let plugins = self.plugins();
        if !plugins.policies.is_empty() {
            let hooked = Attachment {
                verb: Verb::Check,
                pod: pod_info(request, netconf),
                addresses: vec![IpNet::from(allocation.ip)],
                eni_id: None,
                subnet_id: None,
                chained: false,
            };
            if let PolicyOutcome::Denied(error) =
                run_policies(&plugins, &self.audit_log, hooked).await
            {
                return Err(error);
            }
        }
        let mut attachment = attachment_of(&allocation, &request.ifname, self.config.datapath.mtu);
        attachment.netns = netns;
        let phase = enter_phase("datapath");
        let checked = self.datapath.check_pod(&attachment).await;
        wasmcni_telemetry::metrics::Metrics::global().phase("CHECK", "datapath", phase.elapsed());
        checked.map_err(|e| match e {
            DatapathError::CheckFailed { missing } => CniError::new(
                codes::CHECK_FAILED,
                format!(
                    "CHECK of {}/{} ({}) failed: {}",
                    key.container_id,
                    key.ifname,
                    allocation.ip,
                    missing.join("; ")
                ),
            ),
            other => datapath_error(other, "CHECK"),
        })
    }

    async fn gc(&self, netconf: &NetConf) -> Result<(), CniError> {
        let Some(valid) = &netconf.valid_attachments else {
            // Without the list nothing can be called stale; deleting everything would be wrong.
            tracing::info!(network = %netconf.name, "GC without cni.dev/valid-attachments: nothing to do");
            return Ok(());
        };
        // ADDs still in flight (Reserved) are not stale; each candidate is re-checked under
        // its lock, so an attachment committed meanwhile is never deleted.
        let stale: Vec<Allocation> = self
            .store()
            .allocations()
            .filter(|a| a.network == netconf.name && a.state == AllocationState::Committed)
            .filter(|a| {
                !valid
                    .iter()
                    .any(|v| v.container_id == a.key.container_id && v.ifname == a.key.ifname)
            })
            .cloned()
            .collect();
        let mut failures = Vec::new();
        let mut released = 0;
        for candidate in &stale {
            let key = &candidate.key;
            let _guard = self.locks.lock(key.clone()).await;
            if self.store().get(key) != Some(candidate) {
                continue;
            }
            match self.del_locked(key).await {
                Ok(()) => released += 1,
                Err(e) => failures.push(format!("{}/{}: {}", key.container_id, key.ifname, e.msg)),
            }
        }
        tracing::info!(network = %netconf.name, released, "GC done");
        if failures.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                codes::DATAPATH_FAILURE,
                format!(
                    "GC could not release {} attachment(s): {}",
                    failures.len(),
                    failures.join("; ")
                ),
            ))
        }
    }

    /// Whether STATUS answers ready now.
    pub fn is_ready(&self) -> bool {
        self.status().is_ok()
    }

    fn status(&self) -> Result<(), CniError> {
        if !self.ready.load(Ordering::SeqCst) {
            let cause = self
                .provider_grow_error()
                .map_or_else(String::new, |e| format!(" (last attempt: {e})"));
            return Err(CniError::new(
                codes::NOT_AVAILABLE,
                format!(
                    "the address pool has not reached its minimum since the daemon started{cause}"
                ),
            ));
        }
        if self.dynamic {
            // An empty EC2 pool grows on demand; the ADD waits for it.
            return Ok(());
        }
        if self.free_addresses() == 0 {
            return Err(CniError::new(
                codes::NOT_AVAILABLE,
                match self.family {
                    IpFamily::Ipv4 => "no free IPv4 address in the pool: new pods cannot be attached until some are deleted",
                    IpFamily::Ipv6 => "no IPv6 prefix on the primary ENI: new pods cannot be attached until the daemon delegates one again (its log names EC2's answer)",
                },
            ));
        }
        Ok(())
    }

    /// Removes `key` from the datastore and makes that durable; the address then cools down
    /// and the reconciler is told the pool has a free address more.
    pub(crate) async fn release(&self, key: &AttachmentKey) -> Result<(), CniError> {
        // Cooling before the record goes, so whoever finds the address not held finds it
        // cooling (readers take the store lock first, then look at the cooling set).
        let ip = self.store().get(key).map(|a| a.ip);
        if let (Some(ip), true) = (ip, self.cooldown > Duration::ZERO) {
            let (snapshot, generation) = {
                let mut cooling = self.cooling.lock().unwrap_or_else(|p| p.into_inner());
                let cooldown = self.cooldown;
                cooling.retain(|_, at| at.elapsed() < cooldown);
                cooling.insert(ip, Instant::now());
                let generation = self.cooling_generation.fetch_add(1, Ordering::SeqCst) + 1;
                (cooling.clone(), generation)
            };
            // Written outside the cooling lock (ADDs read it under the store lock); one writer
            // at a time, and never a snapshot older than the one already on disk.
            let mut written = self
                .cooling_written
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if generation > *written {
                match super::cooling::save(&self.config.daemon.state_dir, &snapshot) {
                    Ok(()) => *written = generation,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot keep the cooling addresses on disk; after a restart they could be reused before their cooldown ends")
                    }
                }
            }
        }
        let (_, lsn) = self.store().release(key).map_err(store_error)?;
        if self.dynamic {
            self.wake_reconciler.notify_one();
        }
        self.make_durable(lsn).await
    }
}

/// Notes the phase a request enters: its log events carry it (`span.phase`), and the returned
/// instant times it.
fn enter_phase(phase: &'static str) -> Instant {
    tracing::Span::current().record("phase", phase);
    Instant::now()
}

/// Addresses that are not free although no attachment holds them.
struct Resting {
    cooling: Vec<IpAddr>,
    foreign: Vec<IpAddr>,
}

impl Resting {
    /// Whether `ip` is held (per `store`), cooling, or another CNI's.
    fn taken(&self, store: &Datastore, ip: impl Into<IpAddr>) -> bool {
        let ip = ip.into();
        store.holder_of(ip).is_some() || self.cooling.contains(&ip) || self.foreign.contains(&ip)
    }
}

/// Free addresses of both families: IPv4 by walking the blocks, IPv6 by counting what is
/// taken inside the prefixes (a /80 is never walked).
fn free_in(pool: &Pool, store: &Datastore, resting: &Resting) -> u64 {
    let taken_v6 = store
        .allocations()
        .map(|a| a.ip)
        .chain(resting.cooling.iter().copied())
        .chain(resting.foreign.iter().copied())
        .filter_map(|ip| match ip {
            IpAddr::V6(ip) => Some(ip),
            IpAddr::V4(_) => None,
        });
    pool.free_count(|ip| resting.taken(store, ip)) + pool.free_count_v6(taken_v6)
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
        route_table: allocation.route_table,
    }
}

fn attachment_of(allocation: &Allocation, ifname: &str, mtu: u32) -> PodAttachment {
    PodAttachment {
        host: reserved_host(allocation),
        netns: allocation.netns.clone(),
        pod_ifname: ifname.to_owned(),
        mtu,
    }
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

#[cfg(test)]
#[path = "handler/tests.rs"]
mod tests;
