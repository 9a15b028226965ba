//! `outside-pool`: an allocator whose `allocate` answers 8.8.8.8, outside every pool block.
//!
//! The host must refuse the answer (not a free address of the pool), fail that ADD, and hand
//! the address to no pod. `plan` does nothing. Imports nothing.

use wasmcni_plugin_sdk::allocator::{Guest, Pod};

struct Plugin;

impl Guest for Plugin {
    fn allocate(_pod: Pod) -> Result<u32, String> {
        Ok(0x0808_0808) // 8.8.8.8
    }

    fn plan() -> Result<(), String> {
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
