//! The synchronization facade: every atomic, lock, thread spawn, yield and wait in maplevm goes
//! through this module, so the same code runs on `std` and, with `--features shuttle`, under the
//! [shuttle](https://docs.rs/shuttle) randomized scheduler, which then controls every interleaving.
//!
//! The crates above `maple` (vma, fault, bench) use this module too, so one feature flag switches
//! the whole stack.
//!
//! Under shuttle all atomics are sequentially consistent: shuttle explores interleavings, not weak
//! memory orderings. The orderings written in the code are still the ones the std build relies on,
//! and each says what it pairs with.

#[cfg(not(feature = "shuttle"))]
mod imp {
    pub use std::sync::atomic;
    pub use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
    pub use std::thread;
    pub use std::thread_local;

    /// A hint that the caller is spinning on a value another thread will change.
    #[inline]
    pub fn spin_loop() {
        std::hint::spin_loop();
    }
}

#[cfg(feature = "shuttle")]
mod imp {
    pub use shuttle::sync::atomic;
    pub use shuttle::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
    pub use shuttle::thread;
    pub use shuttle::thread_local;

    /// A hint that the caller is spinning on a value another thread will change; under shuttle
    /// this is a scheduling point, so a spinning task lets the others run.
    #[inline]
    pub fn spin_loop() {
        shuttle::hint::spin_loop();
    }
}

pub use imp::*;

/// Waits politely for a condition another thread will make true: spins briefly, then yields the
/// processor, so a waiter neither burns a core for long nor sleeps past the event by a scheduler
/// tick. Under shuttle every step is a scheduling point.
#[derive(Debug, Default)]
pub struct Backoff {
    step: u32,
}

impl Backoff {
    const SPIN_LIMIT: u32 = 6;

    /// A fresh backoff, starting with short spins.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits a little longer than last time.
    pub fn snooze(&mut self) {
        if self.step <= Self::SPIN_LIMIT && cfg!(not(feature = "shuttle")) {
            for _ in 0..(1u32 << self.step) {
                spin_loop();
            }
            self.step += 1;
        } else {
            thread::yield_now();
        }
    }
}
