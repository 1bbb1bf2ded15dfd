//! [`Rcu`] over the seize crate: a collector owned by each domain (Hyaline-style reference counted
//! batches), reclaiming promptly once the readers that were active at retirement have left.
//!
//! seize hands a retired batch only to the threads active when the batch is flushed, so
//! `synchronize` never waits for read sections that began later. A batch is flushed only once it
//! holds at least as many objects as there are active threads; `synchronize` therefore adds small
//! sentinel objects until its sentinel's batch has been flushed and reclaimed.

use super::{Rcu, ReadDepth, Reclaim, assert_may_wait};
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{Arc, Backoff};
use ::seize::{Collector, Guard as _, LocalGuard};

/// seize as an [`Rcu`] domain; each value owns its own collector.
#[derive(Debug, Default)]
pub struct SeizeRcu {
    collector: Collector,
}

/// A read-side section of a [`SeizeRcu`] domain.
#[derive(Debug)]
pub struct SeizeGuard<'a> {
    _inner: LocalGuard<'a>,
    _depth: ReadDepth,
}

/// Snoozes between sentinel insertions while `synchronize` waits; a batch needs one object per
/// active thread, so sentinels are added slowly rather than one per spin.
const SNOOZES_PER_SENTINEL: u32 = 32;

/// Reclaims a sentinel: sets the flag its `synchronize` waits on, then frees it.
fn reclaim_sentinel(sentinel: *mut Arc<AtomicBool>, _: &Collector) {
    // SAFETY: sentinels are created by `Box::into_raw` in `synchronize` and seize reclaims each
    // exactly once.
    let flag = unsafe { Box::from_raw(sentinel) };
    // Release pairs with the Acquire load in `synchronize`.
    flag.store(true, Ordering::Release);
}

impl Rcu for SeizeRcu {
    type Guard<'a> = SeizeGuard<'a>;

    const NAME: &'static str = "seize";

    #[inline]
    fn read(&self) -> SeizeGuard<'_> {
        SeizeGuard {
            _depth: ReadDepth::enter(),
            _inner: self.collector.enter(),
        }
    }

    unsafe fn retire<T, F: Reclaim<T>>(&self, ptr: *mut T) {
        fn shim<T, F: Reclaim<T>>(ptr: *mut T, _: &Collector) {
            // SAFETY: `retire`'s caller guaranteed `F::reclaim(ptr)` is sound once, and seize
            // reclaims each retired pointer exactly once.
            unsafe { F::reclaim(ptr) }
        }
        // SAFETY: forwarded from this function's contract: `ptr` is unreachable for new readers
        // and `shim::<T, F>` may reclaim it on any thread.
        unsafe { self.collector.retire(ptr, shim::<T, F>) };
    }

    fn synchronize(&self) {
        assert_may_wait("synchronize");
        let done = Arc::new(AtomicBool::new(false));
        let mut backoff = Backoff::new();
        let mut snoozes = 0;
        while !done.load(Ordering::Acquire) {
            if snoozes % SNOOZES_PER_SENTINEL == 0 {
                let sentinel = Box::into_raw(Box::new(Arc::clone(&done)));
                // SAFETY: the sentinel was never shared; `reclaim_sentinel` frees a box.
                unsafe { self.collector.retire(sentinel, reclaim_sentinel) };
                self.collector.enter().flush();
            }
            snoozes += 1;
            backoff.snooze();
        }
    }

    fn barrier(&self) {
        assert_may_wait("barrier");
        // The sentinel joins this thread's local batch behind its earlier retirements, and seize
        // reclaims a batch as a whole.
        self.synchronize();
    }
}
