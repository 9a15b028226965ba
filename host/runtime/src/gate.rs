//! The gate every plugin call passes: a bounded number of instance slots
//! ([`wasmcni_core::limits::CONCURRENT_CALLS`]) (so the pooling
//! allocator never runs out), taken with a deadline; an epoch ticker that advances the engine's
//! epoch every [`EPOCH_TICK`] while calls run (and parks once none has run for
//! [`TICKER_LINGER`]), so that a running call reaches its epoch check and is held to its
//! wall-clock deadline; and the daemon's shutdown switch, which ends every running call at its
//! next tick.
//!
//! A call that finds a free slot and a ticking ticker makes no system call here: the ticker is
//! woken only when it parked, and a freed slot is signalled only when a call waits for one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use wasmtime::Engine;

use wasmcni_core::limits::{HostLimit, EPOCH_TICK};

/// How long the ticker keeps ticking after the last call ended before it parks. Calls come in
/// bursts (an ADD runs the allocator, then each policy hook, then the allocator's plan), so a
/// ticker that parked at once would be woken, a futex wake and a context switch, for nearly
/// every call; ticking idle costs one short wake-up per millisecond for this long.
pub(super) const TICKER_LINGER: Duration = Duration::from_millis(50);

/// Shared by a runtime, its plugins and the ticker thread.
#[derive(Debug)]
pub(super) struct Gate {
    engine: Engine,
    /// Instance slots in all.
    slots: u32,
    state: Mutex<State>,
    /// Signalled when a slot is freed and a call waits for one.
    slot_freed: Condvar,
    /// Signalled when a call starts while the ticker is parked.
    ticker_wake: Condvar,
    stopping: AtomicBool,
    /// Epoch ticks made so far.
    ticks: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// Free instance slots.
    free: u32,
    /// Calls waiting for a slot.
    waiting: u32,
    /// Whether the ticker waits on `ticker_wake`.
    ticker_parked: bool,
    /// Calls started so far (wrapping): how the ticker sees calls that came and went
    /// between two of its ticks.
    started: u64,
}

/// One running call's slot; freeing it on drop.
pub(super) struct Slot {
    gate: Arc<Gate>,
}

impl Gate {
    /// A gate for `engine` (configured with epoch interruption), and its ticker thread, which
    /// ends once the gate is dropped.
    pub(super) fn start(engine: Engine, slots: u32) -> std::io::Result<Arc<Gate>> {
        let gate = Arc::new(Gate {
            engine,
            slots,
            state: Mutex::new(State {
                free: slots,
                waiting: 0,
                ticker_parked: false,
                started: 0,
            }),
            slot_freed: Condvar::new(),
            ticker_wake: Condvar::new(),
            stopping: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&gate);
        std::thread::Builder::new()
            .name("wasmcni-epoch".into())
            .spawn(move || tick(weak))?;
        Ok(gate)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot, waiting until `deadline` at most.
    pub(super) fn enter(
        self: &Arc<Self>,
        deadline: Instant,
        budget: Duration,
    ) -> Result<Slot, HostLimit> {
        let mut state = self.lock();
        loop {
            if self.is_stopping() {
                return Err(HostLimit::ShuttingDown);
            }
            if state.free > 0 {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(HostLimit::NoSlot {
                    deadline: budget,
                    running: self.slots,
                });
            }
            state.waiting += 1;
            state = self
                .slot_freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            state.waiting -= 1;
        }
        state.free -= 1;
        state.started = state.started.wrapping_add(1);
        let wake_ticker = std::mem::replace(&mut state.ticker_parked, false);
        drop(state);
        if wake_ticker {
            self.ticker_wake.notify_one();
        }
        Ok(Slot { gate: self.clone() })
    }

    /// Ends every running call at its next epoch tick and refuses new ones.
    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Under the lock, so that no caller is between its check of `stopping` and its wait.
        let _state = self.lock();
        self.slot_freed.notify_all();
        self.ticker_wake.notify_all();
    }

    /// Whether [`Gate::stop`] was called.
    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Calls running now.
    pub(super) fn running(&self) -> u32 {
        self.slots - self.lock().free
    }

    /// Whether the ticker is parked (tests).
    #[cfg(test)]
    pub(super) fn ticker_parked(&self) -> bool {
        self.lock().ticker_parked
    }

    /// Epoch ticks made so far (tests).
    #[cfg(test)]
    pub(super) fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.free += 1;
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            self.gate.slot_freed.notify_all();
        }
    }
}

/// The ticker: advances the epoch every tick while calls run and for [`TICKER_LINGER`] after
/// the last one, then parks until a call starts; ends when the gate is gone.
fn tick(gate: Weak<Gate>) {
    let mut idle_since: Option<Instant> = None;
    let mut seen_started = 0;
    loop {
        let Some(strong) = gate.upgrade() else {
            return;
        };
        {
            let mut state = strong.lock();
            let none_since_last_tick = state.started == seen_started;
            seen_started = state.started;
            if state.free == strong.slots && none_since_last_tick {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= TICKER_LINGER {
                    // Parked: woken by the next call (or, once a second, to notice the gate
                    // is gone).
                    state.ticker_parked = true;
                    let mut state = strong
                        .ticker_wake
                        .wait_timeout(state, Duration::from_secs(1))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    state.ticker_parked = false;
                    // Woken by a call: tick for it. Woken by the timeout alone (to notice a
                    // dropped gate): park again at once, without a linger.
                    if state.started != seen_started {
                        idle_since = None;
                    }
                    continue;
                }
            } else {
                idle_since = None;
            }
        }
        let engine = strong.engine.clone();
        drop(strong);
        std::thread::sleep(EPOCH_TICK);
        engine.increment_epoch();
        if let Some(gate) = gate.upgrade() {
            gate.ticks.fetch_add(1, Ordering::Relaxed);
        }
    }
}
