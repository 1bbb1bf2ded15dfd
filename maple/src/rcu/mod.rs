//! Read-copy-update: the reclamation scheme behind every lock-free reader in maplevm.
//!
//! An [`Rcu`] domain offers three things:
//! - [`Rcu::read`] enters a read-side critical section and returns a guard. While the guard lives,
//!   every object the reader reached through shared pointers stays allocated.
//! - [`Rcu::retire`] hands over an object that writers have already made unreachable; it is freed
//!   once every read-side section that might have seen it has ended (a *grace period*).
//! - [`Rcu::synchronize`] blocks until every read-side section that existed when it was called
//!   has ended; [`Rcu::start_grace_period`] and [`Rcu::grace_period_elapsed`] are the same
//!   without blocking, so a writer can free its garbage itself, later, instead of leaving it
//!   to whichever reader runs the domain's reclamation. It never waits for sections that began after it was called to end, so a stream of
//!   new readers cannot starve it (crossbeam-epoch gives a slightly weaker bound, see
//!   [`EpochRcu`]).
//!
//! # Keyed sections
//!
//! A reader that will look up a few keys only (a page fault looks up the VMA covering its
//! address; an madvise walks the VMAs and page tables of its range) may say so with
//! [`Rcu::read_keyed`], declaring a range of [`Keys`]. A writer that displaced objects reachable
//! only through some keys (a VMA is found only by lookups of addresses inside it; a frame of a
//! removed translation only through that translation's address) may then wait for the sections
//! that could have reached them, [`Rcu::start_grace_period_for`] and [`Rcu::retire_within`],
//! instead of for every section: a munmap need not wait for a fault on another VMA, even one
//! whose thread was preempted inside its section. A section nested in a keyed one with keys the
//! enclosing section did not declare widens it to all keys. The domain only records keys; that a
//! keyed section reaches no object except through its keys is the reader's promise, enforced by
//! the structure it reads (see `maple::Guard`'s keyed form).
//!
//! Invariants every implementation keeps:
//! - **I1** an object passed to `retire` is reclaimed at most once, and never while a read-side
//!   section that began before the `retire` call is still running;
//! - **I2** every retired object is eventually reclaimed: at the latest by [`Rcu::barrier`] on the
//!   thread that retired it once the readers that could see it are gone, or when the domain drops;
//! - **I3** calling `synchronize` or `barrier` from inside a read-side section (of any domain) is a
//!   bug that would deadlock; it is detected and panics instead of hanging;
//! - **I4** a grace period started with `start_grace_period_for(matters)` has elapsed only when
//!   every section running at its start has ended, except keyed sections whose keys do not
//!   satisfy `matters` (the keys declared, or all keys once a section with other keys nested in
//!   it); an object passed to `retire_within(ptr, keys)` is reclaimed as I1 says, except that
//!   keyed sections whose keys do not overlap `keys` need not have ended.
//!
//! Implementations: [`SlotRcu`] (precise grace periods over per-thread reader slots, built only
//! from the [`crate::sync`] facade: the default, on std and under `--features shuttle`, where
//! shuttle explores its grace-period logic itself), [`EpochRcu`] (crossbeam-epoch's global
//! collector) and [`SeizeRcu`] (seize, a collector owned by each domain); the last two are kept
//! for comparison (`cargo bench -p bench --bench rcu`).

mod epoch;
mod fence_mode;
mod seize;
mod slot;

pub use self::epoch::EpochRcu;
pub use self::fence_mode::{MAX_QUIET_SECTIONS, QUIET_SECTIONS};
pub use self::seize::{SeizeCookie, SeizeGuard, SeizeRcu};
pub use self::slot::{OWNED_SLOTS, READER_SLOTS, SlotGuard, SlotRcu, SlotSnapshot};

use crate::sync::{Backoff, thread_local};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// The RCU implementation a [`crate::MapleTree`] uses unless told otherwise (and the one the
/// whole of maplevm runs on): [`SlotRcu`], on std and under shuttle alike.
pub type DefaultRcu = SlotRcu;

/// How a retired object is freed once its grace period has passed. Implemented by zero-sized
/// marker types so that no implementation has to store a function pointer per object.
pub trait Reclaim<T> {
    /// Frees `ptr`.
    ///
    /// # Safety
    /// `ptr` must be valid for this reclaimer (allocated the way it frees) and no thread may use
    /// it afterwards.
    unsafe fn reclaim(ptr: *mut T);
}

/// Reclaims a pointer that came from [`Box::into_raw`] by dropping the box.
#[derive(Debug, Clone, Copy, Default)]
pub struct DropBox;

impl<T> Reclaim<T> for DropBox {
    unsafe fn reclaim(ptr: *mut T) {
        // SAFETY: the caller guarantees `ptr` came from `Box::into_raw` and is used by no one else.
        drop(unsafe { Box::from_raw(ptr) });
    }
}

/// A read-copy-update domain. See the [module documentation](self) for the contract.
pub trait Rcu: Send + Sync + Default + 'static {
    /// The read-side guard: objects reached while it lives stay allocated.
    type Guard<'a>
    where
        Self: 'a;

    /// A short name for reports and benchmarks.
    const NAME: &'static str;

    /// Enters a read-side critical section. Sections may nest.
    fn read(&self) -> Self::Guard<'_>;

    /// Enters a read-side section that declares the keys it will look up (see
    /// [keyed sections](self#keyed-sections)): grace periods started with
    /// [`Rcu::start_grace_period_for`] wait for it only if they care about `keys`. Domains that
    /// cannot tell sections apart treat it as [`Rcu::read`].
    fn read_keyed(&self, keys: Keys) -> Self::Guard<'_> {
        let _ = keys;
        self.read()
    }

    /// Frees `ptr` with `F` once every read-side section that might have seen it has ended.
    ///
    /// # Safety
    /// - `ptr` must already be unreachable for read-side sections that begin after this call;
    /// - the caller must not use `ptr` after this call, except through a guard it already holds;
    /// - `F::reclaim(ptr)` must be sound to call exactly once, from any thread.
    unsafe fn retire<T, F: Reclaim<T>>(&self, ptr: *mut T);

    /// [`Rcu::retire`] for an object reachable only through `keys` (see
    /// [keyed sections](self#keyed-sections)): keyed sections whose keys do not overlap them
    /// need not end before it is freed. Domains that cannot tell sections apart retire it as
    /// usual.
    ///
    /// # Safety
    /// As for [`Rcu::retire`]; moreover no section keyed with keys that do not overlap `keys`
    /// can have reached `ptr`.
    unsafe fn retire_within<T, F: Reclaim<T>>(&self, ptr: *mut T, keys: Keys) {
        let _ = keys;
        // SAFETY: the caller's contract includes `retire`'s.
        unsafe { self.retire::<T, F>(ptr) }
    }

    /// Hands what this thread has retired so far on to reclamation now, instead of when its
    /// local batch fills: for retirements that hold much memory (a batch of frames). Never
    /// blocks. Domains without thread-local batches need do nothing.
    fn push_retired(&self) {}

    /// A grace period in progress, from [`Rcu::start_grace_period`].
    type Cookie: Send;

    /// Starts a grace period covering every read-side section running now, without waiting
    /// (the kernel's `start_poll_synchronize_rcu`).
    fn start_grace_period(&self) -> Self::Cookie;

    /// [`Rcu::start_grace_period`] for objects reachable only through keys that `matters`
    /// accepts: it covers every section running now except keyed ones whose keys `matters`
    /// rejects (see [keyed sections](self#keyed-sections)). Domains that cannot tell sections
    /// apart cover them all.
    fn start_grace_period_for(&self, matters: impl Fn(Keys) -> bool) -> Self::Cookie {
        let _ = matters;
        self.start_grace_period()
    }

    /// Whether the grace period has elapsed: every section that was running when `cookie` was
    /// made has ended (the kernel's `poll_state_synchronize_rcu`). Never blocks; may help the
    /// grace period along.
    fn grace_period_elapsed(&self, cookie: &mut Self::Cookie) -> bool;

    /// Blocks until every read-side section that existed when it was called has ended.
    ///
    /// # Panics
    /// If the calling thread is inside a read-side section (it would wait for itself forever).
    fn synchronize(&self) {
        self.synchronize_timed();
    }

    /// [`Rcu::synchronize`], returning how long it had to wait: zero, without reading the
    /// clock, when the grace period had already elapsed at its first poll (no reader to wait
    /// for), so that writers can account for grace periods at no cost in the common case.
    ///
    /// # Panics
    /// If the calling thread is inside a read-side section.
    fn synchronize_timed(&self) -> Duration {
        self.synchronize_timed_for(|_| true)
    }

    /// [`Rcu::synchronize_timed`] for objects reachable only through keys that `matters`
    /// accepts: waits for the sections [`Rcu::start_grace_period_for`] covers.
    ///
    /// # Panics
    /// If the calling thread is inside a read-side section.
    fn synchronize_timed_for(&self, matters: impl Fn(Keys) -> bool) -> Duration {
        assert_may_wait("synchronize");
        let mut cookie = self.start_grace_period_for(matters);
        if self.grace_period_elapsed(&mut cookie) {
            return Duration::ZERO;
        }
        let started = Instant::now();
        let mut backoff = Backoff::new();
        while !self.grace_period_elapsed(&mut cookie) {
            backoff.snooze();
        }
        started.elapsed()
    }

    /// Waits until every object this thread retired before the call has been reclaimed (the slot domain
    /// reclaims those of all threads). For teardown and tests; writers need only `synchronize`.
    ///
    /// # Panics
    /// If the calling thread is inside a read-side section.
    fn barrier(&self);
}

/// An inclusive range of keys: those a keyed read-side section may look up, or those an object
/// is reachable through (see [keyed sections](self#keyed-sections)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Keys {
    first: u64,
    last: u64,
}

impl Keys {
    /// Every key: what an unkeyed section may look up.
    pub const ALL: Self = Self {
        first: 0,
        last: u64::MAX,
    };

    /// The one key `key`.
    pub const fn one(key: u64) -> Self {
        Self {
            first: key,
            last: key,
        }
    }

    /// `first..=last`.
    ///
    /// # Panics
    /// If `first > last` (an empty range declares nothing a reader could use).
    pub const fn new(first: u64, last: u64) -> Self {
        assert!(first <= last, "Keys::new: first > last");
        Self { first, last }
    }

    /// The keys as read back from a reader slot, which may mix two sections' stores (only for
    /// a section that has already ended, whose keys no longer matter): not checked.
    pub(crate) const fn raw(first: u64, last: u64) -> Self {
        Self { first, last }
    }

    /// The first key.
    pub const fn first(self) -> u64 {
        self.first
    }

    /// The last key.
    pub const fn last(self) -> u64 {
        self.last
    }

    /// Whether `key` is one of these keys.
    pub const fn contains(self, key: u64) -> bool {
        self.first <= key && key <= self.last
    }

    /// Whether every one of `other` is one of these keys.
    pub const fn covers(self, other: Keys) -> bool {
        self.first <= other.first && other.last <= self.last
    }

    /// Whether some key is in both.
    pub const fn overlaps(self, other: Keys) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

thread_local! {
    /// Read-side sections this thread holds in domains that cannot report it themselves
    /// (slots, seize). crossbeam-epoch reports its own through `is_pinned`.
    static READ_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Whether the calling thread is inside a read-side section of any domain.
pub fn in_read_section() -> bool {
    READ_DEPTH.with(Cell::get) > 0 || (cfg!(not(feature = "shuttle")) && crossbeam_epoch::is_pinned())
}

/// Panics with a clear message if the caller may not wait for a grace period (invariant I3).
fn assert_may_wait(what: &str) {
    assert!(
        !in_read_section(),
        "rcu: {what}() called inside a read-side section: it would wait for itself forever; \
         drop every guard first"
    );
}

/// Counts this thread's read-side section in [`READ_DEPTH`] for as long as it lives.
#[derive(Debug)]
struct ReadDepth(());

impl ReadDepth {
    fn enter() -> Self {
        Self::enter_nested().0
    }

    /// [`ReadDepth::enter`], also telling whether the thread was already inside a section (of a
    /// slot or seize domain).
    #[inline]
    fn enter_nested() -> (Self, bool) {
        let before = READ_DEPTH.with(|depth| {
            let before = depth.get();
            depth.set(before + 1);
            before
        });
        (Self(()), before > 0)
    }
}

impl Drop for ReadDepth {
    #[inline]
    fn drop(&mut self) {
        READ_DEPTH.with(|depth| depth.set(depth.get() - 1));
    }
}
