//! `panics`: an allocator whose `allocate` panics (built with `panic = "abort"`, so it traps
//! with `unreachable`).
//!
//! The host must report the trap, fail that ADD, reserve nothing, and keep serving. `plan` does
//! nothing.

use wasmcni_plugin_sdk::allocator::{Guest, IpAddress, Pod};

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(pod: Pod) -> Result<IpAddress, String> {
        panic!("allocator bug for {}", pod.container_id)
    }

    fn plan() -> Result<(), String> {
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
