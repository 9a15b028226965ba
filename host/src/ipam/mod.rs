//! Where pod addresses come from (providers) and which free address a pod gets (the pool).
//!
//! A [`Provider`] describes the address blocks the node may use: fixed CIDRs for the static
//! provider, ENI secondary IPs and /28 prefixes for the EC2 provider. The [`Pool`] is pure: it
//! chooses a free address given what the datastore says is in use, so the "never twice"
//! invariant stays with the datastore and the choice is table-tested here.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::config::StaticPool;

/// A block of addresses the node may hand to pods, and how traffic from them is routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressBlock {
    /// The addresses.
    pub cidr: Ipv4Net,
    /// Policy-routing table for traffic *from* pods in this block; `None` means the main
    /// table (VPC CNI: the primary ENI). A secondary ENI with device number N uses N + 1.
    pub route_table: Option<u32>,
    /// How the block reached the node.
    pub kind: BlockKind,
    /// The ENI holding it; `None` for static ranges.
    pub eni_id: Option<String>,
}

/// How a block of pod addresses reached the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockKind {
    /// A range of the static provider.
    StaticRange,
    /// One secondary private IPv4 address of an ENI (a /32).
    SecondaryIp,
    /// A delegated /28 prefix of an ENI.
    Prefix,
}

impl std::fmt::Display for BlockKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BlockKind::StaticRange => "static range",
            BlockKind::SecondaryIp => "secondary IP",
            BlockKind::Prefix => "prefix",
        })
    }
}

/// Everything a provider currently offers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inventory {
    /// Blocks in preference order.
    pub blocks: Vec<AddressBlock>,
    /// Addresses inside the blocks that must never be handed out.
    pub excluded: BTreeSet<Ipv4Addr>,
}

/// What plugins see of a provider besides its blocks, and how the daemon treats it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProviderView {
    /// The node.
    pub node: crate::runtime::NodeInfo,
    /// Attached ENIs (empty for static).
    pub enis: Vec<crate::runtime::EniInfo>,
    /// Subnets new ENIs may be created in (empty for static).
    pub subnets: Vec<crate::runtime::SubnetInfo>,
    /// How long a released address rests before it is handed out again.
    pub cooldown: std::time::Duration,
    /// Whether the inventory grows and shrinks (an ADD that finds it empty waits for it).
    pub dynamic: bool,
}

/// A source of pod addresses: the static ranges, or the EC2 provider's ENIs.
pub trait Provider: Send + Sync + 'static {
    /// Short name for logs and introspection.
    fn name(&self) -> &'static str;
    /// The blocks available now.
    fn inventory(&self) -> Inventory;
    /// The node, ENIs and subnets as plugins see them.
    fn view(&self) -> ProviderView {
        ProviderView::default()
    }
}

/// Fixed CIDRs from the cluster configuration, for nodes without EC2.
#[derive(Debug, Clone)]
pub struct StaticProvider {
    inventory: Inventory,
}

impl StaticProvider {
    /// A provider serving `pool`.
    pub fn new(pool: &StaticPool) -> StaticProvider {
        let blocks = pool
            .cidrs
            .iter()
            .map(|cidr| AddressBlock {
                cidr: *cidr,
                route_table: None,
                kind: BlockKind::StaticRange,
                eni_id: None,
            })
            .collect();
        StaticProvider {
            inventory: Inventory {
                blocks,
                excluded: pool.exclude.iter().copied().collect(),
            },
        }
    }
}

impl Provider for StaticProvider {
    fn name(&self) -> &'static str {
        "static"
    }
    fn inventory(&self) -> Inventory {
        self.inventory.clone()
    }
}

/// The addresses of an inventory and a rotating cursor, so a just-freed address is not the
/// next one handed out (a late packet for the old pod must not reach a new one; VPC CNI uses a
/// 30 s cooldown for the same reason).
#[derive(Debug, Clone)]
pub struct Pool {
    inventory: Inventory,
    capacity: u64,
    cursor: u64,
}

/// A chosen address and the block it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// Routing table for traffic from the pod (`None` = main).
    pub route_table: Option<u32>,
    /// The ENI the address belongs to (`None` for static ranges).
    pub eni_id: Option<String>,
}

impl Pool {
    /// A pool over `inventory`.
    pub fn new(inventory: Inventory) -> Pool {
        let capacity = inventory.blocks.iter().map(|b| b.usable_len()).sum();
        Pool {
            inventory,
            capacity,
            cursor: 0,
        }
    }

    /// The blocks and exclusions the pool serves.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// Serves `inventory` from now on; the cursor carries on from where it was (modulo the
    /// new capacity), so rotation survives a grown or shrunk pool.
    pub fn replace_inventory(&mut self, inventory: Inventory) {
        let cursor = self.cursor;
        *self = Pool::new(inventory);
        self.cursor = if self.capacity == 0 {
            0
        } else {
            cursor % self.capacity
        };
    }

    /// Number of addresses the pool could ever hand out (exclusions not subtracted).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether `ip` belongs to the pool, and with which routing table.
    pub fn locate(&self, ip: Ipv4Addr) -> Option<&AddressBlock> {
        self.inventory.blocks.iter().find(|b| b.is_usable(ip))
    }

    /// Chooses the next free address after the cursor; `in_use` says which are taken.
    /// Returns `None` when every address is taken or excluded.
    pub fn choose(&mut self, in_use: impl Fn(Ipv4Addr) -> bool) -> Option<Choice> {
        for step in 0..self.capacity {
            let index = (self.cursor + step) % self.capacity;
            let (ip, block) = self.nth(index)?;
            if self.inventory.excluded.contains(&ip) || in_use(ip) {
                continue;
            }
            let choice = Choice {
                ip,
                route_table: block.route_table,
                eni_id: block.eni_id.clone(),
            };
            self.cursor = index + 1;
            return Some(choice);
        }
        None
    }

    /// Free addresses given `in_use` (for STATUS and introspection).
    pub fn free_count(&self, in_use: impl Fn(Ipv4Addr) -> bool) -> u64 {
        (0..self.capacity)
            .filter_map(|i| self.nth(i))
            .filter(|(ip, _)| !self.inventory.excluded.contains(ip) && !in_use(*ip))
            .count() as u64
    }

    fn nth(&self, mut index: u64) -> Option<(Ipv4Addr, &AddressBlock)> {
        for block in &self.inventory.blocks {
            let len = block.usable_len();
            if index < len {
                let first = block.first_usable();
                let ip = Ipv4Addr::from(u32::from(first).checked_add(index as u32)?);
                return Some((ip, block));
            }
            index -= len;
        }
        None
    }
}

impl AddressBlock {
    /// Whether the block gives up its network and broadcast addresses: static ranges of /30 and
    /// larger do (they are ordinary subnets); an ENI's /28 prefix is all pod addresses.
    fn trimmed(&self) -> bool {
        self.kind == BlockKind::StaticRange && self.cidr.prefix_len() <= 30
    }

    /// How many pod addresses the block holds.
    pub fn usable_len(&self) -> u64 {
        let total = 1u64 << (32 - u32::from(self.cidr.prefix_len()));
        if self.trimmed() {
            total - 2
        } else {
            total
        }
    }

    fn first_usable(&self) -> Ipv4Addr {
        let network = u32::from(self.cidr.network());
        Ipv4Addr::from(network + u32::from(self.trimmed()))
    }

    /// Whether `ip` is one of the block's pod addresses.
    pub fn is_usable(&self, ip: Ipv4Addr) -> bool {
        self.cidr.contains(&ip)
            && (!self.trimmed() || (ip != self.cidr.network() && ip != self.cidr.broadcast()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    fn pool(cidrs: &[&str], exclude: &[&str]) -> Pool {
        let provider = StaticProvider::new(&StaticPool {
            cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            exclude: exclude.iter().map(|c| c.parse().unwrap()).collect(),
        });
        Pool::new(provider.inventory())
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn skips_network_broadcast_and_excluded_addresses() {
        let mut p = pool(&["10.0.0.0/30"], &[]);
        assert_eq!(p.capacity(), 2);
        assert_eq!(p.choose(|_| false).unwrap().ip, ip("10.0.0.1"));
        assert_eq!(p.choose(|_| false).unwrap().ip, ip("10.0.0.2"));
        let mut p = pool(&["10.0.0.0/29"], &["10.0.0.1"]);
        assert_eq!(p.choose(|_| false).unwrap().ip, ip("10.0.0.2"));
        let p = pool(&["10.0.0.8/31", "10.0.0.20/32"], &[]);
        assert_eq!(p.capacity(), 3);
        assert_eq!(
            p.locate(ip("10.0.0.20")).unwrap().cidr.to_string(),
            "10.0.0.20/32"
        );
        assert!(pool(&["10.0.0.0/24"], &[])
            .locate(ip("10.0.0.255"))
            .is_none());
    }

    #[test]
    fn rotates_so_a_freed_address_is_not_reused_at_once() {
        let mut p = pool(&["10.0.0.0/29"], &[]);
        let used = RefCell::new(BTreeSet::new());
        let a = p.choose(|i| used.borrow().contains(&i)).unwrap().ip;
        used.borrow_mut().insert(a);
        let b = p.choose(|i| used.borrow().contains(&i)).unwrap().ip;
        used.borrow_mut().remove(&a);
        let c = p.choose(|i| used.borrow().contains(&i)).unwrap().ip;
        assert_eq!((a, b, c), (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")));
    }

    #[test]
    fn exhausts_then_reports_none_and_counts_free() {
        let mut p = pool(&["10.0.0.0/30", "10.0.1.0/30"], &["10.0.1.2"]);
        let mut used = BTreeSet::new();
        while let Some(c) = p.choose(|i| used.contains(&i)) {
            assert!(used.insert(c.ip), "{} handed out twice", c.ip);
        }
        assert_eq!(used.len(), 3);
        assert_eq!(p.free_count(|i| used.contains(&i)), 0);
        used.remove(&ip("10.0.0.2"));
        assert_eq!(p.free_count(|i| used.contains(&i)), 1);
        assert_eq!(p.choose(|i| used.contains(&i)).unwrap().ip, ip("10.0.0.2"));
    }
}
