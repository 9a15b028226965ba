//! Address bookkeeping of one subnet: which IPv4 addresses, /28 prefixes, IPv6 addresses and
//! /80 prefixes are taken and by which ENI, AWS's reserved addresses, and how free ones are
//! chosen.
//!
//! Every operation first *plans* (choosing addresses against the pool plus what the same
//! request already chose) and only then claims, so a request that fails half-way changes
//! nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::error::{Ec2Error, Ec2Result};
use crate::rng::SeededRng;
use crate::types::count;

/// How the model picks the addresses and prefixes that EC2 would choose itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AllocationPolicy {
    /// The lowest free address (after the reserved ones) and the lowest free aligned prefix.
    /// Easy to predict in tests.
    #[default]
    LowestFree,
    /// A position drawn from the model's seeded generator, then the next free one upwards
    /// (wrapping). Spreads addresses like EC2 does, so subnets fragment as in real life,
    /// while staying reproducible for a given seed.
    Seeded,
}

/// Addresses in an IPv4 /28 prefix.
pub const IPV4_PREFIX_SIZE: u32 = 16;
/// Prefix length of delegated IPv4 prefixes.
pub const IPV4_PREFIX_LEN: u8 = 28;
/// Prefix length of delegated IPv6 prefixes.
pub const IPV6_PREFIX_LEN: u8 = 80;
/// Addresses in an IPv6 /80 prefix (48 host bits), as an offset span inside a /64.
pub(crate) const IPV6_PREFIX_SPAN: u64 = 1 << 48;
/// /80 prefixes in a /64.
const IPV6_PREFIXES_PER_SUBNET: u64 = 1 << 16;

/// What an IPv4 address in a subnet is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ipv4Use {
    /// A primary or secondary address.
    Address,
    /// Part of a /28 prefix starting at this offset.
    Prefix(u32),
}

/// Why a specific address or prefix cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Conflict {
    /// Outside the subnet's CIDR.
    Outside,
    /// One of AWS's reserved addresses (or, for prefixes, overlapping them).
    Reserved,
    /// Not a /28 (/80) or not aligned to its size.
    BadPrefix,
    /// Used by this ENI, as an address (`prefix == false`) or inside a prefix.
    InUse { eni: String, prefix: bool },
    /// Asked for twice in the same request.
    Duplicate,
}

/// IPv4 bookkeeping of one subnet, by offset from the network address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ipv4Pool {
    cidr: Ipv4Net,
    used: BTreeMap<u32, (String, Ipv4Use)>,
}

impl Ipv4Pool {
    /// An empty pool for a /16../28 CIDR.
    pub(crate) fn new(cidr: Ipv4Net) -> Self {
        Self {
            cidr: cidr.trunc(),
            used: BTreeMap::new(),
        }
    }

    fn size(&self) -> u32 {
        // Subnets are /16../28, so this never overflows.
        1u32 << (32 - u32::from(self.cidr.prefix_len()))
    }

    /// AWS reserves the network address, .1 (router), .2 (DNS), .3 (future use) and the
    /// broadcast address of every subnet.
    pub(crate) fn is_reserved(&self, offset: u32) -> bool {
        offset < 4 || offset == self.size() - 1
    }

    /// AvailableIpAddressCount: size − 5 − addresses in use (a prefix uses 16).
    pub(crate) fn available(&self) -> u32 {
        self.size() - 5 - count(self.used.len())
    }

    pub(crate) fn offset(&self, address: Ipv4Addr) -> Option<u32> {
        self.cidr
            .contains(&address)
            .then(|| u32::from(address) - u32::from(self.cidr.network()))
    }

    pub(crate) fn address(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + offset)
    }

    pub(crate) fn prefix(&self, start: u32) -> Ipv4Net {
        // An aligned /28 inside the subnet is always a valid network.
        Ipv4Net::new(self.address(start), IPV4_PREFIX_LEN)
            .unwrap_or_else(|_| Ipv4Net::from(self.address(start)))
    }

    /// Who holds the address at `offset`, if anyone.
    pub(crate) fn holder(&self, offset: u32) -> Option<&(String, Ipv4Use)> {
        self.used.get(&offset)
    }

    /// Every used offset and its holder (for invariant checks).
    pub(crate) fn used(&self) -> &BTreeMap<u32, (String, Ipv4Use)> {
        &self.used
    }

    pub(crate) fn claim_address(&mut self, offset: u32, eni: &str) {
        self.used.insert(offset, (eni.to_owned(), Ipv4Use::Address));
    }

    pub(crate) fn claim_prefix(&mut self, start: u32, eni: &str) {
        for offset in start..start + IPV4_PREFIX_SIZE {
            self.used
                .insert(offset, (eni.to_owned(), Ipv4Use::Prefix(start)));
        }
    }

    pub(crate) fn release_address(&mut self, offset: u32) {
        self.used.remove(&offset);
    }

    pub(crate) fn release_prefix(&mut self, start: u32) {
        for offset in start..start + IPV4_PREFIX_SIZE {
            self.used.remove(&offset);
        }
    }

    /// Start a plan against the current state of the pool.
    pub(crate) fn plan(&self) -> Ipv4Plan<'_> {
        Ipv4Plan {
            pool: self,
            taken: BTreeSet::new(),
        }
    }
}

/// Addresses and prefixes chosen for one request, not yet claimed.
pub(crate) struct Ipv4Plan<'a> {
    pool: &'a Ipv4Pool,
    taken: BTreeSet<u32>,
}

impl Ipv4Plan<'_> {
    fn is_free(&self, offset: u32) -> bool {
        !self.pool.is_reserved(offset)
            && !self.pool.used.contains_key(&offset)
            && !self.taken.contains(&offset)
    }

    fn free_count(&self) -> u32 {
        self.pool.available() - count(self.taken.len())
    }

    /// Check a specific address; on success return its offset (not yet taken).
    pub(crate) fn check_address(&self, address: Ipv4Addr) -> Result<u32, Conflict> {
        let offset = self.pool.offset(address).ok_or(Conflict::Outside)?;
        self.check_free(offset)?;
        Ok(offset)
    }

    /// Whether the address at `offset` may be taken: not reserved, not already chosen by this
    /// request, not held by an ENI.
    fn check_free(&self, offset: u32) -> Result<(), Conflict> {
        if self.pool.is_reserved(offset) {
            return Err(Conflict::Reserved);
        }
        if self.taken.contains(&offset) {
            return Err(Conflict::Duplicate);
        }
        if let Some((eni, usage)) = self.pool.holder(offset) {
            return Err(Conflict::InUse {
                eni: eni.clone(),
                prefix: matches!(usage, Ipv4Use::Prefix(_)),
            });
        }
        Ok(())
    }

    /// Check a specific /28; on success return its start offset (not yet taken).
    pub(crate) fn check_prefix(&self, prefix: Ipv4Net) -> Result<u32, Conflict> {
        if prefix.prefix_len() != IPV4_PREFIX_LEN || prefix.addr() != prefix.network() {
            return Err(Conflict::BadPrefix);
        }
        let start = self
            .pool
            .offset(prefix.network())
            .ok_or(Conflict::Outside)?;
        if self.pool.offset(prefix.broadcast()).is_none() {
            return Err(Conflict::Outside);
        }
        for offset in start..start + IPV4_PREFIX_SIZE {
            self.check_free(offset)?;
        }
        Ok(start)
    }

    /// Mark a checked address as chosen by this request.
    pub(crate) fn take_address(&mut self, offset: u32) {
        self.taken.insert(offset);
    }

    /// Mark a checked prefix as chosen by this request.
    pub(crate) fn take_prefix(&mut self, start: u32) {
        self.taken.extend(start..start + IPV4_PREFIX_SIZE);
    }

    /// Choose `n` free addresses, or fail with InsufficientFreeAddressesInSubnet.
    pub(crate) fn pick_addresses(
        &mut self,
        n: u32,
        policy: AllocationPolicy,
        rng: &mut SeededRng,
    ) -> Ec2Result<Vec<u32>> {
        if self.free_count() < n {
            return Err(Ec2Error::insufficient_addresses());
        }
        let size = self.pool.size();
        let mut picked = Vec::new();
        let mut cursor = 0;
        for _ in 0..n {
            if policy == AllocationPolicy::Seeded {
                cursor = u32::try_from(rng.below(u64::from(size))).unwrap_or(0);
            }
            // free_count() >= n guarantees a free offset exists, so the scan finds one.
            let found = (0..size)
                .map(|step| (cursor + step) % size)
                .find(|&offset| self.is_free(offset));
            let Some(offset) = found else {
                return Err(Ec2Error::insufficient_addresses());
            };
            self.taken.insert(offset);
            picked.push(offset);
            cursor = offset + 1;
        }
        Ok(picked)
    }

    /// Choose `n` free aligned /28 prefixes. Fails with InsufficientCidrBlocks when enough
    /// single addresses are free but not as whole aligned blocks (fragmentation), and with
    /// InsufficientFreeAddressesInSubnet when not even the addresses are there.
    pub(crate) fn pick_prefixes(
        &mut self,
        n: u32,
        policy: AllocationPolicy,
        rng: &mut SeededRng,
    ) -> Ec2Result<Vec<u32>> {
        let blocks = self.pool.size() / IPV4_PREFIX_SIZE;
        let mut picked = Vec::new();
        let mut cursor = 0;
        for _ in 0..n {
            if policy == AllocationPolicy::Seeded {
                cursor = u32::try_from(rng.below(u64::from(blocks))).unwrap_or(0);
            }
            let found = (0..blocks)
                .map(|step| (cursor + step) % blocks)
                .find(|&block| {
                    let start = block * IPV4_PREFIX_SIZE;
                    (start..start + IPV4_PREFIX_SIZE).all(|offset| self.is_free(offset))
                });
            let Some(block) = found else {
                let needed = n.saturating_mul(IPV4_PREFIX_SIZE);
                let free = self.free_count() + count(picked.len()) * IPV4_PREFIX_SIZE;
                return Err(if free >= needed {
                    Ec2Error::insufficient_cidr_blocks()
                } else {
                    Ec2Error::insufficient_addresses()
                });
            };
            let start = block * IPV4_PREFIX_SIZE;
            self.take_prefix(start);
            picked.push(start);
            cursor = block + 1;
        }
        Ok(picked)
    }
}

/// IPv6 bookkeeping of one /64, by offset (the low 64 bits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ipv6Pool {
    cidr: Ipv6Net,
    addresses: BTreeMap<u64, String>,
    prefixes: BTreeMap<u64, String>,
}

impl Ipv6Pool {
    /// An empty pool for a /64.
    pub(crate) fn new(cidr: Ipv6Net) -> Self {
        Self {
            cidr: cidr.trunc(),
            addresses: BTreeMap::new(),
            prefixes: BTreeMap::new(),
        }
    }

    /// AWS reserves the first four and the last address of IPv6 subnets too.
    fn is_reserved(offset: u64) -> bool {
        offset < 4 || offset == u64::MAX
    }

    fn block_of(offset: u64) -> u64 {
        offset & !(IPV6_PREFIX_SPAN - 1)
    }

    pub(crate) fn offset(&self, address: Ipv6Addr) -> Option<u64> {
        // A /64 leaves exactly the low 64 bits as offset; truncation is the point.
        self.cidr
            .contains(&address)
            .then(|| (u128::from(address) - u128::from(self.cidr.network())) as u64)
    }

    pub(crate) fn address(&self, offset: u64) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.cidr.network()) + u128::from(offset))
    }

    pub(crate) fn prefix(&self, start: u64) -> Ipv6Net {
        Ipv6Net::new(self.address(start), IPV6_PREFIX_LEN)
            .unwrap_or_else(|_| Ipv6Net::from(self.address(start)))
    }

    /// Used address offsets and their ENI (for invariant checks).
    pub(crate) fn addresses(&self) -> &BTreeMap<u64, String> {
        &self.addresses
    }

    /// Used /80 start offsets and their ENI (for invariant checks).
    pub(crate) fn prefixes(&self) -> &BTreeMap<u64, String> {
        &self.prefixes
    }

    pub(crate) fn claim_address(&mut self, offset: u64, eni: &str) {
        self.addresses.insert(offset, eni.to_owned());
    }

    pub(crate) fn claim_prefix(&mut self, start: u64, eni: &str) {
        self.prefixes.insert(start, eni.to_owned());
    }

    pub(crate) fn release_address(&mut self, offset: u64) {
        self.addresses.remove(&offset);
    }

    pub(crate) fn release_prefix(&mut self, start: u64) {
        self.prefixes.remove(&start);
    }

    /// Start a plan against the current state of the pool.
    pub(crate) fn plan(&self) -> Ipv6Plan<'_> {
        Ipv6Plan {
            pool: self,
            taken_addresses: BTreeSet::new(),
            taken_blocks: BTreeSet::new(),
        }
    }
}

/// IPv6 addresses and prefixes chosen for one request, not yet claimed.
pub(crate) struct Ipv6Plan<'a> {
    pool: &'a Ipv6Pool,
    taken_addresses: BTreeSet<u64>,
    taken_blocks: BTreeSet<u64>,
}

impl Ipv6Plan<'_> {
    fn address_conflict(&self, offset: u64) -> Option<Conflict> {
        let block = Ipv6Pool::block_of(offset);
        if Ipv6Pool::is_reserved(offset) {
            Some(Conflict::Reserved)
        } else if self.taken_addresses.contains(&offset) || self.taken_blocks.contains(&block) {
            Some(Conflict::Duplicate)
        } else if let Some(eni) = self.pool.addresses.get(&offset) {
            Some(Conflict::InUse {
                eni: eni.clone(),
                prefix: false,
            })
        } else {
            self.pool.prefixes.get(&block).map(|eni| Conflict::InUse {
                eni: eni.clone(),
                prefix: true,
            })
        }
    }

    fn block_conflict(&self, start: u64) -> Option<Conflict> {
        let end = start + (IPV6_PREFIX_SPAN - 1);
        if Ipv6Pool::is_reserved(start) || Ipv6Pool::is_reserved(end) {
            return Some(Conflict::Reserved);
        }
        if self.taken_blocks.contains(&start)
            || self.taken_addresses.range(start..=end).next().is_some()
        {
            return Some(Conflict::Duplicate);
        }
        if let Some(eni) = self.pool.prefixes.get(&start) {
            return Some(Conflict::InUse {
                eni: eni.clone(),
                prefix: true,
            });
        }
        self.pool
            .addresses
            .range(start..=end)
            .next()
            .map(|(_, eni)| Conflict::InUse {
                eni: eni.clone(),
                prefix: false,
            })
    }

    /// Check a specific address; on success return its offset (not yet taken).
    pub(crate) fn check_address(&self, address: Ipv6Addr) -> Result<u64, Conflict> {
        let offset = self.pool.offset(address).ok_or(Conflict::Outside)?;
        match self.address_conflict(offset) {
            Some(conflict) => Err(conflict),
            None => Ok(offset),
        }
    }

    /// Check a specific /80; on success return its start offset (not yet taken).
    pub(crate) fn check_prefix(&self, prefix: Ipv6Net) -> Result<u64, Conflict> {
        if prefix.prefix_len() != IPV6_PREFIX_LEN || prefix.addr() != prefix.network() {
            return Err(Conflict::BadPrefix);
        }
        let start = self
            .pool
            .offset(prefix.network())
            .ok_or(Conflict::Outside)?;
        match self.block_conflict(start) {
            Some(conflict) => Err(conflict),
            None => Ok(start),
        }
    }

    /// Mark a checked address as chosen by this request.
    pub(crate) fn take_address(&mut self, offset: u64) {
        self.taken_addresses.insert(offset);
    }

    /// Mark a checked prefix as chosen by this request.
    pub(crate) fn take_prefix(&mut self, start: u64) {
        self.taken_blocks.insert(start);
    }

    /// Choose `n` free addresses (a /64 never runs out in practice).
    pub(crate) fn pick_addresses(
        &mut self,
        n: u32,
        policy: AllocationPolicy,
        rng: &mut SeededRng,
    ) -> Ec2Result<Vec<u64>> {
        let mut picked = Vec::new();
        let mut cursor = 4;
        for _ in 0..n {
            if policy == AllocationPolicy::Seeded {
                cursor = rng.next_u64();
            }
            // Used addresses are a vanishing fraction of 2^64, so the walk ends quickly; the
            // bound only guards against a pathological state.
            let found = (0..1_000_000u64)
                .map(|step| cursor.wrapping_add(step))
                .find(|&offset| self.address_conflict(offset).is_none());
            let Some(offset) = found else {
                return Err(Ec2Error::insufficient_addresses());
            };
            self.taken_addresses.insert(offset);
            picked.push(offset);
            cursor = offset.wrapping_add(1);
        }
        Ok(picked)
    }

    /// Choose `n` free aligned /80 prefixes. The first and last /80 of the /64 hold
    /// reserved addresses and are never chosen.
    pub(crate) fn pick_prefixes(
        &mut self,
        n: u32,
        policy: AllocationPolicy,
        rng: &mut SeededRng,
    ) -> Ec2Result<Vec<u64>> {
        let mut picked = Vec::new();
        let mut block = 1u64;
        for _ in 0..n {
            if policy == AllocationPolicy::Seeded {
                block = rng.below(IPV6_PREFIXES_PER_SUBNET);
            }
            let found = (0..IPV6_PREFIXES_PER_SUBNET)
                .map(|step| ((block + step) % IPV6_PREFIXES_PER_SUBNET) * IPV6_PREFIX_SPAN)
                .find(|&start| self.block_conflict(start).is_none());
            let Some(start) = found else {
                return Err(Ec2Error::insufficient_cidr_blocks());
            };
            self.taken_blocks.insert(start);
            picked.push(start);
            block = start / IPV6_PREFIX_SPAN + 1;
        }
        Ok(picked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net4(s: &str) -> Ipv4Net {
        s.parse().expect("valid CIDR")
    }

    #[test]
    fn reserved_addresses_are_never_picked_and_counted_out() {
        let pool = Ipv4Pool::new(net4("10.0.0.0/28"));
        assert_eq!(pool.available(), 11);
        let mut rng = SeededRng::new(1);
        let mut plan = pool.plan();
        let picked = plan
            .pick_addresses(11, AllocationPolicy::LowestFree, &mut rng)
            .expect("11 usable");
        assert_eq!(picked, (4..15).collect::<Vec<u32>>());
        let err = plan
            .pick_addresses(1, AllocationPolicy::LowestFree, &mut rng)
            .expect_err("exhausted");
        assert_eq!(
            err.code,
            crate::error::codes::INSUFFICIENT_FREE_ADDRESSES_IN_SUBNET
        );
    }

    #[test]
    fn seeded_policy_stays_in_usable_range() {
        let pool = Ipv4Pool::new(net4("10.0.0.0/27"));
        let mut rng = SeededRng::new(99);
        let mut plan = pool.plan();
        let picked = plan
            .pick_addresses(27, AllocationPolicy::Seeded, &mut rng)
            .expect("27 usable in a /27");
        let unique: BTreeSet<u32> = picked.iter().copied().collect();
        assert_eq!(unique.len(), 27);
        assert!(picked.iter().all(|&o| (4..31).contains(&o)));
    }

    #[test]
    fn prefixes_avoid_reserved_blocks_and_detect_fragmentation() {
        let mut pool = Ipv4Pool::new(net4("10.0.0.0/26"));
        let mut rng = SeededRng::new(1);
        // Blocks 0 and 3 hold reserved addresses; only .16/28 and .32/28 can be prefixes.
        let picked = pool
            .plan()
            .pick_prefixes(2, AllocationPolicy::LowestFree, &mut rng)
            .expect("two clean blocks");
        assert_eq!(picked, vec![16, 32]);
        // One address in each middle block: 57 addresses free, no whole block.
        pool.claim_address(20, "eni-a");
        pool.claim_address(40, "eni-a");
        let err = pool
            .plan()
            .pick_prefixes(1, AllocationPolicy::LowestFree, &mut rng)
            .expect_err("fragmented");
        assert_eq!(err.code, crate::error::codes::INSUFFICIENT_CIDR_BLOCKS);
    }

    #[test]
    fn explicit_prefix_must_be_aligned_and_free() {
        let mut pool = Ipv4Pool::new(net4("10.0.0.0/24"));
        pool.claim_address(33, "eni-a");
        let plan = pool.plan();
        assert_eq!(plan.check_prefix(net4("10.0.0.16/28")), Ok(16));
        assert_eq!(
            plan.check_prefix(net4("10.0.0.8/28")),
            Err(Conflict::BadPrefix)
        );
        assert_eq!(
            plan.check_prefix(net4("10.0.0.0/27")),
            Err(Conflict::BadPrefix)
        );
        assert_eq!(
            plan.check_prefix(net4("10.0.0.0/28")),
            Err(Conflict::Reserved)
        );
        assert_eq!(
            plan.check_prefix(net4("10.0.0.32/28")),
            Err(Conflict::InUse {
                eni: "eni-a".into(),
                prefix: false
            })
        );
        assert_eq!(
            plan.check_prefix(net4("10.0.1.0/28")),
            Err(Conflict::Outside)
        );
    }

    #[test]
    fn ipv6_addresses_and_prefixes_do_not_overlap() {
        let mut pool = Ipv6Pool::new("2600:1f14:1:200::/64".parse().expect("cidr"));
        let mut rng = SeededRng::new(3);
        let addresses = pool
            .plan()
            .pick_addresses(3, AllocationPolicy::LowestFree, &mut rng)
            .expect("addresses");
        assert_eq!(addresses, vec![4, 5, 6]);
        for &offset in &addresses {
            pool.claim_address(offset, "eni-a");
        }
        let prefixes = pool
            .plan()
            .pick_prefixes(1, AllocationPolicy::LowestFree, &mut rng)
            .expect("prefix");
        // Block 0 holds the reserved and the used addresses; the first /80 is block 1.
        assert_eq!(prefixes, vec![IPV6_PREFIX_SPAN]);
        assert_eq!(
            pool.prefix(IPV6_PREFIX_SPAN).to_string(),
            "2600:1f14:1:200:1::/80"
        );
        pool.claim_prefix(IPV6_PREFIX_SPAN, "eni-b");
        let inside = pool.address(IPV6_PREFIX_SPAN + 7);
        assert_eq!(
            pool.plan().check_address(inside),
            Err(Conflict::InUse {
                eni: "eni-b".into(),
                prefix: true
            })
        );
    }
}
