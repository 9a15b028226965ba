//! `memory-bomb`: an allocator whose `allocate` grabs 1 MiB after 1 MiB until memory runs out.
//!
//! The host must stop growth at the plugin's `memory_bytes` cap ("exceeded its memory limit"),
//! fail that ADD, reserve nothing, and keep serving with its own memory untouched. `plan` does
//! nothing.

use wasmcni_plugin_sdk::allocator::{Guest, IpAddress, Pod};

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(core::hint::black_box(vec![1u8; 1 << 20]));
        }
    }

    fn plan() -> Result<(), String> {
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
