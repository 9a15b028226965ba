//! `log-flood`: a policy hook that logs `message_bytes`-byte messages (setting, default 1 KiB)
//! in an endless loop — on ADD only, or on every verb with `spin_on = "all"`; on other verbs it
//! allows at once. Imports `config` and `log`.
//!
//! Logging is granted and each call is cheap, so fuel alone would let it run for seconds per
//! ADD. The host must end the call at its host-call budget or at its deadline, whichever comes
//! first, with a clear reason; only 64 messages of a call reach the daemon's log. With a long
//! deadline and a large budget it spins for seconds in host calls: the daemon must still
//! answer other requests meanwhile, and stop on SIGTERM within a second.

use wasmcni_plugin_sdk::policy::{config, log, Attachment, Guest, Verb, Verdict};

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn evaluate(attachment: Attachment) -> Verdict {
        let all = config::get("spin_on").as_deref() == Some("all");
        if !all && attachment.verb != Verb::Add {
            return Verdict::Allow;
        }
        let bytes: usize = config::get("message_bytes")
            .and_then(|text| text.parse().ok())
            .unwrap_or(1024);
        let message = "m".repeat(bytes);
        loop {
            log::log(log::Level::Debug, &message);
        }
    }
}

wasmcni_plugin_sdk::policy::export_policy!(Plugin);
