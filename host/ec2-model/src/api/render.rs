//! The model's resources as EC2's XML elements (`networkInterfaceSet/item`, `instancesSet/item`,
//! `instanceTypeSet/item`, …), with the element names `aws-sdk-ec2`'s deserializers read.

use crate::instance_types::InstanceTypeInfo;
use crate::model::Ec2Model;
use crate::types::{
    Instance, InstanceDescription, NetworkInterface, SecurityGroup, Subnet, Tags,
    TrunkInterfaceAssociation, Vpc,
};
use crate::wire::XmlWriter;

/// `<tagSet>` with one `<item><key/><value/></item>` per tag; omitted when there are none,
/// as EC2 does.
pub(super) fn tag_set(xml: &mut XmlWriter, tags: &Tags) {
    if tags.is_empty() {
        return;
    }
    xml.item_set("tagSet", tags, |xml, (key, value)| {
        xml.leaf("key", key).leaf("value", value);
    });
}

/// `<groupSet>` of `groupId`/`groupName` pairs.
fn group_set(xml: &mut XmlWriter, model: &Ec2Model, group_ids: &[String]) {
    xml.item_set("groupSet", group_ids, |xml, id| {
        xml.leaf("groupId", id).leaf_opt(
            "groupName",
            model.security_group(id).map(|group| group.name.as_str()),
        );
    });
}

/// One ENI as DescribeNetworkInterfaces and CreateNetworkInterface return it (the content of
/// an `<item>` or of `<networkInterface>`).
pub(super) fn network_interface(xml: &mut XmlWriter, model: &Ec2Model, eni: &NetworkInterface) {
    if let Some(attachment) = &eni.attachment {
        xml.open("attachment")
            .leaf("attachmentId", &attachment.attachment_id)
            .leaf("instanceId", &attachment.instance_id)
            .leaf("instanceOwnerId", &attachment.instance_owner_id)
            .leaf("deviceIndex", attachment.device_index)
            .leaf("networkCardIndex", attachment.network_card_index)
            .leaf("attachTime", attachment.attach_time())
            .leaf("status", attachment.status.as_str())
            .leaf("deleteOnTermination", attachment.delete_on_termination)
            .close();
    }
    xml.leaf("networkInterfaceId", &eni.id)
        .leaf("subnetId", &eni.subnet_id)
        .leaf("vpcId", &eni.vpc_id)
        .leaf("availabilityZone", &eni.availability_zone)
        .leaf("description", &eni.description)
        .leaf("ownerId", &eni.owner_id)
        .leaf("requesterManaged", eni.requester_managed)
        .leaf("status", eni.status.as_str())
        .leaf("macAddress", &eni.mac_address)
        .leaf("privateIpAddress", eni.private_ip_address)
        .leaf(
            "privateDnsName",
            model.private_dns_name(eni.private_ip_address),
        )
        .leaf("sourceDestCheck", eni.source_dest_check)
        .leaf("interfaceType", eni.interface_type.as_str());
    group_set(xml, model, &eni.security_group_ids);
    xml.item_set(
        "privateIpAddressesSet",
        eni.private_ip_addresses(),
        |xml, (address, primary)| {
            xml.leaf("privateIpAddress", address)
                .leaf("privateDnsName", model.private_dns_name(address))
                .leaf("primary", primary);
        },
    );
    xml.item_set("ipv6AddressesSet", &eni.ipv6_addresses, |xml, address| {
        xml.leaf("ipv6Address", address)
            .leaf("isPrimaryIpv6", false);
    });
    if !eni.ipv4_prefixes.is_empty() {
        xml.item_set("ipv4PrefixSet", &eni.ipv4_prefixes, |xml, prefix| {
            xml.leaf("ipv4Prefix", prefix);
        });
    }
    if !eni.ipv6_prefixes.is_empty() {
        xml.item_set("ipv6PrefixSet", &eni.ipv6_prefixes, |xml, prefix| {
            xml.leaf("ipv6Prefix", prefix);
        });
    }
    tag_set(xml, &eni.tags);
}

/// An ENI as it appears inside an instance (`networkInterfaceSet/item` of DescribeInstances).
fn instance_network_interface(xml: &mut XmlWriter, model: &Ec2Model, eni: &NetworkInterface) {
    if let Some(attachment) = &eni.attachment {
        xml.open("attachment")
            .leaf("attachmentId", &attachment.attachment_id)
            .leaf("deviceIndex", attachment.device_index)
            .leaf("networkCardIndex", attachment.network_card_index)
            .leaf("attachTime", attachment.attach_time())
            .leaf("status", attachment.status.as_str())
            .leaf("deleteOnTermination", attachment.delete_on_termination)
            .close();
    }
    xml.leaf("networkInterfaceId", &eni.id)
        .leaf("subnetId", &eni.subnet_id)
        .leaf("vpcId", &eni.vpc_id)
        .leaf("description", &eni.description)
        .leaf("ownerId", &eni.owner_id)
        .leaf("status", eni.status.as_str())
        .leaf("macAddress", &eni.mac_address)
        .leaf("privateIpAddress", eni.private_ip_address)
        .leaf(
            "privateDnsName",
            model.private_dns_name(eni.private_ip_address),
        )
        .leaf("sourceDestCheck", eni.source_dest_check)
        .leaf("interfaceType", eni.interface_type.as_str());
    group_set(xml, model, &eni.security_group_ids);
    xml.item_set(
        "privateIpAddressesSet",
        eni.private_ip_addresses(),
        |xml, (address, primary)| {
            xml.leaf("privateIpAddress", address)
                .leaf("privateDnsName", model.private_dns_name(address))
                .leaf("primary", primary);
        },
    );
    xml.item_set("ipv6AddressesSet", &eni.ipv6_addresses, |xml, address| {
        xml.leaf("ipv6Address", address);
    });
    if !eni.ipv4_prefixes.is_empty() {
        xml.item_set("ipv4PrefixSet", &eni.ipv4_prefixes, |xml, prefix| {
            xml.leaf("ipv4Prefix", prefix);
        });
    }
    if !eni.ipv6_prefixes.is_empty() {
        xml.item_set("ipv6PrefixSet", &eni.ipv6_prefixes, |xml, prefix| {
            xml.leaf("ipv6Prefix", prefix);
        });
    }
}

/// The reservation id EC2 would show for an instance: derived from the instance id so it is
/// stable (the model launches one instance per reservation).
pub(super) fn reservation_id(instance: &Instance) -> String {
    let suffix = instance.id.strip_prefix("i-").unwrap_or(&instance.id);
    format!("r-{suffix}")
}

/// One instance (an `instancesSet/item`).
pub(super) fn instance(xml: &mut XmlWriter, model: &Ec2Model, description: &InstanceDescription) {
    let instance = &description.instance;
    xml.leaf("instanceId", &instance.id)
        .leaf("imageId", "ami-0123456789abcdef0")
        .open("instanceState")
        .leaf("code", instance.state.code())
        .leaf("name", instance.state.as_str())
        .close()
        .leaf_opt(
            "privateDnsName",
            instance
                .private_ip_address
                .map(|address| model.private_dns_name(address)),
        )
        .leaf("amiLaunchIndex", 0)
        .leaf("instanceType", &instance.instance_type)
        .open("placement")
        .leaf("availabilityZone", &instance.availability_zone)
        .leaf("tenancy", "default")
        .close()
        .leaf("subnetId", &instance.subnet_id)
        .leaf("vpcId", &instance.vpc_id)
        .leaf_opt("privateIpAddress", instance.private_ip_address)
        .leaf("architecture", "x86_64")
        .leaf("rootDeviceType", "ebs")
        .leaf("rootDeviceName", "/dev/xvda")
        .leaf("virtualizationType", "hvm")
        // DescribeInstances reports `xen` for Nitro instances too (the field predates Nitro
        // and its enum has only `ovm` and `xen`); DescribeInstanceTypes tells them apart.
        .leaf("hypervisor", "xen")
        .leaf("sourceDestCheck", true);
    group_set(xml, model, &instance.security_group_ids);
    tag_set(xml, &instance.tags);
    xml.item_set(
        "networkInterfaceSet",
        &description.network_interfaces,
        |xml, eni| instance_network_interface(xml, model, eni),
    );
}

/// One reservation holding one instance (a `reservationSet/item`).
pub(super) fn reservation(
    xml: &mut XmlWriter,
    model: &Ec2Model,
    description: &InstanceDescription,
) {
    xml.leaf("reservationId", reservation_id(&description.instance))
        .leaf("ownerId", &description.instance.owner_id);
    xml.item_set("instancesSet", [description], |xml, description| {
        instance(xml, model, description);
    });
}

/// One subnet (a `subnetSet/item` or `<subnet>`).
pub(super) fn subnet(xml: &mut XmlWriter, subnet: &Subnet) {
    xml.leaf("subnetId", &subnet.id)
        .leaf("subnetArn", subnet_arn(subnet))
        .leaf("state", "available")
        .leaf("vpcId", &subnet.vpc_id)
        .leaf("cidrBlock", subnet.cidr_block)
        .leaf("availableIpAddressCount", subnet.available_ip_address_count)
        .leaf("availabilityZone", &subnet.availability_zone)
        .leaf("defaultForAz", false)
        .leaf("mapPublicIpOnLaunch", false)
        .leaf("assignIpv6AddressOnCreation", false)
        .leaf("ownerId", &subnet.owner_id);
    xml.item_set(
        "ipv6CidrBlockAssociationSet",
        subnet.ipv6_cidr_block,
        |xml, block| {
            xml.leaf(
                "associationId",
                association_id("subnet-cidr-assoc", &subnet.id),
            )
            .leaf("ipv6CidrBlock", block)
            .open("ipv6CidrBlockState")
            .leaf("state", "associated")
            .close();
        },
    );
    tag_set(xml, &subnet.tags);
}

fn subnet_arn(subnet: &Subnet) -> String {
    // The region is not part of the subnet; the AZ name without its letter is.
    let region = subnet
        .availability_zone
        .trim_end_matches(|c: char| c.is_ascii_lowercase());
    format!(
        "arn:aws:ec2:{region}:{}:subnet/{}",
        subnet.owner_id, subnet.id
    )
}

/// A stable association id for a CIDR association of `resource_id`.
fn association_id(kind: &str, resource_id: &str) -> String {
    let suffix = resource_id.split_once('-').map_or(resource_id, |(_, s)| s);
    format!("{kind}-{suffix}")
}

/// One VPC (a `vpcSet/item` or `<vpc>`).
pub(super) fn vpc(xml: &mut XmlWriter, vpc: &Vpc) {
    xml.leaf("vpcId", &vpc.id)
        .leaf("ownerId", &vpc.owner_id)
        .leaf("state", "available")
        .leaf_opt("cidrBlock", vpc.cidr_blocks.first())
        .leaf("dhcpOptionsId", "default")
        .leaf("instanceTenancy", "default")
        .leaf("isDefault", false);
    xml.item_set(
        "cidrBlockAssociationSet",
        vpc.cidr_blocks.iter().enumerate(),
        |xml, (index, block)| {
            xml.leaf(
                "associationId",
                association_id(&format!("vpc-cidr-assoc{index}"), &vpc.id),
            )
            .leaf("cidrBlock", block)
            .open("cidrBlockState")
            .leaf("state", "associated")
            .close();
        },
    );
    xml.item_set(
        "ipv6CidrBlockAssociationSet",
        vpc.ipv6_cidr_block,
        |xml, block| {
            xml.leaf("associationId", association_id("vpc-cidr-assoc", &vpc.id))
                .leaf("ipv6CidrBlock", block)
                .open("ipv6CidrBlockState")
                .leaf("state", "associated")
                .close()
                .leaf("ipv6Pool", "Amazon");
        },
    );
    tag_set(xml, &vpc.tags);
}

/// One security group (a `securityGroupInfo/item`); rules are not modelled, so both rule
/// sets are empty.
pub(super) fn security_group(xml: &mut XmlWriter, group: &SecurityGroup) {
    xml.leaf("ownerId", &group.owner_id)
        .leaf("groupId", &group.id)
        .leaf("groupName", &group.name)
        .leaf("groupDescription", &group.description)
        .leaf("vpcId", &group.vpc_id)
        .open("ipPermissions")
        .close()
        .open("ipPermissionsEgress")
        .close();
    tag_set(xml, &group.tags);
}

/// One instance type (an `instanceTypeSet/item`): the networking facts and the basics.
pub(super) fn instance_type(xml: &mut XmlWriter, info: &InstanceTypeInfo) {
    xml.leaf("instanceType", &info.name)
        .leaf("currentGeneration", true)
        .leaf("bareMetal", info.bare_metal)
        .leaf("hypervisor", info.hypervisor.as_str())
        .open("vCpuInfo")
        .leaf("defaultVCpus", info.vcpus)
        .close()
        .open("memoryInfo")
        .leaf("sizeInMiB", info.memory_mib)
        .close()
        .open("networkInfo")
        .leaf("maximumNetworkInterfaces", info.maximum_network_interfaces)
        .leaf("maximumNetworkCards", info.maximum_network_cards())
        .leaf("defaultNetworkCardIndex", info.default_network_card_index)
        .item_set("networkCards", &info.network_cards, |xml, card| {
            xml.leaf("networkCardIndex", card.index)
                .leaf("maximumNetworkInterfaces", card.maximum_network_interfaces);
        })
        .leaf(
            "ipv4AddressesPerInterface",
            info.ipv4_addresses_per_interface,
        )
        .leaf(
            "ipv6AddressesPerInterface",
            info.ipv6_addresses_per_interface,
        )
        .leaf("ipv6Supported", info.ipv6_supported)
        .leaf("enaSupport", "required")
        .leaf("efaSupported", false)
        .close();
}

/// One trunk association (an `interfaceAssociationSet/item` or `<interfaceAssociation>`).
pub(super) fn trunk_association(xml: &mut XmlWriter, association: &TrunkInterfaceAssociation) {
    xml.leaf("associationId", &association.association_id)
        .leaf("branchInterfaceId", &association.branch_interface_id)
        .leaf("trunkInterfaceId", &association.trunk_interface_id)
        .leaf("interfaceProtocol", &association.interface_protocol)
        .leaf("vlanId", association.vlan_id);
}
