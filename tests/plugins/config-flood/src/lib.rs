//! `config-flood`: a policy hook with no grants at all whose `evaluate` calls `config.get` — which
//! needs no grant — in an endless loop, with a key of `key_bytes` bytes (setting, default 8 MiB).
//! Imports nothing but `config`.
//!
//! This is the attack that once froze a daemon: each call made the host copy the key, fuel
//! (which counts guest instructions only) never ran out, and the call never ended. The host
//! must stop it whatever the key size: an 8 MiB key at the first call (more bytes than one
//! host call may pass in), a 300-byte key at the first call (longer than any config key), a
//! 100-byte key once the call's budget of host calls is spent — each with a clear reason,
//! within the call's deadline, and the hook's failure policy decides the verb.

use wasmcni_plugin_sdk::policy::{config, Attachment, Guest, Verdict};

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn evaluate(_attachment: Attachment) -> Verdict {
        let bytes: usize = config::get("key_bytes")
            .and_then(|text| text.parse().ok())
            .unwrap_or(8 << 20);
        let key = "k".repeat(bytes);
        let mut found = 0u32;
        loop {
            found = found.wrapping_add(u32::from(config::get(&key).is_some()));
            core::hint::black_box(found);
        }
    }
}

wasmcni_plugin_sdk::policy::export_policy!(Plugin);
