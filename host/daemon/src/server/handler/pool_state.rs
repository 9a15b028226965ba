//! What the pool holds besides the datastore's records: the inventory and its gauges, addresses
//! cooling after a release or held by another CNI's pods, the snapshot plugins see, the
//! recent EC2 request failures and why the pool could not grow.

use super::*;

impl<D: Datapath> Handler<D> {
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
            .flat_map(|a| a.pod_addresses().map(move |ip| (a, ip)))
            .filter(|(_, ip)| !pool.contains(*ip))
            .map(|(a, ip)| (a.key.clone(), ip))
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
        let (total, assigned, cooling, draining, free) = {
            let store = self.store();
            let resting = self.resting();
            let pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            let free = free_in(&pool, &store, &resting);
            (
                pool.capacity(),
                // Addresses, as `total` counts them (a dual-stack pod holds two).
                store
                    .allocations()
                    .map(|a| a.pod_addresses().count() as u64)
                    .sum(),
                resting.cooling.len() as u64,
                resting.draining.len() as u64,
                free,
            )
        };
        for (state, value) in [
            ("total", total),
            ("assigned", assigned),
            ("cooling", cooling),
            ("draining", draining),
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

    /// Whether `ip` rests after a release; expired entries are dropped as they are met.
    pub(crate) fn cooling_now(&self) -> Vec<IpAddr> {
        let mut cooling = self.cooling.lock().unwrap_or_else(|p| p.into_inner());
        let cooldown = self.cooldown;
        cooling.retain(|_, at| at.elapsed() < cooldown);
        cooling.keys().copied().collect()
    }

    /// Whether an address is held by an attachment, cooling down, held by another CNI's pod,
    /// being assigned for a request, or draining (its last pod's veth still being deleted).
    pub(crate) fn is_taken(&self, ip: impl Into<IpAddr>) -> bool {
        let ip = ip.into();
        self.store().holder_of(ip).is_some()
            || self.is_cooling(ip)
            || self.is_foreign(ip)
            || self.is_assigning(ip)
            || self.is_draining(ip)
    }

    /// Whether EC2 is being asked to assign `ip` for a requested address.
    pub(crate) fn is_assigning(&self, ip: IpAddr) -> bool {
        self.assigning
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&ip)
    }

    /// Whether a requested address is being assigned to `eni_id` (the ENI must stay).
    pub(crate) fn is_assigning_to(&self, eni_id: &str) -> bool {
        self.assigning
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|eni| eni == eni_id)
    }

    fn assigning_now(&self) -> Vec<IpAddr> {
        self.assigning
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    pub(super) fn is_foreign(&self, ip: IpAddr) -> bool {
        self.foreign_held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&ip)
    }

    pub(crate) fn foreign_now(&self) -> Vec<IpAddr> {
        self.foreign_held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads which addresses pods the datastore does not know hold on the node: other CNIs'
    /// pods (a migration from AWS VPC CNI leaves them running until they are replaced), and
    /// wasmcni veths routing an address no record holds (a record lost to damage). A DEL cuts
    /// its veth's route before its record goes, and an ADD records before it routes, so a
    /// pod served now is never counted; a DEL that lands between the read of the node and the
    /// look at the store can leave its address held until the next refresh, never the reverse.
    pub(crate) async fn refresh_node_held(&self) {
        // One at a time: an older read must never overwrite a newer one's holds.
        let _one = self.refreshing.lock().await;
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
                let unrecorded: Vec<(IpAddr, String)> = {
                    let store = self.store();
                    state
                        .pod_routes
                        .into_iter()
                        .filter(|(ip, _)| store.holder_of(*ip).is_none())
                        .collect()
                };
                let mut held = state.foreign_pod_routes;
                held.extend(unrecorded.iter().map(|(ip, _)| *ip));
                let before = std::mem::replace(
                    &mut *self.foreign_held.lock().unwrap_or_else(|p| p.into_inner()),
                    held,
                );
                for (ip, veth) in unrecorded.iter().filter(|(ip, _)| !before.contains(ip)) {
                    tracing::warn!(%ip, %veth, "a wasmcni veth routes an address no record holds (its record was lost): the address is held until the veth goes");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the node's pod routes failed"),
        }
    }

    pub(super) fn is_cooling(&self, ip: IpAddr) -> bool {
        self.cooling_left(ip).is_some()
    }

    /// How long `ip` still rests after its release, if it does.
    pub(super) fn cooling_left(&self, ip: IpAddr) -> Option<Duration> {
        if self.cooldown == Duration::ZERO {
            return None;
        }
        let released = *self
            .cooling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ip)?;
        self.cooldown
            .checked_sub(released.elapsed())
            .filter(|left| !left.is_zero())
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
                .chain(self.assigning_now())
                .chain(self.draining_now())
                .filter_map(ipv4_of)
                .collect(),
            cooling: cooling.into_iter().filter_map(ipv4_of).collect(),
            failures: self.recent_request_failures(),
        }
    }

    /// Whether an IPv4 address of the pool is free now (stops at the first).
    pub(crate) fn has_free_ipv4(&self) -> bool {
        let store = self.store();
        let resting = self.resting();
        let pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.has_free(|ip| resting.taken(&store, ip))
    }

    /// Free addresses in the pool now (neither held nor cooling).
    pub fn free_addresses(&self) -> u64 {
        let (v4, v6) = self.free_by_family();
        v4.saturating_add(v6)
    }

    /// Free IPv4 and free IPv6 addresses in the pool now.
    pub(crate) fn free_by_family(&self) -> (u64, u64) {
        let store = self.store();
        let resting = self.resting();
        let pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        free_by_family(&pool, &store, &resting)
    }

    /// The addresses that are not free although no attachment holds them: cooling, held by
    /// another CNI's pods, being assigned for a request, draining. Read after taking the store lock
    /// (see [`Handler::release`]).
    pub(super) fn resting(&self) -> Resting {
        Resting {
            cooling: self.cooling_now(),
            foreign: self.foreign_now(),
            assigning: self.assigning_now(),
            draining: self.draining_now(),
        }
    }

    pub(super) fn provider_grow_error(&self) -> Option<String> {
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
    pub(super) fn recent_request_failures(&self) -> Vec<RequestFailure> {
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
}

/// Addresses that are not free although no attachment holds them.
pub(super) struct Resting {
    /// Cooling after a release.
    pub(super) cooling: Vec<IpAddr>,
    /// Held by another CNI's pods.
    pub(super) foreign: Vec<IpAddr>,
    /// Being assigned by EC2 for a requested address.
    pub(super) assigning: Vec<IpAddr>,
    /// DELeted, their veth still being deleted.
    pub(super) draining: Vec<IpAddr>,
}

impl Resting {
    /// Whether `ip` is held (per `store`), cooling, another CNI's, being assigned or draining.
    pub(super) fn taken(&self, store: &Datastore, ip: impl Into<IpAddr>) -> bool {
        let ip = ip.into();
        store.holder_of(ip).is_some()
            || self.cooling.contains(&ip)
            || self.foreign.contains(&ip)
            || self.assigning.contains(&ip)
            || self.draining.contains(&ip)
    }
}

/// Free addresses of both families.
pub(super) fn free_in(pool: &Pool, store: &Datastore, resting: &Resting) -> u64 {
    let (v4, v6) = free_by_family(pool, store, resting);
    v4.saturating_add(v6)
}

/// Free IPv4 addresses (by walking the blocks) and free IPv6 addresses (by counting what is
/// taken inside the prefixes: a /80 is never walked).
fn free_by_family(pool: &Pool, store: &Datastore, resting: &Resting) -> (u64, u64) {
    let taken_v6 = store
        .allocations()
        .flat_map(Allocation::pod_addresses)
        .chain(resting.cooling.iter().copied())
        .chain(resting.foreign.iter().copied())
        .chain(resting.assigning.iter().copied())
        .chain(resting.draining.iter().copied())
        .filter_map(|ip| match ip {
            IpAddr::V6(ip) => Some(ip),
            IpAddr::V4(_) => None,
        });
    (
        pool.free_count(|ip| resting.taken(store, ip)),
        pool.free_count_v6(taken_v6),
    )
}
