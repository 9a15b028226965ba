//! `out-of-bounds`: an allocator that reaches past the end of its linear memory — `allocate`
//! reads a word just beyond it, `plan` first grows its memory by 1 MiB, then writes one
//! beyond the new end.
//!
//! Either must trap ("out of bounds memory access"), and the next call must run normally:
//! an `allocate` after a `plan` runs in an instance slot whose last user was 1 MiB larger,
//! and must still find the end where its own memory ends.

use wasmcni_plugin_sdk::allocator::{Guest, IpAddress, Pod};

struct Plugin;

/// The first address past the end of linear memory (plus `offset`).
fn past_the_end(offset: usize) -> *mut u32 {
    (core::arch::wasm32::memory_size(0) * 65536 + offset) as *mut u32
}

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        // SAFETY: none; reaching outside its memory is what this plugin is for.
        Ok(IpAddress::V4(unsafe {
            core::ptr::read_volatile(past_the_end(8))
        }))
    }

    fn plan() -> Result<(), String> {
        if core::arch::wasm32::memory_grow(0, 16) == usize::MAX {
            return Err("memory.grow refused".into());
        }
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(past_the_end(0), 0xdead_beef) };
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
