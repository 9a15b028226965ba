//! The host side of the WIT imports: per-call state and one `Host` impl per interface.
//!
//! Every host call is charged first ([`HostState::charge`]): it counts against the call's
//! budget of host calls and checks the call's deadline and the daemon's shutdown, trapping the
//! call when one is passed, so a guest that loops in host calls is stopped as surely as one
//! that loops in wasm. Before that, wasmtime has already capped the bytes the call copied out
//! of the guest (hostcall fuel); every argument is then size-checked before it is rendered,
//! compared or kept. Requests that could change something (`eni-ops`, `netlink`, `kv`) are
//! checked against the grant's scope, recorded for the audit log, and only queued: the caller
//! applies the queue after the call returns successfully.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

use super::bindings::allocator::wasmcni::plugin::{
    clock, config, eni_ops, kv, log, pool_view, types,
};
use super::bindings::policy::wasmcni::plugin::netlink;
use super::gate::Gate;
use super::kv::{KvStore, KvTxn};
use wasmcni_core::grants::RequestKind;
use wasmcni_core::grants::{EniChecker, EniRequest, Grants, NetlinkRequest};
use wasmcni_core::limits::{
    truncate, truncate_to, HostLimit, MAX_ENI_REQUESTS, MAX_ID_BYTES, MAX_KEY_BYTES,
    MAX_LOGS_PER_CALL, MAX_NETLINK_REQUESTS, MAX_RECORDED_CALLS, MAX_RELEASE_LIST,
    MAX_SECURITY_GROUPS,
};
use wasmcni_core::pool_view::{PoolSnapshot, ProviderKind};

/// Core instances one call may create: a Rust plugin makes 1 to 4, a component bundling
/// componentize-py's interpreter 13 (libc, libpython and their adapters), componentize-js's 3.
pub(super) const CORE_INSTANCES_PER_CALL: u32 = 16;

/// Tables one call may create (every plugin built here makes at most 2).
pub(super) const TABLES_PER_CALL: u32 = 8;

/// Linear memories one call may create (every plugin built here makes 1).
pub(super) const MEMORIES_PER_CALL: u32 = 2;

/// The call's resource limiter: the memory limit, refused with a typed [`HostLimit::Memory`]
/// trap so the caller names the limit from the error itself rather than from wasmtime's
/// message text; wasmtime's [`StoreLimits`] for the counts of instances, tables and memories.
pub(super) struct CallLimiter {
    memory_bytes: usize,
    counts: StoreLimits,
}

impl CallLimiter {
    pub(super) fn new(memory_bytes: usize) -> CallLimiter {
        CallLimiter {
            memory_bytes,
            counts: StoreLimitsBuilder::new()
                .instances(CORE_INSTANCES_PER_CALL as usize)
                .tables(TABLES_PER_CALL as usize)
                .memories(MEMORIES_PER_CALL as usize)
                .trap_on_grow_failure(true)
                .build(),
        }
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            return Err(HostLimit::Memory {
                limit: self.memory_bytes,
                desired,
            }
            .into());
        }
        self.counts.memory_growing(current, desired, maximum)
    }

    // A growth allowed above but failed in the host (an allocation failure) traps too, as
    // `trap_on_grow_failure` asks: a guest never sees -1 and carries on half-grown.
    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.counts.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.counts.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.counts.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.counts.instances()
    }

    fn tables(&self) -> usize {
        self.counts.tables()
    }

    fn memories(&self) -> usize {
        self.counts.memories()
    }
}

/// A privileged request a plugin made during a call, for the audit log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostCall {
    /// `eni-ops.create-eni`, `netlink.set-mtu`, `kv.set`, ...
    pub call: String,
    /// Its arguments, built from size-checked values only.
    pub args: serde_json::Value,
    /// `None`: accepted (queued); `Some(reason)`: refused at call time.
    pub refused: Option<String>,
}

/// When a call must end, and what ends it early.
pub(super) struct Clock {
    /// The wall-clock deadline.
    pub(super) deadline: Instant,
    /// Its length, for messages.
    pub(super) budget: Duration,
    /// The runtime's gate: stopping it ends the call.
    pub(super) gate: Arc<Gate>,
}

impl Clock {
    /// Fails once the deadline passed or the daemon is stopping.
    pub(super) fn check(&self) -> Result<(), HostLimit> {
        if self.gate.is_stopping() {
            return Err(HostLimit::ShuttingDown);
        }
        if Instant::now() >= self.deadline {
            return Err(HostLimit::Deadline(self.budget));
        }
        Ok(())
    }
}

/// Per-call host state.
pub(super) struct HostState {
    pub(super) plugin: Arc<str>,
    pub(super) grants: Arc<Grants>,
    pub(super) settings: Arc<BTreeMap<String, String>>,
    pub(super) snapshot: Arc<PoolSnapshot>,
    pub(super) limits: CallLimiter,
    pub(super) clock: Clock,
    pub(super) kv_store: Option<Arc<KvStore>>,
    pub(super) kv: Option<KvTxn>,
    pub(super) eni_requests: Vec<EniRequest>,
    pub(super) netlink_requests: Vec<NetlinkRequest>,
    pub(super) host_calls: Vec<HostCall>,
    /// Requests beyond [`MAX_RECORDED_CALLS`], counted only.
    pub(super) unrecorded_calls: u64,
    /// `pool-view.occupancy` of the snapshot, computed on the first call that asks: a plugin
    /// asking again costs the host a copy, not a sort of the snapshot's address lists.
    occupancy: Option<Vec<wasmcni_core::pool_view::BlockOccupancy>>,
    /// The call's WASI, for a plugin granted `wasi`.
    pub(super) wasi: Option<Box<super::wasi::CallWasi>>,
    /// Host calls made so far, and the budget.
    calls: u32,
    max_calls: u32,
    logs: u32,
}

type HostResult<T> = wasmtime::Result<T>;

impl HostState {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        plugin: Arc<str>,
        grants: Arc<Grants>,
        settings: Arc<BTreeMap<String, String>>,
        snapshot: Arc<PoolSnapshot>,
        limits: CallLimiter,
        clock: Clock,
        max_calls: u32,
        kv_store: Option<Arc<KvStore>>,
    ) -> HostState {
        HostState {
            plugin,
            grants,
            settings,
            snapshot,
            limits,
            clock,
            kv_store,
            kv: None,
            eni_requests: Vec::new(),
            netlink_requests: Vec::new(),
            host_calls: Vec::new(),
            unrecorded_calls: 0,
            occupancy: None,
            wasi: None,
            calls: 0,
            max_calls,
            logs: 0,
        }
    }

    /// Charges one host call: traps past the budget, the deadline or a shutdown.
    fn charge(&mut self) -> Result<(), HostLimit> {
        self.calls += 1;
        if self.calls > self.max_calls {
            return Err(HostLimit::HostCalls(self.max_calls));
        }
        self.clock.check()
    }

    /// Host calls made in the call.
    pub(super) fn calls(&self) -> u32 {
        self.calls
    }

    fn record<T>(
        &mut self,
        call: &str,
        args: impl FnOnce() -> serde_json::Value,
        outcome: Result<T, String>,
    ) -> Result<T, String> {
        let refused = outcome.as_ref().err().cloned();
        if self.host_calls.len() >= MAX_RECORDED_CALLS {
            self.unrecorded_calls += 1;
            return outcome;
        }
        let args = args();
        if let Some(reason) = &refused {
            tracing::warn!(plugin = %self.plugin, call, %args, "refused: {reason}");
        }
        self.host_calls.push(HostCall {
            call: call.to_owned(),
            args,
            refused,
        });
        outcome
    }

    /// Checks an ENI request and queues it, merged into a queued request for the same ENI
    /// where one exists (one EC2 call instead of many), within [`MAX_ENI_REQUESTS`].
    fn eni_request(
        &mut self,
        call: &str,
        args: impl FnOnce() -> serde_json::Value,
        check: impl FnOnce(&EniChecker<'_>) -> Result<EniRequest, String>,
    ) -> Result<(), String> {
        let checked = check(&EniChecker::new(
            &self.grants.eni_ops,
            &self.snapshot,
            &self.eni_requests,
        ))
        .and_then(|request| {
            if merge(&mut self.eni_requests, &request) {
                return Ok(None);
            }
            if self.eni_requests.len() >= MAX_ENI_REQUESTS {
                return Err(format!(
                    "{MAX_ENI_REQUESTS} ENI requests are already queued in this call; plan fewer changes at a time"
                ));
            }
            Ok(Some(request))
        });
        if let Some(request) = self.record(call, args, checked)? {
            self.eni_requests.push(request);
        }
        Ok(())
    }

    fn netlink_request(
        &mut self,
        call: &str,
        args: impl FnOnce() -> serde_json::Value,
        checked: Result<NetlinkRequest, String>,
    ) -> Result<(), String> {
        let checked = checked.and_then(|request| {
            if self.netlink_requests.contains(&request) {
                return Err("the same adjustment is already queued in this call".to_owned());
            }
            if self.netlink_requests.len() >= MAX_NETLINK_REQUESTS {
                return Err(format!(
                    "{MAX_NETLINK_REQUESTS} adjustments are already queued in this call"
                ));
            }
            Ok(request)
        });
        let request = self.record(call, args, checked)?;
        self.netlink_requests.push(request);
        Ok(())
    }

    fn kv(&mut self) -> Option<&mut KvTxn> {
        if self.kv.is_none() {
            self.kv = self.kv_store.as_ref().map(|store| store.begin());
        }
        self.kv.as_mut()
    }
}

/// Merges `request` into a queued one of the same kind for the same ENI; false when there is
/// none (`create-eni` and `delete-eni` never merge).
fn merge(queued: &mut [EniRequest], request: &EniRequest) -> bool {
    for existing in queued.iter_mut() {
        match (existing, request) {
            (
                EniRequest::AssignIps { eni_id, count },
                EniRequest::AssignIps {
                    eni_id: new,
                    count: more,
                },
            )
            | (
                EniRequest::AssignPrefixes { eni_id, count },
                EniRequest::AssignPrefixes {
                    eni_id: new,
                    count: more,
                },
            ) if eni_id == new => {
                // The checker already counted the queued slots: the sum fits the ENI.
                *count = count.saturating_add(*more);
                return true;
            }
            (
                EniRequest::ReleaseIps { eni_id, addresses },
                EniRequest::ReleaseIps {
                    eni_id: new,
                    addresses: more,
                },
            ) if eni_id == new => {
                addresses.extend(more);
                return true;
            }
            (
                EniRequest::ReleasePrefixes { eni_id, prefixes },
                EniRequest::ReleasePrefixes {
                    eni_id: new,
                    prefixes: more,
                },
            ) if eni_id == new => {
                prefixes.extend(more);
                return true;
            }
            _ => {}
        }
    }
    false
}

/// An id as the audit log shows it: never more than [`MAX_ID_BYTES`] of it.
fn shown(id: &str) -> String {
    truncate_to(id.to_owned(), MAX_ID_BYTES)
}

/// Refuses an id longer than any EC2 id.
fn id_ok(what: &str, id: &str) -> Result<(), String> {
    if id.len() > MAX_ID_BYTES {
        return Err(format!(
            "{what} of {} bytes is longer than any EC2 id (at most {MAX_ID_BYTES})",
            id.len()
        ));
    }
    Ok(())
}

fn key_ok(what: &'static str, key: &str) -> Result<(), HostLimit> {
    if key.len() > MAX_KEY_BYTES {
        return Err(HostLimit::Oversized {
            what,
            len: key.len(),
            max: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

fn cidr(net: &Ipv4Net) -> types::Cidr {
    types::Cidr {
        network: u32::from(net.network()),
        prefix_len: net.prefix_len(),
    }
}

fn net_of(cidr: types::Cidr) -> Result<Ipv4Net, String> {
    Ipv4Net::new(Ipv4Addr::from(cidr.network), cidr.prefix_len)
        .map_err(|_| format!("prefix length {} is over 32", cidr.prefix_len))
}

fn pairs(pairs: &[(String, String)]) -> Vec<types::Pair> {
    pairs
        .iter()
        .map(|(key, value)| types::Pair {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

fn block(block: &wasmcni_core::ipam::AddressBlock) -> types::AddressBlock {
    use wasmcni_core::ipam::BlockKind;
    types::AddressBlock {
        cidr: cidr(&block.cidr),
        kind: match block.kind {
            BlockKind::StaticRange => types::BlockKind::StaticRange,
            BlockKind::SecondaryIp => types::BlockKind::SecondaryIp,
            BlockKind::Prefix => types::BlockKind::Prefix,
        },
        eni_id: block.eni_id.clone(),
        route_table: block.route_table,
    }
}

/// EC2's error code (or one of the daemon's own) as the WIT variant: the codes a plan can act
/// on by name, any other as it was spelled.
fn failure_code(code: &str) -> pool_view::FailureCode {
    use pool_view::FailureCode as Code;
    match code {
        "InsufficientFreeAddressesInSubnet" => Code::InsufficientFreeAddressesInSubnet,
        "InsufficientCidrBlocks" => Code::InsufficientCidrBlocks,
        // EC2's, and the daemon's own when it found no free device index.
        "AttachmentLimitExceeded" | "NoFreeDevice" => Code::AttachmentLimitExceeded,
        "PrivateIpAddressLimitExceeded" => Code::PrivateIpAddressLimitExceeded,
        "RequestLimitExceeded" => Code::RequestLimitExceeded,
        "HostRefused" => Code::HostRefused,
        other => Code::Other(other.to_owned()),
    }
}

impl types::Host for HostState {}

impl config::Host for HostState {
    fn get(&mut self, key: String) -> HostResult<Option<String>> {
        self.charge()?;
        key_ok("a config key", &key)?;
        Ok(self.settings.get(&key).cloned())
    }

    fn all(&mut self) -> HostResult<Vec<types::Pair>> {
        self.charge()?;
        Ok(self
            .settings
            .iter()
            .map(|(key, value)| types::Pair {
                key: key.clone(),
                value: value.clone(),
            })
            .collect())
    }
}

impl pool_view::Host for HostState {
    fn node(&mut self) -> HostResult<pool_view::NodeInfo> {
        self.charge()?;
        let node = &self.snapshot.node;
        Ok(pool_view::NodeInfo {
            provider: match node.provider {
                ProviderKind::Static => pool_view::ProviderKind::Static,
                ProviderKind::Ec2 => pool_view::ProviderKind::Ec2,
            },
            instance_id: node.instance_id.clone(),
            instance_type: node.instance_type.clone(),
            availability_zone: node.availability_zone.clone(),
            vpc_cidrs: node.vpc_cidrs.iter().map(cidr).collect(),
            limits: pool_view::NodeLimits {
                max_enis: node.limits.max_enis,
                ipv4_per_eni: node.limits.ipv4_per_eni,
                prefix_delegation: node.limits.prefix_delegation,
                max_pods: node.limits.max_pods,
            },
        })
    }

    fn enis(&mut self) -> HostResult<Vec<pool_view::Eni>> {
        self.charge()?;
        Ok(self
            .snapshot
            .enis
            .iter()
            .map(|e| pool_view::Eni {
                id: e.id.clone(),
                device_number: e.device_number,
                primary: e.primary,
                subnet_id: e.subnet_id.clone(),
                subnet_cidr: cidr(&e.subnet_cidr),
                security_groups: e.security_groups.clone(),
                primary_ip: u32::from(e.primary_ip),
                age_ms: e.age_ms,
                tags: pairs(&e.tags),
            })
            .collect())
    }

    fn blocks(&mut self) -> HostResult<Vec<types::AddressBlock>> {
        self.charge()?;
        Ok(self.snapshot.inventory.blocks.iter().map(block).collect())
    }

    fn occupancy(&mut self) -> HostResult<Vec<pool_view::BlockOccupancy>> {
        self.charge()?;
        // Counts fit: a block is at most an IPv4 /0 less two, and u32 saturates the /0 itself.
        let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let snapshot = &self.snapshot;
        let occupancy = self.occupancy.get_or_insert_with(|| snapshot.occupancy());
        Ok(snapshot
            .inventory
            .blocks
            .iter()
            .zip(occupancy.iter())
            .map(|(b, o)| pool_view::BlockOccupancy {
                block: block(b),
                usable: count(o.usable),
                held: count(o.held),
                free: count(o.free),
                lowest_free: o.lowest_free.map(u32::from),
            })
            .collect())
    }

    fn in_use(&mut self) -> HostResult<Vec<u32>> {
        self.charge()?;
        Ok(self
            .snapshot
            .in_use
            .iter()
            .map(|ip| u32::from(*ip))
            .collect())
    }

    fn cooling(&mut self) -> HostResult<Vec<u32>> {
        self.charge()?;
        Ok(self
            .snapshot
            .cooling
            .iter()
            .map(|ip| u32::from(*ip))
            .collect())
    }

    fn excluded(&mut self) -> HostResult<Vec<u32>> {
        self.charge()?;
        Ok(self
            .snapshot
            .inventory
            .excluded
            .iter()
            .map(|ip| u32::from(*ip))
            .collect())
    }

    fn subnets(&mut self) -> HostResult<Vec<pool_view::Subnet>> {
        self.charge()?;
        Ok(self
            .snapshot
            .subnets
            .iter()
            .map(|s| pool_view::Subnet {
                id: s.id.clone(),
                cidr: cidr(&s.cidr),
                free_addresses: s.free_addresses,
                tags: pairs(&s.tags),
            })
            .collect())
    }

    fn failures(&mut self) -> HostResult<Vec<pool_view::RequestFailure>> {
        self.charge()?;
        Ok(self
            .snapshot
            .failures
            .iter()
            .map(|f| pool_view::RequestFailure {
                request: match f.request {
                    RequestKind::CreateEni => pool_view::RequestKind::CreateEni,
                    RequestKind::AssignIps => pool_view::RequestKind::AssignIps,
                    RequestKind::AssignPrefixes => pool_view::RequestKind::AssignPrefixes,
                    RequestKind::ReleaseIps => pool_view::RequestKind::ReleaseIps,
                    RequestKind::ReleasePrefixes => pool_view::RequestKind::ReleasePrefixes,
                    RequestKind::DeleteEni => pool_view::RequestKind::DeleteEni,
                },
                eni_id: f.eni_id.clone(),
                subnet_id: f.subnet_id.clone(),
                code: failure_code(&f.code),
                message: f.message.clone(),
                age_ms: f.age_ms,
            })
            .collect())
    }
}

impl eni_ops::Host for HostState {
    fn create_eni(&mut self, request: eni_ops::NewEni) -> HostResult<Result<(), String>> {
        self.charge()?;
        let groups = &request.security_groups;
        let args = || {
            serde_json::json!({
                "subnet_id": shown(&request.subnet_id),
                "security_groups": groups.iter().take(MAX_SECURITY_GROUPS).map(|g| shown(g)).collect::<Vec<_>>(),
                "security_group_count": groups.len(),
                "secondary_ips": request.secondary_ips,
                "prefixes": request.prefixes,
            })
        };
        Ok(self.eni_request("eni-ops.create-eni", args, |check| {
            id_ok("subnet id", &request.subnet_id)?;
            if groups.len() > MAX_SECURITY_GROUPS {
                return Err(format!(
                    "{} security groups; an ENI takes at most {MAX_SECURITY_GROUPS}",
                    groups.len()
                ));
            }
            for group in groups {
                id_ok("security group id", group)?;
            }
            check.create(
                &request.subnet_id,
                groups,
                request.secondary_ips,
                request.prefixes,
            )
        }))
    }

    fn assign_ips(&mut self, eni_id: String, count: u32) -> HostResult<Result<(), String>> {
        self.charge()?;
        let args = || serde_json::json!({ "eni_id": shown(&eni_id), "count": count });
        Ok(self.eni_request("eni-ops.assign-ips", args, |check| {
            id_ok("ENI id", &eni_id)?;
            check.assign_ips(&eni_id, count)
        }))
    }

    fn assign_prefixes(&mut self, eni_id: String, count: u32) -> HostResult<Result<(), String>> {
        self.charge()?;
        let args = || serde_json::json!({ "eni_id": shown(&eni_id), "count": count });
        Ok(self.eni_request("eni-ops.assign-prefixes", args, |check| {
            id_ok("ENI id", &eni_id)?;
            check.assign_prefixes(&eni_id, count)
        }))
    }

    fn release_ips(
        &mut self,
        eni_id: String,
        addresses: Vec<u32>,
    ) -> HostResult<Result<(), String>> {
        self.charge()?;
        let count = addresses.len();
        let addresses: Vec<Ipv4Addr> = addresses
            .into_iter()
            .take(MAX_RELEASE_LIST + 1)
            .map(Ipv4Addr::from)
            .collect();
        let args = || {
            serde_json::json!({
                "eni_id": shown(&eni_id),
                "addresses": addresses.iter().take(MAX_RELEASE_LIST).collect::<Vec<_>>(),
                "count": count,
            })
        };
        Ok(self.eni_request("eni-ops.release-ips", args, |check| {
            id_ok("ENI id", &eni_id)?;
            if count > MAX_RELEASE_LIST {
                return Err(format!(
                    "{count} addresses in one request; at most {MAX_RELEASE_LIST}"
                ));
            }
            check.release_ips(&eni_id, &addresses)
        }))
    }

    fn release_prefixes(
        &mut self,
        eni_id: String,
        prefixes: Vec<types::Cidr>,
    ) -> HostResult<Result<(), String>> {
        self.charge()?;
        let count = prefixes.len();
        let nets: Result<Vec<Ipv4Net>, String> = prefixes
            .into_iter()
            .take(MAX_RELEASE_LIST + 1)
            .map(net_of)
            .collect();
        let args = || {
            serde_json::json!({
                "eni_id": shown(&eni_id),
                "prefixes": nets.as_ref().map(|n| n.iter().take(MAX_RELEASE_LIST).map(|p| p.to_string()).collect::<Vec<_>>()).ok(),
                "count": count,
            })
        };
        let nets = nets.clone();
        Ok(self.eni_request("eni-ops.release-prefixes", args, |check| {
            id_ok("ENI id", &eni_id)?;
            if count > MAX_RELEASE_LIST {
                return Err(format!(
                    "{count} prefixes in one request; at most {MAX_RELEASE_LIST}"
                ));
            }
            check.release_prefixes(&eni_id, &nets?)
        }))
    }

    fn delete_eni(&mut self, eni_id: String) -> HostResult<Result<(), String>> {
        self.charge()?;
        let args = || serde_json::json!({ "eni_id": shown(&eni_id) });
        Ok(self.eni_request("eni-ops.delete-eni", args, |check| {
            id_ok("ENI id", &eni_id)?;
            check.delete(&eni_id)
        }))
    }
}

impl netlink::Host for HostState {
    fn set_mtu(&mut self, mtu: u32) -> HostResult<Result<(), String>> {
        self.charge()?;
        let checked = self.grants.netlink.check_mtu(mtu);
        Ok(self.netlink_request(
            "netlink.set-mtu",
            || serde_json::json!({ "mtu": mtu }),
            checked,
        ))
    }

    fn add_route(&mut self, destination: netlink::Cidr) -> HostResult<Result<(), String>> {
        self.charge()?;
        let net = net_of(destination);
        let shown = net
            .as_ref()
            .map(|n| n.to_string())
            .unwrap_or_else(|e| e.clone());
        let checked = net.and_then(|net| self.grants.netlink.check_route(net));
        Ok(self.netlink_request(
            "netlink.add-route",
            || serde_json::json!({ "destination": shown }),
            checked,
        ))
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) -> HostResult<()> {
        self.charge()?;
        self.logs += 1;
        let plugin = &self.plugin;
        if self.logs > MAX_LOGS_PER_CALL {
            if self.logs == MAX_LOGS_PER_CALL + 1 {
                tracing::warn!(plugin = %plugin, "more than {MAX_LOGS_PER_CALL} log messages in one call; dropping the rest");
            }
            return Ok(());
        }
        let message = wasmcni_cni::text::escape_controls(&truncate(message));
        match level {
            log::Level::Debug => tracing::debug!(plugin = %plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin = %plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin = %plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin = %plugin, "{message}"),
        }
        Ok(())
    }
}

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> HostResult<Option<Vec<u8>>> {
        self.charge()?;
        key_ok("a kv key", &key)?;
        Ok(self.kv().and_then(|txn| txn.get(&key)))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> HostResult<Result<(), String>> {
        self.charge()?;
        key_ok("a kv key", &key)?;
        let (shown_key, bytes) = (truncate_to(key.clone(), MAX_KEY_BYTES), value.len());
        let args = || serde_json::json!({ "key": shown_key, "bytes": bytes });
        let outcome = match self.kv() {
            Some(txn) => txn.set(key, value),
            None => Err("kv is not available to this plugin".to_owned()),
        };
        Ok(self.record("kv.set", args, outcome))
    }

    fn delete(&mut self, key: String) -> HostResult<()> {
        self.charge()?;
        key_ok("a kv key", &key)?;
        if let Some(txn) = self.kv() {
            txn.delete(key);
        }
        Ok(())
    }

    fn keys(&mut self) -> HostResult<Vec<String>> {
        self.charge()?;
        Ok(self.kv().map(|txn| txn.keys()).unwrap_or_default())
    }
}

impl clock::Host for HostState {
    fn now_unix_ms(&mut self) -> HostResult<u64> {
        self.charge()?;
        Ok(super::now_unix_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(eni: &str, count: u32) -> EniRequest {
        EniRequest::AssignIps {
            eni_id: eni.into(),
            count,
        }
    }

    #[test]
    fn requests_for_the_same_eni_merge_into_one() {
        let mut queued = vec![assign("eni-a", 2)];
        assert!(merge(&mut queued, &assign("eni-a", 3)));
        assert!(!merge(&mut queued, &assign("eni-b", 1)));
        assert_eq!(queued, vec![assign("eni-a", 5)]);
        let release = |ips: &[u8]| EniRequest::ReleaseIps {
            eni_id: "eni-a".into(),
            addresses: ips.iter().map(|n| Ipv4Addr::new(10, 0, 0, *n)).collect(),
        };
        let mut queued = vec![release(&[1])];
        assert!(merge(&mut queued, &release(&[2, 3])));
        assert_eq!(queued, vec![release(&[1, 2, 3])]);
        let delete = EniRequest::DeleteEni {
            eni_id: "eni-a".into(),
        };
        assert!(!merge(&mut [delete.clone()], &delete));
    }
}
