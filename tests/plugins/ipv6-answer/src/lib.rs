//! `ipv6-answer`: an allocator whose `allocate` answers an IPv6 address (2001:db8::1, through
//! the `ip-address` variant's `v6` case). Imports nothing.
//!
//! While pods get IPv4 addresses from the pool, the host must refuse the answer, naming the
//! address, and fail that ADD with nothing reserved.

use core::net::Ipv6Addr;
use wasmcni_plugin_sdk::allocator::{Guest, IpAddress, Pod};

struct Plugin;

impl Guest for Plugin {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        Ok(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into())
    }

    fn plan() -> Result<(), String> {
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(Plugin);
