//! DEL: cut the attachment off routing from the datastore's record, release the address
//! durably and answer; the kernel's deletion of the veth finishes afterwards, the address
//! draining until it has ([`super::draining`]), then resting for the cooldown.

use super::*;

impl<D: Datapath> Handler<D> {
    /// DEL: the policy hooks are told (they cannot stop it), then the cleanup runs whatever
    /// they said; a hook's objection is reported afterwards only if its `del` fails closed.
    pub(super) async fn del(
        &self,
        request: &CniRequest,
        netconf: &NetConf,
    ) -> Result<(), CniError> {
        let key = key_of(request);
        let _guard = self.locks.lock(key.clone()).await;
        let plugins = self.plugins();
        let mut objection = None;
        let phase = enter_phase("policy");
        if !plugins.policies.is_empty() {
            let held: Option<Vec<IpNet>> = self
                .store()
                .get(&key)
                .map(|a| a.pod_addresses().map(IpNet::from).collect());
            if let Some(addresses) = held {
                let attachment = Attachment {
                    verb: Verb::Del,
                    pod: pod_info(request, netconf),
                    addresses,
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
    pub(super) async fn del_by_key(&self, request: &CniRequest) -> Result<(), CniError> {
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
        let host = reserved_host(&allocation);
        let busy = self.reaper.busy();
        let index = self
            .datapath
            .detach_pod(&host)
            .await
            .map_err(|e| datapath_error(e, "DEL"))?;
        drop(busy);
        metrics.phase("DEL", "datapath", phase.elapsed());
        if let Some(index) = index {
            // Before the record goes, so the address is never free while its veth exists.
            self.start_drain(host.addresses().collect(), &host.host_veth, index);
        }
        let phase = enter_phase("datastore");
        self.release(key).await?;
        metrics.phase("DEL", "datastore", phase.elapsed());
        tracing::info!(container_id = %key.container_id, ifname = %key.ifname, ip = %allocation.ip, ipv6 = ?allocation.ipv6, "DEL done");
        Ok(())
    }

    /// Removes `key` from the datastore and makes that durable; the address then cools down
    /// and the reconciler is told the pool has a free address more.
    pub(crate) async fn release(&self, key: &AttachmentKey) -> Result<(), CniError> {
        // Cooling before the record goes, so whoever finds the address not held finds it
        // cooling (readers take the store lock first, then look at the cooling set).
        let ips: Vec<IpAddr> = self
            .store()
            .get(key)
            .map(|a| a.pod_addresses().collect())
            .unwrap_or_default();
        if !ips.is_empty() && self.cooldown > Duration::ZERO {
            let generation = {
                let mut cooling = self.cooling.lock().unwrap_or_else(|p| p.into_inner());
                let cooldown = self.cooldown;
                cooling.retain(|_, at| at.elapsed() < cooldown);
                let now = Instant::now();
                cooling.extend(ips.iter().map(|ip| (*ip, now)));
                self.cooling_generation.fetch_add(1, Ordering::SeqCst) + 1
            };
            // Written outside the cooling lock (ADDs read it under the store lock), one writer
            // at a time, always the newest set: it holds every release before it, so the DELs
            // of a burst queued here find theirs written by the one ahead and write nothing.
            let mut written = self
                .cooling_written
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if generation > *written {
                let (snapshot, newest) = {
                    let cooling = self.cooling.lock().unwrap_or_else(|p| p.into_inner());
                    (
                        cooling.clone(),
                        self.cooling_generation.load(Ordering::SeqCst),
                    )
                };
                match crate::server::cooling::save(&self.config.daemon.state_dir, &snapshot) {
                    Ok(()) => *written = newest,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot keep the cooling addresses on disk; after a restart they could be reused before their cooldown ends")
                    }
                }
            }
        }
        let (_, lsn) = self.store().release(key).map_err(store_error)?;
        if self.dynamic {
            self.wake_warm_pool.notify_one();
        }
        self.make_durable(lsn).await
    }
}
