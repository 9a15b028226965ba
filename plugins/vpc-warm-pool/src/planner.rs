//! VPC CNI's pool control loop (`updateIPPoolIfRequired`, `pkg/ipamd/ipamd.go`) as a pure
//! function: the intents that take the pool from what it is to where VPC CNI's 5-second loop
//! would settle it.
//!
//! VPC CNI changes one ENI per loop iteration and looks again; here the loop runs to its fixed
//! point on a model of the pool (address counts per ENI) and the changes are merged into one
//! request per ENI, so a `plan` asks for the whole delta of the state it sees and asking again
//! on the same state asks for the same thing.

use crate::settings::{Settings, CLUSTER_TAG_PREFIX, SUBNET_DISCOVERY_TAG};
use wasmcni_plugin_sdk::allocator::{BlockKind, Intent, Pool, ProviderKind, Subnet};

/// Addresses in a delegated /28.
pub const IPS_PER_PREFIX: u32 = 16;

/// An ENI younger than this is never deleted (VPC CNI's `minENILifeTime`).
pub const MIN_ENI_AGE_MS: u64 = 60_000;

/// What a `plan` call decided.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The requests to make, in order.
    pub intents: Vec<Intent>,
    /// Warnings for the log: settings without effect, growth that has nowhere to go.
    pub warnings: Vec<String>,
}

/// One ENI as the model sees it.
#[derive(Debug, Clone)]
struct EniModel {
    /// `None` for an ENI this plan creates.
    id: Option<String>,
    device: u32,
    primary: bool,
    /// Whether the daemon lets a plan change it (`Pool::may_change`): an operator's ENI is
    /// used for pods as it is, but never grown, shrunk nor deleted.
    changeable: bool,
    /// False for the primary ENI under custom networking.
    for_pods: bool,
    /// Address slots used (secondary IPs and prefixes of either kind).
    slots: u32,
    /// Blocks of the mode pods may get addresses from.
    mode_blocks: u32,
    /// Addresses of the mode's blocks pods may get (excluded ones left out).
    total: u32,
    /// Of those, held by pods.
    assigned: u32,
    /// Mode blocks (prefix mode: prefixes) with no address held.
    free_blocks: u32,
    /// Mode blocks with no address held or cooling, highest first: what may be released.
    releasable: Vec<(u32, u8)>,
    has_pods: bool,
    cooling: bool,
    age_ms: u64,
    /// Blocks this plan adds.
    added: u32,
    /// Where a new ENI goes.
    subnet_id: String,
    security_groups: Vec<String>,
}

/// The pool model and the settings the loop runs with.
struct Model<'a> {
    settings: &'a Settings,
    prefix_mode: bool,
    /// Addresses per block of the mode: 16 for prefixes, 1 for secondary IPs.
    per_block: u32,
    /// Slots per ENI: the instance's IPv4 addresses per ENI minus the primary address.
    max_slots: u32,
    max_enis: u32,
    /// 0: no ceiling.
    max_pods: u32,
    enis: Vec<EniModel>,
    subnets: Vec<Subnet>,
}

/// Whether prefix delegation is in effect: asked for and possible on this instance.
pub fn prefix_mode(settings: &Settings, pool: &Pool) -> bool {
    settings.prefix_delegation && pool.node.limits.prefix_delegation
}

fn div_ceil(x: u32, y: u32) -> u32 {
    x.div_ceil(y.max(1))
}

impl<'a> Model<'a> {
    fn new(pool: &Pool, settings: &'a Settings, intents: &mut Vec<Intent>) -> Model<'a> {
        let prefix_mode = prefix_mode(settings, pool);
        let mode_kind = if prefix_mode {
            BlockKind::Prefix
        } else {
            BlockKind::SecondaryIp
        };
        let limits = &pool.node.limits;
        let mut enis: Vec<EniModel> = Vec::new();
        let mut sorted: Vec<_> = pool.enis.iter().collect();
        sorted.sort_by_key(|e| e.device_number);
        for eni in sorted {
            let for_pods = !(settings.custom_networking && eni.primary);
            let mut model = EniModel {
                id: Some(eni.id.clone()),
                device: eni.device_number,
                primary: eni.primary,
                changeable: pool.may_change(eni),
                for_pods,
                slots: 0,
                mode_blocks: 0,
                total: 0,
                assigned: 0,
                free_blocks: 0,
                releasable: Vec::new(),
                has_pods: pool.eni_has_pods(&eni.id),
                cooling: pool.eni_has_cooling(&eni.id),
                age_ms: eni.age_ms,
                added: 0,
                subnet_id: eni.subnet_id.clone(),
                security_groups: eni.security_groups.clone(),
            };
            let mut leftovers: Vec<(u32, u8)> = Vec::new();
            for block in pool.blocks_of(&eni.id) {
                let held = pool.held_in(block) as u32;
                let quiet = held == 0 && !Pool::usable(block).any(|ip| pool.cooling.contains(&ip));
                let cidr = (block.cidr.network, block.cidr.prefix_len);
                if block.kind != mode_kind {
                    // Left from the other mode (prefix delegation switched): VPC CNI frees
                    // these at start-up once no pod holds them; they still take a slot.
                    if quiet {
                        leftovers.push(cidr);
                    } else {
                        model.slots += 1;
                    }
                    continue;
                }
                model.slots += 1;
                if !for_pods {
                    continue;
                }
                model.mode_blocks += 1;
                model.total += Pool::usable(block)
                    .filter(|ip| !pool.excluded.contains(ip))
                    .count() as u32;
                model.assigned += held;
                if held == 0 {
                    model.free_blocks += 1;
                }
                if quiet {
                    model.releasable.push(cidr);
                }
            }
            model.releasable.sort_unstable_by(|a, b| b.cmp(a));
            if !leftovers.is_empty() && model.changeable {
                leftovers.sort_unstable();
                let eni_id = eni.id.clone();
                intents.push(if prefix_mode {
                    Intent::ReleaseIps {
                        eni_id,
                        addresses: leftovers.iter().map(|(ip, _)| *ip).collect(),
                    }
                } else {
                    Intent::ReleasePrefixes {
                        eni_id,
                        prefixes: leftovers,
                    }
                });
            }
            enis.push(model);
        }
        let max_enis = match settings.max_eni {
            Some(cap) => cap.min(limits.max_enis),
            None => limits.max_enis,
        };
        Model {
            settings,
            prefix_mode,
            per_block: if prefix_mode { IPS_PER_PREFIX } else { 1 },
            max_slots: limits.ipv4_per_eni.saturating_sub(1),
            max_enis,
            max_pods: limits.max_pods,
            enis,
            subnets: pool.subnets.clone(),
        }
    }

    fn pod_enis(&self) -> impl Iterator<Item = &EniModel> {
        self.enis.iter().filter(|e| e.for_pods)
    }

    /// Addresses pods may get (VPC CNI's `TotalIPs`).
    fn total(&self) -> u32 {
        self.pod_enis().map(|e| e.total).sum()
    }

    fn assigned(&self) -> u32 {
        self.pod_enis().map(|e| e.assigned).sum()
    }

    /// Addresses not held by pods, cooling ones included (VPC CNI's `AvailableAddresses`).
    fn available(&self) -> u32 {
        self.total() - self.assigned()
    }

    fn blocks(&self) -> u32 {
        self.pod_enis().map(|e| e.mode_blocks).sum()
    }

    fn free_blocks(&self) -> u32 {
        self.pod_enis().map(|e| e.free_blocks).sum()
    }

    /// VPC CNI's `datastoreTargetState` when WARM_IP/MINIMUM_IP is set: how many blocks the
    /// pool is short of its targets, and how many it holds beyond them.
    fn ip_target_state(&self) -> (u32, u32) {
        let s = self.settings;
        let (total, available) = (self.total() as i64, self.available() as i64);
        let (warm, min) = (s.warm_ip_target as i64, s.minimum_ip_target as i64);
        let short = (warm - available).max(min - total).max(0);
        let over = (available - warm).max(0).min(total - min).max(0);
        if !self.prefix_mode {
            return (short as u32, over as u32);
        }
        let per = IPS_PER_PREFIX;
        let prefixes = self.blocks() as i64;
        let needed_for_warm = div_ceil(self.assigned() + s.warm_ip_target, per) as i64;
        let needed_for_min = div_ceil(s.minimum_ip_target, per) as i64;
        let over = (self.free_blocks() as i64)
            .min(prefixes - needed_for_warm)
            .max(0)
            .min(prefixes - needed_for_min)
            .max(0);
        (div_ceil(short as u32, per), over as u32)
    }

    /// VPC CNI's `isDatastorePoolTooLow`.
    fn is_low(&self) -> bool {
        if self.max_pods > 0 && self.total() >= self.max_pods {
            return false;
        }
        if self.settings.warm_ip_targets_defined() {
            return self.ip_target_state().0 > 0;
        }
        let (target, per_target) = if self.prefix_mode {
            (self.settings.warm_prefix_target, IPS_PER_PREFIX)
        } else {
            (self.settings.warm_eni_target, self.max_slots)
        };
        let available = self.available();
        available < per_target * target || (target == 0 && available == 0)
    }

    /// VPC CNI's `getPrefixesNeeded`: at least one, else what the targets are short of.
    fn prefixes_needed(&self) -> u32 {
        let s = self.settings;
        let short = if s.warm_ip_targets_defined() {
            self.ip_target_state().0
        } else {
            s.warm_prefix_target.saturating_sub(self.free_blocks())
        };
        short.max(1)
    }

    /// Secondary IPs may not take the pool beyond max pods (VPC CNI may, by up to an ENI's
    /// worth; a prefix cannot be split, so prefix mode rounds up as VPC CNI does).
    fn clip_to_max_pods(&self, blocks: u32) -> u32 {
        if self.prefix_mode || self.max_pods == 0 {
            return blocks;
        }
        blocks.min(self.max_pods.saturating_sub(self.total()))
    }

    /// How many blocks one growth step asks for (VPC CNI's `tryAssignIPs`/`tryAssignPrefixes`
    /// and `GetENIResourcesToAllocate`).
    fn step_size(&self) -> u32 {
        let wanted = if self.prefix_mode {
            self.prefixes_needed()
        } else if self.settings.warm_ip_targets_defined() {
            self.ip_target_state().0
        } else {
            self.max_slots
        };
        self.clip_to_max_pods(wanted.min(self.max_slots))
    }

    fn add_blocks(&mut self, at: usize, count: u32) {
        let per = self.per_block;
        let eni = &mut self.enis[at];
        eni.slots += count;
        eni.mode_blocks += count;
        eni.total += count * per;
        eni.free_blocks += count;
        eni.added += count;
    }

    /// One iteration of VPC CNI's `increaseDatastorePool`: fill the first ENI with room (by
    /// device number; not the primary under custom networking), else create an ENI. False
    /// when nothing could be added.
    fn grow_step(&mut self, warnings: &mut Vec<String>) -> bool {
        let count = self.step_size();
        if count == 0 {
            return false;
        }
        let max_slots = self.max_slots;
        if let Some(at) = self
            .enis
            .iter()
            .position(|e| e.for_pods && e.changeable && e.slots < max_slots)
        {
            let room = max_slots - self.enis[at].slots;
            self.add_blocks(at, count.min(room));
            return true;
        }
        if self.enis.len() as u32 >= self.max_enis {
            return false;
        }
        let (subnet_id, security_groups) = match self.new_eni_placement() {
            Ok(placement) => placement,
            Err(why) => {
                warnings.push(why);
                return false;
            }
        };
        let addresses = 1 + count * self.per_block;
        if let Some(subnet) = self.subnets.iter_mut().find(|s| s.id == subnet_id) {
            subnet.free_addresses = subnet.free_addresses.saturating_sub(addresses);
        }
        let device = self.enis.iter().map(|e| e.device + 1).max().unwrap_or(0);
        self.enis.push(EniModel {
            id: None,
            device,
            primary: false,
            changeable: true,
            for_pods: true,
            slots: 0,
            mode_blocks: 0,
            total: 0,
            assigned: 0,
            free_blocks: 0,
            releasable: Vec::new(),
            has_pods: false,
            cooling: false,
            age_ms: 0,
            added: 0,
            subnet_id,
            security_groups,
        });
        let at = self.enis.len() - 1;
        self.add_blocks(at, count);
        true
    }

    /// Subnet and security groups of a new ENI (VPC CNI's `tryAllocateENI`/`createENI`).
    fn new_eni_placement(&self) -> Result<(String, Vec<String>), String> {
        let s = self.settings;
        let node = self
            .enis
            .iter()
            .find(|e| e.primary)
            .ok_or("no primary ENI in the pool view: cannot tell the node's subnet")?;
        let mut node_groups = node.security_groups.clone();
        node_groups.sort();
        if s.custom_networking {
            let subnet = s
                .eni_config_subnet
                .clone()
                .ok_or("custom networking without ENI_CONFIG_SUBNET")?;
            let groups = if s.eni_config_security_groups.is_empty() {
                node_groups
            } else {
                s.eni_config_security_groups.clone()
            };
            return Ok((subnet, groups));
        }
        let node_subnet_excluded = self
            .subnets
            .iter()
            .any(|sn| sn.id == node.subnet_id && tag(sn, SUBNET_DISCOVERY_TAG) == Some("0"));
        if !s.subnet_discovery || self.subnets.is_empty() {
            if node_subnet_excluded {
                return Err(format!(
                    "no subnet for a new ENI: the node's subnet {} is tagged {SUBNET_DISCOVERY_TAG}=0",
                    node.subnet_id
                ));
            }
            return Ok((node.subnet_id.clone(), node_groups));
        }
        // VPC CNI's isSubnetValidForENICreation.
        let valid = |subnet: &Subnet| -> bool {
            match tag(subnet, SUBNET_DISCOVERY_TAG) {
                Some("0") => false,
                None | Some("") => subnet.id == node.subnet_id,
                Some(_) => match &s.cluster_name {
                    None => true,
                    Some(cluster) => {
                        let mine = format!("{CLUSTER_TAG_PREFIX}{cluster}");
                        let scoped = subnet
                            .tags
                            .iter()
                            .any(|t| t.key.starts_with(CLUSTER_TAG_PREFIX));
                        !scoped || subnet.tags.iter().any(|t| t.key == mine)
                    }
                },
            }
        };
        self.subnets
            .iter()
            .filter(|subnet| valid(subnet))
            .max_by(|a, b| {
                a.free_addresses
                    .cmp(&b.free_addresses)
                    .then_with(|| b.id.cmp(&a.id))
            })
            .map(|subnet| (subnet.id.clone(), node_groups))
            .ok_or_else(|| {
                format!(
                    "no subnet for a new ENI: none of {} is the node's untagged subnet or tagged \
                     {SUBNET_DISCOVERY_TAG}=1 for this cluster",
                    self.subnets
                        .iter()
                        .map(|s| s.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    /// VPC CNI's `shouldRemoveExtraENIs`.
    fn should_remove_extra_enis(&self) -> bool {
        let s = self.settings;
        if s.warm_ip_targets_defined() {
            return true;
        }
        let target = if self.prefix_mode {
            s.warm_prefix_target
        } else {
            s.warm_eni_target
        };
        let ips_per_eni = self.max_slots * self.per_block;
        self.available() >= (target + 1) * ips_per_eni
            || (self.prefix_mode && self.enis.iter().any(|e| !e.primary && !e.has_pods))
    }

    /// VPC CNI's `getDeletableENI`, highest device number first.
    fn deletable_eni(&self) -> Option<usize> {
        let s = self.settings;
        let round = |target: u32| {
            if self.prefix_mode {
                div_ceil(target, IPS_PER_PREFIX) * IPS_PER_PREFIX
            } else {
                target
            }
        };
        (0..self.enis.len()).rev().find(|at| {
            let eni = &self.enis[*at];
            let others = || {
                self.enis
                    .iter()
                    .enumerate()
                    .filter(|(i, e)| i != at && e.for_pods)
                    .map(|(_, e)| e)
            };
            let required_for_warm_ip = s.warm_ip_target != 0
                && others().map(|e| e.total - e.assigned).sum::<u32>() < round(s.warm_ip_target);
            let required_for_min_ip = s.minimum_ip_target != 0
                && others().map(|e| e.total).sum::<u32>() < round(s.minimum_ip_target);
            let required_for_warm_prefix = self.prefix_mode
                && s.warm_prefix_target != 0
                && others().map(|e| e.free_blocks).sum::<u32>() < s.warm_prefix_target;
            eni.id.is_some()
                && !eni.primary
                && eni.changeable
                && eni.age_ms >= MIN_ENI_AGE_MS
                && !eni.cooling
                && !eni.has_pods
                && !required_for_warm_ip
                && !required_for_min_ip
                && !required_for_warm_prefix
        })
    }

    /// Blocks to give back beyond the targets (VPC CNI's `tryUnassignCidrsFromAll`): only
    /// with WARM_IP/MINIMUM_IP set, or WARM_PREFIX in prefix mode.
    fn blocks_over_target(&self) -> u32 {
        if self.settings.warm_ip_targets_defined() {
            self.ip_target_state().1
        } else if self.prefix_mode {
            self.free_blocks()
                .saturating_sub(self.settings.warm_prefix_target)
        } else {
            0
        }
    }
}

/// The value of a subnet's tag `key`.
fn tag<'s>(subnet: &'s Subnet, key: &str) -> Option<&'s str> {
    subnet
        .tags
        .iter()
        .find(|t| t.key == key)
        .map(|t| t.value.as_str())
}

/// VPC CNI's pool decision for `pool` under `settings`: leftovers of the other mode freed,
/// then either growth (fill ENIs by device number, then new ENIs) or shrinkage (ENIs VPC CNI
/// would delete, then blocks beyond the targets), merged into one request per ENI.
pub fn plan(pool: &Pool, settings: &Settings) -> Plan {
    let mut out = Plan {
        warnings: settings.warnings(pool.node.limits.prefix_delegation, &pool.node.instance_type),
        ..Plan::default()
    };
    if pool.node.provider != ProviderKind::Ec2 || pool.node.limits.max_enis == 0 {
        return out; // static ranges: nothing to plan
    }
    let mut model = Model::new(pool, settings, &mut out.intents);

    // Every step adds at least one slot, so this bounds the loop.
    let bound = model.max_enis * model.max_slots.max(1) + 1;
    let mut grew = false;
    for _ in 0..bound {
        if !model.is_low() || !model.grow_step(&mut out.warnings) {
            break;
        }
        grew = true;
    }
    if model.is_low() && !grew {
        out.warnings.push(format!(
            "pool is below its target ({} of {} addresses available) and cannot grow: {} of {} \
             ENI(s) attached and none has a free address slot",
            model.available(),
            model.total(),
            model.enis.len(),
            model.max_enis,
        ));
    }
    let prefix_mode = model.prefix_mode;
    for eni in model.enis.iter().filter(|e| e.added > 0) {
        out.intents.push(match (&eni.id, prefix_mode) {
            (Some(id), false) => Intent::AssignIps {
                eni_id: id.clone(),
                count: eni.added,
            },
            (Some(id), true) => Intent::AssignPrefixes {
                eni_id: id.clone(),
                count: eni.added,
            },
            (None, _) => Intent::CreateEni {
                subnet_id: eni.subnet_id.clone(),
                security_groups: eni.security_groups.clone(),
                secondary_ips: if prefix_mode { 0 } else { eni.added },
                prefixes: if prefix_mode { eni.added } else { 0 },
            },
        });
    }
    if grew {
        return out;
    }

    while model.should_remove_extra_enis() {
        let Some(at) = model.deletable_eni() else {
            break;
        };
        let eni = model.enis.remove(at);
        if let Some(eni_id) = eni.id {
            out.intents.push(Intent::DeleteEni { eni_id });
        }
    }

    let mut over = model.blocks_over_target();
    for eni in model.enis.iter().rev() {
        if over == 0 {
            break;
        }
        let (Some(eni_id), false, true) = (&eni.id, eni.releasable.is_empty(), eni.changeable)
        else {
            continue;
        };
        let take = eni.releasable.len().min(over as usize);
        over -= take as u32;
        let chosen: Vec<(u32, u8)> = eni.releasable[..take].to_vec();
        out.intents.push(if prefix_mode {
            Intent::ReleasePrefixes {
                eni_id: eni_id.clone(),
                prefixes: chosen,
            }
        } else {
            Intent::ReleaseIps {
                eni_id: eni_id.clone(),
                addresses: chosen.into_iter().map(|(ip, _)| ip).collect(),
            }
        });
    }
    out
}
