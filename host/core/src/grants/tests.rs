//! The call-time lock, table-tested: each row a request, the pool it meets, and the expected
//! answer (queued, or refused naming why).

use super::*;
use crate::ipam::{AddressBlock, BlockKind, Inventory};
use crate::pool_view::{EniInfo, NodeInfo, NodeLimits, SubnetInfo};

const NODE_SUBNET: &str = "subnet-0000000a";
const OTHER_SUBNET: &str = "subnet-0000000b";

fn eni(id: &str, device: u32) -> EniInfo {
    EniInfo {
        id: id.to_owned(),
        device_number: device,
        primary: device == 0,
        subnet_id: NODE_SUBNET.to_owned(),
        subnet_cidr: "10.0.0.0/24".parse().unwrap(),
        security_groups: vec!["sg-0000000a".to_owned()],
        primary_ip: format!("10.0.0.{}", 10 + device).parse().unwrap(),
        age_ms: 120_000,
        tags: vec![],
        owned: true,
    }
}

fn block(cidr: &str, kind: BlockKind, eni: &str) -> AddressBlock {
    AddressBlock {
        cidr: cidr.parse().unwrap(),
        route_table: None,
        kind,
        eni_id: Some(eni.to_owned()),
    }
}

/// A t3.medium-like node (3 ENIs of 6 addresses), the primary ENI holding two secondary IPs
/// (one held by a pod), a second ENI holding a /28 prefix, and one cooling address.
fn pool() -> PoolSnapshot {
    PoolSnapshot {
        node: NodeInfo {
            provider: crate::pool_view::ProviderKind::Ec2,
            instance_id: "i-0000000a".into(),
            instance_type: "t3.medium".into(),
            availability_zone: "us-west-2a".into(),
            vpc_cidrs: vec!["10.0.0.0/16".parse().unwrap()],
            limits: NodeLimits {
                max_enis: 3,
                ipv4_per_eni: 6,
                prefix_delegation: true,
                max_pods: 17,
            },
        },
        enis: vec![eni("eni-0", 0), eni("eni-1", 1)],
        subnets: vec![SubnetInfo {
            id: OTHER_SUBNET.into(),
            cidr: "10.0.1.0/24".parse().unwrap(),
            free_addresses: 200,
            tags: vec![],
        }],
        inventory: Inventory {
            blocks: vec![
                block("10.0.0.20/32", BlockKind::SecondaryIp, "eni-0"),
                block("10.0.0.21/32", BlockKind::SecondaryIp, "eni-0"),
                block("10.0.0.32/28", BlockKind::Prefix, "eni-1"),
            ],
            excluded: Default::default(),
            ipv6: Vec::new(),
            excluded_v6: Default::default(),
        },
        in_use: vec!["10.0.0.20".parse().unwrap()],
        cooling: vec!["10.0.0.33".parse().unwrap()],
        failures: Vec::new(),
    }
}

fn scope(subnets: &[&str], groups: &[&str], max_enis: Option<u32>) -> EniScope {
    EniScope {
        subnets: subnets.iter().map(|s| s.to_string()).collect(),
        security_groups: groups.iter().map(|s| s.to_string()).collect(),
        max_enis,
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Found by the `eni_grants` fuzz target: `node` resolving to no group would have created an
/// ENI EC2 gives the VPC's default security group, which no grant names.
#[test]
fn security_group_node_without_a_primary_group_is_refused() {
    let mut pool = pool();
    pool.enis[0].security_groups.clear();
    let node = scope(&["node"], &["node"], None);
    let err = EniChecker::new(&node, &pool, &[])
        .create("node", &strings(&["node"]), 1, 0)
        .unwrap_err();
    assert!(err.contains("`node` names no group"), "{err}");
    pool.enis.remove(0);
    let subnet = scope(&[OTHER_SUBNET], &["node"], None);
    let err = EniChecker::new(&subnet, &pool, &[])
        .create(OTHER_SUBNET, &strings(&["node", "node"]), 1, 0)
        .unwrap_err();
    assert!(err.contains("`node` names no group"), "{err}");
}

#[test]
fn security_groups_are_counted_after_node_is_resolved() {
    let mut pool = pool();
    pool.enis[0].security_groups = strings(&["sg-1", "sg-2", "sg-3", "sg-4"]);
    let groups = scope(&["node"], &["node", "sg-5", "sg-6"], None);
    let err = EniChecker::new(&groups, &pool, &[])
        .create("node", &strings(&["node", "sg-5", "sg-6"]), 1, 0)
        .unwrap_err();
    assert!(
        err.contains("resolve to 6 (sg-1, sg-2, sg-3, sg-4, sg-5, sg-6)"),
        "{err}"
    );
    let fine =
        EniChecker::new(&groups, &pool, &[]).create("node", &strings(&["node", "sg-5"]), 1, 0);
    assert!(fine.is_ok(), "{fine:?}");
}

#[test]
fn create_eni_is_held_to_subnets_groups_and_eni_count() {
    let pool = pool();
    let node = scope(&["node"], &["node"], None);
    // (scope, subnet, security groups, secondary IPs, prefixes, expected)
    type Case<'a> = (
        EniScope,
        &'a str,
        Vec<String>,
        u32,
        u32,
        Result<(), &'a str>,
    );
    let cases: Vec<Case> = vec![
        (node.clone(), "node", strings(&["node"]), 5, 0, Ok(())),
        (
            node.clone(),
            NODE_SUBNET,
            strings(&["sg-0000000a"]),
            0,
            2,
            Ok(()),
        ),
        (
            node.clone(),
            OTHER_SUBNET,
            strings(&["node"]),
            1,
            0,
            Err("subnet subnet-0000000b is outside the plugin's eni-ops grant (subnets: [node])"),
        ),
        (
            scope(&[OTHER_SUBNET], &["node"], None),
            OTHER_SUBNET,
            strings(&["node"]),
            1,
            0,
            Ok(()),
        ),
        (
            scope(&["subnet-0000000c"], &["node"], None),
            "subnet-0000000c",
            strings(&["node"]),
            1,
            0,
            Err("not a subnet of this node's VPC"),
        ),
        (
            node.clone(),
            "node",
            strings(&["sg-0000000f"]),
            1,
            0,
            Err("security group sg-0000000f is outside the plugin's eni-ops grant"),
        ),
        (
            node.clone(),
            "node",
            strings(&[]),
            1,
            0,
            Err("1 to 5 security groups"),
        ),
        (
            scope(&["node"], &["node"], Some(2)),
            "node",
            strings(&["node"]),
            1,
            0,
            Err("the node would have 3 ENIs; the limit is 2 (the plugin's eni-ops grant)"),
        ),
        (
            node.clone(),
            "node",
            strings(&["node"]),
            6,
            0,
            Err("at most 5 secondary addresses"),
        ),
        (
            node.clone(),
            "node",
            strings(&["node"]),
            1,
            1,
            Err("not both"),
        ),
    ];
    for (scope, subnet, groups, ips, prefixes, expected) in cases {
        let got = EniChecker::new(&scope, &pool, &[]).create(subnet, &groups, ips, prefixes);
        match (expected, &got) {
            (
                Ok(()),
                Ok(EniRequest::CreateEni {
                    subnet_id,
                    security_groups,
                    ..
                }),
            ) => {
                let wanted = if subnet == "node" {
                    NODE_SUBNET
                } else {
                    subnet
                };
                assert_eq!(subnet_id, wanted);
                assert!(!security_groups.is_empty());
            }
            (Err(expected), Err(why)) => {
                assert!(why.contains(expected), "{subnet} {groups:?}: {why}")
            }
            (expected, got) => {
                panic!("{subnet} {groups:?} {ips}/{prefixes}: expected {expected:?}, got {got:?}")
            }
        }
    }
    // `node` is resolved, never passed on.
    let request = EniChecker::new(&node, &pool, &[])
        .create("node", &strings(&["node"]), 1, 0)
        .unwrap();
    assert_eq!(
        request,
        EniRequest::CreateEni {
            subnet_id: NODE_SUBNET.into(),
            security_groups: strings(&["sg-0000000a"]),
            secondary_ips: 1,
            prefixes: 0
        }
    );
    // The instance limit counts creates queued earlier in the same call.
    let queued = [request];
    let err = EniChecker::new(&node, &pool, &queued)
        .create("node", &strings(&["node"]), 1, 0)
        .unwrap_err();
    assert!(
        err.contains("would have 4 ENIs; the limit is 3 (the instance type)"),
        "{err}"
    );
}

#[test]
fn assignments_respect_per_eni_slots_including_queued_ones() {
    let pool = pool();
    let node = scope(&["node"], &["node"], None);
    // eni-0: primary + 2 secondary = 3 of 6 slots.
    assert!(EniChecker::new(&node, &pool, &[])
        .assign_ips("eni-0", 3)
        .is_ok());
    let err = EniChecker::new(&node, &pool, &[])
        .assign_ips("eni-0", 4)
        .unwrap_err();
    assert!(
        err.contains("3 of 6 address slots in use; 4 more do not fit"),
        "{err}"
    );
    let queued = [EniRequest::AssignIps {
        eni_id: "eni-0".into(),
        count: 2,
    }];
    let err = EniChecker::new(&node, &pool, &queued)
        .assign_prefixes("eni-0", 2)
        .unwrap_err();
    assert!(err.contains("5 of 6"), "{err}");
    let err = EniChecker::new(&node, &pool, &[])
        .assign_ips("eni-9", 1)
        .unwrap_err();
    assert_eq!(err, "ENI eni-9 is not an ENI of this node the daemon manages (trunk, branch, EFA and no_manage ENIs never are)");
    assert!(EniChecker::new(&node, &pool, &[])
        .assign_ips("eni-0", 0)
        .is_err());
    let mut no_pd = pool.clone();
    no_pd.node.limits.prefix_delegation = false;
    let err = EniChecker::new(&node, &no_pd, &[])
        .assign_prefixes("eni-1", 1)
        .unwrap_err();
    assert!(err.contains("cannot take /28 prefixes"), "{err}");
}

#[test]
fn releases_never_touch_a_pod_address_and_deletes_never_the_primary() {
    let pool = pool();
    let node = scope(&["node"], &["node"], None);
    let check = EniChecker::new(&node, &pool, &[]);
    assert!(check
        .release_ips("eni-0", &["10.0.0.21".parse().unwrap()])
        .is_ok());
    let err = check
        .release_ips("eni-0", &["10.0.0.20".parse().unwrap()])
        .unwrap_err();
    assert_eq!(
        err,
        "10.0.0.20 in 10.0.0.20/32 is held by a pod; it cannot be released"
    );
    let err = check
        .release_ips("eni-1", &["10.0.0.21".parse().unwrap()])
        .unwrap_err();
    assert_eq!(err, "10.0.0.21/32 is not a secondary IP of ENI eni-1");
    let err = check
        .release_prefixes("eni-0", &["10.0.0.32/28".parse().unwrap()])
        .unwrap_err();
    assert_eq!(err, "10.0.0.32/28 is not a prefix of ENI eni-0");
    assert!(check
        .release_prefixes("eni-1", &["10.0.0.32/28".parse().unwrap()])
        .is_ok());
    assert_eq!(
        check.delete("eni-0").unwrap_err(),
        "ENI eni-0 is the node's primary ENI"
    );
    assert_eq!(
        check.delete("eni-1").unwrap_err(),
        "ENI eni-1 has address 10.0.0.33 cooling down"
    );
    let mut cooled = pool.clone();
    cooled.cooling.clear();
    assert!(EniChecker::new(&node, &cooled, &[]).delete("eni-1").is_ok());
    cooled.in_use.push("10.0.0.40".parse().unwrap());
    let err = EniChecker::new(&node, &cooled, &[])
        .delete("eni-1")
        .unwrap_err();
    assert_eq!(err, "ENI eni-1 still carries pod address 10.0.0.40");
}

#[test]
fn requests_on_an_eni_are_held_to_its_owner_and_the_grants_subnets() {
    // eni-1 as an operator's ENI (no ownership tags), and as an owned ENI in a subnet outside
    // the grant: every request that would change it is refused, naming why.
    let ip = |text: &str| -> Ipv4Addr { text.parse().unwrap() };
    let node = scope(&["node"], &["node"], None);
    let mut foreign = pool();
    foreign.enis[1].owned = false;
    foreign.cooling.clear();
    let mut elsewhere = pool();
    elsewhere.enis[1].subnet_id = OTHER_SUBNET.into();
    elsewhere.cooling.clear();
    let not_ours = "ENI eni-1 was not created by wasmcni for this node and cluster (no ownership tags); the daemon never changes it";
    let out_of_scope =
        "ENI eni-1 is in subnet subnet-0000000b, outside the plugin's eni-ops grant (subnets: [node])";
    type Request = fn(&EniChecker<'_>) -> Result<EniRequest, String>;
    let requests: [(&str, Request); 4] = [
        ("assign-ips", |c| c.assign_ips("eni-1", 1)),
        ("assign-prefixes", |c| c.assign_prefixes("eni-1", 1)),
        ("release-prefixes", |c| {
            c.release_prefixes("eni-1", &["10.0.0.32/28".parse().unwrap()])
        }),
        ("delete-eni", |c| c.delete("eni-1")),
    ];
    for (name, request) in requests {
        assert_eq!(
            request(&EniChecker::new(&node, &foreign, &[])).unwrap_err(),
            not_ours,
            "{name}"
        );
        assert_eq!(
            request(&EniChecker::new(&node, &elsewhere, &[])).unwrap_err(),
            out_of_scope,
            "{name}"
        );
        // Granted that subnet explicitly, the owned ENI may be changed.
        let wide = scope(&["node", OTHER_SUBNET], &["node"], None);
        assert!(
            request(&EniChecker::new(&wide, &elsewhere, &[])).is_ok(),
            "{name}"
        );
    }
    // The primary ENI is the node's own: its pool may be grown and shrunk, it is never deleted.
    let primary_only = pool();
    let check = EniChecker::new(&node, &primary_only, &[]);
    assert!(check.assign_ips("eni-0", 1).is_ok());
    assert!(check.release_ips("eni-0", &[ip("10.0.0.21")]).is_ok());
}

#[test]
fn duplicate_releases_are_refused_and_deletes_conflict_with_queued_work() {
    let node = scope(&["node"], &["node"], None);
    let mut pool = pool();
    pool.cooling.clear();
    pool.inventory
        .blocks
        .push(block("10.0.0.22/32", BlockKind::SecondaryIp, "eni-0"));
    let a: Ipv4Addr = "10.0.0.21".parse().unwrap();
    let b: Ipv4Addr = "10.0.0.22".parse().unwrap();
    let check = EniChecker::new(&node, &pool, &[]);
    assert_eq!(
        check.release_ips("eni-0", &[a, b, a]).unwrap_err(),
        "10.0.0.21/32 is listed twice"
    );
    assert_eq!(
        check.release_ips("eni-0", &[]).unwrap_err(),
        "nothing to release: the list is empty"
    );
    let queued = [EniRequest::ReleaseIps {
        eni_id: "eni-0".into(),
        addresses: vec![a],
    }];
    let check = EniChecker::new(&node, &pool, &queued);
    assert_eq!(
        check.release_ips("eni-0", &[b, a]).unwrap_err(),
        "10.0.0.21/32 is already queued for release in this call"
    );
    assert!(check.release_ips("eni-0", &[b]).is_ok());
    // A delete after other requests for the same ENI, and requests after its delete.
    let assign = [EniRequest::AssignIps {
        eni_id: "eni-1".into(),
        count: 1,
    }];
    assert!(EniChecker::new(&node, &pool, &assign)
        .delete("eni-1")
        .unwrap_err()
        .contains("has other requests queued in this call"));
    let delete = [EniRequest::DeleteEni {
        eni_id: "eni-1".into(),
    }];
    let check = EniChecker::new(&node, &pool, &delete);
    assert_eq!(
        check.assign_prefixes("eni-1", 1).unwrap_err(),
        "ENI eni-1 is already queued for deletion in this call"
    );
    assert_eq!(
        check.delete("eni-1").unwrap_err(),
        "ENI eni-1 is already being deleted"
    );
}

#[test]
fn counts_near_u32_max_never_wrap_past_a_check() {
    let node = scope(&["node"], &["node"], None);
    let pool = pool();
    let check = EniChecker::new(&node, &pool, &[]);
    let groups = strings(&["node"]);
    for (ips, prefixes) in [
        (u32::MAX, 0),
        (0, u32::MAX),
        (u32::MAX, u32::MAX),
        (2, u32::MAX - 1),
        (u32::MAX - 1, 2),
    ] {
        let err = check.create("node", &groups, ips, prefixes).unwrap_err();
        assert!(
            err.contains("at most 5 secondary addresses") || err.contains("not both"),
            "{ips}/{prefixes}: {err}"
        );
    }
    for count in [u32::MAX, u32::MAX - 1, u32::MAX - 2] {
        for request in [
            check.assign_ips("eni-0", count),
            check.assign_prefixes("eni-0", count),
        ] {
            let err = request.unwrap_err();
            assert!(err.contains("more do not fit"), "{count}: {err}");
        }
    }
    // Already-queued counts near the limit do not wrap the sum either.
    let queued = [EniRequest::AssignIps {
        eni_id: "eni-0".into(),
        count: u32::MAX,
    }];
    let err = EniChecker::new(&node, &pool, &queued)
        .assign_ips("eni-0", u32::MAX)
        .unwrap_err();
    assert!(err.contains("more do not fit"), "{err}");
}

#[test]
fn the_static_provider_refuses_every_eni_request() {
    let pool = PoolSnapshot::default();
    let node = scope(&["node"], &["node"], None);
    let err = EniChecker::new(&node, &pool, &[])
        .assign_ips("eni-0", 1)
        .unwrap_err();
    assert_eq!(
        err,
        "the static provider has no ENIs; eni-ops requests need the EC2 provider"
    );
}

#[test]
fn netlink_requests_stay_within_mtu_and_routes() {
    let scope = NetlinkScope {
        mtu: Some((1280, 9001)),
        routes: vec!["10.0.0.0/8".parse().unwrap()],
    };
    assert_eq!(
        scope.check_mtu(1500),
        Ok(NetlinkRequest::SetMtu { mtu: 1500 })
    );
    assert_eq!(
        scope.check_mtu(65535).unwrap_err(),
        "MTU 65535 is outside the plugin's netlink grant (1280 to 9001)"
    );
    assert!(scope.check_route("10.1.0.0/16".parse().unwrap()).is_ok());
    assert_eq!(
        scope.check_route("0.0.0.0/0".parse().unwrap()).unwrap_err(),
        "route to 0.0.0.0/0 is outside the plugin's netlink grant (routes: [10.0.0.0/8])"
    );
    assert!(scope
        .check_route("10.1.0.1/16".parse().unwrap())
        .unwrap_err()
        .contains("host bits"));
    assert!(NetlinkScope::default()
        .check_mtu(1500)
        .unwrap_err()
        .contains("no mtu range"));
}

#[test]
fn tagger_answers_are_held_to_tag_keys_and_reserved_keys() {
    let keys: BTreeSet<String> = ["team", "wasmcni.io/cluster"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let tags = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert!(check_tags(
        &tags(&[("team", "net"), ("wasmcni.io/cluster", "c")]),
        &keys,
        3
    )
    .is_ok());
    let cases = [
        (
            tags(&[("aws:cloudformation:stack-name", "x")]),
            "is reserved",
        ),
        (tags(&[("AWS:foo", "x")]), "is reserved"),
        (
            tags(&[("cluster.k8s.amazonaws.com/name", "x")]),
            "is reserved",
        ),
        (
            tags(&[("owner", "x")]),
            "outside the plugin's tag_keys scope [team, wasmcni.io/cluster]",
        ),
        (tags(&[("team", "x"), ("team", "y")]), "appears twice"),
        (tags(&[("team", &"v".repeat(257))]), "at most 256"),
    ];
    for (answer, expected) in cases {
        let err = check_tags(&answer, &keys, 3).unwrap_err();
        assert!(err.contains(expected), "{answer:?}: {err}");
    }
    let many: Vec<(String, String)> = (0..48).map(|n| (format!("k{n}"), String::new())).collect();
    assert!(check_tags(&many, &keys, 3)
        .unwrap_err()
        .contains("exceed EC2's limit of 50"));
}

#[test]
fn imports_are_classified_by_package_version_and_interface() {
    assert_eq!(Import::classify("wasmcni:plugin/types@0.3.0"), Import::Free);
    assert_eq!(
        Import::classify("wasmcni:plugin/config@0.3.0"),
        Import::Free
    );
    assert_eq!(
        Import::classify("wasmcni:plugin/eni-ops@0.3.0"),
        Import::Needs(Capability::EniOps)
    );
    // Any 0.3.x is the same package to the grants (linking checks what a newer one uses).
    assert_eq!(
        Import::classify("wasmcni:plugin/eni-ops@0.3.7"),
        Import::Needs(Capability::EniOps)
    );
    // A component built against 0.2 (bare exports, string codes) is not linked.
    assert_eq!(
        Import::classify("wasmcni:plugin/log@0.2.0"),
        Import::Foreign
    );
    // WASI 0.2's command interfaces need the `wasi` grant; other WASI packages and
    // versions are nothing the daemon links.
    assert_eq!(
        Import::classify("wasi:cli/stdout@0.2.0"),
        Import::Needs(Capability::Wasi)
    );
    assert_eq!(
        Import::classify("wasi:http/outgoing-handler@0.2.9"),
        Import::Foreign
    );
    assert_eq!(Import::classify("wasi:cli/stdout@0.3.0"), Import::Foreign);
    assert_eq!(
        Import::classify("wasmcni:plugin/shell@0.3.0"),
        Import::Foreign
    );
}

#[test]
fn package_versions_are_compatible_within_0_3() {
    for version in ["0.3.0", "0.3.1", "0.3.12", "0.3.0+build.7"] {
        assert!(compatible(version), "{version}");
    }
    for version in [
        "0.2.0",
        "0.4.0",
        "1.3.0",
        "0.3",
        "0.3.0-rc1",
        "0.3.x",
        "",
        "0.3.0.1",
    ] {
        assert!(!compatible(version), "{version}");
    }
    assert!(newer("0.3.1"));
    assert!(!newer("0.3.0"));
    assert!(!newer("0.4.0"));
    assert_eq!(
        incompatible_package_version("wasmcni:plugin/log@0.2.0"),
        Some("0.2.0")
    );
    assert_eq!(
        incompatible_package_version("wasmcni:plugin/allocator@0.3.4"),
        None
    );
    assert_eq!(incompatible_package_version("wasi:cli/stdout@0.2.0"), None);
    assert_eq!(incompatible_package_version("allocate"), None);
    assert_eq!(
        exported_kind("wasmcni:plugin/allocator@0.3.2"),
        Some(PluginKind::Allocator)
    );
    assert_eq!(exported_kind("wasmcni:plugin/policy@0.2.0"), None);
    assert_eq!(exported_kind("wasmcni:plugin/pool-view@0.3.0"), None);
    assert_eq!(exported_kind("evaluate"), None);
    let imports = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert_eq!(
        unknown_newer_import(&imports(&["wasmcni:plugin/log@0.3.9"]), "0.3.9"),
        None
    );
    assert_eq!(
        unknown_newer_import(
            &imports(&["wasmcni:plugin/log@0.3.9", "wasmcni:plugin/dns@0.3.9"]),
            "0.3.9"
        ),
        Some(
            "built against wasmcni:plugin@0.3.9, newer than this daemon's 0.3.0, and it imports \
             wasmcni:plugin/dns@0.3.9, which 0.3.0 does not have"
                .into()
        )
    );
    // WASI and other packages are the grants' to refuse, by name.
    assert_eq!(
        unknown_newer_import(&imports(&["wasi:cli/stdout@0.2.0"]), "0.3.9"),
        None
    );
}

#[test]
fn failure_policies_default_closed_except_policy_del() {
    let policy = FailurePolicy::defaults(PluginKind::Policy);
    assert_eq!(policy.of(Hook::Add), FailureMode::Closed);
    assert_eq!(policy.of(Hook::Del), FailureMode::Open);
    assert_eq!(policy.of(Hook::Check), FailureMode::Closed);
    assert_eq!(
        FailurePolicy::defaults(PluginKind::Allocator).of(Hook::Allocate),
        FailureMode::Closed
    );
    assert_eq!(
        FailurePolicy::defaults(PluginKind::Tagger).of(Hook::Tags),
        FailureMode::Closed
    );
}
