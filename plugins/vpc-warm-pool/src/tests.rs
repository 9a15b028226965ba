//! Table tests from VPC CNI's documented behaviour. A small simulator adds pods one at a time
//! (each through `choose`, retried after the pool settles when it has no free address, as
//! kubelet retries a failed ADD), runs `plan` and applies its intents until it asks for nothing
//! (`Pool::settle`), so each row states the settled ENI/address counts as VPC CNI's docs do.
//!
//! Sources: `docs/eni-and-ip-target.md` and `docs/prefix-and-ip-target.md` of
//! aws/amazon-vpc-cni-k8s (v1.23.1), the code they describe (`pkg/ipamd/ipamd.go`,
//! `pkg/ipamd/datastore/data_store.go`, `cmd/aws-vpc-cni/main.go`), and
//! `shared/reference/vpc-cni.md`.

use super::*;
use crate::planner::{plan, MIN_ENI_AGE_MS};
use std::collections::BTreeMap;
use wasmcni_plugin_sdk::allocator::{Intent, NodeLimits, Pair, Subnet};

/// Settings from `pairs` for a node in the fixtures' zone, eu-west-1a.
fn env(pairs: &[(&str, &str)]) -> Result<Settings, String> {
    env_in("eu-west-1a", pairs)
}

fn env_in(zone: &str, pairs: &[(&str, &str)]) -> Result<Settings, String> {
    let map: BTreeMap<&str, &str> = pairs.iter().copied().collect();
    Settings::from_config(|key| Ok(map.get(key).map(|v| v.to_string())), zone)
}

fn limits(max_enis: u32, ipv4_per_eni: u32, prefix_delegation: bool, max_pods: u32) -> NodeLimits {
    NodeLimits {
        max_enis,
        ipv4_per_eni,
        prefix_delegation,
        max_pods,
    }
}

/// Instance types of the documented examples: (name, ENIs, IPv4 per ENI, Nitro, max pods).
/// Max pods is `ENIs × (IPv4 per ENI − 1) + 2` (vpc-cni.md §3.7), or EKS's 110 cap in prefix mode.
const T3_SMALL: (&str, u32, u32, bool, u32) = ("t3.small", 3, 4, true, 11);
const M5_LARGE: (&str, u32, u32, bool, u32) = ("m5.large", 3, 10, true, 29);
const M5_XLARGE: (&str, u32, u32, bool, u32) = ("m5.xlarge", 4, 15, true, 58);
const M5_8XLARGE: (&str, u32, u32, bool, u32) = ("m5.8xlarge", 8, 30, true, 234);
const M5_16XLARGE: (&str, u32, u32, bool, u32) = ("m5.16xlarge", 15, 50, true, 737);
const P3DN_24XLARGE: (&str, u32, u32, bool, u32) = ("p3dn.24xlarge", 15, 50, true, 737);
const C4_LARGE: (&str, u32, u32, bool, u32) = ("c4.large", 3, 10, false, 29); // Xen: no prefixes

/// A node under the simulator.
struct Node {
    pool: Pool,
    settings: Settings,
    pods: Vec<Ipv4Addr>,
}

impl Node {
    fn new(instance: (&str, u32, u32, bool, u32), vars: &[(&str, &str)]) -> Node {
        let (name, enis, ips, nitro, max_pods) = instance;
        Node::with_pool(
            Pool::ec2_fixture(name, limits(enis, ips, nitro, max_pods)),
            vars,
        )
    }

    fn with_pool(pool: Pool, vars: &[(&str, &str)]) -> Node {
        let settings = env(vars).expect("settings accepted");
        let mut node = Node {
            pool,
            settings,
            pods: Vec::new(),
        };
        node.settle();
        node
    }

    fn plan(&self) -> Vec<Intent> {
        plan(&self.pool, &self.settings).intents
    }

    fn settle(&mut self) {
        let settings = self.settings.clone();
        if let Err(why) = self.pool.settle(|pool| plan(pool, &settings).intents, 50) {
            panic!("{why}");
        }
    }

    fn try_add_pod(&mut self) -> Result<Ipv4Addr, String> {
        let ip = match choose(&self.pool, &self.settings) {
            Ok(ip) => ip,
            Err(_) => {
                self.settle();
                choose(&self.pool, &self.settings)?
            }
        };
        assert!(self.pool.in_use.insert(ip), "{ip} handed out twice");
        self.pods.push(ip);
        self.settle();
        Ok(ip)
    }

    fn add_pods(&mut self, count: usize) {
        for n in 0..count {
            if let Err(why) = self.try_add_pod() {
                panic!("pod {} of {count}: {why}", n + 1);
            }
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

    /// Time passes: ENIs age; cooldowns (30 s by default) end.
    fn wait(&mut self, ms: u64) {
        for eni in &mut self.pool.enis {
            eni.age_ms += ms;
        }
        if ms >= 30_000 {
            self.pool.cooling.clear();
        }
        self.settle();
    }

    fn enis(&self) -> usize {
        self.pool.enis.len()
    }

    /// Addresses per ENI, by device number (secondary IPs, or 16 per prefix).
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

    fn prefixes_per_eni(&self) -> Vec<usize> {
        self.pool
            .enis
            .iter()
            .map(|e| {
                self.pool
                    .blocks_of(&e.id)
                    .filter(|b| b.kind == BlockKind::Prefix)
                    .count()
            })
            .collect()
    }

    fn total(&self) -> usize {
        self.per_eni().iter().sum()
    }

    fn unused(&self) -> usize {
        self.total() - self.pods.len()
    }
}

/// One row of a documented table: settings, pods scheduled, the settled pool.
struct Row {
    instance: (&'static str, u32, u32, bool, u32),
    vars: &'static [(&'static str, &'static str)],
    pods: usize,
    /// Addresses per ENI by device number (secondary IPs; 16 per prefix in prefix mode).
    per_eni: &'static [usize],
    unused: usize,
}

fn check(rows: &[Row]) {
    for (n, row) in rows.iter().enumerate() {
        let mut node = Node::new(row.instance, row.vars);
        node.add_pods(row.pods);
        let what = format!(
            "row {n}: {} {:?} with {} pods",
            row.instance.0, row.vars, row.pods
        );
        assert_eq!(node.per_eni(), row.per_eni, "{what}: addresses per ENI");
        assert_eq!(node.enis(), row.per_eni.len(), "{what}: ENIs");
        assert_eq!(node.unused(), row.unused, "{what}: unused addresses");
        assert!(
            node.plan().is_empty(),
            "{what}: settled pool must plan nothing"
        );
    }
}

const WARM_ENI_1: &[(&str, &str)] = &[("WARM_ENI_TARGET", "1")];
const WARM_IP_1_MIN_1: &[(&str, &str)] = &[("WARM_IP_TARGET", "1"), ("MINIMUM_IP_TARGET", "1")];
const WARM_IP_2_MIN_5: &[(&str, &str)] = &[("WARM_IP_TARGET", "2"), ("MINIMUM_IP_TARGET", "5")];
const WARM_IP_5_MIN_10: &[(&str, &str)] = &[("WARM_IP_TARGET", "5"), ("MINIMUM_IP_TARGET", "10")];

#[test]
#[rustfmt::skip]
fn secondary_ip_mode_matches_eni_and_ip_target_doc() {
    // Every row: docs/eni-and-ip-target.md, "Some example cases" (IPs per ENI in device order;
    // the doc lists them in Go map order, "2,3" for our [3, 2]).
    check(&[
        Row { instance: T3_SMALL, vars: WARM_ENI_1, pods: 0, per_eni: &[3], unused: 3 },
        Row { instance: T3_SMALL, vars: WARM_ENI_1, pods: 5, per_eni: &[3, 3, 3], unused: 4 },
        Row { instance: T3_SMALL, vars: WARM_ENI_1, pods: 9, per_eni: &[3, 3, 3], unused: 0 },
        Row { instance: T3_SMALL, vars: WARM_IP_1_MIN_1, pods: 0, per_eni: &[1], unused: 1 },
        Row { instance: T3_SMALL, vars: WARM_IP_1_MIN_1, pods: 5, per_eni: &[3, 3], unused: 1 },
        Row { instance: T3_SMALL, vars: WARM_IP_1_MIN_1, pods: 9, per_eni: &[3, 3, 3], unused: 0 },
        Row { instance: T3_SMALL, vars: WARM_IP_2_MIN_5, pods: 0, per_eni: &[3, 2], unused: 5 },
        Row { instance: T3_SMALL, vars: WARM_IP_2_MIN_5, pods: 5, per_eni: &[3, 3, 1], unused: 2 },
        Row { instance: T3_SMALL, vars: WARM_IP_2_MIN_5, pods: 9, per_eni: &[3, 3, 3], unused: 0 },
        Row { instance: P3DN_24XLARGE, vars: WARM_ENI_1, pods: 0, per_eni: &[49], unused: 49 },
        Row { instance: P3DN_24XLARGE, vars: WARM_ENI_1, pods: 3, per_eni: &[49, 49], unused: 95 },
        Row { instance: P3DN_24XLARGE, vars: WARM_ENI_1, pods: 95, per_eni: &[49, 49, 49], unused: 52 },
        Row { instance: P3DN_24XLARGE, vars: WARM_IP_5_MIN_10, pods: 0, per_eni: &[10], unused: 10 },
        Row { instance: P3DN_24XLARGE, vars: WARM_IP_5_MIN_10, pods: 7, per_eni: &[12], unused: 5 },
        Row { instance: P3DN_24XLARGE, vars: WARM_IP_5_MIN_10, pods: 15, per_eni: &[20], unused: 5 },
        Row { instance: P3DN_24XLARGE, vars: WARM_IP_5_MIN_10, pods: 45, per_eni: &[49, 1], unused: 5 },
    ]);
}

#[test]
#[rustfmt::skip]
fn default_warm_eni_holds_a_whole_spare_eni_on_m5() {
    // vpc-cni.md §3.4, "Effective warm pool": awslabs ai-on-eks notes m5.8xlarge with 10 pods
    // holds 60 IPs and m5.16xlarge 100, because of WARM_ENI_TARGET=1. Their figures count each
    // ENI's primary address too: 2 ENIs × 30 and 2 × 50.
    check(&[
        Row { instance: M5_8XLARGE, vars: &[], pods: 10, per_eni: &[29, 29], unused: 48 },
        Row { instance: M5_16XLARGE, vars: &[], pods: 10, per_eni: &[49, 49], unused: 88 },
    ]);
    // m5.large's 29 max pods (vpc-cni.md §3.7) are reached with its 3 ENIs × 9 secondary IPs.
    check(&[Row { instance: M5_LARGE, vars: &[], pods: 27, per_eni: &[9, 9, 9], unused: 0 }]);
}

const PREFIX_1: &[(&str, &str)] = &[
    ("ENABLE_PREFIX_DELEGATION", "true"),
    ("WARM_PREFIX_TARGET", "1"),
];
const PREFIX_IP_1_MIN_1: &[(&str, &str)] = &[
    ("ENABLE_PREFIX_DELEGATION", "true"),
    ("WARM_IP_TARGET", "1"),
    ("MINIMUM_IP_TARGET", "1"),
];
const PREFIX_IP_7_MIN_20: &[(&str, &str)] = &[
    ("ENABLE_PREFIX_DELEGATION", "true"),
    ("WARM_IP_TARGET", "7"),
    ("MINIMUM_IP_TARGET", "20"),
];
const PREFIX_IP_5_MIN_10: &[(&str, &str)] = &[
    ("ENABLE_PREFIX_DELEGATION", "true"),
    ("WARM_IP_TARGET", "5"),
    ("MINIMUM_IP_TARGET", "10"),
];
/// t3.small in prefix mode: 3 ENIs × 3 prefixes; max pods from EKS's cap (vpc-cni.md §3.7).
const T3_SMALL_PD: (&str, u32, u32, bool, u32) = ("t3.small", 3, 4, true, 110);

#[test]
#[rustfmt::skip]
fn prefix_mode_matches_prefix_and_ip_target_doc() {
    // Every row: docs/prefix-and-ip-target.md, "Examples" (per_eni is 16 × prefixes per ENI).
    check(&[
        Row { instance: T3_SMALL_PD, vars: PREFIX_1, pods: 0, per_eni: &[16], unused: 16 },
        Row { instance: T3_SMALL_PD, vars: PREFIX_1, pods: 5, per_eni: &[32], unused: 27 },
        Row { instance: T3_SMALL_PD, vars: PREFIX_1, pods: 16, per_eni: &[32], unused: 16 },
        Row { instance: T3_SMALL_PD, vars: PREFIX_1, pods: 17, per_eni: &[48], unused: 31 },
        Row { instance: T3_SMALL_PD, vars: PREFIX_1, pods: 58, per_eni: &[48, 32], unused: 22 },
        Row { instance: T3_SMALL_PD, vars: PREFIX_IP_1_MIN_1, pods: 0, per_eni: &[16], unused: 16 },
        Row { instance: T3_SMALL_PD, vars: PREFIX_IP_1_MIN_1, pods: 5, per_eni: &[16], unused: 11 },
        Row { instance: T3_SMALL_PD, vars: PREFIX_IP_1_MIN_1, pods: 17, per_eni: &[32], unused: 15 },
        Row { instance: T3_SMALL_PD, vars: PREFIX_IP_1_MIN_1, pods: 58, per_eni: &[48, 16], unused: 6 },
        // The doc's 0-pod row says 1 attached prefix, 2 prefixes per ENI and 16 unused, which
        // disagree with each other; MINIMUM_IP_TARGET=20 needs ceil(20/16) = 2 prefixes
        // (datastoreTargetState), as the doc's own 5-pod row shows.
        Row { instance: T3_SMALL_PD, vars: PREFIX_IP_7_MIN_20, pods: 0, per_eni: &[32], unused: 32 },
        Row { instance: T3_SMALL_PD, vars: PREFIX_IP_7_MIN_20, pods: 5, per_eni: &[32], unused: 27 },
        Row { instance: T3_SMALL_PD, vars: PREFIX_IP_7_MIN_20, pods: 17, per_eni: &[32], unused: 15 },
        Row { instance: T3_SMALL_PD, vars: PREFIX_IP_7_MIN_20, pods: 58, per_eni: &[48, 32], unused: 22 },
        // The p3dn rows of the doc list extra empty ENIs ("2,0", "7,0,0", "4,0") that v1.23.1's
        // code never creates in prefix mode (isDatastorePoolTooLow uses WARM_PREFIX_TARGET,
        // not WARM_ENI_TARGET, and a p3dn ENI holds 49 prefixes); prefixes and unused
        // addresses match the doc.
        Row { instance: P3DN_24XLARGE, vars: PREFIX_1, pods: 0, per_eni: &[16], unused: 16 },
        Row { instance: P3DN_24XLARGE, vars: PREFIX_1, pods: 3, per_eni: &[32], unused: 29 },
        Row { instance: P3DN_24XLARGE, vars: PREFIX_1, pods: 95, per_eni: &[112], unused: 17 },
        Row { instance: P3DN_24XLARGE, vars: PREFIX_IP_5_MIN_10, pods: 0, per_eni: &[16], unused: 16 },
        Row { instance: P3DN_24XLARGE, vars: PREFIX_IP_5_MIN_10, pods: 7, per_eni: &[16], unused: 9 },
        Row { instance: P3DN_24XLARGE, vars: PREFIX_IP_5_MIN_10, pods: 15, per_eni: &[32], unused: 17 },
        Row { instance: P3DN_24XLARGE, vars: PREFIX_IP_5_MIN_10, pods: 45, per_eni: &[64], unused: 19 },
    ]);
}

#[test]
fn warm_eni_surplus_deletes_enis_once_old_and_cool() {
    // vpc-cni.md §3.4 Shrink: in plain WARM_ENI mode an ENI goes once available ≥
    // (WARM_ENI_TARGET + 1) × IPs per ENI (shouldRemoveExtraENIs), if it is not primary, ≥ 1 min
    // old, has no pod and no cooling IP (getDeletableENI). Settles back to the doc's 0-pod row.
    let mut node = Node::new(T3_SMALL, WARM_ENI_1);
    node.add_pods(9);
    assert_eq!(node.per_eni(), [3, 3, 3]);

    node.remove_pods(9);
    assert_eq!(node.enis(), 3, "young ENIs, cooling IPs: nothing deleted");

    node.wait(10_000);
    assert_eq!(
        node.enis(),
        3,
        "IPs still cooling (IP_COOLDOWN_PERIOD 30 s)"
    );

    node.wait(MIN_ENI_AGE_MS);
    assert_eq!(
        node.per_eni(),
        [3],
        "back to one ENI with a full ENI's worth free"
    );
    assert!(node.plan().is_empty());
}

#[test]
fn an_operators_eni_is_used_but_never_changed() {
    // The same shrink as above, but the third ENI was attached by an operator (no ownership
    // tag): VPC CNI would delete it; the daemon refuses to, and the plan never asks.
    let mut node = Node::new(T3_SMALL, WARM_ENI_1);
    node.add_pods(9);
    let foreign = node.pool.enis[2].id.clone();
    node.pool.enis[2].tags.clear();
    node.remove_pods(9);
    node.wait(MIN_ENI_AGE_MS);
    node.wait(MIN_ENI_AGE_MS);
    assert_eq!(
        node.enis(),
        2,
        "the daemon's own second ENI goes, the operator's stays"
    );
    assert!(node.pool.enis.iter().any(|e| e.id == foreign));
    assert!(node
        .plan()
        .iter()
        .all(|i| i.eni_id() != Some(foreign.as_str())));
}

#[test]
fn a_cooling_ip_blocks_eni_deletion() {
    // vpc-cni.md §1.3 IP_COOLDOWN_PERIOD: "also blocks ENI deletion while any of its IPs is
    // cooling"; getDeletableENI's hasIPInCooling.
    let mut node = Node::new(T3_SMALL, WARM_ENI_1);
    node.add_pods(9);
    node.wait(MIN_ENI_AGE_MS);
    node.remove_pods(9);
    assert_eq!(
        node.enis(),
        3,
        "old enough, but every secondary ENI has a cooling IP"
    );
    let intents = node.plan();
    assert!(intents.is_empty(), "{intents:?}");
    node.wait(30_000);
    assert_eq!(node.enis(), 1);
}

#[test]
fn warm_ip_targets_release_ips_and_enis_down_to_the_targets() {
    // vpc-cni.md §3.4 Shrink: with WARM_IP/MINIMUM_IP, over = min(available − WARM_IP,
    // total − MIN_IP) IPs are released, and ENIs not required for either target are deleted
    // (isRequiredForWarmIPTarget / isRequiredForMinimumIPTarget). Ends at the
    // eni-and-ip-target.md 0-pod row for WARM_IP_TARGET=2, MINIMUM_IP_TARGET=5: 2 ENIs, 5 IPs.
    let mut node = Node::new(T3_SMALL, WARM_IP_2_MIN_5);
    node.add_pods(9);
    node.wait(MIN_ENI_AGE_MS);
    node.remove_pods(9);
    node.wait(30_000);
    assert_eq!(node.per_eni(), [3, 2]);
    assert_eq!(node.unused(), 5);
}

#[test]
fn warm_eni_mode_never_releases_single_ips() {
    // vpc-cni.md §3.4: IP release only "when WARM_IP, MIN_IP or WARM_PREFIX is defined".
    let mut node = Node::new(P3DN_24XLARGE, WARM_ENI_1);
    node.add_pods(60);
    assert_eq!(node.per_eni(), [49, 49, 49]);
    node.remove_pods(50);
    node.wait(30_000);
    assert_eq!(
        node.per_eni(),
        [49, 49, 49],
        "no IP released; the ENIs are too young"
    );
    node.wait(MIN_ENI_AGE_MS);
    assert_eq!(
        node.per_eni(),
        [49, 49],
        "137 free ≥ 2 × 49: one whole ENI goes, 88 stay"
    );
}

#[test]
fn warm_prefix_target_releases_free_prefixes_beyond_it() {
    // prefix-and-ip-target.md: WARM_PREFIX_TARGET keeps N wholly free /28s;
    // isDatastorePoolTooHigh/computeExtraPrefixesOverWarmTarget free the others.
    let mut node = Node::new(T3_SMALL_PD, PREFIX_1);
    node.add_pods(40);
    assert_eq!(node.prefixes_per_eni(), [3, 1]);
    node.remove_pods(40);
    assert_eq!(
        node.prefixes_per_eni(),
        [3, 0],
        "the never-used prefix goes at once; the primary's have cooling addresses"
    );
    node.wait(30_000);
    assert_eq!(node.prefixes_per_eni(), [1, 0], "one free prefix kept");
    node.wait(MIN_ENI_AGE_MS);
    assert_eq!(node.prefixes_per_eni(), [1], "the empty ENI goes too");
}

#[test]
fn pool_stops_at_max_pods() {
    // vpc-cni.md §3.4: the pool is never low once TotalIPs ≥ maxPods. m5.large with kubelet
    // max pods lowered to 20: VPC CNI would attach a third full ENI (27 IPs); secondary IPs are
    // clipped to 20 here. A /28 cannot be split, so prefix mode stops at the first multiple of
    // 16 at or above max pods, as VPC CNI does.
    let (name, enis, ips, nitro, _) = M5_LARGE;
    let mut node = Node::with_pool(Pool::ec2_fixture(name, limits(enis, ips, nitro, 20)), &[]);
    node.add_pods(18);
    assert_eq!(node.per_eni(), [9, 9, 2]);
    assert!(node.plan().is_empty());

    let mut node = Node::with_pool(
        Pool::ec2_fixture(name, limits(enis, ips, nitro, 20)),
        PREFIX_1,
    );
    node.add_pods(20);
    assert_eq!(node.per_eni(), [32]);
    assert!(node.plan().is_empty());
}

#[test]
fn max_eni_caps_the_enis() {
    // VPC CNI's ipamd e2e suite (vpc-cni.md §5.2): WARM_ENI_TARGET=3 with MAX_ENI=2 → 2 ENIs.
    let node = Node::new(M5_XLARGE, &[("WARM_ENI_TARGET", "3"), ("MAX_ENI", "2")]);
    assert_eq!(node.per_eni(), [14, 14]);
    // MAX_ENI beyond the instance's limit cannot raise it (getMaxENI).
    let node = Node::new(M5_XLARGE, &[("WARM_ENI_TARGET", "9"), ("MAX_ENI", "10")]);
    assert_eq!(node.enis(), 4);
}

fn pod_subnet_pool(instance: (&str, u32, u32, bool, u32)) -> Pool {
    let (name, enis, ips, nitro, max_pods) = instance;
    let mut pool = Pool::ec2_fixture(name, limits(enis, ips, nitro, max_pods));
    pool.subnets.push(Subnet {
        id: "subnet-pods".into(),
        cidr: wasmcni_plugin_sdk::allocator::Cidr {
            network: 0x6440_0000, // 100.64.0.0/16
            prefix_len: 16,
        },
        free_addresses: 65_000,
        tags: Vec::new(),
    });
    pool
}

#[test]
fn custom_networking_skips_the_primary_eni() {
    // vpc-cni.md §1.3 AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG: secondary ENIs in the ENIConfig's
    // subnet and security groups; the primary ENI is not used for pods, so max pods is
    // (ENIs − 1) × (IPs − 1) + 2 = 8 on t3.small (§3.7, #527).
    let (name, enis, ips, nitro, _) = T3_SMALL;
    let mut pool = pod_subnet_pool((name, enis, ips, nitro, 8));
    pool.enis[0].security_groups = vec!["sg-node".into()];
    let vars: &[(&str, &str)] = &[
        ("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", "true"),
        ("ENI_CONFIG_SUBNET", "subnet-pods"),
        ("ENI_CONFIG_SECURITY_GROUPS", "sg-pods-b, sg-pods-a"),
    ];
    let mut node = Node::with_pool(pool, vars);
    assert_eq!(node.per_eni(), [0, 3], "no address on the primary ENI");
    let eni = &node.pool.enis[1];
    assert_eq!(eni.subnet_id, "subnet-pods");
    assert_eq!(eni.security_groups, ["sg-pods-b", "sg-pods-a"]);

    node.add_pods(6);
    assert_eq!(node.per_eni(), [0, 3, 3]);
    assert!(node.pods.iter().all(|ip| ip.octets()[..2] == [100, 64]));
    assert!(
        node.try_add_pod().is_err(),
        "no ENI left: 6 pod addresses is all"
    );

    // One ENIConfig per zone (ENI_CONFIG_LABEL_DEF=topology.kubernetes.io/zone): the node's
    // zone picks its own, other zones' are ignored.
    let per_zone: &[(&str, &str)] = &[
        ("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", "true"),
        ("ENI_CONFIG_SUBNET.eu-west-1a", "subnet-pods"),
        ("ENI_CONFIG_SECURITY_GROUPS.eu-west-1a", "sg-pods-a"),
        ("ENI_CONFIG_SUBNET.eu-west-1b", "subnet-pods-b"),
    ];
    let node = Node::with_pool(pod_subnet_pool(T3_SMALL), per_zone);
    assert_eq!(node.pool.enis[1].subnet_id, "subnet-pods");
    assert_eq!(node.pool.enis[1].security_groups, ["sg-pods-a"]);
    let refused = env_in("eu-west-1c", per_zone).unwrap_err();
    assert!(refused.contains("ENI_CONFIG_SUBNET.<zone>"), "{refused}");

    // Without ENI_CONFIG_SECURITY_GROUPS, the primary ENI's (createENIUsingCustomCfg).
    let node = Node::with_pool(pod_subnet_pool(T3_SMALL), &vars[..2]);
    assert_eq!(node.pool.enis[1].security_groups, ["sg-node"]);
}

fn tagged(id: &str, network: u32, free: u32, tags: &[(&str, &str)]) -> Subnet {
    Subnet {
        id: id.into(),
        cidr: wasmcni_plugin_sdk::allocator::Cidr {
            network,
            prefix_len: 20,
        },
        free_addresses: free,
        tags: tags
            .iter()
            .map(|(k, v)| Pair {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
    }
}

use crate::planner::Plan;

fn created_in(plan: &Plan) -> Option<&str> {
    plan.intents.iter().find_map(|i| match i {
        Intent::CreateEni { subnet_id, .. } => Some(subnet_id.as_str()),
        _ => None,
    })
}

#[test]
fn subnet_discovery_picks_the_most_free_valid_subnet() {
    // vpc-cni.md §1.3 ENABLE_SUBNET_DISCOVERY and §3.4 "Subnet choice" (createENI,
    // isSubnetValidForENICreation): the node's subnet unless tagged kubernetes.io/role/cni=0,
    // other subnets only when tagged =1 (and, with CLUSTER_NAME, not scoped to another
    // cluster); the one with the most free addresses wins.
    let cni = "kubernetes.io/role/cni";
    let node = |free| tagged("subnet-node", 0x0a00_0000, free, &[]);
    let big_untagged = tagged("subnet-big", 0x0a01_0000, 4000, &[]);
    let opted_in = tagged("subnet-in", 0x0a02_0000, 3000, &[(cni, "1")]);
    let theirs = tagged(
        "subnet-theirs",
        0x0a03_0000,
        3500,
        &[(cni, "1"), ("cni.networking.k8s.aws/cluster/other", "1")],
    );
    // The primary ENI is full and a pod holds one of its IPs: the pool wants a new ENI.
    let pick = |subnets: Vec<Subnet>, vars: &[(&str, &str)]| {
        let mut pool = Pool::ec2_fixture("m5.large", limits(3, 10, true, 29));
        pool.subnets = subnets;
        pool.in_use.insert(Ipv4Addr::from(0x0a00_0100));
        pool.blocks = (0..9)
            .map(|n| wasmcni_plugin_sdk::allocator::AddressBlock {
                cidr: wasmcni_plugin_sdk::allocator::Cidr {
                    network: 0x0a00_0100 + n,
                    prefix_len: 32,
                },
                kind: BlockKind::SecondaryIp,
                eni_id: Some("eni-primary".into()),
                route_table: None,
            })
            .collect();
        let decided = plan(&pool, &env(vars).expect("settings"));
        created_in(&decided)
            .map(String::from)
            .ok_or(decided.warnings)
    };
    let all = || {
        vec![
            node(100),
            big_untagged.clone(),
            opted_in.clone(),
            theirs.clone(),
        ]
    };
    assert_eq!(
        pick(all(), &[]),
        Ok("subnet-theirs".into()),
        "no CLUSTER_NAME: any =1"
    );
    assert_eq!(
        pick(all(), &[("CLUSTER_NAME", "mine")]),
        Ok("subnet-in".into()),
        "scoped to another cluster"
    );
    assert_eq!(
        pick(vec![node(5000), opted_in.clone()], &[]),
        Ok("subnet-node".into())
    );
    let excluded_node = tagged("subnet-node", 0x0a00_0000, 9000, &[(cni, "0")]);
    assert_eq!(
        pick(vec![excluded_node.clone(), opted_in.clone()], &[]),
        Ok("subnet-in".into())
    );
    assert_eq!(
        pick(
            vec![node(1), opted_in.clone()],
            &[("ENABLE_SUBNET_DISCOVERY", "false")]
        ),
        Ok("subnet-node".into()),
        "discovery off: the node's subnet"
    );
    let refused = pick(vec![excluded_node, big_untagged], &[]).unwrap_err();
    assert!(
        refused[0].contains("no subnet for a new ENI"),
        "{refused:?}"
    );
    // No subnets from pool-view (no DescribeSubnets): the node's subnet, as VPC CNI falls back.
    assert_eq!(pick(Vec::new(), &[]), Ok("subnet-node".into()));
}

#[test]
fn plan_asks_for_the_whole_delta_at_once() {
    // The host calls plan again after carrying the requests out, and may call it before: the
    // same state gives the same ask, and carrying one ask out settles the pool.
    for vars in [
        WARM_ENI_1,
        WARM_IP_2_MIN_5,
        WARM_IP_5_MIN_10,
        PREFIX_1,
        PREFIX_IP_7_MIN_20,
    ] {
        let settings = env(vars).expect("settings");
        let mut pool = Pool::ec2_fixture("p3dn.24xlarge", limits(15, 50, true, 737));
        let first = plan(&pool, &settings);
        assert!(!first.intents.is_empty());
        assert_eq!(first, plan(&pool, &settings), "{vars:?}");
        let rounds = pool.settle(|p| plan(p, &settings).intents, 5);
        assert_eq!(rounds, Ok(1), "{vars:?}");
    }
    // Shrinking too: WARM_ENI surplus of several ENIs goes in one ask.
    let mut node = Node::new(T3_SMALL, WARM_ENI_1);
    node.add_pods(9);
    node.remove_pods(9);
    for eni in &mut node.pool.enis {
        eni.age_ms += MIN_ENI_AGE_MS;
    }
    node.pool.cooling.clear();
    let settings = node.settings.clone();
    assert_eq!(node.pool.settle(|p| plan(p, &settings).intents, 5), Ok(1));
    assert_eq!(node.per_eni(), [3]);
}

#[test]
fn invalid_combinations_are_refused_as_vpc_cni_does() {
    // cmd/aws-vpc-cni/main.go validateEnvVars; prefix-and-ip-target.md: prefix delegation with
    // every warm target 0 (WARM_PREFIX_TARGET unset included) is not supported.
    let refused = env(&[("ENABLE_PREFIX_DELEGATION", "true")]).unwrap_err();
    assert!(refused.contains("WARM_PREFIX_TARGET=1"), "{refused}");
    let refused = env(&[
        ("ENABLE_PREFIX_DELEGATION", "true"),
        ("WARM_PREFIX_TARGET", "0"),
        ("WARM_IP_TARGET", "0"),
    ])
    .unwrap_err();
    assert!(refused.contains("not supported"), "{refused}");
    assert!(env(&[
        ("ENABLE_PREFIX_DELEGATION", "1"),
        ("MINIMUM_IP_TARGET", "16")
    ])
    .is_ok());
    // Custom networking without an ENIConfig: VPC CNI's node never becomes ready.
    let refused = env(&[("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", "true")]).unwrap_err();
    assert!(refused.contains("ENI_CONFIG_SUBNET"), "{refused}");
    // Values name the key and the value.
    let refused = env(&[("WARM_IP_TARGET", "-1")]).unwrap_err();
    assert!(refused.contains("WARM_IP_TARGET = \"-1\""), "{refused}");
    let refused = env(&[("ENABLE_PREFIX_DELEGATION", "yes")]).unwrap_err();
    assert!(refused.contains("not a boolean"), "{refused}");
    // Defaults are VPC CNI's.
    assert_eq!(env(&[]), Ok(Settings::default()));
    assert_eq!(Settings::default().warm_eni_target, 1);
}

#[test]
fn prefix_delegation_falls_back_to_secondary_ips_off_nitro() {
    // vpc-cni.md §1.3 ENABLE_PREFIX_DELEGATION: "Nitro instances only; silently falls back to
    // secondary-IP mode otherwise" (isConfigValid) — here with a warning in the log.
    let node = Node::new(C4_LARGE, PREFIX_1);
    assert_eq!(
        node.per_eni(),
        [9],
        "secondary IPs under WARM_ENI_TARGET's default"
    );
    let decided = plan(&node.pool, &node.settings);
    assert!(decided.warnings[0].contains("does not support prefix delegation"));
}

#[test]
fn leftovers_of_the_other_mode_are_released_when_free() {
    // vpc-cni.md §3.2 step 4: leftover secondary IPs are cleaned up in prefix mode (and
    // prefixes when prefix delegation was turned off), once no pod holds them.
    let mut node = Node::new(T3_SMALL, WARM_ENI_1);
    node.add_pods(2);
    let held = node.pods.clone();
    node.settings = env(PREFIX_1).expect("settings");
    node.settle();
    let kinds: Vec<_> = node
        .pool
        .blocks
        .iter()
        .map(|b| (b.kind, Ipv4Addr::from(b.cidr.network)))
        .collect();
    for (kind, network) in &kinds {
        assert!(
            *kind == BlockKind::Prefix || held.contains(network),
            "free secondary IP {network} left behind: {kinds:?}"
        );
    }
    // 2 secondary IPs still held, 1 slot left for a prefix on the primary ENI; the second
    // ENI, emptied, is too young to go.
    assert_eq!(node.prefixes_per_eni(), [1, 0]);
    assert_eq!(node.per_eni(), [18, 0]);
}

#[test]
fn choose_is_deterministic_by_device_number_then_lowest_free_address() {
    // vpc-cni.md §3.3: VPC CNI iterates Go maps (random); here ENIs by device number, only
    // the mode's blocks, lowest address not held, cooling or excluded.
    let mut node = Node::new(T3_SMALL, WARM_ENI_1);
    node.add_pods(1);
    let primary: Vec<Ipv4Addr> = node
        .pool
        .blocks_of("eni-primary")
        .map(|b| Ipv4Addr::from(b.cidr.network))
        .collect();
    assert_eq!(node.pods, [primary[0]]);
    node.pool.cooling.insert(primary[1]);
    node.pool.excluded.insert(primary[2]);
    let next = choose(&node.pool, &node.settings).expect("an address");
    let second_eni = &node.pool.enis[1].id;
    assert_eq!(
        Some(next),
        node.pool
            .blocks_of(second_eni)
            .map(|b| Ipv4Addr::from(b.cidr.network))
            .min(),
        "primary's free ones are cooling or excluded: the next ENI's lowest"
    );
    // Prefix mode ignores secondary IPs, and the other way round.
    let mut settings = env(PREFIX_1).expect("settings");
    assert!(choose(&node.pool, &settings).is_err());
    settings.prefix_delegation = false;
    assert!(choose(&node.pool, &settings).is_ok());
}

#[test]
fn static_ranges_serve_without_ec2() {
    // With the static provider there are no ENIs: plan asks for nothing, allocate takes the
    // lowest free address of the configured ranges.
    let mut pool = Pool::ec2_fixture("", limits(0, 0, false, 0));
    pool.node.provider = wasmcni_plugin_sdk::allocator::ProviderKind::Static;
    pool.enis.clear();
    pool.subnets.clear();
    pool.blocks
        .push(wasmcni_plugin_sdk::allocator::AddressBlock {
            cidr: wasmcni_plugin_sdk::allocator::Cidr {
                network: 0xc0a8_0000,
                prefix_len: 30,
            },
            kind: BlockKind::StaticRange,
            eni_id: None,
            route_table: None,
        });
    let settings = Settings::default();
    assert!(plan(&pool, &settings).intents.is_empty());
    assert_eq!(choose(&pool, &settings), Ok(Ipv4Addr::from(0xc0a8_0001)));
    pool.in_use.insert(Ipv4Addr::from(0xc0a8_0001));
    assert_eq!(choose(&pool, &settings), Ok(Ipv4Addr::from(0xc0a8_0002)));
    pool.in_use.insert(Ipv4Addr::from(0xc0a8_0002));
    assert!(choose(&pool, &settings).is_err());
}
