//! Reading and building rtnetlink messages: rules, links, routes and errors, as the data
//! path's requests and checks need them (no request is sent here but the dumps).

use super::*;

pub(super) fn rule_message(ip: IpAddr, to_pod: bool, table: u32, priority: u32) -> RuleMessage {
    let mut message = RuleMessage::default();
    message.header.family = match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    message.header.action = RuleAction::ToTable;
    if to_pod {
        message.header.dst_len = host_prefix_len(ip);
        message.attributes.push(RuleAttribute::Destination(ip));
    } else {
        message.header.src_len = host_prefix_len(ip);
        message.attributes.push(RuleAttribute::Source(ip));
    }
    if table > 255 {
        message.attributes.push(RuleAttribute::Table(table));
    } else {
        message.header.table = table as u8;
    }
    message.attributes.push(RuleAttribute::Priority(priority));
    mark_rule(&mut message);
    message
}

/// Marks a rule as wasmcni's; the kernel also matches the mark on deletion (Linux >= 4.17), so
/// a DEL never removes another program's rule for the same address.
pub(super) fn mark_rule(message: &mut RuleMessage) {
    message
        .attributes
        .push(RuleAttribute::Protocol(RouteProtocol::Other(RULE_PROTOCOL)));
}

pub(super) fn is_marked(rule: &RuleMessage) -> bool {
    rule.attributes
        .iter()
        .any(|a| matches!(a, RuleAttribute::Protocol(p) if u8::from(*p) == RULE_PROTOCOL))
}

pub(super) fn describe_rule(message: &RuleMessage) -> String {
    let direction = match (rule_dst(message), rule_src(message)) {
        (Some(ip), _) => format!("to {ip}"),
        (_, Some(ip)) => format!("from {ip}"),
        _ => "all".to_owned(),
    };
    format!(
        "{direction} lookup {} prio {}",
        rule_table(message),
        rule_priority(message).unwrap_or_default()
    )
}

pub(super) async fn link_by_name(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, DatapathError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if matches!(errno(&e), Some(Errno::ENODEV | Errno::ENOENT)) => Ok(None),
        Err(e) => Err(nl(format!("look up link {name}"))(e)),
    }
}

pub(super) async fn link_by_index(
    handle: &Handle,
    index: u32,
) -> Result<Option<LinkMessage>, DatapathError> {
    let mut links = handle.link().get().match_index(index).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if matches!(errno(&e), Some(Errno::ENODEV | Errno::ENOENT)) => Ok(None),
        Err(e) => Err(nl(format!("look up link {index}"))(e)),
    }
}

pub(super) fn link_mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    })
}

pub(super) async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, DatapathError> {
    Ok(link_by_name(handle, name).await?.map(|l| l.header.index))
}

/// Every link of `handle`'s namespace.
pub(super) async fn all_links(handle: &Handle) -> Result<Vec<LinkMessage>, DatapathError> {
    handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("list links".to_owned()))
}

pub(super) async fn routes_v4(handle: &Handle) -> Result<Vec<RouteMessage>, DatapathError> {
    handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(nl("list IPv4 routes".to_owned()))
}

pub(super) async fn routes_v6(handle: &Handle) -> Result<Vec<RouteMessage>, DatapathError> {
    let routes = handle
        .route()
        .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
        .execute()
        .try_collect()
        .await;
    without_ipv6_is_empty(routes).map_err(nl("list IPv6 routes".to_owned()))
}

/// A kernel booted with `ipv6.disable=1` answers IPv6 dumps with EAFNOSUPPORT: it has no
/// IPv6 routes or rules, which is no error on an IPv4 node.
pub(super) fn without_ipv6_is_empty<T>(
    answer: Result<Vec<T>, rtnetlink::Error>,
) -> Result<Vec<T>, rtnetlink::Error> {
    match answer {
        Err(e) if errno(&e) == Some(Errno::EAFNOSUPPORT) => Ok(Vec::new()),
        other => other,
    }
}

/// The routes of `ip`'s family.
pub(super) async fn routes_of(
    handle: &Handle,
    ip: IpAddr,
) -> Result<Vec<RouteMessage>, DatapathError> {
    match ip {
        IpAddr::V4(_) => routes_v4(handle).await,
        IpAddr::V6(_) => routes_v6(handle).await,
    }
}

pub(super) async fn rules_v6(handle: &Handle) -> Result<Vec<RuleMessage>, DatapathError> {
    let rules = handle
        .rule()
        .get(IpVersion::V6)
        .execute()
        .try_collect()
        .await;
    without_ipv6_is_empty(rules).map_err(nl("list IPv6 rules".to_owned()))
}

pub(super) async fn rules_v4(handle: &Handle) -> Result<Vec<RuleMessage>, DatapathError> {
    handle
        .rule()
        .get(IpVersion::V4)
        .execute()
        .try_collect()
        .await
        .map_err(nl("list IPv4 rules".to_owned()))
}

pub(super) fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

pub(super) fn link_alias(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(alias) => Some(alias.as_str()),
        _ => None,
    })
}

pub(super) fn link_mac(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
        _ => None,
    })
}

/// The device that carries `mac`: a VLAN, macvlan, bond or bridge stacked on an ENI shares (or
/// may be given) its MAC, and must never be mistaken for it. Among the rest (the NIC itself;
/// a veth in the emulator's hypervisor mode) the lowest index wins.
pub(super) fn link_of_mac(links: Vec<LinkMessage>, mac: [u8; 6]) -> Option<LinkMessage> {
    links
        .into_iter()
        .filter(|l| link_mac(l) == Some(mac) && !is_stacked(l))
        .min_by_key(|l| l.header.index)
}

/// Whether the link is a software device stacked on (or enslaving) another.
pub(super) fn is_stacked(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().any(|i| {
            matches!(
                i,
                LinkInfo::Kind(
                    InfoKind::Vlan
                        | InfoKind::MacVlan
                        | InfoKind::MacVtap
                        | InfoKind::IpVlan
                        | InfoKind::IpVtap
                        | InfoKind::MacSec
                        | InfoKind::Bridge
                        | InfoKind::Bond
                        | InfoKind::Team
                        | InfoKind::Vxlan
                )
            )
        }),
        _ => false,
    })
}

pub(super) fn is_veth(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))),
        _ => false,
    })
}

/// A route's destination in either family.
pub(super) fn route_dst_ip(route: &RouteMessage) -> Option<(IpAddr, u8)> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
            Some((IpAddr::V4(*ip), route.header.destination_prefix_length))
        }
        RouteAttribute::Destination(RouteAddress::Inet6(ip)) => {
            Some((IpAddr::V6(*ip), route.header.destination_prefix_length))
        }
        _ => None,
    })
}

/// A route's gateway in either family.
pub(super) fn route_gateway_ip(route: &RouteMessage) -> Option<IpAddr> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        _ => None,
    })
}

/// `<dst> via <gw>` for error messages.
pub(super) fn describe_route(route: &RouteMessage) -> String {
    let dst =
        route_dst_ip(route).map_or_else(|| "default".to_owned(), |(ip, len)| format!("{ip}/{len}"));
    match route_gateway_ip(route) {
        Some(gw) => format!("{dst} via {gw}"),
        None => format!("{dst} (link)"),
    }
}

/// A route's metric (0 when it has none).
pub(super) fn route_metric(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

/// The links a route leaves through: its output interface, or each next hop's of a
/// multipath route.
pub(super) fn route_links(route: &RouteMessage) -> Vec<u32> {
    let hops = route.attributes.iter().flat_map(|a| match a {
        RouteAttribute::MultiPath(hops) => hops.iter().map(|h| h.interface_index).collect(),
        _ => Vec::new(),
    });
    route_oif(route).into_iter().chain(hops).collect()
}

pub(super) fn route_oif(route: &RouteMessage) -> Option<u32> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(index) => Some(*index),
        _ => None,
    })
}

pub(super) fn route_table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

pub(super) fn rule_priority(rule: &RuleMessage) -> Option<u32> {
    rule.attributes.iter().find_map(|a| match a {
        RuleAttribute::Priority(p) => Some(*p),
        _ => None,
    })
}

pub(super) fn rule_dst(rule: &RuleMessage) -> Option<IpAddr> {
    rule.attributes.iter().find_map(|a| match a {
        RuleAttribute::Destination(ip) => Some(*ip),
        _ => None,
    })
}

pub(super) fn rule_src(rule: &RuleMessage) -> Option<IpAddr> {
    rule.attributes.iter().find_map(|a| match a {
        RuleAttribute::Source(ip) => Some(*ip),
        _ => None,
    })
}

pub(super) fn rule_table(rule: &RuleMessage) -> u32 {
    rule.attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(rule.header.table))
}

/// The errno of a netlink error answer, if it is one.
/// The errno a kernel's netlink answer carries (`None` for errors that are not the kernel's).
pub(super) fn errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(message) => NetlinkCause::kernel_errno(message),
        _ => None,
    }
}

pub(super) fn nl(operation: String) -> impl FnOnce(rtnetlink::Error) -> DatapathError {
    move |e| DatapathError::Netlink {
        operation,
        cause: e.into(),
    }
}

/// A failure that is not an error answer of the kernel's: what the operation found is not
/// what it needs.
pub(super) fn netlink_failure(operation: String, message: &str) -> DatapathError {
    DatapathError::Netlink {
        operation,
        cause: NetlinkCause::Unexpected(message.to_owned()),
    }
}

/// A failure of the daemon's own socket or task while doing `operation`.
pub(super) fn io_failure(operation: String, source: std::io::Error) -> DatapathError {
    DatapathError::Netlink {
        operation,
        cause: NetlinkCause::Io(source),
    }
}
