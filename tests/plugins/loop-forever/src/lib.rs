//! `loop-forever`: an allocator whose `allocate` never returns.
//!
//! The host must stop it when its fuel runs out ("ran out of fuel"), fail that ADD (allocate
//! fails closed), reserve nothing, and keep serving. `plan` does nothing.

use wasmcni_plugin_sdk::allocator::{Guest, IpAddress, Pod};

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        let mut n: u32 = 0;
        loop {
            n = core::hint::black_box(n.wrapping_add(1));
        }
    }

    fn plan() -> Result<(), String> {
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
