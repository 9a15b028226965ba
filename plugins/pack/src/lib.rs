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

use planner::Settings;
use wasmcni_plugin_sdk::allocator::{issue_all, log, setting, Guest, Pod, Pool};

struct Pack;

/// The address `pack` gives the next pod: the lowest free address of the block holding the most
/// pods among the blocks with room (the first such block on a tie).
pub fn choose(pool: &Pool) -> Result<u32, String> {
    let mut best: Option<(usize, u32)> = None; // (pods in the block, its lowest free address)
    for block in &pool.blocks {
        if let Some(ip) = pool.free_in(block).next() {
            let held = pool.held_in(block);
            if best.is_none_or(|(most, _)| held > most) {
                best = Some((held, ip));
            }
        }
    }
    best.map(|(_, ip)| ip)
        .ok_or_else(|| format!("no free address in {} block(s)", pool.blocks.len()))
}

impl Guest for Pack {
    fn allocate(_pod: Pod) -> Result<u32, String> {
        choose(&Pool::read_addresses())
    }

    fn plan() -> Result<(), String> {
        let defaults = Settings::default();
        let settings = Settings {
            warm_ips: setting("WARM_IPS")?.unwrap_or(defaults.warm_ips),
            prefix_delegation: setting("ENABLE_PREFIX_DELEGATION")?
                .unwrap_or(defaults.prefix_delegation),
            min_eni_age_ms: setting::<u64>("MIN_ENI_AGE_SECONDS")?
                .map_or(defaults.min_eni_age_ms, |s| s.saturating_mul(1000)),
        };
        settings.validate()?;
        let decided = planner::plan(&Pool::read(), &settings);
        for warning in &decided.warnings {
            log::log(log::Level::Warn, warning);
        }
        issue_all(&decided.intents);
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Pack);
