//! `reserved-tags`: a tagger answering reserved keys among ordinary ones:
//! `aws:cloudformation:stack-name` and `k8s.amazonaws.com/role` between `team` and
//! `wasmcni.io/instance-id`. Imports nothing.
//!
//! The host must refuse the whole answer, naming a reserved key, whether or not the grant's
//! `tag_keys` lists them (a host that refuses such a `tag_keys` at load is right too): none of
//! these tags is written, not even the ordinary ones, and no `aws:*` or `*k8s.amazonaws.com*`
//! key reaches EC2 except the host's own ownership tags. What then happens to the ENI
//! follows the tagger's failure policy.

use wasmcni_plugin_sdk::tagger::{EniRequest, Guest, Pair};

struct Plugin;

fn tag(key: &str, value: &str) -> Pair {
    Pair {
        key: key.into(),
        value: value.into(),
    }
}

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn tags(request: EniRequest) -> Result<Vec<Pair>, String> {
        Ok(vec![
            tag("team", "payments"),
            tag("aws:cloudformation:stack-name", "hijacked"),
            tag("k8s.amazonaws.com/role", "owner"),
            tag("wasmcni.io/instance-id", &request.instance_id),
        ])
    }
}

wasmcni_plugin_sdk::tagger::export_tagger!(Plugin);
