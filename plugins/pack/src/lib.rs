//! `pack`: an allocation strategy that fills the densest address block first.
//!
//! AWS VPC CNI picks ENIs and prefixes in map order, which scatters pods and leaves partly used
//! /28s everywhere, so none can be released. `pack` always takes the block that already holds
//! the most pods (among those with room), and in it the lowest free address, so pods
//! concentrate and whole blocks drain together. Deterministic: the same pool gives the same
//! answer.
//!
//! `plan` ([`planner::plan`]) keeps `WARM_IPS` free addresses the same way: it grows the
//! densest ENI that has room and shrinks the least dense one first.

pub mod planner;

#[cfg(test)]
mod tests;

use core::net::Ipv4Addr;
use planner::Settings;
use wasmcni_plugin_sdk::allocator::{
    issue_all, log, pool_view, setting, BlockOccupancy, Guest, IpAddress, Pod, Pool,
};

struct Pack;

/// The address `pack` gives the next pod: the lowest free address of the block holding the most
/// pods among the blocks with room (the first such block on a tie).
pub fn choose(blocks: &[BlockOccupancy]) -> Result<Ipv4Addr, String> {
    let mut best: Option<(u32, u32)> = None; // (pods in the block, its lowest free address)
    for block in blocks {
        if let Some(ip) = block.lowest_free {
            if best.is_none_or(|(most, _)| block.held > most) {
                best = Some((block.held, ip));
            }
        }
    }
    best.map(|(_, ip)| Ipv4Addr::from(ip))
        .ok_or_else(|| format!("no free address in {} block(s)", blocks.len()))
}

/// The settings, checked: `WARM_IPS`, `ENABLE_PREFIX_DELEGATION`, `MIN_ENI_AGE_SECONDS`.
fn settings() -> Result<Settings, String> {
    let defaults = Settings::default();
    let settings = Settings {
        warm_ips: setting("WARM_IPS")?.unwrap_or(defaults.warm_ips),
        prefix_delegation: setting("ENABLE_PREFIX_DELEGATION")?
            .unwrap_or(defaults.prefix_delegation),
        min_eni_age_ms: setting::<u64>("MIN_ENI_AGE_SECONDS")?
            .map_or(defaults.min_eni_age_ms, |s| s.saturating_mul(1000)),
    };
    settings.validate()?;
    Ok(settings)
}

impl Guest for Pack {
    fn init() -> Result<(), String> {
        settings().map(drop)
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        choose(&pool_view::occupancy()).map(IpAddress::from)
    }

    fn plan() -> Result<(), String> {
        let settings = settings()?;
        let decided = planner::plan(&Pool::read(), &settings);
        for warning in &decided.warnings {
            log::log(log::Level::Warn, warning);
        }
        issue_all(&decided.intents);
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Pack);
