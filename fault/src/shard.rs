//! Per-thread shard numbers: state that every fault updates (free frame lists, statistics) is
//! split into `SHARDS` cache-line-aligned parts, and each thread uses the one its number picks,
//! so threads faulting at once do not write the same cache lines.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Number of shards.
pub(crate) const SHARDS: usize = 16;

/// The calling thread's shard (threads get consecutive numbers as they first ask).
#[inline]
pub(crate) fn thread_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD.with(|shard| {
        if shard.get() == usize::MAX {
            // Relaxed: only uniqueness matters.
            shard.set(NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS);
        }
        shard.get()
    })
}
