//! What a plugin may see of the node: a snapshot the daemon takes before each call, served by
//! `pool-view` and used by the `eni-ops` checks.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::ipam::Inventory;

/// What EC2 allows the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeLimits {
    /// ENIs the instance type allows (default network card).
    pub max_enis: u32,
    /// Private IPv4 addresses per ENI, primary included.
    pub ipv4_per_eni: u32,
    /// Whether /28 prefixes can be delegated (Nitro).
    pub prefix_delegation: bool,
    /// Pods the node may run.
    pub max_pods: u32,
}

/// The node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeInfo {
    /// `static` or `ec2`.
    pub provider: String,
    /// EC2 instance id (empty for static).
    pub instance_id: String,
    /// EC2 instance type (empty for static).
    pub instance_type: String,
    /// Availability zone (empty for static).
    pub availability_zone: String,
    /// VPC IPv4 CIDRs.
    pub vpc_cidrs: Vec<Ipv4Net>,
    /// Instance limits.
    pub limits: NodeLimits,
}

impl NodeInfo {
    /// A node served by the static provider.
    pub fn static_node() -> NodeInfo {
        NodeInfo {
            provider: "static".to_owned(),
            instance_id: String::new(),
            instance_type: String::new(),
            availability_zone: String::new(),
            vpc_cidrs: Vec::new(),
            limits: NodeLimits::default(),
        }
    }
}

impl Default for NodeInfo {
    fn default() -> Self {
        NodeInfo::static_node()
    }
}

/// An attached ENI.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EniInfo {
    /// `eni-…`.
    pub id: String,
    /// Device index (0: primary).
    pub device_number: u32,
    /// Whether it is the primary ENI.
    pub primary: bool,
    /// Its subnet.
    pub subnet_id: String,
    /// The subnet's CIDR.
    pub subnet_cidr: Ipv4Net,
    /// Its security groups.
    pub security_groups: Vec<String>,
    /// Its own primary address.
    pub primary_ip: Ipv4Addr,
    /// Milliseconds since attachment.
    pub age_ms: u64,
    /// Its tags.
    pub tags: Vec<(String, String)>,
    /// Whether this daemon may change it: the primary ENI (whose secondary addresses are the
    /// node's pod pool), or an ENI created for this instance and cluster (its ownership tags).
    /// An operator's ENI is never changed, whatever a plan asks.
    pub owned: bool,
}

/// A subnet new ENIs may use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubnetInfo {
    /// `subnet-…`.
    pub id: String,
    /// Its CIDR.
    pub cidr: Ipv4Net,
    /// Free addresses EC2 reports.
    pub free_addresses: u32,
    /// Its tags.
    pub tags: Vec<(String, String)>,
}

/// What a call may see of the pool: a snapshot taken by the daemon before the call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSnapshot {
    /// The node.
    pub node: NodeInfo,
    /// Attached ENIs by device number (empty for static).
    pub enis: Vec<EniInfo>,
    /// Candidate subnets for new ENIs.
    pub subnets: Vec<SubnetInfo>,
    /// The provider's blocks and exclusions.
    pub inventory: Inventory,
    /// Addresses held now.
    pub in_use: Vec<Ipv4Addr>,
    /// Addresses cooling down after release.
    pub cooling: Vec<Ipv4Addr>,
    /// ENI requests of earlier plans that failed recently, newest first.
    pub failures: Vec<RequestFailure>,
}

/// An ENI request that failed, as `pool-view.failures` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestFailure {
    /// The `eni-ops` function: `create-eni`, `assign-ips`, …
    pub request: &'static str,
    /// The ENI it was for.
    pub eni_id: Option<String>,
    /// The subnet (create-eni).
    pub subnet_id: Option<String>,
    /// EC2's error code, or `HostRefused`.
    pub code: String,
    /// What happened.
    pub message: String,
    /// Milliseconds since it failed.
    pub age_ms: u64,
}

impl PoolSnapshot {
    /// Whether the snapshot shows a free address: usable in a block, neither excluded, held
    /// nor cooling. An allocator that refuses a snapshot without one found the pool exhausted
    /// (whatever came free since it was taken).
    pub fn has_free_address(&self) -> bool {
        let taken: std::collections::HashSet<Ipv4Addr> =
            self.in_use.iter().chain(&self.cooling).copied().collect();
        crate::ipam::Pool::new(self.inventory.clone()).has_free(|ip| taken.contains(&ip))
    }

    /// A snapshot of a static pool.
    pub fn of_static(inventory: Inventory, in_use: Vec<Ipv4Addr>) -> PoolSnapshot {
        PoolSnapshot {
            inventory,
            in_use,
            ..PoolSnapshot::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::{AddressBlock, BlockKind};

    #[test]
    fn a_snapshot_has_a_free_address_unless_each_is_held_cooling_or_excluded() {
        // 10.0.0.0/30: two usable addresses, .1 and .2.
        let inventory = Inventory {
            blocks: vec![AddressBlock {
                cidr: "10.0.0.0/30".parse().unwrap(),
                route_table: None,
                kind: BlockKind::StaticRange,
                eni_id: None,
            }],
            excluded: Default::default(),
            ipv6: Vec::new(),
            excluded_v6: Default::default(),
        };
        let ip = |last: u8| Ipv4Addr::new(10, 0, 0, last);
        let mut snapshot = PoolSnapshot::of_static(inventory, vec![ip(1)]);
        assert!(snapshot.has_free_address());
        snapshot.cooling.push(ip(2));
        assert!(!snapshot.has_free_address());
        snapshot.cooling.clear();
        snapshot.inventory.excluded.insert(ip(2));
        assert!(!snapshot.has_free_address());
        snapshot.inventory.excluded.clear();
        // The network and broadcast addresses are never free.
        snapshot.in_use = vec![ip(1), ip(2)];
        assert!(!snapshot.has_free_address());
        snapshot.inventory.blocks.clear();
        assert!(!snapshot.has_free_address());
    }
}
