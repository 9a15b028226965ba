//! Seeded pseudo-random numbers for ids, MAC addresses and address choice, so that the same
//! seed and the same sequence of operations always produce the same EC2 state.
//!
//! xorshift64* seeded through splitmix64: tiny, fast and good enough for test data; it is not
//! meant to be unpredictable.

/// A seeded xorshift64* generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        // splitmix64 spreads small or similar seeds (0, 1, 2, ...) over the whole state and
        // never yields the all-zero state xorshift cannot leave.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self {
            state: if z == 0 { 0x2545_F491_4F6C_DD1D } else { z },
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound`; `bound` must be non-zero.
    pub fn below(&mut self, bound: u64) -> u64 {
        // The modulo bias is irrelevant for test data; determinism is what matters.
        self.next_u64() % bound.max(1)
    }

    /// An EC2-style resource id: `prefix-` followed by 17 lowercase hex digits.
    pub fn resource_id(&mut self, prefix: &str) -> String {
        let high = self.next_u64();
        let low = self.next_u64() & 0xF;
        format!("{prefix}-{high:016x}{low:x}")
    }

    /// A locally administered unicast MAC address `02:xx:xx:xx:xx:xx`, as EC2 assigns.
    pub fn mac_address(&mut self) -> String {
        let bytes = self.next_u64().to_be_bytes();
        format!(
            "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_different_seed_different_sequence() {
        let mut a = SeededRng::new(7);
        let mut b = SeededRng::new(7);
        let mut c = SeededRng::new(8);
        let from_a: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let from_b: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        let from_c: Vec<u64> = (0..5).map(|_| c.next_u64()).collect();
        assert_eq!(from_a, from_b);
        assert_ne!(from_a, from_c);
    }

    #[test]
    fn ids_have_ec2_shape() {
        let mut rng = SeededRng::new(0);
        let id = rng.resource_id("eni");
        assert_eq!(id.len(), "eni-".len() + 17, "{id}");
        assert!(id[4..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let mac = rng.mac_address();
        assert!(mac.starts_with("02:") && mac.len() == 17, "{mac}");
    }
}
