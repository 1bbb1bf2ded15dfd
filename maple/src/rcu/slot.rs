//! [`Rcu`] with precise grace periods over per-thread reader slots, built only from the
//! [`crate::sync`] facade: the default domain on std, and under shuttle too, where every step of
//! its grace-period logic is a scheduling point the checker interleaves.
//!
//! Design:
//! - Each domain has [`READER_SLOTS`] slots, each on its own cache line, holding a generation
//!   number: even means free, odd means a read-side section runs in it. Dropping the guard
//!   stores the next even number.
//! - **Owned slots.** The first [`OWNED_SLOTS`] slots belong to threads by
//!   [number](crate::thread_index): slot `n` is written only by the live thread numbered `n`
//!   (numbers are unique among live threads, and one comes back for reuse only after its
//!   thread finished, which ends that thread's sections). Such a reader needs no claim: it
//!   stores its section's first and last key, then stores `g + 1` over its even generation `g`
//!   (Release), and fences only while writers scan (see [`super::fence_mode`]). The keys are
//!   in place before the section is visible, so a grace period never sees an owned slot
//!   running with keys it cannot judge.
//! - **Shared slots.** Threads numbered [`OWNED_SLOTS`] or more (and threads being torn down,
//!   which have no number) share the remaining slots: a reader claims a free one by moving it
//!   from `g` to `g + 1` with a compare-and-swap, starting at the one its number picks, going
//!   on to the next if it is taken and waiting only if all are. Since another reader may
//!   claim the same slot, the holder writes its keys only after its claim and resets them to
//!   all keys before its release: while it does, a grace period sees the slot running with
//!   all keys and waits for it (a holder preempted there holds up every grace period, the
//!   reason owned slots exist).
//! - Nested sections cost no claim: the thread's own slot is already odd (an owned slot), or a
//!   shared slot records which reader holds it (a per-thread id that is never reused, written
//!   after the claim and cleared before the release), and a reader inside some section finds
//!   its id there. It only counts one more guard on the slot, and whichever of the thread's
//!   guards drops last releases it (guards may drop in any order). Guards cannot leave their
//!   thread (they are not `Send`), so the count is only ever touched by the holder.
//! - Keys (see [keyed sections](super#keyed-sections)): a slot holds the first and last key of
//!   the section running in it, all keys ([`Keys::ALL`]) for an unkeyed section. A nested
//!   section with keys the slot does not cover widens them to all keys (followed by a SeqCst
//!   fence: the store-buffering pair again, so either the writer sees the widening or the
//!   nested section sees the writer's unlink). A grace period for some keys skips the odd
//!   slots whose keys do not matter.
//! - `claimed` is a high-water mark: one past the highest slot ever claimed. Writers scan only
//!   the slots below it, so a grace period with few threads costs a few loads, not one per slot.
//! - A grace period ([`Rcu::start_grace_period`]) is a snapshot of the odd slots; it has elapsed
//!   once each of them has changed. Exactly the sections that existed when it started are
//!   waited for; later ones never hold it up.
//! - `retire` appends to an open batch. A full batch (or any batch, on
//!   [`Rcu::push_retired`]) is *sealed* with a grace-period snapshot, and sealed batches whose
//!   readers have all left are reclaimed by the thread that seals the next one (never blocking).
//!   A batch sealed while no reader runs is reclaimed at once. `retire_within` seals its object
//!   alone, with a snapshot of only the sections that may reach it (unkeyed ones and those
//!   whose keys overlap its keys), so it is not held up by readers elsewhere. `barrier` seals,
//!   waits for a grace period and reclaims every sealed batch.
//!
//! Orderings (the classic store-buffering pair): a reader raises `claimed` if needed (a SeqCst
//! read-modify-write), then enters (a Release store of its owned slot's generation, or a SeqCst
//! compare-and-swap claiming a shared one), then issues a SeqCst fence before it loads any
//! shared pointer; a writer unlinks, issues a SeqCst fence, then reads `claimed` and the slots.
//! Either the writer sees the slot odd (and waits for it), or the reader's fence comes after
//! the writer's in the single total order, so the reader's loads see the unlink and cannot find
//! the retired object. The reader's Acquire load of `claimed`, when it skips the raise,
//! synchronizes with the raise it read, which therefore comes before the reader's entry in the
//! total order as well. On x86-64 a shared slot's locked claim is itself a full barrier, so
//! its reader's fence is only a compiler fence there (as crossbeam-epoch's pin does). An owned
//! slot's reader skips its fence while its domain's fence mode is FAST: the writers' scans
//! then start with a heavy barrier that fences every running reader instead (see
//! [`super::fence_mode`], which states why that is enough). Guard drop stores with Release,
//! pairing with the Acquire slot loads of grace-period polls, so a reader's accesses happen
//! before the reclamation they allowed. A grace period's scan loads a slot's keys with Acquire after
//! loading its odd generation with Acquire, and keys are stored with Release. In an owned slot
//! the section's keys were stored before the entry the scan read, so each bound seen is the
//! section's own or a later section's, stored after the release of the section seen, which has
//! therefore ended (whatever the scan decides about it is right). In a shared slot the claim it
//! read comes after the previous section's reset to all keys, so each bound seen is the reset
//! one (a wider range: waited for more often), the section's own, or a later section's (as
//! before).

use super::fence_mode::{FenceMode, QuietCount};
use super::{Keys, Rcu, ReadDepth, Reclaim, assert_may_wait};
use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use crate::sync::{Backoff, Mutex};
use crate::thread_index;
use std::marker::PhantomData;

/// Reader slots per domain. More threads than this can read at once: a reader whose shared slot
/// is taken moves on to the next free one, and waits only if all are taken.
pub const READER_SLOTS: usize = 128;

/// Slots owned by the threads numbered below this (docs/design.md, *RCU*); the rest are
/// shared. Under shuttle only one (the task numbered 0's), so that scenarios run in both kinds.
pub const OWNED_SLOTS: usize = if cfg!(feature = "shuttle") { 1 } else { 112 };

/// Retirements gathered before a batch is sealed and collection is attempted.
const BATCH: usize = 16;

/// One reader slot, alone on its cache line (and the adjacent-line prefetch's pair).
#[repr(align(128))]
#[derive(Debug)]
struct Slot {
    /// Even: free; odd: a read-side section runs in it.
    generation: AtomicU64,
    /// In a shared slot, the [`reader_id`] of the thread holding it, or 0: written by the holder
    /// only (after its claim, and back to 0 before its release), so it is read only to
    /// recognise one's own slot. Unused in owned slots.
    owner: AtomicU64,
    /// Guards the holder has beyond the first (nested sections); holder only.
    nested: AtomicU64,
    /// The first and last key of the section running in the slot ([`Keys::ALL`] if unkeyed):
    /// written by the holder only (see the module documentation for when).
    first_key: AtomicU64,
    last_key: AtomicU64,
    /// In an owned slot, what its thread keeps to tell when writers went quiet (see
    /// [`super::fence_mode`]); holder only. Unused in shared slots.
    quiet: QuietCount,
}

/// Precise RCU over per-thread reader slots: owned slots for threads numbered below
/// [`OWNED_SLOTS`], shared ones above, grace periods that wait for exactly the sections running
/// at their start (docs/design.md, *RCU*, describes the algorithm and its orderings).
#[derive(Debug)]
pub struct SlotRcu {
    slots: Box<[Slot]>,
    /// One past the highest slot index ever claimed (only grows).
    claimed: AtomicUsize,
    /// Whether owned-slot readers fence their entries now (see [`super::fence_mode`]).
    fence_mode: FenceMode,
    batches: Mutex<Batches>,
}

/// A read-side section of a [`SlotRcu`] domain: the slot it runs in, released on drop.
#[derive(Debug)]
pub struct SlotGuard<'a> {
    /// The slot this section runs in (claimed by it, or by an enclosing section of this
    /// thread) and the slot's odd generation.
    slot: &'a Slot,
    generation: u64,
    /// A shared slot (claimed, to be handed back with its owner and keys cleared).
    shared: bool,
    _depth: ReadDepth,
    /// A guard stays on the thread whose slot it holds.
    _not_send: PhantomData<*const ()>,
}

/// The read-side sections a grace period waits for: `(slot index, odd generation)` of each
/// section running when it started.
pub type SlotSnapshot = Vec<(usize, u64)>;

#[derive(Debug)]
struct Retired {
    ptr: *mut (),
    reclaim: unsafe fn(*mut ()),
}

/// A batch waiting for the read sections recorded at its sealing to end.
#[derive(Debug)]
struct Sealed {
    readers: SlotSnapshot,
    items: Vec<Retired>,
}

#[derive(Debug, Default)]
struct Batches {
    open: Vec<Retired>,
    sealed: Vec<Sealed>,
}

impl Retired {
    /// `ptr`, to be reclaimed with `F`.
    fn of<T, F: Reclaim<T>>(ptr: *mut T) -> Self {
        unsafe fn shim<T, F: Reclaim<T>>(ptr: *mut ()) {
            // SAFETY: `ptr` was a `*mut T` retired with reclaimer `F`, which the retiring
            // caller made sound to run once.
            unsafe { F::reclaim(ptr.cast::<T>()) }
        }
        Self {
            ptr: ptr.cast(),
            reclaim: shim::<T, F>,
        }
    }
}

// SAFETY: the raw pointers in `Retired` are owned by the domain until reclaimed, and `retire`'s
// contract makes their reclaimers sound to run on any thread.
unsafe impl Send for Retired {}

impl Default for SlotRcu {
    fn default() -> Self {
        Self {
            slots: (0..READER_SLOTS)
                .map(|_| Slot {
                    generation: AtomicU64::new(0),
                    owner: AtomicU64::new(0),
                    nested: AtomicU64::new(0),
                    first_key: AtomicU64::new(Keys::ALL.first()),
                    last_key: AtomicU64::new(Keys::ALL.last()),
                    quiet: QuietCount::default(),
                })
                .collect(),
            claimed: AtomicUsize::new(0),
            fence_mode: FenceMode::default(),
            batches: Mutex::new(Batches::default()),
        }
    }
}

/// The calling thread's reader id: unique for the life of the process (never reused, never
/// 0), from the facade's thread-locals so that under shuttle every task has its own.
#[inline]
fn reader_id() -> u64 {
    /// Ids handed out so far.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    crate::sync::thread_local! {
        static ID: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    ID.with(|id| {
        if id.get() == 0 {
            // Relaxed: only uniqueness matters.
            id.set(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        }
        id.get()
    })
}

/// Whether every section recorded in `readers` has ended.
fn all_ended(slots: &[Slot], readers: &[(usize, u64)]) -> bool {
    readers
        .iter()
        // Acquire pairs with the Release in `SlotGuard::drop`.
        .all(|&(i, generation)| slots[i].generation.load(Ordering::Acquire) != generation)
}

/// Orders a reader's slot claim before its loads of shared pointers; pairs with the fence in
/// [`SlotRcu::running_readers`].
#[inline(always)]
fn reader_fence() {
    // The claim was a locked compare-and-swap, a full barrier on x86-64: only the compiler
    // must be kept from moving the reader's loads above it.
    #[cfg(all(target_arch = "x86_64", not(feature = "shuttle")))]
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
    #[cfg(not(all(target_arch = "x86_64", not(feature = "shuttle"))))]
    fence(Ordering::SeqCst);
}

impl SlotRcu {
    /// A new domain with no readers and nothing retired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether readers in owned slots fence their entries now, or leave that to the next
    /// writer's heavy barrier (see [`QUIET_SECTIONS`](super::QUIET_SECTIONS) for when they
    /// switch back).
    pub fn readers_fence(&self) -> bool {
        self.fence_mode.readers_fence()
    }

    /// Raises the high-water mark to cover slot `index` before the reader enters it, so a
    /// writer that misses the raise also misses nothing the reader loads afterwards.
    #[inline(always)]
    fn cover(&self, index: usize) {
        // Acquire pairs with the SeqCst raise it reads (see the module documentation).
        if index >= self.claimed.load(Ordering::Acquire) {
            self.claimed.fetch_max(index + 1, Ordering::SeqCst);
        }
    }

    /// Starts a section with `keys` in the owned slot `index` of the calling thread, which
    /// holds no section there: keys first, then the entry (see the module documentation).
    #[inline(always)]
    fn enter_owned(&self, index: usize, keys: Keys) -> (&Slot, u64) {
        let slot = &self.slots[index];
        self.cover(index);
        // Release pairs with the Acquire key loads of grace-period scans; the entry below
        // publishes them too.
        slot.first_key.store(keys.first(), Ordering::Release);
        slot.last_key.store(keys.last(), Ordering::Release);
        // Only this thread writes the slot, so the generation it adds one to is even. Release
        // publishes the keys to scans that load this entry with Acquire; `after_entry` orders
        // it before the section's loads (one half of the store-buffering pair with
        // `running_readers`).
        let generation = slot.generation.load(Ordering::Relaxed) + 1;
        slot.generation.store(generation, Ordering::Release);
        self.fence_mode.after_entry(&slot.quiet);
        (slot, generation)
    }

    /// Tries to start a read-side section with `keys` in the shared slot `index` for the
    /// reader `me`.
    #[inline]
    fn try_claim(&self, index: usize, me: u64, keys: Keys) -> Option<(&Slot, u64)> {
        let slot = &self.slots[index];
        let generation = slot.generation.load(Ordering::Relaxed);
        if generation % 2 == 1 {
            return None;
        }
        self.cover(index);
        // SeqCst: one half of the store-buffering pair with `running_readers`.
        slot.generation
            .compare_exchange(generation, generation + 1, Ordering::SeqCst, Ordering::Relaxed)
            .ok()?;
        reader_fence();
        // Relaxed: only this thread compares against its own id (see `Slot::owner`).
        slot.owner.store(me, Ordering::Relaxed);
        // Release pairs with the Acquire key loads of grace-period scans (see the module
        // documentation); until they are seen, the slot's keys read as all keys.
        slot.first_key.store(keys.first(), Ordering::Release);
        slot.last_key.store(keys.last(), Ordering::Release);
        Some((slot, generation + 1))
    }

    /// The shared slot reader `me` holds in this domain, if any.
    #[cold]
    fn held_by(&self, me: u64) -> Option<&Slot> {
        // Relaxed: holder-only field (see `Slot`).
        self.slots[OWNED_SLOTS..]
            .iter()
            .find(|slot| slot.owner.load(Ordering::Relaxed) == me)
    }

    /// Claims a free shared slot, starting at the one `number` picks, waiting if all are
    /// taken. The caller holds no slot of this domain, so a waiting reader holds none either:
    /// readers never wait for each other while holding one.
    #[cold]
    fn claim_shared(&self, number: Option<usize>, keys: Keys) -> (&Slot, u64) {
        const SHARED: usize = READER_SLOTS - OWNED_SLOTS;
        let me = reader_id();
        let first = number.unwrap_or(0) % SHARED;
        let mut backoff = Backoff::new();
        loop {
            for i in (first..SHARED).chain(0..first) {
                if let Some(claimed) = self.try_claim(OWNED_SLOTS + i, me, keys) {
                    return claimed;
                }
            }
            backoff.snooze();
        }
    }

    /// A section nested in one this thread holds in `slot`: one more guard on it, and the
    /// slot's keys widened to all keys if they do not cover `keys`.
    #[inline]
    fn nest(slot: &Slot, keys: Keys) -> (&Slot, u64) {
        // Relaxed: holder-only fields (see `Slot`).
        slot.nested
            .store(slot.nested.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let held = Keys::raw(
            slot.first_key.load(Ordering::Relaxed),
            slot.last_key.load(Ordering::Relaxed),
        );
        if !held.covers(keys) {
            // Widen the enclosing keyed section: the fence pairs with the one in
            // `running_readers` (see the module documentation).
            slot.first_key.store(Keys::ALL.first(), Ordering::Release);
            slot.last_key.store(Keys::ALL.last(), Ordering::Release);
            fence(Ordering::SeqCst);
        }
        (slot, slot.generation.load(Ordering::Relaxed))
    }

    /// The sections running now that may reach objects behind keys `matters` accepts: every
    /// odd slot below the high-water mark, but for keyed sections whose keys it rejects. The
    /// fence orders the caller's unlinking stores before these loads (see the module
    /// documentation).
    fn running_readers(&self, matters: impl Fn(Keys) -> bool) -> SlotSnapshot {
        fence(Ordering::SeqCst);
        // Owned-slot readers may not have fenced their entries: make them visible.
        self.fence_mode.before_scan();
        let claimed = self.claimed.load(Ordering::Relaxed);
        self.slots[..claimed]
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                // Acquire pairs with the Release in `SlotGuard::drop` and with the claim.
                let generation = slot.generation.load(Ordering::Acquire);
                if generation % 2 == 0 {
                    return None;
                }
                // Acquire pairs with the Release key stores of a claim (see the module
                // documentation for why the keys seen are safe to judge by).
                let first = slot.first_key.load(Ordering::Acquire);
                let last = slot.last_key.load(Ordering::Acquire);
                matters(Keys::raw(first, last)).then_some((i, generation))
            })
            .collect()
    }

    /// Seals the open batch (if any) and takes out every sealed batch whose readers have ended.
    fn seal_and_collect(&self, batches: &mut Batches) -> Vec<Retired> {
        if !batches.open.is_empty() {
            let items = std::mem::take(&mut batches.open);
            batches.sealed.push(Sealed {
                readers: self.running_readers(|_| true),
                items,
            });
        }
        Self::collect(&self.slots, batches)
    }

    /// Takes out every sealed batch whose readers have ended.
    fn collect(slots: &[Slot], batches: &mut Batches) -> Vec<Retired> {
        let mut ready = Vec::new();
        batches.sealed.retain_mut(|batch| {
            let done = all_ended(slots, &batch.readers);
            if done {
                ready.append(&mut batch.items);
            }
            !done
        });
        ready
    }

    fn batches(&self) -> crate::sync::MutexGuard<'_, Batches> {
        self.batches.lock().unwrap_or_else(|e| e.into_inner())
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

impl Rcu for SlotRcu {
    type Guard<'a> = SlotGuard<'a>;
    type Cookie = SlotSnapshot;

    const NAME: &'static str = "slots";

    #[inline]
    fn read(&self) -> SlotGuard<'_> {
        self.read_keyed(Keys::ALL)
    }

    #[inline(always)]
    fn read_keyed(&self, keys: Keys) -> SlotGuard<'_> {
        let (depth, nested) = ReadDepth::enter_nested();
        let number = thread_index::current();
        let (slot, generation, shared) = match number {
            Some(index) if index < OWNED_SLOTS => {
                let slot = &self.slots[index];
                // Relaxed: only this thread writes its owned slot.
                let (slot, generation) = if slot.generation.load(Ordering::Relaxed) % 2 == 1 {
                    Self::nest(slot, keys)
                } else {
                    self.enter_owned(index, keys)
                };
                (slot, generation, false)
            }
            _ => {
                // Nested in a section this thread holds in a shared slot? It must not claim a
                // second one, or threads that each hold one could all wait for another.
                let (slot, generation) = match nested.then(|| self.held_by(reader_id())).flatten() {
                    Some(slot) => Self::nest(slot, keys),
                    None => self.claim_shared(number, keys),
                };
                (slot, generation, true)
            }
        };
        SlotGuard {
            slot,
            generation,
            shared,
            _depth: depth,
            _not_send: PhantomData,
        }
    }

    unsafe fn retire<T, F: Reclaim<T>>(&self, ptr: *mut T) {
        let ready = {
            let mut batches = self.batches();
            batches.open.push(Retired::of::<T, F>(ptr));
            if batches.open.len() < BATCH {
                return;
            }
            self.seal_and_collect(&mut batches)
        };
        Self::reclaim_all(ready);
    }

    unsafe fn retire_within<T, F: Reclaim<T>>(&self, ptr: *mut T, keys: Keys) {
        let ready = {
            let mut batches = self.batches();
            // Sealed alone, with a snapshot of the sections that may reach it only: the
            // caller unlinked it before the snapshot's fence.
            let readers = self.running_readers(|section| section.overlaps(keys));
            batches.sealed.push(Sealed {
                readers,
                items: vec![Retired::of::<T, F>(ptr)],
            });
            Self::collect(&self.slots, &mut batches)
        };
        Self::reclaim_all(ready);
    }

    fn push_retired(&self) {
        let ready = self.seal_and_collect(&mut self.batches());
        Self::reclaim_all(ready);
    }

    fn start_grace_period(&self) -> SlotSnapshot {
        self.running_readers(|_| true)
    }

    fn start_grace_period_for(&self, matters: impl Fn(Keys) -> bool) -> SlotSnapshot {
        self.running_readers(matters)
    }

    fn grace_period_elapsed(&self, readers: &mut SlotSnapshot) -> bool {
        all_ended(&self.slots, readers)
    }

    fn barrier(&self) {
        assert_may_wait("barrier");
        let taken: Vec<Retired> = {
            let mut batches = self.batches();
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

impl Drop for SlotGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        let slot = self.slot;
        // Relaxed: holder-only fields (see `Slot`).
        let nested = slot.nested.load(Ordering::Relaxed);
        if nested > 0 {
            // Another guard of this thread still holds the slot.
            slot.nested.store(nested - 1, Ordering::Relaxed);
            return;
        }
        if self.shared {
            // Cleared before the release, so the next holder's id and key are the only ones
            // written after (the release orders these stores before it). An owned slot keeps
            // its keys: its next section stores its own before it enters.
            slot.owner.store(0, Ordering::Relaxed);
            slot.first_key.store(Keys::ALL.first(), Ordering::Relaxed);
            slot.last_key.store(Keys::ALL.last(), Ordering::Relaxed);
        }
        // Release pairs with the Acquire loads of grace-period polls and batch collection.
        slot.generation.store(self.generation + 1, Ordering::Release);
    }
}

impl Drop for SlotRcu {
    fn drop(&mut self) {
        // No guard can outlive the domain it borrows, so every retired object is unreachable.
        let batches = self.batches.get_mut().unwrap_or_else(|e| e.into_inner());
        let mut items = std::mem::take(&mut batches.open);
        items.extend(batches.sealed.drain(..).flat_map(|b| b.items));
        Self::reclaim_all(items);
    }
}
