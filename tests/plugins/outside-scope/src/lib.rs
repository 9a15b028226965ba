//! `outside-scope`: an allocator whose `plan` asks for ENI changes outside its grant.
//!
//! `plan` requests `create-eni` in `subnet-not-granted` with security group `sg-not-granted`,
//! then `assign-ips` on `eni-not-attached`, logs the refusals in one warning and returns Ok.
//! `allocate` is well behaved: the lowest free address. Imports `pool-view`, `eni-ops`, `log`.
//!
//! The host must refuse both requests when they are made (the subnet and the security group
//! are not in the grant's `subnets` / `security_groups`; the ENI is not attached to the node —
//! with the static provider every request is refused), each refusal naming the offending
//! value, write them to the audit log, and carry out nothing after `plan` returns Ok: no ENI
//! created, no address assigned.

use wasmcni_plugin_sdk::allocator::{eni_ops, log, lowest_free, Guest, IpAddress, NewEni, Pod};

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        lowest_free().map(IpAddress::from)
    }

    fn plan() -> Result<(), String> {
        let outcomes = [
            (
                "create-eni",
                eni_ops::create_eni(&NewEni {
                    subnet_id: "subnet-not-granted".into(),
                    security_groups: vec!["sg-not-granted".into()],
                    secondary_ips: 1,
                    prefixes: 0,
                }),
            ),
            ("assign-ips", eni_ops::assign_ips("eni-not-attached", 1)),
        ];
        let report: Vec<String> = outcomes
            .iter()
            .map(|(call, outcome)| match outcome {
                Ok(()) => format!("{call}: accepted"),
                Err(reason) => format!("{call}: refused: {reason}"),
            })
            .collect();
        log::log(log::Level::Warn, &report.join("; "));
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
