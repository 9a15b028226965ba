//! `huge-error`: an allocator whose `allocate` answers an 8 MiB error message.
//!
//! The host must fail that ADD with a bounded message (truncated, not 8 MiB into the CNI
//! result, logs or audit log) and keep serving. `plan` does nothing.

use wasmcni_plugin_sdk::allocator::{Guest, Pod};

struct Plugin;

impl Guest for Plugin {
    fn allocate(_pod: Pod) -> Result<u32, String> {
        Err("x".repeat(8 << 20))
    }

    fn plan() -> Result<(), String> {
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
