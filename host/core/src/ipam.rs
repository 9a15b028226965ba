//! Where pod addresses come from (providers) and which free address a pod gets (the pool).
//!
//! A [`Provider`] describes the address blocks the node may use: fixed CIDRs for the static
//! provider, ENI secondary IPs and /28 prefixes for the EC2 provider. The [`Pool`] is pure: it
//! chooses a free address given what the datastore says is in use, so the "never twice"
//! invariant stays with the datastore and the choice is table-tested here.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

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

/// An IPv6 prefix pods get a /128 of: delegated to an ENI (IPv6 prefix mode: one /80 on the
/// primary ENI), or a static one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Block {
    /// The prefix.
    pub cidr: Ipv6Net,
    /// The ENI holding it (`None`: a static prefix).
    pub eni_id: Option<String>,
}

/// Everything a provider currently offers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inventory {
    /// IPv4 blocks in preference order.
    pub blocks: Vec<AddressBlock>,
    /// Addresses inside the blocks that must never be handed out.
    pub excluded: BTreeSet<Ipv4Addr>,
    /// IPv6 prefixes (IPv6 prefix mode, or a static IPv6 pool); pods then get their address
    /// from these.
    pub ipv6: Vec<Ipv6Block>,
    /// Addresses inside the IPv6 prefixes that must never be handed out.
    pub excluded_v6: BTreeSet<Ipv6Addr>,
}

/// The address families pods get their addresses in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    /// An IPv4 address from the provider's blocks (the allocator plugin may choose it).
    #[default]
    Ipv4,
    /// A /128 from the node's IPv6 prefix, chosen by the host.
    Ipv6,
    /// Dual stack: both, on the pod's one interface. The IPv4 address is chosen as with
    /// [`IpFamily::Ipv4`] (by the allocator plugin, if any), the /128 by the host.
    #[serde(alias = "dual-stack")]
    Dual,
}

impl IpFamily {
    /// Whether pods get an IPv4 address.
    pub fn has_ipv4(self) -> bool {
        self != IpFamily::Ipv6
    }

    /// Whether pods get an IPv6 address.
    pub fn has_ipv6(self) -> bool {
        self != IpFamily::Ipv4
    }
}

impl std::fmt::Display for IpFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IpFamily::Ipv4 => "ipv4",
            IpFamily::Ipv6 => "ipv6",
            IpFamily::Dual => "dual",
        })
    }
}

/// What plugins see of a provider besides its blocks, and how the daemon treats it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProviderView {
    /// The node.
    pub node: crate::pool_view::NodeInfo,
    /// Attached ENIs (empty for static).
    pub enis: Vec<crate::pool_view::EniInfo>,
    /// Subnets new ENIs may be created in (empty for static).
    pub subnets: Vec<crate::pool_view::SubnetInfo>,
    /// How long a released address rests before it is handed out again.
    pub cooldown: std::time::Duration,
    /// Whether the inventory grows and shrinks (an ADD that finds it empty waits for it).
    pub dynamic: bool,
    /// The family pods get their address in.
    pub family: IpFamily,
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

/// The static provider's validated pool (the configuration's `[provider.static]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPool {
    /// IPv4 pod CIDRs, in configuration order.
    pub cidrs: Vec<Ipv4Net>,
    /// Excluded IPv4 addresses.
    pub exclude: Vec<Ipv4Addr>,
    /// IPv6 pod prefixes, in configuration order (IPv6 pods: every pod gets a /128).
    pub ipv6: Vec<Ipv6Net>,
    /// Excluded IPv6 addresses.
    pub exclude_v6: Vec<Ipv6Addr>,
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
        let ipv6 = pool
            .ipv6
            .iter()
            .map(|cidr| Ipv6Block {
                cidr: *cidr,
                eni_id: None,
            })
            .collect();
        StaticProvider {
            inventory: Inventory {
                blocks,
                excluded: pool.exclude.iter().copied().collect(),
                ipv6,
                excluded_v6: pool.exclude_v6.iter().copied().collect(),
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
    fn view(&self) -> ProviderView {
        let (v4, v6) = (
            !self.inventory.blocks.is_empty(),
            !self.inventory.ipv6.is_empty(),
        );
        ProviderView {
            family: match (v4, v6) {
                (true, true) => IpFamily::Dual,
                (false, true) => IpFamily::Ipv6,
                _ => IpFamily::Ipv4,
            },
            ..ProviderView::default()
        }
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
    /// Addresses in the IPv6 prefixes (2^48 − 1 per /80: the prefix's first address is never
    /// handed out).
    capacity_v6: u64,
    cursor_v6: u64,
}

/// Where the IPv6 cursor starts: 1024 addresses per millisecond of the wall clock, so a
/// restarted daemon starts past every address it handed out before (a /80 holds 2^48; the
/// cursor wraps after about 8.9 years) and an address released just before a crash is not
/// handed out again at once, with no state kept across the restart.
fn v6_cursor_start(capacity: u64) -> u64 {
    if capacity == 0 {
        return 0;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    now_ms.wrapping_mul(1024) % capacity
}

/// A chosen address and the block it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The pod's address.
    pub ip: IpAddr,
    /// Routing table for traffic from the pod (`None` = main).
    pub route_table: Option<u32>,
    /// The ENI the address belongs to (`None` for static ranges).
    pub eni_id: Option<String>,
}

impl Pool {
    /// A pool over `inventory`.
    pub fn new(inventory: Inventory) -> Pool {
        let capacity = inventory.blocks.iter().map(|b| b.usable_len()).sum();
        let capacity_v6 = inventory
            .ipv6
            .iter()
            .map(Ipv6Block::usable_len)
            .fold(0u64, u64::saturating_add);
        Pool {
            inventory,
            capacity,
            cursor: 0,
            capacity_v6,
            cursor_v6: v6_cursor_start(capacity_v6),
        }
    }

    /// The blocks and exclusions the pool serves.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// Serves `inventory` from now on; the cursor carries on from where it was (modulo the
    /// new capacity), so rotation survives a grown or shrunk pool.
    pub fn replace_inventory(&mut self, inventory: Inventory) {
        let (cursor, cursor_v6) = (self.cursor, self.cursor_v6);
        *self = Pool::new(inventory);
        self.cursor = cursor.checked_rem(self.capacity).unwrap_or(0);
        self.cursor_v6 = cursor_v6.checked_rem(self.capacity_v6).unwrap_or(0);
    }

    /// Number of addresses the pool could ever hand out (exclusions not subtracted), both
    /// families.
    pub fn capacity(&self) -> u64 {
        self.capacity.saturating_add(self.capacity_v6)
    }

    /// Number of IPv4 addresses the pool could ever hand out.
    pub fn capacity_v4(&self) -> u64 {
        self.capacity
    }

    /// Number of IPv6 addresses the pool could ever hand out (saturating).
    pub fn capacity_v6(&self) -> u64 {
        self.capacity_v6
    }

    /// Whether `ip` belongs to the pool, and with which routing table.
    pub fn locate(&self, ip: Ipv4Addr) -> Option<&AddressBlock> {
        self.inventory.blocks.iter().find(|b| b.is_usable(ip))
    }

    /// Whether `ip`, of either family, is one of the pool's pod addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => self.locate(ip).is_some(),
            IpAddr::V6(ip) => self.locate_v6(ip).is_some(),
        }
    }

    /// The IPv6 prefix `ip` is a pod address of.
    pub fn locate_v6(&self, ip: Ipv6Addr) -> Option<&Ipv6Block> {
        self.inventory.ipv6.iter().find(|b| b.is_usable(ip))
    }

    /// Chooses the next IPv6 address after the IPv6 cursor that `in_use` does not hold.
    /// Returns `None` when there is no IPv6 prefix (or, in theory, when all 2^48 are held).
    pub fn choose_v6(&mut self, in_use: impl Fn(Ipv6Addr) -> bool) -> Option<Choice> {
        for step in 0..self.capacity_v6 {
            // (In u128: cursor and step are each below a capacity that may be near u64's end.)
            let index = ((u128::from(self.cursor_v6) + u128::from(step))
                % u128::from(self.capacity_v6)) as u64;
            let (ip, block) = self.nth_v6(index)?;
            if in_use(ip) || self.inventory.excluded_v6.contains(&ip) {
                continue;
            }
            let choice = Choice {
                ip: IpAddr::V6(ip),
                route_table: None,
                eni_id: block.eni_id.clone(),
            };
            self.cursor_v6 = (index + 1) % self.capacity_v6;
            return Some(choice);
        }
        None
    }

    /// Free IPv6 addresses given the addresses `taken` (held, cooling), counted without
    /// walking the 2^48 addresses of a /80.
    pub fn free_count_v6(&self, taken: impl IntoIterator<Item = Ipv6Addr>) -> u64 {
        let taken: BTreeSet<Ipv6Addr> = taken
            .into_iter()
            .chain(self.inventory.excluded_v6.iter().copied())
            .filter(|ip| self.locate_v6(*ip).is_some())
            .collect();
        self.capacity_v6.saturating_sub(taken.len() as u64)
    }

    fn nth_v6(&self, mut index: u64) -> Option<(Ipv6Addr, &Ipv6Block)> {
        for block in &self.inventory.ipv6 {
            let len = block.usable_len();
            if index < len {
                let first = u128::from(block.cidr.network()) + 1;
                return Some((Ipv6Addr::from(first + u128::from(index)), block));
            }
            index -= len;
        }
        None
    }

    /// Chooses the next free address after the cursor; `in_use` says which are taken.
    /// Returns `None` when every address is taken or excluded.
    pub fn choose(&mut self, in_use: impl Fn(Ipv4Addr) -> bool) -> Option<Choice> {
        if self.capacity == 0 {
            return None;
        }
        for step in 0..self.capacity {
            let index = (self.cursor + step) % self.capacity;
            let (ip, block) = self.nth(index)?;
            if self.inventory.excluded.contains(&ip) || in_use(ip) {
                continue;
            }
            let choice = Choice {
                ip: IpAddr::V4(ip),
                route_table: block.route_table,
                eni_id: block.eni_id.clone(),
            };
            self.cursor = index + 1;
            return Some(choice);
        }
        None
    }

    /// The free IPv4 addresses given `in_use`, blocks in order (not excluded, not in use).
    fn free_ipv4<'a>(
        &'a self,
        in_use: impl Fn(Ipv4Addr) -> bool + 'a,
    ) -> impl Iterator<Item = Ipv4Addr> + 'a {
        self.inventory
            .blocks
            .iter()
            .flat_map(|block| {
                let first = u32::from(block.first_usable());
                (0..block.usable_len())
                    .filter_map(move |i| u32::try_from(i).ok().and_then(|i| first.checked_add(i)))
            })
            .map(Ipv4Addr::from)
            .filter(move |ip| !self.inventory.excluded.contains(ip) && !in_use(*ip))
    }

    /// Whether any IPv4 address is free given `in_use` (stops at the first).
    pub fn has_free(&self, in_use: impl Fn(Ipv4Addr) -> bool) -> bool {
        self.free_ipv4(in_use).next().is_some()
    }

    /// Free IPv4 addresses given `in_use` (for STATUS and introspection).
    pub fn free_count(&self, in_use: impl Fn(Ipv4Addr) -> bool) -> u64 {
        self.free_ipv4(in_use).count() as u64
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

/// At most 2^56 addresses of one IPv6 prefix are handed out.
const USABLE_V6_BITS: u32 = 56;

impl Ipv6Block {
    /// How many pod addresses the prefix holds: all but its first.
    pub fn usable_len(&self) -> u64 {
        let bits = 128 - u32::from(self.cidr.prefix_len());
        // A prefix wider than 2^56 addresses (a static /64; EC2 delegates /80s) is served
        // from its first 2^56, so the pool's sum over many prefixes stays far from u64's end.
        let total = 1u64 << bits.min(USABLE_V6_BITS);
        total - 1
    }

    /// Whether `ip` is one of the prefix's pod addresses.
    pub fn is_usable(&self, ip: Ipv6Addr) -> bool {
        self.cidr.contains(&ip) && ip != self.cidr.network()
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

    /// The first and last of the block's pod addresses.
    pub fn usable_bounds(&self) -> (u32, u32) {
        let trim = u32::from(self.trimmed());
        (
            u32::from(self.cidr.network()) + trim,
            u32::from(self.cidr.broadcast()) - trim,
        )
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
            ipv6: Vec::new(),
            exclude_v6: Vec::new(),
        });
        Pool::new(provider.inventory())
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// The IPv4 address `p` hands out next.
    fn next(p: &mut Pool, in_use: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
        p.choose(in_use).map(|c| match c.ip {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(ip) => panic!("an IPv4 pool handed out {ip}"),
        })
    }

    #[test]
    fn skips_network_broadcast_and_excluded_addresses() {
        let mut p = pool(&["10.0.0.0/30"], &[]);
        assert_eq!(p.capacity(), 2);
        assert_eq!(next(&mut p, |_| false).unwrap(), ip("10.0.0.1"));
        assert_eq!(next(&mut p, |_| false).unwrap(), ip("10.0.0.2"));
        let mut p = pool(&["10.0.0.0/29"], &["10.0.0.1"]);
        assert_eq!(next(&mut p, |_| false).unwrap(), ip("10.0.0.2"));
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
        let a = next(&mut p, |i| used.borrow().contains(&i)).unwrap();
        used.borrow_mut().insert(a);
        let b = next(&mut p, |i| used.borrow().contains(&i)).unwrap();
        used.borrow_mut().remove(&a);
        let c = next(&mut p, |i| used.borrow().contains(&i)).unwrap();
        assert_eq!((a, b, c), (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")));
    }

    #[test]
    fn exhausts_then_reports_none_and_counts_free() {
        let mut p = pool(&["10.0.0.0/30", "10.0.1.0/30"], &["10.0.1.2"]);
        let mut used = BTreeSet::new();
        while let Some(c) = next(&mut p, |i| used.contains(&i)) {
            assert!(used.insert(c), "{c} handed out twice");
        }
        assert_eq!(used.len(), 3);
        assert_eq!(p.free_count(|i| used.contains(&i)), 0);
        used.remove(&ip("10.0.0.2"));
        assert_eq!(p.free_count(|i| used.contains(&i)), 1);
        assert_eq!(next(&mut p, |i| used.contains(&i)).unwrap(), ip("10.0.0.2"));
    }
}

#[cfg(test)]
mod v6_tests {
    use super::*;

    fn v6_pool(prefixes: &[&str]) -> Pool {
        Pool::new(Inventory {
            ipv6: prefixes
                .iter()
                .map(|p| Ipv6Block {
                    cidr: p.parse().unwrap(),
                    eni_id: Some("eni-primary".into()),
                })
                .collect(),
            ..Inventory::default()
        })
    }

    fn v6(choice: Choice) -> Ipv6Addr {
        match choice.ip {
            IpAddr::V6(ip) => ip,
            IpAddr::V4(ip) => panic!("an IPv6 pool handed out {ip}"),
        }
    }

    #[test]
    fn a_slash_80_serves_2_to_the_48_minus_one_without_walking_it() {
        let mut p = v6_pool(&["2600:1f14:1:2:3::/80"]);
        assert_eq!(p.capacity(), (1u64 << 48) - 1);
        assert!(p.choose(|_| false).is_none(), "no IPv4 blocks");
        let prefix: Ipv6Net = "2600:1f14:1:2:3::/80".parse().unwrap();
        let mut held = BTreeSet::new();
        for _ in 0..1000 {
            let choice = p.choose_v6(|ip| held.contains(&ip)).unwrap();
            assert_eq!(choice.route_table, None, "IPv6 pods route through main");
            assert_eq!(choice.eni_id.as_deref(), Some("eni-primary"));
            let ip = v6(choice);
            assert!(prefix.contains(&ip) && ip != prefix.network(), "{ip}");
            assert!(held.insert(ip), "{ip} handed out twice");
        }
        assert_eq!(
            p.free_count_v6(held.iter().copied()),
            (1u64 << 48) - 1 - 1000
        );
        // Addresses outside the prefix do not count as taken.
        let outside: Ipv6Addr = "2600:1f14:1:2:4::1".parse().unwrap();
        assert_eq!(
            p.free_count_v6([outside, prefix.network()]),
            (1u64 << 48) - 1
        );
        assert!(p.contains(IpAddr::V6(*held.iter().next().unwrap())));
        assert!(!p.contains(IpAddr::V6(outside)));
        assert!(!p.contains(IpAddr::V6(prefix.network())));
    }

    #[test]
    fn the_v6_cursor_skips_held_addresses_and_wraps_past_the_prefix_end() {
        let mut p = v6_pool(&["fd00::/126"]);
        assert_eq!(p.capacity(), 3);
        let mut held = BTreeSet::new();
        while let Some(choice) = p.choose_v6(|ip| held.contains(&ip)) {
            assert!(held.insert(v6(choice)));
        }
        let all: Vec<String> = held.iter().map(ToString::to_string).collect();
        assert_eq!(
            all,
            ["fd00::1", "fd00::2", "fd00::3"],
            "never the prefix's ::0"
        );
        assert_eq!(p.free_count_v6(held.iter().copied()), 0);
        held.remove(&"fd00::2".parse().unwrap());
        assert_eq!(
            v6(p.choose_v6(|ip| held.contains(&ip)).unwrap()).to_string(),
            "fd00::2"
        );
    }

    #[test]
    fn the_v6_cursor_starts_from_the_clock_so_a_restart_moves_on() {
        let first = v6_pool(&["2600::/80"]).cursor_v6;
        std::thread::sleep(std::time::Duration::from_millis(5));
        let second = v6_pool(&["2600::/80"]).cursor_v6;
        assert!(second >= first + 5 * 1024, "{first} then {second}");
        // The cursor survives an inventory refresh.
        let mut p = v6_pool(&["2600::/80"]);
        let before = p.cursor_v6;
        p.replace_inventory(p.inventory().clone());
        assert_eq!(p.cursor_v6, before);
    }

    #[test]
    fn a_static_ipv6_pool_hands_out_each_address_but_the_first_and_the_excluded() {
        let provider = StaticProvider::new(&StaticPool {
            cidrs: Vec::new(),
            exclude: Vec::new(),
            ipv6: vec!["fd00:88::/126".parse().unwrap()],
            exclude_v6: vec!["fd00:88::2".parse().unwrap()],
        });
        assert_eq!(provider.view().family, IpFamily::Ipv6);
        let mut p = Pool::new(provider.inventory());
        let mut used = BTreeSet::new();
        while let Some(choice) = p.choose_v6(|ip| used.contains(&ip)) {
            assert_eq!(choice.eni_id, None, "a static prefix is on no ENI");
            assert!(used.insert(v6(choice)), "handed out twice");
        }
        let handed: Vec<String> = used.iter().map(ToString::to_string).collect();
        assert_eq!(handed, ["fd00:88::1", "fd00:88::3"]);
        assert_eq!(p.free_count_v6(used.iter().copied()), 0);
        used.remove(&"fd00:88::3".parse().unwrap());
        assert_eq!(
            p.free_count_v6(used.iter().copied()),
            1,
            "the excluded address is never free"
        );
    }

    #[test]
    fn a_static_pool_of_both_families_is_dual_stack_and_serves_each_family_apart() {
        let provider = StaticProvider::new(&StaticPool {
            cidrs: vec!["10.9.0.0/30".parse().unwrap()],
            exclude: Vec::new(),
            ipv6: vec!["fd00:99::/126".parse().unwrap()],
            exclude_v6: Vec::new(),
        });
        let family = provider.view().family;
        assert_eq!(family, IpFamily::Dual);
        assert!(family.has_ipv4() && family.has_ipv6());
        assert!(!IpFamily::Ipv4.has_ipv6() && !IpFamily::Ipv6.has_ipv4());
        let mut p = Pool::new(provider.inventory());
        // Both usable IPv4 addresses and the three IPv6 ones: the families do not share a cursor.
        assert_eq!(p.capacity(), 2 + 3);
        assert_eq!(p.choose(|_| false).unwrap().ip.to_string(), "10.9.0.1");
        let second = v6(p.choose_v6(|_| false).unwrap());
        assert!(p.locate_v6(second).is_some(), "{second} is of the /126");
        assert!(p.contains("10.9.0.2".parse().unwrap()));
        assert!(p.contains("fd00:99::3".parse().unwrap()));
        // The configuration's spelling, both ways.
        let dual: IpFamily = serde_json::from_str("\"dual-stack\"").unwrap();
        assert_eq!(dual, IpFamily::Dual);
        assert_eq!(serde_json::to_string(&dual).unwrap(), "\"dual\"");
        assert_eq!(dual.to_string(), "dual");
    }

    #[test]
    fn many_static_64s_neither_overflow_the_pool_nor_its_cursor() {
        let prefixes: Vec<String> = (0..300).map(|i| format!("fd00:{i:x}::/64")).collect();
        let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        let mut p = v6_pool(&refs);
        assert_eq!(p.capacity(), u64::MAX, "saturated, not wrapped");
        let first = v6(p.choose_v6(|_| false).expect("an address"));
        let second = v6(p.choose_v6(|ip| ip == first).expect("another"));
        assert_ne!(first, second);
    }
}
