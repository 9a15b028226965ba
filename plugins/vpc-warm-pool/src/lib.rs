//! `vpc-warm-pool`: AWS VPC CNI's warm-pool allocator, so a node moves from `aws-node` to
//! wasmcni by copying its environment variables into the plugin's settings.
//!
//! `plan` reproduces VPC CNI's pool control loop (`WARM_ENI_TARGET`, `WARM_IP_TARGET`,
//! `MINIMUM_IP_TARGET`, `WARM_PREFIX_TARGET`, prefix delegation, `MAX_ENI`, custom networking,
//! subnet discovery) and `allocate` its choice of address, made deterministic: ENIs by device
//! number, the lowest free address. Every decision is a pure function of the pool snapshot and
//! the settings ([`planner::plan`], [`choose`]); the `Guest` impl only reads, decides and
//! issues the requests.

pub mod planner;
pub mod settings;

#[cfg(test)]
mod tests;

use core::net::Ipv4Addr;

use settings::Settings;
use wasmcni_plugin_sdk::allocator::{
    config, issue_all, log, setting, BlockKind, Guest, IpAddress, Pod, Pool,
};

/// The address VPC CNI's `AssignPodIPv4Address` would give, made deterministic: ENIs by device
/// number (the primary skipped under custom networking), only /28 prefixes in prefix mode and
/// only secondary IPs otherwise, the lowest free address (not held, cooling or excluded).
/// Static ranges (the static provider, no EC2) come after, in the provider's order.
pub fn choose(pool: &Pool, settings: &Settings) -> Result<Ipv4Addr, String> {
    let kind = if planner::prefix_mode(settings, pool) {
        BlockKind::Prefix
    } else {
        BlockKind::SecondaryIp
    };
    let mut enis: Vec<_> = pool
        .enis
        .iter()
        .filter(|e| !(settings.custom_networking && e.primary))
        .collect();
    enis.sort_by_key(|e| e.device_number);
    let from_enis = enis.iter().find_map(|eni| {
        pool.blocks_of(&eni.id)
            .filter(|b| b.kind == kind)
            .filter_map(|b| pool.free_in(b).next())
            .min()
    });
    from_enis
        .or_else(|| {
            pool.blocks
                .iter()
                .filter(|b| b.kind == BlockKind::StaticRange)
                .find_map(|b| pool.free_in(b).next())
        })
        .ok_or_else(|| {
            format!(
                "no free address among {} {} block(s) of {} ENI(s): the pool grows on the next plan",
                pool.blocks.iter().filter(|b| b.kind == kind).count(),
                if kind == BlockKind::Prefix {
                    "prefix"
                } else {
                    "secondary-IP"
                },
                enis.len()
            )
        })
}

fn read_settings(pool: &Pool) -> Result<Settings, String> {
    Settings::from_config(setting::<String>, &pool.node.availability_zone)
}

struct VpcWarmPool;

impl Guest for VpcWarmPool {
    /// Checks the settings as each zone a per-zone ENIConfig names would read them (the
    /// node's own zone is known only from a call's pool), or, without per-zone keys, as any
    /// node reads them.
    fn init() -> Result<(), String> {
        let zones: Vec<String> = config::all()
            .into_iter()
            .filter_map(|pair| {
                let zone = pair.key.strip_prefix("ENI_CONFIG_SUBNET.")?;
                Some(zone.to_owned())
            })
            .collect();
        if zones.is_empty() {
            return Settings::from_config(setting::<String>, "").map(drop);
        }
        zones
            .iter()
            .try_for_each(|zone| Settings::from_config(setting::<String>, zone).map(drop))
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        let pool = Pool::read();
        choose(&pool, &read_settings(&pool)?).map(IpAddress::from)
    }

    fn plan() -> Result<(), String> {
        let pool = Pool::read();
        let settings = read_settings(&pool)?;
        let decided = planner::plan(&pool, &settings);
        for warning in &decided.warnings {
            log::log(log::Level::Warn, warning);
        }
        issue_all(&decided.intents);
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(VpcWarmPool);
