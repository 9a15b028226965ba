//! `eni-flood`: an allocator whose `plan` floods `eni-ops`: round after round, one `assign-ips`
//! of 1 to every attached ENI, one `create-eni` in the node's subnet, and a `delete-eni` of
//! every secondary ENI — endlessly, or `requests` calls in all (setting) and then Ok.
//! `allocate` is well behaved. Imports `config`, `pool-view`, `eni-ops`.
//!
//! The host must keep the queue bounded (requests for the same ENI merged into one, at most 32
//! queued, the rest refused with the reason), keep the audit record of the call bounded (64
//! entries and a count), and end an endless flood at the call's host-call budget with nothing
//! carried out.

use wasmcni_plugin_sdk::allocator::{
    eni_ops, lowest_free, setting, Guest, IpAddress, NewEni, Pod, Pool,
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
        let limit: Option<u64> = setting("requests")?;
        let pool = Pool::read();
        let mut made = 0u64;
        let mut request = |call: &mut dyn FnMut() -> Result<(), String>| {
            if limit.is_some_and(|limit| made >= limit) {
                return false;
            }
            made += 1;
            let _ = call();
            true
        };
        loop {
            for eni in &pool.enis {
                if !request(&mut || eni_ops::assign_ips(&eni.id, 1)) {
                    return Ok(());
                }
            }
            let create = NewEni {
                subnet_id: "node".into(),
                security_groups: vec!["node".into()],
                secondary_ips: 1,
                prefixes: 0,
            };
            if !request(&mut || eni_ops::create_eni(&create)) {
                return Ok(());
            }
            for eni in pool.enis.iter().filter(|e| !e.primary) {
                if !request(&mut || eni_ops::delete_eni(&eni.id)) {
                    return Ok(());
                }
            }
        }
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
