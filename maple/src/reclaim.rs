//! Writer-side reclamation: the tree frees (or, for nodes, reuses) what its writers replaced, on
//! the writer's own thread.
//!
//! Handing every replaced node to the RCU domain's own reclamation (crossbeam's `defer`, seize's
//! `retire`) makes whichever thread next runs the domain's collector free it — often a reader,
//! which then pays for frees (and cross-thread allocator traffic) on its lookup path. Instead,
//! the tree queues replaced nodes and displaced values itself:
//! - retirements gather in an open batch;
//! - a full batch is sealed with a grace-period cookie ([`Rcu::start_grace_period`]);
//! - at each sealing, the oldest sealed batches whose grace periods have elapsed
//!   ([`Rcu::grace_period_elapsed`], non-blocking) are taken out and freed by the caller, after
//!   it has released the queue's lock.
//!
//! Invariant: an item is freed only after a grace period that started after it was retired (it
//! was unreachable for new readers before its batch was sealed), or when the tree is dropped
//! (no reader can exist then: guards borrow the tree).

use crate::rcu::{Rcu, Reclaim};
use std::collections::VecDeque;

/// Retirements per batch. Under shuttle every retirement seals a batch, so that the small
/// scenarios the checker explores run the reclamation path on each write.
const BATCH: usize = if cfg!(feature = "shuttle") { 1 } else { 64 };

/// A retired object and how to free it.
pub(crate) struct Retired {
    ptr: *mut (),
    reclaim: unsafe fn(*mut ()),
}

// SAFETY: a retired object is owned by the queue until freed, and its reclaimer is sound to run
// on any thread (the tree's values are Send + Sync, nodes hold only pointers to them).
unsafe impl Send for Retired {}

impl Retired {
    /// Wraps `ptr`, to be freed with `F`.
    pub(crate) fn new<T, F: Reclaim<T>>(ptr: *mut T) -> Self {
        unsafe fn shim<T, F: Reclaim<T>>(ptr: *mut ()) {
            // SAFETY: `ptr` was a `*mut T` wrapped with reclaimer `F` (see `Retired::free`).
            unsafe { F::reclaim(ptr.cast::<T>()) }
        }
        Self {
            ptr: ptr.cast(),
            reclaim: shim::<T, F>,
        }
    }

    /// Frees every object in `items`.
    ///
    /// # Safety
    /// No reader may still reach them (a grace period passed since each was unlinked, or no
    /// reader exists), and each is freed once.
    pub(crate) unsafe fn free(items: Vec<Retired>) {
        for item in items {
            // SAFETY: forwarded from the caller; the reclaimer matches the pointer's type.
            unsafe { (item.reclaim)(item.ptr) }
        }
    }
}

/// A queue of retired objects (`I`: values with their reclaimers, or nodes for reuse) waiting
/// for grace periods with cookies `C`.
pub(crate) struct ReclaimQueue<C, I = Retired> {
    open: Vec<I>,
    sealed: VecDeque<(C, Vec<I>)>,
}

impl<C, I> Default for ReclaimQueue<C, I> {
    fn default() -> Self {
        Self {
            open: Vec::with_capacity(BATCH),
            sealed: VecDeque::new(),
        }
    }
}

impl<C, I> ReclaimQueue<C, I> {
    /// Queues objects already unreachable for new readers. When the open batch is full it is
    /// sealed, and the objects now safe to free are returned (free them without the queue's lock).
    pub(crate) fn retire<R: Rcu<Cookie = C>>(
        &mut self,
        rcu: &R,
        items: impl IntoIterator<Item = I>,
    ) -> Vec<I> {
        self.open.extend(items);
        if self.open.len() < BATCH {
            return Vec::new();
        }
        let batch = std::mem::replace(&mut self.open, Vec::with_capacity(BATCH));
        self.sealed.push_back((rcu.start_grace_period(), batch));
        let mut ready = Vec::new();
        while let Some((cookie, _)) = self.sealed.front_mut() {
            if !rcu.grace_period_elapsed(cookie) {
                break;
            }
            let (_, batch) = self.sealed.pop_front().expect("front exists");
            ready.extend(batch);
        }
        ready
    }

    /// Takes every queued object out: to free after a grace period (or when no reader exists).
    pub(crate) fn take_all(&mut self) -> Vec<I> {
        let mut all = std::mem::take(&mut self.open);
        all.extend(self.sealed.drain(..).flat_map(|(_, batch)| batch));
        all
    }
}
