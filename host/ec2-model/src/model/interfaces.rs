//! ENI lifecycle: CreateNetworkInterface (with ClientToken idempotency), AttachNetworkInterface
//! with the instance type's interface limits, DetachNetworkInterface, DeleteNetworkInterface and
//! ModifyNetworkInterfaceAttribute.

use super::addresses::{
    at_most_one, no_ipv6_in_subnet, plan_ipv4, plan_ipv6, positive, prefix_delegation_unsupported,
    Ipv4Ask, Ipv6Ask,
};
use super::{idempotent_mismatch, Ec2Model, TokenUse, ACCOUNT_ID};
use crate::error::{codes, Ec2Error, Ec2Result};
use crate::requests::{CreateNetworkInterface, ModifyNetworkInterfaceAttribute};
use crate::tags;
use crate::types::{
    count, Attachment, AttachmentStatus, InstanceState, InterfaceType, NetworkInterface,
    NetworkInterfaceStatus,
};

const CREATE_NETWORK_INTERFACE: &str = "CreateNetworkInterface";

impl Ec2Model {
    /// CreateNetworkInterface: a new, unattached ENI with a primary address and whatever
    /// secondary addresses, prefixes and IPv6 addresses the request asks for.
    ///
    /// Repeating a request with the same `client_token` returns the same ENI; the same token
    /// with different parameters fails with `IdempotentParameterMismatch`.
    pub fn create_network_interface(
        &mut self,
        request: CreateNetworkInterface,
    ) -> Ec2Result<NetworkInterface> {
        if let Some(used) = self.token_use(CREATE_NETWORK_INTERFACE, request.client_token.as_ref())
        {
            return match used {
                TokenUse::CreateNetworkInterface {
                    request: first,
                    result,
                } if **first == request => Ok(self.enis.get(&result.id).unwrap_or(result).clone()),
                _ => Err(idempotent_mismatch(
                    request.client_token.as_deref().unwrap_or_default(),
                )),
            };
        }
        let record = self.subnet_record(&request.subnet_id)?;
        let subnet_id = record.subnet.id.clone();
        let vpc_id = record.subnet.vpc_id.clone();
        let availability_zone = record.subnet.availability_zone.clone();
        let has_ipv6 = record.ipv6.is_some();
        at_most_one(
            &[
                !request.private_ip_addresses.is_empty(),
                request.secondary_private_ip_address_count.is_some(),
                !request.ipv4_prefixes.is_empty(),
                request.ipv4_prefix_count.is_some(),
            ],
            "privateIpAddresses or secondaryPrivateIpAddressCount or ipv4Prefixes or ipv4PrefixCount",
        )?;
        at_most_one(
            &[
                !request.ipv6_addresses.is_empty(),
                request.ipv6_address_count.is_some(),
                !request.ipv6_prefixes.is_empty(),
                request.ipv6_prefix_count.is_some(),
            ],
            "ipv6Addresses or ipv6AddressCount or ipv6Prefixes or ipv6PrefixCount",
        )?;
        let security_group_ids =
            self.resolve_security_groups(&vpc_id, &request.security_group_ids)?;
        tags::validate_map(&request.tags)?;
        let ipv4 = Ipv4Ask {
            primary: Some(request.private_ip_address),
            addresses: &request.private_ip_addresses,
            address_count: positive(
                request.secondary_private_ip_address_count,
                "secondaryPrivateIpAddressCount",
            )?,
            prefixes: &request.ipv4_prefixes,
            prefix_count: positive(request.ipv4_prefix_count, "ipv4PrefixCount")?,
            ..Ipv4Ask::default()
        };
        let ipv6 = Ipv6Ask {
            addresses: &request.ipv6_addresses,
            address_count: positive(request.ipv6_address_count, "ipv6AddressCount")?,
            prefixes: &request.ipv6_prefixes,
            prefix_count: positive(request.ipv6_prefix_count, "ipv6PrefixCount")?,
        };
        let ipv4_slots = 1
            + count(ipv4.addresses.len() + ipv4.prefixes.len())
            + ipv4.address_count
            + ipv4.prefix_count;
        let ipv6_slots = count(ipv6.addresses.len() + ipv6.prefixes.len())
            + ipv6.address_count
            + ipv6.prefix_count;
        // Unattached, the ENI is held to the largest per-ENI limit of any type; attaching
        // checks it against the instance's own type.
        if ipv4_slots > self.catalog.max_ipv4_per_interface()
            || ipv6_slots > self.catalog.max_ipv6_per_interface()
        {
            return Err(Ec2Error::ip_limit_exceeded());
        }
        if ipv6_slots > 0 && !has_ipv6 {
            return Err(no_ipv6_in_subnet(&subnet_id));
        }
        let record = self
            .subnets
            .get(&subnet_id)
            .ok_or_else(|| Ec2Error::subnet_not_found(&subnet_id))?;
        let choice4 = plan_ipv4(&record.ipv4, &ipv4, self.policy, &mut self.rng)?;
        let choice6 = match &record.ipv6 {
            Some(pool) => Some(plan_ipv6(pool, &ipv6, self.policy, &mut self.rng)?),
            None => None,
        };
        let Some(primary) = choice4.primary else {
            return Err(Ec2Error::insufficient_addresses());
        };

        // Everything is checked: create.
        let id = self.new_id("eni");
        let mac_address = self.new_mac();
        let record = self
            .subnets
            .get_mut(&subnet_id)
            .ok_or_else(|| Ec2Error::subnet_not_found(&subnet_id))?;
        let pool = &mut record.ipv4;
        pool.claim_address(primary, &id);
        for &offset in &choice4.addresses {
            pool.claim_address(offset, &id);
        }
        for &start in &choice4.prefixes {
            pool.claim_prefix(start, &id);
        }
        let mut eni = NetworkInterface {
            id: id.clone(),
            subnet_id,
            vpc_id,
            availability_zone,
            owner_id: ACCOUNT_ID.into(),
            description: request.description.clone(),
            interface_type: request.interface_type,
            mac_address,
            private_ip_address: pool.address(primary),
            secondary_private_ip_addresses: choice4
                .addresses
                .iter()
                .map(|&o| pool.address(o))
                .collect(),
            ipv4_prefixes: choice4.prefixes.iter().map(|&o| pool.prefix(o)).collect(),
            ipv6_addresses: Vec::new(),
            ipv6_prefixes: Vec::new(),
            security_group_ids,
            source_dest_check: true,
            status: NetworkInterfaceStatus::Available,
            attachment: None,
            requester_managed: false,
            tags: request.tags.clone(),
        };
        if let (Some(choice6), Some(pool)) = (choice6, record.ipv6.as_mut()) {
            for &offset in &choice6.addresses {
                pool.claim_address(offset, &id);
                eni.ipv6_addresses.push(pool.address(offset));
            }
            for &start in &choice6.prefixes {
                pool.claim_prefix(start, &id);
                eni.ipv6_prefixes.push(pool.prefix(start));
            }
        }
        self.enis.insert(id, eni.clone());
        let token = request.client_token.clone();
        self.remember_token(
            CREATE_NETWORK_INTERFACE,
            token.as_ref(),
            TokenUse::CreateNetworkInterface {
                request: Box::new(request),
                result: Box::new(eni.clone()),
            },
        );
        self.touch();
        Ok(eni)
    }

    /// AttachNetworkInterface at `device_index` on `network_card_index` (default 0).
    ///
    /// Enforces the instance type's MaximumNetworkInterfaces (and the card's), a free device
    /// index, the same availability zone, and that the ENI's addresses and prefixes fit the
    /// type (prefixes need Nitro; trunk ENIs need a trunking-compatible type).
    pub fn attach_network_interface(
        &mut self,
        network_interface_id: &str,
        instance_id: &str,
        device_index: u32,
        network_card_index: Option<u32>,
    ) -> Ec2Result<Attachment> {
        let eni = self.eni_ref(network_interface_id)?;
        let instance = self.instance_ref(instance_id)?;
        if instance.state != InstanceState::Running {
            return Err(Ec2Error::incorrect_instance_state(instance_id));
        }
        if eni.status != NetworkInterfaceStatus::Available {
            return Err(Ec2Error::eni_in_use_for_attach(network_interface_id));
        }
        if eni.interface_type == InterfaceType::Branch {
            return Err(Ec2Error::invalid_value(format!(
                "Branch interface {network_interface_id} can only be associated with a trunk interface."
            )));
        }
        if eni.availability_zone != instance.availability_zone {
            return Err(Ec2Error::combination(format!(
                "You may not attach a network interface to an instance if they are not in the same availability zone ({} and {})",
                eni.availability_zone, instance.availability_zone
            )));
        }
        let instance_type = self
            .catalog
            .get(&instance.instance_type)
            .ok_or_else(|| unknown_type(&instance.instance_type))?;
        let card = network_card_index.unwrap_or(instance_type.default_network_card_index);
        let Some(card_limit) = instance_type.card_limit(card) else {
            return Err(Ec2Error::invalid_value(format!(
                "Value ({card}) for parameter networkCardIndex is invalid. Instance type {} has {} network card(s).",
                instance_type.name,
                instance_type.maximum_network_cards()
            )));
        };
        let attached = self.instance_network_interfaces(instance_id);
        if attached.iter().any(|other| {
            other
                .attachment
                .as_ref()
                .is_some_and(|a| a.network_card_index == card && a.device_index == device_index)
        }) {
            return Err(Ec2Error::invalid_value(format!(
                "Instance '{instance_id}' already has an interface attached at device index '{device_index}'."
            )));
        }
        let on_card = attached
            .iter()
            .filter(|other| {
                other
                    .attachment
                    .as_ref()
                    .is_some_and(|a| a.network_card_index == card)
            })
            .count();
        if attached.len() + 1 > instance_type.maximum_network_interfaces as usize
            || on_card + 1 > card_limit as usize
        {
            return Err(Ec2Error::new(
                codes::ATTACHMENT_LIMIT_EXCEEDED,
                format!(
                    "Interface count {} exceeds the limit for {}",
                    attached.len() + 1,
                    instance_type.name
                ),
            ));
        }
        let has_prefixes = !eni.ipv4_prefixes.is_empty() || !eni.ipv6_prefixes.is_empty();
        if has_prefixes && !instance_type.supports_prefix_delegation() {
            return Err(prefix_delegation_unsupported(
                network_interface_id,
                &instance_type.name,
            ));
        }
        if eni.ipv4_slots() > instance_type.ipv4_addresses_per_interface
            || eni.ipv6_slots() > instance_type.ipv6_addresses_per_interface
        {
            return Err(Ec2Error::ip_limit_exceeded());
        }
        if eni.interface_type == InterfaceType::Trunk && !instance_type.trunking_compatible {
            return Err(Ec2Error::invalid_value(format!(
                "Instance type {} does not support trunk interfaces.",
                instance_type.name
            )));
        }

        let attachment_id = self.new_id("eni-attach");
        let attachment = Attachment {
            attachment_id: attachment_id.clone(),
            instance_id: instance_id.to_owned(),
            instance_owner_id: ACCOUNT_ID.into(),
            device_index,
            network_card_index: card,
            status: AttachmentStatus::Attached,
            delete_on_termination: false,
            attach_time_unix_ms: self.now_unix_ms,
        };
        let eni = self.eni_mut(network_interface_id)?;
        eni.attachment = Some(attachment.clone());
        eni.status = NetworkInterfaceStatus::InUse;
        self.attachments
            .insert(attachment_id, network_interface_id.to_owned());
        self.touch();
        Ok(attachment)
    }

    /// DetachNetworkInterface by attachment id. The primary ENI (device index 0) cannot be
    /// detached. The model detaches at once; `force` changes nothing here.
    pub fn detach_network_interface(&mut self, attachment_id: &str, force: bool) -> Ec2Result<()> {
        let _ = force;
        let eni_id = self
            .attachments
            .get(attachment_id)
            .cloned()
            .ok_or_else(|| Ec2Error::attachment_not_found(attachment_id))?;
        let eni = self.eni_ref(&eni_id)?;
        let is_primary = eni.attachment.as_ref().is_some_and(|a| {
            self.instances
                .get(&a.instance_id)
                .is_some_and(|i| i.primary_network_interface_id == eni_id)
        });
        if is_primary {
            return Err(Ec2Error::new(
                codes::OPERATION_NOT_PERMITTED,
                "The network interface at device index 0 cannot be detached.",
            ));
        }
        self.detach_unchecked(&eni_id)?;
        self.touch();
        Ok(())
    }

    /// DeleteNetworkInterface: only unattached ENIs can be deleted. Deleting a trunk or an
    /// associated branch also removes its trunk associations.
    pub fn delete_network_interface(&mut self, network_interface_id: &str) -> Ec2Result<()> {
        let eni = self.eni_ref(network_interface_id)?;
        if eni.attachment.is_some() {
            return Err(Ec2Error::eni_in_use_for_delete(network_interface_id));
        }
        self.remove_eni(network_interface_id)?;
        self.touch();
        Ok(())
    }

    /// ModifyNetworkInterfaceAttribute: exactly one of description, SourceDestCheck, security
    /// groups, or the attachment's DeleteOnTermination.
    pub fn modify_network_interface_attribute(
        &mut self,
        request: ModifyNetworkInterfaceAttribute,
    ) -> Ec2Result<()> {
        let eni = self.eni_ref(&request.network_interface_id)?;
        let eni_id = eni.id.clone();
        let given = [
            request.description.is_some(),
            request.source_dest_check.is_some(),
            request.security_group_ids.is_some(),
            request.attachment_delete_on_termination.is_some(),
        ];
        match given.iter().filter(|&&g| g).count() {
            1 => {}
            0 => return Err(Ec2Error::new(
                codes::MISSING_PARAMETER,
                "One of description, sourceDestCheck, groupSet or attachment must be specified.",
            )),
            _ => {
                return Err(Ec2Error::combination(
                    "Only one attribute can be modified at a time.",
                ))
            }
        }
        let groups = match &request.security_group_ids {
            Some(ids) if ids.is_empty() => {
                return Err(Ec2Error::new(
                    codes::MISSING_PARAMETER,
                    "The request must contain the parameter groupId",
                ))
            }
            Some(ids) => Some(self.resolve_security_groups(&eni.vpc_id, ids)?),
            None => None,
        };
        if let Some((attachment_id, _)) = &request.attachment_delete_on_termination {
            let matches = eni
                .attachment
                .as_ref()
                .is_some_and(|a| a.attachment_id == *attachment_id);
            if !matches {
                return Err(Ec2Error::attachment_not_found(attachment_id));
            }
        }
        let eni = self.eni_mut(&eni_id)?;
        if let Some(description) = request.description {
            eni.description = description;
        }
        if let Some(check) = request.source_dest_check {
            eni.source_dest_check = check;
        }
        if let Some(groups) = groups {
            eni.security_group_ids = groups;
        }
        if let (Some((_, delete)), Some(attachment)) = (
            request.attachment_delete_on_termination,
            eni.attachment.as_mut(),
        ) {
            attachment.delete_on_termination = delete;
        }
        self.touch();
        Ok(())
    }

    /// Detach without the primary-ENI check (termination detaches everything).
    pub(super) fn detach_unchecked(&mut self, eni_id: &str) -> Ec2Result<()> {
        let eni = self.eni_mut(eni_id)?;
        let attachment = eni.attachment.take();
        eni.status = NetworkInterfaceStatus::Available;
        if let Some(attachment) = attachment {
            self.attachments.remove(&attachment.attachment_id);
        }
        Ok(())
    }

    /// Delete an ENI and everything that hangs off it.
    pub(super) fn remove_eni(&mut self, eni_id: &str) -> Ec2Result<()> {
        let eni = self
            .enis
            .remove(eni_id)
            .ok_or_else(|| Ec2Error::eni_not_found(eni_id))?;
        self.release_all_addresses(&eni)?;
        if let Some(attachment) = &eni.attachment {
            self.attachments.remove(&attachment.attachment_id);
        }
        self.macs.remove(&eni.mac_address);
        let dropped: Vec<(String, String)> = self
            .trunk_associations
            .values()
            .filter(|a| a.trunk_interface_id == eni_id || a.branch_interface_id == eni_id)
            .map(|a| (a.association_id.clone(), a.branch_interface_id.clone()))
            .collect();
        for (association_id, branch_id) in dropped {
            self.trunk_associations.remove(&association_id);
            if let Some(branch) = self.enis.get_mut(&branch_id) {
                branch.status = NetworkInterfaceStatus::Available;
            }
        }
        Ok(())
    }
}

/// An instance whose type vanished from the catalog cannot exist; answer like EC2 would for
/// an unknown type rather than panic.
pub(super) fn unknown_type(name: &str) -> Ec2Error {
    Ec2Error::invalid_value(format!("Invalid value '{name}' for InstanceType."))
}
