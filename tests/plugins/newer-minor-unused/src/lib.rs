//! `newer-minor-unused`: an allocator built against a newer 0.3.x (`../newer-minor/wit`,
//! 0.3.9) that uses only what 0.3.0 has: `clock.now-unix-ms`, and the 0.3 exports.
//!
//! A 0.3.0 daemon must load it (given the `clock` grant) and take its answer: 10.0.0.1 when
//! the clock reads after 2020, an error otherwise.

wit_bindgen::generate!({ path: "../newer-minor/wit", world: "allocator-plugin" });

use exports::wasmcni::plugin::allocator::Guest;
use wasmcni::plugin::types::{IpAddress, Pod};

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        match wasmcni::plugin::clock::now_unix_ms() {
            ms if ms > 1_577_836_800_000 => Ok(IpAddress::V4(0x0a00_0001)),
            ms => Err(format!("the clock reads {ms} ms")),
        }
    }

    fn plan() -> Result<(), String> {
        Ok(())
    }
}

export!(Plugin);
