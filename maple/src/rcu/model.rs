//! [`Rcu`] built only from the [`crate::sync`] facade, so that under shuttle every step of the
//! grace-period logic is a scheduling point the checker can interleave.
//!
//! Design (a precise, slot-based RCU):
//! - A fixed array of reader slots. Each slot holds a generation number: even means free, odd
//!   means a read-side section is running in it. `read` claims a free slot by moving it from
//!   `g` (even) to `g + 1`; dropping the guard moves it to `g + 2`.
//! - `synchronize` takes a snapshot of the odd slots and waits until each has changed. A slot
//!   that changed has ended the section that was running in it, so exactly the sections that
//!   existed at the call are waited for; later ones never hold it up.
//! - `retire` appends to an open batch. A full batch is *sealed*: it records the snapshot of odd
//!   slots at that moment, and becomes free to reclaim once every recorded slot has changed.
//!   Sealed batches are checked (without blocking) on each seal; `barrier` seals, synchronizes
//!   and reclaims every sealed batch.
//!
//! Orderings: `read` claims its slot with a SeqCst read-modify-write followed by a SeqCst fence
//! before the reader loads any shared pointer; writers unlink, then issue a SeqCst fence before
//! reading the slots. Either the writer sees the slot odd (and waits), or the reader's loads come
//! after the unlink in the single total order and cannot find the retired object. Guard drop
//! stores with Release, pairing with the Acquire slot loads of `synchronize` and of batch
//! collection, so a reader's accesses happen before the reclamation they allowed.

use super::{Rcu, ReadDepth, Reclaim, assert_may_wait};
use crate::sync::atomic::{AtomicU64, Ordering, fence};
use crate::sync::{Backoff, Mutex};

/// Read-side sections that may run at once in one model domain; more wait for a free slot.
pub const MODEL_READER_SLOTS: usize = 64;

/// Retirements gathered before a batch is sealed and collection is attempted.
const BATCH: usize = 16;

/// The facade-built RCU: precise grace periods over reader slots. See the module documentation.
#[derive(Debug)]
pub struct ModelRcu {
    slots: Box<[AtomicU64]>,
    batches: Mutex<Batches>,
}

/// A read-side section of a [`ModelRcu`] domain: the slot it runs in, released on drop.
#[derive(Debug)]
pub struct ModelGuard<'a> {
    slot: &'a AtomicU64,
    generation: u64,
    _depth: ReadDepth,
}

#[derive(Debug)]
struct Retired {
    ptr: *mut (),
    reclaim: unsafe fn(*mut ()),
}

/// A batch waiting for the read sections recorded at its sealing to end.
#[derive(Debug)]
struct Sealed {
    /// `(slot index, odd generation)` of every section running when the batch was sealed.
    readers: Vec<(usize, u64)>,
    items: Vec<Retired>,
}

#[derive(Debug, Default)]
struct Batches {
    open: Vec<Retired>,
    sealed: Vec<Sealed>,
}

// SAFETY: the raw pointers in `Retired` are owned by the domain until reclaimed, and `retire`'s
// contract makes their reclaimers sound to run on any thread.
unsafe impl Send for Retired {}

impl Default for ModelRcu {
    fn default() -> Self {
        Self {
            slots: (0..MODEL_READER_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            batches: Mutex::new(Batches::default()),
        }
    }
}

impl ModelRcu {
    /// A new domain with no readers and nothing retired.
    pub fn new() -> Self {
        Self::default()
    }

    /// The sections running now: every odd slot. The fence orders the caller's unlinking stores
    /// before these loads (see the module documentation).
    fn running_readers(&self) -> Vec<(usize, u64)> {
        fence(Ordering::SeqCst);
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                // Acquire pairs with the Release in `ModelGuard::drop`.
                let generation = slot.load(Ordering::Acquire);
                (generation % 2 == 1).then_some((i, generation))
            })
            .collect()
    }

    /// Whether every recorded section has ended.
    fn all_ended(&self, readers: &[(usize, u64)]) -> bool {
        readers
            .iter()
            // Acquire pairs with the Release in `ModelGuard::drop`.
            .all(|&(i, generation)| self.slots[i].load(Ordering::Acquire) != generation)
    }

    /// Seals the open batch (if any) and takes out every sealed batch whose readers have ended.
    fn seal_and_collect(&self, batches: &mut Batches) -> Vec<Retired> {
        if !batches.open.is_empty() {
            let items = std::mem::take(&mut batches.open);
            batches.sealed.push(Sealed {
                readers: self.running_readers(),
                items,
            });
        }
        let mut ready = Vec::new();
        batches.sealed.retain_mut(|batch| {
            let done = self.all_ended(&batch.readers);
            if done {
                ready.append(&mut batch.items);
            }
            !done
        });
        ready
    }

    /// Runs reclaimers outside the batch lock (a reclaimer may retire more objects).
    fn reclaim_all(items: Vec<Retired>) {
        for item in items {
            // SAFETY: every item was retired with a reclaimer sound to run once on any thread,
            // and its grace period has passed (or the domain is being dropped).
            unsafe { (item.reclaim)(item.ptr) };
        }
    }
}

impl Rcu for ModelRcu {
    type Guard<'a> = ModelGuard<'a>;
    type Cookie = Vec<(usize, u64)>;

    const NAME: &'static str = "model";

    fn read(&self) -> ModelGuard<'_> {
        let depth = ReadDepth::enter();
        let mut backoff = Backoff::new();
        loop {
            for slot in self.slots.iter() {
                let generation = slot.load(Ordering::Relaxed);
                if generation % 2 == 0
                    && slot
                        .compare_exchange(generation, generation + 1, Ordering::SeqCst, Ordering::Relaxed)
                        .is_ok()
                {
                    // Pairs with the fence in `running_readers`: orders the claim before every
                    // load this reader makes of shared pointers.
                    fence(Ordering::SeqCst);
                    return ModelGuard {
                        slot,
                        generation: generation + 1,
                        _depth: depth,
                    };
                }
            }
            backoff.snooze();
        }
    }

    unsafe fn retire<T, F: Reclaim<T>>(&self, ptr: *mut T) {
        unsafe fn shim<T, F: Reclaim<T>>(ptr: *mut ()) {
            // SAFETY: `ptr` was a `*mut T` retired with reclaimer `F`, which `retire`'s caller
            // made sound to run once.
            unsafe { F::reclaim(ptr.cast::<T>()) }
        }
        let ready = {
            let mut batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
            batches.open.push(Retired {
                ptr: ptr.cast(),
                reclaim: shim::<T, F>,
            });
            if batches.open.len() < BATCH {
                return;
            }
            self.seal_and_collect(&mut batches)
        };
        Self::reclaim_all(ready);
    }

    fn start_grace_period(&self) -> Vec<(usize, u64)> {
        self.running_readers()
    }

    fn grace_period_elapsed(&self, readers: &mut Vec<(usize, u64)>) -> bool {
        self.all_ended(readers)
    }

    fn barrier(&self) {
        assert_may_wait("barrier");
        let taken: Vec<Retired> = {
            let mut batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
            let mut taken = self.seal_and_collect(&mut batches);
            taken.extend(batches.sealed.drain(..).flat_map(|batch| batch.items));
            taken
        };
        // Every reader that could see a taken object was running when its batch was sealed,
        // which was before this call: waiting for today's readers covers them all.
        self.synchronize();
        Self::reclaim_all(taken);
    }
}

impl Drop for ModelGuard<'_> {
    fn drop(&mut self) {
        // Release pairs with the Acquire loads of `synchronize` and batch collection.
        self.slot.store(self.generation + 1, Ordering::Release);
    }
}

impl Drop for ModelRcu {
    fn drop(&mut self) {
        // No guard can outlive the domain it borrows, so every retired object is unreachable.
        let batches = self.batches.get_mut().unwrap_or_else(|e| e.into_inner());
        let mut items = std::mem::take(&mut batches.open);
        items.extend(batches.sealed.drain(..).flat_map(|b| b.items));
        Self::reclaim_all(items);
    }
}
