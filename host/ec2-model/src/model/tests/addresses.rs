//! Per-ENI address rules: IPv4 addresses and /28 prefixes share Ipv4AddressesPerInterface,
//! IPv6 addresses and /80 prefixes share Ipv6AddressesPerInterface, prefixes need Nitro, and
//! assign/unassign by count or by value answer as EC2 does.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use super::{code, ip, net4, Fixture};
use crate::types::NetworkInterface;
use crate::{
    codes, AssignIpv6Addresses, AssignPrivateIpAddresses, CreateNetworkInterface,
    UnassignIpv6Addresses, UnassignPrivateIpAddresses,
};

/// An ENI attached at device 1 to a new instance of `instance_type`.
fn attached_eni(f: &mut Fixture, instance_type: &str) -> NetworkInterface {
    let node = f.instance(instance_type);
    let eni = f
        .ec2
        .create_network_interface(CreateNetworkInterface::new(&f.subnet.id))
        .expect("eni");
    f.ec2
        .attach_network_interface(&eni.id, &node.id, 1, None)
        .expect("attach");
    f.ec2.network_interface(&eni.id).expect("eni").clone()
}

#[test]
fn ipv4_limit_counts_the_primary_address() {
    let mut f = Fixture::new();
    let eni = attached_eni(&mut f, "m5.large"); // 10 per ENI
    let assigned = f
        .ec2
        .assign_private_ip_addresses(AssignPrivateIpAddresses::count(&eni.id, 9))
        .expect("primary + 9 = 10");
    assert_eq!(assigned.assigned_private_ip_addresses.len(), 9);
    let err = f
        .ec2
        .assign_private_ip_addresses(AssignPrivateIpAddresses::count(&eni.id, 1))
        .expect_err("11th");
    assert_eq!(err.code, codes::PRIVATE_IP_ADDRESS_LIMIT_EXCEEDED);
    assert_eq!(
        err.message,
        "Number of private addresses will exceed limit."
    );
}

#[test]
fn prefixes_count_against_the_same_ipv4_limit() {
    let mut f = Fixture::new();
    let eni = attached_eni(&mut f, "t3.medium"); // 6 per ENI
    f.ec2
        .assign_private_ip_addresses(AssignPrivateIpAddresses::count(&eni.id, 2))
        .expect("3 addresses");
    let assigned = f
        .ec2
        .assign_private_ip_addresses(AssignPrivateIpAddresses::prefix_count(&eni.id, 3))
        .expect("3 prefixes: 6 slots");
    assert_eq!(assigned.assigned_ipv4_prefixes.len(), 3);
    assert!(assigned
        .assigned_ipv4_prefixes
        .iter()
        .all(|p| p.prefix_len() == 28 && p.addr() == p.network()));
    assert_eq!(
        code(
            f.ec2
                .assign_private_ip_addresses(AssignPrivateIpAddresses::prefix_count(&eni.id, 1))
        ),
        codes::PRIVATE_IP_ADDRESS_LIMIT_EXCEEDED
    );
    assert_eq!(
        code(
            f.ec2
                .assign_private_ip_addresses(AssignPrivateIpAddresses::count(&eni.id, 1))
        ),
        codes::PRIVATE_IP_ADDRESS_LIMIT_EXCEEDED
    );
    let subnet = f.ec2.subnet(&f.subnet.id).expect("subnet");
    // The instance's primary and this ENI's 3 addresses + 48 prefix addresses.
    assert_eq!(subnet.available_ip_address_count, 251 - 1 - 3 - 48);
    f.ec2.check_invariants().expect("invariants");
}

#[test]
fn an_eni_over_the_type_limit_cannot_be_attached() {
    let mut f = Fixture::new();
    let node = f.instance("t3.medium");
    let mut request = CreateNetworkInterface::new(&f.subnet.id);
    request.secondary_private_ip_address_count = Some(9); // 10 addresses; t3.medium takes 6
    let eni = f
        .ec2
        .create_network_interface(request)
        .expect("unattached ENIs get the largest limit");
    assert_eq!(
        code(f.ec2.attach_network_interface(&eni.id, &node.id, 1, None)),
        codes::PRIVATE_IP_ADDRESS_LIMIT_EXCEEDED
    );
    let mut too_many = CreateNetworkInterface::new(&f.subnet.id);
    too_many.secondary_private_ip_address_count = Some(50);
    assert_eq!(
        code(f.ec2.create_network_interface(too_many)),
        codes::PRIVATE_IP_ADDRESS_LIMIT_EXCEEDED
    );
}

#[test]
fn prefix_delegation_is_refused_on_xen() {
    let mut f = Fixture::new();
    let eni = attached_eni(&mut f, "t2.medium");
    let err = f
        .ec2
        .assign_private_ip_addresses(AssignPrivateIpAddresses::prefix_count(&eni.id, 1))
        .expect_err("xen");
    assert_eq!(err.code, codes::INVALID_PARAMETER_VALUE);
    assert!(err.message.contains("t2.medium"), "{}", err.message);
    assert_eq!(
        code(
            f.ec2
                .assign_ipv6_addresses(AssignIpv6Addresses::prefix_count(&eni.id, 1))
        ),
        codes::INVALID_PARAMETER_VALUE
    );
    // Secondary addresses are fine on Xen.
    f.ec2
        .assign_private_ip_addresses(AssignPrivateIpAddresses::count(&eni.id, 2))
        .expect("secondary IPs");
    // An ENI carrying prefixes cannot go onto a Xen instance either.
    let xen = f.instance("m4.large");
    let mut request = CreateNetworkInterface::new(&f.subnet.id);
    request.ipv4_prefix_count = Some(1);
    let with_prefix = f.ec2.create_network_interface(request).expect("prefix ENI");
    assert_eq!(
        code(
            f.ec2
                .attach_network_interface(&with_prefix.id, &xen.id, 1, None)
        ),
        codes::INVALID_PARAMETER_VALUE
    );
}

#[test]
fn assign_takes_exactly_one_kind_of_request() {
    let mut f = Fixture::new();
    let eni = attached_eni(&mut f, "m5.large");
    let nothing = AssignPrivateIpAddresses {
        network_interface_id: eni.id.clone(),
        ..AssignPrivateIpAddresses::default()
    };
    assert_eq!(
        code(f.ec2.assign_private_ip_addresses(nothing.clone())),
        codes::MISSING_PARAMETER
    );
    let both = AssignPrivateIpAddresses {
        secondary_private_ip_address_count: Some(1),
        ipv4_prefix_count: Some(1),
        ..nothing.clone()
    };
    assert_eq!(
        code(f.ec2.assign_private_ip_addresses(both)),
        codes::INVALID_PARAMETER_COMBINATION
    );
    let zero = AssignPrivateIpAddresses {
        secondary_private_ip_address_count: Some(0),
        ..nothing
    };
    assert_eq!(
        code(f.ec2.assign_private_ip_addresses(zero)),
        codes::INVALID_PARAMETER_VALUE
    );
    let mut create = CreateNetworkInterface::new(&f.subnet.id);
    create.secondary_private_ip_address_count = Some(1);
    create.ipv4_prefix_count = Some(1);
    assert_eq!(
        code(f.ec2.create_network_interface(create)),
        codes::INVALID_PARAMETER_COMBINATION
    );
}

#[test]
fn assign_and_unassign_explicit_addresses_and_prefixes() {
    let mut f = Fixture::new();
    let eni = attached_eni(&mut f, "m5.large");
    let assigned = f
        .ec2
        .assign_private_ip_addresses(AssignPrivateIpAddresses::addresses(
            &eni.id,
            vec![ip("10.0.1.100"), ip("10.0.1.101")],
        ))
        .expect("specific addresses");
    assert_eq!(
        assigned.assigned_private_ip_addresses,
        vec![ip("10.0.1.100"), ip("10.0.1.101")]
    );
    f.ec2
        .assign_private_ip_addresses(AssignPrivateIpAddresses::prefixes(
            &eni.id,
            vec![net4("10.0.1.128/28")],
        ))
        .expect("specific prefix");
    let eni_now = f.ec2.network_interface(&eni.id).expect("eni").clone();
    assert_eq!(
        eni_now.secondary_private_ip_addresses,
        vec![ip("10.0.1.100"), ip("10.0.1.101")]
    );
    assert_eq!(eni_now.ipv4_prefixes, vec![net4("10.0.1.128/28")]);

    // Not on the ENI.
    let err = f
        .ec2
        .unassign_private_ip_addresses(UnassignPrivateIpAddresses {
            network_interface_id: eni.id.clone(),
            private_ip_addresses: vec![ip("10.0.1.200")],
            ..UnassignPrivateIpAddresses::default()
        })
        .expect_err("not assigned");
    assert_eq!(err.code, codes::INVALID_PARAMETER_VALUE);
    assert_eq!(
        err.message,
        format!(
            "Some of the specified addresses are not assigned to interface {}",
            eni.id
        )
    );
    // The primary address stays.
    assert_eq!(
        code(
            f.ec2
                .unassign_private_ip_addresses(UnassignPrivateIpAddresses {
                    network_interface_id: eni.id.clone(),
                    private_ip_addresses: vec![eni.private_ip_address],
                    ..UnassignPrivateIpAddresses::default()
                })
        ),
        codes::INVALID_PARAMETER_VALUE
    );
    assert_eq!(
        code(
            f.ec2
                .unassign_private_ip_addresses(UnassignPrivateIpAddresses {
                    network_interface_id: eni.id.clone(),
                    ipv4_prefixes: vec![net4("10.0.1.144/28")],
                    ..UnassignPrivateIpAddresses::default()
                })
        ),
        codes::INVALID_PARAMETER_VALUE
    );
    let before = f
        .ec2
        .subnet(&f.subnet.id)
        .expect("subnet")
        .available_ip_address_count;
    f.ec2
        .unassign_private_ip_addresses(UnassignPrivateIpAddresses {
            network_interface_id: eni.id.clone(),
            private_ip_addresses: vec![ip("10.0.1.100")],
            ipv4_prefixes: vec![net4("10.0.1.128/28")],
        })
        .expect("unassign");
    let after = f
        .ec2
        .subnet(&f.subnet.id)
        .expect("subnet")
        .available_ip_address_count;
    assert_eq!(after, before + 17);
    let eni_now = f.ec2.network_interface(&eni.id).expect("eni");
    assert_eq!(
        eni_now.secondary_private_ip_addresses,
        vec![ip("10.0.1.101")]
    );
    assert!(eni_now.ipv4_prefixes.is_empty());
    f.ec2.check_invariants().expect("invariants");
}

#[test]
fn a_taken_address_moves_only_with_allow_reassignment() {
    let mut f = Fixture::new();
    let a = attached_eni(&mut f, "m5.large");
    let b = attached_eni(&mut f, "m5.large");
    f.ec2
        .assign_private_ip_addresses(AssignPrivateIpAddresses::addresses(
            &a.id,
            vec![ip("10.0.1.50")],
        ))
        .expect("on a");
    let err = f
        .ec2
        .assign_private_ip_addresses(AssignPrivateIpAddresses::addresses(
            &b.id,
            vec![ip("10.0.1.50")],
        ))
        .expect_err("taken");
    assert_eq!(err.code, codes::INVALID_PARAMETER_VALUE);
    assert_eq!(
        err.message,
        "[10.0.1.50] assigned, but move is not allowed."
    );
    let mut moving = AssignPrivateIpAddresses::addresses(&b.id, vec![ip("10.0.1.50")]);
    moving.allow_reassignment = true;
    f.ec2.assign_private_ip_addresses(moving).expect("move");
    assert!(f
        .ec2
        .network_interface(&a.id)
        .expect("a")
        .secondary_private_ip_addresses
        .is_empty());
    assert_eq!(
        f.ec2
            .network_interface(&b.id)
            .expect("b")
            .secondary_private_ip_addresses,
        vec![ip("10.0.1.50")]
    );
    // A primary address never moves.
    let mut primary = AssignPrivateIpAddresses::addresses(&b.id, vec![a.private_ip_address]);
    primary.allow_reassignment = true;
    assert_eq!(
        code(f.ec2.assign_private_ip_addresses(primary)),
        codes::INVALID_PARAMETER_VALUE
    );
    f.ec2.check_invariants().expect("invariants");
}

#[test]
fn ipv6_addresses_and_prefixes_share_the_ipv6_limit() {
    let mut f = Fixture::new();
    let eni = attached_eni(&mut f, "t3.medium"); // 6 IPv6 per ENI
    let assigned = f
        .ec2
        .assign_ipv6_addresses(AssignIpv6Addresses::count(&eni.id, 4))
        .expect("4 addresses");
    assert_eq!(assigned.assigned_ipv6_addresses.len(), 4);
    let subnet64 = f.subnet.ipv6_cidr_block.expect("/64");
    assert!(assigned
        .assigned_ipv6_addresses
        .iter()
        .all(|a| subnet64.contains(a)));
    let prefixes = f
        .ec2
        .assign_ipv6_addresses(AssignIpv6Addresses::prefix_count(&eni.id, 2))
        .expect("2 prefixes");
    assert!(prefixes
        .assigned_ipv6_prefixes
        .iter()
        .all(|p| p.prefix_len() == 80 && subnet64.contains(p)));
    assert_eq!(
        code(
            f.ec2
                .assign_ipv6_addresses(AssignIpv6Addresses::count(&eni.id, 1))
        ),
        codes::PRIVATE_IP_ADDRESS_LIMIT_EXCEEDED
    );
    // Unassign one of each; something never assigned is an error.
    let address = assigned.assigned_ipv6_addresses[0];
    let prefix = prefixes.assigned_ipv6_prefixes[0];
    let released = f
        .ec2
        .unassign_ipv6_addresses(UnassignIpv6Addresses {
            network_interface_id: eni.id.clone(),
            ipv6_addresses: vec![address],
            ipv6_prefixes: vec![prefix],
        })
        .expect("unassign");
    assert_eq!(
        (released.ipv6_addresses, released.ipv6_prefixes),
        (vec![address], vec![prefix])
    );
    assert_eq!(
        code(f.ec2.unassign_ipv6_addresses(UnassignIpv6Addresses {
            network_interface_id: eni.id.clone(),
            ipv6_addresses: vec![address],
            ..UnassignIpv6Addresses::default()
        })),
        codes::INVALID_PARAMETER_VALUE
    );
    // A specific /80 must be aligned and free.
    let base = u128::from(subnet64.network());
    let explicit = Ipv6Net::new(Ipv6Addr::from(base + (5 << 48)), 80).expect("/80");
    let unaligned = Ipv6Net::new(Ipv6Addr::from(base + (5 << 48) + 1), 80).expect("/80");
    let ask = |prefix| AssignIpv6Addresses {
        network_interface_id: eni.id.clone(),
        ipv6_prefixes: vec![prefix],
        ..AssignIpv6Addresses::default()
    };
    assert_eq!(
        code(f.ec2.assign_ipv6_addresses(ask(unaligned))),
        codes::INVALID_PARAMETER_VALUE
    );
    f.ec2
        .assign_ipv6_addresses(ask(explicit))
        .expect("aligned and free");
    let other = attached_eni(&mut f, "m5.large");
    let mut steal = ask(explicit);
    steal.network_interface_id = other.id;
    assert_eq!(
        code(f.ec2.assign_ipv6_addresses(steal)),
        codes::INVALID_IP_ADDRESS_IN_USE
    );
    f.ec2.check_invariants().expect("invariants");
}

#[test]
fn ipv6_needs_an_ipv6_subnet() {
    let mut f = Fixture::new();
    let v4_only = f.subnet("10.0.2.0/24", "us-west-2a");
    let eni = f
        .ec2
        .create_network_interface(CreateNetworkInterface::new(&v4_only.id))
        .expect("eni");
    assert_eq!(
        code(
            f.ec2
                .assign_ipv6_addresses(AssignIpv6Addresses::count(&eni.id, 1))
        ),
        codes::INVALID_PARAMETER_VALUE
    );
    let mut create = CreateNetworkInterface::new(&v4_only.id);
    create.ipv6_address_count = Some(1);
    assert_eq!(
        code(f.ec2.create_network_interface(create)),
        codes::INVALID_PARAMETER_VALUE
    );
}
