//! A hostile allocator's plan against the `eni-ops` grant: any node (provider, limits, ENIs
//! owned or not, blocks, pods, cooling addresses), any scope, and any sequence of ENI calls,
//! each checked by `EniChecker` with what the call already queued, as the runtime does. Also a
//! tagger's answer against `check_tags`.
//!
//! The assertions are the grant's promises, restated here independently of the checker's
//! code: nothing on the static provider; only owned ENIs in granted subnets are changed; a new
//! ENI is in a granted, known subnet with granted security groups (at least one); the node
//! never has more ENIs than the grant and the instance allow; no ENI gets more address slots
//! than the instance type has; only free blocks of the named ENI are released, each once; an
//! ENI is deleted only when it is not the primary, holds no pod or cooling address, and
//! nothing else in the plan touches it. Accepted tags are in scope, not reserved, unique and
//! within EC2's limits.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use arbitrary::Arbitrary;
use ipnet::Ipv4Net;
use libfuzzer_sys::fuzz_target;
use wasmcni_core::grants::{check_tags, is_reserved_tag_key, EniChecker, EniScope, MAX_TAGS};
use wasmcni_core::ipam::{AddressBlock, BlockKind, Inventory};
use wasmcni_core::pool_view::ProviderKind;
use wasmcni_core::{EniInfo, EniRequest, NodeInfo, NodeLimits, PoolSnapshot, SubnetInfo};

const SUBNETS: [&str; 5] = ["node", "subnet-a", "subnet-b", "subnet-c", "subnet-x"];
/// Seven real groups, so `node` and named ones together can exceed EC2's five per ENI.
const GROUPS: [&str; 8] = [
    "node", "sg-1", "sg-2", "sg-3", "sg-4", "sg-5", "sg-6", "sg-x",
];

#[derive(Arbitrary, Debug)]
struct Eni {
    /// Index into `SUBNETS[1..]`.
    subnet: u8,
    /// Bit mask over `GROUPS[1..]` (the primary ENI's are what `node` stands for).
    groups: u8,
    owned: bool,
}

#[derive(Arbitrary, Debug)]
struct Block {
    eni: u8,
    /// The last octet of the address (a /32), or of the /28 it falls in.
    host: u8,
    prefix: bool,
}

#[derive(Arbitrary, Debug)]
enum Call {
    Create {
        subnet: u8,
        groups: Vec<u8>,
        secondary_ips: u32,
        prefixes: u32,
    },
    AssignIps {
        eni: u8,
        count: u32,
    },
    AssignPrefixes {
        eni: u8,
        count: u32,
    },
    ReleaseIps {
        eni: u8,
        hosts: Vec<u8>,
    },
    ReleasePrefixes {
        eni: u8,
        hosts: Vec<u8>,
    },
    Delete {
        eni: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Plan {
    ec2: bool,
    max_enis: u8,
    ipv4_per_eni: u8,
    prefix_delegation: bool,
    /// Bit masks over `SUBNETS` and `GROUPS` (bit 0: `node`).
    scope_subnets: u8,
    scope_groups: u8,
    scope_max_enis: Option<u8>,
    /// Bit mask over `SUBNETS[1..]`: the node's VPC/AZ subnets.
    known_subnets: u8,
    enis: Vec<Eni>,
    blocks: Vec<Block>,
    in_use: Vec<u8>,
    cooling: Vec<u8>,
    calls: Vec<Call>,
    tags: Vec<(u8, String, String)>,
    tag_scope: u8,
    own_tags: u8,
}

fn address(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, host)
}

fn block_of(host: u8, prefix: bool) -> Ipv4Net {
    if prefix {
        Ipv4Net::new(address(host & 0xf0), 28).expect("a /28")
    } else {
        Ipv4Net::from(address(host))
    }
}

fn masked(names: &[&str], mask: u8) -> BTreeSet<String> {
    names
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| (*n).to_owned())
        .collect()
}

fn eni_id(index: u8) -> String {
    format!("eni-{}", index % 6)
}

const TAG_KEYS: [&str; 6] = [
    "team",
    "cost-center",
    "aws:cloudformation",
    "AWS:Name",
    "node.k8s.amazonaws.com/instance_id",
    "",
];

fn snapshot(plan: &Plan) -> PoolSnapshot {
    let enis: Vec<EniInfo> = plan
        .enis
        .iter()
        .take(5)
        .enumerate()
        .map(|(i, e)| EniInfo {
            id: format!("eni-{i}"),
            device_number: i as u32,
            primary: i == 0,
            subnet_id: SUBNETS[1 + usize::from(e.subnet) % 4].to_owned(),
            subnet_cidr: "10.0.0.0/24".parse().expect("a CIDR"),
            security_groups: masked(&GROUPS[1..], e.groups).into_iter().collect(),
            primary_ip: Ipv4Addr::new(10, 0, 1, i as u8),
            age_ms: 0,
            tags: Vec::new(),
            owned: e.owned || i == 0,
        })
        .collect();
    let blocks = plan
        .blocks
        .iter()
        .take(32)
        .filter(|b| usize::from(b.eni % 6) < enis.len())
        .map(|b| AddressBlock {
            cidr: block_of(b.host, b.prefix),
            route_table: None,
            kind: if b.prefix {
                BlockKind::Prefix
            } else {
                BlockKind::SecondaryIp
            },
            eni_id: Some(eni_id(b.eni)),
        })
        .collect();
    PoolSnapshot {
        node: NodeInfo {
            provider: if plan.ec2 {
                ProviderKind::Ec2
            } else {
                ProviderKind::Static
            },
            instance_id: "i-fuzz".to_owned(),
            instance_type: "m5.large".to_owned(),
            availability_zone: "us-west-2a".to_owned(),
            vpc_cidrs: Vec::new(),
            limits: NodeLimits {
                max_enis: u32::from(plan.max_enis % 9),
                ipv4_per_eni: u32::from(plan.ipv4_per_eni % 17),
                prefix_delegation: plan.prefix_delegation,
                max_pods: 110,
            },
        },
        enis,
        subnets: masked(&SUBNETS[1..], plan.known_subnets)
            .into_iter()
            .map(|id| SubnetInfo {
                id,
                cidr: "10.0.0.0/16".parse().expect("a CIDR"),
                free_addresses: 100,
                tags: Vec::new(),
            })
            .collect(),
        inventory: Inventory {
            blocks,
            ..Inventory::default()
        },
        in_use: plan.in_use.iter().take(16).map(|h| address(*h)).collect(),
        cooling: plan.cooling.iter().take(16).map(|h| address(*h)).collect(),
        failures: Vec::new(),
    }
}

fn check(checker: &EniChecker<'_>, call: &Call) -> Result<EniRequest, String> {
    match call {
        Call::Create {
            subnet,
            groups,
            secondary_ips,
            prefixes,
        } => {
            let groups: Vec<String> = groups
                .iter()
                .take(8)
                .map(|g| GROUPS[usize::from(*g) % GROUPS.len()].to_owned())
                .collect();
            let subnet = SUBNETS[usize::from(*subnet) % SUBNETS.len()];
            checker.create(subnet, &groups, *secondary_ips, *prefixes)
        }
        Call::AssignIps { eni, count } => checker.assign_ips(&eni_id(*eni), *count),
        Call::AssignPrefixes { eni, count } => checker.assign_prefixes(&eni_id(*eni), *count),
        Call::ReleaseIps { eni, hosts } => {
            let addresses: Vec<Ipv4Addr> = hosts.iter().take(8).map(|h| address(*h)).collect();
            checker.release_ips(&eni_id(*eni), &addresses)
        }
        Call::ReleasePrefixes { eni, hosts } => {
            let prefixes: Vec<Ipv4Net> = hosts.iter().take(8).map(|h| block_of(*h, true)).collect();
            checker.release_prefixes(&eni_id(*eni), &prefixes)
        }
        Call::Delete { eni } => checker.delete(&eni_id(*eni)),
    }
}

fuzz_target!(|plan: Plan| {
    let pool = snapshot(&plan);
    let scope = EniScope {
        subnets: masked(&SUBNETS, plan.scope_subnets),
        security_groups: masked(&GROUPS, plan.scope_groups),
        max_enis: plan.scope_max_enis.map(|m| u32::from(m % 9)),
    };
    let mut queue: Vec<EniRequest> = Vec::new();
    for call in plan.calls.iter().take(24) {
        if let Ok(request) = check(&EniChecker::new(&scope, &pool, &queue), call) {
            queue.push(request);
        }
    }
    promises_hold(&pool, &scope, &queue);
    tags_promises_hold(&plan);
});

fn promises_hold(pool: &PoolSnapshot, scope: &EniScope, queue: &[EniRequest]) {
    if pool.node.provider != ProviderKind::Ec2 {
        assert!(queue.is_empty(), "the static provider accepted {queue:?}");
        return;
    }
    let primary = pool.enis.iter().find(|e| e.primary);
    let granted_subnet = |subnet: &str| {
        scope.subnets.contains(subnet)
            || (scope.subnets.contains("node") && primary.is_some_and(|p| p.subnet_id == subnet))
    };
    let limit_enis = scope.max_enis.map_or(pool.node.limits.max_enis, |m| {
        m.min(pool.node.limits.max_enis)
    });
    let slots = u64::from(pool.node.limits.ipv4_per_eni);
    let mut enis = pool.enis.len() as i64;
    let mut assigned: BTreeMap<&str, u64> = BTreeMap::new();
    let mut released: BTreeSet<Ipv4Net> = BTreeSet::new();
    for (at, request) in queue.iter().enumerate() {
        if let Some(id) = request.eni_id() {
            let eni = pool.enis.iter().find(|e| e.id == id);
            let eni = eni.unwrap_or_else(|| panic!("{request:?}: no such ENI"));
            assert!(eni.owned, "{request:?} changes an ENI wasmcni does not own");
            assert!(
                granted_subnet(&eni.subnet_id),
                "{request:?}: subnet {} not granted",
                eni.subnet_id
            );
        }
        match request {
            EniRequest::CreateEni {
                subnet_id,
                security_groups,
                secondary_ips,
                prefixes,
            } => {
                assert!(granted_subnet(subnet_id), "{request:?}: subnet not granted");
                let known = primary.is_some_and(|p| &p.subnet_id == subnet_id)
                    || pool.subnets.iter().any(|s| &s.id == subnet_id);
                assert!(known, "{request:?}: not a subnet of the node's VPC and AZ");
                assert!(!security_groups.is_empty(), "{request:?}: an ENI without security groups gets the VPC's default one, which nobody granted");
                assert!(
                    security_groups.len() <= 5,
                    "{request:?}: EC2 takes at most 5 groups per ENI"
                );
                for group in security_groups {
                    let granted = scope.security_groups.contains(group)
                        || (scope.security_groups.contains("node")
                            && primary.is_some_and(|p| p.security_groups.contains(group)));
                    assert!(granted, "{request:?}: security group {group} not granted");
                }
                assert!(*secondary_ips == 0 || *prefixes == 0, "{request:?}");
                assert!(
                    *prefixes == 0 || pool.node.limits.prefix_delegation,
                    "{request:?}"
                );
                assert!(
                    1 + u64::from(*secondary_ips) + u64::from(*prefixes) <= slots,
                    "{request:?}"
                );
                enis += 1;
                assert!(
                    enis <= i64::from(limit_enis),
                    "{request:?}: {enis} ENIs, the limit is {limit_enis}"
                );
            }
            EniRequest::AssignIps { eni_id, count }
            | EniRequest::AssignPrefixes { eni_id, count } => {
                assert!(*count > 0, "{request:?}");
                if matches!(request, EniRequest::AssignPrefixes { .. }) {
                    assert!(pool.node.limits.prefix_delegation, "{request:?}");
                }
                let held = pool
                    .inventory
                    .blocks
                    .iter()
                    .filter(|b| b.eni_id.as_deref() == Some(eni_id.as_str()))
                    .count() as u64;
                let total = assigned.entry(eni_id).or_insert(1 + held);
                *total += u64::from(*count);
                assert!(*total <= slots, "{request:?}: {total} of {slots} slots");
            }
            EniRequest::ReleaseIps { eni_id, addresses } => {
                let nets: Vec<Ipv4Net> = addresses.iter().map(|a| Ipv4Net::from(*a)).collect();
                released_are_free(
                    pool,
                    request,
                    eni_id,
                    &nets,
                    BlockKind::SecondaryIp,
                    &mut released,
                );
            }
            EniRequest::ReleasePrefixes { eni_id, prefixes } => {
                released_are_free(
                    pool,
                    request,
                    eni_id,
                    prefixes,
                    BlockKind::Prefix,
                    &mut released,
                );
            }
            EniRequest::DeleteEni { eni_id } => {
                let eni = pool
                    .enis
                    .iter()
                    .find(|e| &e.id == eni_id)
                    .expect("checked above");
                assert!(!eni.primary, "{request:?} deletes the primary ENI");
                for block in pool
                    .inventory
                    .blocks
                    .iter()
                    .filter(|b| b.eni_id.as_deref() == Some(eni_id.as_str()))
                {
                    let busy = pool
                        .in_use
                        .iter()
                        .chain(&pool.cooling)
                        .find(|a| block.cidr.contains(*a));
                    assert!(busy.is_none(), "{request:?}: {busy:?} is held or cooling");
                }
                let others: Vec<&EniRequest> = queue
                    .iter()
                    .enumerate()
                    .filter(|(i, r)| *i != at && r.eni_id() == Some(eni_id.as_str()))
                    .map(|(_, r)| r)
                    .collect();
                assert!(others.is_empty(), "{request:?} beside {others:?}");
                enis -= 1;
            }
        }
    }
}

fn released_are_free(
    pool: &PoolSnapshot,
    request: &EniRequest,
    eni_id: &str,
    nets: &[Ipv4Net],
    kind: BlockKind,
    released: &mut BTreeSet<Ipv4Net>,
) {
    assert!(!nets.is_empty(), "{request:?}");
    for net in nets {
        let ours = pool
            .inventory
            .blocks
            .iter()
            .any(|b| b.cidr == *net && b.kind == kind && b.eni_id.as_deref() == Some(eni_id));
        assert!(ours, "{request:?}: {net} is not a {kind:?} of {eni_id}");
        let held = pool.in_use.iter().find(|a| net.contains(*a));
        assert!(held.is_none(), "{request:?}: {held:?} is a pod's");
        assert!(released.insert(*net), "{request:?}: {net} released twice");
    }
}

fn tags_promises_hold(plan: &Plan) {
    let tags: Vec<(String, String)> = plan
        .tags
        .iter()
        .take(60)
        .map(|(pick, key, value)| {
            let key = match TAG_KEYS.get(usize::from(*pick)) {
                Some(known) => (*known).to_owned(),
                None => key.clone(),
            };
            (key, value.clone())
        })
        .collect();
    let mut scope = masked(&TAG_KEYS, plan.tag_scope);
    if let Some((key, _)) = tags.last() {
        scope.insert(key.clone());
    }
    let own = usize::from(plan.own_tags % 8);
    if check_tags(&tags, &scope, own).is_ok() {
        assert!(tags.len() + own <= MAX_TAGS);
        let mut seen = BTreeSet::new();
        for (key, value) in &tags {
            assert!(!is_reserved_tag_key(key), "reserved {key:?} accepted");
            assert!(!key.to_ascii_lowercase().starts_with("aws:"), "{key:?}");
            assert!(scope.contains(key), "{key:?} outside the scope");
            assert!(!key.is_empty() && key.chars().count() <= 128 && value.chars().count() <= 256);
            assert!(seen.insert(key), "{key:?} twice");
        }
    }
}
