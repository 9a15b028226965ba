//! `outside-pool`: an allocator whose `allocate` answers 8.8.8.8, outside every pool block.
//!
//! The host must refuse the answer (not a free address of the pool), fail that ADD, and hand
//! the address to no pod. `plan` does nothing. Imports nothing.

use wasmcni_plugin_sdk::allocator::{Guest, IpAddress, Pod};

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        Ok(IpAddress::V4(0x0808_0808)) // 8.8.8.8
    }

    fn plan() -> Result<(), String> {
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
