//! A deliberately broken RCU domain for tests that must catch a missing grace period.

use maple::rcu::{Rcu, Reclaim};

/// A broken domain: frees at once and never waits. Scenarios must catch it.
#[derive(Default)]
pub struct NoGrace<R>(R);

impl<R: Rcu> Rcu for NoGrace<R> {
    type Guard<'a> = R::Guard<'a>;
    const NAME: &'static str = "no-grace (broken)";

    fn read(&self) -> Self::Guard<'_> {
        self.0.read()
    }
    unsafe fn retire<T, F: Reclaim<T>>(&self, ptr: *mut T) {
        // SAFETY: deliberately wrong (no grace period); probes tolerate it by design.
        unsafe { F::reclaim(ptr) }
    }
    type Cookie = ();
    fn start_grace_period(&self) {}
    fn grace_period_elapsed(&self, _: &mut ()) -> bool {
        true
    }
    fn synchronize(&self) {}
    fn barrier(&self) {}
}
