//! Start-up reconciliation and the periodic sweep: make the datastore and the node agree.
//!
//! The datastore is the truth about what the runtime was told; the node is the truth about
//! what exists. After a crash they can disagree in exactly these ways, each resolved here:
//! an ADD that never committed (roll back; or, an earlier daemon's whose data path is complete
//! and so may have been answered, commit), a veth or rule with no owner (a crashed ADD's
//! leftovers: remove), a committed pod whose veth is gone (its namespace was deleted without a
//! DEL: release), and DELs the shim recorded while the daemon was unreachable (replay).
//!
//! When the datastore lost records to damage (`RecoveryReport::lost`), a record can be missing
//! or stale for a pod that is alive. Then the kernel decides: a wasmcni veth that routes an
//! address is a pod, whatever the store says. Start-up neither removes such a veth nor rolls
//! back an unfinished ADD whose veth routes its address; the address is held (never handed
//! out, never given back to EC2) for as long as a veth routes it, which ends when the runtime
//! deletes the pod's namespace.
//!
//! Every item is handled on its own: one that fails is logged, counted and retried by the next
//! sweep, and never stops the daemon from serving the rest of the node.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::handler::{reserved_host, Handler};
use wasmcni_cni::proto::{check_private, PendingDel};
use wasmcni_cni::request::Command;
use wasmcni_datapath::Datapath;
use wasmcni_datastore::{Allocation, AllocationState, AttachmentKey};

/// What a reconciliation or sweep did, for the log and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// ADDs that had reserved an address but never committed, rolled back (their data path
    /// incomplete, or the reservation this daemon's own).
    pub rolled_back: usize,
    /// An earlier daemon's ADDs whose commit record a crash took, their data path complete:
    /// committed (the runtime may have been told; one that was not DELs the pod).
    pub completed: usize,
    /// Committed pods whose host veth had disappeared, released.
    pub released_gone: usize,
    /// Veths marked as wasmcni's with no owner, removed.
    pub orphan_veths: usize,
    /// Rules marked as wasmcni's for addresses with no owner, removed.
    pub orphan_rules: usize,
    /// DELs recorded by the shim while the daemon was down, replayed.
    pub replayed_dels: usize,
    /// After records were lost to damage: routed veths kept without a record (their addresses
    /// held while routed) instead of being removed or rolled back.
    pub unrecorded_pods: usize,
    /// Allocations held after the pass.
    pub kept: usize,
    /// Items that could not be handled, each naming the item and the cause; retried later.
    pub failures: Vec<String>,
}

/// Whether leftovers nobody owns are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orphans {
    /// Remove them: only before serving, when no request can be creating them.
    Remove,
    /// Leave them: while serving, a concurrent ADD's parts can look unowned for a moment.
    Keep,
}

/// Reconciles the datastore with the node and replays pending DELs from `pending_dir`.
/// [`Orphans::Remove`] is for start-up (before serving); the periodic sweep uses
/// [`Orphans::Keep`]. Every step runs under the attachment's lock and re-checks the record, so
/// the sweep is safe beside requests being served.
pub async fn reconcile_node<D: Datapath>(
    handler: &Handler<D>,
    pending_dir: &Path,
    orphans: Orphans,
) -> ReconcileReport {
    let mut report = ReconcileReport::default();
    roll_back_unfinished(handler, orphans, &mut report).await;
    replay_pending_dels(handler, pending_dir, &mut report).await;
    release_vanished_and_orphans(handler, orphans, &mut report).await;
    // What the node holds outside the store, as this pass left it.
    handler.refresh_node_held().await;
    report.kept = handler.store().len();
    report
}

/// Reserved allocations with no ADD in flight (the lock is free and the record unchanged)
/// are leftovers of a crash or of a rollback that failed: undo and release them. An earlier
/// daemon's whose data path is complete may have been answered (an ADD answers once its
/// reservation is durable, before its commit record is): those are committed instead.
async fn roll_back_unfinished<D: Datapath>(
    handler: &Handler<D>,
    orphans: Orphans,
    report: &mut ReconcileReport,
) {
    let reserved: Vec<Allocation> = handler
        .store()
        .allocations()
        .filter(|a| a.state == AllocationState::Reserved)
        .cloned()
        .collect();
    // After a loss, at start-up, an ADD that looks unfinished may have answered (its commit
    // lost): the pods whose veth routes their address stay. While serving, an unfinished ADD
    // is one whose undo failed, and is rolled back as usual.
    let after_loss = orphans == Orphans::Remove && handler.records_lost.load(Ordering::Relaxed);
    let routed: BTreeSet<(IpAddr, String)> = match after_loss {
        true if !reserved.is_empty() => match handler
            .datapath
            .node_state(&handler.config.datapath.veth_prefix)
            .await
        {
            Ok(node) => node.pod_routes.into_iter().collect(),
            Err(e) => {
                report.failures.push(format!(
                    "reading the node's pod routes (nothing rolled back): {e}"
                ));
                return;
            }
        },
        _ => BTreeSet::new(),
    };
    for allocation in reserved {
        let _guard = handler.locks.lock(allocation.key.clone()).await;
        if handler.store().get(&allocation.key) != Some(&allocation) {
            continue; // the ADD finished (or was undone) meanwhile
        }
        if allocation
            .pod_addresses()
            .any(|ip| routed.contains(&(ip, allocation.host_veth.clone())))
        {
            // The record goes; the route keeps the address held (refreshed before serving).
            match handler.release(&allocation.key).await {
                // Counted with the routed veths kept below, which it now is one of.
                Ok(()) => {
                    tracing::warn!(container_id = %allocation.key.container_id, ip = %allocation.ip, veth = %allocation.host_veth, "kept the pod of an ADD whose outcome was lost to damage; its address is held while its veth routes it")
                }
                Err(e) => report.failures.push(format!(
                    "releasing the unconfirmed record of {} ({}): {}",
                    allocation.key, allocation.ip, e.msg
                )),
            }
            continue;
        }
        if handler.inherited_reservations.contains(&allocation) {
            match handler.complete_routes(&allocation).await {
                Ok(Some(routes)) => {
                    match handler.commit_complete(&allocation, &routes).await {
                        Ok(()) => {
                            tracing::warn!(container_id = %allocation.key.container_id, ip = %allocation.ip, veth = %allocation.host_veth, "committed an ADD whose commit record a crash took: its data path is complete, so the runtime may have been told (if not, it DELs the pod)");
                            report.completed += 1;
                        }
                        Err(e) => report.failures.push(format!(
                            "committing the complete ADD of {} ({}): {}",
                            allocation.key, allocation.ip, e.msg
                        )),
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    // Left reserved, for the next sweep to decide.
                    report.failures.push(format!(
                        "checking the unfinished ADD of {} ({}): {}",
                        allocation.key, allocation.ip, e.msg
                    ));
                    continue;
                }
            }
        }
        let undone = match handler
            .datapath
            .teardown_pod(&reserved_host(&allocation))
            .await
        {
            Ok(()) => handler.release(&allocation.key).await.map_err(|e| e.msg),
            Err(e) => Err(e.to_string()),
        };
        match undone {
            Ok(()) => {
                tracing::warn!(container_id = %allocation.key.container_id, ip = %allocation.ip, "rolled back an ADD that never completed");
                report.rolled_back += 1;
            }
            Err(e) => report.failures.push(format!(
                "rolling back the unfinished ADD of {} ({}): {e}",
                allocation.key, allocation.ip
            )),
        }
    }
}

/// Replays the DELs the shim recorded while the daemon was unreachable, oldest first. A record
/// older than the attachment it names is stale (the container id was reused) and skipped.
async fn replay_pending_dels<D: Datapath>(
    handler: &Handler<D>,
    pending_dir: &Path,
    report: &mut ReconcileReport,
) {
    let entries = match std::fs::read_dir(pending_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            report
                .failures
                .push(format!("reading {}: {e}", pending_dir.display()));
            return;
        }
    };
    if let Err(e) = check_private(pending_dir, true) {
        report
            .failures
            .push(format!("pending DELs not replayed: {e}"));
        return;
    }
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for path in files {
        let parsed = check_private(&path, false)
            .map_err(|e| e.to_string())
            .and_then(|()| std::fs::read(&path).map_err(|e| e.to_string()))
            .and_then(|bytes| {
                serde_json::from_slice::<PendingDel>(&bytes).map_err(|e| e.to_string())
            })
            .and_then(|pending| match pending.request.request.validate() {
                Ok(()) if pending.request.request.command == Command::Del => Ok(pending),
                Ok(()) => Err("not a DEL".to_owned()),
                Err(e) => Err(e.msg),
            });
        let pending = match parsed {
            Ok(pending) => pending,
            Err(e) => {
                // Set aside, not deleted: an operator may want to see what was there.
                let rejected = path.with_extension("rejected");
                let _ = std::fs::rename(&path, &rejected);
                report.failures.push(format!(
                    "pending DEL {} rejected ({e}); moved to {}",
                    path.display(),
                    rejected.display()
                ));
                continue;
            }
        };
        let key = AttachmentKey {
            container_id: pending.request.request.container_id.clone(),
            ifname: pending.request.request.ifname.clone(),
        };
        let _guard = handler.locks.lock(key.clone()).await;
        let newer = handler
            .store()
            .get(&key)
            .is_some_and(|a| a.created_unix_ms > pending.recorded_unix_ms);
        let outcome = if newer {
            tracing::info!(file = %path.display(), "a pending DEL is older than the attachment it names; skipped");
            Ok(())
        } else {
            handler.del_locked(&key).await.map_err(|e| e.msg)
        };
        match outcome.and_then(|()| std::fs::remove_file(&path).map_err(|e| e.to_string())) {
            Ok(()) => report.replayed_dels += usize::from(!newer),
            Err(e) => report.failures.push(format!(
                "replaying pending DEL {}: {e}; retried at the next sweep",
                path.display()
            )),
        }
    }
}

/// Removes the node's rules of each of an allocation's addresses.
async fn remove_rules_of<D: Datapath>(
    handler: &Handler<D>,
    allocation: &Allocation,
) -> Result<(), wasmcni_datapath::DatapathError> {
    let host = reserved_host(allocation);
    for ip in host.addresses() {
        handler.datapath.remove_rules(ip, host.table_of(ip)).await?;
    }
    Ok(())
}

/// Releases committed pods whose veth vanished and, with [`Orphans::Remove`], removes marked
/// veths and rules that no allocation owns.
async fn release_vanished_and_orphans<D: Datapath>(
    handler: &Handler<D>,
    orphans: Orphans,
    report: &mut ReconcileReport,
) {
    let node = match handler
        .datapath
        .node_state(&handler.config.datapath.veth_prefix)
        .await
    {
        Ok(node) => node,
        Err(e) => {
            report
                .failures
                .push(format!("reading the node's veths and rules: {e}"));
            return;
        }
    };
    let present: BTreeSet<&str> = node.veths.iter().map(String::as_str).collect();
    let vanished: Vec<Allocation> = handler
        .store()
        .allocations()
        .filter(|a| {
            a.state == AllocationState::Committed && !present.contains(a.host_veth.as_str())
        })
        .cloned()
        .collect();
    let mut released: BTreeSet<IpAddr> = BTreeSet::new();
    for allocation in vanished {
        let _guard = handler.locks.lock(allocation.key.clone()).await;
        if handler.store().get(&allocation.key) != Some(&allocation) {
            continue;
        }
        // The node snapshot may predate a veth created since: ask again under the lock.
        // After a loss, a stale record's address may be a live unrecorded pod's: its rules
        // are that pod's.
        let routed_elsewhere = node.pod_routes.iter().any(|(ip, veth)| {
            allocation.pod_addresses().any(|a| a == *ip) && *veth != allocation.host_veth
        });
        let outcome = match handler.datapath.veth_exists(&allocation.host_veth).await {
            Ok(true) => continue,
            Ok(false) if routed_elsewhere => {
                handler.release(&allocation.key).await.map_err(|e| e.msg)
            }
            Ok(false) => match remove_rules_of(handler, &allocation).await {
                // The rules go while the address is still held, so no new ADD can lose its own.
                Ok(()) => handler.release(&allocation.key).await.map_err(|e| e.msg),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(container_id = %allocation.key.container_id, ip = %allocation.ip, veth = %allocation.host_veth, "released a pod whose namespace was deleted without a DEL");
                released.extend(allocation.pod_addresses());
                report.released_gone += 1;
            }
            Err(e) => report.failures.push(format!(
                "releasing vanished pod {} ({}): {e}",
                allocation.key, allocation.ip
            )),
        }
    }
    let owners: Vec<Allocation> = handler.store().allocations().cloned().collect();
    let owned_veths: BTreeSet<&str> = owners.iter().map(|a| a.host_veth.as_str()).collect();
    let routed: BTreeSet<&str> = node.pod_routes.iter().map(|(_, v)| v.as_str()).collect();
    let records_lost = handler.records_lost.load(Ordering::Relaxed);
    // The addresses of the routed veths kept: their rules are the live pods' too.
    let mut kept_ips: BTreeSet<IpAddr> = BTreeSet::new();
    for veth in node
        .veths
        .iter()
        .filter(|v| !owned_veths.contains(v.as_str()) && !handler.is_draining_veth(v))
    {
        // A routed veth may be a live pod: while serving, a concurrent ADD's (its record is
        // then there by the time we look again) or one whose record damage lost; at start-up
        // after a loss, the latter. Its address is held while it routes it.
        let is_routed = routed.contains(veth.as_str());
        if is_routed && (orphans == Orphans::Keep || records_lost) {
            kept_ips.extend(
                node.pod_routes
                    .iter()
                    .filter(|(_, v)| v == veth)
                    .map(|(ip, _)| *ip),
            );
            if orphans == Orphans::Remove {
                tracing::warn!(veth = %veth, "kept a routed wasmcni veth no record owns (records were lost to damage); its address is held until the veth goes");
                report.unrecorded_pods += 1;
            }
            continue;
        }
        // An unrouted one is down: a DEL's veth whose deletion a crash cut short (or, at
        // start-up, a crashed ADD's leftovers). Under the veth's lock, which an ADD holds from
        // before it records until it answers, and only if still nobody's.
        let _veth_guard = handler.veth_locks.lock(veth.clone()).await;
        if handler.store().find_by_veth(veth).is_some() || handler.is_draining_veth(veth) {
            continue;
        }
        match handler.datapath.remove_veth(veth).await {
            Ok(()) => {
                tracing::warn!(veth = %veth, "removed a wasmcni veth no attachment owns (left by a crashed ADD, or by a DEL whose veth deletion a crash cut short)");
                report.orphan_veths += 1;
            }
            Err(e) => report
                .failures
                .push(format!("removing orphan veth {veth}: {e}")),
        }
    }
    if orphans == Orphans::Keep {
        return;
    }
    // Addresses released above had their rules removed already.
    let owned_ips: BTreeSet<IpAddr> = owners
        .iter()
        .flat_map(Allocation::pod_addresses)
        .chain(released)
        .chain(kept_ips)
        .collect();
    let stale_to = node
        .to_pod_rules
        .iter()
        .filter(|ip| !owned_ips.contains(ip))
        .map(|ip| (*ip, None));
    let stale_from = node
        .from_pod_rules
        .iter()
        .filter(|(ip, _)| !owned_ips.contains(&IpAddr::V4(*ip)))
        .map(|(ip, table)| (IpAddr::V4(*ip), Some(*table)));
    for (ip, table) in stale_to.chain(stale_from) {
        match handler.datapath.remove_rules(ip, table).await {
            Ok(()) => report.orphan_rules += 1,
            Err(e) => report
                .failures
                .push(format!("removing orphan rules of {ip}: {e}")),
        }
    }
}
