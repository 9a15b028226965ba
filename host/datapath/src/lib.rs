//! The pod data path, AWS VPC CNI compatible: what ADD builds, CHECK verifies and DEL removes.
//!
//! Pod side: `eth0` (or the requested name) with the pod address as a /32, a link route to
//! 169.254.1.1 and a default route through it, and a permanent neighbour entry for
//! 169.254.1.1 pointing at the host veth's MAC (so the pod never ARPs for its gateway). Host
//! side: a veth named prefix + 11 hex of sha1("namespace.name"), a /32 route to the pod through
//! it, the rule `to <pod> lookup main` at priority 512 and, for addresses owned by a secondary
//! ENI, `from <pod> lookup <table>` at priority 1536.
//!
//! That is the first interface's shape. Any other ([`PodRoutes`]: no default route, listed
//! destinations, a pod-side table) routes through the same gateway with `onlink` next hops and
//! no link route of the gateway, so two interfaces never compete for `169.254.1.1/32`; its
//! table gets the pod rule `from <pod> lookup <table>` at
//! [`wasmcni_core::routes::POD_TABLE_RULE_PRIORITY`].
//!
//! An IPv6 pod (IPv6 prefix mode, or a static IPv6 pool) gets the same shape in its family: its /128 on `eth0`
//! (no duplicate address detection: the address is unique by construction), a default route
//! via `fe80::1` with a permanent neighbour entry for it, and on the host a /128 route through
//! the veth plus `to <pod> lookup main` at priority 512. The host also gets a permanent
//! neighbour entry for the pod, so neither side depends on neighbour discovery. With IPv4
//! egress it also gets the IPv4 shape for a node-local /32 (169.254.172.0/22 by default), and
//! the node translates that range to its own IPv4 address on the way out. A dual-stack pod
//! gets both shapes on its one interface: the IPv4 one for its IPv4 address and the IPv6 one
//! for its /128, each with its own host route and `to` rule.
//!
//! Everything the kernel does goes through the [`Datapath`] trait: [`netlink::NetlinkDatapath`]
//! is the real one (rtnetlink, tested as root in throwaway namespaces) and [`fake::FakeDatapath`]
//! records calls so the daemon's logic is unit-tested without root.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use wasmcni_core::{DefaultRoute, PodRoutes};

pub mod fake;
pub mod netlink;
pub mod netns;
pub mod snat;

/// The pod's gateway: a link-local address answered by the permanent neighbour entry.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// An IPv6 pod's gateway (VPC CNI's): link-local, answered by the permanent neighbour entry.
pub const POD_GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// The gateway of a pod whose address is `ip`.
pub fn pod_gateway(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(POD_GATEWAY),
        IpAddr::V6(_) => IpAddr::V6(POD_GATEWAY_V6),
    }
}

/// The host-route prefix length of a pod address: /32 or /128.
pub fn host_prefix_len(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}
/// Priority of the host rule `to <pod> lookup main` (VPC CNI's `ToContainer`).
pub const TO_POD_RULE_PRIORITY: u32 = 512;
/// Priority of the host rule `from <pod> lookup <eni table>` (VPC CNI's `FromPod`).
pub const FROM_POD_RULE_PRIORITY: u32 = 1536;
/// The kernel's main routing table.
pub const MAIN_TABLE: u32 = 254;
/// Routing protocol number on wasmcni's rules and host routes (`ip rule show protocol 87`), so
/// they are told apart from other software's rules at the same priorities.
pub const RULE_PROTOCOL: u8 = 87;
/// Interface alias of every host veth wasmcni creates (`ip link show` prints it).
pub const VETH_ALIAS: &str = "wasmcni";
/// Link group a host veth joins when a DEL cuts it off routing ("wcni" in ASCII;
/// `ip link show group 0x77636e69` lists the veths waiting for deletion). The veths of a burst
/// of DELs then go in one group deletion: one `RTM_DELLINK`, one teardown and RCU wait in the
/// kernel for all of them, where deleting them one by one takes the kernel's RTNL lock once
/// per veth and stalls every other pod's netlink work behind each deletion.
pub const DETACHED_GROUP: u32 = 0x7763_6e69;

/// Name of the host-side veth for a pod, as AWS VPC CNI derives it: `prefix` followed by the
/// first 11 hex digits of sha1("namespace.name"). Outside Kubernetes (no pod name in
/// `CNI_ARGS`, e.g. `ctr run --cni`) "container:<id>" stands in for the pod. An interface other
/// than `eth0` appends `/<ifname>` so a multi-homed pod gets one veth per interface.
pub fn host_veth_name(
    prefix: &str,
    pod: Option<(&str, &str)>,
    container_id: &str,
    ifname: &str,
) -> String {
    // Kubernetes names and container ids may contain dots but never '/' or ':', so these
    // separators keep the identities of different attachments apart.
    let mut identity = match pod {
        Some((namespace, name)) => format!("{namespace}.{name}"),
        None => format!("container:{container_id}"),
    };
    if ifname != "eth0" {
        identity.push('/');
        identity.push_str(ifname);
    }
    let digest = sha1_smol::Sha1::from(identity.as_bytes())
        .digest()
        .to_string();
    format!("{prefix}{}", &digest[..11])
}

/// The host side of one attachment: enough to undo it without the pod's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSide {
    /// Host veth name.
    pub host_veth: String,
    /// The pod's address (a dual-stack pod's IPv4 one).
    pub ip: IpAddr,
    /// A dual-stack pod's IPv6 address: the IPv6 shape beside `ip`'s IPv4 one, on the same
    /// interface, with its own host route, neighbour entry and `to` rule (traffic from it
    /// uses the main table: no from-pod rule).
    pub ipv6: Option<Ipv6Addr>,
    /// Routing table for traffic from the pod's IPv4 address (`None` = main, no from-pod
    /// rule).
    pub route_table: Option<u32>,
    /// The rule `from <ip> lookup <table>` an interface with a `routeTable` has inside the pod:
    /// removed with the attachment when the pod's namespace still exists (a pod losing one of
    /// several interfaces keeps no rule into an emptied table).
    pub pod_rule: Option<PodRule>,
}

impl HostSide {
    /// The pod's addresses: `ip`, then a dual-stack pod's IPv6 address.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        std::iter::once(self.ip).chain(self.ipv6.map(IpAddr::V6))
    }

    /// Whether the pod has an IPv6 address (IPv6 only, or dual stack).
    pub fn has_ipv6(&self) -> bool {
        self.ip.is_ipv6() || self.ipv6.is_some()
    }

    /// The from-pod table of `ip`, one of the pod's addresses: IPv6 addresses use the main
    /// table (an IPv6 prefix is on the primary ENI).
    pub fn table_of(&self, ip: IpAddr) -> Option<u32> {
        self.route_table.filter(|_| ip == self.ip)
    }
}

/// A pod-side rule of an attachment: its namespace and table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRule {
    /// Path of the pod's network namespace.
    pub netns: String,
    /// The interface's routing table in the pod.
    pub table: u32,
}

/// Everything ADD builds for one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAttachment {
    /// The host side.
    pub host: HostSide,
    /// Path of the pod's network namespace (`CNI_NETNS`).
    pub netns: String,
    /// Interface name inside the pod (`CNI_IFNAME`).
    pub pod_ifname: String,
    /// MTU of both veth ends.
    pub mtu: u32,
    /// The pod interface's MAC when the runtime asked for one (validated unicast); random
    /// otherwise.
    pub pod_mac: Option<[u8; 6]>,
    /// What the interface routes inside the pod; an undecided default route is decided by
    /// [`Datapath::setup_pod`] (and reported in [`Created::routes`]).
    pub routes: PodRoutes,
    /// An IPv6 pod's node-local IPv4 address for egress: a /32 on the same interface, with
    /// the IPv4 shape of a first interface (link route to 169.254.1.1, default route via it, a
    /// permanent neighbour entry for it) and a host route to it through the veth. The node
    /// translates it on the way out ([`Datapath::apply_egress_snat`]).
    pub egress_v4: Option<Ipv4Addr>,
}

/// A secondary ENI's link on the node and its routing table (VPC CNI's `setupENINetwork`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EniLink {
    /// The ENI's MAC: how its link is found (the kernel names it).
    pub mac: [u8; 6],
    /// The ENI's own primary address, put on the link as a /32 (no connected route in main
    /// that would compete with the primary ENI's).
    pub address: Ipv4Addr,
    /// Routing table for traffic from its pods (device number + 1).
    pub table: u32,
    /// The subnet's gateway (EC2's VPC router).
    pub gateway: Ipv4Addr,
    /// Link MTU.
    pub mtu: u32,
    /// How long to wait for the link to appear after the attach.
    pub wait: std::time::Duration,
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// A link the node's default route leaves by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// Its name.
    pub name: String,
    /// Its MTU, when the kernel said.
    pub mtu: Option<u32>,
}

/// What ADD created, for the CNI result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// MAC of the host veth (the pod's gateway MAC).
    pub host_mac: [u8; 6],
    /// MAC of the pod interface.
    pub pod_mac: [u8; 6],
    /// The routes installed in the pod, the default route decided.
    pub routes: PodRoutes,
}

/// The wasmcni-owned state found on the node, for recovery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    /// Veths whose name starts with the configured prefix.
    pub veths: Vec<String>,
    /// Destinations of `to <ip>/32` (or `/128`) `lookup main` rules at priority 512.
    pub to_pod_rules: Vec<IpAddr>,
    /// Sources and tables of `from <ip>/32 lookup <table>` rules at priority 1536.
    pub from_pod_rules: Vec<(Ipv4Addr, u32)>,
    /// Addresses with a /32 (or /128) host route through a veth that is not wasmcni's: pods of another
    /// CNI (AWS VPC CNI's, during a migration). Their addresses are never handed out or
    /// given back while the route exists.
    pub foreign_pod_routes: Vec<IpAddr>,
    /// Addresses with a /32 (or /128) host route in the main table through one of wasmcni's
    /// veths, with that veth: which addresses the kernel says wasmcni's pods hold, whatever
    /// the datastore says. A DELeted pod's veth has none (it is down).
    pub pod_routes: Vec<(IpAddr, String)>,
}

/// A data path failure. Each variant keeps its cause as its [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The pod's network namespace could not be opened or entered.
    #[error("cannot use network namespace {path}: {step}: {source}")]
    Netns {
        /// The `CNI_NETNS` path.
        path: String,
        /// What was being done (`open`, `setns`, ...).
        step: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The interface to create already exists.
    #[error("interface {name} already exists in {place}; a second ADD without DEL?")]
    Exists {
        /// Interface name.
        name: String,
        /// "the pod namespace" or "the host namespace".
        place: String,
    },
    /// A netlink request failed.
    #[error("netlink: {operation}: {cause}")]
    Netlink {
        /// What was being done, with its arguments.
        operation: String,
        /// Why.
        #[source]
        cause: NetlinkCause,
    },
    /// CHECK found parts of the attachment missing or wrong.
    #[error("{}", .missing.join("; "))]
    CheckFailed {
        /// One entry per missing or wrong item, each naming it.
        missing: Vec<String>,
    },
    /// A file under /proc/sys could not be written.
    #[error("cannot write {path}: {source}")]
    Sysctl {
        /// The sysctl file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The SNAT or connmark rules could not be written.
    #[error("SNAT rules: {0}")]
    Snat(#[from] snat::SnatError),
    /// A blocking task of the data path ended abnormally (it panicked).
    #[error("{what}: the task ended abnormally: {source}")]
    Task {
        /// What it was doing.
        what: &'static str,
        /// The cause.
        source: tokio::task::JoinError,
    },
}

/// Why a netlink operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkCause {
    /// The kernel refused the request with this errno.
    #[error("{}", std::io::Error::from(*.0))]
    Kernel(nix::errno::Errno),
    /// The route socket or the protocol failed (rtnetlink's error, not the kernel's answer).
    #[error(transparent)]
    Protocol(rtnetlink::Error),
    /// A socket or a task of the daemon failed.
    #[error(transparent)]
    Io(std::io::Error),
    /// The kernel's state is not what the operation needs: a link that never appeared, a rule
    /// that stays after deletion, a request the pod's addresses make impossible.
    #[error("{0}")]
    Unexpected(String),
}

impl From<rtnetlink::Error> for NetlinkCause {
    fn from(e: rtnetlink::Error) -> Self {
        match e {
            rtnetlink::Error::NetlinkError(ref message) => {
                match NetlinkCause::kernel_errno(message) {
                    Some(errno) => NetlinkCause::Kernel(errno),
                    None => NetlinkCause::Protocol(e),
                }
            }
            other => NetlinkCause::Protocol(other),
        }
    }
}

impl NetlinkCause {
    /// The errno of a kernel's error answer (which carries it negated); `None` for an
    /// acknowledgement (code 0).
    pub(crate) fn kernel_errno(
        message: &rtnetlink::packet_core::ErrorMessage,
    ) -> Option<nix::errno::Errno> {
        message
            .code
            .map(|code| nix::errno::Errno::from_raw(-code.get()))
    }

    /// The kernel's errno, when the kernel refused.
    pub fn errno(&self) -> Option<nix::errno::Errno> {
        match self {
            NetlinkCause::Kernel(errno) => Some(*errno),
            _ => None,
        }
    }
}

/// The kernel side of the data path.
pub trait Datapath: Send + Sync + 'static {
    /// One-time node setup (IPv4 forwarding).
    fn prepare_node(&self) -> impl Future<Output = Result<(), DatapathError>> + Send;
    /// Node setup for IPv6 pods: IPv6 forwarding, and router advertisements still accepted on
    /// `primary_link` (`accept_ra=2`, as VPC CNI sets it) so the node keeps its default route.
    fn prepare_ipv6(
        &self,
        primary_link: Option<&str>,
    ) -> impl Future<Output = Result<(), DatapathError>> + Send;
    /// Builds the attachment. On error, parts may remain: the caller undoes them with
    /// [`Datapath::teardown_pod`] and frees the address only when that succeeded.
    fn setup_pod(
        &self,
        attachment: &PodAttachment,
    ) -> impl Future<Output = Result<Created, DatapathError>> + Send;
    /// Verifies every part ADD built, reporting all that is missing in one error.
    fn check_pod(
        &self,
        attachment: &PodAttachment,
    ) -> impl Future<Output = Result<(), DatapathError>> + Send;
    /// Applies a policy hook's adjustments (already checked against its grant) to the pod's
    /// interface, inside the pod's namespace only.
    fn adjust_pod(
        &self,
        attachment: &PodAttachment,
        adjustments: &[wasmcni_core::NetlinkRequest],
    ) -> impl Future<Output = Result<(), DatapathError>> + Send;
    /// Cuts an attachment off routing without waiting for the kernel to delete anything: the
    /// host veth goes down (the kernel drops the routes and neighbour entries through it, in
    /// both families, and the pod can send nothing more), then wasmcni's rules for the address
    /// and the pod-side rule go. Returns the host veth's interface index for
    /// [`Datapath::remove_link`], or `None` when the veth is gone already. Missing parts are
    /// not errors.
    fn detach_pod(
        &self,
        host: &HostSide,
    ) -> impl Future<Output = Result<Option<u32>, DatapathError>> + Send;
    /// Deletes the link with interface index `index` (a detached host veth, `name` in
    /// messages), which takes the pod end with it; waits for the kernel to finish (a veth
    /// deletion waits for an RCU grace period, ~20 ms). A link already gone is not an error;
    /// by index, so a new veth of the same name is never the one deleted.
    fn remove_link(
        &self,
        index: u32,
        name: &str,
    ) -> impl Future<Output = Result<(), DatapathError>> + Send;
    /// Deletes detached host veths `links` (interface index, name), as [`Datapath::remove_link`]
    /// does one, all at once where the kernel can; one result per link, in order.
    fn remove_links(
        &self,
        links: &[(u32, String)],
    ) -> impl Future<Output = Vec<Result<(), DatapathError>>> + Send;
    /// Removes the host side (which takes the pod side with it) and waits for the kernel to
    /// have deleted it. Missing parts are not errors.
    fn teardown_pod(
        &self,
        host: &HostSide,
    ) -> impl Future<Output = Result<(), DatapathError>> + Send;
    /// Whether a host veth of that name exists now.
    fn veth_exists(&self, name: &str) -> impl Future<Output = Result<bool, DatapathError>> + Send;
    /// Removes a host veth by name (and with it the pod end); a missing veth is not an error.
    fn remove_veth(&self, name: &str) -> impl Future<Output = Result<(), DatapathError>> + Send;
    /// Removes the wasmcni rules for `ip` (to-pod, and from-pod in `route_table` if any); rules
    /// not marked as wasmcni's are never touched, and missing ones are not errors.
    fn remove_rules(
        &self,
        ip: IpAddr,
        route_table: Option<u32>,
    ) -> impl Future<Output = Result<(), DatapathError>> + Send;
    /// Waits for an attached ENI's link (by MAC), brings it up with its address and MTU, and
    /// fills its routing table: the gateway on-link and the default route via it. Idempotent.
    /// Returns the link's name.
    fn setup_eni(
        &self,
        eni: &EniLink,
    ) -> impl Future<Output = Result<String, DatapathError>> + Send;
    /// The MTU of the node's uplink: the link of the main table's IPv4 default route of lowest
    /// metric (of a multipath route, the smallest of its next hops' links); `None` when the
    /// node has no default route through a link.
    fn uplink_mtu(&self) -> impl Future<Output = Result<Option<u32>, DatapathError>> + Send;
    /// The link of the main table's IPv6 default route of lowest metric (the first link of a
    /// multipath one), with its MTU: where a node learns its IPv6 default route from router
    /// advertisements, which [`Datapath::prepare_ipv6`] keeps accepted there, and the path
    /// IPv6 pods' traffic leaves by. `None` when the node has no IPv6 default route through a
    /// link.
    fn uplink_v6(&self) -> impl Future<Output = Result<Option<Uplink>, DatapathError>> + Send;
    /// The name of the link with `mac`, if there is one (the primary ENI's interface is `eth0`
    /// or `ens5` depending on the OS; its MAC says which).
    fn link_with_mac(
        &self,
        mac: [u8; 6],
    ) -> impl Future<Output = Result<Option<String>, DatapathError>> + Send;
    /// Empties an ENI's routing table (wasmcni's routes only). Missing routes are not errors.
    fn teardown_eni(&self, table: u32) -> impl Future<Output = Result<(), DatapathError>> + Send;
    /// Makes the node's SNAT and connmark rules those of `rules` (with
    /// [`snat::SnatRules::external_snat`]: removes them) in `backend`, or, with `None`, in the
    /// firewall the node's other rules use ([`snat::detect_backend`]). Returns the backend
    /// written to. Runs the firewall tools off the async threads.
    fn apply_snat(
        &self,
        rules: &snat::SnatRules,
        backend: Option<snat::Backend>,
    ) -> impl Future<Output = Result<snat::Backend, DatapathError>> + Send;
    /// Makes the node's rules of ours the IPv4 egress translation of IPv6 pods (traffic from
    /// the egress range to anywhere else leaves as the node's own IPv4 address), or with
    /// `None` nothing ([`snat::apply_egress`]), in `backend` or, with `None`, the firewall the
    /// node's other rules use. Returns the backend used.
    fn apply_egress_snat(
        &self,
        rules: Option<&snat::EgressRules>,
        backend: Option<snat::Backend>,
    ) -> impl Future<Output = Result<snat::Backend, DatapathError>> + Send;
    /// Adds `fwmark <mark>/<mark> lookup main` at priority 1024 (replies of connections that
    /// came in through the primary ENI, and SNATed traffic, leave through it); idempotent.
    fn ensure_connmark_rule(
        &self,
        mark: u32,
    ) -> impl Future<Output = Result<(), DatapathError>> + Send;
    /// What wasmcni-owned state exists on the node: only veths and rules carrying wasmcni's
    /// marks ([`VETH_ALIAS`], [`RULE_PROTOCOL`]), so another CNI's (AWS VPC CNI's own `eni*`
    /// veths and priority-512 rules, during a migration) are never mistaken for orphans.
    fn node_state(
        &self,
        veth_prefix: &str,
    ) -> impl Future<Output = Result<NodeState, DatapathError>> + Send;
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A random locally administered unicast MAC.
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    // getrandom only fails when the kernel has no entropy source at all; fall back to the clock
    // rather than refusing to create an interface.
    if getrandom::fill(&mut mac).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        mac.copy_from_slice(&nanos.to_le_bytes()[..6]);
    }
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_error_answer_becomes_its_errno() {
        let mut answer = rtnetlink::packet_core::ErrorMessage::default();
        answer.code = std::num::NonZeroI32::new(-17);
        let cause = NetlinkCause::from(rtnetlink::Error::NetlinkError(answer));
        assert_eq!(cause.errno(), Some(nix::errno::Errno::EEXIST));
        assert_eq!(cause.to_string(), "File exists (os error 17)");
        let other = NetlinkCause::from(rtnetlink::Error::RequestFailed);
        assert!(matches!(other, NetlinkCause::Protocol(_)) && other.errno().is_none());
    }

    #[test]
    fn veth_names_match_vpc_cni() {
        // VPC CNI: "eni" + the first 11 hex digits of sha1("default.nginx").
        assert_eq!(
            host_veth_name("eni", Some(("default", "nginx")), "cid", "eth0"),
            "enic440f455693"
        );
        let by_container = host_veth_name("wc", None, "abc123", "eth0");
        assert!(by_container.starts_with("wc") && by_container.len() == 13);
    }

    #[test]
    fn different_attachments_never_share_an_identity() {
        let names = [
            host_veth_name("eni", Some(("default", "web")), "c1", "net1"),
            host_veth_name("eni", Some(("default", "web.net1")), "c2", "eth0"),
            host_veth_name("eni", Some(("default", "web")), "c3", "eth0"),
            host_veth_name("eni", None, "default.web", "eth0"),
        ];
        let distinct: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
    }

    #[test]
    fn macs_parse_back() {
        assert_eq!(
            parse_mac("02:ab:00:01:02:ff"),
            Some([2, 0xab, 0, 1, 2, 0xff])
        );
        assert_eq!(parse_mac("02:ab:00:01:02"), None);
        assert_eq!(parse_mac("02:ab:00:01:02:ff:00"), None);
        assert_eq!(parse_mac("zz:ab:00:01:02:ff"), None);
    }

    #[test]
    fn random_macs_are_local_unicast() {
        for _ in 0..100 {
            let mac = random_mac();
            assert_eq!(mac[0] & 0x03, 0x02, "{}", format_mac(&mac));
        }
        assert_eq!(format_mac(&[2, 0xab, 0, 1, 2, 0xff]), "02:ab:00:01:02:ff");
    }
}
