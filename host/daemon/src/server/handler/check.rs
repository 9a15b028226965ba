//! CHECK: the attachment the runtime asks about is the one the datastore records, and its data
//! path is in place.

use super::*;

impl<D: Datapath> Handler<D> {
    pub(super) async fn check(
        &self,
        request: &CniRequest,
        netconf: &NetConf,
    ) -> Result<(), CniError> {
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
            for ours in allocation.pod_addresses().map(IpNet::from) {
                if !previous.ips.iter().any(|ip| ip.address == ours) {
                    return Err(CniError::new(
                        codes::CHECK_FAILED,
                        format!("prevResult does not list {ours}, an address wasmcni assigned"),
                    ));
                }
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
                addresses: allocation.pod_addresses().map(IpNet::from).collect(),
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
        let mut attachment = attachment_of(&allocation, &request.ifname, self.pod_mtu);
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
                    allocation
                        .pod_addresses()
                        .map(|ip| ip.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    missing.join("; ")
                ),
            ),
            other => datapath_error(other, "CHECK"),
        })
    }
}
