//! `pack`: an allocation strategy that fills the densest address block first.
//!
//! AWS VPC CNI picks ENIs and prefixes in map order, which scatters pods and leaves partly used
//! /28s everywhere, so none can be released. `pack` always takes the block that already holds
//! the most pods (among those with room), and in it the lowest free address, so pods
//! concentrate and whole blocks drain together. Deterministic: the same pool gives the same
//! answer.

wit_bindgen::generate!({
    path: "../../wit",
    world: "allocator",
});

use wasmcni::plugin::pool_view;
use wasmcni::plugin::types::AddressBlock;

struct Pack;

/// Usable addresses of a block: /30 and larger lose their network and broadcast addresses.
fn usable(block: &AddressBlock) -> impl Iterator<Item = u32> {
    let size: u64 = 1 << (32 - u32::from(block.prefix_len.min(32)));
    let (first, count) = if block.prefix_len >= 31 {
        (u64::from(block.network), size)
    } else {
        (u64::from(block.network) + 1, size.saturating_sub(2))
    };
    (first..first + count).map(|a| a as u32)
}

impl Guest for Pack {
    fn allocate(_pod: Pod) -> Result<u32, String> {
        let blocks = pool_view::blocks();
        let mut in_use = pool_view::in_use();
        in_use.sort_unstable();
        let mut excluded = pool_view::excluded();
        excluded.sort_unstable();
        let taken =
            |ip: &u32| in_use.binary_search(ip).is_ok() || excluded.binary_search(ip).is_ok();

        let mut best: Option<(usize, u32)> = None; // (pods in the block, its lowest free address)
        for block in &blocks {
            let mut used = 0usize;
            let mut lowest_free = None;
            for ip in usable(block) {
                if in_use.binary_search(&ip).is_ok() {
                    used += 1;
                } else if lowest_free.is_none() && !taken(&ip) {
                    lowest_free = Some(ip);
                }
            }
            if let Some(ip) = lowest_free {
                if best.is_none_or(|(most, _)| used > most) {
                    best = Some((used, ip));
                }
            }
        }
        best.map(|(_, ip)| ip)
            .ok_or_else(|| format!("no free address in {} block(s)", blocks.len()))
    }
}

export!(Pack);
