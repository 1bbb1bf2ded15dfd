//! [`Rcu`] over the seize crate: a collector owned by each domain (Hyaline-style reference counted
//! batches), reclaiming promptly once the readers that were active at retirement have left.
//!
//! seize hands a retired batch only to the threads active when the batch is flushed, so a grace
//! period never waits for read sections that began later. A batch is flushed only once it holds
//! at least as many objects as there are active threads; polling a grace period therefore adds
//! a small sentinel object every few polls until one sentinel's batch has been reclaimed.

use super::{Rcu, ReadDepth, Reclaim, assert_may_wait};
use crate::sync::Arc;
use crate::sync::atomic::{AtomicBool, Ordering};
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

/// Polls of a grace period between sentinel insertions; a batch needs one object per active
/// thread, so sentinels are added every few polls rather than at each. Few: after its spins a
/// poll waits in a sleep (`sync::Backoff`), and at 32 polls per sentinel a grace period beside
/// a reader took 94 µs instead of 4 µs.
const POLLS_PER_SENTINEL: u32 = 4;

/// A grace period of a [`SeizeRcu`] domain: set when one of its sentinels is reclaimed.
#[derive(Debug)]
pub struct SeizeCookie {
    done: Arc<AtomicBool>,
    polls: u32,
}

impl SeizeRcu {
    /// Retires a sentinel that sets the cookie's flag, and flushes this thread's batch.
    fn add_sentinel(&self, cookie: &SeizeCookie) {
        let sentinel = Box::into_raw(Box::new(Arc::clone(&cookie.done)));
        // SAFETY: the sentinel was never shared; `reclaim_sentinel` frees a box.
        unsafe { self.collector.retire(sentinel, reclaim_sentinel) };
        self.collector.enter().flush();
    }
}

/// Reclaims a sentinel: sets the flag its grace period waits on, then frees it.
fn reclaim_sentinel(sentinel: *mut Arc<AtomicBool>, _: &Collector) {
    // SAFETY: sentinels are created by `Box::into_raw` in `synchronize` and seize reclaims each
    // exactly once.
    let flag = unsafe { Box::from_raw(sentinel) };
    // Release pairs with the Acquire loads in `grace_period_elapsed`.
    flag.store(true, Ordering::Release);
}

impl Rcu for SeizeRcu {
    type Guard<'a> = SeizeGuard<'a>;
    type Cookie = SeizeCookie;

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

    fn start_grace_period(&self) -> SeizeCookie {
        let mut cookie = SeizeCookie {
            done: Arc::new(AtomicBool::new(false)),
            polls: 0,
        };
        self.add_sentinel(&cookie);
        cookie.polls += 1;
        cookie
    }

    fn grace_period_elapsed(&self, cookie: &mut SeizeCookie) -> bool {
        if cookie.done.load(Ordering::Acquire) {
            return true;
        }
        if cookie.polls % POLLS_PER_SENTINEL == 0 {
            self.add_sentinel(cookie);
        }
        cookie.polls += 1;
        cookie.done.load(Ordering::Acquire)
    }

    fn barrier(&self) {
        assert_may_wait("barrier");
        // The sentinel joins this thread's local batch behind its earlier retirements, and seize
        // reclaims a batch as a whole.
        self.synchronize();
    }
}
