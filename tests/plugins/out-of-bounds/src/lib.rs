//! `out-of-bounds`: an allocator that reaches past the end of its linear memory — `allocate`
//! reads a word just beyond it, `plan` writes one.
//!
//! Either must trap ("out of bounds memory access") whatever mechanism the host's engine uses
//! to check bounds, and the next call must run normally.

use wasmcni_plugin_sdk::allocator::{Guest, Pod};

struct Plugin;

/// The first address past the end of linear memory (plus `offset`).
fn past_the_end(offset: usize) -> *mut u32 {
    (core::arch::wasm32::memory_size(0) * 65536 + offset) as *mut u32
}

impl Guest for Plugin {
    fn allocate(_pod: Pod) -> Result<u32, String> {
        // SAFETY: none; reaching outside its memory is what this plugin is for.
        Ok(unsafe { core::ptr::read_volatile(past_the_end(8)) })
    }

    fn plan() -> Result<(), String> {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(past_the_end(0), 0xdead_beef) };
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
