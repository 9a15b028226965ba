//! `oversized-lists`: an allocator whose `plan` passes lists far longer than any ENI can hold,
//! chosen by the setting `mode`:
//! - `release` (default): `release-ips` of the primary ENI with 16,000 addresses (64,000 bytes:
//!   within what one host call may pass), then `release-prefixes` with 5,000 prefixes;
//! - `groups`: `create-eni` with 17 security groups, then with one 200-character group id;
//! - `huge`: `release-ips` with 1,000,000 addresses (4 MB in one call).
//!
//! It reports each outcome in one log line and returns Ok. `allocate` is well behaved.
//! Imports `config`, `pool-view`, `eni-ops`, `log`.
//!
//! The host must refuse the first two modes' requests with reasons naming the limit, before
//! rendering them (the audit log shows a count and at most 64 entries), queue nothing, and trap
//! the `huge` call at once (more bytes than one host call may pass in) with nothing carried out.

use wasmcni_plugin_sdk::allocator::types::Cidr;
use wasmcni_plugin_sdk::allocator::{
    config, eni_ops, log, lowest_free, Guest, IpAddress, NewEni, Pod, Pool,
};

struct Plugin;

fn report(outcomes: &[(&str, Result<(), String>)]) {
    let text: Vec<String> = outcomes
        .iter()
        .map(|(call, outcome)| match outcome {
            Ok(()) => format!("{call}: accepted"),
            Err(reason) => format!("{call}: refused: {reason}"),
        })
        .collect();
    log::log(log::Level::Warn, &text.join("; "));
}

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        lowest_free().map(IpAddress::from)
    }

    fn plan() -> Result<(), String> {
        let pool = Pool::read();
        let primary = pool
            .enis
            .iter()
            .find(|e| e.primary)
            .map_or_else(|| "eni-none".to_string(), |e| e.id.clone());
        let mode = config::get("mode").unwrap_or_else(|| "release".into());
        match mode.as_str() {
            "groups" => {
                let many: Vec<String> = (0..17).map(|n| format!("sg-{n:017x}")).collect();
                let long = vec!["sg-".to_string() + &"f".repeat(197)];
                let create = |groups: Vec<String>| {
                    eni_ops::create_eni(&NewEni {
                        subnet_id: "node".into(),
                        security_groups: groups,
                        secondary_ips: 1,
                        prefixes: 0,
                    })
                };
                report(&[
                    ("create-eni with 17 groups", create(many)),
                    ("create-eni with a 200-character group", create(long)),
                ]);
            }
            "huge" => {
                let addresses: Vec<u32> = (0..1_000_000u32).collect();
                report(&[(
                    "release-ips of 1000000",
                    eni_ops::release_ips(&primary, &addresses),
                )]);
            }
            _ => {
                let addresses: Vec<u32> = (0..16_000u32).map(|n| 0x0a00_0000 | n).collect();
                let prefixes: Vec<Cidr> = (0..5_000u32)
                    .map(|n| Cidr {
                        network: 0x0b00_0000 | (n << 4),
                        prefix_len: 28,
                    })
                    .collect();
                report(&[
                    (
                        "release-ips of 16000",
                        eni_ops::release_ips(&primary, &addresses),
                    ),
                    (
                        "release-prefixes of 5000",
                        eni_ops::release_prefixes(&primary, &prefixes),
                    ),
                ]);
            }
        }
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
