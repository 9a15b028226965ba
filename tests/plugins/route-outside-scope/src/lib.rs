//! `route-outside-scope`: a policy hook that asks for datapath changes outside any sane grant,
//! `netlink.add-route(0.0.0.0/0)` and `netlink.set-mtu(65535)`, logs the outcomes in one
//! warning, and allows. Does so on every verb. Imports `netlink`, `log`.
//!
//! The host must refuse both requests when they are made (0.0.0.0/0 is not within the grant's
//! `routes`, 65535 is outside its `mtu` range), each refusal naming the value, and still honour
//! the verdict: the ADD succeeds, and inside the pod's netns the MTU stays the configured one
//! and no route is added. Nothing outside the pod's netns is ever touched.

use wasmcni_plugin_sdk::policy::types::Cidr;
use wasmcni_plugin_sdk::policy::{log, netlink, Attachment, Guest, Verdict};

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn evaluate(_attachment: Attachment) -> Verdict {
        let everything = Cidr {
            network: 0,
            prefix_len: 0,
        };
        let outcomes = [
            ("add-route 0.0.0.0/0", netlink::add_route(everything)),
            ("set-mtu 65535", netlink::set_mtu(65535)),
        ];
        let report: Vec<String> = outcomes
            .iter()
            .map(|(call, outcome)| match outcome {
                Ok(()) => format!("{call}: accepted"),
                Err(reason) => format!("{call}: refused: {reason}"),
            })
            .collect();
        log::log(log::Level::Warn, &report.join("; "));
        Verdict::Allow
    }
}

wasmcni_plugin_sdk::policy::export_policy!(Plugin);
