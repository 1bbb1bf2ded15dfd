//! [`Rcu`] over crossbeam-epoch's process-wide default collector.
//!
//! Entering a read section is `crossbeam_epoch::pin()` (a thread-local counter and one fence).
//! A grace period defers a flag-setting closure behind everything this thread retired and
//! flushes; polling it pins-and-flushes until the closure has run: crossbeam runs a deferred closure only after the
//! global epoch advanced twice past the epoch it was deferred in, which requires every thread that
//! was pinned at that time to have unpinned.

use super::{Rcu, Reclaim, assert_may_wait};
use crate::sync::Arc;
use crate::sync::atomic::{AtomicBool, Ordering};

/// crossbeam-epoch as an [`Rcu`] domain (a zero-sized handle on the global collector).
///
/// Its grace periods are counted in global epochs, so a guard taken just after `synchronize`
/// began can, in the worst case, still hold it up; a guard taken once the epoch has moved on
/// cannot. New readers that come and go never starve it.
#[derive(Debug, Default, Clone, Copy)]
pub struct EpochRcu;

impl Rcu for EpochRcu {
    type Guard<'a> = crossbeam_epoch::Guard;
    type Cookie = Arc<AtomicBool>;

    const NAME: &'static str = "crossbeam-epoch";

    #[inline]
    fn read(&self) -> crossbeam_epoch::Guard {
        crossbeam_epoch::pin()
    }

    unsafe fn retire<T, F: Reclaim<T>>(&self, ptr: *mut T) {
        let guard = crossbeam_epoch::pin();
        // SAFETY: the caller guarantees `ptr` is unreachable for new readers and that
        // `F::reclaim` may run once on any thread; crossbeam runs the closure once, after every
        // thread pinned now has unpinned.
        unsafe { guard.defer_unchecked(move || F::reclaim(ptr)) };
    }

    fn push_retired(&self) {
        // A full pin-and-flush: crossbeam seals this thread's bag into the global queue, where
        // any thread's next collection reclaims it once the epoch allows.
        crossbeam_epoch::pin().flush();
    }

    fn start_grace_period(&self) -> Arc<AtomicBool> {
        let done = Arc::new(AtomicBool::new(false));
        let guard = crossbeam_epoch::pin();
        let flag = Arc::clone(&done);
        // Release pairs with the Acquire load in `grace_period_elapsed`: whoever ran the closure
        // had seen every thread pinned in the old epoch unpin.
        guard.defer(move || flag.store(true, Ordering::Release));
        guard.flush();
        done
    }

    fn grace_period_elapsed(&self, done: &mut Arc<AtomicBool>) -> bool {
        if done.load(Ordering::Acquire) {
            return true;
        }
        // Try to advance the epoch and run expired closures, ours among them.
        crossbeam_epoch::pin().flush();
        done.load(Ordering::Acquire)
    }

    fn barrier(&self) {
        assert_may_wait("barrier");
        // The flag closure is deferred behind this thread's earlier retirements and crossbeam
        // executes sealed bags in queue order, so once it has run they have been taken from
        // the queue. But another thread may have taken one and still be running it: it does so
        // while pinned, so a second grace period waits for it to finish.
        self.synchronize();
        self.synchronize();
        crossbeam_epoch::pin().flush();
    }
}
