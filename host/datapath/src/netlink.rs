//! The real data path: rtnetlink requests in the node's and the pod's network namespaces.
//!
//! The host handle is opened once in the daemon's namespace (the node's). A pod handle is
//! opened per request through [`super::netns::handle_in`], which has the calling thread back
//! in the node's namespace before any task runs on it again. The veth is created from the host
//! side with its peer placed straight into the pod namespace (`IFLA_NET_NS_FD`), which
//! registers the host end once and enters no namespace at all.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use futures_util::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, IpVersion, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use wasmcni_core::routes::POD_TABLE_RULE_PRIORITY;

use super::{
    format_mac, host_prefix_len, netns, pod_gateway, random_mac, Created, Datapath, DatapathError,
    DefaultRoute, EniLink, HostSide, NetlinkCause, NodeState, PodAttachment, PodRoutes, PodRule,
    Uplink, DETACHED_GROUP, FROM_POD_RULE_PRIORITY, MAIN_TABLE, POD_GATEWAY, RULE_PROTOCOL,
    TO_POD_RULE_PRIORITY, VETH_ALIAS,
};

mod check;
mod deletion;
mod messages;
#[cfg(test)]
mod test_namespaces;

use check::check_pod_side;
use deletion::{delete_link_blocking, detach_message};
use messages::*;

/// Priority of `fwmark <connmark> lookup main` (VPC CNI's 1024).
const CONNMARK_RULE_PRIORITY: u32 = super::snat::FWMARK_RULE_PRIORITY;
/// The smallest MTU IPv6 allows (RFC 8200).
const IPV6_MIN_MTU: u32 = 1280;
/// Duplicates of one rule a crash can leave; more means something else keeps adding it.
const MAX_DUPLICATE_RULES: usize = 64;

/// Whether `error` says a pod's namespace is not there (its path does not exist).
fn namespace_gone(error: &DatapathError) -> bool {
    matches!(error, DatapathError::Netns { step: "open", source, .. }
        if source.kind() == std::io::ErrorKind::NotFound)
}

/// The data path over rtnetlink.
#[derive(Clone)]
pub struct NetlinkDatapath {
    host: Handle,
}

impl NetlinkDatapath {
    /// Opens a netlink connection in the current (node) namespace. Call on a tokio runtime.
    pub fn connect() -> Result<NetlinkDatapath, DatapathError> {
        let (connection, host, _) = rtnetlink::new_connection()
            .map_err(|e| io_failure("open a route socket in the node namespace".into(), e))?;
        tokio::spawn(connection);
        Ok(NetlinkDatapath { host })
    }

    async fn build_pod(
        &self,
        a: &PodAttachment,
        pod: &Handle,
        host_mac: [u8; 6],
        pod_mac: [u8; 6],
    ) -> Result<PodRoutes, DatapathError> {
        let veth = &a.host.host_veth;
        let ip = a.host.ip;
        let pod_index = link_index(pod, &a.pod_ifname).await?.ok_or_else(|| {
            netlink_failure(
                format!("find {} in the pod namespace", a.pod_ifname),
                "not found",
            )
        })?;
        let host_index = link_index(&self.host, veth)
            .await?
            .ok_or_else(|| netlink_failure(format!("find host veth {veth}"), "not found"))?;

        // The peer cannot be created up: veth_open refuses (ENOTCONN) until the pair is linked.
        pod.link()
            .set(LinkUnspec::new_with_index(pod_index).up().build())
            .execute()
            .await
            .map_err(nl(format!("set {} up in the pod", a.pod_ifname)))?;
        // Undecided: each family's default route unless the pod has one of that family.
        let routes = match a.routes.default_route {
            DefaultRoute::UnlessPresent => {
                let present = has_default_route(pod, ip, a.routes.table).await?;
                match a.host.ipv6 {
                    Some(v6) => {
                        let present_v6 =
                            has_default_route(pod, IpAddr::V6(v6), a.routes.table).await?;
                        a.routes.resolved_dual(present, present_v6)
                    }
                    None => a.routes.resolved(present),
                }
            }
            _ => a.routes.clone(),
        };
        for ip in a.host.addresses() {
            let side = PodSide {
                ifname: &a.pod_ifname,
                index: pod_index,
                host_mac,
            };
            side.add(pod, ip, &routes.of_family(ip)).await?;
        }

        self.host
            .link()
            .set(
                LinkUnspec::new_with_index(host_index)
                    .up()
                    .alias(VETH_ALIAS.to_owned())
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!("set host veth {veth} up")))?;
        for ip in a.host.addresses() {
            self.add_host_route(ip, host_index, veth).await?;
            if ip.is_ipv6() {
                // The host reaches the pod without neighbour discovery, as the pod reaches it.
                add_permanent_neighbour(
                    &self.host,
                    host_index,
                    ip,
                    pod_mac,
                    &format!("dev {veth}"),
                )
                .await?;
            }
            add_rule(
                &self.host,
                rule_message(ip, true, MAIN_TABLE, TO_POD_RULE_PRIORITY),
                "",
            )
            .await?;
            if let Some(table) = a.host.table_of(ip) {
                add_rule(
                    &self.host,
                    rule_message(ip, false, table, FROM_POD_RULE_PRIORITY),
                    "",
                )
                .await?;
            }
        }
        if let Some(egress) = a.egress_v4 {
            // An IPv6 pod's IPv4 egress: a first interface's IPv4 shape inside the pod, and a
            // host route to it through the pod's veth (no rules: nothing routes to it from an
            // ENI's table).
            let side = PodSide {
                ifname: &a.pod_ifname,
                index: pod_index,
                host_mac,
            };
            side.add(pod, IpAddr::V4(egress), &PodRoutes::default())
                .await?;
            self.add_host_route(IpAddr::V4(egress), host_index, veth)
                .await?;
        }
        Ok(routes)
    }

    /// The host route to one of a pod's addresses through its veth.
    async fn add_host_route(
        &self,
        ip: IpAddr,
        host_index: u32,
        veth: &str,
    ) -> Result<(), DatapathError> {
        let len = host_prefix_len(ip);
        let host_route = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(ip, len)
            .map_err(|e| netlink_failure(format!("host route {ip}/{len}"), &e.to_string()))?
            .output_interface(host_index)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::Other(RULE_PROTOCOL))
            .build();
        self.host
            .route()
            .add(host_route)
            .execute()
            .await
            .map_err(nl(format!("add host route {ip}/{len} dev {veth}")))
    }

    /// Removes every rule of an attachment, for each of its addresses: inside the pod (best
    /// effort) and on the node.
    async fn remove_host_side_rules(&self, host: &HostSide) -> Result<(), DatapathError> {
        for ip in host.addresses() {
            if let Some(rule) = &host.pod_rule {
                self.remove_pod_rule(ip, rule).await;
            }
            self.remove_rules(ip, host.table_of(ip)).await?;
        }
        Ok(())
    }

    /// Removes an attachment's rule inside the pod, if the pod's namespace is still there.
    /// Best effort: the rule lives and dies with the pod's namespace, and names only the
    /// pod's own table, so a namespace that cannot be entered (gone, or a stale bind mount
    /// the runtime left) must not make DEL fail for ever; the failure is logged instead.
    async fn remove_pod_rule(&self, ip: IpAddr, rule: &PodRule) {
        let removed = async {
            let ns = netns::open(&rule.netns)?;
            let pod = netns::handle_in(&ns, &rule.netns).await?;
            delete_rule(
                &pod,
                rule_message(ip, false, rule.table, POD_TABLE_RULE_PRIORITY),
            )
            .await
        }
        .await;
        match removed {
            Ok(()) => {}
            // The pod is gone, and its rules with it.
            Err(DatapathError::Netns { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                %ip, netns = %rule.netns, table = rule.table, error = %e,
                "the pod-side rule was left in the pod's namespace (it goes with the namespace)"
            ),
        }
    }
}

async fn add_rule(handle: &Handle, message: RuleMessage, place: &str) -> Result<(), DatapathError> {
    let what = describe_rule(&message);
    let mut add = handle.rule().add();
    *add.message_mut() = message;
    let place = if place.is_empty() {
        String::new()
    } else {
        format!(" {place}")
    };
    add.execute()
        .await
        .map_err(nl(format!("add rule {what}{place}")))
}

async fn delete_rule(handle: &Handle, message: RuleMessage) -> Result<(), DatapathError> {
    // Stale duplicates are possible after a crash: remove until the kernel has none left.
    for _ in 0..MAX_DUPLICATE_RULES {
        match handle.rule().del(message.clone()).execute().await {
            Ok(()) => continue,
            Err(e) if matches!(errno(&e), Some(Errno::ENOENT | Errno::ESRCH)) => return Ok(()),
            Err(e) => return Err(nl(format!("delete rule {}", describe_rule(&message)))(e)),
        }
    }
    Err(netlink_failure(
        format!("delete rule {}", describe_rule(&message)),
        &format!("still present after {MAX_DUPLICATE_RULES} deletions"),
    ))
}

/// The pod's interface, for putting one of its addresses on it.
struct PodSide<'a> {
    ifname: &'a str,
    index: u32,
    /// The host veth's MAC: the gateway's neighbour entry.
    host_mac: [u8; 6],
}

impl PodSide<'_> {
    /// One address's shape inside the pod: the address, its family's routes through the
    /// gateway (`routes` decided, of the address's family), the rule into the interface's
    /// table if it has one, and the gateway's permanent neighbour entry.
    async fn add(&self, pod: &Handle, ip: IpAddr, routes: &PodRoutes) -> Result<(), DatapathError> {
        let ifname = self.ifname;
        let len = host_prefix_len(ip);
        let mut address = pod.address().add(self.index, ip, len);
        if ip.is_ipv6() {
            // Unique by construction (one pod per /128 of the node's prefix): usable at once,
            // with no duplicate address detection delaying the pod's first packet.
            let message = address.message_mut();
            message.header.flags = AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        address
            .execute()
            .await
            .map_err(nl(format!("add {ip}/{len} to {ifname} in the pod")))?;
        for route in pod_routes(ip, routes, self.index)? {
            let what = describe_route(&route);
            pod.route()
                .add(route)
                .execute()
                .await
                .map_err(nl(format!("add route {what} in the pod")))?;
        }
        if let Some(table) = routes.table {
            add_rule(
                pod,
                rule_message(ip, false, table, POD_TABLE_RULE_PRIORITY),
                "in the pod",
            )
            .await?;
        }
        add_permanent_neighbour(
            pod,
            self.index,
            pod_gateway(ip),
            self.host_mac,
            "in the pod",
        )
        .await
    }
}

/// The routes of an interface through the pod's gateway. The first interface's shape (a
/// default route in the main table) keeps VPC CNI's link route to 169.254.1.1; every other
/// shape names the gateway `onlink` instead, so a second interface never adds a competing
/// route to it.
fn pod_routes(
    ip: IpAddr,
    routes: &PodRoutes,
    index: u32,
) -> Result<Vec<RouteMessage>, DatapathError> {
    let gateway = pod_gateway(ip);
    let table = routes.table.unwrap_or(MAIN_TABLE);
    let classic = routes.table.is_none() && routes.has_default();
    let mut messages = Vec::new();
    if classic && ip.is_ipv4() {
        messages.push(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(POD_GATEWAY, 32)
                .output_interface(index)
                .scope(RouteScope::Link)
                .build(),
        );
    }
    let unspecified = match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let defaults = routes.has_default().then_some((unspecified, 0));
    let listed = routes
        .destinations
        .iter()
        .map(|d| (d.network(), d.prefix_len()));
    for (dst, len) in defaults.into_iter().chain(listed) {
        if dst.is_ipv4() != ip.is_ipv4() {
            return Err(netlink_failure(
                format!("add route {dst}/{len} via {gateway} in the pod"),
                &format!("the destination is not of the pod address's ({ip}) family"),
            ));
        }
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst, len)
            .and_then(|b| b.gateway(gateway))
            .map_err(|e| {
                netlink_failure(
                    format!("route {dst}/{len} via {gateway}"),
                    &format!("{e:?}"),
                )
            })?
            .output_interface(index)
            .table_id(table);
        // A link-local IPv6 gateway needs no route of its own: the interface is named.
        if !classic && ip.is_ipv4() {
            builder = builder.onlink();
        }
        messages.push(builder.build());
    }
    Ok(messages)
}

/// Whether the pod has a default route of `ip`'s family in `table` (main when `None`).
async fn has_default_route(
    pod: &Handle,
    ip: IpAddr,
    table: Option<u32>,
) -> Result<bool, DatapathError> {
    let table = table.unwrap_or(MAIN_TABLE);
    Ok(routes_of(pod, ip).await?.iter().any(|r| {
        r.header.destination_prefix_length == 0
            && route_table(r) == table
            && r.header.kind == RouteType::Unicast
    }))
}

impl Datapath for NetlinkDatapath {
    async fn prepare_node(&self) -> Result<(), DatapathError> {
        let path = "/proc/sys/net/ipv4/ip_forward";
        std::fs::write(path, b"1").map_err(|source| DatapathError::Sysctl {
            path: path.into(),
            source,
        })
    }

    async fn prepare_ipv6(&self, primary_link: Option<&str>) -> Result<(), DatapathError> {
        // accept_ra=2 before forwarding=1: switching forwarding on drops the routes learned
        // from router advertisements on every interface that does not accept them anyway.
        let mut settings: Vec<(String, &str)> = Vec::new();
        settings.extend(
            primary_link.map(|link| (format!("/proc/sys/net/ipv6/conf/{link}/accept_ra"), "2")),
        );
        settings.extend([
            // IPv6 on (a node that boots with it off per interface, and the pods' namespaces,
            // which take `default`), then forwarding.
            ("/proc/sys/net/ipv6/conf/all/disable_ipv6".to_owned(), "0"),
            (
                "/proc/sys/net/ipv6/conf/default/disable_ipv6".to_owned(),
                "0",
            ),
            ("/proc/sys/net/ipv6/conf/all/forwarding".to_owned(), "1"),
        ]);
        for (path, value) in &settings {
            std::fs::write(path, value).map_err(|source| DatapathError::Sysctl {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    async fn setup_pod(&self, a: &PodAttachment) -> Result<Created, DatapathError> {
        let ns = netns::open(&a.netns)?;
        let pod = if a.host.has_ipv6() {
            netns::handle_in_with_ipv6(&ns, &a.netns).await?
        } else {
            netns::handle_in(&ns, &a.netns).await?
        };
        let veth = &a.host.host_veth;
        // VPC CNI removes a stale host veth of the same name (a pod recreated under the same
        // name); the daemon has already released any allocation that owned it.
        if link_index(&self.host, veth).await?.is_some() {
            self.remove_veth(veth).await?;
        }
        let host_mac = random_mac();
        let pod_mac = a.pod_mac.unwrap_or_else(random_mac);
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(a.pod_ifname.clone())
            .address(pod_mac.to_vec())
            .mtu(a.mtu)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let veth_pair = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(veth.clone())
            .address(host_mac.to_vec())
            .mtu(a.mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        match self.host.link().add(veth_pair).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(Errno::EEXIST) => {
                return Err(DatapathError::Exists {
                    name: a.pod_ifname.clone(),
                    place: format!("the pod namespace {}", a.netns),
                })
            }
            Err(e) => {
                return Err(nl(format!(
                    "create veth {veth} <-> {} in {}",
                    a.pod_ifname, a.netns
                ))(e))
            }
        }
        let routes = self.build_pod(a, &pod, host_mac, pod_mac).await?;
        Ok(Created {
            host_mac,
            pod_mac,
            routes,
        })
    }

    async fn adjust_pod(
        &self,
        a: &PodAttachment,
        adjustments: &[wasmcni_core::NetlinkRequest],
    ) -> Result<(), DatapathError> {
        use wasmcni_core::NetlinkRequest;
        let ns = netns::open(&a.netns)?;
        let pod = netns::handle_in(&ns, &a.netns).await?;
        let index = link_index(&pod, &a.pod_ifname).await?.ok_or_else(|| {
            netlink_failure(
                format!("find {} in the pod namespace {}", a.pod_ifname, a.netns),
                "not found",
            )
        })?;
        for adjustment in adjustments {
            match *adjustment {
                NetlinkRequest::SetMtu { mtu } if a.host.has_ipv6() && mtu < IPV6_MIN_MTU => {
                    return Err(netlink_failure(
                        format!("set the MTU of {} to {mtu} in the pod", a.pod_ifname),
                        &format!("below {IPV6_MIN_MTU}, the kernel turns IPv6 off on the interface and the pod loses its address"),
                    ))
                }
                NetlinkRequest::SetMtu { mtu } => pod
                    .link()
                    .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
                    .execute()
                    .await
                    .map_err(nl(format!(
                        "set the MTU of {} to {mtu} in the pod",
                        a.pod_ifname
                    )))?,
                NetlinkRequest::AddRoute { destination } if a.host.ip.is_ipv6() => {
                    return Err(netlink_failure(
                        format!("add route {destination} via {POD_GATEWAY} in the pod"),
                        "the pod has only an IPv6 address, so no IPv4 gateway",
                    ))
                }
                NetlinkRequest::AddRoute { destination } => pod
                    .route()
                    .add({
                        // In the interface's table; without the first interface's link route
                        // to the gateway, the gateway is on-link.
                        let builder = RouteMessageBuilder::<Ipv4Addr>::new()
                            .destination_prefix(destination.network(), destination.prefix_len())
                            .gateway(POD_GATEWAY)
                            .output_interface(index)
                            .table_id(a.routes.table.unwrap_or(MAIN_TABLE));
                        if a.routes.table.is_none() && a.routes.has_default() {
                            builder.build()
                        } else {
                            builder.onlink().build()
                        }
                    })
                    .execute()
                    .await
                    .map_err(nl(format!(
                        "add route {destination} via {POD_GATEWAY} in the pod"
                    )))?,
            }
        }
        Ok(())
    }

    async fn check_pod(&self, a: &PodAttachment) -> Result<(), DatapathError> {
        let mut missing = Vec::new();
        let veth = &a.host.host_veth;
        let host_link = link_by_name(&self.host, veth).await?;
        let host_mac = host_link.as_ref().and_then(link_mac);
        match &host_link {
            None => missing.push(format!("host veth {veth} is missing")),
            Some(link) => {
                let routed = a.host.addresses().chain(a.egress_v4.map(IpAddr::V4));
                for ip in routed {
                    let len = host_prefix_len(ip);
                    let routes = routes_of(&self.host, ip).await?;
                    if !routes.iter().any(|r| {
                        route_dst_ip(r) == Some((ip, len))
                            && route_oif(r) == Some(link.header.index)
                    }) {
                        missing.push(format!("host route {ip}/{len} dev {veth} is missing"));
                    }
                }
            }
        }
        for ip in a.host.addresses() {
            let rules = match ip {
                IpAddr::V4(_) => rules_v4(&self.host).await?,
                IpAddr::V6(_) => rules_v6(&self.host).await?,
            };
            if !rules.iter().any(|r| {
                rule_priority(r) == Some(TO_POD_RULE_PRIORITY)
                    && rule_dst(r) == Some(ip)
                    && rule_table(r) == MAIN_TABLE
            }) {
                missing.push(format!(
                    "rule to {ip} lookup main priority {TO_POD_RULE_PRIORITY} is missing"
                ));
            }
            if let Some(table) = a.host.table_of(ip) {
                if !rules.iter().any(|r| {
                    rule_priority(r) == Some(FROM_POD_RULE_PRIORITY)
                        && rule_src(r) == Some(ip)
                        && rule_table(r) == table
                }) {
                    missing.push(format!(
                        "rule from {ip} lookup {table} priority {FROM_POD_RULE_PRIORITY} is missing"
                    ));
                }
            }
        }
        let pod = match netns::open(&a.netns) {
            Ok(ns) => netns::handle_in(&ns, &a.netns).await,
            Err(e) => Err(e),
        };
        match pod {
            // The namespace is gone, so is the pod side; and with part of the host side missing
            // the attachment is incomplete whatever the namespace says. Otherwise a failure to
            // enter it (out of descriptors, a mount the daemon cannot see) says nothing about
            // the pod: an error, never "missing" (recovery would undo a live pod on it).
            Err(e) if missing.is_empty() && !namespace_gone(&e) => return Err(e),
            Err(e) => missing.push(e.to_string()),
            Ok(pod) => {
                // Each address with its family's routes; an egress /32 has a first
                // interface's IPv4 shape.
                let shapes = a
                    .host
                    .addresses()
                    .map(|ip| (ip, a.routes.of_family(ip)))
                    .chain(
                        a.egress_v4
                            .map(|egress| (IpAddr::V4(egress), PodRoutes::default())),
                    );
                for (ip, routes) in shapes {
                    let interface_missing = format!("{} is missing", a.pod_ifname);
                    // (A missing interface is reported once, not again for each address.)
                    if missing.iter().any(|m| m.starts_with(&interface_missing)) {
                        break;
                    }
                    let side = PodAttachment {
                        host: HostSide {
                            ip,
                            ipv6: None,
                            route_table: None,
                            pod_rule: None,
                            ..a.host.clone()
                        },
                        routes,
                        egress_v4: None,
                        ..a.clone()
                    };
                    check_pod_side(&pod, &side, host_mac, &mut missing).await?;
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(DatapathError::CheckFailed { missing })
        }
    }

    async fn teardown_pod(&self, host: &HostSide) -> Result<(), DatapathError> {
        self.remove_host_side_rules(host).await?;
        self.remove_veth(&host.host_veth).await
    }

    async fn detach_pod(&self, host: &HostSide) -> Result<Option<u32>, DatapathError> {
        let veth = &host.host_veth;
        // Down first: from this request on, nothing reaches the pod and the pod reaches nothing.
        let index = match link_index(&self.host, veth).await? {
            None => None,
            Some(index) => match self.host.link().set(detach_message(index)).execute().await {
                Ok(()) => Some(index),
                Err(e) if matches!(errno(&e), Some(Errno::ENODEV | Errno::ENOENT)) => None,
                Err(e) => return Err(nl(format!("set host veth {veth} down"))(e)),
            },
        };
        self.remove_host_side_rules(host).await?;
        Ok(index)
    }

    async fn remove_link(&self, index: u32, name: &str) -> Result<(), DatapathError> {
        // Off the runtime's workers, for the reason `remove_veth` gives.
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            delete_link_blocking(LinkUnspec::new_with_index(index).build(), &name)
        })
        .await
        .map_err(|source| DatapathError::Task {
            what: "delete host veth",
            source,
        })?
    }

    async fn remove_links(&self, links: &[(u32, String)]) -> Vec<Result<(), DatapathError>> {
        self.remove_detached(links).await
    }

    async fn veth_exists(&self, name: &str) -> Result<bool, DatapathError> {
        Ok(link_by_name(&self.host, name).await?.is_some())
    }

    async fn remove_veth(&self, name: &str) -> Result<(), DatapathError> {
        // The kernel runs an RTM_DELLINK inside the sender's sendmsg(), and a veth deletion
        // waits there for RCU (~20 ms). Sent from a runtime worker, two such waits would block
        // both workers and queue every other DEL behind them; from a blocking-pool thread with
        // a socket of its own, concurrent DELs overlap their waits.
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            delete_link_blocking(LinkUnspec::new_with_name(&name).build(), &name)
        })
        .await
        .map_err(|source| DatapathError::Task {
            what: "delete host veth",
            source,
        })?
    }

    async fn remove_rules(
        &self,
        ip: IpAddr,
        route_table: Option<u32>,
    ) -> Result<(), DatapathError> {
        delete_rule(
            &self.host,
            rule_message(ip, true, MAIN_TABLE, TO_POD_RULE_PRIORITY),
        )
        .await?;
        if let Some(table) = route_table {
            delete_rule(
                &self.host,
                rule_message(ip, false, table, FROM_POD_RULE_PRIORITY),
            )
            .await?;
        }
        Ok(())
    }

    async fn setup_eni(&self, eni: &EniLink) -> Result<String, DatapathError> {
        let mac = format_mac(&eni.mac);
        let deadline = tokio::time::Instant::now() + eni.wait;
        let link = loop {
            let links = all_links(&self.host).await?;
            if let Some(link) = link_of_mac(links, eni.mac) {
                break link;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(netlink_failure(
                    format!("find the link of ENI MAC {mac}"),
                    &format!(
                        "no link with that MAC appeared within {} ms of the attach",
                        eni.wait.as_millis()
                    ),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        let index = link.header.index;
        let name = link_name(&link).unwrap_or_else(|| format!("ifindex {index}"));
        self.host
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(eni.mtu).up().build())
            .execute()
            .await
            .map_err(nl(format!(
                "set {name} (ENI {mac}) up with mtu {}",
                eni.mtu
            )))?;
        match self
            .host
            .address()
            .add(index, IpAddr::V4(eni.address), 32)
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(Errno::EEXIST) => {}
            Err(e) => return Err(nl(format!("add {}/32 to {name}", eni.address))(e)),
        }
        let on_link = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(eni.gateway, 32)
            .output_interface(index)
            .scope(RouteScope::Link)
            .table_id(eni.table)
            .protocol(RouteProtocol::Other(RULE_PROTOCOL))
            .build();
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(eni.gateway)
            .output_interface(index)
            .table_id(eni.table)
            .protocol(RouteProtocol::Other(RULE_PROTOCOL))
            .build();
        for (route, what) in [
            (
                on_link,
                format!(
                    "add route {}/32 dev {name} table {}",
                    eni.gateway, eni.table
                ),
            ),
            (
                default,
                format!(
                    "add default route via {} dev {name} table {}",
                    eni.gateway, eni.table
                ),
            ),
        ] {
            self.host
                .route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(nl(what))?;
        }
        Ok(name)
    }

    async fn uplink_mtu(&self) -> Result<Option<u32>, DatapathError> {
        let uplink = routes_v4(&self.host)
            .await?
            .into_iter()
            .filter(|r| route_table(r) == MAIN_TABLE && r.header.destination_prefix_length == 0)
            .map(|r| (route_metric(&r), route_links(&r)))
            .filter(|(_, links)| !links.is_empty())
            .min();
        let Some((_, indexes)) = uplink else {
            return Ok(None);
        };
        // Through several links, the smallest MTU fits every path; a link gone since the
        // route dump is no path.
        let mut mtus = Vec::new();
        for index in indexes {
            mtus.extend(
                link_by_index(&self.host, index)
                    .await?
                    .as_ref()
                    .and_then(link_mtu),
            );
        }
        Ok(mtus.into_iter().min())
    }

    async fn uplink_v6(&self) -> Result<Option<Uplink>, DatapathError> {
        let uplink = routes_v6(&self.host)
            .await?
            .into_iter()
            .filter(|r| route_table(r) == MAIN_TABLE && r.header.destination_prefix_length == 0)
            .filter_map(|r| Some((route_metric(&r), *route_links(&r).first()?)))
            .min();
        let Some((_, index)) = uplink else {
            return Ok(None);
        };
        Ok(link_by_index(&self.host, index)
            .await?
            .as_ref()
            .and_then(|link| {
                Some(Uplink {
                    name: link_name(link)?,
                    mtu: link_mtu(link),
                })
            }))
    }

    async fn link_with_mac(&self, mac: [u8; 6]) -> Result<Option<String>, DatapathError> {
        let links = all_links(&self.host).await?;
        Ok(link_of_mac(links, mac).as_ref().and_then(link_name))
    }

    async fn teardown_eni(&self, table: u32) -> Result<(), DatapathError> {
        for route in routes_v4(&self.host).await? {
            if route_table(&route) != table
                || route.header.protocol != RouteProtocol::Other(RULE_PROTOCOL)
            {
                continue;
            }
            match self.host.route().del(route).execute().await {
                Ok(()) => {}
                Err(e) if matches!(errno(&e), Some(Errno::ENOENT | Errno::ESRCH)) => {}
                Err(e) => return Err(nl(format!("delete a route of table {table}"))(e)),
            }
        }
        Ok(())
    }

    async fn ensure_connmark_rule(&self, mark: u32) -> Result<(), DatapathError> {
        let present = rules_v4(&self.host).await?.iter().any(|r| {
            is_marked(r)
                && rule_priority(r) == Some(CONNMARK_RULE_PRIORITY)
                && r.attributes.contains(&RuleAttribute::FwMark(mark))
        });
        if present {
            return Ok(());
        }
        let mut rule = self
            .host
            .rule()
            .add()
            .v4()
            .table_id(MAIN_TABLE)
            .priority(CONNMARK_RULE_PRIORITY)
            .action(RuleAction::ToTable);
        rule.message_mut()
            .attributes
            .extend([RuleAttribute::FwMark(mark), RuleAttribute::FwMask(mark)]);
        mark_rule(rule.message_mut());
        rule.execute().await.map_err(nl(format!(
            "add rule fwmark {mark:#x}/{mark:#x} lookup main prio {CONNMARK_RULE_PRIORITY}"
        )))
    }

    async fn apply_snat(
        &self,
        rules: &crate::snat::SnatRules,
        backend: Option<crate::snat::Backend>,
    ) -> Result<crate::snat::Backend, DatapathError> {
        use crate::snat;
        let rules = rules.clone();
        tokio::task::spawn_blocking(move || {
            let backend = match backend {
                Some(backend) => backend,
                None => snat::detect_backend()?,
            };
            snat::apply(&rules, backend).map(|()| backend)
        })
        .await
        .map_err(|source| DatapathError::Task {
            what: "apply the SNAT rules",
            source,
        })?
        .map_err(DatapathError::from)
    }

    async fn apply_egress_snat(
        &self,
        rules: Option<&crate::snat::EgressRules>,
        backend: Option<crate::snat::Backend>,
    ) -> Result<crate::snat::Backend, DatapathError> {
        use crate::snat;
        let rules = rules.cloned();
        tokio::task::spawn_blocking(move || {
            let backend = match backend {
                Some(backend) => backend,
                None => snat::detect_backend()?,
            };
            snat::apply_egress(rules.as_ref(), backend).map(|()| backend)
        })
        .await
        .map_err(|source| DatapathError::Task {
            what: "apply the IPv4 egress rule",
            source,
        })?
        .map_err(DatapathError::from)
    }

    async fn node_state(&self, veth_prefix: &str) -> Result<NodeState, DatapathError> {
        let links = all_links(&self.host).await?;
        let ours: Vec<(u32, String)> = links
            .iter()
            .filter(|l| is_veth(l) && link_alias(l) == Some(VETH_ALIAS))
            .filter_map(|l| Some((l.header.index, link_name(l)?)))
            .filter(|(_, name)| name.starts_with(veth_prefix))
            .collect();
        let veths = ours.iter().map(|(_, name)| name.clone()).collect();
        let foreign_veths: Vec<u32> = links
            .iter()
            .filter(|l| is_veth(l) && link_alias(l) != Some(VETH_ALIAS))
            .map(|l| l.header.index)
            .collect();
        let mut routes = routes_v4(&self.host).await?;
        routes.extend(routes_v6(&self.host).await?);
        let foreign_pod_routes = routes
            .iter()
            .filter(|r| route_table(r) == MAIN_TABLE)
            .filter(|r| route_oif(r).is_some_and(|oif| foreign_veths.contains(&oif)))
            .filter_map(route_dst_ip)
            .filter(|(ip, len)| *len == host_prefix_len(*ip))
            .map(|(ip, _)| ip)
            .collect();
        let pod_routes = routes
            .iter()
            .filter(|r| route_table(r) == MAIN_TABLE)
            .filter_map(|r| {
                let oif = route_oif(r)?;
                let (_, veth) = ours.iter().find(|(index, _)| *index == oif)?;
                let (ip, len) = route_dst_ip(r)?;
                (len == host_prefix_len(ip)).then(|| (ip, veth.clone()))
            })
            .collect();
        let mut state = NodeState {
            veths,
            foreign_pod_routes,
            pod_routes,
            ..NodeState::default()
        };
        let mut rules = rules_v4(&self.host).await?;
        rules.extend(rules_v6(&self.host).await?);
        for rule in rules {
            if !is_marked(&rule) {
                continue;
            }
            match (rule_priority(&rule), rule_dst(&rule), rule_src(&rule)) {
                (Some(TO_POD_RULE_PRIORITY), Some(ip), _)
                    if rule.header.dst_len == host_prefix_len(ip) =>
                {
                    state.to_pod_rules.push(ip);
                }
                (Some(FROM_POD_RULE_PRIORITY), _, Some(IpAddr::V4(ip)))
                    if rule.header.src_len == 32 =>
                {
                    state.from_pod_rules.push((ip, rule_table(&rule)));
                }
                _ => {}
            }
        }
        Ok(state)
    }
}

/// A permanent neighbour entry `ip` → `mac` on link `index` (`place` names it in errors).
async fn add_permanent_neighbour(
    handle: &Handle,
    index: u32,
    ip: IpAddr,
    mac: [u8; 6],
    place: &str,
) -> Result<(), DatapathError> {
    handle
        .neighbours()
        .add(index, ip)
        .link_layer_address(&mac)
        .state(NeighbourState::Permanent)
        .execute()
        .await
        .map_err(nl(format!(
            "add permanent neighbour {ip} lladdr {} {place}",
            format_mac(&mac)
        )))
}

#[cfg(test)]
mod tests {
    use super::test_namespaces::{in_private_node, pod_attachment, PrivateNamespace};
    use super::*;

    fn link(index: u32, name: &str, mac: [u8; 6], kind: Option<InfoKind>) -> LinkMessage {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.attributes.push(LinkAttribute::IfName(name.to_owned()));
        link.attributes.push(LinkAttribute::Address(mac.to_vec()));
        if let Some(kind) = kind {
            link.attributes
                .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)]));
        }
        link
    }

    #[test]
    fn the_eni_is_its_nic_never_a_device_stacked_on_it() {
        let mac = [2, 0, 0, 0, 0, 7];
        let other = [2, 0, 0, 0, 0, 8];
        let found = |links: Vec<LinkMessage>| link_of_mac(links, mac).and_then(|l| link_name(&l));
        // A VLAN child made before the NIC re-appeared has the lower index and the same MAC.
        let links = vec![
            link(3, "eth1.5", mac, Some(InfoKind::Vlan)),
            link(4, "macvlan0", mac, Some(InfoKind::MacVlan)),
            link(5, "eth1", mac, None),
            link(6, "eth2", other, None),
        ];
        assert_eq!(found(links).as_deref(), Some("eth1"));
        // The emulator's ENIs are veths.
        let links = vec![link(9, "eth1", mac, Some(InfoKind::Veth))];
        assert_eq!(found(links).as_deref(), Some("eth1"));
        // Only stacked devices: no ENI link yet.
        let links = vec![link(3, "br0", mac, Some(InfoKind::Bridge))];
        assert_eq!(found(links), None);
    }

    #[test]
    fn check_tells_a_missing_pod_namespace_from_one_it_cannot_enter() {
        let pod = PrivateNamespace::new();
        let pod_path = pod.path.clone();
        in_private_node(move || async move {
            let datapath = NetlinkDatapath::connect().unwrap();
            let attachment = |netns: &str| pod_attachment("wcchk0", "10.255.255.7", netns);
            datapath.setup_pod(&attachment(&pod_path)).await.unwrap();
            datapath.check_pod(&attachment(&pod_path)).await.unwrap();
            // The host side complete, the namespace there but not one the daemon can
            // enter: that says nothing about the pod.
            // A plain file where the namespace should be: there, but no namespace.
            let through_a_plain_file = || async {
                let file =
                    std::env::temp_dir().join(format!("wasmcni-check-{}", std::process::id()));
                std::fs::write(&file, b"").unwrap();
                let checked = datapath
                    .check_pod(&attachment(&file.display().to_string()))
                    .await;
                std::fs::remove_file(&file).unwrap();
                checked.unwrap_err()
            };
            let unusable = through_a_plain_file().await;
            assert!(
                matches!(
                    unusable,
                    DatapathError::Netns {
                        step: "check it",
                        ..
                    }
                ),
                "{unusable}"
            );
            // Gone with its pod: reported as missing, like the rest of the attachment.
            let gone = datapath
                .check_pod(&attachment("/run/netns/wasmcni-no-such-namespace"))
                .await
                .unwrap_err();
            assert!(
                matches!(&gone, DatapathError::CheckFailed { missing }
                        if missing.iter().any(|m| m.contains("wasmcni-no-such-namespace"))),
                "{gone}"
            );
            // With part of the host side missing, the attachment is incomplete whatever
            // the namespace says.
            datapath.remove_veth("wcchk0").await.unwrap();
            let incomplete = through_a_plain_file().await;
            assert!(
                matches!(&incomplete, DatapathError::CheckFailed { missing }
                        if missing.iter().any(|m| m.contains("wcchk0"))),
                "{incomplete}"
            );
        });
    }

    #[test]
    fn a_stale_host_veth_is_replaced_and_a_taken_pod_interface_is_refused() {
        let pod = PrivateNamespace::new();
        let pod_path = pod.path.clone();
        let other_pod = PrivateNamespace::new();
        let other_path = other_pod.path.clone();
        in_private_node(move || async move {
            let datapath = NetlinkDatapath::connect().unwrap();
            // Another pod, there before and after all of it.
            let other = pod_attachment("wcother0", "10.255.255.12", &other_path);
            datapath.setup_pod(&other).await.unwrap();
            // A host veth left by an earlier pod of the same name (its peer on the node).
            let stale = LinkVeth::new("wcstale0", "wcstalepeer").build();
            datapath.host.link().add(stale).execute().await.unwrap();
            let stale_index = link_index(&datapath.host, "wcstale0").await.unwrap();

            let attachment = pod_attachment("wcstale0", "10.255.255.9", &pod_path);
            datapath.setup_pod(&attachment).await.unwrap();
            datapath.check_pod(&attachment).await.unwrap();
            assert_ne!(
                link_index(&datapath.host, "wcstale0").await.unwrap(),
                stale_index
            );
            assert_eq!(
                link_index(&datapath.host, "wcstalepeer").await.unwrap(),
                None,
                "the stale pair went as a whole"
            );

            // The pod's interface name already taken in its namespace: refused, and nothing
            // of the new pair is left on the node.
            let taken = pod_attachment("wctaken0", "10.255.255.10", &pod_path);
            let refused = datapath.setup_pod(&taken).await.unwrap_err();
            assert!(
                matches!(&refused, DatapathError::Exists { name, .. } if name == "eth0"),
                "{refused}"
            );
            assert_eq!(link_index(&datapath.host, "wctaken0").await.unwrap(), None);
            datapath.check_pod(&attachment).await.unwrap();

            // Both at once: the stale host veth goes, and the taken name is still refused.
            let stale = LinkVeth::new("wcboth0", "wcstalepeer").build();
            datapath.host.link().add(stale).execute().await.unwrap();
            let both = pod_attachment("wcboth0", "10.255.255.11", &pod_path);
            let refused = datapath.setup_pod(&both).await.unwrap_err();
            assert!(
                matches!(&refused, DatapathError::Exists { .. }),
                "{refused}"
            );
            assert_eq!(link_index(&datapath.host, "wcboth0").await.unwrap(), None);
            assert_eq!(
                link_index(&datapath.host, "wcstalepeer").await.unwrap(),
                None,
                "the second stale pair went as a whole too"
            );

            // The other pod is untouched by any of it.
            datapath.check_pod(&other).await.unwrap();
        });
    }
}
