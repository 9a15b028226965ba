//! The plugins' global allocator on wasm32: a bump arena in the module's own zeroed static
//! memory, then the standard allocator.
//!
//! The daemon runs every call in a fresh instance and resets its memory after, so what a call
//! allocates lives at most as long as the call: freeing can wait for the reset. What the arena
//! saves is `memory.grow`. The standard allocator grows linear memory on a call's first
//! allocation, and growing a memory the host guards with inaccessible pages means an `mprotect`
//! of the new pages, undone by another when the slot is reset for the next instance: two
//! system calls, each making the other core flush its TLB. The arena is part of the module's
//! initial memory (`.bss`, no bytes in the component), so a call that fits in it never grows
//! memory; a call that needs more gets it from the standard allocator, as before.
//!
//! On by default (feature `call-arena`); a plugin that brings its own global allocator turns
//! the SDK's default features off.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::alloc::System;

/// The arena's size: more than the SDK's plugins allocate in a call on a node's pool (a densely
/// used /16 would spill to the standard allocator), small next to the default 16 MiB memory
/// limit.
pub(crate) const ARENA_BYTES: usize = 256 * 1024;

#[repr(C, align(16))]
struct Arena(UnsafeCell<[u8; ARENA_BYTES]>);

// SAFETY: the arena's bytes are handed out by `CallArena` only, each range to one owner, and
// only on a single-threaded module (the SDK does not install the arena on wasm32 with threads).
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_BYTES]));

/// Bump allocation in [`ARENA`], then [`System`]. Freeing the latest arena allocation gives its
/// bytes back (so a growing `Vec` or `String` that is the last thing allocated grows in place);
/// any other arena allocation is freed by the instance's reset. One per module: every
/// `CallArena` bumps through the same static.
pub(crate) struct CallArena {
    /// Offset of the first free byte of the arena.
    next: AtomicUsize,
}

impl CallArena {
    pub(crate) const fn new() -> CallArena {
        CallArena {
            next: AtomicUsize::new(0),
        }
    }

    fn base() -> usize {
        ARENA.0.get() as usize
    }

    fn owns(ptr: *mut u8) -> bool {
        let at = ptr as usize;
        at >= Self::base() && at < Self::base() + ARENA_BYTES
    }

    /// `layout` carved from the arena, or null when it does not fit.
    fn bump(&self, layout: Layout) -> *mut u8 {
        let base = Self::base();
        let next = self.next.load(Ordering::Relaxed);
        // Alignments are powers of two; the arena's end bounds every sum below.
        let start = (base + next + layout.align() - 1) & !(layout.align() - 1);
        match start.checked_add(layout.size()) {
            Some(end) if end <= base + ARENA_BYTES => {
                self.next.store(end - base, Ordering::Relaxed);
                start as *mut u8
            }
            _ => core::ptr::null_mut(),
        }
    }

    /// Whether `ptr` (of `size` bytes) is the arena's latest allocation.
    fn is_latest(&self, ptr: *mut u8, size: usize) -> bool {
        ptr as usize + size == Self::base() + self.next.load(Ordering::Relaxed)
    }
}

// SAFETY: every pointer returned is either a range of the arena no other live allocation
// holds (the bump only moves back over the latest allocation, when it is freed or resized) or
// `System`'s; each is given back to whichever allocated it.
unsafe impl GlobalAlloc for CallArena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = self.bump(layout);
        if ptr.is_null() {
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc(layout) }
        } else {
            ptr
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if Self::owns(ptr) {
            if self.is_latest(ptr, layout.size()) {
                self.next
                    .store(ptr as usize - Self::base(), Ordering::Relaxed);
            }
        } else {
            // SAFETY: `ptr` came from `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !Self::owns(ptr) {
            // SAFETY: `ptr` came from `System` with this layout.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        if self.is_latest(ptr, layout.size())
            && ptr as usize + new_size <= Self::base() + ARENA_BYTES
        {
            self.next
                .store(ptr as usize + new_size - Self::base(), Ordering::Relaxed);
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: `new_size` is non-zero (larger than an existing size) and, rounded up to the
        // alignment, does not overflow (the caller's contract for `realloc`).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a valid layout.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both ranges are live and distinct; the old one holds `layout.size()` bytes.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size());
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

// Not where the arena is the global allocator: the test's own `CallArena` would hand out the
// same bytes.
#[cfg(all(
    test,
    not(all(
        target_arch = "wasm32",
        not(target_feature = "atomics"),
        feature = "call-arena"
    ))
))]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    // One test, so no other test's allocations share the (static) arena meanwhile: the arena
    // is not the global allocator of native test builds, only this instance allocates in it.
    #[test]
    fn bumps_aligned_gives_back_the_latest_and_spills_to_the_system_allocator() {
        let arena = CallArena::new();
        unsafe {
            let a = arena.alloc(layout(3, 1));
            let b = arena.alloc(layout(8, 8));
            assert!(CallArena::owns(a) && CallArena::owns(b));
            assert_eq!(b as usize % 8, 0);
            assert!(b as usize >= a as usize + 3);
            b.write_bytes(0xab, 8);
            // The latest grows in place, and gives its bytes back when freed.
            let grown = arena.realloc(b, layout(8, 8), 64);
            assert_eq!(grown, b);
            assert_eq!(*grown.add(7), 0xab);
            arena.dealloc(grown, layout(64, 8));
            assert_eq!(arena.alloc(layout(8, 8)), b);
            // An earlier allocation moves when it grows, its bytes with it.
            a.write_bytes(7, 3);
            let moved = arena.realloc(a, layout(3, 1), 100);
            assert_ne!(moved, a);
            assert!(CallArena::owns(moved));
            assert_eq!(core::slice::from_raw_parts(moved, 3), &[7, 7, 7]);
            // Shrinking the latest keeps the place and gives the rest back.
            assert_eq!(arena.realloc(moved, layout(100, 1), 10), moved);
            assert_eq!(
                arena.next.load(Ordering::Relaxed),
                moved as usize + 10 - CallArena::base()
            );
            // An earlier one shrinks in place too, and freeing it gives nothing back (the reset
            // will): the latest stays where it is.
            let c = arena.alloc(layout(16, 1));
            let top = arena.next.load(Ordering::Relaxed);
            assert_eq!(arena.realloc(moved, layout(10, 1), 4), moved);
            arena.dealloc(moved, layout(4, 1));
            assert_eq!(arena.next.load(Ordering::Relaxed), top);
            assert!(CallArena::owns(c));
            // What does not fit comes from the system allocator, and goes back to it.
            let big = arena.alloc(layout(ARENA_BYTES, 16));
            assert!(!big.is_null() && !CallArena::owns(big));
            big.write_bytes(1, ARENA_BYTES);
            arena.dealloc(big, layout(ARENA_BYTES, 16));
            // Filled to the end, then spilled.
            let used = arena.next.load(Ordering::Relaxed);
            let rest = arena.alloc(layout(ARENA_BYTES - used, 1));
            assert!(CallArena::owns(rest));
            let spilled = arena.alloc(layout(1, 1));
            assert!(!CallArena::owns(spilled));
            arena.dealloc(spilled, layout(1, 1));
            // Growing past the end moves the latest out of the arena.
            let out = arena.realloc(rest, layout(ARENA_BYTES - used, 1), ARENA_BYTES);
            assert!(!CallArena::owns(out));
            arena.dealloc(out, layout(ARENA_BYTES, 1));
        }
    }
}
