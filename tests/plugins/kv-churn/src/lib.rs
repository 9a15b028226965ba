//! `kv-churn`: an allocator whose `allocate` sets and deletes one small `kv` key in an endless
//! loop. `plan` does nothing. Imports `kv` only.
//!
//! Every call stays within the `kv` quota, so no `set` is refused and fuel runs long. The host
//! must end the call at its budget of host calls (or its deadline), fail the ADD (allocate
//! fails closed) and keep none of the writes.

use wasmcni_plugin_sdk::allocator::{kv, Guest, IpAddress, Pod};

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        loop {
            kv::set("churn", b"x")?;
            kv::delete("churn");
        }
    }

    fn plan() -> Result<(), String> {
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
