//! The host side of the WIT imports: per-call state and one `Host` impl per interface. Every
//! request that could change something (`eni-ops`, `netlink`, `kv`) is checked against the
//! grant's scope here, recorded for the audit log, and only queued: the caller applies the
//! queue after the call returns successfully.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use wasmtime::StoreLimits;

use super::bindings::allocator::wasmcni::plugin::{
    clock, config, eni_ops, kv, log, pool_view, types,
};
use super::bindings::policy::wasmcni::plugin::netlink;
use super::grants::{EniChecker, EniRequest, Grants, NetlinkRequest};
use super::kv::{KvStore, KvTxn};
use super::pool::PoolSnapshot;

/// Most log messages a plugin may write per call; the rest are dropped with one warning.
pub const MAX_LOGS_PER_CALL: u32 = 64;
/// Most privileged requests recorded for the audit log per call; beyond it only a count is kept.
pub const MAX_RECORDED_CALLS: usize = 256;
/// Largest plugin message kept (log lines, refusal reasons).
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// A privileged request a plugin made during a call, for the audit log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostCall {
    /// `eni-ops.create-eni`, `netlink.set-mtu`, `kv.set`, ...
    pub call: String,
    /// Its arguments.
    pub args: serde_json::Value,
    /// `None`: accepted (queued); `Some(reason)`: refused at call time.
    pub refused: Option<String>,
}

/// Per-call host state.
pub struct HostState {
    pub(super) plugin: Arc<str>,
    pub(super) grants: Arc<Grants>,
    pub(super) settings: Arc<BTreeMap<String, String>>,
    pub(super) snapshot: Arc<PoolSnapshot>,
    pub(super) limits: StoreLimits,
    pub(super) kv_store: Option<Arc<KvStore>>,
    pub(super) kv: Option<KvTxn>,
    pub(super) eni_requests: Vec<EniRequest>,
    pub(super) netlink_requests: Vec<NetlinkRequest>,
    pub(super) host_calls: Vec<HostCall>,
    /// Requests beyond [`MAX_RECORDED_CALLS`], counted only.
    pub(super) unrecorded_calls: u64,
    logs: u32,
}

impl HostState {
    pub(super) fn new(
        plugin: Arc<str>,
        grants: Arc<Grants>,
        settings: Arc<BTreeMap<String, String>>,
        snapshot: Arc<PoolSnapshot>,
        limits: StoreLimits,
        kv_store: Option<Arc<KvStore>>,
    ) -> HostState {
        HostState {
            plugin,
            grants,
            settings,
            snapshot,
            limits,
            kv_store,
            kv: None,
            eni_requests: Vec::new(),
            netlink_requests: Vec::new(),
            host_calls: Vec::new(),
            unrecorded_calls: 0,
            logs: 0,
        }
    }

    fn record<T>(
        &mut self,
        call: &str,
        args: serde_json::Value,
        outcome: Result<T, String>,
    ) -> Result<T, String> {
        let refused = outcome.as_ref().err().cloned();
        if let Some(reason) = &refused {
            tracing::warn!(plugin = %self.plugin, call, %args, "refused: {reason}");
        }
        if self.host_calls.len() >= MAX_RECORDED_CALLS {
            self.unrecorded_calls += 1;
            return outcome;
        }
        self.host_calls.push(HostCall {
            call: call.to_owned(),
            args,
            refused,
        });
        outcome
    }

    fn eni_request(
        &mut self,
        call: &str,
        args: serde_json::Value,
        check: impl FnOnce(&EniChecker<'_>) -> Result<EniRequest, String>,
    ) -> Result<(), String> {
        let checked = check(&EniChecker::new(
            &self.grants.eni_ops,
            &self.snapshot,
            &self.eni_requests,
        ));
        let request = self.record(call, args, checked)?;
        self.eni_requests.push(request);
        Ok(())
    }

    fn kv(&mut self) -> Option<&mut KvTxn> {
        if self.kv.is_none() {
            self.kv = self.kv_store.as_ref().map(|store| store.begin());
        }
        self.kv.as_mut()
    }
}

pub(super) fn truncate(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("… (truncated)");
    }
    message
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

impl types::Host for HostState {}

impl config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.settings.get(&key).cloned()
    }

    fn all(&mut self) -> Vec<types::Pair> {
        self.settings
            .iter()
            .map(|(key, value)| types::Pair {
                key: key.clone(),
                value: value.clone(),
            })
            .collect()
    }
}

impl pool_view::Host for HostState {
    fn node(&mut self) -> pool_view::NodeInfo {
        let node = &self.snapshot.node;
        pool_view::NodeInfo {
            provider: node.provider.clone(),
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
        }
    }

    fn enis(&mut self) -> Vec<pool_view::Eni> {
        self.snapshot
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
            .collect()
    }

    fn blocks(&mut self) -> Vec<types::AddressBlock> {
        use crate::ipam::BlockKind;
        self.snapshot
            .inventory
            .blocks
            .iter()
            .map(|b| types::AddressBlock {
                cidr: cidr(&b.cidr),
                kind: match b.kind {
                    BlockKind::StaticRange => types::BlockKind::StaticRange,
                    BlockKind::SecondaryIp => types::BlockKind::SecondaryIp,
                    BlockKind::Prefix => types::BlockKind::Prefix,
                },
                eni_id: b.eni_id.clone(),
                route_table: b.route_table,
            })
            .collect()
    }

    fn in_use(&mut self) -> Vec<u32> {
        self.snapshot
            .in_use
            .iter()
            .map(|ip| u32::from(*ip))
            .collect()
    }

    fn cooling(&mut self) -> Vec<u32> {
        self.snapshot
            .cooling
            .iter()
            .map(|ip| u32::from(*ip))
            .collect()
    }

    fn excluded(&mut self) -> Vec<u32> {
        self.snapshot
            .inventory
            .excluded
            .iter()
            .map(|ip| u32::from(*ip))
            .collect()
    }

    fn subnets(&mut self) -> Vec<pool_view::Subnet> {
        self.snapshot
            .subnets
            .iter()
            .map(|s| pool_view::Subnet {
                id: s.id.clone(),
                cidr: cidr(&s.cidr),
                free_addresses: s.free_addresses,
                tags: pairs(&s.tags),
            })
            .collect()
    }

    fn failures(&mut self) -> Vec<pool_view::RequestFailure> {
        self.snapshot
            .failures
            .iter()
            .map(|f| pool_view::RequestFailure {
                request: f.request.to_owned(),
                eni_id: f.eni_id.clone(),
                subnet_id: f.subnet_id.clone(),
                code: f.code.clone(),
                message: f.message.clone(),
                age_ms: f.age_ms,
            })
            .collect()
    }
}

impl eni_ops::Host for HostState {
    fn create_eni(&mut self, request: eni_ops::NewEni) -> Result<(), String> {
        let args = serde_json::json!({
            "subnetId": request.subnet_id,
            "securityGroups": request.security_groups,
            "secondaryIps": request.secondary_ips,
            "prefixes": request.prefixes,
        });
        self.eni_request("eni-ops.create-eni", args, |check| {
            check.create(
                &request.subnet_id,
                &request.security_groups,
                request.secondary_ips,
                request.prefixes,
            )
        })
    }

    fn assign_ips(&mut self, eni_id: String, count: u32) -> Result<(), String> {
        let args = serde_json::json!({ "eniId": eni_id, "count": count });
        self.eni_request("eni-ops.assign-ips", args, |check| {
            check.assign_ips(&eni_id, count)
        })
    }

    fn assign_prefixes(&mut self, eni_id: String, count: u32) -> Result<(), String> {
        let args = serde_json::json!({ "eniId": eni_id, "count": count });
        self.eni_request("eni-ops.assign-prefixes", args, |check| {
            check.assign_prefixes(&eni_id, count)
        })
    }

    fn release_ips(&mut self, eni_id: String, addresses: Vec<u32>) -> Result<(), String> {
        let addresses: Vec<Ipv4Addr> = addresses.into_iter().map(Ipv4Addr::from).collect();
        let args = serde_json::json!({ "eniId": eni_id, "addresses": addresses });
        self.eni_request("eni-ops.release-ips", args, |check| {
            check.release_ips(&eni_id, &addresses)
        })
    }

    fn release_prefixes(
        &mut self,
        eni_id: String,
        prefixes: Vec<types::Cidr>,
    ) -> Result<(), String> {
        let nets: Result<Vec<Ipv4Net>, String> = prefixes.into_iter().map(net_of).collect();
        let args = serde_json::json!({
            "eniId": eni_id,
            "prefixes": nets.as_ref().map(|n| n.iter().map(|p| p.to_string()).collect::<Vec<_>>()).ok(),
        });
        self.eni_request("eni-ops.release-prefixes", args, |check| {
            check.release_prefixes(&eni_id, &nets?)
        })
    }

    fn delete_eni(&mut self, eni_id: String) -> Result<(), String> {
        let args = serde_json::json!({ "eniId": eni_id });
        self.eni_request("eni-ops.delete-eni", args, |check| check.delete(&eni_id))
    }
}

impl netlink::Host for HostState {
    fn set_mtu(&mut self, mtu: u32) -> Result<(), String> {
        let checked = self.grants.netlink.check_mtu(mtu);
        let request = self.record(
            "netlink.set-mtu",
            serde_json::json!({ "mtu": mtu }),
            checked,
        )?;
        self.netlink_requests.push(request);
        Ok(())
    }

    fn add_route(&mut self, destination: netlink::Cidr) -> Result<(), String> {
        let net = net_of(destination);
        let args = serde_json::json!({
            "destination": net.as_ref().map(|n| n.to_string()).unwrap_or_else(|e| e.clone())
        });
        let checked = net.and_then(|net| self.grants.netlink.check_route(net));
        let request = self.record("netlink.add-route", args, checked)?;
        self.netlink_requests.push(request);
        Ok(())
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        self.logs += 1;
        let plugin = &self.plugin;
        if self.logs > MAX_LOGS_PER_CALL {
            if self.logs == MAX_LOGS_PER_CALL + 1 {
                tracing::warn!(plugin = %plugin, "more than {MAX_LOGS_PER_CALL} log messages in one call; dropping the rest");
            }
            return;
        }
        let message = truncate(message);
        match level {
            log::Level::Debug => tracing::debug!(plugin = %plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin = %plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin = %plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin = %plugin, "{message}"),
        }
    }
}

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.kv()?.get(&key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        let args = serde_json::json!({ "key": truncate(key.clone()), "bytes": value.len() });
        let outcome = match self.kv() {
            Some(txn) => txn.set(key, value),
            None => Err("kv is not available to this plugin".to_owned()),
        };
        self.record("kv.set", args, outcome)
    }

    fn delete(&mut self, key: String) {
        if let Some(txn) = self.kv() {
            txn.delete(key);
        }
    }

    fn keys(&mut self) -> Vec<String> {
        self.kv().map(|txn| txn.keys()).unwrap_or_default()
    }
}

impl clock::Host for HostState {
    fn now_unix_ms(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default()
    }
}
