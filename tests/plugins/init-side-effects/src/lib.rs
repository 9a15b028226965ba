//! `init-side-effects`: a policy hook whose `init` tries to leave something behind: a `kv`
//! write (`written-in-init`) and a `netlink.set-mtu(1400)` request (within the grant), then
//! succeeds. `evaluate` denies when it finds the `kv` key, and allows otherwise. Imports `kv`,
//! `netlink`.
//!
//! The host must keep neither: `evaluate` allows with no datapath adjustment (the MTU request
//! made in `init` is not carried into any call), the `kv` store stays empty, and the audit log
//! records the request as never applied.

use wasmcni_plugin_sdk::policy::{kv, netlink, Attachment, Guest, Verdict};

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        kv::set("written-in-init", b"1")?;
        netlink::set_mtu(1400)?;
        Ok(())
    }

    fn evaluate(_attachment: Attachment) -> Verdict {
        match kv::get("written-in-init") {
            Some(_) => Verdict::Deny("init's kv write was kept".into()),
            None => Verdict::Allow,
        }
    }
}

wasmcni_plugin_sdk::policy::export_policy!(Plugin);
