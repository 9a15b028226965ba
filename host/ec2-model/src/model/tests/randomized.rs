//! Seeded random walks over the whole API: after every action, successful or not, the model's
//! invariants hold (no address or prefix twice in a subnet, no reserved address handed out,
//! per-ENI and per-instance limits kept, every address inside its subnet), and the same seed
//! always gives the same state.

use std::collections::BTreeMap;

use super::{first_64, net4};
use crate::rng::SeededRng;
use crate::types::NetworkInterfaceStatus;
use crate::{
    codes, AllocationPolicy, AssignIpv6Addresses, AssignPrivateIpAddresses, CreateNetworkInterface,
    Ec2Model, Ec2Result, ModifyNetworkInterfaceAttribute, Page, RunInstance, Tag,
    UnassignIpv6Addresses, UnassignPrivateIpAddresses,
};

const TYPES: &[&str] = &[
    "t3.medium",
    "m5.large",
    "t2.medium",
    "p4d.24xlarge",
    "c5.large",
    "m4.large",
    "t3.nano",
];

/// Codes a random walk may legitimately run into.
const EXPECTED: &[&str] = &[
    codes::ATTACHMENT_LIMIT_EXCEEDED,
    codes::PRIVATE_IP_ADDRESS_LIMIT_EXCEEDED,
    codes::INSUFFICIENT_FREE_ADDRESSES_IN_SUBNET,
    codes::INSUFFICIENT_CIDR_BLOCKS,
    codes::INVALID_NETWORK_INTERFACE_IN_USE,
    codes::INVALID_IP_ADDRESS_IN_USE,
    codes::OPERATION_NOT_PERMITTED,
    codes::INVALID_PARAMETER_VALUE,
    codes::INVALID_PARAMETER_COMBINATION,
    codes::INCORRECT_INSTANCE_STATE,
];

fn pick<'a, T>(rng: &mut SeededRng, items: &'a [T]) -> Option<&'a T> {
    if items.is_empty() {
        None
    } else {
        items.get(rng.below(items.len() as u64) as usize)
    }
}

fn chance(rng: &mut SeededRng, percent: u64) -> bool {
    rng.below(100) < percent
}

/// Run `steps` random actions and return a JSON snapshot of the final state plus how often
/// each error code came up.
fn random_walk(
    seed: u64,
    policy: AllocationPolicy,
    steps: usize,
) -> (String, BTreeMap<&'static str, u32>) {
    let mut ec2 = Ec2Model::new(seed).with_allocation_policy(policy);
    let mut rng = SeededRng::new(seed.wrapping_mul(31).wrapping_add(17));
    let vpc = ec2.create_vpc(net4("10.0.0.0/16")).expect("vpc");
    let v6 = ec2.assign_vpc_ipv6_cidr_block(&vpc.id).expect("ipv6");
    let mut subnets = Vec::new();
    for (cidr, az) in [
        ("10.0.0.0/26", "us-west-2a"),
        ("10.0.0.64/27", "us-west-2a"),
        ("10.0.1.0/24", "us-west-2a"),
        ("10.0.2.0/25", "us-west-2b"),
    ] {
        subnets.push(
            ec2.create_subnet(&vpc.id, net4(cidr), az)
                .expect("subnet")
                .id,
        );
    }
    ec2.associate_subnet_ipv6_cidr_block(&subnets[2], first_64(v6))
        .expect("ipv6 subnet");
    let mut errors: BTreeMap<&'static str, u32> = BTreeMap::new();

    for step in 0..steps {
        let instances: Vec<String> = ec2
            .describe_instances(&[], &[], &Page::all())
            .expect("describe")
            .items
            .into_iter()
            .filter(|d| d.instance.state == crate::InstanceState::Running)
            .map(|d| d.instance.id)
            .collect();
        let enis: Vec<crate::NetworkInterface> = ec2
            .describe_network_interfaces(&[], &[], &Page::all())
            .expect("describe")
            .items;
        let available: Vec<String> = enis
            .iter()
            .filter(|e| e.status == NetworkInterfaceStatus::Available)
            .map(|e| e.id.clone())
            .collect();
        let eni_ids: Vec<String> = enis.iter().map(|e| e.id.clone()).collect();
        let attachments: Vec<String> = enis
            .iter()
            .filter_map(|e| e.attachment.as_ref().map(|a| a.attachment_id.clone()))
            .collect();

        let result: Ec2Result<()> = match rng.below(17) {
            0 if instances.len() < 10 => {
                let instance_type = pick(&mut rng, TYPES).copied().unwrap_or("m5.large");
                let subnet = pick(&mut rng, &subnets).cloned().unwrap_or_default();
                ec2.run_instance(RunInstance::new(instance_type, subnet))
                    .map(drop)
            }
            1 if chance(&mut rng, 30) => match pick(&mut rng, &instances) {
                Some(id) => ec2.terminate_instance(id).map(drop),
                None => Ok(()),
            },
            2 | 3 => {
                let subnet = pick(&mut rng, &subnets).cloned().unwrap_or_default();
                let mut request = CreateNetworkInterface::new(&subnet);
                match rng.below(3) {
                    0 => request.secondary_private_ip_address_count = Some(1 + rng.below(6) as u32),
                    1 => request.ipv4_prefix_count = Some(1 + rng.below(2) as u32),
                    _ => {}
                }
                if subnet == subnets[2] && chance(&mut rng, 30) {
                    request.ipv6_address_count = Some(1 + rng.below(3) as u32);
                }
                ec2.create_network_interface(request).map(drop)
            }
            4 | 5 => match (pick(&mut rng, &available), pick(&mut rng, &instances)) {
                (Some(eni), Some(instance)) => {
                    let device = 1 + rng.below(4) as u32;
                    let card = chance(&mut rng, 20).then(|| rng.below(2) as u32);
                    ec2.attach_network_interface(eni, instance, device, card)
                        .map(drop)
                }
                _ => Ok(()),
            },
            6 => match pick(&mut rng, &attachments) {
                Some(id) => ec2.detach_network_interface(id, false),
                None => Ok(()),
            },
            7 => match pick(&mut rng, &eni_ids) {
                Some(id) => ec2.delete_network_interface(id),
                None => Ok(()),
            },
            8 | 9 => match pick(&mut rng, &eni_ids) {
                Some(id) => ec2
                    .assign_private_ip_addresses(AssignPrivateIpAddresses::count(
                        id,
                        1 + rng.below(8) as u32,
                    ))
                    .map(drop),
                None => Ok(()),
            },
            10 => match pick(&mut rng, &eni_ids) {
                Some(id) => ec2
                    .assign_private_ip_addresses(AssignPrivateIpAddresses::prefix_count(
                        id,
                        1 + rng.below(2) as u32,
                    ))
                    .map(drop),
                None => Ok(()),
            },
            11 => match pick(&mut rng, &enis) {
                Some(eni) => {
                    let addresses: Vec<_> = eni
                        .secondary_private_ip_addresses
                        .iter()
                        .copied()
                        .filter(|_| chance(&mut rng, 50))
                        .collect();
                    let prefixes: Vec<_> = eni
                        .ipv4_prefixes
                        .iter()
                        .copied()
                        .filter(|_| chance(&mut rng, 50))
                        .collect();
                    ec2.unassign_private_ip_addresses(UnassignPrivateIpAddresses {
                        network_interface_id: eni.id.clone(),
                        private_ip_addresses: addresses,
                        ipv4_prefixes: prefixes,
                    })
                    .or_else(|e| {
                        if e.code == codes::MISSING_PARAMETER {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                }
                None => Ok(()),
            },
            12 => match pick(&mut rng, &eni_ids) {
                Some(id) if chance(&mut rng, 50) => ec2
                    .assign_ipv6_addresses(AssignIpv6Addresses::count(id, 1 + rng.below(3) as u32))
                    .map(drop),
                Some(id) => ec2
                    .assign_ipv6_addresses(AssignIpv6Addresses::prefix_count(id, 1))
                    .map(drop),
                None => Ok(()),
            },
            13 => match pick(&mut rng, &enis) {
                Some(eni) if !eni.ipv6_addresses.is_empty() || !eni.ipv6_prefixes.is_empty() => ec2
                    .unassign_ipv6_addresses(UnassignIpv6Addresses {
                        network_interface_id: eni.id.clone(),
                        ipv6_addresses: eni.ipv6_addresses.iter().take(1).copied().collect(),
                        ipv6_prefixes: eni.ipv6_prefixes.clone(),
                    })
                    .map(drop),
                _ => Ok(()),
            },
            14 => match pick(&mut rng, &enis) {
                Some(eni) => match &eni.attachment {
                    Some(a) => {
                        ec2.modify_network_interface_attribute(ModifyNetworkInterfaceAttribute {
                            network_interface_id: eni.id.clone(),
                            attachment_delete_on_termination: Some((
                                a.attachment_id.clone(),
                                chance(&mut rng, 50),
                            )),
                            ..ModifyNetworkInterfaceAttribute::default()
                        })
                    }
                    None => Ok(()),
                },
                None => Ok(()),
            },
            15 => match pick(&mut rng, &eni_ids) {
                Some(id) => ec2.create_tags(
                    std::slice::from_ref(id),
                    &[Tag::new(format!("k{}", rng.below(60)), "v")],
                ),
                None => Ok(()),
            },
            16 => match pick(&mut rng, &enis) {
                Some(eni) => {
                    // A specific address anywhere in the subnet, often taken or reserved.
                    let subnet = ec2.subnet(&eni.subnet_id).expect("subnet");
                    let size = 1u64 << (32 - subnet.cidr_block.prefix_len());
                    let address = std::net::Ipv4Addr::from(
                        u32::from(subnet.cidr_block.network()) + rng.below(size) as u32,
                    );
                    let mut request = AssignPrivateIpAddresses::addresses(&eni.id, vec![address]);
                    request.allow_reassignment = chance(&mut rng, 30);
                    ec2.assign_private_ip_addresses(request).map(drop)
                }
                None => Ok(()),
            },
            _ => Ok(()),
        };
        if let Err(err) = result {
            assert!(
                EXPECTED.contains(&err.code),
                "seed {seed} step {step}: unexpected {err}"
            );
            *errors.entry(err.code).or_default() += 1;
        }
        if let Err(violation) = ec2.check_invariants() {
            panic!("seed {seed} ({policy:?}) step {step}: {violation}");
        }
    }

    let snapshot = serde_json::json!({
        "enis": ec2.describe_network_interfaces(&[], &[], &Page::all()).expect("enis").items,
        "instances": ec2.describe_instances(&[], &[], &Page::all()).expect("instances").items,
        "subnets": ec2.describe_subnets(&[], &[], &Page::all()).expect("subnets").items,
        "generation": ec2.generation(),
    });
    (snapshot.to_string(), errors)
}

#[test]
fn random_walks_keep_every_invariant() {
    let mut seen: BTreeMap<&'static str, u32> = BTreeMap::new();
    for seed in 1..=6 {
        for policy in [AllocationPolicy::LowestFree, AllocationPolicy::Seeded] {
            let (_, errors) = random_walk(seed, policy, 1500);
            for (code, n) in errors {
                *seen.entry(code).or_default() += n;
            }
        }
    }
    // The walks must actually reach the limits they are meant to exercise.
    for code in [
        codes::ATTACHMENT_LIMIT_EXCEEDED,
        codes::PRIVATE_IP_ADDRESS_LIMIT_EXCEEDED,
        codes::INSUFFICIENT_FREE_ADDRESSES_IN_SUBNET,
        codes::INSUFFICIENT_CIDR_BLOCKS,
        codes::OPERATION_NOT_PERMITTED,
        codes::INVALID_PARAMETER_VALUE,
    ] {
        assert!(seen.contains_key(code), "no walk hit {code}: {seen:?}");
    }
}

#[test]
fn the_same_seed_gives_the_same_state() {
    for policy in [AllocationPolicy::LowestFree, AllocationPolicy::Seeded] {
        let (first, _) = random_walk(42, policy, 600);
        let (second, _) = random_walk(42, policy, 600);
        assert_eq!(first, second, "{policy:?}");
        let (other, _) = random_walk(43, policy, 600);
        assert_ne!(first, other, "{policy:?}");
    }
}
