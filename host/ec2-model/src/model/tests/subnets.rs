//! Subnet rules: AWS's five reserved addresses, unique addresses, exhaustion, /28 alignment and
//! fragmentation, and the VPC/subnet CIDR checks.

use super::{code, ip, net4, Fixture};
use crate::{
    codes, AllocationPolicy, AssignPrivateIpAddresses, CreateNetworkInterface, Ec2Model,
    RunInstance,
};

#[test]
fn a_slash_28_has_eleven_usable_addresses_and_then_runs_out() {
    let mut f = Fixture::new();
    let tiny = f.subnet("10.0.9.0/28", "us-west-2a");
    assert_eq!(tiny.available_ip_address_count, 11);
    let mut request = CreateNetworkInterface::new(&tiny.id);
    request.secondary_private_ip_address_count = Some(10);
    let eni = f.ec2.create_network_interface(request).expect("all 11");
    let mut held: Vec<String> = eni
        .private_ip_addresses()
        .map(|(a, _)| a.to_string())
        .collect();
    held.sort_by_key(|a| ip(a));
    let expected: Vec<String> = (4..15).map(|i| format!("10.0.9.{i}")).collect();
    assert_eq!(held, expected, ".0-.3 and .15 are reserved");
    assert_eq!(
        f.ec2
            .subnet(&tiny.id)
            .expect("subnet")
            .available_ip_address_count,
        0
    );
    let err = f
        .ec2
        .create_network_interface(CreateNetworkInterface::new(&tiny.id))
        .expect_err("exhausted");
    assert_eq!(err.code, codes::INSUFFICIENT_FREE_ADDRESSES_IN_SUBNET);
    assert_eq!(
        err.message,
        "The specified subnet does not have enough free addresses to satisfy the request."
    );
    assert_eq!(
        code(f.ec2.run_instance(RunInstance::new("m5.large", &tiny.id))),
        codes::INSUFFICIENT_FREE_ADDRESSES_IN_SUBNET
    );
}

#[test]
fn exhaustion_on_assign_changes_nothing() {
    let mut f = Fixture::new();
    let small = f.subnet("10.0.9.0/28", "us-west-2a");
    let node = f
        .ec2
        .run_instance(RunInstance::new("m5.large", &small.id))
        .expect("node");
    let eni = f
        .ec2
        .create_network_interface(CreateNetworkInterface::new(&small.id))
        .expect("eni");
    f.ec2
        .attach_network_interface(&eni.id, &node.id, 1, None)
        .expect("attach");
    let generation = f.ec2.generation();
    // 9 free, 9 allowed by m5.large (10 − primary): asking 9 fits, 10 does not.
    assert_eq!(
        code(
            f.ec2
                .assign_private_ip_addresses(AssignPrivateIpAddresses::count(&eni.id, 10))
        ),
        codes::PRIVATE_IP_ADDRESS_LIMIT_EXCEEDED
    );
    let other = f
        .ec2
        .create_network_interface(CreateNetworkInterface::new(&small.id))
        .expect("eni");
    let after_other = f.ec2.generation();
    assert!(after_other > generation);
    assert_eq!(
        code(
            f.ec2
                .assign_private_ip_addresses(AssignPrivateIpAddresses::count(&eni.id, 9))
        ),
        codes::INSUFFICIENT_FREE_ADDRESSES_IN_SUBNET
    );
    assert_eq!(
        f.ec2.generation(),
        after_other,
        "failed actions change nothing"
    );
    assert!(f
        .ec2
        .network_interface(&eni.id)
        .expect("eni")
        .secondary_private_ip_addresses
        .is_empty());
    f.ec2.delete_network_interface(&other.id).expect("delete");
    f.ec2.check_invariants().expect("invariants");
}

#[test]
fn specific_addresses_must_be_free_usable_and_inside() {
    let mut f = Fixture::new();
    let node = f.instance("m5.large");
    let taken = node.private_ip_address.expect("primary");
    let mut request = CreateNetworkInterface::new(&f.subnet.id);
    request.private_ip_address = Some(taken);
    let err = f.ec2.create_network_interface(request).expect_err("taken");
    assert_eq!(err.code, codes::INVALID_IP_ADDRESS_IN_USE);
    let mut run = RunInstance::new("m5.large", &f.subnet.id);
    run.private_ip_address = Some(taken);
    let err = f.ec2.run_instance(run).expect_err("taken");
    assert_eq!(err.code, codes::INVALID_IP_ADDRESS_IN_USE);
    assert_eq!(err.message, format!("Address {taken} is in use."));
    for reserved in ["10.0.1.0", "10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.255"] {
        let mut request = CreateNetworkInterface::new(&f.subnet.id);
        request.private_ip_address = Some(ip(reserved));
        assert_eq!(
            code(f.ec2.create_network_interface(request)),
            codes::INVALID_PARAMETER_VALUE,
            "{reserved}"
        );
    }
    let mut outside = CreateNetworkInterface::new(&f.subnet.id);
    outside.private_ip_address = Some(ip("10.0.2.10"));
    assert_eq!(
        code(f.ec2.create_network_interface(outside)),
        codes::INVALID_PARAMETER_VALUE
    );
    let mut chosen = CreateNetworkInterface::new(&f.subnet.id);
    chosen.private_ip_address = Some(ip("10.0.1.77"));
    chosen.private_ip_addresses = vec![ip("10.0.1.78")];
    let eni = f
        .ec2
        .create_network_interface(chosen)
        .expect("free addresses");
    assert_eq!(eni.private_ip_address, ip("10.0.1.77"));
    assert_eq!(eni.secondary_private_ip_addresses, vec![ip("10.0.1.78")]);
}

#[test]
fn prefixes_must_be_aligned_and_free_as_a_whole() {
    let mut f = Fixture::new();
    let node = f.instance("m5.large");
    let eni = f
        .ec2
        .create_network_interface(CreateNetworkInterface::new(&f.subnet.id))
        .expect("eni");
    f.ec2
        .attach_network_interface(&eni.id, &node.id, 1, None)
        .expect("attach");
    let ask = |prefix: &str| AssignPrivateIpAddresses::prefixes(&eni.id, vec![net4(prefix)]);
    // Unaligned, wrong size, covering reserved addresses, or overlapping used addresses.
    for bad in [
        "10.0.1.40/28",
        "10.0.1.32/27",
        "10.0.1.0/28",
        "10.0.1.240/28",
    ] {
        assert_eq!(
            code(f.ec2.assign_private_ip_addresses(ask(bad))),
            codes::INVALID_PARAMETER_VALUE,
            "{bad}"
        );
    }
    // The first used addresses (.4 and .5) sit in 10.0.1.0/28 — reserved anyway — so use one
    // in the middle of a block.
    f.ec2
        .assign_private_ip_addresses(AssignPrivateIpAddresses::addresses(
            &eni.id,
            vec![ip("10.0.1.70")],
        ))
        .expect("address");
    assert_eq!(
        code(f.ec2.assign_private_ip_addresses(ask("10.0.1.64/28"))),
        codes::INVALID_PARAMETER_VALUE
    );
    f.ec2
        .assign_private_ip_addresses(ask("10.0.1.80/28"))
        .expect("free block");
    assert_eq!(
        code(f.ec2.assign_private_ip_addresses(ask("10.0.1.80/28"))),
        codes::INVALID_PARAMETER_VALUE,
        "already delegated"
    );
    // An address inside a delegated prefix cannot be handed out separately.
    assert_eq!(
        code(
            f.ec2
                .assign_private_ip_addresses(AssignPrivateIpAddresses::addresses(
                    &eni.id,
                    vec![ip("10.0.1.85")]
                ))
        ),
        codes::INVALID_PARAMETER_VALUE
    );
    f.ec2.check_invariants().expect("invariants");
}

#[test]
fn fragmentation_gives_insufficient_cidr_blocks() {
    let mut f = Fixture::new();
    // A /26: blocks .0/28 and .48/28 hold reserved addresses, so two /28s are possible.
    let subnet = f.subnet("10.0.9.0/26", "us-west-2a");
    let node = f
        .ec2
        .run_instance(RunInstance::new("m5.large", &subnet.id))
        .expect("node .4");
    let mut request = CreateNetworkInterface::new(&subnet.id);
    request.private_ip_address = Some(ip("10.0.9.20")); // inside .16/28
    request.private_ip_addresses = vec![ip("10.0.9.40")]; // inside .32/28
    let eni = f.ec2.create_network_interface(request).expect("eni");
    f.ec2
        .attach_network_interface(&eni.id, &node.id, 1, None)
        .expect("attach");
    let available = f
        .ec2
        .subnet(&subnet.id)
        .expect("subnet")
        .available_ip_address_count;
    assert!(available >= 16, "{available} single addresses free");
    let err = f
        .ec2
        .assign_private_ip_addresses(AssignPrivateIpAddresses::prefix_count(&eni.id, 1))
        .expect_err("no whole /28");
    assert_eq!(err.code, codes::INSUFFICIENT_CIDR_BLOCKS);
    assert_eq!(
        err.message,
        "The specified subnet does not have enough free cidr blocks to satisfy the request."
    );
    // Free .32/28 again: the /28 fits now.
    f.ec2
        .unassign_private_ip_addresses(crate::UnassignPrivateIpAddresses {
            network_interface_id: eni.id.clone(),
            private_ip_addresses: vec![ip("10.0.9.40")],
            ..crate::UnassignPrivateIpAddresses::default()
        })
        .expect("unassign");
    let assigned = f
        .ec2
        .assign_private_ip_addresses(AssignPrivateIpAddresses::prefix_count(&eni.id, 1))
        .expect("one /28");
    assert_eq!(assigned.assigned_ipv4_prefixes, vec![net4("10.0.9.32/28")]);
    // Too few addresses even for one block: plain exhaustion.
    let tiny = f.subnet("10.0.10.0/28", "us-west-2a");
    let mut request = CreateNetworkInterface::new(&tiny.id);
    request.ipv4_prefix_count = Some(1);
    assert_eq!(
        code(f.ec2.create_network_interface(request)),
        codes::INSUFFICIENT_FREE_ADDRESSES_IN_SUBNET
    );
    f.ec2.check_invariants().expect("invariants");
}

#[test]
fn seeded_allocation_is_reproducible_and_spread() {
    let run = |seed| {
        let mut ec2 = Ec2Model::new(seed).with_allocation_policy(AllocationPolicy::Seeded);
        let vpc = ec2.create_vpc(net4("10.1.0.0/16")).expect("vpc");
        let subnet = ec2
            .create_subnet(&vpc.id, net4("10.1.0.0/20"), "us-west-2a")
            .expect("subnet");
        let mut request = CreateNetworkInterface::new(&subnet.id);
        request.secondary_private_ip_address_count = Some(20);
        let eni = ec2.create_network_interface(request).expect("eni");
        (
            eni.id.clone(),
            eni.mac_address.clone(),
            eni.private_ip_addresses().collect::<Vec<_>>(),
        )
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
    let (_, _, addresses) = run(5);
    let spread = addresses
        .windows(2)
        .filter(|w| u32::from(w[1].0).abs_diff(u32::from(w[0].0)) > 1)
        .count();
    assert!(
        spread > 10,
        "seeded addresses should not be consecutive: {addresses:?}"
    );
}

#[test]
fn vpc_and_subnet_cidrs_are_checked() {
    let mut ec2 = Ec2Model::new(1);
    assert_eq!(
        code(ec2.create_vpc(net4("10.0.0.0/8"))),
        codes::INVALID_VPC_RANGE
    );
    assert_eq!(
        code(ec2.create_vpc(net4("10.0.0.5/16"))),
        codes::INVALID_PARAMETER_VALUE
    );
    let vpc = ec2.create_vpc(net4("10.0.0.0/16")).expect("vpc");
    assert_eq!(
        code(ec2.create_subnet(&vpc.id, net4("10.1.0.0/24"), "us-west-2a")),
        codes::INVALID_SUBNET_RANGE
    );
    assert_eq!(
        code(ec2.create_subnet(&vpc.id, net4("10.0.0.0/29"), "us-west-2a")),
        codes::INVALID_SUBNET_RANGE
    );
    ec2.create_subnet(&vpc.id, net4("10.0.0.0/24"), "us-west-2a")
        .expect("subnet");
    assert_eq!(
        code(ec2.create_subnet(&vpc.id, net4("10.0.0.128/25"), "us-west-2a")),
        codes::INVALID_SUBNET_CONFLICT
    );
    assert_eq!(
        code(ec2.create_subnet("vpc-0123456789abcdef0", net4("10.0.1.0/24"), "us-west-2a")),
        codes::INVALID_VPC_ID_NOT_FOUND
    );
    // Secondary CIDRs (custom networking) host subnets too.
    ec2.associate_vpc_cidr_block(&vpc.id, net4("100.64.0.0/16"))
        .expect("secondary CIDR");
    ec2.create_subnet(&vpc.id, net4("100.64.0.0/19"), "us-west-2a")
        .expect("subnet in secondary CIDR");
    assert_eq!(
        code(ec2.create_security_group(&vpc.id, "default")),
        codes::INVALID_GROUP_DUPLICATE
    );
}
