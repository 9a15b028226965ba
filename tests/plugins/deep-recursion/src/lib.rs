//! `deep-recursion`: an allocator whose `allocate` recurses without end.
//!
//! The host must catch the overflow of its bounded Wasm stack ("overflowed its stack"), fail
//! that ADD, reserve nothing, and keep serving. `plan` does nothing.

use wasmcni_plugin_sdk::allocator::{Guest, IpAddress, Pod};

struct Plugin;

// Recursing without end is the point of this plugin.
#[allow(unconditional_recursion)]
fn descend(depth: u64) -> u64 {
    core::hint::black_box(descend(core::hint::black_box(depth + 1)) + 1)
}

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        Ok(IpAddress::V4(descend(0) as u32))
    }

    fn plan() -> Result<(), String> {
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
