//! Describe actions: DescribeNetworkInterfaces, DescribeInstances, DescribeSubnets,
//! DescribeVpcs, DescribeSecurityGroups and DescribeInstanceTypes, with EC2's filters and
//! pagination.

use super::Ec2Model;
use crate::describe::{
    matches_all, paginate, validate_filters, validate_max_results, DescribePage, Filter,
    Filterable, Page,
};
use crate::error::{codes, Ec2Error, Ec2Result};
use crate::instance_types::InstanceTypeInfo;
use crate::types::{InstanceDescription, NetworkInterface, SecurityGroup, Subnet, Tags, Vpc};

impl Filterable for NetworkInterface {
    fn known_filter(name: &str) -> bool {
        matches!(
            name,
            "network-interface-id"
                | "subnet-id"
                | "vpc-id"
                | "availability-zone"
                | "status"
                | "description"
                | "interface-type"
                | "mac-address"
                | "owner-id"
                | "requester-managed"
                | "source-dest-check"
                | "group-id"
                | "private-ip-address"
                | "addresses.private-ip-address"
                | "ipv6-addresses.ipv6-address"
                | "attachment.instance-id"
                | "attachment.attachment-id"
                | "attachment.device-index"
                | "attachment.status"
                | "attachment.delete-on-termination"
                | "attachment.instance-owner-id"
        )
    }

    fn filter_values(&self, name: &str) -> Vec<String> {
        let attachment = self.attachment.as_ref();
        match name {
            "network-interface-id" => vec![self.id.clone()],
            "subnet-id" => vec![self.subnet_id.clone()],
            "vpc-id" => vec![self.vpc_id.clone()],
            "availability-zone" => vec![self.availability_zone.clone()],
            "status" => vec![self.status.as_str().to_owned()],
            "description" => vec![self.description.clone()],
            "interface-type" => vec![self.interface_type.as_str().to_owned()],
            "mac-address" => vec![self.mac_address.clone()],
            "owner-id" => vec![self.owner_id.clone()],
            "requester-managed" => vec![self.requester_managed.to_string()],
            "source-dest-check" => vec![self.source_dest_check.to_string()],
            "group-id" => self.security_group_ids.clone(),
            "private-ip-address" | "addresses.private-ip-address" => self
                .private_ip_addresses()
                .map(|(a, _)| a.to_string())
                .collect(),
            "ipv6-addresses.ipv6-address" => self
                .ipv6_addresses
                .iter()
                .map(ToString::to_string)
                .collect(),
            "attachment.instance-id" => attachment
                .map(|a| a.instance_id.clone())
                .into_iter()
                .collect(),
            "attachment.attachment-id" => attachment
                .map(|a| a.attachment_id.clone())
                .into_iter()
                .collect(),
            "attachment.device-index" => attachment
                .map(|a| a.device_index.to_string())
                .into_iter()
                .collect(),
            "attachment.status" => attachment
                .map(|a| a.status.as_str().to_owned())
                .into_iter()
                .collect(),
            "attachment.delete-on-termination" => attachment
                .map(|a| a.delete_on_termination.to_string())
                .into_iter()
                .collect(),
            "attachment.instance-owner-id" => attachment
                .map(|a| a.instance_owner_id.clone())
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }

    fn tags(&self) -> &Tags {
        &self.tags
    }
}

impl Filterable for InstanceDescription {
    fn known_filter(name: &str) -> bool {
        matches!(
            name,
            "instance-id"
                | "instance-type"
                | "instance-state-name"
                | "instance-state-code"
                | "subnet-id"
                | "vpc-id"
                | "availability-zone"
                | "hypervisor"
                | "private-ip-address"
                | "network-interface.network-interface-id"
                | "network-interface.subnet-id"
                | "network-interface.addresses.private-ip-address"
        )
    }

    fn filter_values(&self, name: &str) -> Vec<String> {
        let instance = &self.instance;
        match name {
            "instance-id" => vec![instance.id.clone()],
            "instance-type" => vec![instance.instance_type.clone()],
            "instance-state-name" => vec![instance.state.as_str().to_owned()],
            "instance-state-code" => vec![instance.state.code().to_string()],
            "subnet-id" => vec![instance.subnet_id.clone()],
            "vpc-id" => vec![instance.vpc_id.clone()],
            "availability-zone" => vec![instance.availability_zone.clone()],
            "hypervisor" => vec![instance.hypervisor.as_str().to_owned()],
            "private-ip-address" => instance
                .private_ip_address
                .map(|a| a.to_string())
                .into_iter()
                .collect(),
            "network-interface.network-interface-id" => self
                .network_interfaces
                .iter()
                .map(|e| e.id.clone())
                .collect(),
            "network-interface.subnet-id" => self
                .network_interfaces
                .iter()
                .map(|e| e.subnet_id.clone())
                .collect(),
            "network-interface.addresses.private-ip-address" => self
                .network_interfaces
                .iter()
                .flat_map(|e| e.private_ip_addresses().map(|(a, _)| a.to_string()))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn tags(&self) -> &Tags {
        &self.instance.tags
    }
}

impl Filterable for Subnet {
    fn known_filter(name: &str) -> bool {
        matches!(
            name,
            "subnet-id"
                | "vpc-id"
                | "availability-zone"
                | "cidr-block"
                | "cidr"
                | "cidrBlock"
                | "ipv6-cidr-block-association.ipv6-cidr-block"
                | "available-ip-address-count"
                | "owner-id"
                | "state"
        )
    }

    fn filter_values(&self, name: &str) -> Vec<String> {
        match name {
            "subnet-id" => vec![self.id.clone()],
            "vpc-id" => vec![self.vpc_id.clone()],
            "availability-zone" => vec![self.availability_zone.clone()],
            "cidr-block" | "cidr" | "cidrBlock" => vec![self.cidr_block.to_string()],
            "ipv6-cidr-block-association.ipv6-cidr-block" => self
                .ipv6_cidr_block
                .map(|c| c.to_string())
                .into_iter()
                .collect(),
            "available-ip-address-count" => vec![self.available_ip_address_count.to_string()],
            "owner-id" => vec![self.owner_id.clone()],
            "state" => vec!["available".to_owned()],
            _ => Vec::new(),
        }
    }

    fn tags(&self) -> &Tags {
        &self.tags
    }
}

/// EC2's page-size bounds for DescribeNetworkInterfaces, DescribeInstances and DescribeSubnets.
const MIN_RESULTS: u32 = 5;
const MAX_RESULTS: u32 = 1000;

fn ids_with_max_results(ids: &[String], page: &Page, parameter: &str) -> Ec2Result<()> {
    if !ids.is_empty() && page.max_results.is_some() {
        return Err(Ec2Error::combination(format!(
            "The parameter {parameter} cannot be used with the parameter maxResults"
        )));
    }
    Ok(())
}

impl Ec2Model {
    /// DescribeNetworkInterfaces: by id (every id must exist) and/or filters, paginated in id
    /// order.
    pub fn describe_network_interfaces(
        &self,
        ids: &[String],
        filters: &[Filter],
        page: &Page,
    ) -> Ec2Result<DescribePage<NetworkInterface>> {
        ids_with_max_results(ids, page, "networkInterfaceIdSet")?;
        validate_max_results(page, MIN_RESULTS, MAX_RESULTS)?;
        validate_filters::<NetworkInterface>(filters)?;
        for id in ids {
            self.eni_ref(id)?;
        }
        let items = self
            .enis
            .values()
            .filter(|eni| ids.is_empty() || ids.contains(&eni.id))
            .filter(|eni| matches_all(*eni, filters))
            .map(|eni| (eni.id.clone(), eni.clone()))
            .collect();
        paginate(items, page)
    }

    /// DescribeInstances: by id and/or filters, each instance with its attached ENIs.
    pub fn describe_instances(
        &self,
        ids: &[String],
        filters: &[Filter],
        page: &Page,
    ) -> Ec2Result<DescribePage<InstanceDescription>> {
        ids_with_max_results(ids, page, "instancesSet")?;
        validate_max_results(page, MIN_RESULTS, MAX_RESULTS)?;
        validate_filters::<InstanceDescription>(filters)?;
        for id in ids {
            self.instance_ref(id)?;
        }
        let items = self
            .instances
            .values()
            .filter(|instance| ids.is_empty() || ids.contains(&instance.id))
            .map(|instance| InstanceDescription {
                instance: instance.clone(),
                network_interfaces: self
                    .instance_network_interfaces(&instance.id)
                    .into_iter()
                    .cloned()
                    .collect(),
            })
            .filter(|description| matches_all(description, filters))
            .map(|description| (description.instance.id.clone(), description))
            .collect();
        paginate(items, page)
    }

    /// DescribeSubnets: by id and/or filters, with current AvailableIpAddressCount.
    pub fn describe_subnets(
        &self,
        ids: &[String],
        filters: &[Filter],
        page: &Page,
    ) -> Ec2Result<DescribePage<Subnet>> {
        ids_with_max_results(ids, page, "subnetIds")?;
        validate_max_results(page, MIN_RESULTS, MAX_RESULTS)?;
        validate_filters::<Subnet>(filters)?;
        for id in ids {
            self.subnet_record(id)?;
        }
        let items = self
            .subnets
            .values()
            .map(|record| record.view())
            .filter(|subnet| ids.is_empty() || ids.contains(&subnet.id))
            .filter(|subnet| matches_all(subnet, filters))
            .map(|subnet| (subnet.id.clone(), subnet))
            .collect();
        paginate(items, page)
    }

    /// DescribeVpcs by id (all when `ids` is empty).
    pub fn describe_vpcs(&self, ids: &[String]) -> Ec2Result<Vec<Vpc>> {
        for id in ids {
            self.vpc_ref(id)?;
        }
        Ok(self
            .vpcs
            .values()
            .filter(|vpc| ids.is_empty() || ids.contains(&vpc.id))
            .cloned()
            .collect())
    }

    /// DescribeSecurityGroups by id (all when `ids` is empty).
    pub fn describe_security_groups(&self, ids: &[String]) -> Ec2Result<Vec<SecurityGroup>> {
        if let Some(missing) = ids
            .iter()
            .find(|id| !self.security_groups.contains_key(*id))
        {
            return Err(Ec2Error::group_not_found(missing));
        }
        Ok(self
            .security_groups
            .values()
            .filter(|sg| ids.is_empty() || ids.contains(&sg.id))
            .cloned()
            .collect())
    }

    /// DescribeInstanceTypes by name (all known types when `names` is empty), sorted by name.
    pub fn describe_instance_types(&self, names: &[String]) -> Ec2Result<Vec<InstanceTypeInfo>> {
        let unknown: Vec<&str> = names
            .iter()
            .filter(|name| self.catalog.get(name).is_none())
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(Ec2Error::new(
                codes::INVALID_INSTANCE_TYPE,
                format!(
                    "The following supplied instance types do not exist: [{}]",
                    unknown.join(", ")
                ),
            ));
        }
        Ok(self
            .catalog
            .iter()
            .filter(|t| names.is_empty() || names.contains(&t.name))
            .cloned()
            .collect())
    }
}
