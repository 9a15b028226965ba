//! Start-up reconciliation: make the datastore and the node agree before serving.
//!
//! The datastore is the truth about what the runtime was told; the node is the truth about
//! what exists. After a crash they can disagree in exactly these ways, each resolved here:
//! an ADD that never committed (roll back), a veth or rule with no committed owner (a crashed
//! ADD's leftovers: remove), a committed pod whose veth is gone (deleted while the daemon was
//! down: release), and DELs the shim recorded while the daemon was unreachable (replay).

use std::collections::BTreeSet;
use std::path::Path;

use super::handler::{reserved_host, Handler};
use crate::cni::request::Command;
use crate::datapath::{Datapath, HostSide};
use crate::datastore::{AllocationState, AttachmentKey};
use crate::proto::DaemonRequest;

/// What reconciliation did, for the start-up log and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// ADDs that had reserved an address but never committed, rolled back.
    pub rolled_back: usize,
    /// Committed pods whose host veth had disappeared, released.
    pub released_gone: usize,
    /// Veths with the wasmcni prefix and no owner, removed.
    pub orphan_veths: usize,
    /// Rules for addresses with no owner, removed.
    pub orphan_rules: usize,
    /// DELs recorded by the shim while the daemon was down, replayed.
    pub replayed_dels: usize,
    /// Committed pods kept.
    pub kept: usize,
}

/// Reconciles `handler`'s datastore with the node and replays pending DELs from `pending_dir`.
pub async fn reconcile<D: Datapath>(
    handler: &Handler<D>,
    pending_dir: &Path,
) -> Result<ReconcileReport, String> {
    let mut report = ReconcileReport::default();

    let incomplete: Vec<_> = handler
        .store()
        .allocations()
        .filter(|a| a.state == AllocationState::Reserved)
        .cloned()
        .collect();
    for allocation in incomplete {
        handler
            .datapath
            .teardown_pod(&reserved_host(&allocation))
            .await
            .map_err(|e| format!("rolling back the unfinished ADD of {}: {e}", allocation.ip))?;
        handler.release(&allocation.key).await.map_err(|e| e.msg)?;
        tracing::warn!(container_id = %allocation.key.container_id, ip = %allocation.ip, "rolled back an ADD that never completed");
        report.rolled_back += 1;
    }

    replay_pending_dels(handler, pending_dir, &mut report).await?;
    let swept = sweep(handler, Orphans::Remove).await?;
    report.released_gone = swept.released_gone;
    report.orphan_veths = swept.orphan_veths;
    report.orphan_rules = swept.orphan_rules;
    report.kept = handler.store().len();
    Ok(report)
}

/// What one [`sweep`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Committed pods whose host veth had disappeared, released.
    pub released_gone: usize,
    /// Veths with the wasmcni prefix and no owner, removed.
    pub orphan_veths: usize,
    /// Rules for addresses with no owner, removed.
    pub orphan_rules: usize,
}

/// Whether a [`sweep`] also removes veths and rules that no allocation owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orphans {
    /// Remove them: only before serving, when no request can be creating them.
    Remove,
    /// Leave them: while serving, a concurrent ADD's parts can look unowned for a moment.
    Keep,
}

/// Compares the datastore with the node: releases committed pods whose veth vanished (their
/// namespace was deleted without a DEL) and, with [`Orphans::Remove`], removes veths and rules
/// no allocation owns. A vanished pod is re-checked under its attachment lock and its rules are
/// removed while it still owns its address, so a concurrent ADD can never lose a rule to it.
pub async fn sweep<D: Datapath>(
    handler: &Handler<D>,
    orphans: Orphans,
) -> Result<SweepReport, String> {
    let mut report = SweepReport::default();
    let mut released = BTreeSet::new();
    let node = handler
        .datapath
        .node_state(&handler.config.datapath.veth_prefix)
        .await
        .map_err(|e| format!("reading the node's veths and rules: {e}"))?;
    let present: BTreeSet<&str> = node.veths.iter().map(String::as_str).collect();
    let vanished: Vec<_> = handler
        .store()
        .allocations()
        .filter(|a| {
            a.state == AllocationState::Committed && !present.contains(a.host_veth.as_str())
        })
        .cloned()
        .collect();
    for allocation in vanished {
        let _guard = handler.locks.lock(allocation.key.clone()).await;
        let unchanged = handler.store().get(&allocation.key) == Some(&allocation);
        if unchanged
            && !handler
                .datapath
                .veth_exists(&allocation.host_veth)
                .await
                .map_err(|e| e.to_string())?
        {
            handler
                .datapath
                .remove_rules(&reserved_host(&allocation))
                .await
                .map_err(|e| format!("removing rules of vanished pod {}: {e}", allocation.ip))?;
            handler.release(&allocation.key).await.map_err(|e| e.msg)?;
            released.insert(allocation.ip);
            tracing::info!(container_id = %allocation.key.container_id, ip = %allocation.ip, veth = %allocation.host_veth, "released a pod whose namespace was deleted without a DEL");
            report.released_gone += 1;
        }
    }
    if orphans == Orphans::Keep {
        return Ok(report);
    }
    let owners: Vec<_> = handler.store().allocations().cloned().collect();
    let owned_veths: BTreeSet<&str> = owners.iter().map(|a| a.host_veth.as_str()).collect();
    for veth in node
        .veths
        .iter()
        .filter(|v| !owned_veths.contains(v.as_str()))
    {
        handler
            .datapath
            .remove_veth(veth)
            .await
            .map_err(|e| format!("removing orphan veth {veth}: {e}"))?;
        tracing::warn!(veth = %veth, "removed a veth no attachment owns (left by a crashed ADD)");
        report.orphan_veths += 1;
    }
    // Addresses released above had their rules removed already.
    let owned_ips: BTreeSet<_> = owners.iter().map(|a| a.ip).chain(released).collect();
    let stale_to = node
        .to_pod_rules
        .iter()
        .filter(|ip| !owned_ips.contains(ip))
        .map(|ip| HostSide {
            host_veth: String::new(),
            ip: *ip,
            route_table: None,
        });
    let stale_from = node
        .from_pod_rules
        .iter()
        .filter(|(ip, _)| !owned_ips.contains(ip))
        .map(|(ip, table)| HostSide {
            host_veth: String::new(),
            ip: *ip,
            route_table: Some(*table),
        });
    for stale in stale_to.chain(stale_from) {
        handler
            .datapath
            .remove_rules(&stale)
            .await
            .map_err(|e| format!("removing orphan rules of {}: {e}", stale.ip))?;
        report.orphan_rules += 1;
    }
    Ok(report)
}

/// Replays the DELs the shim spooled while the daemon was unreachable, oldest first.
async fn replay_pending_dels<D: Datapath>(
    handler: &Handler<D>,
    pending_dir: &Path,
    report: &mut ReconcileReport,
) -> Result<(), String> {
    let entries = match std::fs::read_dir(pending_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("reading {}: {e}", pending_dir.display())),
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for path in files {
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                serde_json::from_slice::<DaemonRequest>(&bytes).map_err(|e| e.to_string())
            });
        match parsed {
            Ok(pending) if pending.request.command == Command::Del => {
                let key = AttachmentKey {
                    container_id: pending.request.container_id.clone(),
                    ifname: pending.request.ifname.clone(),
                };
                handler
                    .del_locked(&key)
                    .await
                    .map_err(|e| format!("replaying pending DEL {}: {}", path.display(), e.msg))?;
                report.replayed_dels += 1;
            }
            Ok(_) => {
                tracing::warn!(file = %path.display(), "ignoring a pending request that is not a DEL")
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable pending DEL")
            }
        }
        std::fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
    }
    Ok(())
}
