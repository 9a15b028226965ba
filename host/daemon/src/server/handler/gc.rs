//! GC: release every attachment the runtime no longer lists as valid.

use super::*;

impl<D: Datapath> Handler<D> {
    pub(super) async fn gc(&self, netconf: &NetConf) -> Result<(), CniError> {
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
}
