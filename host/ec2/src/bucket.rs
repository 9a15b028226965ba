//! The client-side token bucket every EC2 call of the node goes through, retries included, so
//! a node never spends more of the account's shared EC2 rate than it is configured to.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket: `burst` calls at once, then `rate` calls per second.
#[derive(Debug)]
pub struct TokenBucket {
    burst: f64,
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate` per second.
    pub fn new(burst: u32, rate: f64) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            burst,
            rate: rate.max(0.001),
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token now, or says how long to wait for the next one.
    pub fn try_take(&self) -> Result<(), Duration> {
        self.try_take_at(Instant::now())
    }

    fn try_take_at(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = *state;
        let refilled = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.rate)
            .min(self.burst);
        if refilled >= 1.0 {
            *state = (refilled - 1.0, now);
            Ok(())
        } else {
            *state = (refilled, now);
            // Rounded up to tokio's timer resolution, and never zero: after a wait truncated
            // to nanoseconds, floating point can leave the bucket a hair short of a token, and
            // a zero wait would then spin without time passing (forever, on a simulation's
            // paused clock).
            let ms = ((1.0 - refilled) / self.rate * 1e3).ceil().max(1.0);
            Err(Duration::from_millis(ms as u64))
        }
    }

    /// Waits for a token.
    pub async fn take(&self) {
        while let Err(wait) = self.try_take() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Calls at most `burst + rate × window` in any window: what a test of the bucket checks.
    pub fn allowance(&self, window: Duration) -> f64 {
        self.burst + self.rate * window.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spends_the_burst_then_refills_at_the_rate() {
        let bucket = TokenBucket::new(3, 2.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(bucket.try_take_at(t0).is_ok());
        }
        let wait = bucket.try_take_at(t0).unwrap_err();
        assert!(
            (wait.as_secs_f64() - 0.5).abs() < 1e-6,
            "one token takes 1/rate: {wait:?}"
        );
        assert!(bucket.try_take_at(t0 + Duration::from_millis(500)).is_ok());
        assert!(bucket.try_take_at(t0 + Duration::from_millis(500)).is_err());
        // A long idle period refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(bucket.try_take_at(later).is_ok());
        }
        assert!(bucket.try_take_at(later).is_err());
    }

    /// Every wait it asks for lets time pass, and waiting it out yields a token: no rate
    /// leaves it a rounding error short, asking for a zero wait (a spin on a paused clock:
    /// `simulate` hung on this before).
    #[test]
    fn every_wait_is_at_least_a_millisecond_and_is_enough() {
        for rate in [0.1, 0.3, 3.0, 7.0, 10.0, 13.0, 20.0, 33.3, 1000.0, 4321.0] {
            let bucket = TokenBucket::new(1, rate);
            let mut now = Instant::now();
            assert!(bucket.try_take_at(now).is_ok());
            for call in 0..500 {
                let wait = bucket.try_take_at(now).unwrap_err();
                assert!(
                    wait >= Duration::from_millis(1),
                    "rate {rate}, call {call}: {wait:?}"
                );
                now += wait;
                assert!(
                    bucket.try_take_at(now).is_ok(),
                    "rate {rate}, call {call}: no token after waiting {wait:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn take_waits_for_the_next_token() {
        let bucket = TokenBucket::new(1, 10.0);
        let start = Instant::now();
        bucket.take().await;
        bucket.take().await;
        bucket.take().await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(150),
            "two refills at 10/s: {waited:?}"
        );
    }
}
