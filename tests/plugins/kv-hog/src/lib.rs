//! `kv-hog`: an allocator whose `allocate` fills its `kv` store with 4 KiB values (`hog-00000`,
//! `hog-00001`, ...) until `set` refuses, then answers normally: the lowest free address. If
//! 16 MiB go in without a refusal it answers an error instead, so a host that does not enforce
//! `max_bytes` fails the test loudly. `plan` does nothing. Imports `pool-view`, `kv`.
//!
//! The host must refuse the `set` that would take the store past the grant's `max_bytes`, with
//! a reason, and keep the writes made before it (the call succeeds): the store never holds more
//! than `max_bytes`, and the ADD gets its address.

use wasmcni_plugin_sdk::allocator::{kv, lowest_free, Guest, IpAddress, Pod};

struct Plugin;

const VALUE_BYTES: usize = 4096;
const MAX_WRITES: usize = (16 << 20) / VALUE_BYTES;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        let value = vec![0x5a_u8; VALUE_BYTES];
        let refused = (0..MAX_WRITES).any(|n| kv::set(&format!("hog-{n:05}"), &value).is_err());
        if !refused {
            return Err(format!(
                "kv accepted {MAX_WRITES} values of {VALUE_BYTES} bytes without refusing one"
            ));
        }
        lowest_free().map(IpAddress::from)
    }

    fn plan() -> Result<(), String> {
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
