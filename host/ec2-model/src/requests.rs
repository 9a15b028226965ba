//! Parameters of the model's EC2 actions, one struct per action with EC2's parameter names,
//! so the HTTP front maps query parameters one to one and the model validates combinations.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::types::{InterfaceType, Tags};

/// RunInstances for one instance, with the networking parameters the model cares about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInstance {
    /// Instance type, e.g. `m5.large`.
    pub instance_type: String,
    /// Subnet of the primary ENI.
    pub subnet_id: String,
    /// Security groups of the primary ENI; empty means the VPC's default group.
    pub security_group_ids: Vec<String>,
    /// Primary private IPv4; `None` lets EC2 choose.
    pub private_ip_address: Option<Ipv4Addr>,
    /// Tags for the instance (TagSpecifications with resource type `instance`).
    pub tags: Tags,
    /// Idempotency token.
    pub client_token: Option<String>,
}

impl RunInstance {
    /// Launch `instance_type` in `subnet_id` with the VPC's default security group.
    pub fn new(instance_type: impl Into<String>, subnet_id: impl Into<String>) -> Self {
        Self {
            instance_type: instance_type.into(),
            subnet_id: subnet_id.into(),
            security_group_ids: Vec::new(),
            private_ip_address: None,
            tags: Tags::new(),
            client_token: None,
        }
    }

    /// Use these security groups instead of the VPC default.
    pub fn security_groups(mut self, ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.security_group_ids = ids.into_iter().map(Into::into).collect();
        self
    }
}

/// CreateNetworkInterface.
///
/// As in EC2, at most one of `private_ip_addresses`, `secondary_private_ip_address_count`,
/// `ipv4_prefixes` and `ipv4_prefix_count` may be given, and at most one of the four IPv6
/// parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CreateNetworkInterface {
    /// Subnet to create the ENI in.
    pub subnet_id: String,
    /// Description.
    pub description: String,
    /// Security groups; empty means the VPC's default group.
    pub security_group_ids: Vec<String>,
    /// Primary private IPv4; `None` lets EC2 choose.
    pub private_ip_address: Option<Ipv4Addr>,
    /// Specific secondary private IPv4 addresses.
    pub private_ip_addresses: Vec<Ipv4Addr>,
    /// Number of secondary private IPv4 addresses EC2 chooses.
    pub secondary_private_ip_address_count: Option<u32>,
    /// Specific IPv4 /28 prefixes.
    pub ipv4_prefixes: Vec<Ipv4Net>,
    /// Number of IPv4 /28 prefixes EC2 chooses.
    pub ipv4_prefix_count: Option<u32>,
    /// Specific IPv6 addresses.
    pub ipv6_addresses: Vec<Ipv6Addr>,
    /// Number of IPv6 addresses EC2 chooses.
    pub ipv6_address_count: Option<u32>,
    /// Specific IPv6 /80 prefixes.
    pub ipv6_prefixes: Vec<Ipv6Net>,
    /// Number of IPv6 /80 prefixes EC2 chooses.
    pub ipv6_prefix_count: Option<u32>,
    /// interface (default), trunk or branch.
    pub interface_type: InterfaceType,
    /// Tags (TagSpecifications with resource type `network-interface`).
    pub tags: Tags,
    /// Idempotency token.
    pub client_token: Option<String>,
}

impl CreateNetworkInterface {
    /// An ENI in `subnet_id` with one EC2-chosen primary address and default settings.
    pub fn new(subnet_id: impl Into<String>) -> Self {
        Self {
            subnet_id: subnet_id.into(),
            ..Self::default()
        }
    }
}

/// ModifyNetworkInterfaceAttribute: exactly one attribute must be set, as in EC2.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ModifyNetworkInterfaceAttribute {
    /// The ENI.
    pub network_interface_id: String,
    /// New description.
    pub description: Option<String>,
    /// New SourceDestCheck.
    pub source_dest_check: Option<bool>,
    /// Replacement set of security groups.
    pub security_group_ids: Option<Vec<String>>,
    /// `(attachment id, DeleteOnTermination)` for the ENI's current attachment.
    pub attachment_delete_on_termination: Option<(String, bool)>,
}

/// AssignPrivateIpAddresses: exactly one of the four address parameters must be set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AssignPrivateIpAddresses {
    /// The ENI.
    pub network_interface_id: String,
    /// Specific secondary addresses.
    pub private_ip_addresses: Vec<Ipv4Addr>,
    /// Number of secondary addresses EC2 chooses.
    pub secondary_private_ip_address_count: Option<u32>,
    /// Specific /28 prefixes.
    pub ipv4_prefixes: Vec<Ipv4Net>,
    /// Number of /28 prefixes EC2 chooses.
    pub ipv4_prefix_count: Option<u32>,
    /// Move specific addresses that are secondary addresses of another ENI in the subnet.
    pub allow_reassignment: bool,
}

impl AssignPrivateIpAddresses {
    /// Assign `count` EC2-chosen secondary addresses.
    pub fn count(network_interface_id: impl Into<String>, count: u32) -> Self {
        Self {
            network_interface_id: network_interface_id.into(),
            secondary_private_ip_address_count: Some(count),
            ..Self::default()
        }
    }

    /// Assign these secondary addresses.
    pub fn addresses(network_interface_id: impl Into<String>, addresses: Vec<Ipv4Addr>) -> Self {
        Self {
            network_interface_id: network_interface_id.into(),
            private_ip_addresses: addresses,
            ..Self::default()
        }
    }

    /// Assign `count` EC2-chosen /28 prefixes.
    pub fn prefix_count(network_interface_id: impl Into<String>, count: u32) -> Self {
        Self {
            network_interface_id: network_interface_id.into(),
            ipv4_prefix_count: Some(count),
            ..Self::default()
        }
    }

    /// Assign these /28 prefixes.
    pub fn prefixes(network_interface_id: impl Into<String>, prefixes: Vec<Ipv4Net>) -> Self {
        Self {
            network_interface_id: network_interface_id.into(),
            ipv4_prefixes: prefixes,
            ..Self::default()
        }
    }
}

/// What AssignPrivateIpAddresses assigned (only the new addresses, as real EC2 answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedPrivateIpAddresses {
    /// The ENI.
    pub network_interface_id: String,
    /// Newly assigned secondary addresses.
    pub assigned_private_ip_addresses: Vec<Ipv4Addr>,
    /// Newly assigned /28 prefixes.
    pub assigned_ipv4_prefixes: Vec<Ipv4Net>,
}

/// UnassignPrivateIpAddresses: addresses and/or prefixes to release.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UnassignPrivateIpAddresses {
    /// The ENI.
    pub network_interface_id: String,
    /// Secondary addresses to release.
    pub private_ip_addresses: Vec<Ipv4Addr>,
    /// /28 prefixes to release.
    pub ipv4_prefixes: Vec<Ipv4Net>,
}

/// AssignIpv6Addresses: exactly one of the four parameters must be set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AssignIpv6Addresses {
    /// The ENI.
    pub network_interface_id: String,
    /// Specific IPv6 addresses.
    pub ipv6_addresses: Vec<Ipv6Addr>,
    /// Number of IPv6 addresses EC2 chooses.
    pub ipv6_address_count: Option<u32>,
    /// Specific /80 prefixes.
    pub ipv6_prefixes: Vec<Ipv6Net>,
    /// Number of /80 prefixes EC2 chooses.
    pub ipv6_prefix_count: Option<u32>,
}

impl AssignIpv6Addresses {
    /// Assign `count` EC2-chosen IPv6 addresses.
    pub fn count(network_interface_id: impl Into<String>, count: u32) -> Self {
        Self {
            network_interface_id: network_interface_id.into(),
            ipv6_address_count: Some(count),
            ..Self::default()
        }
    }

    /// Assign `count` EC2-chosen /80 prefixes.
    pub fn prefix_count(network_interface_id: impl Into<String>, count: u32) -> Self {
        Self {
            network_interface_id: network_interface_id.into(),
            ipv6_prefix_count: Some(count),
            ..Self::default()
        }
    }
}

/// What AssignIpv6Addresses assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedIpv6Addresses {
    /// The ENI.
    pub network_interface_id: String,
    /// Newly assigned addresses.
    pub assigned_ipv6_addresses: Vec<Ipv6Addr>,
    /// Newly assigned /80 prefixes.
    pub assigned_ipv6_prefixes: Vec<Ipv6Net>,
}

/// UnassignIpv6Addresses: addresses and/or prefixes to release.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UnassignIpv6Addresses {
    /// The ENI.
    pub network_interface_id: String,
    /// Addresses to release.
    pub ipv6_addresses: Vec<Ipv6Addr>,
    /// /80 prefixes to release.
    pub ipv6_prefixes: Vec<Ipv6Net>,
}

/// AssociateTrunkInterface with the VLAN protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssociateTrunkInterface {
    /// The ENI that becomes a branch.
    pub branch_interface_id: String,
    /// The trunk ENI (attached to an instance).
    pub trunk_interface_id: String,
    /// VLAN id, 1..=4094, unique on the trunk.
    pub vlan_id: u16,
    /// Idempotency token.
    pub client_token: Option<String>,
}
