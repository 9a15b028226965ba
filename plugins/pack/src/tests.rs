//! `choose` and `plan` tests. The table tests use the same simulator as vpc-warm-pool's: pods
//! added one at a time through `choose` (retried after the pool settles when none is free),
//! and after each change `plan` applied until it asks for nothing (`Pool::settle`), so each
//! row states the settled pool.

use super::*;
use crate::planner::{plan, FULL_SUBNET_BACKOFF_MS, MIN_ENI_AGE_MS};

/// `choose` over the pool's occupancy, as `allocate` runs it.
fn choose(pool: &Pool) -> Result<Ipv4Addr, String> {
    crate::choose(&pool.occupancy())
}

/// The address of a `u32` literal.
fn a(ip: u32) -> Ipv4Addr {
    Ipv4Addr::from(ip)
}
use wasmcni_plugin_sdk::allocator::{
    AddressBlock, BlockKind, Cidr, FailureCode, Intent, NodeLimits, ProviderKind, RequestFailure,
    RequestKind, Subnet,
};

/// (instance type, ENIs, IPv4 addresses per ENI, prefix delegation possible, max pods); max
/// pods `ENIs × (IPv4 per ENI − 1) + 2` (vpc-cni.md §3.7), 110 in prefix mode (EKS's cap).
type Instance = (&'static str, u32, u32, bool, u32);
const M5_LARGE: Instance = ("m5.large", 3, 10, true, 29);
const M5_LARGE_PD: Instance = ("m5.large", 3, 10, true, 110);
const C4_LARGE: Instance = ("c4.large", 3, 10, false, 29); // Xen: no prefixes

fn fixture((name, max_enis, ipv4_per_eni, prefix_delegation, max_pods): Instance) -> Pool {
    Pool::ec2_fixture(
        name,
        NodeLimits {
            max_enis,
            ipv4_per_eni,
            prefix_delegation,
            max_pods,
        },
    )
}

fn settings(warm_ips: u32, prefix_delegation: bool) -> Settings {
    Settings {
        warm_ips,
        prefix_delegation,
        ..Settings::default()
    }
}

struct Node {
    pool: Pool,
    settings: Settings,
    pods: Vec<Ipv4Addr>,
}

impl Node {
    fn new(pool: Pool, settings: Settings) -> Node {
        let mut node = Node {
            pool,
            settings,
            pods: Vec::new(),
        };
        node.settle();
        node
    }

    fn settle(&mut self) {
        let settings = self.settings.clone();
        if let Err(why) = self.pool.settle(|pool| plan(pool, &settings).intents, 50) {
            panic!("{why}");
        }
    }

    fn add_pods(&mut self, count: usize) {
        for n in 0..count {
            let ip = choose(&self.pool).or_else(|_| {
                self.settle();
                choose(&self.pool)
            });
            let ip = ip.unwrap_or_else(|why| panic!("pod {} of {count}: {why}", n + 1));
            assert!(self.pool.in_use.insert(ip), "{ip} handed out twice");
            self.pods.push(ip);
            self.settle();
        }
    }

    /// Deletes the newest pods; their addresses cool down.
    fn remove_pods(&mut self, count: usize) {
        for _ in 0..count {
            let ip = self.pods.pop().expect("a pod to remove");
            self.pool.in_use.remove(&ip);
            self.pool.cooling.insert(ip);
        }
        self.settle();
    }

    /// Time passes: ENIs age; cooldowns end.
    fn wait(&mut self, ms: u64) {
        for eni in &mut self.pool.enis {
            eni.age_ms += ms;
        }
        self.pool.cooling.clear();
        self.settle();
    }

    /// Addresses per ENI by device number (secondary IPs, 16 per prefix).
    fn per_eni(&self) -> Vec<usize> {
        self.pool
            .enis
            .iter()
            .map(|e| {
                self.pool
                    .blocks_of(&e.id)
                    .map(|b| Pool::usable(b).count())
                    .sum()
            })
            .collect()
    }

    fn unused(&self) -> usize {
        self.per_eni().iter().sum::<usize>() - self.pods.len()
    }

    fn plan(&self) -> Vec<Intent> {
        plan(&self.pool, &self.settings).intents
    }
}

struct Row {
    instance: Instance,
    settings: Settings,
    pods: usize,
    per_eni: &'static [usize],
    unused: usize,
}

fn check(rows: &[Row]) {
    for (n, row) in rows.iter().enumerate() {
        let mut node = Node::new(fixture(row.instance), row.settings.clone());
        node.add_pods(row.pods);
        let what = format!(
            "row {n}: {} {:?}, {} pods",
            row.instance.0, row.settings, row.pods
        );
        assert_eq!(node.per_eni(), row.per_eni, "{what}: addresses per ENI");
        assert_eq!(node.unused(), row.unused, "{what}: unused");
        assert!(node.plan().is_empty(), "{what}: settled pool plans nothing");
    }
}

#[test]
#[rustfmt::skip]
fn keeps_warm_ips_free_filling_the_densest_eni_first() {
    // pack's own rule (plugins/pack/README.md): WARM_IPS free addresses, secondary IPs on the
    // densest ENI with room, a new ENI only when none has room.
    let ips = settings(8, false);
    check(&[
        Row { instance: M5_LARGE, settings: ips.clone(), pods: 0, per_eni: &[8], unused: 8 },
        Row { instance: M5_LARGE, settings: ips.clone(), pods: 5, per_eni: &[9, 4], unused: 8 },
        Row { instance: M5_LARGE, settings: ips.clone(), pods: 19, per_eni: &[9, 9, 9], unused: 8 },
        // 3 ENIs × 9 is all m5.large has: the last two pods eat into the warm addresses.
        Row { instance: M5_LARGE, settings: ips.clone(), pods: 21, per_eni: &[9, 9, 9], unused: 6 },
        Row { instance: M5_LARGE, settings: settings(2, false), pods: 5, per_eni: &[7], unused: 2 },
    ]);
}

#[test]
#[rustfmt::skip]
fn prefix_mode_grows_by_whole_prefixes() {
    let pd = settings(8, true);
    check(&[
        Row { instance: M5_LARGE_PD, settings: pd.clone(), pods: 0, per_eni: &[16], unused: 16 },
        Row { instance: M5_LARGE_PD, settings: pd.clone(), pods: 9, per_eni: &[32], unused: 23 },
        Row { instance: M5_LARGE_PD, settings: pd.clone(), pods: 30, per_eni: &[48], unused: 18 },
        // No prefix delegation on this instance: secondary IPs instead (with a warning).
        Row { instance: C4_LARGE, settings: pd.clone(), pods: 5, per_eni: &[9, 4], unused: 8 },
    ]);
    let warned = plan(&fixture(C4_LARGE), &pd).warnings;
    assert!(warned[0].contains("cannot take /28 prefixes"), "{warned:?}");
}

#[test]
fn falls_back_to_secondary_ips_where_the_subnet_cannot_carve_a_prefix() {
    // A subnet with fewer than 16 free addresses cannot give a /28: the ENI gets single IPs.
    let mut pool = fixture(M5_LARGE_PD);
    pool.subnets[0].free_addresses = 12;
    let node = Node::new(pool, settings(8, true));
    assert_eq!(node.per_eni(), [8]);
    assert!(node
        .pool
        .blocks
        .iter()
        .all(|b| b.kind == BlockKind::SecondaryIp));
}

#[test]
fn stops_at_max_pods() {
    // vpc-cni.md §3.4: never grow once the pool holds max pods' worth of addresses.
    let (name, enis, ips, nitro, _) = M5_LARGE;
    let mut node = Node::new(fixture((name, enis, ips, nitro, 20)), settings(8, false));
    node.add_pods(15);
    assert_eq!(node.per_eni(), [9, 9, 2]);
    assert_eq!(node.unused(), 5);

    let mut node = Node::new(fixture((name, enis, ips, nitro, 20)), settings(8, true));
    node.add_pods(20);
    assert_eq!(node.per_eni(), [32], "a /28 cannot be split: 32 ≥ 20");
}

#[test]
fn shrinks_the_least_dense_eni_first_and_deletes_empty_ones() {
    let mut node = Node::new(fixture(M5_LARGE), settings(8, false));
    node.add_pods(19);
    assert_eq!(node.per_eni(), [9, 9, 9]);
    node.remove_pods(15);
    assert_eq!(
        node.per_eni(),
        [9, 9, 9],
        "cooling addresses are not free: nothing to give back yet"
    );
    node.wait(MIN_ENI_AGE_MS);
    // 23 free, 15 over: the emptiest ENI (highest device on a tie) goes whole, then 6 single
    // IPs of the next emptiest.
    assert_eq!(node.per_eni(), [9, 3]);
    assert_eq!(node.unused(), 8);

    node.remove_pods(4);
    node.wait(MIN_ENI_AGE_MS);
    assert_eq!(node.per_eni(), [8], "back to the 0-pod row");
}

#[test]
fn a_young_or_cooling_eni_is_not_deleted() {
    let mut node = Node::new(fixture(M5_LARGE), settings(8, false));
    node.add_pods(19);
    node.remove_pods(15);
    let ids: Vec<String> = node.pool.enis.iter().map(|e| e.id.clone()).collect();

    // Old enough, but one address of the emptiest ENI still cools down: its free IPs go one
    // by one, the ENI stays.
    for eni in &mut node.pool.enis {
        eni.age_ms = MIN_ENI_AGE_MS;
    }
    let pod_of_eni2 = node
        .pool
        .blocks_of(&ids[2])
        .next()
        .expect("a block")
        .cidr
        .network;
    node.pool.cooling.retain(|ip| *ip == a(pod_of_eni2));
    let intents = node.plan();
    assert!(
        !intents
            .iter()
            .any(|i| matches!(i, Intent::DeleteEni { .. })),
        "{intents:?}"
    );
    assert!(
        matches!(&intents[0], Intent::ReleaseIps { eni_id, addresses } if *eni_id == ids[2] && addresses.len() == 8)
    );

    // Cool, but young: released address by address, then deleted once old and empty.
    node.pool.cooling.clear();
    for eni in &mut node.pool.enis {
        eni.age_ms = MIN_ENI_AGE_MS - 1;
    }
    node.settle();
    assert_eq!(node.per_eni(), [9, 3, 0]);
    node.wait(1);
    assert_eq!(
        node.per_eni(),
        [9, 3],
        "an empty, old, cool ENI goes even with no surplus"
    );
}

#[test]
fn min_eni_age_is_a_setting() {
    let mut node = Node::new(
        fixture(M5_LARGE),
        Settings {
            min_eni_age_ms: 1_000,
            ..settings(2, false)
        },
    );
    node.add_pods(12);
    assert_eq!(node.per_eni().len(), 2, "{:?}", node.per_eni());
    node.remove_pods(12);
    node.pool.cooling.clear();
    for eni in &mut node.pool.enis {
        eni.age_ms = 999;
    }
    node.settle();
    assert_eq!(node.per_eni().len(), 2, "younger than the setting: kept");
    node.wait(1);
    assert_eq!(node.per_eni().len(), 1, "as old as the setting: deleted");
}

#[test]
fn prefix_mode_releases_whole_empty_prefixes_only() {
    let mut node = Node::new(fixture(M5_LARGE_PD), settings(8, true));
    node.add_pods(40);
    assert_eq!(node.per_eni(), [48]);
    node.remove_pods(30);
    node.wait(30_000);
    // 38 free, 30 over: the top prefix (8 never-used addresses, 8 cooled) goes whole; the
    // next would take free addresses below WARM_IPS; the pods' prefix stays.
    assert_eq!(node.per_eni(), [32]);
    assert_eq!(node.unused(), 22);
}

#[test]
fn grows_the_densest_eni_with_room() {
    // Primary full with 9 pods; ENI 1 holds 2 pods in 5 IPs, ENI 2 4 pods in 5 IPs: the 4
    // missing free addresses go to ENI 2.
    let mut pool = fixture(M5_LARGE);
    let primary = pool.enis[0].id.clone();
    pool.apply(&Intent::AssignIps {
        eni_id: primary.clone(),
        count: 9,
    })
    .expect("assign");
    for _ in 0..2 {
        pool.apply(&Intent::CreateEni {
            subnet_id: "subnet-node".into(),
            security_groups: vec!["sg-node".into()],
            secondary_ips: 5,
            prefixes: 0,
        })
        .expect("create");
    }
    let ids: Vec<String> = pool.enis.iter().map(|e| e.id.clone()).collect();
    for (eni, pods) in ids.iter().zip([9, 2, 4]) {
        let ips: Vec<Ipv4Addr> = pool
            .blocks_of(eni)
            .take(pods)
            .map(|b| a(b.cidr.network))
            .collect();
        pool.in_use.extend(ips);
    }
    let decided = plan(&pool, &settings(8, false));
    assert_eq!(
        decided.intents,
        [Intent::AssignIps {
            eni_id: ids[2].clone(),
            count: 4
        }]
    );
}

#[test]
fn new_enis_go_to_the_subnet_with_most_free_addresses() {
    let mut pool = fixture(M5_LARGE);
    let primary = pool.enis[0].id.clone();
    pool.apply(&Intent::AssignIps {
        eni_id: primary.clone(),
        count: 9,
    })
    .expect("assign");
    let held: Vec<Ipv4Addr> = pool.blocks.iter().map(|b| a(b.cidr.network)).collect();
    pool.in_use.extend(held);
    let subnet = |id: &str, network: u32, free| Subnet {
        id: id.into(),
        cidr: Cidr {
            network,
            prefix_len: 20,
        },
        free_addresses: free,
        tags: Vec::new(),
    };
    pool.subnets = vec![
        subnet("subnet-a", 0x0a01_0000, 300),
        subnet("subnet-b", 0x0a02_0000, 4000),
    ];
    let decided = plan(&pool, &settings(8, false));
    assert_eq!(
        decided.intents,
        [Intent::CreateEni {
            subnet_id: "subnet-b".into(),
            security_groups: vec!["sg-node".into()],
            secondary_ips: 8,
            prefixes: 0,
        }]
    );
    // EC2 just refused a new ENI in subnet-b (its free count lags): subnet-a, until the
    // refusal is older than the backoff; and when every subnet was refused, the best again.
    let refused = |subnet: &str, age_ms| RequestFailure {
        request: RequestKind::CreateEni,
        eni_id: None,
        subnet_id: Some(subnet.into()),
        code: FailureCode::InsufficientFreeAddressesInSubnet,
        message: format!("EC2 CreateNetworkInterface: InsufficientFreeAddressesInSubnet: {subnet}"),
        age_ms,
    };
    let chosen = |pool: &Pool| match &plan(pool, &settings(8, false)).intents[..] {
        [Intent::CreateEni { subnet_id, .. }] => subnet_id.clone(),
        other => panic!("{other:?}"),
    };
    pool.failures = vec![refused("subnet-b", 5_000)];
    assert_eq!(chosen(&pool), "subnet-a");
    pool.failures = vec![refused("subnet-b", FULL_SUBNET_BACKOFF_MS)];
    assert_eq!(chosen(&pool), "subnet-b");
    pool.failures = vec![refused("subnet-b", 5_000), refused("subnet-a", 1_000)];
    assert_eq!(chosen(&pool), "subnet-b");
    pool.failures.clear();
    // No subnet listed: the node's.
    pool.subnets.clear();
    let decided = plan(&pool, &settings(8, false));
    assert!(
        matches!(&decided.intents[..], [Intent::CreateEni { subnet_id, .. }] if subnet_id == "subnet-node")
    );
}

#[test]
fn warm_ips_of_zero_is_refused() {
    // With no free address kept, a new pod would always find the pool empty.
    let refused = settings(0, false).validate().unwrap_err();
    assert!(refused.contains("WARM_IPS"), "{refused}");
    assert_eq!(Settings::default().validate(), Ok(()));
}

#[test]
fn static_pools_plan_nothing() {
    let mut pool = fixture(M5_LARGE);
    pool.node.provider = ProviderKind::Static;
    pool.node.limits.max_enis = 0;
    assert_eq!(plan(&pool, &Settings::default()), planner::Plan::default());
}

fn prefix(network: u32, eni: &str) -> AddressBlock {
    AddressBlock {
        cidr: Cidr {
            network,
            prefix_len: 28,
        },
        kind: BlockKind::Prefix,
        eni_id: Some(eni.into()),
        route_table: None,
    }
}

#[test]
fn choose_takes_the_densest_block_then_its_lowest_free_address() {
    let mut pool = fixture(M5_LARGE_PD);
    pool.blocks = vec![
        prefix(0x0a00_0010, "eni-primary"),
        prefix(0x0a00_0020, "eni-primary"),
        prefix(0x0a00_0030, "eni-primary"),
    ];
    assert_eq!(
        choose(&pool),
        Ok(a(0x0a00_0010)),
        "all empty: the first block"
    );
    pool.in_use.extend([a(0x0a00_0010), a(0x0a00_0011)]);
    pool.in_use
        .extend([a(0x0a00_0020), a(0x0a00_0022), a(0x0a00_0023)]);
    assert_eq!(
        choose(&pool),
        Ok(a(0x0a00_0021)),
        "densest block, lowest free address in it"
    );
    pool.cooling.insert(a(0x0a00_0021));
    pool.excluded.insert(a(0x0a00_0024));
    assert_eq!(
        choose(&pool),
        Ok(a(0x0a00_0025)),
        "cooling and excluded addresses skipped"
    );
    pool.in_use.extend((0x0a00_0025..=0x0a00_002f).map(a));
    assert_eq!(
        choose(&pool),
        Ok(a(0x0a00_0012)),
        "full block skipped: the next densest"
    );
    pool.in_use.extend((0x0a00_0012..=0x0a00_003f).map(a));
    let refused = choose(&pool).unwrap_err();
    assert!(
        refused.contains("no free address in 3 block(s)"),
        "{refused}"
    );
}

#[test]
fn an_operators_eni_is_never_planned_for() {
    // Three ENIs, the third attached by an operator (no ownership tag): empty, old and with
    // free addresses, it would be the first to go. pack uses its addresses but never asks to
    // delete it, release from it or grow it.
    let mut node = Node::new(fixture(M5_LARGE), settings(8, false));
    node.add_pods(19);
    assert_eq!(node.per_eni(), [9, 9, 9]);
    let foreign = node.pool.enis[2].id.clone();
    node.pool.enis[2].tags.clear();
    let held: Vec<Ipv4Addr> = node
        .pool
        .blocks_of(&foreign)
        .map(|b| a(b.cidr.network))
        .collect();
    node.pool.in_use.retain(|ip| !held.contains(ip));
    for eni in &mut node.pool.enis {
        eni.age_ms = MIN_ENI_AGE_MS;
    }
    let intents = node.plan();
    assert!(
        intents.iter().all(|i| i.eni_id() != Some(foreign.as_str())),
        "{intents:?}"
    );
    // And growing never goes to it: the pool is short again, the others are full.
    node.pool.in_use.extend(held);
    node.pool
        .in_use
        .extend(node.pool.blocks.iter().map(|b| a(b.cidr.network)));
    let intents = node.plan();
    assert!(
        intents.iter().all(|i| i.eni_id() != Some(foreign.as_str())),
        "{intents:?}"
    );
}
