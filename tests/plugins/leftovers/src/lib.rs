//! `leftovers`: an allocator that looks for what an earlier call left in its memory.
//!
//! Every call must start from the component's pristine image: a static counter at zero, an
//! initialised static with its initial bytes, and memory the allocator hands out zeroed (its
//! `alloc_zeroed` trusts fresh wasm pages to be zero, so a slot that was not reset shows the
//! bytes the previous call wrote). Each `allocate` checks all three, then dirties them: the
//! static, a page-sized buffer, one beyond the host's resident reset size and one of 2 MiB.
//! Answers 10.0.0.1 when memory was pristine, an error naming what carried over otherwise.

use std::sync::atomic::{AtomicU32, Ordering};

use wasmcni_plugin_sdk::allocator::{Guest, IpAddress, Pod};

static CALLS: AtomicU32 = AtomicU32::new(0);

/// In the data segment (not zero), so that resetting it means copying the image back.
static mut DATA: [u8; 8192] = [7; 8192];

struct Plugin;

fn check_and_dirty() -> Result<(), String> {
    let calls = CALLS.fetch_add(1, Ordering::Relaxed);
    if calls != 0 {
        return Err(format!("a static counter carried over: {calls}"));
    }
    // SAFETY: one thread; no reference to DATA outlives this block.
    let data = unsafe { &mut *std::ptr::addr_of_mut!(DATA) };
    if let Some(at) = data.iter().position(|b| *b != 7) {
        return Err(format!("the data segment carried over a write at {at}"));
    }
    data.fill(0x55);
    std::hint::black_box(&data);
    for size in [4 << 10, 300 << 10, 2 << 20] {
        let mut buffer = vec![0u8; size];
        if let Some(at) = buffer.iter().position(|b| *b != 0) {
            return Err(format!(
                "a fresh {size}-byte buffer holds old bytes at {at}"
            ));
        }
        buffer.fill(0xab);
        std::hint::black_box(&buffer);
        std::mem::forget(buffer);
    }
    Ok(())
}

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        check_and_dirty().map(|()| IpAddress::V4(0x0a00_0001))
    }

    fn plan() -> Result<(), String> {
        check_and_dirty()
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
