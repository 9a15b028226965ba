//! `alias-flood`: an allocator whose `plan` calls `eni-ops.create-eni` through the raw canonical
//! ABI (not through the bindings) with a `security-groups` list of 65,536 entries that all
//! point at the same 1 MiB string: 1.5 MiB of guest memory that a host lifting it naively would
//! turn into 64 GiB of strings. It returns Ok if the call ever returns. `allocate` is well
//! behaved. Imports `pool-view`, `eni-ops`.
//!
//! The host must trap the call at once, counting the bytes it lifts before it allocates them
//! (hostcall fuel), with nothing queued and the daemon's memory untouched.

use wasmcni_plugin_sdk::allocator::{lowest_free, Guest, IpAddress, Pod};

#[link(wasm_import_module = "wasmcni:plugin/eni-ops@0.3.0")]
extern "C" {
    /// `create-eni(new-eni) -> result<_, string>` flattened: subnet-id (pointer, length),
    /// security-groups (pointer, length), secondary-ips, prefixes, and the return area.
    #[link_name = "create-eni"]
    fn raw_create_eni(
        subnet: *const u8,
        subnet_len: usize,
        groups: *const [usize; 2],
        groups_len: usize,
        secondary_ips: u32,
        prefixes: u32,
        result: *mut u8,
    );
}

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        lowest_free().map(IpAddress::from)
    }

    fn plan() -> Result<(), String> {
        let shared = vec![b's'; 1 << 20];
        let entry = [shared.as_ptr() as usize, shared.len()];
        let groups = vec![entry; 1 << 16];
        let subnet = b"node";
        // The return area of `result<_, string>`: a discriminant and a string, 4-aligned.
        let mut result = [0u32; 3];
        // SAFETY: every pointer is to live memory of the stated length for the whole call; the
        // host writes at most 12 bytes to `result`.
        unsafe {
            raw_create_eni(
                subnet.as_ptr(),
                subnet.len(),
                groups.as_ptr(),
                groups.len(),
                1,
                0,
                result.as_mut_ptr().cast(),
            );
        }
        core::hint::black_box((&shared, &groups, &result));
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
