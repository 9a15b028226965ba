//! wasmcni's wall clock: the time stamps that outlive a process or leave the node (an ENI's
//! attach time and age, the cooling file, audit records, the plugins' `clock`, EC2 tags).
//!
//! It is the system's clock, shifted by how far tokio's clock is ahead of (or behind) the
//! monotonic clock. Outside a runtime whose clock is paused the two are the same clock and
//! the shift is nothing, so on a node this is `SystemTime::now()`: it follows NTP and survives
//! restarts. In `simulate`, which runs the daemon on a paused runtime where time jumps to the
//! next timer, the shift is exactly the time the simulation skipped, so an ENI attached an
//! hour of simulated time ago is an hour old, as the daemon's `tokio::time::Instant`s say.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms() -> u64 {
    (unix_ns() / 1_000_000) as u64
}

/// The wall clock as a `SystemTime`.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(unix_ns()).unwrap_or(u64::MAX))
}

/// tokio's clock behind the monotonic one by less than this is the time between the reads (a
/// preemption at worst), not a paused clock: the wall clock is then the system's, exactly.
/// Ahead is always a paused clock (tokio's is read first), and always followed, so the
/// simulation's wall clock never steps back as it catches up with real time.
const NOISE: Duration = Duration::from_millis(1);

fn unix_ns() -> u128 {
    // tokio's clock first: outside a paused runtime it is read before the monotonic clock, so
    // the shift is the time between the two reads, backwards.
    let tokio = tokio::time::Instant::now().into_std();
    let monotonic = std::time::Instant::now();
    let system = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    if tokio > monotonic {
        system.saturating_add((tokio - monotonic).as_nanos())
    } else if monotonic >= tokio + NOISE {
        system.saturating_sub((monotonic - tokio).as_nanos())
    } else {
        system
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// The wall clock, read between two reads of the system's, lies between them.
    fn assert_is_the_system_clock() {
        let before = system_ms();
        let now = unix_ms();
        let after = system_ms();
        assert!(
            (before..=after).contains(&now),
            "{before} <= {now} <= {after}"
        );
    }

    #[test]
    fn outside_a_runtime_it_is_the_system_clock() {
        assert_is_the_system_clock();
    }

    #[tokio::test]
    async fn in_a_running_runtime_it_is_the_system_clock() {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_is_the_system_clock();
    }

    #[tokio::test(start_paused = true)]
    async fn on_a_paused_runtime_it_moves_with_tokio_time() {
        let start = unix_ms();
        let wall = std::time::Instant::now();
        // An hour passes in the simulation, none (to speak of) outside it.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let real = wall.elapsed().as_millis() as u64;
        let moved = unix_ms() - start;
        assert!(
            (3_600_000..=3_600_000 + real + 1).contains(&moved),
            "moved {moved} ms in {real} ms of real time"
        );
        // And it stays put while the simulation's clock does, real time passing or not.
        let frozen = unix_ms();
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            unix_ms() <= frozen + 1,
            "the wall clock ran while tokio's was paused"
        );
        // Stamps round-trip through SystemTime.
        let stamp = now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(stamp.abs_diff(unix_ms()) <= 1);
    }
}
