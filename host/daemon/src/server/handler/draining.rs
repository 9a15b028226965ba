//! Addresses whose DEL has answered while the kernel is still deleting their pod's veth.
//!
//! A veth deletion waits in the kernel for an RCU grace period (~20 ms, most of what a DEL
//! used to cost). DEL therefore answers once the attachment is cut off routing (veth down, so
//! its routes and neighbour entries are gone; rules removed) and its release is durable, and
//! hands the deletion to the *reaper*, one task that deletes the queued veths in batches (one
//! group deletion in the kernel) and defers while other pods' netlink work is in flight, which
//! a deletion's hold of the RTNL lock would stall. Until the reaper has seen the veth gone, the
//! address is *draining*: taken for every chooser, counted as in use in the plugins' pool view,
//! never given back to EC2 nor its ENI deleted, and an ADD that asks for it (or finds nothing
//! else free) waits for the drain. A crash in between leaves a down veth no record owns, which
//! start-up recovery removes before anything is served.

use std::sync::atomic::AtomicUsize;

use super::*;

/// How long an ADD waits for draining addresses when it needs one of them (the address it
/// asked for, or the last ones of a full pool). A deletion normally takes tens of ms.
pub(super) const DRAIN_WAIT: Duration = Duration::from_secs(5);
/// Retry bounds of a deletion the kernel refused.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long deletions wait at most for other pods' netlink work to finish. A veth deletion
/// holds the kernel's RTNL lock, which every ADD's setup and DEL's detach needs; deleting
/// while a burst of them runs stalls them all, and waiting lets one group deletion take the
/// whole burst's veths (see [`wasmcni_datapath::DETACHED_GROUP`]).
pub(super) const DEFER_MAX: Duration = Duration::from_millis(100);
/// How long no netlink work must have been in flight before deletions start: the requests of
/// a burst arrive a little apart (each is a process the runtime starts), and a deletion begun
/// in a gap would stall the ones right behind it.
const QUIET: Duration = Duration::from_millis(5);

/// One draining address: its veth, by name for messages and by index for the deletion.
#[derive(Debug, Clone)]
pub(crate) struct Drain {
    pub(crate) veth: String,
    index: u32,
    since: Instant,
    /// Deletions the kernel refused so far.
    failures: u32,
    /// After a refused deletion, when to try again.
    retry_at: Option<Instant>,
    /// A batch deleting it is under way (the reaper does not hand it out again meanwhile).
    deleting: bool,
}

/// Refused deletions after which each further one is logged as an error: an address stuck
/// out of use needs an operator.
const FAILURES_BEFORE_ERROR: u32 = 5;

/// Paces the one task that deletes draining veths (started with the first drain): woken when
/// a drain is queued and when the last request's netlink work ends; it defers deletions while
/// such work is in flight and for [`QUIET`] after, at most [`DEFER_MAX`], then deletes
/// everything due in one batch.
#[derive(Default)]
pub(crate) struct Reaper {
    wake: tokio::sync::Notify,
    /// Requests whose netlink work (an ADD's setup, a DEL's detach) is in flight.
    busy: AtomicUsize,
    /// When the last such work ended.
    idle_since: Mutex<Option<Instant>>,
    started: AtomicBool,
    /// The handler is gone: the task ends (its veths are left to start-up recovery).
    closed: AtomicBool,
}

/// The handler's hold on its [`Reaper`]: dropped with the handler, it ends the task.
#[derive(Default)]
pub(crate) struct ReaperHandle(Arc<Reaper>);

impl std::ops::Deref for ReaperHandle {
    type Target = Reaper;
    fn deref(&self) -> &Reaper {
        &self.0
    }
}

impl Drop for ReaperHandle {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A request's netlink work in flight, for as long as it lives ([`Reaper::busy`]).
pub(crate) struct Busy<'a>(&'a Reaper);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            self.0.wake.notify_one();
        }
    }
}

impl Reaper {
    /// Marks netlink work in flight until the guard drops.
    pub(crate) fn busy(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self)
    }

    /// How much longer deletions should wait for netlink work at `now`: none while nothing has
    /// been in flight for [`QUIET`].
    fn unquiet_for(&self, now: Instant) -> Option<Duration> {
        if self.busy.load(Ordering::SeqCst) > 0 {
            return Some(QUIET);
        }
        let idle_since = *self.idle_since.lock().unwrap_or_else(|p| p.into_inner());
        idle_since
            .map(|at| QUIET.saturating_sub(now.saturating_duration_since(at)))
            .filter(|left| !left.is_zero())
    }

    /// Ends the task.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// What the reaper does next.
enum Next {
    /// Delete these veths (index, name, addresses) now.
    Delete(Vec<(u32, String, Vec<IpAddr>)>),
    /// Wait to be woken, at most this long (`None`: until woken).
    Wait(Option<Duration>),
}

impl<D: Datapath> Handler<D> {
    /// Marks the pod's addresses `ips` (one, or a dual-stack pod's two) draining and queues the
    /// deletion of their veth (interface `index`). Called before the attachment's record is
    /// released, so whoever finds an address not held finds it draining (readers take the
    /// store lock first, then look at the marks).
    pub(super) fn start_drain(&self, ips: Vec<IpAddr>, veth: &str, index: u32) {
        let Some(&ip) = ips.first() else { return };
        {
            let mut draining = self.draining.lock().unwrap_or_else(|p| p.into_inner());
            // A DEL retried while its first attempt's deletion is queued: once is enough.
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
                        retry_at: None,
                        deleting: false,
                    },
                );
            }
        }
        if !self.reaper.started.swap(true, Ordering::SeqCst) {
            tokio::spawn(reap(self.reaper.0.clone(), self.me.clone()));
        }
        self.reaper.wake.notify_one();
    }

    /// The reaper's next step at `now`: the drains due (not waiting for a retry, not being
    /// deleted by an earlier batch), unless netlink work is in flight or just ended
    /// ([`Reaper::unquiet_for`]) and the oldest of them has waited less than [`DEFER_MAX`].
    /// The drains of a batch it returns are marked as being deleted.
    fn next_reap(&self, now: Instant) -> Next {
        let mut draining = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        let mut due: std::collections::BTreeMap<u32, (String, Vec<IpAddr>)> = Default::default();
        let mut waited = Duration::ZERO;
        let mut next_retry: Option<Instant> = None;
        for (ip, drain) in draining.iter().filter(|(_, d)| !d.deleting) {
            match drain.retry_at {
                Some(at) if at > now => {
                    next_retry = Some(next_retry.map_or(at, |n| n.min(at)));
                }
                _ => {
                    let (_, ips) = due
                        .entry(drain.index)
                        .or_insert_with(|| (drain.veth.clone(), Vec::new()));
                    ips.push(*ip);
                    let since = drain.retry_at.unwrap_or(drain.since);
                    waited = waited.max(now.saturating_duration_since(since));
                }
            }
        }
        if due.is_empty() {
            return Next::Wait(next_retry.map(|at| at - now));
        }
        if let Some(quiet_in) = self.reaper.unquiet_for(now) {
            if waited < DEFER_MAX {
                return Next::Wait(Some(quiet_in.min(DEFER_MAX - waited)));
            }
        }
        for drain in due.values().flat_map(|(_, ips)| ips) {
            if let Some(d) = draining.get_mut(drain) {
                d.deleting = true;
            }
        }
        Next::Delete(
            due.into_iter()
                .map(|(index, (veth, mut ips))| {
                    ips.sort();
                    (index, veth, ips)
                })
                .collect(),
        )
    }

    /// Deletes `batch`'s veths (a task of its own: a deletion the kernel never finishes holds
    /// up its own addresses, not the reaper); the deleted ones' addresses are free, the others
    /// retried.
    async fn reap_batch(&self, batch: Vec<(u32, String, Vec<IpAddr>)>) {
        // However this ends (a panic included), what is still draining is the reaper's again.
        let _settled = BatchSettled {
            handler: self,
            ips: batch
                .iter()
                .flat_map(|(_, _, ips)| ips.iter().copied())
                .collect(),
        };
        let links: Vec<(u32, String)> = batch
            .iter()
            .map(|(index, veth, _)| (*index, veth.clone()))
            .collect();
        let mut results = self.datapath.remove_links(&links).await.into_iter();
        for (_, veth, ips) in batch {
            let result = results.next().unwrap_or_else(|| {
                Err(wasmcni_datapath::DatapathError::Netlink {
                    operation: format!("delete host veth {veth}"),
                    cause: wasmcni_datapath::NetlinkCause::Unexpected(
                        "the data path answered fewer results than links".into(),
                    ),
                })
            });
            match result {
                Ok(()) => self.end_drain(&ips),
                Err(e) => {
                    let (failures, retry) = self.count_drain_failure(&ips);
                    let ip = ips[0];
                    if failures >= FAILURES_BEFORE_ERROR {
                        tracing::error!(
                            %ip, %veth, error = %e, failures, retry_ms = retry.as_millis() as u64,
                            "the kernel keeps refusing to delete a DELeted pod's veth; its address stays out of use until it is gone (`inspect pool` lists it under draining)"
                        );
                    } else {
                        tracing::warn!(
                            %ip, %veth, error = %e, retry_ms = retry.as_millis() as u64,
                            "deleting a DELeted pod's veth failed; its address stays out of use until it is gone"
                        );
                    }
                }
            }
        }
    }

    /// Counts a refused deletion of the veth of `ips` and schedules the next attempt: how many
    /// so far, and in how long.
    fn count_drain_failure(&self, ips: &[IpAddr]) -> (u32, Duration) {
        let mut draining = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        let failures = ips
            .iter()
            .filter_map(|ip| draining.get(ip).map(|d| d.failures + 1))
            .max()
            .unwrap_or(1);
        let retry = RETRY_FIRST
            .saturating_mul(1 << (failures - 1).min(16))
            .min(RETRY_MAX);
        let at = Instant::now() + retry;
        for ip in ips {
            if let Some(d) = draining.get_mut(ip) {
                d.failures = failures;
                d.retry_at = Some(at);
            }
        }
        (failures, retry)
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

/// Clears the "being deleted" mark of a batch's drains still there when the batch ends, and
/// wakes the reaper (a failed one has a retry to schedule).
struct BatchSettled<'a, D: Datapath> {
    handler: &'a Handler<D>,
    ips: Vec<IpAddr>,
}

impl<D: Datapath> Drop for BatchSettled<'_, D> {
    fn drop(&mut self) {
        {
            let mut draining = self
                .handler
                .draining
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for ip in &self.ips {
                if let Some(d) = draining.get_mut(ip) {
                    d.deleting = false;
                }
            }
        }
        self.handler.reaper.wake.notify_one();
    }
}

/// Lets the next drain start a new reaper when this one ends other than with its handler.
struct ReaperEnded(Arc<Reaper>);

impl Drop for ReaperEnded {
    fn drop(&mut self) {
        if !self.0.closed.load(Ordering::SeqCst) {
            tracing::error!(
                "the task deleting DELeted pods' veths ended; the next DEL starts another"
            );
        }
        self.0.started.store(false, Ordering::SeqCst);
    }
}

/// The reaper's task: hands draining veths to batch deletions as [`Reaper`] says, until the
/// handler is gone.
async fn reap<D: Datapath>(reaper: Arc<Reaper>, me: std::sync::Weak<Handler<D>>) {
    let _ended = ReaperEnded(reaper.clone());
    loop {
        if reaper.closed.load(Ordering::SeqCst) {
            return;
        }
        let Some(handler) = me.upgrade() else { return };
        match handler.next_reap(Instant::now()) {
            Next::Delete(batch) => {
                tokio::spawn(async move { handler.reap_batch(batch).await });
            }
            Next::Wait(limit) => {
                drop(handler);
                let woken = reaper.wake.notified();
                match limit {
                    Some(limit) => {
                        let _ = tokio::time::timeout(limit, woken).await;
                    }
                    None => woken.await,
                }
            }
        }
    }
}
