//! `built-for-0-2`: a well-behaved allocator built against `wasmcni:plugin@0.2.0`, the package
//! before 0.3 (bare `allocate`/`plan` exports, addresses as `u32`, string codes). Its WIT is
//! that release's `wit/plugin.wit`, frozen in `wit/`.
//!
//! The host must refuse to load it with an error naming both versions (0.2.0 and the
//! daemon's), before linking; `audit` reports the same problem.

wit_bindgen::generate!({ path: "wit", world: "allocator" });

struct Plugin;

impl Guest for Plugin {
    fn allocate(_pod: wasmcni::plugin::types::Pod) -> Result<u32, String> {
        Ok(0x0a00_0001)
    }

    fn plan() -> Result<(), String> {
        Ok(())
    }
}

export!(Plugin);
