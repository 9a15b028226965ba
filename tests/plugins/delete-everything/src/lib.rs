//! `delete-everything`: an allocator whose `plan` asks to give back every secondary address and
//! delete every secondary ENI it sees, and the ENIs listed in the setting `extra_enis`
//! (comma-separated ids it does not see, such as a trunk ENI). `allocate` is well behaved.
//! Imports `config`, `pool-view`, `eni-ops`.
//!
//! The host must refuse every request on an ENI it does not own (an operator's ENI without
//! wasmcni's ownership tags; a trunk, branch, EFA or `no_manage` interface, which is not even
//! shown), naming why, and carry out only what it may: on a node where the primary ENI is
//! the only one it owns, nothing but giving back the primary's free secondary addresses.

use wasmcni_plugin_sdk::allocator::{config, eni_ops, lowest_free, Guest, IpAddress, Pod, Pool};

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        lowest_free().map(IpAddress::from)
    }

    fn plan() -> Result<(), String> {
        let pool = Pool::read();
        let extra = config::get("extra_enis").unwrap_or_default();
        let mut targets: Vec<String> = pool
            .enis
            .iter()
            .filter(|e| !e.primary)
            .map(|e| e.id.clone())
            .collect();
        targets.extend(
            extra
                .split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(String::from),
        );
        for eni in &targets {
            let addresses: Vec<u32> = pool
                .blocks_of(eni)
                .filter(|b| b.cidr.prefix_len == 32)
                .map(|b| b.cidr.network)
                .filter(|ip| !pool.in_use.contains(&(*ip).into()))
                .collect();
            if !addresses.is_empty() {
                let _ = eni_ops::release_ips(eni, &addresses);
            }
            let _ = eni_ops::delete_eni(eni);
        }
        // The same for ids it only knows from the setting, with a made-up address.
        for eni in extra.split(',').map(str::trim).filter(|id| !id.is_empty()) {
            let _ = eni_ops::release_ips(eni, &[0x0a00_0005]);
        }
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
