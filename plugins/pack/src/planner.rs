//! `pack`'s pool plan: keep `WARM_IPS` free addresses, grow the densest ENI that has room,
//! shrink the least dense one, so pods and addresses concentrate and whole blocks and ENIs
//! drain. A pure function of the pool snapshot: the same pool gives the same requests, and
//! carrying them out settles it.

use wasmcni_plugin_sdk::allocator::{
    BlockKind, FailureCode, Intent, Pool, ProviderKind, RequestKind,
};

/// Addresses in a delegated /28.
pub const IPS_PER_PREFIX: u32 = 16;

/// Default of `MIN_ENI_AGE_SECONDS`: a secondary ENI younger than this is never deleted (as
/// VPC CNI's `minENILifeTime`), so a burst of churn does not create and delete ENIs in turn.
pub const MIN_ENI_AGE_MS: u64 = 60_000;

/// `pack`'s settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `WARM_IPS` (default 8): free addresses to keep (not held, cooling or excluded).
    pub warm_ips: u32,
    /// `ENABLE_PREFIX_DELEGATION` (default false): grow by /28 prefixes where the instance and
    /// the ENI's subnet can take one, by secondary IPs elsewhere.
    pub prefix_delegation: bool,
    /// `MIN_ENI_AGE_SECONDS` (default 60), in milliseconds: an empty secondary ENI younger
    /// than this is kept.
    pub min_eni_age_ms: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            warm_ips: 8,
            prefix_delegation: false,
            min_eni_age_ms: MIN_ENI_AGE_MS,
        }
    }
}

impl Settings {
    /// Refuses a `WARM_IPS` of 0: the pool would never hold a free address for the next pod.
    pub fn validate(&self) -> Result<(), String> {
        if self.warm_ips == 0 {
            return Err(
                "config key WARM_IPS = \"0\": pack grows only to keep WARM_IPS free \
                addresses, so with 0 no pod would ever find one; set 1 or more (default 8)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// What a `plan` call decided.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The requests to make, in order.
    pub intents: Vec<Intent>,
    /// Warnings for the log.
    pub warnings: Vec<String>,
}

/// A block that may be given back: no address held, cooling or excluded.
#[derive(Debug, Clone, Copy)]
struct Releasable {
    kind: BlockKind,
    network: u32,
    prefix_len: u8,
    free: u32,
}

#[derive(Debug, Clone)]
struct EniModel {
    /// `None` for an ENI this plan creates.
    id: Option<String>,
    device: u32,
    primary: bool,
    /// Whether the daemon lets a plan change it (`Pool::may_change`): an operator's ENI is
    /// neither grown, shrunk nor deleted.
    changeable: bool,
    subnet_id: String,
    slots: u32,
    /// Pods on the ENI: its density.
    held: u32,
    free: u32,
    cooling: bool,
    age_ms: u64,
    releasable: Vec<Releasable>,
    add_ips: u32,
    add_prefixes: u32,
}

fn model(pool: &Pool) -> Vec<EniModel> {
    let mut enis: Vec<EniModel> = pool
        .enis
        .iter()
        .map(|eni| {
            let mut releasable = Vec::new();
            let (mut held, mut free) = (0, 0);
            for block in pool.blocks_of(&eni.id) {
                let block_held = pool.held_in(block) as u32;
                let block_free = pool.free_in(block).count() as u32;
                held += block_held;
                free += block_free;
                let untouched = block_held == 0
                    && Pool::usable(block)
                        .all(|ip| !pool.cooling.contains(&ip) && !pool.excluded.contains(&ip));
                if untouched && block.kind != BlockKind::StaticRange {
                    releasable.push(Releasable {
                        kind: block.kind,
                        network: block.cidr.network,
                        prefix_len: block.cidr.prefix_len,
                        free: block_free,
                    });
                }
            }
            // Whole prefixes first (one request frees 16), then single IPs; highest first.
            releasable.sort_by(|a, b| {
                (b.kind == BlockKind::Prefix, b.network)
                    .cmp(&(a.kind == BlockKind::Prefix, a.network))
            });
            EniModel {
                id: Some(eni.id.clone()),
                device: eni.device_number,
                primary: eni.primary,
                changeable: pool.may_change(eni),
                subnet_id: eni.subnet_id.clone(),
                slots: pool.slots_of(&eni.id),
                held,
                free,
                cooling: pool.eni_has_cooling(&eni.id),
                age_ms: eni.age_ms,
                releasable,
                add_ips: 0,
                add_prefixes: 0,
            }
        })
        .collect();
    enis.sort_by_key(|e| e.device);
    enis
}

/// For how long a subnet whose new ENI EC2 refused for lack of addresses is passed over while
/// another subnet is in scope (`DescribeSubnets`' free counts lag behind: the host caches
/// them for a minute).
pub const FULL_SUBNET_BACKOFF_MS: u64 = 120_000;

/// Whether EC2 recently refused a new ENI in `subnet` for lack of addresses.
fn recently_full(pool: &Pool, subnet: &str) -> bool {
    pool.failures.iter().any(|f| {
        f.request == RequestKind::CreateEni
            && f.subnet_id.as_deref() == Some(subnet)
            && matches!(f.code, FailureCode::InsufficientFreeAddressesInSubnet)
            && f.age_ms < FULL_SUBNET_BACKOFF_MS
    })
}

/// The subnet of a new ENI: the most free addresses among `subnets()` (the node's subnet on a
/// tie), the node's subnet when none is listed; a subnet EC2 just called full is passed over
/// while another is listed.
fn new_eni_subnet(pool: &Pool, node_subnet: &str) -> String {
    let open: Vec<_> = pool
        .subnets
        .iter()
        .filter(|s| !recently_full(pool, &s.id))
        .collect();
    let candidates = if open.is_empty() {
        pool.subnets.iter().collect()
    } else {
        open
    };
    candidates
        .into_iter()
        .max_by(|a, b| {
            (a.free_addresses, a.id == node_subnet, &b.id).cmp(&(
                b.free_addresses,
                b.id == node_subnet,
                &a.id,
            ))
        })
        .map_or_else(|| node_subnet.to_string(), |s| s.id.clone())
}

/// `pack`'s decision for `pool`: grow to `WARM_IPS` free addresses (never beyond max pods) or
/// shrink the surplus, least dense ENI first.
pub fn plan(pool: &Pool, settings: &Settings) -> Plan {
    let mut out = Plan::default();
    let limits = &pool.node.limits;
    if pool.node.provider != ProviderKind::Ec2 || limits.max_enis == 0 {
        return out; // static ranges: nothing to plan
    }
    let prefix_mode = settings.prefix_delegation && limits.prefix_delegation;
    if settings.prefix_delegation && !limits.prefix_delegation {
        out.warnings.push(format!(
            "ENABLE_PREFIX_DELEGATION=true but {} cannot take /28 prefixes: growing by secondary IPs",
            pool.node.instance_type
        ));
    }
    let mut enis = model(pool);
    let free: u32 = enis.iter().map(|e| e.free).sum();
    let total: u32 = pool
        .blocks
        .iter()
        .flat_map(Pool::usable)
        .filter(|ip| !pool.excluded.contains(ip))
        .count() as u32;

    if free < settings.warm_ips {
        let mut need = settings.warm_ips - free;
        if limits.max_pods > 0 {
            need = need.min(limits.max_pods.saturating_sub(total));
        }
        grow(pool, prefix_mode, &mut enis, need, &mut out);
    } else {
        shrink(
            &mut enis,
            free - settings.warm_ips,
            settings.min_eni_age_ms,
            &mut out,
        );
    }
    out
}

fn grow(pool: &Pool, prefix_mode: bool, enis: &mut Vec<EniModel>, mut need: u32, out: &mut Plan) {
    let max_slots = pool.node.limits.ipv4_per_eni.saturating_sub(1);
    let max_enis = pool.node.limits.max_enis as usize;
    let mut subnet_free: Vec<(String, u32)> = pool
        .subnets
        .iter()
        .map(|s| (s.id.clone(), s.free_addresses))
        .collect();
    // Can this ENI's subnet still carve a /28? Unknown subnets are assumed to.
    let takes_prefix = |subnet_free: &[(String, u32)], subnet: &str| {
        prefix_mode
            && subnet_free
                .iter()
                .find(|(id, _)| id == subnet)
                .is_none_or(|(_, free)| *free >= IPS_PER_PREFIX)
    };
    let spend = |subnet_free: &mut Vec<(String, u32)>, subnet: &str, addresses: u32| {
        if let Some((_, free)) = subnet_free.iter_mut().find(|(id, _)| id == subnet) {
            *free = free.saturating_sub(addresses);
        }
    };
    while need > 0 {
        let densest = enis
            .iter()
            .enumerate()
            .filter(|(_, e)| e.changeable && e.slots < max_slots)
            .max_by(|(_, a), (_, b)| (a.held, b.device).cmp(&(b.held, a.device)))
            .map(|(at, _)| at);
        if let Some(at) = densest {
            let eni = &mut enis[at];
            let room = max_slots - eni.slots;
            if takes_prefix(&subnet_free, &eni.subnet_id) {
                let prefixes = need.div_ceil(IPS_PER_PREFIX).min(room);
                eni.add_prefixes += prefixes;
                eni.slots += prefixes;
                need = need.saturating_sub(prefixes * IPS_PER_PREFIX);
                spend(&mut subnet_free, &eni.subnet_id, prefixes * IPS_PER_PREFIX);
            } else {
                let ips = need.min(room);
                eni.add_ips += ips;
                eni.slots += ips;
                need -= ips;
                spend(&mut subnet_free, &eni.subnet_id, ips);
            }
            continue;
        }
        if enis.len() >= max_enis || max_slots == 0 {
            out.warnings.push(format!(
                "{need} more free address(es) wanted but every ENI is full and {} of {max_enis} \
                 ENI(s) are attached",
                enis.len()
            ));
            break;
        }
        let Some(node) = enis.iter().find(|e| e.primary) else {
            out.warnings
                .push("no primary ENI in the pool view: cannot tell the node's subnet".into());
            break;
        };
        let subnet_id = new_eni_subnet(pool, &node.subnet_id);
        let device = enis.iter().map(|e| e.device + 1).max().unwrap_or(0);
        let mut eni = EniModel {
            id: None,
            device,
            primary: false,
            changeable: true,
            subnet_id: subnet_id.clone(),
            slots: 0,
            held: 0,
            free: 0,
            cooling: false,
            age_ms: 0,
            releasable: Vec::new(),
            add_ips: 0,
            add_prefixes: 0,
        };
        // One kind per new ENI (the host takes IPs or prefixes at creation, not both).
        if takes_prefix(&subnet_free, &subnet_id) {
            eni.add_prefixes = need.div_ceil(IPS_PER_PREFIX).min(max_slots);
            need = need.saturating_sub(eni.add_prefixes * IPS_PER_PREFIX);
            spend(
                &mut subnet_free,
                &subnet_id,
                1 + eni.add_prefixes * IPS_PER_PREFIX,
            );
        } else {
            eni.add_ips = need.min(max_slots);
            need -= eni.add_ips;
            spend(&mut subnet_free, &subnet_id, 1 + eni.add_ips);
        }
        eni.slots = eni.add_ips + eni.add_prefixes;
        enis.push(eni);
    }
    let node_groups: Vec<String> = pool
        .enis
        .iter()
        .find(|e| e.primary)
        .map(|e| e.security_groups.clone())
        .unwrap_or_default();
    for eni in enis.iter() {
        match &eni.id {
            Some(eni_id) => {
                if eni.add_prefixes > 0 {
                    out.intents.push(Intent::AssignPrefixes {
                        eni_id: eni_id.clone(),
                        count: eni.add_prefixes,
                    });
                }
                if eni.add_ips > 0 {
                    out.intents.push(Intent::AssignIps {
                        eni_id: eni_id.clone(),
                        count: eni.add_ips,
                    });
                }
            }
            None => out.intents.push(Intent::CreateEni {
                subnet_id: eni.subnet_id.clone(),
                security_groups: node_groups.clone(),
                secondary_ips: eni.add_ips,
                prefixes: eni.add_prefixes,
            }),
        }
    }
}

fn shrink(enis: &mut [EniModel], mut surplus: u32, min_eni_age_ms: u64, out: &mut Plan) {
    // Least dense first; among equals the highest device, so the newest ENIs drain first.
    enis.sort_by(|a, b| (a.held, b.device).cmp(&(b.held, a.device)));
    for eni in enis.iter().filter(|e| e.changeable) {
        let Some(eni_id) = &eni.id else { continue };
        let deletable =
            !eni.primary && eni.held == 0 && !eni.cooling && eni.age_ms >= min_eni_age_ms;
        if deletable && eni.free <= surplus {
            surplus -= eni.free;
            out.intents.push(Intent::DeleteEni {
                eni_id: eni_id.clone(),
            });
            continue;
        }
        let (mut prefixes, mut ips) = (Vec::new(), Vec::new());
        for block in &eni.releasable {
            if block.free > surplus {
                continue;
            }
            surplus -= block.free;
            if block.kind == BlockKind::Prefix {
                prefixes.push((block.network, block.prefix_len));
            } else {
                ips.push(block.network);
            }
        }
        if !prefixes.is_empty() {
            out.intents.push(Intent::ReleasePrefixes {
                eni_id: eni_id.clone(),
                prefixes,
            });
        }
        if !ips.is_empty() {
            out.intents.push(Intent::ReleaseIps {
                eni_id: eni_id.clone(),
                addresses: ips,
            });
        }
    }
}
