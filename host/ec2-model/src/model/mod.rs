//! The EC2 model: all state of one emulated account and region, and every EC2 action as a
//! method that either applies completely or fails with EC2's error and changes nothing.

mod addresses;
mod instances;
mod interfaces;
mod invariants;

pub use invariants::InvariantViolation;
mod queries;
mod trunk;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::addressing::{AllocationPolicy, Ipv4Pool, Ipv6Pool};
use crate::error::{codes, Ec2Error, Ec2Result};
use crate::instance_types::{InstanceTypeCatalog, InstanceTypeInfo};
use crate::requests::{AssociateTrunkInterface, CreateNetworkInterface, RunInstance};
use crate::rng::SeededRng;
use crate::tags;
use crate::types::{
    DeleteTag, Instance, NetworkInterface, SecurityGroup, Subnet, Tag, Tags,
    TrunkInterfaceAssociation, Vpc,
};

/// The account id every resource of the model belongs to (moto uses the same one).
pub const ACCOUNT_ID: &str = "123456789012";
/// The region the model pretends to be in unless told otherwise.
pub const DEFAULT_REGION: &str = "us-west-2";
/// Security groups per ENI (EC2's default quota).
pub const MAX_SECURITY_GROUPS_PER_INTERFACE: usize = 5;

/// A subnet and the bookkeeping of its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SubnetRecord {
    /// Public view; `available_ip_address_count` is filled in from `ipv4` when read.
    subnet: Subnet,
    ipv4: Ipv4Pool,
    ipv6: Option<Ipv6Pool>,
}

impl SubnetRecord {
    fn view(&self) -> Subnet {
        let mut subnet = self.subnet.clone();
        subnet.available_ip_address_count = self.ipv4.available();
        subnet
    }
}

/// What a client token was first used for, to answer repeats the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenUse {
    CreateNetworkInterface {
        request: Box<CreateNetworkInterface>,
        result: Box<NetworkInterface>,
    },
    RunInstance {
        request: RunInstance,
        result: Instance,
    },
    AssociateTrunkInterface {
        request: AssociateTrunkInterface,
        result: TrunkInterfaceAssociation,
    },
}

/// The whole emulated EC2 state of one account in one region.
///
/// Pure and deterministic: no I/O, no clock, and ids, MAC addresses and chosen addresses come
/// from a generator seeded by [`Ec2Model::new`], so the same seed and the same calls give the
/// same state, byte for byte.
#[derive(Debug, Clone)]
pub struct Ec2Model {
    catalog: Arc<InstanceTypeCatalog>,
    rng: SeededRng,
    policy: AllocationPolicy,
    region: String,
    generation: u64,
    vpcs: BTreeMap<String, Vpc>,
    subnets: BTreeMap<String, SubnetRecord>,
    security_groups: BTreeMap<String, SecurityGroup>,
    instances: BTreeMap<String, Instance>,
    enis: BTreeMap<String, NetworkInterface>,
    /// Attachment id → ENI id.
    attachments: BTreeMap<String, String>,
    trunk_associations: BTreeMap<String, TrunkInterfaceAssociation>,
    /// (action, client token) → first use.
    client_tokens: BTreeMap<(&'static str, String), TokenUse>,
    ids: BTreeSet<String>,
    macs: BTreeSet<String>,
    vpc_ipv6_blocks: BTreeSet<Ipv6Net>,
    /// The time attachments are stamped with (Unix ms): what the front last set
    /// ([`Ec2Model::set_clock`]), 0 until then, so the model alone stays deterministic.
    now_unix_ms: u64,
}

impl Ec2Model {
    /// An empty account with the built-in instance types, lowest-free address choice and
    /// every random choice drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Self::with_catalog(seed, InstanceTypeCatalog::builtin())
    }

    /// Like [`Ec2Model::new`] with a custom instance-type table.
    pub fn with_catalog(seed: u64, catalog: Arc<InstanceTypeCatalog>) -> Self {
        Self {
            catalog,
            rng: SeededRng::new(seed),
            policy: AllocationPolicy::default(),
            region: DEFAULT_REGION.to_owned(),
            generation: 0,
            vpcs: BTreeMap::new(),
            subnets: BTreeMap::new(),
            security_groups: BTreeMap::new(),
            instances: BTreeMap::new(),
            enis: BTreeMap::new(),
            attachments: BTreeMap::new(),
            trunk_associations: BTreeMap::new(),
            client_tokens: BTreeMap::new(),
            ids: BTreeSet::new(),
            macs: BTreeSet::new(),
            vpc_ipv6_blocks: BTreeSet::new(),
            now_unix_ms: 0,
        }
    }

    /// Sets the time (Unix ms) the next changes are stamped with (`attachTime`).
    /// [`crate::api::answer`] sets it to its caller's time before every request.
    pub fn set_clock(&mut self, unix_ms: u64) {
        self.now_unix_ms = unix_ms;
    }

    /// Choose addresses EC2 picks itself with `policy` from now on.
    pub fn with_allocation_policy(mut self, policy: AllocationPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Pretend to be in `region` (used for DNS names; AZ names are not checked against it).
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// The instance types this model knows.
    pub fn catalog(&self) -> &InstanceTypeCatalog {
        &self.catalog
    }

    /// The region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The account id owning every resource.
    pub fn account_id(&self) -> &'static str {
        ACCOUNT_ID
    }

    /// How addresses are chosen.
    pub fn allocation_policy(&self) -> AllocationPolicy {
        self.policy
    }

    /// A counter that grows with every successful change, so layers above (IMDS lag,
    /// caches) can tell whether anything changed.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// EC2's private DNS name for an address, e.g. `ip-10-0-1-5.us-west-2.compute.internal`.
    pub fn private_dns_name(&self, address: Ipv4Addr) -> String {
        let dashed = address.to_string().replace('.', "-");
        if self.region == "us-east-1" {
            format!("ip-{dashed}.ec2.internal")
        } else {
            format!("ip-{dashed}.{}.compute.internal", self.region)
        }
    }

    // ----- read accessors -------------------------------------------------------------------

    /// The VPC with this id.
    pub fn vpc(&self, id: &str) -> Option<&Vpc> {
        self.vpcs.get(id)
    }

    /// The subnet with this id, with its current available-address count.
    pub fn subnet(&self, id: &str) -> Option<Subnet> {
        self.subnets.get(id).map(SubnetRecord::view)
    }

    /// The security group with this id.
    pub fn security_group(&self, id: &str) -> Option<&SecurityGroup> {
        self.security_groups.get(id)
    }

    /// The instance with this id (terminated instances stay visible, as in EC2).
    pub fn instance(&self, id: &str) -> Option<&Instance> {
        self.instances.get(id)
    }

    /// The ENI with this id.
    pub fn network_interface(&self, id: &str) -> Option<&NetworkInterface> {
        self.enis.get(id)
    }

    /// ENIs attached to an instance, ordered by network card and device index.
    pub fn instance_network_interfaces(&self, instance_id: &str) -> Vec<&NetworkInterface> {
        let mut enis: Vec<&NetworkInterface> = self
            .enis
            .values()
            .filter(|eni| {
                eni.attachment
                    .as_ref()
                    .is_some_and(|a| a.instance_id == instance_id)
            })
            .collect();
        enis.sort_by_key(|eni| {
            eni.attachment
                .as_ref()
                .map(|a| (a.network_card_index, a.device_index))
        });
        enis
    }

    /// The trunk association with this id.
    pub fn trunk_association(&self, id: &str) -> Option<&TrunkInterfaceAssociation> {
        self.trunk_associations.get(id)
    }

    /// The instance type of the instance an ENI is attached to.
    pub fn attached_instance_type(&self, eni: &NetworkInterface) -> Option<&InstanceTypeInfo> {
        let attachment = eni.attachment.as_ref()?;
        let instance = self.instances.get(&attachment.instance_id)?;
        self.catalog.get(&instance.instance_type)
    }

    /// The IPv4 addresses-and-prefixes limit that applies to an ENI now: its instance type's
    /// when attached, otherwise the largest of any type (EC2 checks again on attach).
    pub fn ipv4_limit(&self, eni: &NetworkInterface) -> u32 {
        self.attached_instance_type(eni)
            .map_or(self.catalog.max_ipv4_per_interface(), |t| {
                t.ipv4_addresses_per_interface
            })
    }

    /// The IPv6 addresses-and-prefixes limit that applies to an ENI now.
    pub fn ipv6_limit(&self, eni: &NetworkInterface) -> u32 {
        self.attached_instance_type(eni)
            .map_or(self.catalog.max_ipv6_per_interface(), |t| {
                t.ipv6_addresses_per_interface
            })
    }

    // ----- VPCs, subnets, security groups ---------------------------------------------------

    /// CreateVpc with an IPv4 CIDR (/16../28); also creates its `default` security group.
    pub fn create_vpc(&mut self, cidr_block: Ipv4Net) -> Ec2Result<Vpc> {
        check_network_cidr(cidr_block, "cidrBlock")?;
        if !(16..=28).contains(&cidr_block.prefix_len()) {
            return Err(Ec2Error::new(
                codes::INVALID_VPC_RANGE,
                format!("The CIDR '{cidr_block}' is invalid."),
            ));
        }
        let id = self.new_id("vpc");
        let sg_id = self.new_id("sg");
        self.security_groups.insert(
            sg_id.clone(),
            SecurityGroup {
                id: sg_id.clone(),
                name: "default".into(),
                description: "default VPC security group".into(),
                vpc_id: id.clone(),
                owner_id: ACCOUNT_ID.into(),
                tags: Tags::new(),
            },
        );
        let vpc = Vpc {
            id: id.clone(),
            cidr_blocks: vec![cidr_block],
            ipv6_cidr_block: None,
            default_security_group_id: sg_id,
            owner_id: ACCOUNT_ID.into(),
            tags: Tags::new(),
        };
        self.vpcs.insert(id, vpc.clone());
        self.touch();
        Ok(vpc)
    }

    /// AssociateVpcCidrBlock with a secondary IPv4 CIDR (e.g. 100.64.0.0/16 for custom
    /// networking).
    pub fn associate_vpc_cidr_block(
        &mut self,
        vpc_id: &str,
        cidr_block: Ipv4Net,
    ) -> Ec2Result<Vpc> {
        check_network_cidr(cidr_block, "cidrBlock")?;
        let vpc = self.vpc_ref(vpc_id)?;
        let overlaps = vpc
            .cidr_blocks
            .iter()
            .any(|c| c.contains(&cidr_block.network()) || cidr_block.contains(&c.network()));
        if !(16..=28).contains(&cidr_block.prefix_len()) || overlaps {
            return Err(Ec2Error::new(
                codes::INVALID_VPC_RANGE,
                format!("The CIDR '{cidr_block}' is invalid."),
            ));
        }
        let vpc = self
            .vpcs
            .get_mut(vpc_id)
            .ok_or_else(|| Ec2Error::vpc_not_found(vpc_id))?;
        vpc.cidr_blocks.push(cidr_block);
        let vpc = vpc.clone();
        self.touch();
        Ok(vpc)
    }

    /// AssociateVpcCidrBlock with AmazonProvidedIpv6CidrBlock: gives the VPC a /56.
    pub fn assign_vpc_ipv6_cidr_block(&mut self, vpc_id: &str) -> Ec2Result<Ipv6Net> {
        if self.vpc_ref(vpc_id)?.ipv6_cidr_block.is_some() {
            return Err(Ec2Error::invalid_value(format!(
                "The vpc '{vpc_id}' already has an Amazon-provided IPv6 CIDR block"
            )));
        }
        let block = loop {
            // 2600:1f14::/32 is one of AWS's ranges; 24 seeded bits give the /56.
            let bits = self.rng.below(1 << 24);
            let network = (0x2600_1f14u128 << 96) | (u128::from(bits) << 72);
            let block = Ipv6Net::new(network.into(), 56)
                .map_err(|e| Ec2Error::invalid_value(e.to_string()))?;
            if self.vpc_ipv6_blocks.insert(block) {
                break block;
            }
        };
        if let Some(vpc) = self.vpcs.get_mut(vpc_id) {
            vpc.ipv6_cidr_block = Some(block);
        }
        self.touch();
        Ok(block)
    }

    /// CreateSubnet: an IPv4 CIDR (/16../28) inside the VPC, not overlapping its other subnets.
    pub fn create_subnet(
        &mut self,
        vpc_id: &str,
        cidr_block: Ipv4Net,
        availability_zone: &str,
    ) -> Ec2Result<Subnet> {
        check_network_cidr(cidr_block, "cidrBlock")?;
        let vpc = self.vpc_ref(vpc_id)?;
        let inside = vpc
            .cidr_blocks
            .iter()
            .any(|c| c.contains(&cidr_block.network()) && c.contains(&cidr_block.broadcast()));
        if !(16..=28).contains(&cidr_block.prefix_len()) || !inside {
            return Err(Ec2Error::new(
                codes::INVALID_SUBNET_RANGE,
                format!("The CIDR '{cidr_block}' is invalid."),
            ));
        }
        let conflict = self.subnets.values().any(|s| {
            s.subnet.vpc_id == vpc_id
                && (s.subnet.cidr_block.contains(&cidr_block.network())
                    || cidr_block.contains(&s.subnet.cidr_block.network()))
        });
        if conflict {
            return Err(Ec2Error::new(
                codes::INVALID_SUBNET_CONFLICT,
                format!("The CIDR '{cidr_block}' conflicts with another subnet"),
            ));
        }
        if availability_zone.is_empty() {
            return Err(Ec2Error::invalid_value(
                "Value () for parameter availabilityZone is invalid.",
            ));
        }
        let id = self.new_id("subnet");
        let record = SubnetRecord {
            subnet: Subnet {
                id: id.clone(),
                vpc_id: vpc_id.to_owned(),
                availability_zone: availability_zone.to_owned(),
                cidr_block,
                ipv6_cidr_block: None,
                available_ip_address_count: 0,
                owner_id: ACCOUNT_ID.into(),
                tags: Tags::new(),
            },
            ipv4: Ipv4Pool::new(cidr_block),
            ipv6: None,
        };
        let view = record.view();
        self.subnets.insert(id, record);
        self.touch();
        Ok(view)
    }

    /// AssociateSubnetCidrBlock: give the subnet a /64 from its VPC's /56.
    pub fn associate_subnet_ipv6_cidr_block(
        &mut self,
        subnet_id: &str,
        ipv6_cidr_block: Ipv6Net,
    ) -> Ec2Result<Subnet> {
        let record = self.subnet_record(subnet_id)?;
        let vpc = self.vpc_ref(&record.subnet.vpc_id)?;
        if record.subnet.ipv6_cidr_block.is_some() {
            return Err(Ec2Error::invalid_value(format!(
                "The subnet '{subnet_id}' already has an IPv6 CIDR block"
            )));
        }
        let inside = vpc
            .ipv6_cidr_block
            .is_some_and(|block| block.contains(&ipv6_cidr_block));
        if ipv6_cidr_block.prefix_len() != 64
            || ipv6_cidr_block.addr() != ipv6_cidr_block.network()
            || !inside
        {
            return Err(Ec2Error::new(
                codes::INVALID_SUBNET_RANGE,
                format!("The IPv6 CIDR '{ipv6_cidr_block}' is invalid."),
            ));
        }
        if self
            .subnets
            .values()
            .any(|s| s.subnet.ipv6_cidr_block == Some(ipv6_cidr_block))
        {
            return Err(Ec2Error::new(
                codes::INVALID_SUBNET_CONFLICT,
                format!("The CIDR '{ipv6_cidr_block}' conflicts with another subnet"),
            ));
        }
        let record = self
            .subnets
            .get_mut(subnet_id)
            .ok_or_else(|| Ec2Error::subnet_not_found(subnet_id))?;
        record.subnet.ipv6_cidr_block = Some(ipv6_cidr_block);
        record.ipv6 = Some(Ipv6Pool::new(ipv6_cidr_block));
        let view = record.view();
        self.touch();
        Ok(view)
    }

    /// CreateSecurityGroup in a VPC; names are unique per VPC.
    pub fn create_security_group(&mut self, vpc_id: &str, name: &str) -> Ec2Result<SecurityGroup> {
        self.vpc_ref(vpc_id)?;
        if name.is_empty() || name.len() > 255 {
            return Err(Ec2Error::invalid_value(format!(
                "Value ({name}) for parameter groupName is invalid."
            )));
        }
        if self
            .security_groups
            .values()
            .any(|sg| sg.vpc_id == vpc_id && sg.name == name)
        {
            return Err(Ec2Error::new(
                codes::INVALID_GROUP_DUPLICATE,
                format!("The security group '{name}' already exists for VPC '{vpc_id}'"),
            ));
        }
        let id = self.new_id("sg");
        let group = SecurityGroup {
            id: id.clone(),
            name: name.to_owned(),
            description: name.to_owned(),
            vpc_id: vpc_id.to_owned(),
            owner_id: ACCOUNT_ID.into(),
            tags: Tags::new(),
        };
        self.security_groups.insert(id, group.clone());
        self.touch();
        Ok(group)
    }

    // ----- tags -----------------------------------------------------------------------------

    /// CreateTags on any mix of VPCs, subnets, security groups, instances and ENIs. All
    /// resources are checked before any is changed.
    pub fn create_tags(&mut self, resource_ids: &[String], tags: &[Tag]) -> Ec2Result<()> {
        if resource_ids.is_empty() {
            return Err(Ec2Error::new(
                codes::MISSING_PARAMETER,
                "The request must contain the parameter resourceIdSet",
            ));
        }
        tags::validate_new_tags(tags.iter().map(|t| (t.key.as_str(), t.value.as_str())))?;
        let mut updated = Vec::new();
        for id in resource_ids {
            let merged = tags::merged(self.tags_of(id)?, tags)?;
            updated.push((id, merged));
        }
        for (id, merged) in updated {
            *self.tags_of_mut(id)? = merged;
        }
        self.touch();
        Ok(())
    }

    /// DeleteTags: by key, or by key and value.
    pub fn delete_tags(&mut self, resource_ids: &[String], tags: &[DeleteTag]) -> Ec2Result<()> {
        tags::validate_delete_tags(tags)?;
        for id in resource_ids {
            self.tags_of(id)?;
        }
        for id in resource_ids {
            tags::remove(self.tags_of_mut(id)?, tags);
        }
        self.touch();
        Ok(())
    }

    fn tags_of(&self, id: &str) -> Ec2Result<&Tags> {
        let kind = resource_kind(id)?;
        let tags = match kind {
            ResourceKind::Vpc => self.vpcs.get(id).map(|r| &r.tags),
            ResourceKind::Subnet => self.subnets.get(id).map(|r| &r.subnet.tags),
            ResourceKind::SecurityGroup => self.security_groups.get(id).map(|r| &r.tags),
            ResourceKind::Instance => self.instances.get(id).map(|r| &r.tags),
            ResourceKind::NetworkInterface => self.enis.get(id).map(|r| &r.tags),
        };
        tags.ok_or_else(|| kind.not_found(id))
    }

    fn tags_of_mut(&mut self, id: &str) -> Ec2Result<&mut Tags> {
        let kind = resource_kind(id)?;
        let tags = match kind {
            ResourceKind::Vpc => self.vpcs.get_mut(id).map(|r| &mut r.tags),
            ResourceKind::Subnet => self.subnets.get_mut(id).map(|r| &mut r.subnet.tags),
            ResourceKind::SecurityGroup => self.security_groups.get_mut(id).map(|r| &mut r.tags),
            ResourceKind::Instance => self.instances.get_mut(id).map(|r| &mut r.tags),
            ResourceKind::NetworkInterface => self.enis.get_mut(id).map(|r| &mut r.tags),
        };
        tags.ok_or_else(|| kind.not_found(id))
    }

    // ----- shared helpers -------------------------------------------------------------------

    /// Record a successful change.
    fn touch(&mut self) {
        self.generation += 1;
    }

    /// A fresh id of the given kind, never handed out before.
    fn new_id(&mut self, prefix: &str) -> String {
        loop {
            let id = self.rng.resource_id(prefix);
            if self.ids.insert(id.clone()) {
                return id;
            }
        }
    }

    /// A fresh MAC address, unique among live ENIs.
    fn new_mac(&mut self) -> String {
        loop {
            let mac = self.rng.mac_address();
            if self.macs.insert(mac.clone()) {
                return mac;
            }
        }
    }

    fn vpc_ref(&self, id: &str) -> Ec2Result<&Vpc> {
        self.vpcs.get(id).ok_or_else(|| Ec2Error::vpc_not_found(id))
    }

    fn subnet_record(&self, id: &str) -> Ec2Result<&SubnetRecord> {
        check_prefix(id, "subnet", codes::INVALID_SUBNET_ID_MALFORMED)?;
        self.subnets
            .get(id)
            .ok_or_else(|| Ec2Error::subnet_not_found(id))
    }

    fn instance_ref(&self, id: &str) -> Ec2Result<&Instance> {
        check_prefix(id, "i", codes::INVALID_INSTANCE_ID_MALFORMED)?;
        self.instances
            .get(id)
            .ok_or_else(|| Ec2Error::instance_not_found(id))
    }

    fn eni_ref(&self, id: &str) -> Ec2Result<&NetworkInterface> {
        check_prefix(id, "eni", codes::INVALID_NETWORK_INTERFACE_ID_MALFORMED)?;
        self.enis.get(id).ok_or_else(|| Ec2Error::eni_not_found(id))
    }

    fn eni_mut(&mut self, id: &str) -> Ec2Result<&mut NetworkInterface> {
        self.enis
            .get_mut(id)
            .ok_or_else(|| Ec2Error::eni_not_found(id))
    }

    /// The security groups an ENI in `vpc_id` gets: the given ones (deduplicated, existing,
    /// in the same VPC, at most five) or the VPC's default group.
    fn resolve_security_groups(&self, vpc_id: &str, ids: &[String]) -> Ec2Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(vec![self
                .vpc_ref(vpc_id)?
                .default_security_group_id
                .clone()]);
        }
        let mut groups: Vec<String> = Vec::new();
        for id in ids {
            let group = self
                .security_groups
                .get(id)
                .ok_or_else(|| Ec2Error::group_not_found(id))?;
            if group.vpc_id != vpc_id {
                return Err(Ec2Error::new(
                    codes::INVALID_PARAMETER,
                    format!("Security group {id} and subnet belong to different networks."),
                ));
            }
            if !groups.contains(id) {
                groups.push(id.clone());
            }
        }
        if groups.len() > MAX_SECURITY_GROUPS_PER_INTERFACE {
            return Err(Ec2Error::new(
                codes::SECURITY_GROUPS_PER_INTERFACE_LIMIT_EXCEEDED,
                "You have exceeded the maximum number of security groups allowed per network interface.",
            ));
        }
        Ok(groups)
    }

    /// The first use of `token` for `action`, if it was used before.
    fn token_use(&self, action: &'static str, token: Option<&String>) -> Option<&TokenUse> {
        let token = token?;
        self.client_tokens.get(&(action, token.clone()))
    }

    fn remember_token(&mut self, action: &'static str, token: Option<&String>, used: TokenUse) {
        if let Some(token) = token {
            self.client_tokens.insert((action, token.clone()), used);
        }
    }
}

/// The error for a client token reused with different parameters.
fn idempotent_mismatch(token: &str) -> Ec2Error {
    Ec2Error::new(
        codes::IDEMPOTENT_PARAMETER_MISMATCH,
        format!("The client token '{token}' was already used with different parameters."),
    )
}

/// Resource kinds that CreateTags accepts, told apart by their id prefix.
#[derive(Debug, Clone, Copy)]
enum ResourceKind {
    Vpc,
    Subnet,
    SecurityGroup,
    Instance,
    NetworkInterface,
}

impl ResourceKind {
    fn not_found(self, id: &str) -> Ec2Error {
        match self {
            ResourceKind::Vpc => Ec2Error::vpc_not_found(id),
            ResourceKind::Subnet => Ec2Error::subnet_not_found(id),
            ResourceKind::SecurityGroup => Ec2Error::group_not_found(id),
            ResourceKind::Instance => Ec2Error::instance_not_found(id),
            ResourceKind::NetworkInterface => Ec2Error::eni_not_found(id),
        }
    }
}

fn resource_kind(id: &str) -> Ec2Result<ResourceKind> {
    let (prefix, _) = id.split_once('-').unwrap_or((id, ""));
    match prefix {
        "vpc" => Ok(ResourceKind::Vpc),
        "subnet" => Ok(ResourceKind::Subnet),
        "sg" => Ok(ResourceKind::SecurityGroup),
        "i" => Ok(ResourceKind::Instance),
        "eni" => Ok(ResourceKind::NetworkInterface),
        _ => Err(Ec2Error::new(
            codes::INVALID_ID,
            format!("The ID '{id}' is not valid"),
        )),
    }
}

/// EC2 rejects ids of the wrong shape with `…ID.Malformed` before looking them up.
fn check_prefix(id: &str, prefix: &str, code: &'static str) -> Ec2Result<()> {
    let well_formed = id
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()));
    if well_formed {
        Ok(())
    } else {
        Err(Ec2Error::new(
            code,
            format!("Invalid id: \"{id}\" (expecting \"{prefix}-...\")"),
        ))
    }
}

/// A CIDR given with host bits set is not a network: EC2 refuses it.
fn check_network_cidr(cidr: Ipv4Net, parameter: &str) -> Ec2Result<()> {
    if cidr.addr() == cidr.network() {
        Ok(())
    } else {
        Err(Ec2Error::invalid_value(format!(
            "Value ({cidr}) for parameter {parameter} is invalid. This is not a valid CIDR block."
        )))
    }
}
