//! Small dense numbers for threads: each live thread gets one, unique among the live threads,
//! and a number comes back for reuse when its thread exits.
//!
//! Per-thread state that must not share cache lines (RCU reader slots, statistics slots, free
//! frame shards) is kept in small arrays indexed by this number. Because numbers are reused,
//! a process that creates threads without end (a benchmark spawning fresh workers per batch, a
//! server with a churning pool) still uses the low indices, which stay owned by one thread
//! each, instead of wrapping around onto slots that other threads share.
//!
//! Invariant: two live threads never hold the same number; a number is handed out again only
//! after the thread that held it has finished with it (its thread-local destructor ran), and the
//! smallest free number is handed out first.
//!
//! The facade's thread-locals: under shuttle each task has its own number, handed back when the
//! task finishes, so code that relies on owning what its number picks (the RCU domain's owned
//! reader slots, the statistics' owned counters) runs under shuttle as it does on std.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Numbers never handed out yet start here.
static NEXT: AtomicUsize = AtomicUsize::new(0);
/// Numbers given back by exited threads, smallest first.
static FREE: Mutex<BinaryHeap<Reverse<usize>>> = Mutex::new(BinaryHeap::new());

/// What [`NUMBER`] holds once the thread has given its number back.
const TORN_DOWN: usize = usize::MAX;

crate::sync::thread_local! {
    /// `number + 1` of the calling thread, 0 before it has one, [`TORN_DOWN`] once it gave it
    /// back. A const thread-local without a destructor: reading it is one load; the
    /// registration check of a thread-local with a destructor is paid only by [`GIVE_BACK`],
    /// once per thread.
    static NUMBER: Cell<usize> = const { Cell::new(0) };
    /// Holds the number too, and gives it back when the thread exits (it keeps its own copy:
    /// thread-local destructors run in no set order, and under shuttle [`NUMBER`] may be gone
    /// first).
    static GIVE_BACK: GiveBack = const { GiveBack(Cell::new(None)) };
}

struct GiveBack(Cell<Option<usize>>);

impl Drop for GiveBack {
    fn drop(&mut self) {
        // Later calls of `current` on this thread (other destructors) take no number again.
        let _ = NUMBER.try_with(|number| number.set(TORN_DOWN));
        if let Some(number) = self.0.take() {
            // The mutex orders everything this thread did under its number before the next
            // holder's first use of it.
            FREE.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Reverse(number));
        }
    }
}

/// Takes a number for the calling thread and arranges for its return at thread exit.
#[cold]
fn assign() -> Option<usize> {
    // Registering the destructor fails once the thread is being torn down: then take nothing.
    GIVE_BACK
        .try_with(|give_back| {
            let reused = FREE.lock().unwrap_or_else(|e| e.into_inner()).pop();
            // Relaxed: only uniqueness matters, and the counter's modification order gives it.
            let number = reused.map_or_else(|| NEXT.fetch_add(1, Ordering::Relaxed), |Reverse(n)| n);
            give_back.0.set(Some(number));
            number
        })
        .ok()
        .and_then(|number| NUMBER.try_with(|cell| cell.set(number + 1)).ok().map(|()| number))
}

/// The calling thread's number, or `None` while the thread is being torn down (its number has
/// been given back, or was never taken; callers fall back to state that threads share).
#[inline]
pub fn current() -> Option<usize> {
    match NUMBER.try_with(Cell::get) {
        Ok(0) => assign(),
        Ok(TORN_DOWN) | Err(_) => None,
        Ok(held) => Some(held - 1),
    }
}
