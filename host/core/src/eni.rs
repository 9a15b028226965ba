//! The node's ENIs as the EC2 provider knows them, and [`EniProvider`]: what the daemon's
//! warm-pool reconciler asks of that provider. The provider (`wasmcni-ec2`, the only crate
//! that links the AWS SDK) implements it; the daemon sees only this trait, so the reconciler's
//! rules (what leaves the pool when, what comes back when EC2 refuses) are testable with a
//! model of EC2 and no SDK.

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::ipam::{AddressBlock, BlockKind, IpFamily, Provider};

/// What went wrong talking to IMDS or EC2; the message names the path or the action.
#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    /// An IMDS read failed.
    #[error("IMDS {path}: {message}")]
    Imds {
        /// The metadata path.
        path: String,
        /// What happened.
        message: String,
    },
    /// IMDS answered something that does not parse.
    #[error("IMDS {path}: {value:?} is not {expected}")]
    Malformed {
        /// The metadata path.
        path: String,
        /// The answer.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// An EC2 call failed.
    #[error("EC2 {action}: {code}: {message}")]
    Api {
        /// The action.
        action: &'static str,
        /// EC2's error code (or the SDK's failure kind).
        code: String,
        /// Its message.
        message: String,
    },
    /// A client could not be built.
    #[error("{0}")]
    Setup(String),
}

/// One ENI attached to the node, as IMDS shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImdsEni {
    /// Its MAC address.
    pub mac: String,
    /// `eni-…`.
    pub id: String,
    /// Attachment device index (0: primary).
    pub device_number: u32,
    /// Its subnet.
    pub subnet_id: String,
    /// The subnet's CIDR.
    pub subnet_cidr: Ipv4Net,
    /// Private IPv4 addresses, the ENI's own primary first.
    pub ipv4s: Vec<Ipv4Addr>,
    /// Delegated /28 prefixes.
    pub ipv4_prefixes: Vec<Ipv4Net>,
    /// Security groups.
    pub security_groups: Vec<String>,
    /// The VPC's IPv4 CIDRs.
    pub vpc_cidrs: Vec<Ipv4Net>,
    /// The VPC.
    pub vpc_id: String,
}

/// The node's identity and ENIs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeIdentity {
    /// `i-…`.
    pub instance_id: String,
    /// e.g. `m5.large`.
    pub instance_type: String,
    /// e.g. `us-west-2a`.
    pub availability_zone: String,
    /// e.g. `us-west-2`.
    pub region: String,
    /// The primary ENI's MAC.
    pub primary_mac: String,
    /// Every attached ENI, by device number.
    pub enis: Vec<ImdsEni>,
}

impl NodeIdentity {
    /// The primary ENI (device 0).
    pub fn primary(&self) -> Option<&ImdsEni> {
        self.enis.iter().find(|e| e.device_number == 0)
    }
}

/// An ENI as EC2 describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Eni {
    /// `eni-…`.
    pub id: String,
    /// MAC address, lower case.
    pub mac: String,
    /// Subnet.
    pub subnet_id: String,
    /// Security group ids.
    pub security_groups: Vec<String>,
    /// The ENI's own primary address.
    pub primary_ip: Ipv4Addr,
    /// Secondary addresses.
    pub secondary_ips: Vec<Ipv4Addr>,
    /// Delegated /28 prefixes.
    pub prefixes: Vec<Ipv4Net>,
    /// Delegated IPv6 prefixes (/80s).
    pub ipv6_prefixes: Vec<ipnet::Ipv6Net>,
    /// `available`, `in-use`, …
    pub status: String,
    /// EC2's interface type: `interface` for a plain ENI; `trunk` (security groups for pods),
    /// `branch`, `efa`, `efa-only` and the AWS services' own types are never the pool's.
    pub interface_type: String,
    /// Attachment, if attached.
    pub attachment: Option<EniAttachment>,
    /// Tags.
    pub tags: Vec<(String, String)>,
}

impl Eni {
    /// Whether it is a plain ENI (the only kind whose addresses go to pods).
    pub fn is_plain(&self) -> bool {
        matches!(self.interface_type.as_str(), "" | "interface")
    }
}

/// Where an ENI is attached.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EniAttachment {
    /// `eni-attach-…`.
    pub id: String,
    /// The instance.
    pub instance_id: String,
    /// Device index.
    pub device_index: u32,
    /// Network card.
    pub network_card: u32,
    /// `attaching`, `attached`, `detaching`, `detached`.
    pub status: String,
    /// Attach time, Unix milliseconds (0 when unknown).
    pub attached_unix_ms: u64,
    /// Whether the ENI goes with the instance.
    pub delete_on_termination: bool,
}

/// An ENI attached to the node, as the provider manages it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEni {
    /// What EC2 says.
    pub eni: Eni,
    /// Device index on network card 0.
    pub device: u32,
    /// The attachment.
    pub attachment_id: String,
    /// The subnet's CIDR.
    pub subnet_cidr: Ipv4Net,
    /// When it was attached (Unix ms).
    pub attached_unix_ms: u64,
    /// Whether its addresses go to pods (false for `no-manage` and other cards).
    pub managed: bool,
    /// Whether its link and routing table are set up on the node (the primary ENI's always
    /// are). Until then none of its addresses are in the pool: a pod on it would not route.
    pub linked: bool,
}

impl NodeEni {
    /// Whether this is the primary ENI.
    pub fn primary(&self) -> bool {
        self.device == 0
    }

    /// Routing table for traffic from its pods: `None` (main) for the primary, device + 1
    /// otherwise (VPC CNI's numbering).
    pub fn route_table(&self) -> Option<u32> {
        (!self.primary()).then_some(self.device + 1)
    }

    /// The ENI as plugins see it in the pool view, `now_ms` (Unix ms) giving its age.
    pub fn info(&self, owned: bool, now_ms: u64) -> crate::pool_view::EniInfo {
        crate::pool_view::EniInfo {
            owned,
            id: self.eni.id.clone(),
            device_number: self.device,
            primary: self.primary(),
            subnet_id: self.eni.subnet_id.clone(),
            subnet_cidr: self.subnet_cidr,
            security_groups: self.eni.security_groups.clone(),
            primary_ip: self.eni.primary_ip,
            age_ms: now_ms.saturating_sub(self.attached_unix_ms),
            tags: self.eni.tags.clone(),
        }
    }

    /// The subnet's gateway: its first address after the network (EC2's VPC router).
    pub fn gateway(&self) -> Ipv4Addr {
        subnet_gateway(self.subnet_cidr)
    }

    /// The pod address blocks it holds.
    pub fn blocks(&self) -> impl Iterator<Item = AddressBlock> + '_ {
        let table = self.route_table();
        let ips = self.eni.secondary_ips.iter().map(move |ip| AddressBlock {
            cidr: Ipv4Net::from(*ip),
            route_table: table,
            kind: BlockKind::SecondaryIp,
            eni_id: Some(self.eni.id.clone()),
        });
        let prefixes = self.eni.prefixes.iter().map(move |p| AddressBlock {
            cidr: *p,
            route_table: table,
            kind: BlockKind::Prefix,
            eni_id: Some(self.eni.id.clone()),
        });
        ips.chain(prefixes)
            .filter(|_| self.managed && (self.linked || self.primary()))
    }

    /// Address slots used (secondary IPs and prefixes; the ENI's own address not counted).
    pub fn slots_used(&self) -> u32 {
        (self.eni.secondary_ips.len() + self.eni.prefixes.len()) as u32
    }
}

/// The first host address of a subnet, EC2's VPC router for it.
pub fn subnet_gateway(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).wrapping_add(1))
}

/// What a request that added addresses added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Added {
    /// Secondary addresses.
    pub ips: Vec<Ipv4Addr>,
    /// Prefixes.
    pub prefixes: Vec<Ipv4Net>,
    /// Set when prefixes were asked for and secondary IPs given instead.
    pub fell_back: Option<String>,
}

/// The EC2 ENI provider as the daemon drives it: the pool's addresses are the secondary IPv4
/// addresses and /28 prefixes of the node's ENIs (or /128s of the primary ENI's IPv6 /80).
///
/// It keeps the picture of the node's ENIs and makes the EC2 calls; the daemon decides when,
/// holds the allocation lock while addresses leave the pool, and sets up each ENI's link. The
/// bookkeeping methods (`withdraw`, `restore`, `forget`, `adopt`, `mark_linked`) call no EC2
/// API: they change the picture (and what a later refresh may take back into it), so the
/// daemon can take addresses out of the pool before the EC2 call that gives them back, and put
/// them back when EC2 refuses.
///
/// The provider is started from the configuration's `[provider.ec2]` settings, which the
/// daemon reads too (SNAT, link wait, intervals); `server::start` checks that the two agree
/// on the address family.
#[async_trait::async_trait]
pub trait EniProvider: Provider {
    /// The node's identity (from IMDS).
    fn identity(&self) -> &NodeIdentity;

    /// The family pods get their address in.
    fn family(&self) -> IpFamily;

    /// Pods the node may run (the configured figure, or VPC CNI's from the instance type).
    fn max_pods(&self) -> u32;

    /// The attached ENIs on network card 0, by device.
    fn enis(&self) -> Vec<NodeEni>;

    /// The attached ENI with `id`.
    fn eni(&self, id: &str) -> Option<NodeEni>;

    /// The primary ENI's own address (the SNAT source).
    fn primary_ip(&self) -> Option<Ipv4Addr>;

    /// The VPC's IPv4 CIDRs.
    fn vpc_cidrs(&self) -> Vec<Ipv4Net>;

    /// Whether the primary ENI holds an IPv6 prefix now (as last read from EC2).
    fn has_ipv6_prefix(&self) -> bool;

    /// Managed secondary ENIs whose link and routing table are not set up yet (none of their
    /// addresses is in the pool until [`EniProvider::mark_linked`]).
    fn unlinked(&self) -> Vec<NodeEni>;

    /// The host's ownership tags for a new ENI (VPC CNI's keys, which no plugin may write).
    fn ownership_tags(&self) -> Vec<(String, String)>;

    /// Lets the addresses of an ENI whose link is set up into the pool.
    fn mark_linked(&self, eni_id: &str);

    /// Takes an ENI made by [`EniProvider::create_and_attach`] (its link set up) into the pool.
    fn adopt(&self, eni: NodeEni);

    /// Takes addresses and prefixes out of the pool before they are given back to EC2; a
    /// refresh does not take them back in while EC2 settles (the real provider: 60 s), even if
    /// `DescribeNetworkInterfaces` still lists them.
    fn withdraw(&self, eni_id: &str, ips: &[Ipv4Addr], prefixes: &[Ipv4Net]);

    /// Puts back what [`EniProvider::withdraw`] took when EC2 did not take it.
    fn restore(&self, eni_id: &str, ips: &[Ipv4Addr], prefixes: &[Ipv4Net]);

    /// Takes an ENI out of the pool before it is detached and deleted; the ENI as it was.
    fn forget(&self, eni_id: &str) -> Option<NodeEni>;

    /// Re-reads the node's ENIs from EC2 (authoritative; IMDS may lag behind an attach).
    async fn refresh(&self) -> Result<(), Ec2Error>;

    /// IPv6 prefix mode: the primary ENI's /80, delegated now if it has none.
    async fn ensure_ipv6_prefix(&self) -> Result<Ipv6Net, Ec2Error>;

    /// Creates an ENI and attaches it at the lowest free device index, with
    /// DeleteOnTermination; if the attach fails the ENI is deleted. The ENI is not in the pool
    /// until [`EniProvider::adopt`]. The note says how a prefix request was served with
    /// secondary IPs instead (a subnet without a free aligned /28).
    async fn create_and_attach(
        &self,
        subnet_id: &str,
        security_groups: &[String],
        secondary_ips: u32,
        prefixes: u32,
        tags: Vec<(String, String)>,
    ) -> Result<(NodeEni, Option<String>), Ec2Error>;

    /// Assigns `count` secondary addresses (or /28 prefixes) to an ENI; when the ENI is linked
    /// they are in the pool when this returns. A prefix request in a subnet without a free
    /// aligned /28 may be served with secondary IPs instead ([`Added::fell_back`] says so).
    async fn assign(&self, eni_id: &str, count: u32, prefixes: bool) -> Result<Added, Ec2Error>;

    /// Assigns the secondary address `ip` of the ENI's subnet to it, for a pod that asked for
    /// that address; when the ENI is linked it is in the pool when this returns.
    async fn assign_address(&self, eni_id: &str, ip: Ipv4Addr) -> Result<(), Ec2Error>;

    /// Gives addresses and prefixes (withdrawn first) back to EC2.
    async fn unassign(
        &self,
        eni_id: &str,
        ips: &[Ipv4Addr],
        prefixes: &[Ipv4Net],
    ) -> Result<(), Ec2Error>;

    /// Which of these EC2 still lists on the ENI after a failed unassign (a lost reply may
    /// hide a success), for the caller to restore. When EC2 cannot be asked, none: an address
    /// restored wrongly could reach two pods, while one left out comes back with a later
    /// refresh.
    async fn still_assigned(
        &self,
        eni_id: &str,
        ips: &[Ipv4Addr],
        prefixes: &[Ipv4Net],
    ) -> (Vec<Ipv4Addr>, Vec<Ipv4Net>);

    /// Detaches an ENI (forgotten first), waits a bounded time for EC2 to report it
    /// `available`, and deletes it. An ENI that is not deleted stays tagged and unattached,
    /// for [`EniProvider::delete_unattached`].
    async fn detach_and_delete(&self, eni: &NodeEni) -> Result<(), Ec2Error>;

    /// Sets DeleteOnTermination on the attached secondary ENIs tagged with this instance that
    /// lack it (their first attempt failed); how many were fixed.
    async fn repair_delete_on_termination(&self) -> usize;

    /// Deletes leaked ENIs, unattached and tagged as wasmcni's in the node's VPC: with
    /// `own_only` (or when the cluster has no name, so other clusters' cannot be told apart)
    /// this instance's, otherwise any instance's of the cluster; only those created at least
    /// `min_age` ago (one without a creation tag only when `min_age` is zero). How many were
    /// deleted; a failed delete is logged and left for the next run.
    async fn delete_unattached(&self, own_only: bool, min_age: Duration)
        -> Result<usize, Ec2Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_is_the_subnets_first_host() {
        assert_eq!(
            subnet_gateway("10.0.16.0/20".parse().unwrap()),
            Ipv4Addr::new(10, 0, 16, 1)
        );
    }
}
