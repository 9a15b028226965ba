//! The EC2 resources the model holds (VPCs, subnets, security groups, instances, ENIs, trunk
//! associations), as plain data shaped like EC2's Describe* responses.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::instance_types::Hypervisor;

/// Tags of a resource, key → value, in key order (EC2 allows one value per key).
pub type Tags = BTreeMap<String, String>;

/// One tag, as passed to CreateTags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    /// Tag key (1..=128 characters, not starting with `aws:`).
    pub key: String,
    /// Tag value (0..=256 characters).
    pub value: String,
}

impl Tag {
    /// A tag with this key and value.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// A tag to remove in DeleteTags: by key, or by key only if it has this value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTag {
    /// Key of the tag to remove.
    pub key: String,
    /// If set, remove the tag only when its value equals this.
    pub value: Option<String>,
}

/// A VPC: IPv4 CIDR blocks and an optional Amazon-provided IPv6 /56.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vpc {
    /// `vpc-…`.
    pub id: String,
    /// IPv4 CIDR blocks, the primary first.
    pub cidr_blocks: Vec<Ipv4Net>,
    /// The Amazon-provided IPv6 /56, once assigned.
    pub ipv6_cidr_block: Option<Ipv6Net>,
    /// The security group named `default` that EC2 creates with every VPC.
    pub default_security_group_id: String,
    /// Account that owns the VPC.
    pub owner_id: String,
    /// Tags.
    pub tags: Tags,
}

/// A subnet in one availability zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// `subnet-…`.
    pub id: String,
    /// The VPC it belongs to.
    pub vpc_id: String,
    /// Availability zone, e.g. `us-west-2a`.
    pub availability_zone: String,
    /// IPv4 CIDR (/16../28).
    pub cidr_block: Ipv4Net,
    /// IPv6 /64, once associated.
    pub ipv6_cidr_block: Option<Ipv6Net>,
    /// Free IPv4 addresses: size − 5 reserved − addresses in use (a /28 prefix uses 16).
    pub available_ip_address_count: u32,
    /// Account that owns the subnet.
    pub owner_id: String,
    /// Tags.
    pub tags: Tags,
}

/// A VPC security group (rules are not modelled: nothing here filters packets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    /// `sg-…`.
    pub id: String,
    /// Group name, unique within the VPC.
    pub name: String,
    /// Description.
    pub description: String,
    /// The VPC it belongs to.
    pub vpc_id: String,
    /// Account that owns the group.
    pub owner_id: String,
    /// Tags.
    pub tags: Tags,
}

/// Instance lifecycle states the model uses (it skips `pending` and `shutting-down`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    /// Running: ENIs can be attached and detached.
    Running,
    /// Terminated: ENIs were detached or deleted; nothing can be attached.
    Terminated,
}

impl InstanceState {
    /// EC2's state name.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Running => "running",
            InstanceState::Terminated => "terminated",
        }
    }

    /// EC2's numeric state code (InstanceState.Code).
    pub fn code(self) -> u16 {
        match self {
            InstanceState::Running => 16,
            InstanceState::Terminated => 48,
        }
    }
}

/// An EC2 instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// `i-…`.
    pub id: String,
    /// Instance type name, e.g. `m5.large`.
    pub instance_type: String,
    /// Hypervisor of the type.
    pub hypervisor: Hypervisor,
    /// Lifecycle state.
    pub state: InstanceState,
    /// Subnet of the primary ENI.
    pub subnet_id: String,
    /// VPC of the primary ENI.
    pub vpc_id: String,
    /// Availability zone.
    pub availability_zone: String,
    /// Primary private IPv4 of the primary ENI; `None` once terminated, as EC2 reports.
    pub private_ip_address: Option<Ipv4Addr>,
    /// The ENI created with the instance at device index 0.
    pub primary_network_interface_id: String,
    /// Security groups given at launch.
    pub security_group_ids: Vec<String>,
    /// Account that owns the instance.
    pub owner_id: String,
    /// Tags.
    pub tags: Tags,
}

/// An instance together with its attached ENIs, as DescribeInstances returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceDescription {
    /// The instance.
    pub instance: Instance,
    /// Attached ENIs, ordered by network card then device index.
    pub network_interfaces: Vec<NetworkInterface>,
}

/// InterfaceType of an ENI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceType {
    /// A normal ENI.
    #[default]
    Interface,
    /// A trunk ENI carrying VLAN-tagged branch ENIs (security groups for pods).
    Trunk,
    /// A branch ENI associated with a trunk.
    Branch,
}

impl InterfaceType {
    /// EC2's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            InterfaceType::Interface => "interface",
            InterfaceType::Trunk => "trunk",
            InterfaceType::Branch => "branch",
        }
    }
}

/// Status of an ENI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkInterfaceStatus {
    /// Not attached: can be attached or deleted.
    Available,
    /// Attached to an instance, or associated with a trunk as a branch.
    InUse,
}

impl NetworkInterfaceStatus {
    /// EC2's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkInterfaceStatus::Available => "available",
            NetworkInterfaceStatus::InUse => "in-use",
        }
    }
}

/// Status of an attachment. The model attaches and detaches at once, so it only ever reports
/// `Attached`; the other states exist for layers that add EC2's asynchrony on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentStatus {
    /// Being attached.
    Attaching,
    /// Attached.
    Attached,
    /// Being detached.
    Detaching,
    /// Detached.
    Detached,
}

impl AttachmentStatus {
    /// EC2's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachmentStatus::Attaching => "attaching",
            AttachmentStatus::Attached => "attached",
            AttachmentStatus::Detaching => "detaching",
            AttachmentStatus::Detached => "detached",
        }
    }
}

/// The attachment of an ENI to an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// `eni-attach-…`.
    pub attachment_id: String,
    /// The instance.
    pub instance_id: String,
    /// Account that owns the instance.
    pub instance_owner_id: String,
    /// DeviceIndex (0 is the primary ENI).
    pub device_index: u32,
    /// NetworkCardIndex.
    pub network_card_index: u32,
    /// Attachment status.
    pub status: AttachmentStatus,
    /// Whether terminating the instance deletes the ENI.
    pub delete_on_termination: bool,
    /// When it was attached, Unix milliseconds (the model's clock, [`crate::Ec2Model::set_clock`]:
    /// through the API, the caller's time, a simulation's in one): `attachTime`, from which
    /// the daemon reads an ENI's age.
    #[serde(default)]
    pub attach_time_unix_ms: u64,
}

impl Attachment {
    /// `attachTime` as EC2 writes it (`2026-12-08T10:00:00.000Z`).
    pub fn attach_time(&self) -> String {
        // RFC 3339 ends at the year 9999 (253402300799999 ms); a later stamp is clamped.
        let ms = self.attach_time_unix_ms.min(253_402_300_799_999);
        humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string()
    }
}

/// An elastic network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    /// `eni-…`.
    pub id: String,
    /// Subnet the ENI's addresses come from.
    pub subnet_id: String,
    /// VPC of the subnet.
    pub vpc_id: String,
    /// Availability zone of the subnet.
    pub availability_zone: String,
    /// Account that owns the ENI.
    pub owner_id: String,
    /// Description.
    pub description: String,
    /// interface, trunk or branch.
    pub interface_type: InterfaceType,
    /// MAC address, `02:…`, unique in the model.
    pub mac_address: String,
    /// Primary private IPv4 address.
    pub private_ip_address: Ipv4Addr,
    /// Secondary private IPv4 addresses, in assignment order.
    pub secondary_private_ip_addresses: Vec<Ipv4Addr>,
    /// Delegated IPv4 /28 prefixes, in assignment order.
    pub ipv4_prefixes: Vec<Ipv4Net>,
    /// IPv6 addresses, in assignment order.
    pub ipv6_addresses: Vec<Ipv6Addr>,
    /// Delegated IPv6 /80 prefixes, in assignment order.
    pub ipv6_prefixes: Vec<Ipv6Net>,
    /// Security groups.
    pub security_group_ids: Vec<String>,
    /// SourceDestCheck.
    pub source_dest_check: bool,
    /// available or in-use.
    pub status: NetworkInterfaceStatus,
    /// Attachment, when attached to an instance.
    pub attachment: Option<Attachment>,
    /// Whether an AWS service manages the ENI (never, in the model).
    pub requester_managed: bool,
    /// Tags.
    pub tags: Tags,
}

impl NetworkInterface {
    /// All private IPv4 addresses with their `Primary` flag, the primary first, as in
    /// `PrivateIpAddresses` of DescribeNetworkInterfaces.
    pub fn private_ip_addresses(&self) -> impl Iterator<Item = (Ipv4Addr, bool)> + '_ {
        std::iter::once((self.private_ip_address, true)).chain(
            self.secondary_private_ip_addresses
                .iter()
                .map(|address| (*address, false)),
        )
    }

    /// IPv4 slots used against Ipv4AddressesPerInterface: addresses (primary included) plus
    /// prefixes, each /28 counting as one.
    pub fn ipv4_slots(&self) -> u32 {
        count(1 + self.secondary_private_ip_addresses.len() + self.ipv4_prefixes.len())
    }

    /// IPv6 slots used against Ipv6AddressesPerInterface: addresses plus /80 prefixes.
    pub fn ipv6_slots(&self) -> u32 {
        count(self.ipv6_addresses.len() + self.ipv6_prefixes.len())
    }
}

/// A branch ENI associated with a trunk ENI on a VLAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrunkInterfaceAssociation {
    /// `trunk-assoc-…`.
    pub association_id: String,
    /// The trunk ENI.
    pub trunk_interface_id: String,
    /// The branch ENI.
    pub branch_interface_id: String,
    /// VLAN id (1..=4094).
    pub vlan_id: u16,
    /// Always `VLAN` (GRE is not modelled).
    pub interface_protocol: String,
}

/// Saturating conversion for counts that in practice never exceed a few thousand.
pub(crate) fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
