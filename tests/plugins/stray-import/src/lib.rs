//! `stray-import`: an allocator whose `allocate` calls `eni-ops` (`delete-eni`), so the
//! component imports `wasmcni:plugin/eni-ops@0.3.0` — and nothing else. Meant to be configured
//! without an `eni-ops` grant.
//!
//! The host must refuse to load it, at link time, with an error naming the plugin and the
//! import `wasmcni:plugin/eni-ops@0.3.0` (the daemon does not start, a reload is rejected and
//! the running configuration stays, `audit` reports it under-granted and exits 1); `allocate`
//! never runs.

use wasmcni_plugin_sdk::allocator::{eni_ops, Guest, IpAddress, Pod};

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        eni_ops::delete_eni("eni-stray")?;
        Err("stray-import must never have been loaded".into())
    }

    fn plan() -> Result<(), String> {
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
