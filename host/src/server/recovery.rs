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
    /// Rules for addresses with no owner (including those of pods released above), removed.
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
    let prefix = handler.config.datapath.veth_prefix.clone();

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

    let node = handler
        .datapath
        .node_state(&prefix)
        .await
        .map_err(|e| format!("reading the node's veths and rules: {e}"))?;
    let present: BTreeSet<&str> = node.veths.iter().map(String::as_str).collect();
    let committed: Vec<_> = handler.store().allocations().cloned().collect();
    for allocation in &committed {
        if !present.contains(allocation.host_veth.as_str()) {
            // Its rules are now unowned and go with the orphan rules below.
            handler.release(&allocation.key).await.map_err(|e| e.msg)?;
            tracing::info!(container_id = %allocation.key.container_id, ip = %allocation.ip, veth = %allocation.host_veth, "released a pod deleted while the daemon was down");
            report.released_gone += 1;
        }
    }
    let owners: Vec<_> = handler.store().allocations().cloned().collect();
    report.kept = owners.len();
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
    let owned_ips: BTreeSet<_> = owners.iter().map(|a| a.ip).collect();
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
