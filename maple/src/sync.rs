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

    /// Where a thread may be preempted in the middle of work that takes time but touches no
    /// atomic (a copy through a translation, as a CPU's store through a TLB entry may land
    /// long after the entry was read). Nothing on std.
    #[inline(always)]
    pub fn preemption_point() {}
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

    /// Where a thread may be preempted in the middle of work that takes time but touches no
    /// atomic (a copy through a translation, as a CPU's store through a TLB entry may land
    /// long after the entry was read): a scheduling point under shuttle.
    #[inline]
    pub fn preemption_point() {
        shuttle::thread::yield_now();
    }
}

pub use imp::*;

/// Waits politely for a condition another thread will make true: spins briefly, then sleeps,
/// from a microsecond (in practice the kernel's timer slack, ~50 µs) doubling up to a
/// millisecond, so a waiter neither burns a core for long nor lags far behind the event. Under
/// shuttle every step is a scheduling point.
///
/// It sleeps rather than yields: when threads outnumber CPUs, the thread being waited for (a
/// reader preempted inside its section) needs this CPU, and `sched_yield` under Linux's EEVDF
/// scheduler pushes the yielding thread's deadline back by a whole slice, so that a writer
/// waiting for a grace period gets the CPU back only after every runnable thread has had a
/// slice: beside 4 faulting threads on 2 CPUs the `fixed-replace` writer made 244–339
/// replacements/s with yields and 3,701–4,185 with sleeps.
#[derive(Debug, Default)]
pub struct Backoff {
    step: u32,
}

impl Backoff {
    const SPIN_LIMIT: u32 = 6;
    /// The longest sleep: 1 µs << 10, about a millisecond.
    const SLEEP_DOUBLINGS: u32 = 10;

    /// A fresh backoff, starting with short spins.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits a little longer than last time.
    pub fn snooze(&mut self) {
        if cfg!(feature = "shuttle") {
            thread::yield_now();
        } else if self.step <= Self::SPIN_LIMIT {
            for _ in 0..(1u32 << self.step) {
                spin_loop();
            }
            self.step += 1;
        } else {
            let doublings = (self.step - Self::SPIN_LIMIT - 1).min(Self::SLEEP_DOUBLINGS);
            std::thread::sleep(std::time::Duration::from_micros(1 << doublings));
            self.step = self.step.saturating_add(1);
        }
    }
}

/// Spins until `done()` is true or `limit` has passed, and returns whether it is done: for a
/// wait that is usually shorter than a sleeping thread takes to wake up, before blocking on a
/// condition variable. Under shuttle it yields a few times instead (each a scheduling point).
pub fn spin_until(limit: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    if cfg!(feature = "shuttle") {
        for _ in 0..Backoff::SPIN_LIMIT {
            if done() {
                return true;
            }
            thread::yield_now();
        }
        return done();
    }
    let start = std::time::Instant::now();
    loop {
        for _ in 0..64 {
            if done() {
                return true;
            }
            spin_loop();
        }
        if start.elapsed() >= limit {
            return done();
        }
    }
}
