//! `max-counts`: an allocator whose `plan` asks for `u32::MAX` of everything, where a sum in the
//! host's checks would wrap: `create-eni` with `u32::MAX` secondary IPs, with `u32::MAX` IPs and
//! `u32::MAX` prefixes, with 2 IPs and `u32::MAX - 1` prefixes (1 + 2 + (2^32 - 2) wraps to
//! 1); `assign-ips` and `assign-prefixes` of `u32::MAX` and of `u32::MAX - 1` to every ENI.
//! It reports each outcome in one log line and returns Ok. `allocate` is well behaved.
//! Imports `pool-view`, `eni-ops`, `log`.
//!
//! The host must refuse every one of them, naming the limit, and queue nothing: EC2 must
//! never be asked for a count it would read as -1.

use wasmcni_plugin_sdk::allocator::{
    eni_ops, log, lowest_free, Guest, IpAddress, NewEni, Pod, Pool,
};

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        lowest_free().map(IpAddress::from)
    }

    fn plan() -> Result<(), String> {
        let pool = Pool::read();
        let create = |secondary_ips: u32, prefixes: u32| {
            eni_ops::create_eni(&NewEni {
                subnet_id: "node".into(),
                security_groups: vec!["node".into()],
                secondary_ips,
                prefixes,
            })
        };
        let mut outcomes = vec![
            ("create-eni ips=MAX".to_string(), create(u32::MAX, 0)),
            (
                "create-eni ips=MAX prefixes=MAX".into(),
                create(u32::MAX, u32::MAX),
            ),
            (
                "create-eni ips=2 prefixes=MAX-1".into(),
                create(2, u32::MAX - 1),
            ),
            ("create-eni ips=0 prefixes=MAX".into(), create(0, u32::MAX)),
        ];
        for eni in &pool.enis {
            for count in [u32::MAX, u32::MAX - 1] {
                outcomes.push((
                    format!("assign-ips {count} to {}", eni.id),
                    eni_ops::assign_ips(&eni.id, count),
                ));
                outcomes.push((
                    format!("assign-prefixes {count} to {}", eni.id),
                    eni_ops::assign_prefixes(&eni.id, count),
                ));
            }
        }
        let text: Vec<String> = outcomes
            .iter()
            .map(|(call, outcome)| match outcome {
                Ok(()) => format!("{call}: accepted"),
                Err(reason) => format!("{call}: refused: {reason}"),
            })
            .collect();
        log::log(log::Level::Warn, &text.join("; "));
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
