//! Write wasmcni plugins in Rust.
//!
//! A plugin is a `cdylib` crate that depends on this one with exactly one feature — its kind:
//! `allocator`, `tagger` or `policy` — implements that module's `Guest` trait and exports it:
//!
//! ```ignore
//! use wasmcni_plugin_sdk::allocator::{lowest_free, Guest, IpAddress, Pod};
//!
//! struct Lowest;
//!
//! impl Guest for Lowest {
//!     fn init() -> Result<(), String> {
//!         Ok(()) // check the settings here: an error refuses the load
//!     }
//!     fn allocate(_pod: Pod) -> Result<IpAddress, String> {
//!         lowest_free().map(IpAddress::from)
//!     }
//!     fn plan() -> Result<(), String> {
//!         Ok(())
//!     }
//! }
//!
//! wasmcni_plugin_sdk::allocator::export_allocator!(Lowest);
//! ```
//!
//! Build it for `wasm32-unknown-unknown` and turn it into a component with
//! `cargo run --release -p wasmcni-plugin-build -- <your plugin workspace>`; the component then
//! imports only the interfaces your code calls, which is what the cluster configuration must
//! grant (`wasmcni-host audit` shows both).
//!
//! Keep the decisions in pure functions over plain data ([`allocator::Pool`], the records of
//! the bindings): they run in ordinary `cargo test` on the build machine, where the host
//! imports are not available (calling one there panics).

#![warn(missing_docs)]

#[cfg(any(
    test,
    all(
        target_arch = "wasm32",
        not(target_feature = "atomics"),
        feature = "call-arena"
    )
))]
mod call_arena;

/// Calls allocate from an arena in the module's static memory first, so a call that fits in it
/// never grows linear memory (see `call_arena.rs`). Feature `call-arena`, on by default; not on
/// wasm32 with threads (`atomics`), where the arena's bump would race.
#[cfg(all(
    target_arch = "wasm32",
    not(target_feature = "atomics"),
    feature = "call-arena"
))]
#[global_allocator]
static ALLOCATOR: call_arena::CallArena = call_arena::CallArena::new();

/// Pure IPv4 helpers over the WIT representation (`u32`, most significant byte first).
pub mod net {
    use core::net::Ipv4Addr;

    /// The `u32` form of `ip`.
    pub fn to_u32(ip: Ipv4Addr) -> u32 {
        u32::from(ip)
    }

    /// The address of the `u32` form.
    pub fn to_ip(ip: u32) -> Ipv4Addr {
        Ipv4Addr::from(ip)
    }

    /// Parses `a.b.c.d` into the `u32` form.
    pub fn parse_ip(text: &str) -> Result<u32, String> {
        text.trim()
            .parse::<Ipv4Addr>()
            .map(u32::from)
            .map_err(|_| format!("{text:?} is not an IPv4 address"))
    }

    /// Parses `a.b.c.d/len` into (network, prefix length); host bits must be zero.
    pub fn parse_cidr(text: &str) -> Result<(u32, u8), String> {
        let (ip, len) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a CIDR (a.b.c.d/len)"))?;
        let network = parse_ip(ip)?;
        let prefix_len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("{text:?}: prefix length must be 0 to 32"))?;
        if network & !mask(prefix_len) != 0 {
            return Err(format!("{text:?} has host bits set"));
        }
        Ok((network, prefix_len))
    }

    /// The netmask of a prefix length.
    pub fn mask(prefix_len: u8) -> u32 {
        match prefix_len {
            0 => 0,
            len => u32::MAX << (32 - u32::from(len.min(32))),
        }
    }

    /// Whether `ip` lies in `network/prefix_len`.
    pub fn contains(network: u32, prefix_len: u8, ip: u32) -> bool {
        ip & mask(prefix_len) == network & mask(prefix_len)
    }

    /// Number of addresses in a prefix of this length.
    pub fn size(prefix_len: u8) -> u64 {
        1u64 << (32 - u32::from(prefix_len.min(32)))
    }

    /// Every address of `network/prefix_len`, in order.
    pub fn addresses(network: u32, prefix_len: u8) -> impl Iterator<Item = u32> {
        let first = u64::from(network & mask(prefix_len));
        (first..first + size(prefix_len)).map(|a| a as u32)
    }
}

/// Reads the plugin's `[plugins.config]` settings through `$config` (the world's `config`
/// module), parsed into any `FromStr` type with an error naming the key and the value.
#[cfg(any(feature = "allocator", feature = "tagger", feature = "policy"))]
macro_rules! settings {
    ($config:path) => {
        /// The setting `key` parsed as `T`; `Ok(None)` when it is not configured.
        pub fn setting<T: core::str::FromStr>(key: &str) -> Result<Option<T>, String> {
            use $config as config;
            match config::get(key) {
                None => Ok(None),
                Some(text) => text.trim().parse().map(Some).map_err(|_| {
                    format!(
                        "config key {key} = {text:?} is not a valid {}",
                        core::any::type_name::<T>()
                    )
                }),
            }
        }
    };
}

/// `Default` for records of a world's `types` (`$types`): the empty pod and pair, the network
/// 0.0.0.0/0, so tests write `Pod { namespace: Some("payments".into()), ..Pod::default() }`.
#[cfg(any(feature = "allocator", feature = "policy"))]
macro_rules! type_defaults {
    ($types:path) => {
        #[allow(clippy::derivable_impls)] // the records are generated; Default is ours
        mod type_defaults {
            use $types as types;

            impl Default for types::Pod {
                /// No namespace or name, empty ids, no annotations or CNI_ARGS.
                fn default() -> Self {
                    types::Pod {
                        namespace: None,
                        name: None,
                        container_id: String::new(),
                        ifname: String::new(),
                        annotations: Vec::new(),
                        cni_args: Vec::new(),
                    }
                }
            }

            impl Default for types::Pair {
                /// An empty key and value.
                fn default() -> Self {
                    types::Pair {
                        key: String::new(),
                        value: String::new(),
                    }
                }
            }

            impl Default for types::Cidr {
                /// 0.0.0.0/0.
                fn default() -> Self {
                    types::Cidr {
                        network: 0,
                        prefix_len: 0,
                    }
                }
            }
        }
    };
}

/// The `allocator-plugin` world: choose each pod's address (`allocate`) and plan the pool (`plan`).
#[cfg(feature = "allocator")]
#[allow(missing_docs)] // some generated items carry no WIT doc comment
pub mod allocator {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "allocator-plugin",
        pub_export_macro: true,
        export_macro_name: "export_allocator",
        default_bindings_module: "wasmcni_plugin_sdk::allocator",
    });

    pub use self::exports::wasmcni::plugin::allocator::Guest;
    pub use self::wasmcni::plugin::eni_ops::NewEni;
    pub use self::wasmcni::plugin::pool_view::{
        BlockOccupancy, Eni, FailureCode, NodeInfo, NodeLimits, ProviderKind, RequestFailure,
        RequestKind, Subnet,
    };
    pub use self::wasmcni::plugin::types::{AddressBlock, BlockKind, Cidr, IpAddress, Pair, Pod};
    pub use self::wasmcni::plugin::{clock, config, eni_ops, kv, log, pool_view, types};

    use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::collections::BTreeSet;

    impl From<Ipv4Addr> for IpAddress {
        fn from(ip: Ipv4Addr) -> IpAddress {
            IpAddress::V4(u32::from(ip))
        }
    }

    impl From<Ipv6Addr> for IpAddress {
        fn from(ip: Ipv6Addr) -> IpAddress {
            let bits = u128::from(ip);
            IpAddress::V6(types::Ipv6 {
                high: (bits >> 64) as u64,
                low: bits as u64,
            })
        }
    }

    impl From<IpAddr> for IpAddress {
        fn from(ip: IpAddr) -> IpAddress {
            match ip {
                IpAddr::V4(ip) => ip.into(),
                IpAddr::V6(ip) => ip.into(),
            }
        }
    }

    impl From<IpAddress> for IpAddr {
        fn from(ip: IpAddress) -> IpAddr {
            match ip {
                IpAddress::V4(ip) => IpAddr::V4(Ipv4Addr::from(ip)),
                IpAddress::V6(ip) => IpAddr::V6(Ipv6Addr::from(
                    (u128::from(ip.high) << 64) | u128::from(ip.low),
                )),
            }
        }
    }

    /// The lowest free address of the first block (in the provider's order) that has one:
    /// the simplest sane answer to `allocate`, from one `pool-view.occupancy` call.
    pub fn lowest_free() -> Result<Ipv4Addr, String> {
        first_free(&pool_view::occupancy())
    }

    /// The lowest free address of the first of `blocks` that has one.
    pub fn first_free(blocks: &[BlockOccupancy]) -> Result<Ipv4Addr, String> {
        blocks
            .iter()
            .find_map(|b| b.lowest_free)
            .map(Ipv4Addr::from)
            .ok_or_else(|| format!("no free address in {} block(s)", blocks.len()))
    }

    settings!(crate::allocator::wasmcni::plugin::config);
    type_defaults!(crate::allocator::wasmcni::plugin::types);

    impl Default for NodeLimits {
        /// All zero: what a node of the static provider has.
        fn default() -> Self {
            NodeLimits {
                max_enis: 0,
                ipv4_per_eni: 0,
                prefix_delegation: false,
                max_pods: 0,
            }
        }
    }

    impl Default for NodeInfo {
        /// A node of the static provider: no instance, zone, VPC or limits.
        fn default() -> Self {
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

    impl Default for Eni {
        /// A secondary ENI with empty ids, no groups or tags, attached just now.
        fn default() -> Self {
            Eni {
                id: String::new(),
                device_number: 0,
                primary: false,
                subnet_id: String::new(),
                subnet_cidr: Cidr::default(),
                security_groups: Vec::new(),
                primary_ip: 0,
                age_ms: 0,
                tags: Vec::new(),
            }
        }
    }

    impl Default for Subnet {
        /// An empty id, 0.0.0.0/0, no free addresses or tags.
        fn default() -> Self {
            Subnet {
                id: String::new(),
                cidr: Cidr::default(),
                free_addresses: 0,
                tags: Vec::new(),
            }
        }
    }

    mod intent;
    pub use intent::{issue_all, Intent};

    /// Everything `pool-view` shows, read once: plain data, so strategy code written against
    /// it is tested natively with hand-built pools. Addresses are `Ipv4Addr`s (the WIT records
    /// it holds — blocks, ENIs, subnets — keep the WIT's `u32` form; [`crate::net`] converts).
    #[derive(Debug, Clone)]
    pub struct Pool {
        /// The node and its instance limits.
        pub node: NodeInfo,
        /// Attached ENIs, by device number.
        pub enis: Vec<Eni>,
        /// Blocks pods may get addresses from, in the provider's order.
        pub blocks: Vec<AddressBlock>,
        /// Addresses pods hold.
        pub in_use: BTreeSet<Ipv4Addr>,
        /// Addresses cooling down after release.
        pub cooling: BTreeSet<Ipv4Addr>,
        /// Addresses never handed out.
        pub excluded: BTreeSet<Ipv4Addr>,
        /// Subnets new ENIs may go to (within the grant).
        pub subnets: Vec<Subnet>,
        /// ENI requests of earlier plans that EC2 (or the daemon) refused lately, newest
        /// first.
        pub failures: Vec<RequestFailure>,
    }

    /// Whether `block` loses its network and broadcast addresses: a static range of /30 or
    /// larger (secondary IPs and delegated prefixes are usable whole).
    fn block_trim(block: &AddressBlock) -> bool {
        block.kind == BlockKind::StaticRange && block.cidr.prefix_len <= 30
    }

    impl Pool {
        /// Reads the pool through `pool-view` (the plugin must be granted it).
        pub fn read() -> Pool {
            Pool {
                node: pool_view::node(),
                enis: pool_view::enis(),
                blocks: pool_view::blocks(),
                in_use: pool_view::in_use()
                    .into_iter()
                    .map(Ipv4Addr::from)
                    .collect(),
                cooling: pool_view::cooling()
                    .into_iter()
                    .map(Ipv4Addr::from)
                    .collect(),
                excluded: pool_view::excluded()
                    .into_iter()
                    .map(Ipv4Addr::from)
                    .collect(),
                subnets: pool_view::subnets(),
                failures: pool_view::failures(),
            }
        }

        /// The pool of a node served by the static provider with these blocks and nothing
        /// held, cooling or excluded: the start of a hand-built pool in a test.
        pub fn of_static(blocks: Vec<AddressBlock>) -> Pool {
            Pool {
                node: NodeInfo::default(),
                enis: Vec::new(),
                blocks,
                in_use: BTreeSet::new(),
                cooling: BTreeSet::new(),
                excluded: BTreeSet::new(),
                subnets: Vec::new(),
                failures: Vec::new(),
            }
        }

        /// Addresses of `block` a pod may ever get: all of a secondary IP or a delegated
        /// prefix; a static range of /30 or larger loses its network and broadcast addresses.
        pub fn usable(block: &AddressBlock) -> impl Iterator<Item = Ipv4Addr> {
            let (first, last) = Self::bounds(block);
            let trim = block_trim(block);
            crate::net::addresses(u32::from(first), block.cidr.prefix_len)
                .map(Ipv4Addr::from)
                .filter(move |ip| Self::is_usable(trim, first, last, *ip))
        }

        /// The first and last address of `block`'s CIDR.
        fn bounds(block: &AddressBlock) -> (Ipv4Addr, Ipv4Addr) {
            let len = block.cidr.prefix_len;
            let network = block.cidr.network & crate::net::mask(len);
            (
                Ipv4Addr::from(network),
                Ipv4Addr::from((u64::from(network) + crate::net::size(len) - 1) as u32),
            )
        }

        fn is_usable(trim: bool, first: Ipv4Addr, last: Ipv4Addr, ip: Ipv4Addr) -> bool {
            !trim || (ip != first && ip != last)
        }

        /// Whether a pod may be given `ip` now (usable somewhere, not held, cooling or excluded).
        pub fn is_free(&self, ip: Ipv4Addr) -> bool {
            !self.in_use.contains(&ip)
                && !self.cooling.contains(&ip)
                && !self.excluded.contains(&ip)
        }

        /// The lowest free address, blocks in the provider's order: what [`lowest_free`]
        /// answers for this pool.
        pub fn lowest_free(&self) -> Result<Ipv4Addr, String> {
            self.blocks
                .iter()
                .find_map(|block| self.free_in(block).next())
                .ok_or_else(|| format!("no free address in {} block(s)", self.blocks.len()))
        }

        /// Each block with how full it is: what `pool-view.occupancy` answers for this pool,
        /// so a strategy's `allocate` over occupancy is tested natively on a hand-built pool.
        pub fn occupancy(&self) -> Vec<BlockOccupancy> {
            self.blocks
                .iter()
                .map(|block| {
                    let usable = Self::usable(block).count() as u32;
                    let free: Vec<Ipv4Addr> = self.free_in(block).collect();
                    BlockOccupancy {
                        block: block.clone(),
                        usable,
                        held: self.held_in(block) as u32,
                        free: free.len() as u32,
                        lowest_free: free.first().copied().map(u32::from),
                    }
                })
                .collect()
        }

        /// The free addresses of `block`, lowest first: one pass over the block, merged with
        /// the (sorted) held, cooling and excluded sets, so each address costs a comparison,
        /// not a lookup in each set (an `allocate` runs on every ADD).
        pub fn free_in<'a>(&'a self, block: &AddressBlock) -> impl Iterator<Item = Ipv4Addr> + 'a {
            let (first, last) = Self::bounds(block);
            let mut taken = [&self.in_use, &self.cooling, &self.excluded]
                .map(|set| set.range(first..=last).copied().peekable());
            Self::usable(block).filter(move |ip| {
                let mut hit = false;
                for set in &mut taken {
                    // Addresses below `ip` were passed (or were not usable): skip them.
                    while set.next_if(|t| t < ip).is_some() {}
                    hit |= set.peek() == Some(ip);
                }
                !hit
            })
        }

        /// How many usable addresses of `block` pods hold (a range of the sorted held set).
        pub fn held_in(&self, block: &AddressBlock) -> usize {
            let (first, last) = Self::bounds(block);
            let trim = block_trim(block);
            self.in_use
                .range(first..=last)
                .filter(|ip| Self::is_usable(trim, first, last, **ip))
                .count()
        }

        /// Free addresses in the whole pool.
        pub fn free_count(&self) -> usize {
            self.blocks.iter().map(|b| self.free_in(b).count()).sum()
        }

        /// The blocks held by the ENI `eni_id`.
        pub fn blocks_of<'a>(&'a self, eni_id: &'a str) -> impl Iterator<Item = &'a AddressBlock> {
            self.blocks
                .iter()
                .filter(move |b| b.eni_id.as_deref() == Some(eni_id))
        }

        /// Whether a plan may change `eni` (assign to it, release from it, delete it): the
        /// primary ENI, or one created for this instance (VPC CNI's ownership tag
        /// [`OWNER_TAG`] naming it). The daemon refuses requests for any other ENI — an
        /// operator's, say — so a strategy that plans only what passes this test has no
        /// request refused for ownership. (The daemon also checks the cluster tag.)
        pub fn may_change(&self, eni: &Eni) -> bool {
            eni.primary
                || eni
                    .tags
                    .iter()
                    .any(|t| t.key == OWNER_TAG && t.value == self.node.instance_id)
        }
    }

    /// The tag naming the instance an ENI was created for (VPC CNI's key, written by the
    /// daemon when it creates an ENI; no plugin may write it).
    pub const OWNER_TAG: &str = "node.k8s.amazonaws.com/instance_id";

    #[cfg(test)]
    mod tests {
        use super::*;

        fn block(network: u32, prefix_len: u8, kind: BlockKind) -> AddressBlock {
            AddressBlock {
                cidr: Cidr {
                    network,
                    prefix_len,
                },
                kind,
                eni_id: None,
                route_table: None,
            }
        }

        /// `free_in` and `held_in` (merged walks over the sorted sets) agree with their
        /// definitions (a lookup per usable address) on pools of every kind of block, with
        /// sets reaching into, around and beyond the blocks.
        #[test]
        fn the_merged_scans_agree_with_lookups_per_address() {
            let base = 0x0a00_0000;
            let blocks = vec![
                block(base, 24, BlockKind::StaticRange),
                block(base + 0x100, 28, BlockKind::Prefix),
                block(base + 0x110, 32, BlockKind::SecondaryIp),
                block(base + 0x120, 31, BlockKind::StaticRange),
                block(base + 0x124, 30, BlockKind::StaticRange),
            ];
            // A small deterministic generator: each address of 10.0.0.0/23 lands in each set
            // with its own odds, the network and broadcast addresses included.
            let mut state = 0x2545_f491_u32;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state
            };
            for round in 0..200 {
                let (mut in_use, mut cooling, mut excluded) = Default::default();
                for ip in base..base + 0x200 {
                    let roll = next() % 100;
                    let sets: [&mut BTreeSet<Ipv4Addr>; 3] =
                        [&mut in_use, &mut cooling, &mut excluded];
                    for (set, odds) in sets.into_iter().zip([round % 90, 10, 5]) {
                        if roll < odds {
                            set.insert(Ipv4Addr::from(ip));
                        }
                    }
                }
                let pool = Pool {
                    in_use,
                    cooling,
                    excluded,
                    ..Pool::of_static(blocks.clone())
                };
                for block in &pool.blocks {
                    let free: Vec<Ipv4Addr> =
                        Pool::usable(block).filter(|ip| pool.is_free(*ip)).collect();
                    assert_eq!(
                        pool.free_in(block).collect::<Vec<_>>(),
                        free,
                        "round {round}"
                    );
                    let held = Pool::usable(block)
                        .filter(|ip| pool.in_use.contains(ip))
                        .count();
                    assert_eq!(pool.held_in(block), held, "round {round}");
                }
            }
        }
    }
}

/// The `tagger-plugin` world: the tags of each new ENI.
#[cfg(feature = "tagger")]
#[allow(missing_docs)] // some generated items carry no WIT doc comment
pub mod tagger {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "tagger-plugin",
        pub_export_macro: true,
        export_macro_name: "export_tagger",
        default_bindings_module: "wasmcni_plugin_sdk::tagger",
    });

    pub use self::exports::wasmcni::plugin::tagger::{EniRequest, Guest};
    pub use self::wasmcni::plugin::types::Pair;
    pub use self::wasmcni::plugin::{clock, config, log, types};

    settings!(crate::tagger::wasmcni::plugin::config);

    impl Default for Pair {
        /// An empty key and value.
        fn default() -> Self {
            Pair {
                key: String::new(),
                value: String::new(),
            }
        }
    }

    impl Default for EniRequest {
        /// Empty ids, zone and cluster name.
        fn default() -> Self {
            EniRequest {
                instance_id: String::new(),
                instance_type: String::new(),
                availability_zone: String::new(),
                subnet_id: String::new(),
                cluster_name: String::new(),
            }
        }
    }

    /// Whether the daemon refuses `key` whatever the grant says: `aws:` keys belong to AWS and
    /// keys containing `k8s.amazonaws.com` to the daemon's own ownership tags.
    pub fn is_reserved(key: &str) -> bool {
        key.to_ascii_lowercase().starts_with("aws:") || key.contains("k8s.amazonaws.com")
    }
}

/// The `policy-plugin` world: allow or deny attachments, adjust the pod's datapath within the grant.
#[cfg(feature = "policy")]
#[allow(missing_docs)] // some generated items carry no WIT doc comment
pub mod policy {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "policy-plugin",
        pub_export_macro: true,
        export_macro_name: "export_policy",
        default_bindings_module: "wasmcni_plugin_sdk::policy",
    });

    pub use self::exports::wasmcni::plugin::policy::{Attachment, Guest, Verb, Verdict};
    pub use self::wasmcni::plugin::types::{Pair, Pod};
    pub use self::wasmcni::plugin::{clock, config, kv, log, netlink, types};

    settings!(crate::policy::wasmcni::plugin::config);
    type_defaults!(crate::policy::wasmcni::plugin::types);

    impl Default for Attachment {
        /// An ADD of the default pod, wasmcni the main plugin, no addresses, ENI or subnet.
        fn default() -> Self {
            Attachment {
                verb: Verb::Add,
                pod: Pod::default(),
                addresses: Vec::new(),
                addresses_v6: Vec::new(),
                eni_id: None,
                subnet_id: None,
                chained: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::net;

    #[test]
    fn cidr_parsing_names_the_problem() {
        assert_eq!(net::parse_cidr("10.0.1.16/28"), Ok((0x0a00_0110, 28)));
        assert!(net::parse_cidr("10.0.1.17/28")
            .unwrap_err()
            .contains("host bits"));
        assert!(net::parse_cidr("10.0.1.0/33")
            .unwrap_err()
            .contains("0 to 32"));
        assert!(net::parse_cidr("10.0.1.0")
            .unwrap_err()
            .contains("not a CIDR"));
        assert_eq!(net::parse_cidr("0.0.0.0/0"), Ok((0, 0)));
    }

    #[test]
    fn containment_and_sizes() {
        assert!(net::contains(0x0a00_0110, 28, 0x0a00_011f));
        assert!(!net::contains(0x0a00_0110, 28, 0x0a00_0120));
        assert!(net::contains(0, 0, u32::MAX));
        assert_eq!(net::size(28), 16);
        assert_eq!(net::addresses(0x0a00_0110, 30).count(), 4);
    }
}
