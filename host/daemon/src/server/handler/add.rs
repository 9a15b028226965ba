//! ADD: reserve an address (the one requested, or chosen by the pool, the allocator plugin or
//! the IPv6 prefix) and start making it durable, run the policy hooks, set up the data path,
//! commit, answer once the reservation is durable; undone on any failure.
//! Chained ADDs (after another main plugin) run only the hooks.

use super::*;

impl<D: Datapath> Handler<D> {
    pub(super) async fn add(
        &self,
        request: &CniRequest,
        netconf: &NetConf,
    ) -> Result<CniResult, CniError> {
        // Checked before anything is locked, released or reserved: a bad request changes
        // nothing. After another plugin (a `prevResult`), CNI_ARGS' IP= and MAC= were that
        // plugin's to serve: wasmcni's own interface takes neither.
        let (requested, pod_mac) = if netconf.prev_result.is_none() {
            (
                wasmcni_cni::requested::addresses(request, netconf)?,
                wasmcni_cni::requested::mac(request, netconf)?,
            )
        } else {
            (None, None)
        };
        let wanted = requested.as_ref().map(|r| self.wanted(r)).transpose()?;
        let routes = requested_routes(netconf, self.family)?;
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
        let (choice, ipv6, _allocating) = self
            .choose_addresses(wanted.as_ref(), &plugins, &pod_info)
            .await?;
        // Still under the allocation lock: an IPv6 pod's IPv4 egress address, for its first
        // interface only (another interface's IPv4 routes would collide with the first's, or
        // with another network's).
        let egress_v4 = if takes_egress(&request.ifname, &routes) {
            self.choose_egress()?
        } else {
            None
        };
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
            // As asked (the table is known, so an undo finds the pod's rule); the default
            // route as decided is stored at commit.
            pod_routes: routes,
            created_unix_ms: now_unix_ms(),
            egress_v4,
            ipv6,
        };
        let reserve_lsn = self
            .store()
            .reserve(reserved.clone())
            .map_err(store_error)?;
        drop(_allocating);
        // The reservation is made durable while the hooks and the data path run; the answer
        // waits for it, not for the commit's record (see below).
        let reserve_synced = self.start_sync(reserve_lsn);
        if self.dynamic {
            // One address fewer: the plan may want to grow.
            self.wake_warm_pool.notify_one();
        }

        let phase = enter_phase("policy");
        let adjustments = if plugins.policies.is_empty() {
            Vec::new()
        } else {
            let attachment = Attachment {
                verb: Verb::Add,
                pod: pod_info,
                addresses: reserved.pod_addresses().map(IpNet::from).collect(),
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
            .unwrap_or(self.pod_mtu);

        if !plugins.policies.is_empty() {
            metrics.phase("ADD", "policy", phase.elapsed());
        }
        let phase = enter_phase("datapath");
        let attachment = PodAttachment {
            pod_mac,
            ..attachment_of(&reserved, &request.ifname, self.pod_mtu)
        };
        // (`reserved.pod_routes` are the routes as asked: the data path decides the default.)
        let busy = self.reaper.busy();
        let created = match self.datapath.setup_pod(&attachment).await {
            Ok(created) => created,
            Err(e) => {
                drop(busy);
                return Err(self.undo_add(&reserved, datapath_error(e, "ADD")).await);
            }
        };
        if !adjustments.is_empty() {
            let attachment = PodAttachment {
                routes: created.routes.clone(),
                ..attachment
            };
            if let Err(e) = self.datapath.adjust_pod(&attachment, &adjustments).await {
                drop(busy);
                return Err(self
                    .undo_add(&reserved, datapath_error(e, "ADD (policy adjustments)"))
                    .await);
            }
        }
        drop(busy);

        let ours = own_result(
            &reserved,
            (self.pod_mtu, mtu),
            Some((created.host_mac, created.pod_mac)),
            &created.routes,
        );
        let result = match &netconf.prev_result {
            Some(previous) => previous.merged_with(&ours),
            None => ours,
        };
        metrics.phase("ADD", "datapath", phase.elapsed());

        let phase = enter_phase("datastore");
        // The answer waits for the reservation's record (synced since it was written), not for
        // the commit's: should the commit's record be lost, start-up finds the reservation
        // with its data path complete and commits it (`Handler::complete_routes`), as an ADD
        // that may have been answered; one that was not, the runtime DELs, as it must after a
        // failed ADD. The commit's record is synced right after, off the answer's path.
        let committed = match reserve_synced.wait().await {
            Ok(()) => self
                .store()
                .commit(&key, result.to_json(CniVersion::LATEST), &created.routes)
                .map_err(store_error),
            Err(e) => Err(e),
        };
        match committed {
            // Not waited for: see above.
            Ok(commit_lsn) => drop(self.start_sync(commit_lsn)),
            Err(e) => {
                // The runtime will not get a result, so nothing of this ADD may stay behind.
                return Err(self.undo_add(&reserved, e).await);
            }
        }
        metrics.phase("ADD", "datastore", phase.elapsed());
        tracing::info!(
            container_id = %key.container_id, ifname = %key.ifname, ip = %reserved.ip, ipv6 = ?reserved.ipv6, veth = %host_veth,
            default_route = created.routes.has_default(),
            "ADD committed"
        );
        Ok(result)
    }

    /// The pod's address (exactly the one asked for, or none: the allocator plugin is then
    /// not asked) and, on a dual-stack node, its /128, chosen under one allocation lock that
    /// is returned held. The /128 is waited for as an IPv4 address is when the only free ones
    /// (or the one asked for) are DELeted pods' whose veths the kernel is still deleting.
    pub(super) async fn choose_addresses(
        &self,
        wanted: Option<&requested::Wanted>,
        plugins: &PluginSet,
        pod: &PodInfo,
    ) -> Result<(Choice, Option<Ipv6Addr>, tokio::sync::MutexGuard<'_, ()>), CniError> {
        let deadline = Instant::now() + draining::DRAIN_WAIT;
        loop {
            let (choice, allocating) = match wanted.and_then(|w| w.first.map(|ip| (ip, w.source))) {
                Some((ip, source)) => self.choose_requested(ip, source).await?,
                None => self.choose(plugins, pod).await?,
            };
            let error = match self.choose_second(wanted) {
                Ok(ipv6) => return Ok((choice, ipv6, allocating)),
                Err(e) => e,
            };
            // Nothing is reserved yet: let go, wait for the drain, choose both again.
            let awaited = match wanted.and_then(|w| w.ipv6) {
                Some(v6) => self
                    .is_draining(IpAddr::V6(v6))
                    .then_some(Some(IpAddr::V6(v6))),
                None => (error.code == codes::POOL_EXHAUSTED
                    && self.draining_now().iter().any(IpAddr::is_ipv6))
                .then_some(None),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            match awaited {
                Some(ip) if !left.is_zero() => {
                    drop(allocating);
                    self.drained(ip, left).await;
                }
                _ => return Err(error),
            }
        }
    }

    /// Chooses an address and returns it with the allocation lock still held (the caller
    /// reserves it before letting go). With a growing provider, an empty pool wakes the
    /// reconciler and the ADD waits up to `add_wait_ms` for addresses to arrive.
    pub(super) async fn choose(
        &self,
        plugins: &PluginSet,
        pod: &PodInfo,
    ) -> Result<(Choice, tokio::sync::MutexGuard<'_, ()>), CniError> {
        let wait = self.add_wait;
        let start = tokio::time::Instant::now();
        let mut changed = self.pool_changed.subscribe();
        let mut asked_again = 0;
        // The allocator's last "exhausted", while this ADD waits for the pool.
        let mut exhausted: Option<CniError> = None;
        let by_plugin = plugins.allocator.is_some() && self.family != IpFamily::Ipv6;
        loop {
            changed.borrow_and_update();
            // Woken while waiting, with still no free IPv4 address: no allocator can answer
            // anything but "exhausted", so it is not asked. Every waiting ADD is woken by every
            // change of the pool; asking it each time made the allocator calls of a burst grow
            // with waiters × changes (`simulate` showed it: seconds of CPU per burst).
            let waited_on = exhausted
                .take()
                .filter(|_| by_plugin && !self.has_free_ipv4());
            let e = match waited_on {
                Some(e) if self.dynamic || !self.draining_now().is_empty() => e,
                Some(e) => return Err(e),
                None => {
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
                        // The allocator saw a full pool, but an address came free since: ask
                        // it again with a fresh snapshot (a few times at most; then the
                        // exhaustion is answered as any: waited for where the pool grows or
                        // drains, else returned).
                        Err(e)
                            if e.code == codes::POOL_EXHAUSTED
                                && plugins.allocator.is_some()
                                && asked_again < 3
                                && self.has_free_ipv4() =>
                        {
                            asked_again += 1;
                            continue;
                        }
                        // A growing pool is waited for up to `add_wait`; addresses whose veth
                        // is still being deleted up to DRAIN_WAIT.
                        Err(e)
                            if e.code == codes::POOL_EXHAUSTED
                                && (self.dynamic || !self.draining_now().is_empty()) =>
                        {
                            e
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            if self.dynamic {
                self.wake_warm_pool.notify_one();
            }
            // In EC2 mode a drained address still cools (30 s by default), so the drain
            // wait frees nothing there; the default add_wait (10 s) is longer anyway.
            let draining = !self.draining_now().is_empty();
            let deadline = start
                + if draining {
                    wait.max(draining::DRAIN_WAIT)
                } else {
                    wait
                };
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
                let still = self.draining_now().len();
                let waited_for = deadline.saturating_duration_since(start);
                return Err(if self.dynamic {
                    self.exhausted_after_wait(waited_for)
                } else {
                    let why = match still {
                        0 => format!(
                            "the DELeted pods' addresses that were draining came free only as the wait of {} ms ran out; retry",
                            waited_for.as_millis()
                        ),
                        _ => format!(
                            "{still} of them are DELeted pods' addresses whose veths the kernel had not finished deleting after {} ms",
                            waited_for.as_millis()
                        ),
                    };
                    let details = e
                        .details
                        .as_ref()
                        .map_or(why.clone(), |d| format!("{why}; {d}"));
                    e.with_details(details)
                });
            }
            exhausted = Some(e);
        }
    }

    /// An IPv6 pod's node-local IPv4 egress address, when IPv4 egress is on: the next one
    /// no attachment holds and no other pod routes (a VPC CNI pod during a migration uses the
    /// same range). Called under the allocation lock.
    fn choose_egress(&self) -> Result<Option<Ipv4Addr>, CniError> {
        let Some(egress) = &self.egress else {
            return Ok(None);
        };
        let store = self.store();
        let resting = self.resting();
        let mut pool = egress.lock().unwrap_or_else(|p| p.into_inner());
        match pool.choose(|ip| resting.taken(&store, ip)) {
            Some(ip) => Ok(Some(ip)),
            None => Err(CniError::new(
                codes::POOL_EXHAUSTED,
                format!(
                    "no free IPv4 egress address: all {} of datapath.ipv4_egress_range {} are held by IPv6 pods",
                    pool.capacity(),
                    pool.range()
                ),
            )
            .with_details("widen datapath.ipv4_egress_range (a restart), or set datapath.ipv4_egress = false if the pods need no IPv4")),
        }
    }

    pub(super) fn exhausted_after_wait(&self, wait: Duration) -> CniError {
        let capacity = self
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .capacity_v4();
        // (IPv4 addresses only: a dual-stack node's /128s rest beside them.)
        let cooling = self.cooling_now().iter().filter(|ip| ip.is_ipv4()).count();
        let draining = self.draining_now().iter().filter(|ip| ip.is_ipv4()).count();
        let cause = self.provider_grow_error().map_or_else(String::new, |e| {
            format!("; the last attempt to grow it failed: {e}")
        });
        CniError::new(
            codes::POOL_EXHAUSTED,
            format!(
                "no free IPv4 address after waiting {} ms for the pool to grow ({capacity} addresses, all held, cooling or draining ({cooling} cooling, {draining} draining)){cause}",
                wait.as_millis()
            ),
        )
        .with_details("the pool grows on the allocator plugin's plan within the instance's ENI limits and the subnets' free addresses; retried pods get addresses once it has grown")
    }

    /// The built-in allocator: the next free address after the pool's cursor.
    pub(super) fn choose_builtin(&self) -> Result<Choice, CniError> {
        let store = self.store();
        let resting = self.resting();
        // (IPv4 addresses only: a dual-stack node's /128s rest beside them.)
        let cooling: Vec<&IpAddr> = resting.cooling.iter().filter(|ip| ip.is_ipv4()).collect();
        let draining = resting.draining.iter().filter(|ip| ip.is_ipv4()).count();
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
                    "no free IPv4 address: all {} addresses of the pool are assigned{}{}",
                    pool.capacity_v4(),
                    if cooling.is_empty() { String::new() } else { format!(" or cooling down ({})", cooling.len()) },
                    if draining == 0 { String::new() } else { format!(" or draining ({draining}: DELeted, veth not yet deleted)") }
                ),
            )
            .with_details(details)
        })
    }

    /// An IPv6 pod's (or a dual-stack pod's) /128: the next one of the node's prefixes that no
    /// pod holds and none rests.
    pub(super) fn choose_v6(&self) -> Result<Choice, CniError> {
        let store = self.store();
        let resting = self.resting();
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.choose_v6(|ip| resting.taken(&store, ip)).ok_or_else(|| {
            if self.dynamic || self.ec2.get().is_some() {
                CniError::new(
                    codes::POOL_EXHAUSTED,
                    "no free IPv6 address: the primary ENI has no IPv6 prefix (the daemon delegates a /80 at start and again when it finds it gone)",
                )
                .with_details("the daemon's log names EC2's answer to AssignIpv6Addresses")
            } else {
                CniError::new(
                    codes::POOL_EXHAUSTED,
                    format!(
                        "no free IPv6 address: all {} addresses of provider.static.cidrs' IPv6 prefixes are assigned, excluded or resting",
                        pool.capacity_v6()
                    ),
                )
                .with_details("free addresses return as pods are deleted; add an IPv6 prefix to provider.static.cidrs to grow the pool")
            }
        })
    }

    /// Asks the allocator plugin (off the async workers: a hostile plugin burns its whole fuel
    /// budget) and holds its answer to the host's invariants: an address of the pool, not
    /// excluded, not held by anyone. A failure (trap, limits, error, refused proposal) fails
    /// the ADD unless the plugin's `allocate` fails open, in which case the built-in
    /// allocator chooses.
    pub(super) async fn choose_by_plugin(
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

    pub(super) async fn ask_plugin(
        &self,
        plugin: &Arc<Plugin>,
        pod: &PodInfo,
    ) -> Result<Choice, CniError> {
        // (Built under the allocation lock, so the snapshot's held addresses are current.)
        let snapshot = Arc::new(self.pool_snapshot());
        let task = {
            let (plugin, pod, snapshot) = (plugin.clone(), pod.clone(), snapshot.clone());
            tokio::task::spawn_blocking(move || plugin.allocate(snapshot, &pod))
        };
        let answer = task.await.map_err(|e| {
            CniError::new(codes::PLUGIN_FAILURE, format!("allocator task failed: {e}"))
        })?;
        let proposal = match answer {
            Ok(proposal) => proposal,
            // A full pool is the same "exhausted" answer as without a plugin (so the ADD waits
            // for the pool to grow or drain, or asks again if an address came free since),
            // judged on the snapshot the plugin saw: an address that came free during the
            // call (a cooldown ending, a veth gone) neither makes its refusal a plugin
            // failure nor lets another chooser pick for it. Computed only here, off the
            // happy path.
            Err(PluginError::Refused { message, .. }) if !snapshot.has_free_address() => {
                return Err(CniError::new(
                    codes::POOL_EXHAUSTED,
                    format!(
                        "no free IPv4 address in the pool allocator plugin {} saw: {message}",
                        plugin.name()
                    ),
                ));
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
            return refuse("is held by a pod on this node the datastore does not record (another CNI's, or one whose record was lost)".into());
        }
        if self.is_assigning(IpAddr::V4(proposal)) {
            return refuse("is being assigned for another pod's requested address".into());
        }
        Ok(Choice {
            ip: IpAddr::V4(proposal),
            route_table: block.route_table,
            eni_id: block.eni_id.clone(),
        })
    }

    /// ADD when wasmcni runs chained after another main plugin: the policy hooks judge the
    /// interface and addresses that plugin reported; the result passes through unchanged.
    pub(super) async fn add_chained(
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
                        // Beside an IPv4 one (so an MTU below IPv6's minimum is refused).
                        ipv6: previous.ips.iter().find_map(|n| match n.address.addr() {
                            IpAddr::V6(v6)
                                if previous.ips.iter().any(|n| n.address.addr().is_ipv4()) =>
                            {
                                Some(v6)
                            }
                            _ => None,
                        }),
                        route_table: None,
                        pod_rule: None,
                    },
                    netns: request.netns.clone(),
                    pod_ifname: request.ifname.clone(),
                    mtu: self.pod_mtu,
                    pod_mac: None,
                    // Another plugin's interface: adjustments go in the main table.
                    routes: PodRoutes::default(),
                    egress_v4: None,
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
    pub(super) async fn hooks_chained(
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
    pub(super) async fn undo_add(&self, reserved: &Allocation, cause: CniError) -> CniError {
        let addresses = reserved
            .pod_addresses()
            .map(|ip| ip.to_string())
            .collect::<Vec<_>>()
            .join(" and ");
        if let Err(cleanup) = self.datapath.teardown_pod(&reserved_host(reserved)).await {
            tracing::error!(error = %cleanup, ip = %reserved.ip, ipv6 = ?reserved.ipv6, veth = %reserved.host_veth, "rollback of a failed ADD failed; the address stays reserved until the sweep succeeds");
            return CniError::new(
                cause.code,
                format!(
                    "{}; removing what was built also failed ({cleanup}), so {addresses} stays reserved until the daemon's sweep succeeds",
                    cause.msg
                ),
            );
        }
        match self.release(&reserved.key).await {
            Ok(()) => cause,
            Err(e) => CniError::new(
                cause.code,
                format!("{}; then freeing {addresses}: {}", cause.msg, e.msg),
            ),
        }
    }

    /// The routes of a reservation whose data path is complete, as its ADD decided them; `None`
    /// when the data path is not complete. An ADD answers once its reservation is durable, so
    /// after a crash a reservation may stand for a pod the runtime was told about: its data
    /// path is then complete (the host side, built last, is there), and CHECK's verification
    /// tells which default routes the ADD installed — the most it installed first, since one
    /// without a default route also passes where one with it does.
    pub(crate) async fn complete_routes(
        &self,
        allocation: &Allocation,
    ) -> Result<Option<PodRoutes>, CniError> {
        let asked = &allocation.pod_routes;
        let mut candidates: Vec<PodRoutes> = match allocation.ipv6 {
            Some(_) if allocation.ip.is_ipv4() => {
                [(false, false), (false, true), (true, false), (true, true)]
                    .into_iter()
                    .map(|(v4, v6)| asked.resolved_dual(v4, v6))
                    .collect()
            }
            _ => [false, true]
                .into_iter()
                .map(|present| asked.resolved(present))
                .collect(),
        };
        candidates.dedup();
        for routes in candidates {
            let attachment = PodAttachment {
                routes: routes.clone(),
                ..attachment_of(allocation, &allocation.key.ifname, self.pod_mtu)
            };
            match self.datapath.check_pod(&attachment).await {
                Ok(()) => return Ok(Some(routes)),
                Err(DatapathError::CheckFailed { .. }) => {}
                Err(e) => return Err(datapath_error(e, "checking an unfinished ADD")),
            }
        }
        Ok(None)
    }

    /// Commits a reservation whose data path is complete ([`Self::complete_routes`]), durably.
    /// Its stored result is rebuilt from the reservation (without the MACs, with the pods'
    /// MTU, without a `prevResult`): informational, as every stored result; CHECK and DEL go by
    /// the record's addresses and routes.
    pub(crate) async fn commit_complete(
        &self,
        allocation: &Allocation,
        routes: &PodRoutes,
    ) -> Result<(), CniError> {
        let result = own_result(allocation, (self.pod_mtu, self.pod_mtu), None, routes);
        let lsn = self
            .store()
            .commit(&allocation.key, result.to_json(CniVersion::LATEST), routes)
            .map_err(store_error)?;
        self.make_durable(lsn).await
    }

    /// If another attachment owns `host_veth` it is an older sandbox of the same pod (the
    /// name is derived from the pod): that sandbox is gone, so, as VPC CNI does, its veth is
    /// replaced — after its own lock is taken and its address released, so its late DEL finds
    /// nothing to undo. An owner that is a *different* pod is refused, never torn down.
    pub(super) async fn release_stale_owner_of(
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
}

/// Whether an attachment gets an IPv4 egress address (when the pods are IPv6 and egress is
/// on): the pod's first interface, `eth0`, routing in the main table with its default route
/// not switched off. The egress address brings the IPv4 default route, which only one
/// interface of a pod can have.
fn takes_egress(ifname: &str, routes: &PodRoutes) -> bool {
    ifname == "eth0" && routes.table.is_none() && routes.default_route != DefaultRoute::Skip
}
