//! `leftovers`: an allocator that looks for what an earlier call left in its memory.
//!
//! Every call must start from the component's pristine image. Each `allocate` (and `plan`)
//! checks, reading memory raw where an allocator could hide a leftover by zeroing what it hands
//! out:
//! - a static counter at zero (`.bss`, one word);
//! - an initialised static with its initial bytes (the data segment: resetting it means
//!   copying the image back);
//! - a 512 KiB zeroed static, all zero (`.bss`, across and beyond the host's 128 KiB resident
//!   reset size);
//! - 4 pages from a raw `memory.grow`, all zero (past everything the call's allocator had);
//! - buffers of 300 KiB and 2 MiB from the allocator, all zero (too large for the SDK's call
//!   arena, which zeroes what it hands out: the standard allocator trusts fresh pages to be zero);
//!
//! then dirties every one of them. Answers 10.0.0.1 when memory was pristine, an error naming
//! what carried over otherwise.

use std::sync::atomic::{AtomicU32, Ordering};

use wasmcni_plugin_sdk::allocator::{Guest, IpAddress, Pod};

static CALLS: AtomicU32 = AtomicU32::new(0);

/// In the data segment (not zero), so that resetting it means copying the image back.
static mut DATA: [u8; 8192] = [7; 8192];

/// Zero in the image, so in `.bss`: no bytes in the component, only in linear memory.
const BSS_BYTES: usize = 512 << 10;
static mut BSS: [u8; BSS_BYTES] = [0; BSS_BYTES];

/// Pages a call grows its memory by, raw.
const GROWN_PAGES: usize = 4;

/// The first byte of `bytes` that is not `expected`.
fn first_other(bytes: &[u8], expected: u8) -> Option<usize> {
    bytes.iter().position(|b| *b != expected)
}

struct Plugin;

/// Checks every place, then dirties it; an error names every leftover found (so a test can see
/// each check fail on an instance that is not reset).
fn check_and_dirty() -> Result<(), String> {
    let mut found = Vec::new();
    let calls = CALLS.fetch_add(1, Ordering::Relaxed);
    if calls != 0 {
        found.push(format!("a static counter carried over: {calls}"));
    }
    // SAFETY: one thread; no reference to DATA outlives this block.
    let data = unsafe { &mut *std::ptr::addr_of_mut!(DATA) };
    if let Some(at) = first_other(data, 7) {
        found.push(format!("the data segment carried over a write at {at}"));
    }
    data.fill(0x55);
    std::hint::black_box(&data);
    // SAFETY: as for DATA.
    let bss = unsafe { &mut *std::ptr::addr_of_mut!(BSS) };
    if let Some(at) = first_other(bss, 0) {
        found.push(format!("the .bss carried over a write at {at}"));
    }
    bss.fill(0x5a);
    std::hint::black_box(&bss);
    let first_page = core::arch::wasm32::memory_grow(0, GROWN_PAGES);
    if first_page == usize::MAX {
        return Err(format!("memory.grow of {GROWN_PAGES} pages was refused"));
    }
    // SAFETY: the pages were just added to memory 0 and nothing else refers to them (the
    // allocator grows memory by its own calls, after these pages).
    let grown = unsafe {
        core::slice::from_raw_parts_mut((first_page * 65536) as *mut u8, GROWN_PAGES * 65536)
    };
    if let Some(at) = first_other(grown, 0) {
        found.push(format!(
            "a page from memory.grow holds old bytes at offset {at} of page {first_page}"
        ));
    }
    grown.fill(0xcd);
    std::hint::black_box(&grown);
    for size in [300 << 10, 2 << 20] {
        let mut buffer = vec![0u8; size];
        if let Some(at) = first_other(&buffer, 0) {
            found.push(format!(
                "a fresh {size}-byte buffer holds old bytes at {at}"
            ));
        }
        buffer.fill(0xab);
        std::hint::black_box(&buffer);
        std::mem::forget(buffer);
    }
    match found.is_empty() {
        true => Ok(()),
        false => Err(found.join("; ")),
    }
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
