//! `huge-error`: an allocator whose `allocate` answers an 8 MiB error message.
//!
//! The host must fail that ADD with a bounded message (not 8 MiB into the CNI result, logs or
//! audit log; the answer is more than one call may pass to the host, so the call traps as it
//! is read) and keep serving. `plan` does nothing.

use wasmcni_plugin_sdk::allocator::{Guest, IpAddress, Pod};

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        Err("x".repeat(8 << 20))
    }

    fn plan() -> Result<(), String> {
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
