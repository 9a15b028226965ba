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

/// Where the node's addresses come from (`provider.kind` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Fixed ranges from the configuration (`[provider.static]`), for nodes without EC2.
    Static,
    /// Secondary IPs and prefixes of the node's ENIs (`[provider.ec2]`).
    Ec2,
}

impl std::fmt::Display for ProviderKind {
    /// As the configuration spells it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProviderKind::Static => "static",
            ProviderKind::Ec2 => "ec2",
        })
    }
}

/// The node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeInfo {
    /// Where its addresses come from.
    pub provider: ProviderKind,
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
            provider: ProviderKind::Static,
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
    /// The `eni-ops` function.
    pub request: crate::grants::RequestKind,
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

/// How full one block is, as `pool-view.occupancy` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockOccupancy {
    /// Pod addresses the block holds.
    pub usable: u64,
    /// Of those, held by pods.
    pub held: u64,
    /// Of those, neither held, cooling nor excluded.
    pub free: u64,
    /// The lowest free one.
    pub lowest_free: Option<Ipv4Addr>,
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

    /// How full each block is, in the order of the inventory's blocks: what
    /// `pool-view.occupancy` serves. One pass over the address sets, then per block a binary
    /// search into each and a walk over the taken addresses it holds.
    pub fn occupancy(&self) -> Vec<BlockOccupancy> {
        let sorted = |addresses: &mut dyn Iterator<Item = &Ipv4Addr>| {
            let mut set: Vec<u32> = addresses.map(|ip| u32::from(*ip)).collect();
            set.sort_unstable();
            set.dedup();
            set
        };
        let in_use = sorted(&mut self.in_use.iter());
        let cooling = sorted(&mut self.cooling.iter());
        // A BTreeSet: ascending and distinct already.
        let excluded: Vec<u32> = self
            .inventory
            .excluded
            .iter()
            .map(|ip| u32::from(*ip))
            .collect();
        let mut taken = Vec::new();
        self.inventory
            .blocks
            .iter()
            .map(|block| {
                let (first, last) = block.usable_bounds();
                let within = |set: &'_ [u32]| -> std::ops::Range<usize> {
                    set.partition_point(|ip| *ip < first)..set.partition_point(|ip| *ip <= last)
                };
                let held = &in_use[within(&in_use)];
                taken.clear();
                taken.extend_from_slice(held);
                taken.extend_from_slice(&cooling[within(&cooling)]);
                taken.extend_from_slice(&excluded[within(&excluded)]);
                taken.sort_unstable();
                taken.dedup();
                let usable = block.usable_len();
                // The lowest usable address not taken: walk the taken run from `first`.
                let mut candidate = u64::from(first);
                for ip in &taken {
                    if u64::from(*ip) != candidate {
                        break;
                    }
                    candidate += 1;
                }
                BlockOccupancy {
                    usable,
                    held: held.len() as u64,
                    free: usable - taken.len() as u64,
                    lowest_free: (candidate <= u64::from(last))
                        .then(|| Ipv4Addr::from(candidate as u32)),
                }
            })
            .collect()
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

    /// `occupancy` agrees with its definition (a lookup per usable address) on blocks of every
    /// kind, with sets reaching into, around and beyond them, duplicates included.
    #[test]
    fn occupancy_agrees_with_a_lookup_per_address() {
        let block = |cidr: &str, kind| AddressBlock {
            cidr: cidr.parse().unwrap(),
            route_table: None,
            kind,
            eni_id: None,
        };
        let blocks = vec![
            block("10.0.0.0/24", BlockKind::StaticRange),
            block("10.0.1.0/28", BlockKind::Prefix),
            block("10.0.1.16/32", BlockKind::SecondaryIp),
            block("10.0.1.32/31", BlockKind::StaticRange),
            block("10.0.1.36/30", BlockKind::StaticRange),
            block("255.255.255.255/32", BlockKind::SecondaryIp),
        ];
        let mut state = 0x2545_f491_u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for round in 0..200u32 {
            let mut snapshot = PoolSnapshot::of_static(
                Inventory {
                    blocks: blocks.clone(),
                    ..Inventory::default()
                },
                Vec::new(),
            );
            let candidates = (0x0a00_0000..0x0a00_0200).chain([u32::MAX]);
            for ip in candidates.map(Ipv4Addr::from) {
                let roll = next() % 100;
                if roll < round % 90 {
                    snapshot.in_use.push(ip);
                    if roll % 7 == 0 {
                        snapshot.in_use.push(ip);
                    }
                }
                if roll < 10 {
                    snapshot.cooling.push(ip);
                }
                if roll < 5 {
                    snapshot.inventory.excluded.insert(ip);
                }
            }
            snapshot.in_use.reverse();
            let occupancy = snapshot.occupancy();
            assert_eq!(occupancy.len(), blocks.len());
            for (block, got) in blocks.iter().zip(occupancy) {
                let usable: Vec<Ipv4Addr> = block
                    .cidr
                    .hosts()
                    .chain([block.cidr.network(), block.cidr.broadcast()])
                    .filter(|ip| block.is_usable(*ip))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let held = |ip: &Ipv4Addr| snapshot.in_use.contains(ip);
                let free: Vec<Ipv4Addr> = usable
                    .iter()
                    .copied()
                    .filter(|ip| {
                        !held(ip)
                            && !snapshot.cooling.contains(ip)
                            && !snapshot.inventory.excluded.contains(ip)
                    })
                    .collect();
                let expected = BlockOccupancy {
                    usable: usable.len() as u64,
                    held: usable.iter().filter(|ip| held(ip)).count() as u64,
                    free: free.len() as u64,
                    lowest_free: free.first().copied(),
                };
                assert_eq!(got, expected, "round {round}, block {}", block.cidr);
            }
        }
    }
}
