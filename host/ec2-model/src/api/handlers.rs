//! One function per action: EC2 Query parameters → model request → XML response.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::render;
use super::Reply;
use crate::describe::{paginate, validate_max_results, wildcard_match, Filter};
use crate::error::{codes, Ec2Error, Ec2Result};
use crate::model::Ec2Model;
use crate::requests::{
    AssignIpv6Addresses, AssignPrivateIpAddresses, AssociateTrunkInterface, CreateNetworkInterface,
    ModifyNetworkInterfaceAttribute, RunInstance, UnassignIpv6Addresses,
    UnassignPrivateIpAddresses,
};
use crate::types::{InstanceDescription, InterfaceType};
use crate::wire::Params;

// ----- describe ---------------------------------------------------------------------------

pub(super) fn describe_network_interfaces(
    model: &Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    let page = model.describe_network_interfaces(
        &params.list("NetworkInterfaceId"),
        &params.filters()?,
        &params.page()?,
    )?;
    reply.xml(|xml| {
        xml.item_set("networkInterfaceSet", &page.items, |xml, eni| {
            render::network_interface(xml, model, eni);
        })
        .leaf_opt("nextToken", page.next_token.as_ref());
    })
}

pub(super) fn describe_instances(
    model: &Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    let page = model.describe_instances(
        &params.list("InstanceId"),
        &params.filters()?,
        &params.page()?,
    )?;
    reply.xml(|xml| {
        xml.item_set("reservationSet", &page.items, |xml, description| {
            render::reservation(xml, model, description);
        })
        .leaf_opt("nextToken", page.next_token.as_ref());
    })
}

pub(super) fn describe_subnets(
    model: &Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    let page = model.describe_subnets(
        &params.list("SubnetId"),
        &params.filters()?,
        &params.page()?,
    )?;
    reply.xml(|xml| {
        xml.item_set("subnetSet", &page.items, render::subnet)
            .leaf_opt("nextToken", page.next_token.as_ref());
    })
}

pub(super) fn describe_vpcs(
    model: &Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    let filters = params.filters()?;
    let vpcs = model.describe_vpcs(&params.list("VpcId"))?;
    let vpcs: Vec<_> = vpcs
        .into_iter()
        .filter(|vpc| {
            simple_filters_match(&filters, |name| match name {
                "vpc-id" => Some(vec![vpc.id.clone()]),
                "cidr" | "cidr-block" => {
                    Some(vpc.cidr_blocks.iter().map(|c| c.to_string()).collect())
                }
                "owner-id" => Some(vec![vpc.owner_id.clone()]),
                "state" => Some(vec!["available".into()]),
                _ => tag_values(&vpc.tags, name),
            })
        })
        .collect();
    check_simple_filters(
        &filters,
        &["vpc-id", "cidr", "cidr-block", "owner-id", "state"],
    )?;
    reply.xml(|xml| {
        xml.item_set("vpcSet", &vpcs, render::vpc);
    })
}

pub(super) fn describe_security_groups(
    model: &Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    let filters = params.filters()?;
    check_simple_filters(&filters, &["group-id", "group-name", "vpc-id", "owner-id"])?;
    let groups = model.describe_security_groups(&params.list("GroupId"))?;
    let names = params.list("GroupName");
    let groups: Vec<_> = groups
        .into_iter()
        .filter(|group| names.is_empty() || names.contains(&group.name))
        .filter(|group| {
            simple_filters_match(&filters, |name| match name {
                "group-id" => Some(vec![group.id.clone()]),
                "group-name" => Some(vec![group.name.clone()]),
                "vpc-id" => Some(vec![group.vpc_id.clone()]),
                "owner-id" => Some(vec![group.owner_id.clone()]),
                _ => tag_values(&group.tags, name),
            })
        })
        .collect();
    reply.xml(|xml| {
        xml.item_set("securityGroupInfo", &groups, render::security_group);
    })
}

/// DescribeInstanceTypes allows 5..=100 results per page.
const INSTANCE_TYPES_MAX_RESULTS: u32 = 100;

pub(super) fn describe_instance_types(
    model: &Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    let filters = params.filters()?;
    check_simple_filters(&filters, &["instance-type", "hypervisor", "bare-metal"])?;
    let page = params.page()?;
    validate_max_results(&page, 5, INSTANCE_TYPES_MAX_RESULTS)?;
    let types = model.describe_instance_types(&params.list("InstanceType"))?;
    let items = types
        .into_iter()
        .filter(|info| {
            simple_filters_match(&filters, |name| match name {
                "instance-type" => Some(vec![info.name.clone()]),
                "hypervisor" => Some(vec![info.hypervisor.as_str().to_owned()]),
                "bare-metal" => Some(vec![info.bare_metal.to_string()]),
                _ => None,
            })
        })
        .map(|info| (info.name.clone(), info))
        .collect();
    let page = paginate(items, &page)?;
    reply.xml(|xml| {
        xml.item_set("instanceTypeSet", &page.items, render::instance_type)
            .leaf_opt("nextToken", page.next_token.as_ref());
    })
}

pub(super) fn describe_trunk_interface_associations(
    model: &Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    let filters = params.filters()?;
    check_simple_filters(
        &filters,
        &[
            "trunk-interface-association.trunk-interface-id",
            "trunk-interface-association.branch-interface-id",
            "trunk-interface-association.id",
        ],
    )?;
    let associations =
        model.describe_trunk_interface_associations(&params.list("AssociationId"))?;
    let items: Vec<_> = associations
        .into_iter()
        .filter(|a| {
            simple_filters_match(&filters, |name| match name {
                "trunk-interface-association.trunk-interface-id" => {
                    Some(vec![a.trunk_interface_id.clone()])
                }
                "trunk-interface-association.branch-interface-id" => {
                    Some(vec![a.branch_interface_id.clone()])
                }
                "trunk-interface-association.id" => Some(vec![a.association_id.clone()]),
                _ => None,
            })
        })
        .map(|a| (a.association_id.clone(), a))
        .collect();
    let page = paginate(items, &params.page()?)?;
    reply.xml(|xml| {
        xml.item_set(
            "interfaceAssociationSet",
            &page.items,
            render::trunk_association,
        )
        .leaf_opt("nextToken", page.next_token.as_ref());
    })
}

/// Filters for resources the model has no filter support for: only the listed names (and
/// tag filters) are accepted.
fn check_simple_filters(filters: &[Filter], known: &[&str]) -> Ec2Result<()> {
    for filter in filters {
        let name = filter.name.as_str();
        let ok = known.contains(&name)
            || name.starts_with("tag:")
            || name == "tag-key"
            || name == "tag-value";
        if !ok {
            return Err(Ec2Error::invalid_value(format!(
                "The filter '{name}' is invalid"
            )));
        }
    }
    Ok(())
}

fn simple_filters_match(
    filters: &[Filter],
    values_of: impl Fn(&str) -> Option<Vec<String>>,
) -> bool {
    filters.iter().all(|filter| {
        let values = values_of(&filter.name).unwrap_or_default();
        filter.values.iter().any(|pattern| {
            values
                .iter()
                .any(|value| wildcard_match(pattern.as_bytes(), value.as_bytes()))
        })
    })
}

fn tag_values(tags: &crate::types::Tags, name: &str) -> Option<Vec<String>> {
    if let Some(key) = name.strip_prefix("tag:") {
        return Some(tags.get(key).cloned().into_iter().collect());
    }
    match name {
        "tag-key" => Some(tags.keys().cloned().collect()),
        "tag-value" => Some(tags.values().cloned().collect()),
        _ => None,
    }
}

// ----- VPCs, subnets, security groups, instances ------------------------------------------

pub(super) fn create_vpc(
    model: &mut Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    let cidr: Ipv4Net = params.required_parsed("CidrBlock")?;
    let tags = params.tag_specifications("vpc")?;
    let with_ipv6 = params.flag("AmazonProvidedIpv6CidrBlock")?;
    let vpc = staged(model, |model| {
        let vpc = model.create_vpc(cidr)?;
        if with_ipv6 {
            model.assign_vpc_ipv6_cidr_block(&vpc.id)?;
        }
        tag_resource(model, &vpc.id, &tags)?;
        model
            .vpc(&vpc.id)
            .cloned()
            .ok_or_else(|| Ec2Error::new(codes::INTERNAL_ERROR, "the new VPC vanished"))
    })?;
    reply.xml(|xml| {
        xml.open("vpc");
        render::vpc(xml, &vpc);
        xml.close();
    })
}

pub(super) fn create_subnet(
    model: &mut Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    let vpc_id = params.required("VpcId")?;
    let cidr: Ipv4Net = params.required_parsed("CidrBlock")?;
    let zone = params
        .get("AvailabilityZone")
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{}a", model.region()));
    let ipv6: Option<Ipv6Net> = params.parsed("Ipv6CidrBlock")?;
    let tags = params.tag_specifications("subnet")?;
    let subnet = staged(model, |model| {
        let subnet = model.create_subnet(vpc_id, cidr, &zone)?;
        if let Some(block) = ipv6 {
            model.associate_subnet_ipv6_cidr_block(&subnet.id, block)?;
        }
        tag_resource(model, &subnet.id, &tags)?;
        model
            .subnet(&subnet.id)
            .ok_or_else(|| Ec2Error::new(codes::INTERNAL_ERROR, "the new subnet vanished"))
    })?;
    reply.xml(|xml| {
        xml.open("subnet");
        render::subnet(xml, &subnet);
        xml.close();
    })
}

pub(super) fn create_security_group(
    model: &mut Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    let name = params.required("GroupName")?;
    params.required("GroupDescription")?;
    let vpc_id = params.required("VpcId")?;
    let tags = params.tag_specifications("security-group")?;
    let group = staged(model, |model| {
        let group = model.create_security_group(vpc_id, name)?;
        tag_resource(model, &group.id, &tags)?;
        Ok(group)
    })?;
    reply.xml(|xml| {
        xml.leaf("return", true).leaf("groupId", &group.id);
        render::tag_set(xml, &tags);
    })
}

pub(super) fn run_instances(
    model: &mut Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    let min: u32 = params.required_parsed("MinCount")?;
    let max: u32 = params.required_parsed("MaxCount")?;
    if min == 0 || max < min {
        return Err(Ec2Error::invalid_value(format!(
            "Invalid MinCount ({min}) / MaxCount ({max})"
        )));
    }
    let subnet_id = params.required("SubnetId")?;
    let mut request = RunInstance::new(params.get("InstanceType").unwrap_or("m1.small"), subnet_id)
        .security_groups(params.list("SecurityGroupId"));
    request.private_ip_address = params.parsed::<Ipv4Addr>("PrivateIpAddress")?;
    request.tags = params.tag_specifications("instance")?;
    request.client_token = params.get("ClientToken").map(str::to_owned);
    if max > 1 && (request.private_ip_address.is_some() || request.client_token.is_some()) {
        return Err(Ec2Error::combination(
            "PrivateIpAddress and ClientToken need MaxCount = 1 in this emulator",
        ));
    }
    let launched = staged(model, |model| {
        (0..max)
            .map(|_| model.run_instance(request.clone()))
            .collect::<Ec2Result<Vec<_>>>()
    })?;
    let descriptions: Vec<InstanceDescription> = launched
        .into_iter()
        .map(|instance| InstanceDescription {
            network_interfaces: model
                .instance_network_interfaces(&instance.id)
                .into_iter()
                .cloned()
                .collect(),
            instance,
        })
        .collect();
    let first = descriptions
        .first()
        .ok_or_else(|| Ec2Error::new(codes::INTERNAL_ERROR, "no instance launched"))?;
    let reservation = render::reservation_id(&first.instance);
    let owner = first.instance.owner_id.clone();
    reply.xml(|xml| {
        xml.leaf("reservationId", reservation)
            .leaf("ownerId", owner);
        xml.item_set("instancesSet", &descriptions, |xml, description| {
            render::instance(xml, model, description);
        });
    })
}

pub(super) fn terminate_instances(
    model: &mut Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    let ids = params.list("InstanceId");
    if ids.is_empty() {
        return Err(Ec2Error::new(
            codes::MISSING_PARAMETER,
            "The request must contain the parameter InstanceId",
        ));
    }
    let changes = staged(model, |model| {
        let mut changes = Vec::new();
        for id in &ids {
            let before = model
                .instance(id)
                .map(|instance| instance.state)
                .ok_or_else(|| Ec2Error::instance_not_found(id))?;
            let after = model.terminate_instance(id)?.state;
            changes.push((id.clone(), before, after));
        }
        Ok(changes)
    })?;
    reply.xml(|xml| {
        xml.item_set("instancesSet", &changes, |xml, (id, before, after)| {
            xml.leaf("instanceId", id)
                .open("currentState")
                .leaf("code", after.code())
                .leaf("name", after.as_str())
                .close()
                .open("previousState")
                .leaf("code", before.code())
                .leaf("name", before.as_str())
                .close();
        });
    })
}

/// Run several model actions as one: on a copy of the model, committed only if all succeed,
/// so a failing request changes nothing (as each single model action guarantees).
fn staged<T>(
    model: &mut Ec2Model,
    steps: impl FnOnce(&mut Ec2Model) -> Ec2Result<T>,
) -> Ec2Result<T> {
    let mut copy = model.clone();
    let result = steps(&mut copy)?;
    *model = copy;
    Ok(result)
}

fn tag_resource(model: &mut Ec2Model, id: &str, tags: &crate::types::Tags) -> Ec2Result<()> {
    if tags.is_empty() {
        return Ok(());
    }
    let tags: Vec<_> = tags
        .iter()
        .map(|(k, v)| crate::types::Tag::new(k, v))
        .collect();
    model.create_tags(&[id.to_owned()], &tags)
}

// ----- network interfaces -----------------------------------------------------------------

pub(super) fn create_network_interface(
    model: &mut Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    let mut request = CreateNetworkInterface::new(params.required("SubnetId")?);
    request.description = params.get("Description").unwrap_or_default().to_owned();
    request.security_group_ids = params.list("SecurityGroupId");
    request.private_ip_address = params.parsed("PrivateIpAddress")?;
    for entry in params.structs("PrivateIpAddresses") {
        let address: Ipv4Addr = entry.required_parsed("PrivateIpAddress")?;
        if entry.flag("Primary")? {
            if request.private_ip_address.is_some_and(|a| a != address) {
                return Err(Ec2Error::combination(
                    "Only one primary private IP address can be specified",
                ));
            }
            request.private_ip_address = Some(address);
        } else {
            request.private_ip_addresses.push(address);
        }
    }
    request.secondary_private_ip_address_count = params.parsed("SecondaryPrivateIpAddressCount")?;
    request.ipv4_prefixes = params
        .structs("Ipv4Prefix")
        .iter()
        .map(|entry| entry.required_parsed::<Ipv4Net>("Ipv4Prefix"))
        .collect::<Ec2Result<_>>()?;
    request.ipv4_prefix_count = params.parsed("Ipv4PrefixCount")?;
    request.ipv6_addresses = params
        .structs("Ipv6Addresses")
        .iter()
        .map(|entry| entry.required_parsed::<Ipv6Addr>("Ipv6Address"))
        .collect::<Ec2Result<_>>()?;
    request.ipv6_address_count = params.parsed("Ipv6AddressCount")?;
    request.ipv6_prefixes = params
        .structs("Ipv6Prefix")
        .iter()
        .map(|entry| entry.required_parsed::<Ipv6Net>("Ipv6Prefix"))
        .collect::<Ec2Result<_>>()?;
    request.ipv6_prefix_count = params.parsed("Ipv6PrefixCount")?;
    request.interface_type = match params.get("InterfaceType") {
        None | Some("interface") => InterfaceType::Interface,
        Some("trunk") => InterfaceType::Trunk,
        Some("branch") => InterfaceType::Branch,
        Some(other) => {
            return Err(Ec2Error::invalid_value(format!(
                "Value ({other}) for parameter interfaceType is invalid."
            )))
        }
    };
    request.tags = params.tag_specifications("network-interface")?;
    request.client_token = params.get("ClientToken").map(str::to_owned);
    let client_token = request.client_token.clone();
    let eni = model.create_network_interface(request)?;
    reply.xml(|xml| {
        xml.open("networkInterface");
        render::network_interface(xml, model, &eni);
        xml.close().leaf_opt("clientToken", client_token);
    })
}

pub(super) fn attach_network_interface(
    model: &mut Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    let attachment = model.attach_network_interface(
        params.required("NetworkInterfaceId")?,
        params.required("InstanceId")?,
        params.required_parsed("DeviceIndex")?,
        params.parsed("NetworkCardIndex")?,
    )?;
    reply.xml(|xml| {
        xml.leaf("attachmentId", &attachment.attachment_id)
            .leaf("networkCardIndex", attachment.network_card_index);
    })
}

pub(super) fn detach_network_interface(
    model: &mut Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    model.detach_network_interface(params.required("AttachmentId")?, params.flag("Force")?)?;
    reply.ok()
}

pub(super) fn delete_network_interface(
    model: &mut Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    model.delete_network_interface(params.required("NetworkInterfaceId")?)?;
    reply.ok()
}

pub(super) fn modify_network_interface_attribute(
    model: &mut Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    let groups = params.list("SecurityGroupId");
    let attachment = match params.nested("Attachment") {
        Some(attachment) => Some((
            attachment.required("AttachmentId")?.to_owned(),
            attachment.required_parsed::<bool>("DeleteOnTermination")?,
        )),
        None => None,
    };
    let request = ModifyNetworkInterfaceAttribute {
        network_interface_id: params.required("NetworkInterfaceId")?.to_owned(),
        description: params.get("Description.Value").map(str::to_owned),
        source_dest_check: params.parsed("SourceDestCheck.Value")?,
        security_group_ids: (!groups.is_empty()).then_some(groups),
        attachment_delete_on_termination: attachment,
    };
    model.modify_network_interface_attribute(request)?;
    reply.ok()
}

pub(super) fn assign_private_ip_addresses(
    model: &mut Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    let request = AssignPrivateIpAddresses {
        network_interface_id: params.required("NetworkInterfaceId")?.to_owned(),
        private_ip_addresses: params.parsed_list("PrivateIpAddress")?,
        secondary_private_ip_address_count: params.parsed("SecondaryPrivateIpAddressCount")?,
        ipv4_prefixes: params.parsed_list("Ipv4Prefix")?,
        ipv4_prefix_count: params.parsed("Ipv4PrefixCount")?,
        allow_reassignment: params.flag("AllowReassignment")?,
    };
    let assigned = model.assign_private_ip_addresses(request)?;
    reply.xml(|xml| {
        xml.leaf("networkInterfaceId", &assigned.network_interface_id)
            .item_set(
                "assignedPrivateIpAddressesSet",
                &assigned.assigned_private_ip_addresses,
                |xml, address| {
                    xml.leaf("privateIpAddress", address);
                },
            )
            .item_set(
                "assignedIpv4PrefixSet",
                &assigned.assigned_ipv4_prefixes,
                |xml, prefix| {
                    xml.leaf("ipv4Prefix", prefix);
                },
            )
            .leaf("return", true);
    })
}

pub(super) fn unassign_private_ip_addresses(
    model: &mut Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    let request = UnassignPrivateIpAddresses {
        network_interface_id: params.required("NetworkInterfaceId")?.to_owned(),
        private_ip_addresses: params.parsed_list("PrivateIpAddress")?,
        ipv4_prefixes: params.parsed_list("Ipv4Prefix")?,
    };
    model.unassign_private_ip_addresses(request)?;
    reply.ok()
}

pub(super) fn assign_ipv6_addresses(
    model: &mut Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    let request = AssignIpv6Addresses {
        network_interface_id: params.required("NetworkInterfaceId")?.to_owned(),
        ipv6_addresses: params.parsed_list("Ipv6Addresses")?,
        ipv6_address_count: params.parsed("Ipv6AddressCount")?,
        ipv6_prefixes: params.parsed_list("Ipv6Prefix")?,
        ipv6_prefix_count: params.parsed("Ipv6PrefixCount")?,
    };
    let assigned = model.assign_ipv6_addresses(request)?;
    reply.xml(|xml| {
        xml.leaf("networkInterfaceId", &assigned.network_interface_id)
            .scalar_set("assignedIpv6Addresses", &assigned.assigned_ipv6_addresses)
            .scalar_set("assignedIpv6PrefixSet", &assigned.assigned_ipv6_prefixes);
    })
}

pub(super) fn unassign_ipv6_addresses(
    model: &mut Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    let request = UnassignIpv6Addresses {
        network_interface_id: params.required("NetworkInterfaceId")?.to_owned(),
        ipv6_addresses: params.parsed_list("Ipv6Addresses")?,
        ipv6_prefixes: params.parsed_list("Ipv6Prefix")?,
    };
    let removed = model.unassign_ipv6_addresses(request)?;
    reply.xml(|xml| {
        xml.leaf("networkInterfaceId", &removed.network_interface_id)
            .scalar_set("unassignedIpv6Addresses", &removed.ipv6_addresses)
            .scalar_set("unassignedIpv6PrefixSet", &removed.ipv6_prefixes);
    })
}

// ----- tags and trunking ------------------------------------------------------------------

pub(super) fn create_tags(
    model: &mut Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    model.create_tags(&params.list("ResourceId"), &params.tags("Tag")?)?;
    reply.ok()
}

pub(super) fn delete_tags(
    model: &mut Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    model.delete_tags(&params.list("ResourceId"), &params.delete_tags("Tag")?)?;
    reply.ok()
}

pub(super) fn associate_trunk_interface(
    model: &mut Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    if params.get("GreKey").is_some() {
        return Err(Ec2Error::invalid_value(
            "GRE trunking is not supported by this emulator; use VlanId",
        ));
    }
    let request = AssociateTrunkInterface {
        branch_interface_id: params.required("BranchInterfaceId")?.to_owned(),
        trunk_interface_id: params.required("TrunkInterfaceId")?.to_owned(),
        vlan_id: params.required_parsed("VlanId")?,
        client_token: params.get("ClientToken").map(str::to_owned),
    };
    let client_token = request.client_token.clone();
    let association = model.associate_trunk_interface(request)?;
    reply.xml(|xml| {
        xml.open("interfaceAssociation");
        render::trunk_association(xml, &association);
        xml.close().leaf_opt("clientToken", client_token);
    })
}

pub(super) fn disassociate_trunk_interface(
    model: &mut Ec2Model,
    params: &Params,
    reply: Reply<'_>,
) -> Ec2Result<String> {
    model.disassociate_trunk_interface(params.required("AssociationId")?)?;
    let client_token = params.get("ClientToken").map(str::to_owned);
    reply.xml(|xml| {
        xml.leaf("return", true)
            .leaf_opt("clientToken", client_token);
    })
}
