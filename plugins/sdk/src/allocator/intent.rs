//! Pool changes a planner intends, as plain data: decided by pure code, issued through
//! `eni-ops` by [`issue_all`], and replayed on a [`Pool`] by [`Pool::apply`] in native tests
//! (a small stand-in for the host and EC2, so a table test can run `plan` until it settles).

use super::{eni_ops, log, AddressBlock, BlockKind, Cidr, Eni, NewEni, NodeInfo, NodeLimits, Pool};
use super::{Pair, ProviderKind, Subnet};
use crate::net;
use core::fmt;

/// One request a planner wants made through `eni-ops`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Create and attach an ENI in `subnet_id` with these security groups and addresses.
    CreateEni {
        /// Subnet of the new ENI.
        subnet_id: String,
        /// Its security groups.
        security_groups: Vec<String>,
        /// Secondary IPv4 addresses to assign at creation.
        secondary_ips: u32,
        /// /28 prefixes to delegate at creation.
        prefixes: u32,
    },
    /// Assign `count` more secondary IPv4 addresses to an attached ENI.
    AssignIps {
        /// The ENI.
        eni_id: String,
        /// How many.
        count: u32,
    },
    /// Delegate `count` more /28 prefixes to an attached ENI.
    AssignPrefixes {
        /// The ENI.
        eni_id: String,
        /// How many.
        count: u32,
    },
    /// Give back secondary addresses no pod holds.
    ReleaseIps {
        /// The ENI holding them.
        eni_id: String,
        /// The addresses.
        addresses: Vec<u32>,
    },
    /// Give back prefixes no pod holds an address in: (network, prefix length) pairs.
    ReleasePrefixes {
        /// The ENI holding them.
        eni_id: String,
        /// The prefixes.
        prefixes: Vec<(u32, u8)>,
    },
    /// Detach and delete a secondary ENI no pod uses.
    DeleteEni {
        /// The ENI.
        eni_id: String,
    },
}

impl Intent {
    /// The ENI it is for (none for a new ENI).
    pub fn eni_id(&self) -> Option<&str> {
        match self {
            Intent::CreateEni { .. } => None,
            Intent::AssignIps { eni_id, .. }
            | Intent::AssignPrefixes { eni_id, .. }
            | Intent::ReleaseIps { eni_id, .. }
            | Intent::ReleasePrefixes { eni_id, .. }
            | Intent::DeleteEni { eni_id } => Some(eni_id),
        }
    }
}

impl fmt::Display for Intent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |items: Vec<String>| items.join(",");
        match self {
            Intent::CreateEni {
                subnet_id,
                security_groups,
                secondary_ips,
                prefixes,
            } => write!(
                f,
                "create-eni in {subnet_id} (security groups {}) with {secondary_ips} secondary IP(s) and {prefixes} prefix(es)",
                security_groups.join(",")
            ),
            Intent::AssignIps { eni_id, count } => write!(f, "assign-ips {count} to {eni_id}"),
            Intent::AssignPrefixes { eni_id, count } => {
                write!(f, "assign-prefixes {count} to {eni_id}")
            }
            Intent::ReleaseIps { eni_id, addresses } => write!(
                f,
                "release-ips {} from {eni_id}",
                list(addresses.iter().map(|ip| net::to_ip(*ip).to_string()).collect())
            ),
            Intent::ReleasePrefixes { eni_id, prefixes } => write!(
                f,
                "release-prefixes {} from {eni_id}",
                list(
                    prefixes
                        .iter()
                        .map(|(network, len)| format!("{}/{len}", net::to_ip(*network)))
                        .collect()
                )
            ),
            Intent::DeleteEni { eni_id } => write!(f, "delete-eni {eni_id}"),
        }
    }
}

impl Intent {
    /// Makes the request through `eni-ops` (the plugin must be granted it); `Err` carries the
    /// host's reason for refusing.
    pub fn issue(&self) -> Result<(), String> {
        match self {
            Intent::CreateEni {
                subnet_id,
                security_groups,
                secondary_ips,
                prefixes,
            } => eni_ops::create_eni(&NewEni {
                subnet_id: subnet_id.clone(),
                security_groups: security_groups.clone(),
                secondary_ips: *secondary_ips,
                prefixes: *prefixes,
            }),
            Intent::AssignIps { eni_id, count } => eni_ops::assign_ips(eni_id, *count),
            Intent::AssignPrefixes { eni_id, count } => eni_ops::assign_prefixes(eni_id, *count),
            Intent::ReleaseIps { eni_id, addresses } => eni_ops::release_ips(eni_id, addresses),
            Intent::ReleasePrefixes { eni_id, prefixes } => {
                let cidrs: Vec<Cidr> = prefixes
                    .iter()
                    .map(|(network, prefix_len)| Cidr {
                        network: *network,
                        prefix_len: *prefix_len,
                    })
                    .collect();
                eni_ops::release_prefixes(eni_id, &cidrs)
            }
            Intent::DeleteEni { eni_id } => eni_ops::delete_eni(eni_id),
        }
    }
}

/// Issues every intent once, in order (the plugin must be granted `eni-ops` and `log`). A
/// refusal is logged as a warning with the host's reason and not retried: the next `plan`
/// sees the pool as it then is and asks again if still needed. Returns how many were refused.
pub fn issue_all(intents: &[Intent]) -> usize {
    let mut refused = 0;
    for intent in intents {
        match intent.issue() {
            Ok(()) => log::log(log::Level::Debug, &format!("requested {intent}")),
            Err(reason) => {
                refused += 1;
                log::log(log::Level::Warn, &format!("refused {intent}: {reason}"));
            }
        }
    }
    refused
}

/// Addresses EC2 keeps in every subnet: the network address, the next three, the broadcast.
fn reserved_in_subnet(subnet: &Cidr, ip: u32) -> bool {
    let first = subnet.network;
    let last = (u64::from(first) + net::size(subnet.prefix_len) - 1) as u32;
    ip <= first.saturating_add(3) || ip == last
}

impl Pool {
    /// Slots of the ENI's IPv4 limit taken by its secondary IPs and prefixes (EC2 counts one
    /// slot per secondary address or /28 prefix; the primary address takes one more).
    pub fn slots_of(&self, eni_id: &str) -> u32 {
        self.blocks_of(eni_id).count() as u32
    }

    /// Whether any address of the ENI's blocks is held by a pod.
    pub fn eni_has_pods(&self, eni_id: &str) -> bool {
        self.blocks_of(eni_id).any(|b| self.held_in(b) > 0)
    }

    /// Whether any address of the ENI's blocks is cooling down.
    pub fn eni_has_cooling(&self, eni_id: &str) -> bool {
        self.blocks_of(eni_id)
            .any(|b| Self::usable(b).any(|ip| self.cooling.contains(&ip)))
    }

    /// Whether an address of the subnet is taken by an ENI or a block already.
    fn taken(&self, ip: u32) -> bool {
        self.enis.iter().any(|e| e.primary_ip == ip)
            || self
                .blocks
                .iter()
                .any(|b| net::contains(b.cidr.network, b.cidr.prefix_len, ip))
    }

    /// The lowest free aligned network of `prefix_len` in `subnet` (EC2's reserved addresses
    /// and everything already handed to an ENI excluded).
    fn carve(&self, subnet: &Cidr, prefix_len: u8) -> Option<u32> {
        let step = net::size(prefix_len);
        let end = u64::from(subnet.network) + net::size(subnet.prefix_len);
        let mut at = u64::from(subnet.network);
        while at + step <= end {
            let network = at as u32;
            if net::addresses(network, prefix_len)
                .all(|ip| !reserved_in_subnet(subnet, ip) && !self.taken(ip))
            {
                return Some(network);
            }
            at += step;
        }
        None
    }

    fn subnet_cidr(&self, subnet_id: &str) -> Option<Cidr> {
        self.subnets
            .iter()
            .find(|s| s.id == subnet_id)
            .map(|s| s.cidr)
            .or_else(|| {
                self.enis
                    .iter()
                    .find(|e| e.subnet_id == subnet_id)
                    .map(|e| e.subnet_cidr)
            })
    }

    fn add_blocks(&mut self, eni: &Eni, kind: BlockKind, count: u32) -> Result<(), String> {
        let len = if kind == BlockKind::Prefix { 28 } else { 32 };
        for _ in 0..count {
            let network = self
                .carve(&eni.subnet_cidr, len)
                .ok_or_else(|| format!("subnet {} has no free /{len} left", eni.subnet_id))?;
            self.blocks.push(AddressBlock {
                cidr: Cidr {
                    network,
                    prefix_len: len,
                },
                kind,
                eni_id: Some(eni.id.clone()),
                route_table: Some(eni.device_number + 1),
            });
            if let Some(subnet) = self.subnets.iter_mut().find(|s| s.id == eni.subnet_id) {
                subnet.free_addresses = subnet.free_addresses.saturating_sub(net::size(len) as u32);
            }
        }
        Ok(())
    }

    fn room_check(&self, eni: &Eni, more: u32, prefixes: bool) -> Result<(), String> {
        let limit = self.node.limits.ipv4_per_eni.saturating_sub(1);
        let used = self.slots_of(&eni.id);
        if used + more > limit {
            return Err(format!(
                "{} has {used} of {limit} address slots used; {more} more exceed the {} limit",
                eni.id, self.node.instance_type
            ));
        }
        if prefixes && more > 0 && !self.node.limits.prefix_delegation {
            return Err(format!(
                "{} does not support prefix delegation",
                self.node.instance_type
            ));
        }
        Ok(())
    }

    fn eni(&self, eni_id: &str) -> Result<Eni, String> {
        self.enis
            .iter()
            .find(|e| e.id == eni_id)
            .cloned()
            .ok_or_else(|| format!("no ENI {eni_id} is attached"))
    }

    /// Carries `intent` out on this snapshot roughly as the host and EC2 would, refusing what
    /// they would refuse (instance limits, unknown ENIs or subnets, addresses pods hold): a
    /// stand-in for native tests, never called by a plugin at run time. New ENIs take the
    /// lowest free device number and the lowest free addresses of their subnet.
    pub fn apply(&mut self, intent: &Intent) -> Result<(), String> {
        match intent {
            Intent::CreateEni {
                subnet_id,
                security_groups,
                secondary_ips,
                prefixes,
            } => {
                let limits = &self.node.limits;
                if self.enis.len() as u32 >= limits.max_enis {
                    return Err(format!(
                        "{} allows {} ENIs and {} are attached",
                        self.node.instance_type,
                        limits.max_enis,
                        self.enis.len()
                    ));
                }
                let subnet_cidr = self
                    .subnet_cidr(subnet_id)
                    .ok_or_else(|| format!("subnet {subnet_id} is unknown"))?;
                let device_number = (0..)
                    .find(|d| self.enis.iter().all(|e| e.device_number != *d))
                    .unwrap_or(0);
                let primary_ip = self
                    .carve(&subnet_cidr, 32)
                    .ok_or_else(|| format!("subnet {subnet_id} is full"))?;
                let eni = Eni {
                    id: format!("eni-{device_number}-{primary_ip:08x}"),
                    device_number,
                    primary: false,
                    subnet_id: subnet_id.clone(),
                    subnet_cidr,
                    security_groups: security_groups.clone(),
                    primary_ip,
                    age_ms: 0,
                    // As the daemon creates it: with the ownership tag naming this instance.
                    tags: vec![Pair {
                        key: super::OWNER_TAG.into(),
                        value: self.node.instance_id.clone(),
                    }],
                };
                self.room_check(&eni, secondary_ips + prefixes, *prefixes > 0)?;
                self.enis.push(eni.clone());
                self.enis.sort_by_key(|e| e.device_number);
                self.add_blocks(&eni, BlockKind::SecondaryIp, *secondary_ips)?;
                self.add_blocks(&eni, BlockKind::Prefix, *prefixes)
            }
            Intent::AssignIps { eni_id, count } => {
                let eni = self.eni(eni_id)?;
                self.room_check(&eni, *count, false)?;
                self.add_blocks(&eni, BlockKind::SecondaryIp, *count)
            }
            Intent::AssignPrefixes { eni_id, count } => {
                let eni = self.eni(eni_id)?;
                self.room_check(&eni, *count, true)?;
                self.add_blocks(&eni, BlockKind::Prefix, *count)
            }
            Intent::ReleaseIps { eni_id, addresses } => {
                let wanted: Vec<(u32, u8)> = addresses.iter().map(|ip| (*ip, 32)).collect();
                self.release(eni_id, BlockKind::SecondaryIp, &wanted)
            }
            Intent::ReleasePrefixes { eni_id, prefixes } => {
                self.release(eni_id, BlockKind::Prefix, prefixes)
            }
            Intent::DeleteEni { eni_id } => {
                let eni = self.eni(eni_id)?;
                if eni.primary {
                    return Err(format!("{eni_id} is the primary ENI"));
                }
                if self.eni_has_pods(eni_id) {
                    return Err(format!("pods hold addresses of {eni_id}"));
                }
                self.blocks
                    .retain(|b| b.eni_id.as_deref() != Some(eni_id.as_str()));
                self.enis.retain(|e| e.id != *eni_id);
                Ok(())
            }
        }
    }

    fn release(
        &mut self,
        eni_id: &str,
        kind: BlockKind,
        cidrs: &[(u32, u8)],
    ) -> Result<(), String> {
        self.eni(eni_id)?;
        for (network, len) in cidrs {
            let at = self
                .blocks
                .iter()
                .position(|b| {
                    b.kind == kind
                        && b.eni_id.as_deref() == Some(eni_id)
                        && (b.cidr.network, b.cidr.prefix_len) == (*network, *len)
                })
                .ok_or_else(|| {
                    format!(
                        "{}/{len} is not a {kind:?} of {eni_id}",
                        net::to_ip(*network)
                    )
                })?;
            if self.held_in(&self.blocks[at]) > 0 {
                return Err(format!(
                    "a pod holds an address of {}/{len}",
                    net::to_ip(*network)
                ));
            }
            self.blocks.remove(at);
        }
        Ok(())
    }

    /// Runs a planner to its fixed point as the host would: `plan` on the pool, every intent
    /// applied with [`Pool::apply`], again until a plan asks for nothing. Returns the number of
    /// rounds that changed something; `Err` on the first refusal, or when `max_rounds` rounds
    /// have not settled the pool (a planner that is not idempotent on its own result).
    pub fn settle(
        &mut self,
        mut plan: impl FnMut(&Pool) -> Vec<Intent>,
        max_rounds: usize,
    ) -> Result<usize, String> {
        for round in 0..max_rounds {
            let intents = plan(self);
            if intents.is_empty() {
                return Ok(round);
            }
            for intent in &intents {
                self.apply(intent)
                    .map_err(|why| format!("round {round}: refused {intent}: {why}"))?;
            }
        }
        Err(format!("not settled after {max_rounds} rounds"))
    }

    /// A pool for native tests: an EC2 node of `instance_type` with these limits, its primary
    /// ENI `eni-primary` (device 0, security group `sg-node`, 10.0.0.10) in `subnet-node`
    /// (10.0.0.0/16), which is also the one subnet new ENIs may use; no blocks, no pods.
    pub fn ec2_fixture(instance_type: &str, limits: NodeLimits) -> Pool {
        let subnet_cidr = Cidr {
            network: 0x0a00_0000,
            prefix_len: 16,
        };
        Pool {
            node: NodeInfo {
                provider: ProviderKind::Ec2,
                instance_id: "i-0123456789abcdef0".into(),
                instance_type: instance_type.into(),
                availability_zone: "eu-west-1a".into(),
                vpc_cidrs: vec![Cidr {
                    network: 0x0a00_0000,
                    prefix_len: 8,
                }],
                limits,
            },
            enis: vec![Eni {
                id: "eni-primary".into(),
                device_number: 0,
                primary: true,
                subnet_id: "subnet-node".into(),
                subnet_cidr,
                security_groups: vec!["sg-node".into()],
                primary_ip: 0x0a00_000a,
                age_ms: 3_600_000,
                tags: Vec::new(),
            }],
            blocks: Vec::new(),
            in_use: Default::default(),
            cooling: Default::default(),
            excluded: Default::default(),
            subnets: vec![Subnet {
                id: "subnet-node".into(),
                cidr: subnet_cidr,
                free_addresses: 65_530,
                tags: Vec::<Pair>::new(),
            }],
            failures: Vec::new(),
        }
    }
}
