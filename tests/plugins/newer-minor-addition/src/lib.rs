//! `newer-minor-addition`: an allocator built against a newer 0.3.x (`../newer-minor/wit`,
//! 0.3.9) whose `allocate` calls `clock.now-monotonic-ns`, which 0.3.0 does not have.
//!
//! A 0.3.0 daemon must refuse to load it, at link time, naming both versions and the missing
//! function; `allocate` never runs.

wit_bindgen::generate!({ path: "../newer-minor/wit", world: "allocator-plugin" });

use exports::wasmcni::plugin::allocator::Guest;
use wasmcni::plugin::types::{IpAddress, Pod};

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        let _ = wasmcni::plugin::clock::now_monotonic_ns();
        Err("newer-minor-addition must never have been loaded".into())
    }

    fn plan() -> Result<(), String> {
        Ok(())
    }
}

export!(Plugin);
