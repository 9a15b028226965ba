//! Addresses whose DEL has answered while the kernel is still deleting their pod's veth.
//!
//! A veth deletion waits in the kernel for an RCU grace period (~20 ms, most of what a DEL
//! used to cost). DEL therefore answers once the attachment is cut off routing (veth down, so
//! its routes and neighbour entries are gone; rules removed) and its release is durable, and
//! hands the deletion to a task of its own. Until that task has seen the veth gone, the
//! address is *draining*: taken for every chooser, counted as in use in the plugins' pool view,
//! never given back to EC2 nor its ENI deleted, and an ADD that asks for it (or finds nothing
//! else free) waits for the drain. A crash in between leaves a down veth no record owns, which
//! start-up recovery removes before anything is served.

use super::*;

/// How long an ADD waits for draining addresses when it needs one of them (the address it
/// asked for, or the last ones of a full pool). A deletion normally takes tens of ms.
pub(super) const DRAIN_WAIT: Duration = Duration::from_secs(5);
/// Retry bounds of a deletion the kernel refused.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// One draining address: its veth, by name for messages and by index for the deletion.
#[derive(Debug, Clone)]
pub(crate) struct Drain {
    pub(crate) veth: String,
    index: u32,
    since: Instant,
    /// Deletions the kernel refused so far.
    failures: u32,
}

/// Refused deletions after which each further one is logged as an error: an address stuck
/// out of use needs an operator.
const FAILURES_BEFORE_ERROR: u32 = 5;

impl<D: Datapath> Handler<D> {
    /// Marks the pod's addresses `ips` (one, or a dual-stack pod's two) draining and starts
    /// deleting their veth (interface `index`). Called before the attachment's record is
    /// released, so whoever finds an address not held finds it draining (readers take the
    /// store lock first, then look at the marks).
    pub(super) fn start_drain(&self, ips: Vec<IpAddr>, veth: &str, index: u32) {
        let Some(&ip) = ips.first() else { return };
        {
            let mut draining = self.draining.lock().unwrap_or_else(|p| p.into_inner());
            // A DEL retried while its first attempt's deletion runs: one task is enough.
            if draining.get(&ip).is_some_and(|d| d.index == index) {
                return;
            }
            for ip in &ips {
                draining.insert(
                    *ip,
                    Drain {
                        veth: veth.to_owned(),
                        index,
                        since: Instant::now(),
                        failures: 0,
                    },
                );
            }
        }
        let me = self.me.clone();
        tokio::spawn(async move {
            let mut retry = RETRY_FIRST;
            loop {
                // A daemon shutting down leaves the veth to start-up recovery.
                let Some(handler) = me.upgrade() else { return };
                let Some(drain) = handler.drain_of(ip) else {
                    return;
                };
                match handler.datapath.remove_link(drain.index, &drain.veth).await {
                    Ok(()) => {
                        handler.end_drain(&ips);
                        return;
                    }
                    Err(e) => {
                        let failures = handler.count_drain_failure(&ips);
                        if failures >= FAILURES_BEFORE_ERROR {
                            tracing::error!(
                                %ip, veth = %drain.veth, error = %e, failures, retry_ms = retry.as_millis() as u64,
                                "the kernel keeps refusing to delete a DELeted pod's veth; its address stays out of use until it is gone (`inspect pool` lists it under draining)"
                            );
                        } else {
                            tracing::warn!(
                                %ip, veth = %drain.veth, error = %e, retry_ms = retry.as_millis() as u64,
                                "deleting a DELeted pod's veth failed; its address stays out of use until it is gone"
                            );
                        }
                    }
                }
                drop(handler);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        });
    }

    /// Counts a refused deletion of the veth of `ips`; how many so far.
    fn count_drain_failure(&self, ips: &[IpAddr]) -> u32 {
        let mut draining = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        ips.iter()
            .filter_map(|ip| {
                draining.get_mut(ip).map(|d| {
                    d.failures += 1;
                    d.failures
                })
            })
            .max()
            .unwrap_or(0)
    }

    /// The draining addresses with their veth, how long they have drained and how many
    /// deletions the kernel refused, for `inspect pool`.
    pub(crate) fn draining_detail(&self) -> Vec<serde_json::Value> {
        let draining = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        let mut detail: Vec<(IpAddr, serde_json::Value)> = draining
            .iter()
            .map(|(ip, d)| {
                let value = serde_json::json!({
                    "ip": ip,
                    "veth": d.veth,
                    "ms": d.since.elapsed().as_millis() as u64,
                    "refused": d.failures,
                });
                (*ip, value)
            })
            .collect();
        detail.sort_by_key(|(ip, _)| *ip);
        detail.into_iter().map(|(_, v)| v).collect()
    }

    fn drain_of(&self, ip: IpAddr) -> Option<Drain> {
        self.draining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ip)
            .cloned()
    }

    /// The veth is gone: its addresses are the pool's again.
    fn end_drain(&self, ips: &[IpAddr]) {
        let removed: Vec<Drain> = {
            let mut draining = self.draining.lock().unwrap_or_else(|p| p.into_inner());
            // Every one of them (a dual-stack pod's two).
            ips.iter().filter_map(|ip| draining.remove(ip)).collect()
        };
        if let (Some(drain), Some(ip)) = (removed.first(), ips.first()) {
            wasmcni_telemetry::metrics::Metrics::global().phase(
                "DEL",
                "veth_removal",
                drain.since.elapsed(),
            );
            tracing::debug!(%ip, veth = %drain.veth, ms = drain.since.elapsed().as_millis() as u64, "veth deleted; address free");
        }
        // ADDs waiting for an address, and the reconciler, see it free.
        self.pool_changed.send_modify(|n| *n += 1);
        if self.dynamic {
            self.wake_warm_pool.notify_one();
        }
    }

    /// Whether `ip`'s last pod's veth is still being deleted.
    pub(crate) fn is_draining(&self, ip: IpAddr) -> bool {
        self.draining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&ip)
    }

    /// Whether `veth` is being deleted by a drain (not an orphan: its deletion is under way).
    pub(crate) fn is_draining_veth(&self, veth: &str) -> bool {
        self.draining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|d| d.veth == veth)
    }

    /// The draining addresses now.
    pub(crate) fn draining_now(&self) -> Vec<IpAddr> {
        self.draining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Waits until `ip` (or, with `None`, every address) has drained, at most `limit`;
    /// whether it has.
    pub async fn drained(&self, ip: Option<IpAddr>, limit: Duration) -> bool {
        let mut changed = self.pool_changed.subscribe();
        let done = |h: &Self| match ip {
            Some(ip) => !h.is_draining(ip),
            None => h
                .draining
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty(),
        };
        tokio::time::timeout(limit, async {
            loop {
                changed.borrow_and_update();
                if done(self) {
                    return;
                }
                if changed.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
            && done(self)
    }
}
