//! The cluster configuration (`/etc/wasmcni/cluster.toml`), parsed and validated as the daemon
//! and `check-config` do. Beyond "never panics": an error names where it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmcni_config::ClusterConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = ClusterConfig::parse(text, "fuzz.toml") {
        let message = e.to_string();
        assert!(message.contains("fuzz.toml"), "{message}");
    }
});
