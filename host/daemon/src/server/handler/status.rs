//! STATUS: whether the node can take pods now (the pool reached its minimum, the provider is
//! reachable).

use super::*;

impl<D: Datapath> Handler<D> {
    /// Whether STATUS answers ready now.
    pub fn is_ready(&self) -> bool {
        self.status().is_ok()
    }

    pub(super) fn status(&self) -> Result<(), CniError> {
        if !self.ready.load(Ordering::SeqCst) {
            let cause = self
                .provider_grow_error()
                .map_or_else(String::new, |e| format!(" (last attempt: {e})"));
            return Err(CniError::new(
                codes::NOT_AVAILABLE,
                format!(
                    "the address pool has not reached its minimum since the daemon started{cause}"
                ),
            ));
        }
        let (free_v4, free_v6) = self.free_by_family();
        // A dual-stack pod needs one of each.
        if self.family.has_ipv6() && free_v6 == 0 {
            return Err(CniError::new(
                codes::NOT_AVAILABLE,
                if self.ec2.get().is_some() {
                    "no IPv6 prefix on the primary ENI: new pods cannot be attached until the daemon delegates one again (its log names EC2's answer)"
                } else {
                    "no free IPv6 address in the pool: new pods cannot be attached until some are deleted"
                },
            ));
        }
        if self.dynamic {
            // An empty EC2 pool grows on demand; the ADD waits for it.
            return Ok(());
        }
        if self.family.has_ipv4() && free_v4 == 0 {
            return Err(CniError::new(
                codes::NOT_AVAILABLE,
                "no free IPv4 address in the pool: new pods cannot be attached until some are deleted",
            ));
        }
        Ok(())
    }
}
