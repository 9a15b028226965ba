//! Every action through the real `aws-sdk-ec2` client: request encoding, response parsing,
//! pagination, ClientToken idempotency and error codes.

use aws_sdk_ec2::types::{
    Filter, InstanceType, NetworkInterfaceAttachmentChanges, NetworkInterfaceStatus,
    NetworkInterfaceType, ResourceType, Tag, TagSpecification,
};
use ec2_emulator::{codes, Scenario};

use crate::common::{code, start, within};

fn tags(resource: ResourceType, pairs: &[(&str, &str)]) -> TagSpecification {
    let mut spec = TagSpecification::builder().resource_type(resource);
    for (key, value) in pairs {
        spec = spec.tags(Tag::builder().key(*key).value(*value).build());
    }
    spec.build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describes_the_scenario() {
    let (emulator, ec2) = start(Scenario::default()).await;
    let resources = emulator.resources().expect("scenario").clone();
    let node = resources.instance_id.clone().expect("node");

    let out = within("DescribeInstances", ec2.describe_instances().send())
        .await
        .expect("describe instances");
    let instances: Vec<_> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .collect();
    assert_eq!(instances.len(), 1);
    let instance = instances[0];
    assert_eq!(instance.instance_id(), Some(node.as_str()));
    assert_eq!(instance.instance_type(), Some(&InstanceType::T3Medium));
    assert_eq!(
        instance.placement().and_then(|p| p.availability_zone()),
        Some("us-west-2a")
    );
    let enis = instance.network_interfaces();
    assert_eq!(enis.len(), 1);
    assert_eq!(enis[0].attachment().and_then(|a| a.device_index()), Some(0));
    assert_eq!(
        enis[0].network_interface_id(),
        resources.primary_eni_id.as_deref()
    );

    let out = within(
        "DescribeInstanceTypes",
        ec2.describe_instance_types()
            .instance_types(InstanceType::T3Medium)
            .instance_types(InstanceType::M5Large)
            .send(),
    )
    .await
    .expect("instance types");
    let by_name: Vec<(String, i32, i32, i32)> = out
        .instance_types()
        .iter()
        .map(|t| {
            let net = t.network_info().expect("network info");
            (
                t.instance_type()
                    .map(|t| t.as_str().to_owned())
                    .unwrap_or_default(),
                net.maximum_network_interfaces().unwrap_or_default(),
                net.ipv4_addresses_per_interface().unwrap_or_default(),
                net.ipv6_addresses_per_interface().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        by_name,
        [
            ("m5.large".to_owned(), 3, 10, 10),
            ("t3.medium".to_owned(), 3, 6, 6)
        ]
    );

    let out = within(
        "DescribeSubnets",
        ec2.describe_subnets()
            .filters(
                Filter::builder()
                    .name("vpc-id")
                    .values(&resources.vpc_id)
                    .build(),
            )
            .send(),
    )
    .await
    .expect("subnets");
    assert_eq!(out.subnets().len(), 2);
    let first = out
        .subnets()
        .iter()
        .find(|s| s.subnet_id() == Some(resources.subnet_ids[0].as_str()))
        .expect("first subnet");
    // A /20 has 4096 − 5 reserved addresses; the node's primary ENI uses one.
    assert_eq!(first.available_ip_address_count(), Some(4090));

    let out = within(
        "DescribeSecurityGroups",
        ec2.describe_security_groups()
            .group_ids(&resources.security_group_id)
            .send(),
    )
    .await
    .expect("groups");
    assert_eq!(out.security_groups()[0].group_name(), Some("default"));
    let out = within("DescribeVpcs", ec2.describe_vpcs().send())
        .await
        .expect("vpcs");
    assert_eq!(out.vpcs()[0].cidr_block(), Some("10.0.0.0/16"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eni_lifecycle_through_the_sdk() {
    let (emulator, ec2) = start(Scenario::default().with_node_instance_type("m5.large")).await;
    let resources = emulator.resources().expect("scenario").clone();
    let node = resources.instance_id.clone().expect("node");
    let subnet = &resources.subnet_ids[0];
    let group = within(
        "CreateSecurityGroup",
        ec2.create_security_group()
            .group_name("pods")
            .description("pods")
            .vpc_id(&resources.vpc_id)
            .send(),
    )
    .await
    .expect("group")
    .group_id()
    .expect("group id")
    .to_owned();

    let created = within(
        "CreateNetworkInterface",
        ec2.create_network_interface()
            .subnet_id(subnet)
            .description("wasmcni test")
            .groups(&group)
            .secondary_private_ip_address_count(2)
            .tag_specifications(tags(
                ResourceType::NetworkInterface,
                &[("cluster.k8s.amazonaws.com/name", "demo"), ("node", &node)],
            ))
            .client_token("create-1")
            .send(),
    )
    .await
    .expect("create eni");
    let eni = created.network_interface().expect("eni").clone();
    let eni_id = eni.network_interface_id().expect("id").to_owned();
    assert!(eni_id.starts_with("eni-"));
    assert_eq!(eni.status(), Some(&NetworkInterfaceStatus::Available));
    assert_eq!(eni.interface_type(), Some(&NetworkInterfaceType::Interface));
    assert_eq!(eni.private_ip_addresses().len(), 3);
    assert_eq!(
        eni.private_ip_addresses()
            .iter()
            .filter(|a| a.primary() == Some(true))
            .count(),
        1
    );
    assert_eq!(eni.groups()[0].group_id(), Some(group.as_str()));
    assert_eq!(eni.groups()[0].group_name(), Some("pods"));
    assert_eq!(eni.tag_set().len(), 2);
    assert!(eni
        .mac_address()
        .is_some_and(|mac| mac.len() == 17 && mac.starts_with("02:")));
    assert_eq!(created.client_token(), Some("create-1"));

    // Same token, same parameters: the same ENI, nothing new created.
    let again = within(
        "CreateNetworkInterface (repeat)",
        ec2.create_network_interface()
            .subnet_id(subnet)
            .description("wasmcni test")
            .groups(&group)
            .secondary_private_ip_address_count(2)
            .tag_specifications(tags(
                ResourceType::NetworkInterface,
                &[("cluster.k8s.amazonaws.com/name", "demo"), ("node", &node)],
            ))
            .client_token("create-1")
            .send(),
    )
    .await
    .expect("idempotent repeat");
    assert_eq!(
        again
            .network_interface()
            .and_then(|e| e.network_interface_id()),
        Some(eni_id.as_str())
    );
    // Same token, different parameters.
    let mismatch = within(
        "CreateNetworkInterface (mismatch)",
        ec2.create_network_interface()
            .subnet_id(subnet)
            .client_token("create-1")
            .send(),
    )
    .await;
    assert_eq!(code(mismatch), codes::IDEMPOTENT_PARAMETER_MISMATCH);

    let attached = within(
        "AttachNetworkInterface",
        ec2.attach_network_interface()
            .network_interface_id(&eni_id)
            .instance_id(&node)
            .device_index(1)
            .send(),
    )
    .await
    .expect("attach");
    let attachment_id = attached.attachment_id().expect("attachment").to_owned();
    assert!(attachment_id.starts_with("eni-attach-"));
    assert_eq!(attached.network_card_index(), Some(0));

    within(
        "ModifyNetworkInterfaceAttribute",
        ec2.modify_network_interface_attribute()
            .network_interface_id(&eni_id)
            .attachment(
                NetworkInterfaceAttachmentChanges::builder()
                    .attachment_id(&attachment_id)
                    .delete_on_termination(true)
                    .build(),
            )
            .send(),
    )
    .await
    .expect("delete on termination");

    let assigned = within(
        "AssignPrivateIpAddresses",
        ec2.assign_private_ip_addresses()
            .network_interface_id(&eni_id)
            .secondary_private_ip_address_count(3)
            .send(),
    )
    .await
    .expect("assign ips");
    let new_ips: Vec<String> = assigned
        .assigned_private_ip_addresses()
        .iter()
        .filter_map(|a| a.private_ip_address().map(str::to_owned))
        .collect();
    assert_eq!(new_ips.len(), 3, "only the new addresses, as EC2 answers");

    let prefixes = within(
        "AssignPrivateIpAddresses (prefix)",
        ec2.assign_private_ip_addresses()
            .network_interface_id(&eni_id)
            .ipv4_prefix_count(1)
            .send(),
    )
    .await
    .expect("assign prefix");
    let prefix = prefixes.assigned_ipv4_prefixes()[0]
        .ipv4_prefix()
        .expect("prefix")
        .to_owned();
    assert!(prefix.ends_with("/28"));

    // 3 + 3 addresses + 1 prefix = 7 of m5.large's 10 slots; 4 more is one too many.
    let too_many = within(
        "AssignPrivateIpAddresses (over limit)",
        ec2.assign_private_ip_addresses()
            .network_interface_id(&eni_id)
            .secondary_private_ip_address_count(4)
            .send(),
    )
    .await;
    assert_eq!(code(too_many), codes::PRIVATE_IP_ADDRESS_LIMIT_EXCEEDED);

    within(
        "UnassignPrivateIpAddresses",
        ec2.unassign_private_ip_addresses()
            .network_interface_id(&eni_id)
            .private_ip_addresses(&new_ips[0])
            .ipv4_prefixes(&prefix)
            .send(),
    )
    .await
    .expect("unassign");

    within(
        "CreateTags",
        ec2.create_tags()
            .resources(&eni_id)
            .tags(Tag::builder().key("owner").value("ipamd").build())
            .send(),
    )
    .await
    .expect("tag");
    within(
        "DeleteTags",
        ec2.delete_tags()
            .resources(&eni_id)
            .tags(Tag::builder().key("node").build())
            .send(),
    )
    .await
    .expect("untag");

    let described = within(
        "DescribeNetworkInterfaces",
        ec2.describe_network_interfaces()
            .network_interface_ids(&eni_id)
            .send(),
    )
    .await
    .expect("describe");
    let eni = &described.network_interfaces()[0];
    assert_eq!(eni.status(), Some(&NetworkInterfaceStatus::InUse));
    let attachment = eni.attachment().expect("attached");
    assert_eq!(attachment.instance_id(), Some(node.as_str()));
    assert_eq!(attachment.device_index(), Some(1));
    assert_eq!(attachment.delete_on_termination(), Some(true));
    assert_eq!(eni.private_ip_addresses().len(), 5);
    assert!(eni.ipv4_prefixes().is_empty());
    let mut keys: Vec<&str> = eni.tag_set().iter().filter_map(|t| t.key()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["cluster.k8s.amazonaws.com/name", "owner"]);

    // The primary ENI cannot be detached, an attached ENI cannot be deleted.
    let primary_attachment = within(
        "DescribeNetworkInterfaces (primary)",
        ec2.describe_network_interfaces()
            .network_interface_ids(resources.primary_eni_id.as_deref().expect("primary"))
            .send(),
    )
    .await
    .expect("primary")
    .network_interfaces()[0]
        .attachment()
        .and_then(|a| a.attachment_id())
        .expect("primary attachment")
        .to_owned();
    let detach_primary = within(
        "DetachNetworkInterface (primary)",
        ec2.detach_network_interface()
            .attachment_id(&primary_attachment)
            .send(),
    )
    .await;
    assert_eq!(code(detach_primary), codes::OPERATION_NOT_PERMITTED);
    let delete_attached = within(
        "DeleteNetworkInterface (attached)",
        ec2.delete_network_interface()
            .network_interface_id(&eni_id)
            .send(),
    )
    .await;
    assert_eq!(code(delete_attached), codes::INVALID_PARAMETER_VALUE);

    within(
        "DetachNetworkInterface",
        ec2.detach_network_interface()
            .attachment_id(&attachment_id)
            .send(),
    )
    .await
    .expect("detach");
    within(
        "DeleteNetworkInterface",
        ec2.delete_network_interface()
            .network_interface_id(&eni_id)
            .send(),
    )
    .await
    .expect("delete");
    let gone = within(
        "DescribeNetworkInterfaces (deleted)",
        ec2.describe_network_interfaces()
            .network_interface_ids(&eni_id)
            .send(),
    )
    .await;
    assert_eq!(code(gone), codes::INVALID_NETWORK_INTERFACE_ID_NOT_FOUND);
    emulator.with_model(|model| model.check_invariants().expect("invariants"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_surface_as_ec2_error_codes() {
    let (emulator, ec2) = start(Scenario::default()).await;
    let resources = emulator.resources().expect("scenario").clone();
    let node = resources.instance_id.clone().expect("node");
    let subnet = &resources.subnet_ids[0];
    // t3.medium: 3 ENIs. The primary plus two more fill it.
    let mut enis = Vec::new();
    for _ in 0..3 {
        let eni = within(
            "CreateNetworkInterface",
            ec2.create_network_interface().subnet_id(subnet).send(),
        )
        .await
        .expect("create");
        enis.push(
            eni.network_interface()
                .and_then(|e| e.network_interface_id())
                .expect("id")
                .to_owned(),
        );
    }
    for (index, eni) in enis.iter().take(2).enumerate() {
        within(
            "AttachNetworkInterface",
            ec2.attach_network_interface()
                .network_interface_id(eni)
                .instance_id(&node)
                .device_index(i32::try_from(index + 1).expect("small"))
                .send(),
        )
        .await
        .expect("attach within the limit");
    }
    let over = within(
        "AttachNetworkInterface (fourth)",
        ec2.attach_network_interface()
            .network_interface_id(&enis[2])
            .instance_id(&node)
            .device_index(3)
            .send(),
    )
    .await;
    assert_eq!(code(over), codes::ATTACHMENT_LIMIT_EXCEEDED);
    let again = within(
        "AttachNetworkInterface (in use)",
        ec2.attach_network_interface()
            .network_interface_id(&enis[0])
            .instance_id(&node)
            .device_index(3)
            .send(),
    )
    .await;
    assert_eq!(code(again), codes::INVALID_NETWORK_INTERFACE_IN_USE);

    let unknown_subnet = within(
        "CreateNetworkInterface (unknown subnet)",
        ec2.create_network_interface()
            .subnet_id("subnet-0123456789abcdef0")
            .send(),
    )
    .await;
    assert_eq!(code(unknown_subnet), codes::INVALID_SUBNET_ID_NOT_FOUND);
    let unknown_type = within(
        "DescribeInstanceTypes (unknown)",
        ec2.describe_instance_types()
            .instance_types(InstanceType::from("m5.bogus"))
            .send(),
    )
    .await;
    assert_eq!(code(unknown_type), codes::INVALID_INSTANCE_TYPE);
    let bad_filter = within(
        "DescribeNetworkInterfaces (bad filter)",
        ec2.describe_network_interfaces()
            .filters(Filter::builder().name("no-such-filter").values("x").build())
            .send(),
    )
    .await;
    assert_eq!(code(bad_filter), codes::INVALID_PARAMETER_VALUE);
    let dry_run = within(
        "CreateNetworkInterface (dry run)",
        ec2.create_network_interface()
            .subnet_id(subnet)
            .dry_run(true)
            .send(),
    )
    .await;
    assert_eq!(code(dry_run), codes::DRY_RUN_OPERATION);
    let bad_token = within(
        "DescribeNetworkInterfaces (bad token)",
        ec2.describe_network_interfaces()
            .max_results(5)
            .next_token("not-a-token")
            .send(),
    )
    .await;
    assert_eq!(code(bad_token), codes::INVALID_PAGINATION_TOKEN);

    // A small subnet runs out: /28 = 16 − 5 reserved = 11 addresses.
    let small = within(
        "CreateSubnet",
        ec2.create_subnet()
            .vpc_id(&resources.vpc_id)
            .cidr_block("10.0.200.0/28")
            .availability_zone("us-west-2a")
            .send(),
    )
    .await
    .expect("subnet");
    let small_id = small.subnet().and_then(|s| s.subnet_id()).expect("id");
    let full = within(
        "CreateNetworkInterface",
        ec2.create_network_interface()
            .subnet_id(small_id)
            .secondary_private_ip_address_count(9)
            .send(),
    )
    .await
    .expect("10 of 11 addresses");
    let full_id = full
        .network_interface()
        .and_then(|e| e.network_interface_id())
        .expect("id");
    let exhausted = within(
        "AssignPrivateIpAddresses (exhausted)",
        ec2.assign_private_ip_addresses()
            .network_interface_id(full_id)
            .secondary_private_ip_address_count(2)
            .send(),
    )
    .await;
    assert_eq!(
        code(exhausted),
        codes::INSUFFICIENT_FREE_ADDRESSES_IN_SUBNET
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_through_the_sdk_paginator() {
    let (emulator, ec2) = start(Scenario::default()).await;
    let resources = emulator.resources().expect("scenario").clone();
    for n in 0..12 {
        within(
            "CreateNetworkInterface",
            ec2.create_network_interface()
                .subnet_id(&resources.subnet_ids[n % 2])
                .tag_specifications(tags(ResourceType::NetworkInterface, &[("batch", "b1")]))
                .send(),
        )
        .await
        .expect("create");
    }
    let pages: Vec<_> = within(
        "DescribeNetworkInterfaces (paginated)",
        ec2.describe_network_interfaces()
            .filters(Filter::builder().name("tag:batch").values("b1").build())
            .max_results(5)
            .into_paginator()
            .send()
            .collect::<Vec<_>>(),
    )
    .await;
    let sizes: Vec<usize> = pages
        .into_iter()
        .map(|page| page.expect("page").network_interfaces().len())
        .collect();
    assert_eq!(sizes, [5, 5, 2]);
    let all: Vec<_> = within(
        "DescribeNetworkInterfaces (items)",
        ec2.describe_network_interfaces()
            .max_results(5)
            .into_paginator()
            .items()
            .send()
            .collect::<Vec<_>>(),
    )
    .await;
    // 12 created + the node's primary ENI.
    assert_eq!(all.len(), 13);
    let mut ids: Vec<String> = all
        .into_iter()
        .map(|eni| {
            eni.expect("item")
                .network_interface_id()
                .expect("id")
                .to_owned()
        })
        .collect();
    let count = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), count, "no ENI twice across pages");

    let types = within(
        "DescribeInstanceTypes (paginated)",
        ec2.describe_instance_types()
            .max_results(5)
            .into_paginator()
            .items()
            .send()
            .collect::<Vec<_>>(),
    )
    .await;
    let catalog = emulator.with_model(|m| m.catalog().iter().count());
    assert_eq!(types.len(), catalog);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_prefixes_and_trunking() {
    let (emulator, ec2) = start(
        Scenario::default()
            .with_ipv6()
            .with_node_instance_type("m5.large"),
    )
    .await;
    let resources = emulator.resources().expect("scenario").clone();
    let node = resources.instance_id.clone().expect("node");
    let subnet = &resources.subnet_ids[0];
    let primary = resources.primary_eni_id.clone().expect("primary");

    let assigned = within(
        "AssignIpv6Addresses",
        ec2.assign_ipv6_addresses()
            .network_interface_id(&primary)
            .ipv6_address_count(2)
            .send(),
    )
    .await
    .expect("ipv6");
    assert_eq!(assigned.assigned_ipv6_addresses().len(), 2);
    let prefix = within(
        "AssignIpv6Addresses (prefix)",
        ec2.assign_ipv6_addresses()
            .network_interface_id(&primary)
            .ipv6_prefix_count(1)
            .send(),
    )
    .await
    .expect("ipv6 prefix");
    let prefix = prefix.assigned_ipv6_prefixes()[0].clone();
    assert!(prefix.ends_with("/80"), "{prefix}");
    let removed = within(
        "UnassignIpv6Addresses",
        ec2.unassign_ipv6_addresses()
            .network_interface_id(&primary)
            .ipv6_addresses(&assigned.assigned_ipv6_addresses()[0])
            .ipv6_prefixes(&prefix)
            .send(),
    )
    .await
    .expect("unassign ipv6");
    assert_eq!(removed.unassigned_ipv6_addresses().len(), 1);
    assert_eq!(
        removed.unassigned_ipv6_prefixes(),
        std::slice::from_ref(&prefix)
    );

    let trunk = within(
        "CreateNetworkInterface (trunk)",
        ec2.create_network_interface()
            .subnet_id(subnet)
            .interface_type(aws_sdk_ec2::types::NetworkInterfaceCreationType::Trunk)
            .send(),
    )
    .await
    .expect("trunk");
    let trunk_id = trunk
        .network_interface()
        .and_then(|e| e.network_interface_id())
        .expect("id")
        .to_owned();
    within(
        "AttachNetworkInterface (trunk)",
        ec2.attach_network_interface()
            .network_interface_id(&trunk_id)
            .instance_id(&node)
            .device_index(1)
            .send(),
    )
    .await
    .expect("attach trunk");
    let branch = within(
        "CreateNetworkInterface (branch)",
        ec2.create_network_interface().subnet_id(subnet).send(),
    )
    .await
    .expect("branch");
    let branch_id = branch
        .network_interface()
        .and_then(|e| e.network_interface_id())
        .expect("id")
        .to_owned();
    let association = within(
        "AssociateTrunkInterface",
        ec2.associate_trunk_interface()
            .trunk_interface_id(&trunk_id)
            .branch_interface_id(&branch_id)
            .vlan_id(7)
            .client_token("assoc-1")
            .send(),
    )
    .await
    .expect("associate");
    let association_id = association
        .interface_association()
        .and_then(|a| a.association_id())
        .expect("association id")
        .to_owned();
    let listed = within(
        "DescribeTrunkInterfaceAssociations",
        ec2.describe_trunk_interface_associations()
            .filters(
                Filter::builder()
                    .name("trunk-interface-association.trunk-interface-id")
                    .values(&trunk_id)
                    .build(),
            )
            .send(),
    )
    .await
    .expect("describe associations");
    let listed = listed.interface_associations();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].vlan_id(), Some(7));
    assert_eq!(listed[0].branch_interface_id(), Some(branch_id.as_str()));
    let branch_in_use = within(
        "AssociateTrunkInterface (same branch)",
        ec2.associate_trunk_interface()
            .trunk_interface_id(&trunk_id)
            .branch_interface_id(&branch_id)
            .vlan_id(8)
            .send(),
    )
    .await;
    assert_eq!(code(branch_in_use), codes::INVALID_NETWORK_INTERFACE_IN_USE);
    let second = within(
        "CreateNetworkInterface (second branch)",
        ec2.create_network_interface().subnet_id(subnet).send(),
    )
    .await
    .expect("branch");
    let vlan_taken = within(
        "AssociateTrunkInterface (same VLAN)",
        ec2.associate_trunk_interface()
            .trunk_interface_id(&trunk_id)
            .branch_interface_id(
                second
                    .network_interface()
                    .and_then(|e| e.network_interface_id())
                    .expect("id"),
            )
            .vlan_id(7)
            .send(),
    )
    .await;
    assert_eq!(code(vlan_taken), codes::INVALID_PARAMETER_VALUE);
    within(
        "DisassociateTrunkInterface",
        ec2.disassociate_trunk_interface()
            .association_id(&association_id)
            .send(),
    )
    .await
    .expect("disassociate");

    let terminated = within(
        "TerminateInstances",
        ec2.terminate_instances().instance_ids(&node).send(),
    )
    .await
    .expect("terminate");
    let change = &terminated.terminating_instances()[0];
    assert_eq!(
        change
            .current_state()
            .and_then(|s| s.name())
            .map(|n| n.as_str()),
        Some("terminated")
    );
    emulator.with_model(|model| model.check_invariants().expect("invariants"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_action_is_an_ec2_error_not_html() {
    let (emulator, _ec2) = start(Scenario::empty()).await;
    let response = within(
        "raw POST",
        raw_post(
            &emulator.ec2_url(),
            "Action=LaunchRockets&Version=2016-11-15",
        ),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(
        response.contains("<Code>InvalidAction</Code>"),
        "{response}"
    );
    assert!(response.contains("<RequestID>"), "{response}");
    assert!(!response.to_ascii_lowercase().contains("<html"));
}

/// A bare HTTP/1.1 POST over a TCP socket, to see exactly what the server answers.
async fn raw_post(url: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}
