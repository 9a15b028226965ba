//! The node-local IPv4 addresses IPv6 pods reach IPv4 endpoints from (VPC CNI's egress-cni):
//! one per pod, from a small range (169.254.172.0/22 by default) that never leaves the node,
//! since the node translates it to its own IPv4 address on the way out.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The range and a rotating cursor, so an address a DELeted pod held is not the next one
/// handed out.
#[derive(Debug, Clone)]
pub struct EgressPool {
    range: Ipv4Net,
    cursor: u32,
}

impl EgressPool {
    /// A pool of `range`'s addresses but its network and broadcast addresses.
    pub fn new(range: Ipv4Net) -> EgressPool {
        EgressPool { range, cursor: 0 }
    }

    /// The range.
    pub fn range(&self) -> Ipv4Net {
        self.range
    }

    /// How many pods the range serves.
    pub fn capacity(&self) -> u32 {
        let size = 1u64 << (32 - u32::from(self.range.prefix_len()));
        u32::try_from(size.saturating_sub(2)).unwrap_or(u32::MAX)
    }

    /// The next address after the cursor that `taken` does not hold; `None` when every one is.
    pub fn choose(&mut self, taken: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
        let capacity = self.capacity();
        let first = u32::from(self.range.network()) + 1;
        for step in 0..capacity {
            let index = (self.cursor + step) % capacity;
            let ip = Ipv4Addr::from(first + index);
            if !taken(ip) {
                self.cursor = (index + 1) % capacity;
                return Some(ip);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn hands_out_every_host_address_once_rotating_past_a_freed_one() {
        let mut pool = EgressPool::new("169.254.172.0/29".parse().unwrap());
        assert_eq!(pool.capacity(), 6);
        let mut taken = BTreeSet::new();
        while let Some(ip) = pool.choose(|ip| taken.contains(&ip)) {
            assert!(taken.insert(ip), "{ip} twice");
        }
        let handed: Vec<String> = taken.iter().map(ToString::to_string).collect();
        assert_eq!(
            handed,
            [
                "169.254.172.1",
                "169.254.172.2",
                "169.254.172.3",
                "169.254.172.4",
                "169.254.172.5",
                "169.254.172.6"
            ]
        );
        // Two come free; the one after the last handed out comes first.
        taken.remove(&"169.254.172.2".parse().unwrap());
        taken.remove(&"169.254.172.5".parse().unwrap());
        assert_eq!(
            pool.choose(|ip| taken.contains(&ip)),
            Some("169.254.172.2".parse().unwrap())
        );
        let mut pool = EgressPool::new("169.254.172.0/29".parse().unwrap());
        let first = pool.choose(|_| false).unwrap();
        let second = pool.choose(|ip| ip == first).unwrap();
        // Freed at once, `first` is still not reused before the others.
        assert_eq!(
            pool.choose(|ip| ip == second),
            Some("169.254.172.3".parse().unwrap())
        );
    }
}
