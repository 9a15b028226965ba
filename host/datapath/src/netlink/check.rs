//! CHECK's pod side: what ADD built inside the pod's namespace, each missing part named.

use super::*;

/// Adds to `missing` what of attachment `a` the pod's namespace lacks: the interface, its
/// address, its routes, its pod-side rule, and the permanent neighbour entry of the gateway
/// (with the host veth's MAC `host_mac`, when the host side is there to say it).
pub(super) async fn check_pod_side(
    pod: &Handle,
    a: &PodAttachment,
    host_mac: Option<[u8; 6]>,
    missing: &mut Vec<String>,
) -> Result<(), DatapathError> {
    let ifname = &a.pod_ifname;
    let ip = a.host.ip;
    let Some(index) = link_index(pod, ifname).await? else {
        missing.push(format!(
            "{ifname} is missing in the pod namespace {}",
            a.netns
        ));
        return Ok(());
    };
    let addresses: Vec<_> = pod
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl(format!("list addresses of {ifname} in the pod")))?;
    let len = host_prefix_len(ip);
    let has_address = addresses.iter().any(|m| {
        m.header.prefix_len == len
            && m.attributes
                .iter()
                .any(|attr| matches!(attr, AddressAttribute::Address(a) if *a == ip))
    });
    if !has_address {
        missing.push(format!(
            "address {ip}/{len} on {ifname} in the pod is missing"
        ));
    }
    let gateway = pod_gateway(ip);
    let routes = routes_of(pod, ip).await?;
    let table = a.routes.table.unwrap_or(MAIN_TABLE);
    let unspecified = match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let defaults = a.routes.has_default().then_some((unspecified, 0));
    let listed = a
        .routes
        .destinations
        .iter()
        .map(|d| (d.network(), d.prefix_len()));
    for (dst, len) in defaults.into_iter().chain(listed) {
        let found = routes.iter().any(|r| {
            r.header.destination_prefix_length == len
                && (len == 0 || route_dst_ip(r) == Some((dst, len)))
                && route_gateway_ip(r) == Some(gateway)
                && route_oif(r) == Some(index)
                && route_table(r) == table
        });
        if !found {
            // (The first interface's wording, as CHECK always said it.)
            let what = if len == 0 {
                "default route".to_owned()
            } else {
                format!("route {dst}/{len}")
            };
            let in_table = a
                .routes
                .table
                .map_or_else(String::new, |t| format!(" table {t}"));
            missing.push(format!(
                "{what} via {gateway} dev {ifname}{in_table} in the pod is missing"
            ));
        }
    }
    if let Some(table) = a.routes.table {
        let rules = match ip {
            IpAddr::V4(_) => rules_v4(pod).await?,
            IpAddr::V6(_) => rules_v6(pod).await?,
        };
        if !rules.iter().any(|r| {
            rule_priority(r) == Some(POD_TABLE_RULE_PRIORITY)
                && rule_src(r) == Some(ip)
                && rule_table(r) == table
        }) {
            missing.push(format!(
                "rule from {ip} lookup {table} priority {POD_TABLE_RULE_PRIORITY} in the pod is missing"
            ));
        }
    }
    let neighbours: Vec<_> = pod
        .neighbours()
        .get()
        .set_address_family(match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        })
        .execute()
        .try_collect()
        .await
        .map_err(nl("list neighbours in the pod".to_owned()))?;
    let found = neighbours.iter().find(|n| {
        n.header.ifindex == index
            && n.attributes.iter().any(|attr| match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => {
                    IpAddr::V4(*d) == gateway
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(d)) => {
                    IpAddr::V6(*d) == gateway
                }
                _ => false,
            })
    });
    match found {
        None => missing.push(format!(
            "permanent neighbour {gateway} on {ifname} in the pod is missing"
        )),
        Some(n) => {
            let lladdr = n.attributes.iter().find_map(|attr| match attr {
                NeighbourAttribute::LinkLayerAddress(mac) => Some(mac.clone()),
                _ => None,
            });
            if n.header.state != NeighbourState::Permanent {
                missing.push(format!(
                    "neighbour {gateway} on {ifname} is {:?}, not permanent",
                    n.header.state
                ));
            }
            if let (Some(expected), Some(found)) = (host_mac, lladdr) {
                if found != expected {
                    missing.push(format!(
                        "neighbour {gateway} points at {}, but the host veth's MAC is {}",
                        format_mac(&found),
                        format_mac(&expected)
                    ));
                }
            }
        }
    }
    Ok(())
}
