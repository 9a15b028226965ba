//! The gate every plugin call passes: a bounded number of instance slots
//! ([`wasmcni_core::limits::CONCURRENT_CALLS`]) (so the pooling
//! allocator never runs out), taken with a deadline; an epoch ticker that advances the engine's
//! epoch every [`EPOCH_TICK`] while at least one call runs (and sleeps otherwise), so that a
//! running call reaches its epoch check and is held to its wall-clock deadline; and the
//! daemon's shutdown switch, which ends every running call at its next tick.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use wasmtime::Engine;

use wasmcni_core::limits::{HostLimit, EPOCH_TICK};

/// Shared by a runtime, its plugins and the ticker thread.
#[derive(Debug)]
pub(super) struct Gate {
    engine: Engine,
    /// Instance slots in all.
    slots: u32,
    /// Free instance slots.
    free: Mutex<u32>,
    /// Signalled when a slot is freed (a waiting call) or taken (the idle ticker).
    changed: Condvar,
    stopping: AtomicBool,
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
            free: Mutex::new(slots),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&gate);
        std::thread::Builder::new()
            .name("wasmcni-epoch".into())
            .spawn(move || tick(weak))?;
        Ok(gate)
    }

    /// Takes a slot, waiting until `deadline` at most.
    pub(super) fn enter(
        self: &Arc<Self>,
        deadline: Instant,
        budget: Duration,
    ) -> Result<Slot, HostLimit> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.is_stopping() {
                return Err(HostLimit::ShuttingDown);
            }
            if *free > 0 {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(HostLimit::NoSlot {
                    deadline: budget,
                    running: self.slots,
                });
            }
            free = self
                .changed
                .wait_timeout(free, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *free -= 1;
        drop(free);
        // Wake the ticker if it was idle.
        self.changed.notify_all();
        Ok(Slot { gate: self.clone() })
    }

    /// Ends every running call at its next epoch tick and refuses new ones.
    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// Whether [`Gate::stop`] was called.
    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Calls running now.
    pub(super) fn running(&self) -> u32 {
        self.slots - *self.free.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self.gate.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.gate.changed.notify_all();
    }
}

/// The ticker: advances the epoch every tick while a call runs, sleeps while none does, and
/// ends when the gate is gone.
fn tick(gate: Weak<Gate>) {
    loop {
        let Some(strong) = gate.upgrade() else {
            return;
        };
        {
            let free = strong.free.lock().unwrap_or_else(|p| p.into_inner());
            if *free == strong.slots {
                // Idle: wait for a call (or, once a second, to notice the gate is gone).
                drop(
                    strong
                        .changed
                        .wait_timeout(free, Duration::from_secs(1))
                        .unwrap_or_else(|p| p.into_inner()),
                );
                continue;
            }
        }
        let engine = strong.engine.clone();
        drop(strong);
        std::thread::sleep(EPOCH_TICK);
        engine.increment_epoch();
    }
}
