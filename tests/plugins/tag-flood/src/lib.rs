//! `tag-flood`: a tagger answering too much, by the setting `mode`:
//! - `count` (default): 51 tags (EC2 takes 50 per ENI, the daemon's own included);
//! - `long`: one tag whose key is 200 characters (EC2: at most 128) and one whose value is 300
//!   (at most 256);
//! - `huge`: 20,000 tags of 100-byte keys and values (about 5 MB for the host to copy).
//!
//! Keys are `wasmcni.io/flood-N`, which the test's grant lists as far as it needs. Imports
//! `config`.
//!
//! The host must refuse the whole answer for `count` and `long`, naming the limit, and trap
//! `huge` at once (more bytes than one answer may pass); no tag of it reaches EC2, and what
//! happens to the ENI follows the tagger's failure policy.

use wasmcni_plugin_sdk::tagger::{config, EniRequest, Guest, Pair};

struct Plugin;

fn tag(key: String, value: String) -> Pair {
    Pair { key, value }
}

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn tags(_request: EniRequest) -> Result<Vec<Pair>, String> {
        let mode = config::get("mode").unwrap_or_else(|| "count".into());
        Ok(match mode.as_str() {
            "long" => vec![
                tag("k".repeat(200), "v".into()),
                tag("wasmcni.io/flood-0".into(), "v".repeat(300)),
            ],
            "huge" => {
                // Built cheaply (clones of one key and value), so that what stops the call is
                // the size of the answer, not fuel spent making it.
                let (key, value) = ("k".repeat(100), "v".repeat(100));
                vec![tag(key, value); 20_000]
            }
            _ => (0..51)
                .map(|n| tag(format!("wasmcni.io/flood-{n}"), "v".into()))
                .collect(),
        })
    }
}

wasmcni_plugin_sdk::tagger::export_tagger!(Plugin);
