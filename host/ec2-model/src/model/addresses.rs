//! Private IPv4 addresses, /28 prefixes, IPv6 addresses and /80 prefixes of ENIs: choosing
//! them at creation, AssignPrivateIpAddresses, UnassignPrivateIpAddresses, AssignIpv6Addresses
//! and UnassignIpv6Addresses, with EC2's per-ENI limits and subnet rules.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::Ec2Model;
use crate::addressing::{AllocationPolicy, Conflict, Ipv4Pool, Ipv6Pool};
use crate::error::{codes, Ec2Error, Ec2Result};
use crate::requests::{
    AssignIpv6Addresses, AssignPrivateIpAddresses, AssignedIpv6Addresses,
    AssignedPrivateIpAddresses, UnassignIpv6Addresses, UnassignPrivateIpAddresses,
};
use crate::rng::SeededRng;
use crate::types::{count, NetworkInterface};

/// The IPv4 part of a request.
#[derive(Debug, Default)]
pub(super) struct Ipv4Ask<'r> {
    /// `Some(None)`: the ENI needs a primary address EC2 chooses; `Some(Some(a))`: this one.
    pub primary: Option<Option<Ipv4Addr>>,
    /// Specific secondary addresses.
    pub addresses: &'r [Ipv4Addr],
    /// Secondary addresses EC2 chooses.
    pub address_count: u32,
    /// Specific /28 prefixes.
    pub prefixes: &'r [Ipv4Net],
    /// /28 prefixes EC2 chooses.
    pub prefix_count: u32,
    /// Let specific addresses move from another ENI of the subnet.
    pub allow_reassignment: bool,
    /// ENI the addresses are for, if it exists already (its own addresses are no conflict).
    pub eni_id: Option<&'r str>,
    /// Answer a taken primary as RunInstances does rather than as CreateNetworkInterface.
    pub run_instances_wording: bool,
}

/// Offsets chosen for an IPv4 request.
#[derive(Debug, Default)]
pub(super) struct Ipv4Choice {
    pub primary: Option<u32>,
    /// New secondary addresses, in request order then EC2-chosen.
    pub addresses: Vec<u32>,
    /// Requested addresses the ENI already had (reported, not claimed again).
    pub already_held: Vec<u32>,
    /// Addresses moved from another ENI: (offset, previous holder).
    pub moved: Vec<(u32, String)>,
    pub prefixes: Vec<u32>,
}

/// Choose everything an IPv4 request asks for, or fail without side effects.
pub(super) fn plan_ipv4(
    pool: &Ipv4Pool,
    ask: &Ipv4Ask<'_>,
    policy: AllocationPolicy,
    rng: &mut SeededRng,
) -> Ec2Result<Ipv4Choice> {
    let mut plan = pool.plan();
    let mut choice = Ipv4Choice::default();
    for &prefix in ask.prefixes {
        let start = plan
            .check_prefix(prefix)
            .map_err(|c| ipv4_prefix_error(prefix, c))?;
        plan.take_prefix(start);
        choice.prefixes.push(start);
    }
    if let Some(Some(primary)) = ask.primary {
        let offset = plan.check_address(primary).map_err(|c| match c {
            Conflict::InUse { .. } | Conflict::Duplicate => Ec2Error::new(
                codes::INVALID_IP_ADDRESS_IN_USE,
                if ask.run_instances_wording {
                    format!("Address {primary} is in use.")
                } else {
                    "The specified address is already in use.".to_owned()
                },
            ),
            other => ipv4_address_error(primary, other),
        })?;
        plan.take_address(offset);
        choice.primary = Some(offset);
    }
    for &address in ask.addresses {
        match plan.check_address(address) {
            Ok(offset) => {
                plan.take_address(offset);
                choice.addresses.push(offset);
            }
            Err(Conflict::InUse { eni, prefix: false }) if Some(eni.as_str()) == ask.eni_id => {
                if let Some(offset) = pool.offset(address) {
                    choice.already_held.push(offset);
                }
            }
            Err(Conflict::InUse { eni, prefix: false }) if ask.allow_reassignment => {
                let offset = pool
                    .offset(address)
                    .ok_or_else(|| ipv4_address_error(address, Conflict::Outside))?;
                plan.take_address(offset);
                choice.addresses.push(offset);
                choice.moved.push((offset, eni));
            }
            Err(Conflict::InUse { .. }) => {
                return Err(Ec2Error::invalid_value(format!(
                    "[{address}] assigned, but move is not allowed."
                )))
            }
            Err(conflict) => return Err(ipv4_address_error(address, conflict)),
        }
    }
    if ask.primary == Some(None) {
        let picked = plan.pick_addresses(1, policy, rng)?;
        choice.primary = picked.first().copied();
    }
    if ask.address_count > 0 {
        let picked = plan.pick_addresses(ask.address_count, policy, rng)?;
        choice.addresses.extend(picked);
    }
    if ask.prefix_count > 0 {
        let picked = plan.pick_prefixes(ask.prefix_count, policy, rng)?;
        choice.prefixes.extend(picked);
    }
    Ok(choice)
}

fn ipv4_address_error(address: Ipv4Addr, conflict: Conflict) -> Ec2Error {
    match conflict {
        Conflict::Outside => Ec2Error::invalid_value(format!(
            "Address {address} does not fall within the subnet's address range"
        )),
        Conflict::Reserved => Ec2Error::invalid_value(format!(
            "Address {address} is in subnet's reserved address range"
        )),
        Conflict::Duplicate => Ec2Error::invalid_value(format!(
            "Address {address} is specified more than once in the request"
        )),
        Conflict::InUse { .. } | Conflict::BadPrefix => {
            Ec2Error::invalid_value(format!("[{address}] assigned, but move is not allowed."))
        }
    }
}

fn ipv4_prefix_error(prefix: Ipv4Net, conflict: Conflict) -> Ec2Error {
    Ec2Error::invalid_value(match conflict {
        Conflict::BadPrefix => {
            format!("Invalid value '{prefix}' for prefix. IPv4 prefixes must be /28 blocks aligned to their size.")
        }
        Conflict::Outside => {
            format!("Prefix {prefix} does not fall within the subnet's address range")
        }
        Conflict::Reserved => {
            format!("Prefix {prefix} overlaps the subnet's reserved address range")
        }
        Conflict::Duplicate => {
            format!("Prefix {prefix} is specified more than once in the request")
        }
        Conflict::InUse { .. } => {
            format!("Prefix {prefix} overlaps addresses that are already in use.")
        }
    })
}

/// The IPv6 part of a request.
#[derive(Debug, Default)]
pub(super) struct Ipv6Ask<'r> {
    pub addresses: &'r [Ipv6Addr],
    pub address_count: u32,
    pub prefixes: &'r [Ipv6Net],
    pub prefix_count: u32,
}

impl Ipv6Ask<'_> {
    fn is_empty(&self) -> bool {
        self.addresses.is_empty()
            && self.address_count == 0
            && self.prefixes.is_empty()
            && self.prefix_count == 0
    }

    fn slots(&self) -> u32 {
        count(self.addresses.len() + self.prefixes.len()) + self.address_count + self.prefix_count
    }

    fn wants_prefixes(&self) -> bool {
        !self.prefixes.is_empty() || self.prefix_count > 0
    }
}

/// Offsets chosen for an IPv6 request.
#[derive(Debug, Default)]
pub(super) struct Ipv6Choice {
    pub addresses: Vec<u64>,
    pub prefixes: Vec<u64>,
}

/// Choose everything an IPv6 request asks for, or fail without side effects.
pub(super) fn plan_ipv6(
    pool: &Ipv6Pool,
    ask: &Ipv6Ask<'_>,
    policy: AllocationPolicy,
    rng: &mut SeededRng,
) -> Ec2Result<Ipv6Choice> {
    let mut plan = pool.plan();
    let mut choice = Ipv6Choice::default();
    for &prefix in ask.prefixes {
        let start = plan
            .check_prefix(prefix)
            .map_err(|c| ipv6_error(&prefix.to_string(), c))?;
        plan.take_prefix(start);
        choice.prefixes.push(start);
    }
    for &address in ask.addresses {
        let offset = plan
            .check_address(address)
            .map_err(|c| ipv6_error(&address.to_string(), c))?;
        plan.take_address(offset);
        choice.addresses.push(offset);
    }
    if ask.address_count > 0 {
        let picked = plan.pick_addresses(ask.address_count, policy, rng)?;
        choice.addresses.extend(picked);
    }
    if ask.prefix_count > 0 {
        let picked = plan.pick_prefixes(ask.prefix_count, policy, rng)?;
        choice.prefixes.extend(picked);
    }
    Ok(choice)
}

fn ipv6_error(value: &str, conflict: Conflict) -> Ec2Error {
    match conflict {
        Conflict::InUse { .. } => Ec2Error::new(
            codes::INVALID_IP_ADDRESS_IN_USE,
            format!("The specified address {value} is already in use."),
        ),
        Conflict::Outside => Ec2Error::invalid_value(format!(
            "Address {value} does not fall within the subnet's address range"
        )),
        Conflict::Reserved => Ec2Error::invalid_value(format!(
            "Address {value} is in subnet's reserved address range"
        )),
        Conflict::BadPrefix => Ec2Error::invalid_value(format!(
            "Invalid value '{value}' for prefix. IPv6 prefixes must be /80 blocks aligned to their size."
        )),
        Conflict::Duplicate => Ec2Error::invalid_value(format!(
            "Address {value} is specified more than once in the request"
        )),
    }
}

/// EC2 takes exactly one way of asking for addresses per call.
pub(super) fn exactly_one(given: &[bool], names: &str) -> Ec2Result<()> {
    match given.iter().filter(|&&g| g).count() {
        1 => Ok(()),
        0 => Err(Ec2Error::new(
            codes::MISSING_PARAMETER,
            format!("One of {names} must be specified."),
        )),
        _ => Err(Ec2Error::combination(format!(
            "You may specify one and only one of {names}, but not more than one of them."
        ))),
    }
}

/// EC2 takes at most one way of asking for addresses at creation.
pub(super) fn at_most_one(given: &[bool], names: &str) -> Ec2Result<()> {
    if given.iter().filter(|&&g| g).count() > 1 {
        Err(Ec2Error::combination(format!(
            "You may specify one and only one of {names}, but not more than one of them."
        )))
    } else {
        Ok(())
    }
}

/// Counts must be positive when given.
pub(super) fn positive(value: Option<u32>, parameter: &str) -> Ec2Result<u32> {
    match value {
        Some(0) => Err(Ec2Error::invalid_value(format!(
            "Value (0) for parameter {parameter} is invalid. Value must be a positive number."
        ))),
        other => Ok(other.unwrap_or(0)),
    }
}

pub(super) fn prefix_delegation_unsupported(eni_id: &str, instance_type: &str) -> Ec2Error {
    Ec2Error::invalid_value(format!(
        "Prefix delegation is not supported on interface {eni_id}: instance type {instance_type} is not built on the Nitro System."
    ))
}

pub(super) fn no_ipv6_in_subnet(subnet_id: &str) -> Ec2Error {
    Ec2Error::invalid_value(format!(
        "The subnet '{subnet_id}' has no IPv6 CIDR block; associate one before assigning IPv6 addresses."
    ))
}

impl Ec2Model {
    /// AssignPrivateIpAddresses: secondary addresses or /28 prefixes, by count or by value.
    ///
    /// Addresses and prefixes together (primary included) may not exceed the instance type's
    /// Ipv4AddressesPerInterface; prefixes need a Nitro instance.
    pub fn assign_private_ip_addresses(
        &mut self,
        request: AssignPrivateIpAddresses,
    ) -> Ec2Result<AssignedPrivateIpAddresses> {
        let eni = self.eni_ref(&request.network_interface_id)?;
        let eni_id = eni.id.clone();
        let subnet_id = eni.subnet_id.clone();
        let limit = self.ipv4_limit(eni);
        let current = eni.ipv4_slots();
        // Asking again for an address the ENI already has is not a new slot.
        let explicit_new = request
            .private_ip_addresses
            .iter()
            .filter(|a| !eni.private_ip_addresses().any(|(held, _)| held == **a))
            .count();
        let non_nitro_type = self
            .attached_instance_type(eni)
            .filter(|t| !t.supports_prefix_delegation())
            .map(|t| t.name.clone());
        exactly_one(
            &[
                !request.private_ip_addresses.is_empty(),
                request.secondary_private_ip_address_count.is_some(),
                !request.ipv4_prefixes.is_empty(),
                request.ipv4_prefix_count.is_some(),
            ],
            "privateIpAddressSet or secondaryPrivateIpAddressCount or ipv4Prefixes or ipv4PrefixCount",
        )?;
        let address_count = positive(
            request.secondary_private_ip_address_count,
            "secondaryPrivateIpAddressCount",
        )?;
        let prefix_count = positive(request.ipv4_prefix_count, "ipv4PrefixCount")?;
        let wants_prefixes = !request.ipv4_prefixes.is_empty() || prefix_count > 0;
        if let (true, Some(instance_type)) = (wants_prefixes, &non_nitro_type) {
            return Err(prefix_delegation_unsupported(&eni_id, instance_type));
        }
        let ask = Ipv4Ask {
            primary: None,
            addresses: &request.private_ip_addresses,
            address_count,
            prefixes: &request.ipv4_prefixes,
            prefix_count,
            allow_reassignment: request.allow_reassignment,
            eni_id: Some(&eni_id),
            run_instances_wording: false,
        };
        // Requests within the limit are the common case; checking the count before choosing
        // keeps EC2's precedence (limit before subnet capacity).
        let requested =
            count(explicit_new + request.ipv4_prefixes.len()) + address_count + prefix_count;
        if current + requested > limit {
            return Err(Ec2Error::ip_limit_exceeded());
        }
        let record = self
            .subnets
            .get(&subnet_id)
            .ok_or_else(|| Ec2Error::subnet_not_found(&subnet_id))?;
        let choice = plan_ipv4(&record.ipv4, &ask, self.policy, &mut self.rng)?;
        for (offset, previous) in &choice.moved {
            let address = record.ipv4.address(*offset);
            let holder = self.eni_ref(previous)?;
            if holder.private_ip_address == address {
                return Err(Ec2Error::invalid_value(format!(
                    "Address {address} is the primary address of interface {previous} and cannot be reassigned."
                )));
            }
        }

        // Everything is checked: apply.
        let pool = self.pool4_mut(&subnet_id)?;
        let addresses: Vec<Ipv4Addr> = choice.addresses.iter().map(|&o| pool.address(o)).collect();
        let held: Vec<Ipv4Addr> = choice
            .already_held
            .iter()
            .map(|&o| pool.address(o))
            .collect();
        let prefixes: Vec<Ipv4Net> = choice.prefixes.iter().map(|&o| pool.prefix(o)).collect();
        for &offset in &choice.addresses {
            pool.claim_address(offset, &eni_id);
        }
        for &start in &choice.prefixes {
            pool.claim_prefix(start, &eni_id);
        }
        for (offset, previous) in &choice.moved {
            let address = self.pool4_mut(&subnet_id)?.address(*offset);
            self.eni_mut(previous)?
                .secondary_private_ip_addresses
                .retain(|a| *a != address);
        }
        let eni = self.eni_mut(&eni_id)?;
        eni.secondary_private_ip_addresses.extend(&addresses);
        eni.ipv4_prefixes.extend(&prefixes);
        self.touch();
        let mut assigned = held;
        assigned.extend(addresses);
        Ok(AssignedPrivateIpAddresses {
            network_interface_id: eni_id,
            assigned_private_ip_addresses: assigned,
            assigned_ipv4_prefixes: prefixes,
        })
    }

    /// UnassignPrivateIpAddresses: release secondary addresses and/or /28 prefixes. The
    /// primary address cannot be released; anything not on the ENI is an error.
    pub fn unassign_private_ip_addresses(
        &mut self,
        request: UnassignPrivateIpAddresses,
    ) -> Ec2Result<()> {
        let eni = self.eni_ref(&request.network_interface_id)?;
        let eni_id = eni.id.clone();
        if request.private_ip_addresses.is_empty() && request.ipv4_prefixes.is_empty() {
            return Err(Ec2Error::new(
                codes::MISSING_PARAMETER,
                "One of privateIpAddress or ipv4Prefix must be specified.",
            ));
        }
        let addresses: BTreeSet<Ipv4Addr> = request.private_ip_addresses.iter().copied().collect();
        let prefixes: BTreeSet<Ipv4Net> = request.ipv4_prefixes.iter().copied().collect();
        for address in &addresses {
            if *address == eni.private_ip_address {
                return Err(Ec2Error::invalid_value(format!(
                    "Value ({address}) for parameter privateIpAddress is invalid. The primary IP address of an interface cannot be unassigned."
                )));
            }
            if !eni.secondary_private_ip_addresses.contains(address) {
                return Err(Ec2Error::invalid_value(format!(
                    "Some of the specified addresses are not assigned to interface {eni_id}"
                )));
            }
        }
        if prefixes.iter().any(|p| !eni.ipv4_prefixes.contains(p)) {
            return Err(Ec2Error::invalid_value(format!(
                "Some of the specified prefixes are not assigned to interface {eni_id}"
            )));
        }
        let subnet_id = eni.subnet_id.clone();
        let pool = self.pool4_mut(&subnet_id)?;
        for address in &addresses {
            if let Some(offset) = pool.offset(*address) {
                pool.release_address(offset);
            }
        }
        for prefix in &prefixes {
            if let Some(start) = pool.offset(prefix.network()) {
                pool.release_prefix(start);
            }
        }
        let eni = self.eni_mut(&eni_id)?;
        eni.secondary_private_ip_addresses
            .retain(|a| !addresses.contains(a));
        eni.ipv4_prefixes.retain(|p| !prefixes.contains(p));
        self.touch();
        Ok(())
    }

    /// AssignIpv6Addresses: IPv6 addresses or /80 prefixes, by count or by value, within the
    /// instance type's Ipv6AddressesPerInterface (addresses and prefixes together).
    pub fn assign_ipv6_addresses(
        &mut self,
        request: AssignIpv6Addresses,
    ) -> Ec2Result<AssignedIpv6Addresses> {
        let eni = self.eni_ref(&request.network_interface_id)?;
        let eni_id = eni.id.clone();
        exactly_one(
            &[
                !request.ipv6_addresses.is_empty(),
                request.ipv6_address_count.is_some(),
                !request.ipv6_prefixes.is_empty(),
                request.ipv6_prefix_count.is_some(),
            ],
            "ipv6Addresses or ipv6AddressCount or ipv6Prefixes or ipv6PrefixCount",
        )?;
        let ask = Ipv6Ask {
            addresses: &request.ipv6_addresses,
            address_count: positive(request.ipv6_address_count, "ipv6AddressCount")?,
            prefixes: &request.ipv6_prefixes,
            prefix_count: positive(request.ipv6_prefix_count, "ipv6PrefixCount")?,
        };
        let (addresses, prefixes) = self.add_ipv6(&eni_id, &ask)?;
        self.touch();
        Ok(AssignedIpv6Addresses {
            network_interface_id: eni_id,
            assigned_ipv6_addresses: addresses,
            assigned_ipv6_prefixes: prefixes,
        })
    }

    /// UnassignIpv6Addresses: release IPv6 addresses and/or /80 prefixes; anything not on the
    /// ENI is an error. Returns what was released.
    pub fn unassign_ipv6_addresses(
        &mut self,
        request: UnassignIpv6Addresses,
    ) -> Ec2Result<UnassignIpv6Addresses> {
        let eni = self.eni_ref(&request.network_interface_id)?;
        let eni_id = eni.id.clone();
        if request.ipv6_addresses.is_empty() && request.ipv6_prefixes.is_empty() {
            return Err(Ec2Error::new(
                codes::MISSING_PARAMETER,
                "One of ipv6Addresses or ipv6Prefixes must be specified.",
            ));
        }
        let addresses: BTreeSet<Ipv6Addr> = request.ipv6_addresses.iter().copied().collect();
        let prefixes: BTreeSet<Ipv6Net> = request.ipv6_prefixes.iter().copied().collect();
        if addresses.iter().any(|a| !eni.ipv6_addresses.contains(a)) {
            return Err(Ec2Error::invalid_value(format!(
                "Some of the specified addresses are not assigned to interface {eni_id}"
            )));
        }
        if prefixes.iter().any(|p| !eni.ipv6_prefixes.contains(p)) {
            return Err(Ec2Error::invalid_value(format!(
                "Some of the specified prefixes are not assigned to interface {eni_id}"
            )));
        }
        let subnet_id = eni.subnet_id.clone();
        if let Some(pool) = self.pool6_mut(&subnet_id) {
            for address in &addresses {
                if let Some(offset) = pool.offset(*address) {
                    pool.release_address(offset);
                }
            }
            for prefix in &prefixes {
                if let Some(start) = pool.offset(prefix.network()) {
                    pool.release_prefix(start);
                }
            }
        }
        let eni = self.eni_mut(&eni_id)?;
        eni.ipv6_addresses.retain(|a| !addresses.contains(a));
        eni.ipv6_prefixes.retain(|p| !prefixes.contains(p));
        self.touch();
        Ok(UnassignIpv6Addresses {
            network_interface_id: eni_id,
            ipv6_addresses: addresses.into_iter().collect(),
            ipv6_prefixes: prefixes.into_iter().collect(),
        })
    }

    /// Check and add IPv6 addresses/prefixes to an existing ENI (no generation bump).
    pub(super) fn add_ipv6(
        &mut self,
        eni_id: &str,
        ask: &Ipv6Ask<'_>,
    ) -> Ec2Result<(Vec<Ipv6Addr>, Vec<Ipv6Net>)> {
        if ask.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let eni = self.eni_ref(eni_id)?;
        if ask.wants_prefixes() {
            if let Some(instance_type) = self.attached_instance_type(eni) {
                if !instance_type.supports_prefix_delegation() {
                    return Err(prefix_delegation_unsupported(eni_id, &instance_type.name));
                }
            }
        }
        if eni.ipv6_slots() + ask.slots() > self.ipv6_limit(eni) {
            return Err(Ec2Error::ip_limit_exceeded());
        }
        let subnet_id = eni.subnet_id.clone();
        let record = self
            .subnets
            .get(&subnet_id)
            .ok_or_else(|| Ec2Error::subnet_not_found(&subnet_id))?;
        let pool = record
            .ipv6
            .as_ref()
            .ok_or_else(|| no_ipv6_in_subnet(&subnet_id))?;
        let choice = plan_ipv6(pool, ask, self.policy, &mut self.rng)?;
        let pool = self
            .pool6_mut(&subnet_id)
            .ok_or_else(|| no_ipv6_in_subnet(&subnet_id))?;
        let addresses: Vec<Ipv6Addr> = choice.addresses.iter().map(|&o| pool.address(o)).collect();
        let prefixes: Vec<Ipv6Net> = choice.prefixes.iter().map(|&o| pool.prefix(o)).collect();
        for &offset in &choice.addresses {
            pool.claim_address(offset, eni_id);
        }
        for &start in &choice.prefixes {
            pool.claim_prefix(start, eni_id);
        }
        let eni = self.eni_mut(eni_id)?;
        eni.ipv6_addresses.extend(&addresses);
        eni.ipv6_prefixes.extend(&prefixes);
        Ok((addresses, prefixes))
    }

    /// Give every address and prefix of an ENI back to its subnet.
    pub(super) fn release_all_addresses(&mut self, eni: &NetworkInterface) -> Ec2Result<()> {
        let pool = self.pool4_mut(&eni.subnet_id)?;
        for (address, _) in eni.private_ip_addresses() {
            if let Some(offset) = pool.offset(address) {
                pool.release_address(offset);
            }
        }
        for prefix in &eni.ipv4_prefixes {
            if let Some(start) = pool.offset(prefix.network()) {
                pool.release_prefix(start);
            }
        }
        if let Some(pool) = self.pool6_mut(&eni.subnet_id) {
            for address in &eni.ipv6_addresses {
                if let Some(offset) = pool.offset(*address) {
                    pool.release_address(offset);
                }
            }
            for prefix in &eni.ipv6_prefixes {
                if let Some(start) = pool.offset(prefix.network()) {
                    pool.release_prefix(start);
                }
            }
        }
        Ok(())
    }

    pub(super) fn pool4_mut(&mut self, subnet_id: &str) -> Ec2Result<&mut Ipv4Pool> {
        self.subnets
            .get_mut(subnet_id)
            .map(|r| &mut r.ipv4)
            .ok_or_else(|| Ec2Error::subnet_not_found(subnet_id))
    }

    pub(super) fn pool6_mut(&mut self, subnet_id: &str) -> Option<&mut Ipv6Pool> {
        self.subnets
            .get_mut(subnet_id)
            .and_then(|r| r.ipv6.as_mut())
    }
}
