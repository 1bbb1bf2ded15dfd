//! Per-thread shard numbers: state that every fault updates (free frame lists, statistics) is
//! split into cache-line-aligned parts, and each thread uses the one its number picks, so
//! threads faulting at once do not write the same cache lines.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Number of shards.
pub(crate) const SHARDS: usize = 16;

/// The calling thread's number (threads get consecutive numbers as they first ask).
#[inline]
fn thread_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    NUMBER.with(|number| {
        if number.get() == usize::MAX {
            // Relaxed: only uniqueness matters.
            number.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        number.get()
    })
}

/// The calling thread's shard, in `0..SHARDS`.
#[inline]
pub(crate) fn thread_shard() -> usize {
    thread_number() % SHARDS
}

/// Counter slots: the first `SHARDS` threads own one each; later threads share the next
/// `SHARDS`.
pub(crate) const COUNTER_SLOTS: usize = 2 * SHARDS;

/// The calling thread's counter slot in `0..COUNTER_SLOTS`, and whether the thread owns it (no
/// other thread ever writes it, so a plain load and store add one; a shared slot needs an
/// atomic read-modify-write).
#[inline]
pub(crate) fn counter_slot() -> (usize, bool) {
    let number = thread_number();
    if number < SHARDS {
        // Under shuttle every task runs on the test's OS thread, so they share its number:
        // nobody owns a slot there.
        (number, cfg!(not(feature = "shuttle")))
    } else {
        (SHARDS + number % SHARDS, false)
    }
}
