//! Per-thread shard numbers: state that every fault updates (free frame lists, statistics,
//! the count of frames held) is split into cache-line-aligned parts, and each thread uses the
//! one its number picks, so threads faulting at once do not write the same cache lines.
//!
//! Counters ([`PerThreadCounters`]) go one step further: a thread whose number is below
//! [`SHARDS`] owns its slot outright (numbers are unique among live threads), so it adds with a
//! plain load and store, no locked instruction (`perf annotate` put about a sixth of an
//! already-mapped fault's samples on a locked increment); other threads share the remaining
//! slots and add atomically, so no count is ever lost.

use maple::sync::atomic::{AtomicU64, Ordering};

/// Number of shards.
pub(crate) const SHARDS: usize = 16;

/// The calling thread's number (see [`maple::thread_index`]: unique among live threads, reused
/// after a thread exits), or `None` while the thread is being torn down.
#[inline]
fn thread_number() -> Option<usize> {
    maple::thread_index::current()
}

/// The calling thread's shard, in `0..SHARDS`.
#[inline]
pub(crate) fn thread_shard() -> usize {
    thread_number().unwrap_or(0) % SHARDS
}

/// Counter slots: threads numbered below `SHARDS` own one each; others (more than `SHARDS`
/// threads alive at once, or a thread being torn down) share the next `SHARDS`.
pub(crate) const COUNTER_SLOTS: usize = 2 * SHARDS;

/// The calling thread's counter slot in `0..COUNTER_SLOTS`: its own below `SHARDS` (no other
/// thread ever writes it, so a plain load and store add one; a shared slot needs an atomic
/// read-modify-write).
#[inline]
pub(crate) fn counter_slot() -> usize {
    let number = thread_number().unwrap_or(usize::MAX);
    if number < SHARDS {
        number
    } else {
        SHARDS + number % SHARDS
    }
}

/// `N` counters per thread slot (see the module documentation); a sum reads every slot.
pub(crate) struct PerThreadCounters<const N: usize> {
    slots: Box<[CounterSlot<N>]>,
}

#[repr(align(128))]
struct CounterSlot<const N: usize>([AtomicU64; N]);

impl<const N: usize> PerThreadCounters<N> {
    pub(crate) fn new() -> Self {
        Self {
            slots: (0..COUNTER_SLOTS)
                .map(|_| CounterSlot(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        }
    }

    /// Adds `delta` (wrapping: add `0u64.wrapping_sub(n)` to subtract) to counter `index` in
    /// the calling thread's slot.
    #[inline]
    pub(crate) fn add(&self, index: usize, delta: u64) {
        let slot = counter_slot();
        let cell = &self.slots[slot].0[index];
        // Relaxed: counters order nothing; readers sum them for statistics.
        if slot < SHARDS {
            // Only this thread writes the slot, so no addition can be lost between the two.
            cell.store(
                cell.load(Ordering::Relaxed).wrapping_add(delta),
                Ordering::Relaxed,
            );
        } else {
            cell.fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Counter `index` summed over every slot (wrapping, like the additions).
    pub(crate) fn sum(&self, index: usize) -> u64 {
        self.slots
            .iter()
            // Relaxed: see `add`.
            .fold(0, |sum, slot| {
                sum.wrapping_add(slot.0[index].load(Ordering::Relaxed))
            })
    }
}
