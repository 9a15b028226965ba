//! `in-use`: an allocator whose `allocate` answers an address a pod already holds (the first of
//! `pool-view.in-use`), or an error while nothing is held.
//!
//! The host must refuse the answer, fail that ADD, and never give one address to two pods.
//! `plan` does nothing. Imports `pool-view`.

use wasmcni_plugin_sdk::allocator::{pool_view, Guest, IpAddress, Pod};

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        pool_view::in_use()
            .first()
            .copied()
            .map(IpAddress::V4)
            .ok_or_else(|| "nothing in use yet".to_string())
    }

    fn plan() -> Result<(), String> {
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
