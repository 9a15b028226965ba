//! `ns-subnets`: each namespace's pods get addresses on that namespace's own subnets and ENIs.
//! The Rust twin of `ns-subnets-py` and `ns-subnets-js` (their `strategy.py` documents the
//! settings: `NAMESPACES`, `WARM_IPS`, `SECURITY_GROUPS`); the three answer alike, word for word,
//! which the runtime's tests hold them to.

use std::collections::{BTreeMap, BTreeSet};

use core::net::Ipv4Addr;
use wasmcni_plugin_sdk::allocator::{
    issue_all, log, pool_view, setting, BlockOccupancy, Eni, Guest, Intent, IpAddress, NodeInfo,
    Pod, Subnet,
};

const MAX_WARM_IPS: u32 = 64;

/// The parsed settings.
pub struct Settings {
    /// Each listed namespace's subnets, in order.
    pub namespaces: BTreeMap<String, Vec<String>>,
    /// The namespace each listed subnet serves.
    owner: BTreeMap<String, String>,
    /// The order namespaces were listed in (the plan serves them in it).
    order: Vec<String>,
    /// Free addresses to keep per group.
    pub warm_ips: u32,
    /// Security groups of new ENIs (`node`: the primary ENI's).
    pub security_groups: Vec<String>,
}

/// Parses the settings; `get(key)` returns a setting.
pub fn parse_settings(get: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
    let mut settings = Settings {
        namespaces: BTreeMap::new(),
        owner: BTreeMap::new(),
        order: Vec::new(),
        warm_ips: 2,
        security_groups: Vec::new(),
    };
    let text = get("NAMESPACES").unwrap_or_default();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (namespace, subnets) = match entry.split_once('=') {
            Some((namespace, subnets)) if !namespace.trim().is_empty() => {
                (namespace.trim(), subnets)
            }
            _ => {
                return Err(format!(
                    "NAMESPACES entry '{entry}' is not namespace=subnet-id[,subnet-id...]"
                ))
            }
        };
        if settings.namespaces.contains_key(namespace) {
            return Err(format!("NAMESPACES lists namespace '{namespace}' twice"));
        }
        let listed: Vec<String> = subnets
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if listed.is_empty() {
            return Err(format!(
                "NAMESPACES gives namespace '{namespace}' no subnet"
            ));
        }
        for subnet in &listed {
            if !subnet.starts_with("subnet-") || subnet.len() <= "subnet-".len() {
                return Err(format!(
                    "NAMESPACES: '{subnet}' (namespace '{namespace}') is not a subnet id"
                ));
            }
            if let Some(other) = settings.owner.get(subnet) {
                return Err(format!(
                    "NAMESPACES: subnet {subnet} is given to both '{other}' and '{namespace}'; a subnet serves one namespace"
                ));
            }
            settings.owner.insert(subnet.clone(), namespace.to_owned());
        }
        settings.namespaces.insert(namespace.to_owned(), listed);
        settings.order.push(namespace.to_owned());
    }
    let warm = get("WARM_IPS").unwrap_or_else(|| "2".into());
    let warm = warm.trim();
    settings.warm_ips = warm
        .parse()
        .ok()
        .filter(|n| *n <= MAX_WARM_IPS && warm.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            format!("WARM_IPS '{warm}' is not a whole number from 0 to {MAX_WARM_IPS}")
        })?;
    let groups = get("SECURITY_GROUPS").unwrap_or_else(|| "node".into());
    for group in groups.split(',').map(str::trim).filter(|g| !g.is_empty()) {
        if group != "node" && !group.starts_with("sg-") {
            return Err(format!(
                "SECURITY_GROUPS: '{group}' is neither node nor an sg- id"
            ));
        }
        settings.security_groups.push(group.to_owned());
    }
    if settings.security_groups.is_empty() {
        settings.security_groups.push("node".into());
    }
    Ok(settings)
}

impl Settings {
    /// The listed namespace a pod of `namespace` belongs to (`None`: the shared ENIs).
    fn group_of<'a>(&self, namespace: Option<&'a str>) -> Option<&'a str> {
        namespace.filter(|n| self.namespaces.contains_key(*n))
    }

    /// The ENIs whose addresses pods of `group` may get.
    fn enis_of<'e>(&self, group: Option<&str>, enis: &'e [Eni]) -> Vec<&'e Eni> {
        enis.iter()
            .filter(|eni| match group {
                None => !self.owner.contains_key(&eni.subnet_id),
                Some(group) => self.namespaces[group].contains(&eni.subnet_id),
            })
            .collect()
    }

    /// A group in words, for messages.
    fn describe(&self, namespace: Option<&str>) -> String {
        match self.group_of(namespace) {
            None => "the node's shared ENIs".into(),
            Some(group) => format!(
                "namespace {group}'s subnets ({})",
                self.namespaces[group].join(", ")
            ),
        }
    }
}

/// The lowest free address of the fullest block on the group's ENIs.
pub fn choose(
    namespace: Option<&str>,
    occupancy: &[BlockOccupancy],
    enis: &[Eni],
    settings: &Settings,
) -> Option<Ipv4Addr> {
    let ids: BTreeSet<&str> = settings
        .enis_of(settings.group_of(namespace), enis)
        .into_iter()
        .map(|eni| eni.id.as_str())
        .collect();
    occupancy
        .iter()
        .filter(|b| b.free > 0 && b.block.eni_id.as_deref().is_some_and(|id| ids.contains(id)))
        .filter_map(|b| b.lowest_free.map(|ip| (b.free, Ipv4Addr::from(ip))))
        .min()
        .map(|(_, ip)| ip)
}

/// The requests that bring every group to `WARM_IPS` free addresses, and warnings.
pub fn plan(
    node: &NodeInfo,
    enis: &[Eni],
    occupancy: &[BlockOccupancy],
    subnets: &[Subnet],
    settings: &Settings,
) -> (Vec<Intent>, Vec<String>) {
    let limits = &node.limits;
    let (mut requests, mut warnings) = (Vec::new(), Vec::new());
    if limits.max_enis == 0 || limits.ipv4_per_eni < 2 {
        return (requests, warnings);
    }
    let per_eni = limits.ipv4_per_eni - 1;
    let (mut free_on, mut used_on) = (BTreeMap::<&str, u32>::new(), BTreeMap::<&str, u32>::new());
    for b in occupancy {
        if let Some(id) = b.block.eni_id.as_deref() {
            *free_on.entry(id).or_default() += b.free;
            *used_on.entry(id).or_default() += b.usable;
        }
    }
    let primary = enis.iter().find(|eni| eni.primary);
    let mut groups = BTreeSet::new();
    for group in &settings.security_groups {
        if group == "node" {
            groups.extend(
                primary
                    .iter()
                    .flat_map(|p| p.security_groups.iter().cloned()),
            );
        } else {
            groups.insert(group.clone());
        }
    }
    let security_groups: Vec<String> = groups.into_iter().collect();
    let mut eni_count = u32::try_from(enis.len()).unwrap_or(u32::MAX);
    let order = settings
        .order
        .iter()
        .map(|n| Some(n.as_str()))
        .chain([None]);
    for group in order {
        let name = group.unwrap_or("shared");
        let mut mine = settings.enis_of(group, enis);
        let free: u32 = mine
            .iter()
            .map(|eni| free_on.get(eni.id.as_str()).copied().unwrap_or(0))
            .sum();
        let mut need = settings.warm_ips.saturating_sub(free);
        if need == 0 {
            continue;
        }
        mine.sort_by_key(|eni| eni.device_number);
        for eni in mine {
            let room = per_eni.saturating_sub(used_on.get(eni.id.as_str()).copied().unwrap_or(0));
            if room > 0 && need > 0 {
                let count = room.min(need);
                requests.push(Intent::AssignIps {
                    eni_id: eni.id.clone(),
                    count,
                });
                need -= count;
            }
        }
        if need == 0 {
            continue;
        }
        if eni_count >= limits.max_enis {
            warnings.push(format!(
                "{name}: {need} more addresses wanted, but the node has its {} ENIs",
                limits.max_enis
            ));
            continue;
        }
        let candidates: Vec<&Subnet> = match group {
            None => match primary {
                Some(primary) if !settings.owner.contains_key(&primary.subnet_id) => subnets
                    .iter()
                    .filter(|s| s.id == primary.subnet_id)
                    .collect(),
                _ => {
                    warnings.push(
                        "shared: the node's subnet is given to a namespace; no shared ENI".into(),
                    );
                    continue;
                }
            },
            Some(group) => subnets
                .iter()
                .filter(|s| settings.namespaces[group].contains(&s.id))
                .collect(),
        };
        let Some(subnet) = candidates
            .into_iter()
            .filter(|s| s.free_addresses > need)
            .max_by(|a, b| (a.free_addresses, &a.id).cmp(&(b.free_addresses, &b.id)))
        else {
            warnings.push(format!(
                "{name}: no subnet of the group is offered with {} free addresses (grant eni-ops its subnets; same availability zone)",
                need + 1
            ));
            continue;
        };
        requests.push(Intent::CreateEni {
            subnet_id: subnet.id.clone(),
            security_groups: security_groups.clone(),
            secondary_ips: need.min(per_eni),
            prefixes: 0,
        });
        eni_count += 1;
    }
    (requests, warnings)
}

fn settings() -> Result<Settings, String> {
    parse_settings(|key| setting::<String>(key).ok().flatten())
}

struct NsSubnets;

impl Guest for NsSubnets {
    fn init() -> Result<(), String> {
        settings().map(drop)
    }

    fn allocate(pod: Pod) -> Result<IpAddress, String> {
        let settings = settings()?;
        let namespace = pod.namespace.as_deref();
        choose(
            namespace,
            &pool_view::occupancy(),
            &pool_view::enis(),
            &settings,
        )
        .map(IpAddress::from)
        .ok_or_else(|| {
            format!(
                "no free address on {}; the plan is adding some",
                settings.describe(namespace)
            )
        })
    }

    fn plan() -> Result<(), String> {
        let settings = settings()?;
        let (requests, warnings) = plan(
            &pool_view::node(),
            &pool_view::enis(),
            &pool_view::occupancy(),
            &pool_view::subnets(),
            &settings,
        );
        for warning in &warnings {
            log::log(log::Level::Warn, warning);
        }
        issue_all(&requests);
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(NsSubnets);
