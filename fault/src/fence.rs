//! [`FaultFence`]: ranges of one page table whose faults wait, for writers that must keep them
//! out without the VMA protocol — unsharing a shared page table outside it (`pmd_share`), and
//! fork copying a VMA's translations.
//!
//! Invariants:
//! - Fences are serialized: one range at a time per page table.
//! - A fence is published (an odd generation, SeqCst) before its grace period, keyed to the
//!   range, in the page table's RCU domain. A fault reads the generation inside its section
//!   (keyed to its page): a fault that began after the grace period started sees the fence
//!   and waits for it with no section held; one that began before is waited for. So while the
//!   fence stands, no fault in its range is between its lookup and its install.
//! - A fault waits only for a fence over its own page.

use maple::rcu::{DefaultRcu, Keys, Rcu};
use maple::sync::atomic::{AtomicU64, Ordering};
use maple::sync::{Backoff, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The fenced range of one page table, if any.
#[derive(Default)]
pub(crate) struct FaultFence {
    /// Odd while a fence stands over `range`.
    generation: AtomicU64,
    /// The standing fence's range, `[start, end)`.
    range: Mutex<(u64, u64)>,
    /// Held while a fence stands.
    serial: Mutex<()>,
}

/// A standing fence ([`FaultFence::raise`]): it comes down when dropped.
pub(crate) struct Fenced<'a> {
    fence: &'a FaultFence,
    _serial: MutexGuard<'a, ()>,
}

impl Drop for Fenced<'_> {
    fn drop(&mut self) {
        // SeqCst, as in `raise`: faults that read the even value see the range free again.
        self.fence.generation.fetch_add(1, Ordering::SeqCst);
    }
}

impl FaultFence {
    /// Fences `[start, end)`: publishes it, then waits until no fault that may not have seen it
    /// is still inside a section of `rcu` keyed to it. Faults there wait from now until the
    /// result is dropped. The caller is inside no read-side section.
    pub(crate) fn raise(&self, start: u64, end: u64, rcu: &DefaultRcu) -> Fenced<'_> {
        let serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        *self.range.lock().unwrap_or_else(|e| e.into_inner()) = (start, end);
        // SeqCst, as `Invalidation::begin` publishes a file's range: a fault section that began
        // after the grace period below started reads the odd value (see `covers`); one that
        // began before is waited for.
        self.generation.fetch_add(1, Ordering::SeqCst);
        rcu.synchronize_timed_for(|keys| keys.overlaps(Keys::new(start, end - 1)));
        Fenced {
            fence: self,
            _serial: serial,
        }
    }

    /// Whether a fence stands over `addr` (read inside the fault's section).
    #[inline]
    pub(crate) fn covers(&self, addr: u64) -> bool {
        // SeqCst pairs with `raise` and the drop of `Fenced`.
        if self.generation.load(Ordering::SeqCst) % 2 == 0 {
            return false;
        }
        let (start, end) = *self.range.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.load(Ordering::SeqCst) % 2 == 1 && start <= addr && addr < end
    }

    /// Waits, inside no read-side section, while a fence stands over `addr`; calls `waited`
    /// with how long it waited, if it did.
    pub(crate) fn wait_out(&self, addr: u64, waited: impl FnOnce(Duration)) {
        if !self.covers(addr) {
            return;
        }
        let since = Instant::now();
        let mut backoff = Backoff::new();
        while self.covers(addr) {
            backoff.snooze();
        }
        waited(since.elapsed());
    }
}
