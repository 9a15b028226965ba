//! Consistency checks of the whole model: what must hold after any sequence of successful or
//! failed actions. Tests (and the strategy simulator) call it after every step.

use std::collections::{BTreeMap, BTreeSet};

use super::Ec2Model;
use crate::addressing::{
    Ipv4Use, IPV4_PREFIX_LEN, IPV4_PREFIX_SIZE, IPV6_PREFIX_LEN, IPV6_PREFIX_SPAN,
};
use crate::types::{InstanceState, InterfaceType, NetworkInterfaceStatus};

/// A broken model invariant: a bug in the model, never a user error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EC2 model invariant broken: {0}")]
pub struct InvariantViolation(pub String);

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(InvariantViolation(format!($($msg)+)));
        }
    };
}

impl Ec2Model {
    /// Check every invariant EC2 guarantees:
    ///
    /// - no IPv4 address, /28 prefix, IPv6 address or /80 prefix is held twice in a subnet,
    ///   and the subnet's bookkeeping matches the ENIs exactly;
    /// - reserved addresses are never handed out, and every address is inside its subnet;
    /// - prefixes are aligned /28 (/80) blocks, and only on Nitro instances when attached;
    /// - per-ENI IPv4/IPv6 limits and per-instance (and per-card) interface limits hold;
    /// - attachments, statuses, device indexes, MAC addresses and trunk associations agree.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        self.check_addresses()?;
        self.check_interfaces()?;
        self.check_instances()?;
        self.check_trunks()
    }

    fn check_addresses(&self) -> Result<(), InvariantViolation> {
        for (subnet_id, record) in &self.subnets {
            let mut expected4: BTreeMap<u32, (String, Ipv4Use)> = BTreeMap::new();
            let mut expected6_addresses: BTreeMap<u64, String> = BTreeMap::new();
            let mut expected6_prefixes: BTreeMap<u64, String> = BTreeMap::new();
            for eni in self.enis.values().filter(|e| &e.subnet_id == subnet_id) {
                for (address, _) in eni.private_ip_addresses() {
                    let offset = record.ipv4.offset(address);
                    ensure!(
                        offset.is_some(),
                        "{} holds {address} outside {subnet_id}",
                        eni.id
                    );
                    let offset = offset.unwrap_or_default();
                    ensure!(
                        !record.ipv4.is_reserved(offset),
                        "{} holds reserved {address}",
                        eni.id
                    );
                    let previous = expected4.insert(offset, (eni.id.clone(), Ipv4Use::Address));
                    ensure!(previous.is_none(), "{address} held twice in {subnet_id}");
                }
                for prefix in &eni.ipv4_prefixes {
                    ensure!(
                        prefix.prefix_len() == IPV4_PREFIX_LEN && prefix.addr() == prefix.network(),
                        "{} holds unaligned prefix {prefix}",
                        eni.id
                    );
                    let start = record.ipv4.offset(prefix.network());
                    ensure!(
                        start.is_some() && record.ipv4.offset(prefix.broadcast()).is_some(),
                        "{} holds prefix {prefix} outside {subnet_id}",
                        eni.id
                    );
                    let start = start.unwrap_or_default();
                    for offset in start..start + IPV4_PREFIX_SIZE {
                        ensure!(
                            !record.ipv4.is_reserved(offset),
                            "prefix {prefix} of {} covers a reserved address",
                            eni.id
                        );
                        let previous =
                            expected4.insert(offset, (eni.id.clone(), Ipv4Use::Prefix(start)));
                        ensure!(
                            previous.is_none(),
                            "prefix {prefix} overlaps another holder"
                        );
                    }
                }
                if !eni.ipv6_addresses.is_empty() || !eni.ipv6_prefixes.is_empty() {
                    let pool = record.ipv6.as_ref();
                    ensure!(
                        pool.is_some(),
                        "{} has IPv6 in IPv4-only {subnet_id}",
                        eni.id
                    );
                }
                if let Some(pool) = &record.ipv6 {
                    for address in &eni.ipv6_addresses {
                        let offset = pool.offset(*address);
                        ensure!(
                            offset.is_some(),
                            "{} holds {address} outside {subnet_id}",
                            eni.id
                        );
                        let offset = offset.unwrap_or_default();
                        ensure!(
                            offset >= 4 && offset != u64::MAX,
                            "{} holds reserved {address}",
                            eni.id
                        );
                        let previous = expected6_addresses.insert(offset, eni.id.clone());
                        ensure!(previous.is_none(), "{address} held twice in {subnet_id}");
                    }
                    for prefix in &eni.ipv6_prefixes {
                        ensure!(
                            prefix.prefix_len() == IPV6_PREFIX_LEN
                                && prefix.addr() == prefix.network(),
                            "{} holds unaligned prefix {prefix}",
                            eni.id
                        );
                        let start = pool.offset(prefix.network());
                        ensure!(
                            start.is_some(),
                            "{} holds {prefix} outside {subnet_id}",
                            eni.id
                        );
                        let previous =
                            expected6_prefixes.insert(start.unwrap_or_default(), eni.id.clone());
                        ensure!(previous.is_none(), "{prefix} held twice in {subnet_id}");
                    }
                }
            }
            ensure!(
                &expected4 == record.ipv4.used(),
                "IPv4 bookkeeping of {subnet_id} differs from its ENIs"
            );
            if let Some(pool) = &record.ipv6 {
                ensure!(
                    &expected6_addresses == pool.addresses()
                        && &expected6_prefixes == pool.prefixes(),
                    "IPv6 bookkeeping of {subnet_id} differs from its ENIs"
                );
                for (start, eni) in &expected6_prefixes {
                    let end = start + (IPV6_PREFIX_SPAN - 1);
                    let overlap = expected6_addresses.range(start..=&end).next();
                    ensure!(
                        overlap.is_none(),
                        "IPv6 prefix of {eni} overlaps an address"
                    );
                    ensure!(
                        *start != 0 && end != u64::MAX,
                        "IPv6 prefix of {eni} covers reserved"
                    );
                }
            }
        }
        Ok(())
    }

    fn check_interfaces(&self) -> Result<(), InvariantViolation> {
        let mut macs = BTreeSet::new();
        for eni in self.enis.values() {
            ensure!(
                macs.insert(&eni.mac_address),
                "MAC {} used twice",
                eni.mac_address
            );
            ensure!(
                self.subnets.contains_key(&eni.subnet_id),
                "{} in unknown subnet",
                eni.id
            );
            let branch_of = self
                .trunk_associations
                .values()
                .any(|a| a.branch_interface_id == eni.id);
            let expected_status = if eni.attachment.is_some() || branch_of {
                NetworkInterfaceStatus::InUse
            } else {
                NetworkInterfaceStatus::Available
            };
            ensure!(
                eni.status == expected_status,
                "{} has status {:?}",
                eni.id,
                eni.status
            );
            ensure!(
                eni.ipv4_slots() <= self.ipv4_limit(eni),
                "{} has {} IPv4 slots, limit {}",
                eni.id,
                eni.ipv4_slots(),
                self.ipv4_limit(eni)
            );
            ensure!(
                eni.ipv6_slots() <= self.ipv6_limit(eni),
                "{} has {} IPv6 slots, limit {}",
                eni.id,
                eni.ipv6_slots(),
                self.ipv6_limit(eni)
            );
            if let Some(attachment) = &eni.attachment {
                ensure!(
                    self.attachments.get(&attachment.attachment_id) == Some(&eni.id),
                    "attachment {} not indexed",
                    attachment.attachment_id
                );
                let instance = self.instances.get(&attachment.instance_id);
                ensure!(
                    instance.is_some_and(|i| i.state == InstanceState::Running),
                    "{} attached to a missing or terminated instance",
                    eni.id
                );
                ensure!(
                    eni.interface_type != InterfaceType::Branch,
                    "branch {} attached",
                    eni.id
                );
                if let Some(instance_type) = self.attached_instance_type(eni) {
                    let has_prefixes =
                        !eni.ipv4_prefixes.is_empty() || !eni.ipv6_prefixes.is_empty();
                    ensure!(
                        !has_prefixes || instance_type.supports_prefix_delegation(),
                        "{} has prefixes on non-Nitro {}",
                        eni.id,
                        instance_type.name
                    );
                }
            }
        }
        ensure!(
            self.attachments.len()
                == self
                    .enis
                    .values()
                    .filter(|e| e.attachment.is_some())
                    .count(),
            "stale attachment index"
        );
        ensure!(macs.len() == self.macs.len(), "MAC registry out of date");
        Ok(())
    }

    fn check_instances(&self) -> Result<(), InvariantViolation> {
        for instance in self.instances.values() {
            let enis = self.instance_network_interfaces(&instance.id);
            if instance.state == InstanceState::Terminated {
                ensure!(enis.is_empty(), "terminated {} still has ENIs", instance.id);
                continue;
            }
            let instance_type = self.catalog.get(&instance.instance_type);
            ensure!(instance_type.is_some(), "{} has unknown type", instance.id);
            let Some(instance_type) = instance_type else {
                continue;
            };
            ensure!(
                enis.len() <= instance_type.maximum_network_interfaces as usize,
                "{} has {} ENIs, limit {}",
                instance.id,
                enis.len(),
                instance_type.maximum_network_interfaces
            );
            let mut slots = BTreeSet::new();
            let mut per_card: BTreeMap<u32, u32> = BTreeMap::new();
            for eni in &enis {
                if let Some(a) = &eni.attachment {
                    ensure!(
                        slots.insert((a.network_card_index, a.device_index)),
                        "{} has two ENIs at card {} device {}",
                        instance.id,
                        a.network_card_index,
                        a.device_index
                    );
                    *per_card.entry(a.network_card_index).or_default() += 1;
                }
            }
            for (card, n) in per_card {
                let limit = instance_type.card_limit(card);
                ensure!(
                    limit.is_some_and(|limit| n <= limit),
                    "{} card {card} has {n} ENIs",
                    instance.id
                );
            }
            let primary = self.enis.get(&instance.primary_network_interface_id);
            ensure!(
                primary.is_some_and(|p| p
                    .attachment
                    .as_ref()
                    .is_some_and(|a| a.instance_id == instance.id && a.device_index == 0)),
                "running {} lost its primary ENI",
                instance.id
            );
        }
        Ok(())
    }

    fn check_trunks(&self) -> Result<(), InvariantViolation> {
        let mut per_trunk: BTreeMap<&str, BTreeSet<u16>> = BTreeMap::new();
        let mut branches = BTreeSet::new();
        for association in self.trunk_associations.values() {
            let trunk = self.enis.get(&association.trunk_interface_id);
            let branch = self.enis.get(&association.branch_interface_id);
            ensure!(
                trunk.is_some_and(|t| t.interface_type == InterfaceType::Trunk),
                "association {} has no trunk",
                association.association_id
            );
            ensure!(
                branch.is_some_and(|b| b.interface_type == InterfaceType::Branch),
                "association {} has no branch",
                association.association_id
            );
            ensure!(
                branches.insert(&association.branch_interface_id),
                "branch {} associated twice",
                association.branch_interface_id
            );
            ensure!(
                per_trunk
                    .entry(&association.trunk_interface_id)
                    .or_default()
                    .insert(association.vlan_id),
                "VLAN {} used twice on {}",
                association.vlan_id,
                association.trunk_interface_id
            );
        }
        for (trunk_id, vlans) in per_trunk {
            if let Some(instance_type) = self
                .enis
                .get(trunk_id)
                .and_then(|t| self.attached_instance_type(t))
            {
                ensure!(
                    vlans.len() <= instance_type.branch_interfaces as usize,
                    "{trunk_id} has {} branches, limit {}",
                    vlans.len(),
                    instance_type.branch_interfaces
                );
            }
        }
        Ok(())
    }
}
