//! RCU scenarios written against the `maple::sync` facade, so the same code runs with std threads
//! (tests/rcu.rs) and under shuttle (tests/rcu_shuttle.rs). Each scenario panics when the
//! domain breaks its contract.

use maple::rcu::{Keys, Rcu, Reclaim};

pub use crate::no_grace::NoGrace;
use maple::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use maple::sync::{Arc, thread};

/// A probe's state while it is published or may still be read.
const LIVE: u64 = 0x11fe;
/// A probe's state once its reclaimer ran: any reader that sees this read freed memory.
const POISONED: u64 = 0xdead;

/// An object that is "freed" by poisoning it in place: the memory stays owned by the test's
/// arena, so a reader that reaches a freed probe detects it instead of invoking undefined
/// behaviour.
pub struct Probe {
    state: AtomicU64,
}

/// Reclaims a probe by poisoning it.
pub struct Poison;

impl Reclaim<Probe> for Poison {
    unsafe fn reclaim(ptr: *mut Probe) {
        // SAFETY: probes live in an arena that outlives the domain; reclaiming only poisons.
        let probe = unsafe { &*ptr };
        let before = probe.state.swap(POISONED, Ordering::Relaxed);
        assert_eq!(before, LIVE, "a probe was reclaimed twice");
    }
}

/// The probes a scenario publishes and retires. If the scenario fails, objects may still be
/// queued in a domain that outlives the test (crossbeam's collector is process-wide), so a failing
/// scenario keeps its arena alive rather than let a later reclamation touch freed memory.
pub struct Arena(Option<Arc<Vec<Probe>>>);

impl Arena {
    pub fn new(len: usize) -> Self {
        Self(Some(Arc::new(
            (0..len)
                .map(|_| Probe {
                    state: AtomicU64::new(LIVE),
                })
                .collect(),
        )))
    }

    pub fn share(&self) -> Arc<Vec<Probe>> {
        Arc::clone(self.0.as_ref().unwrap())
    }

    pub fn ptr(&self, i: usize) -> *mut Probe {
        std::ptr::from_ref(&self.0.as_ref().unwrap()[i]).cast_mut()
    }

    pub fn poisoned(&self) -> usize {
        self.0
            .as_ref()
            .unwrap()
            .iter()
            .filter(|p| p.state.load(Ordering::Relaxed) == POISONED)
            .count()
    }
}

/// Arenas of failed scenarios, kept reachable (not leaked) until the process exits.
static KEPT: std::sync::Mutex<Vec<Arc<Vec<Probe>>>> = std::sync::Mutex::new(Vec::new());

impl Drop for Arena {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(arena) = self.0.take()
        {
            KEPT.lock().unwrap_or_else(|e| e.into_inner()).push(arena);
        }
    }
}

/// Spins (yielding) until `flag` is set.
pub fn wait_for(flag: &AtomicBool) {
    while !flag.load(Ordering::Acquire) {
        thread::yield_now();
    }
}

/// Reads `probe` `hold_yields + 1` times, yielding after each: a reader inside its section
/// that panics if the probe was reclaimed meanwhile.
fn hold(probe: &Probe, hold_yields: usize) {
    for _ in 0..=hold_yields {
        assert_eq!(
            probe.state.load(Ordering::Relaxed),
            LIVE,
            "reader saw a poisoned (freed) probe"
        );
        thread::yield_now();
    }
}

/// `synchronize` does not return while a guard that existed before it is still held.
pub fn synchronize_waits_for_earlier_reader<R: Rcu>(hold_yields: usize) {
    synchronize_waits_for_reader::<R>(hold_yields, Section::Plain);
}

/// As [`synchronize_waits_for_earlier_reader`], but the reader's section is a nested guard whose
/// enclosing guard was dropped first: the nested guard alone must hold the grace period up.
pub fn synchronize_waits_for_nested_reader<R: Rcu>(hold_yields: usize) {
    synchronize_waits_for_reader::<R>(hold_yields, Section::Nested);
}

/// The keys the keyed scenarios' grace periods and retirements care about.
pub const KEY: Keys = Keys::one(5);
/// Keys overlapping [`KEY`].
pub const AROUND_KEY: Keys = Keys::new(3, 6);
/// Keys they do not care about.
pub const OTHER_KEYS: Keys = Keys::new(6, 9);

/// How a scenario's reader enters its section.
#[derive(Debug, Clone, Copy)]
pub enum Section {
    /// One unkeyed guard.
    Plain,
    /// A nested unkeyed guard whose enclosing guard was dropped first.
    Nested,
    /// One guard keyed at [`KEY`].
    Keyed,
    /// One guard keyed at [`AROUND_KEY`], with one keyed at [`KEY`] nested in it.
    KeyedRange,
    /// A guard keyed at [`OTHER_KEYS`] with an unkeyed guard nested in it.
    WidenedByUnkeyed,
    /// A guard keyed at [`OTHER_KEYS`] with a guard keyed at [`KEY`] nested in it.
    WidenedByOtherKey,
    /// A guard keyed at [`KEY`], entered after a section keyed at [`OTHER_KEYS`] ended (its
    /// slot must not keep the earlier section's keys).
    KeyedAfterOtherKeys,
}

/// The keyed sections that may reach [`KEY`]: grace periods and retirements for it wait for
/// each.
pub const KEYED_SECTIONS: [Section; 5] = [
    Section::Keyed,
    Section::KeyedRange,
    Section::WidenedByUnkeyed,
    Section::WidenedByOtherKey,
    Section::KeyedAfterOtherKeys,
];

/// Enters a section of `rcu` as `section` says; the guards hold it.
fn enter<R: Rcu>(rcu: &R, section: Section) -> Vec<R::Guard<'_>> {
    match section {
        Section::Plain => vec![rcu.read()],
        Section::Nested => {
            let outer = rcu.read();
            let inner = rcu.read();
            drop(outer);
            vec![inner]
        }
        Section::Keyed => vec![rcu.read_keyed(KEY)],
        Section::KeyedRange => {
            let outer = rcu.read_keyed(AROUND_KEY);
            vec![outer, rcu.read_keyed(KEY)]
        }
        Section::WidenedByUnkeyed => {
            let outer = rcu.read_keyed(OTHER_KEYS);
            vec![outer, rcu.read()]
        }
        Section::WidenedByOtherKey => {
            let outer = rcu.read_keyed(OTHER_KEYS);
            vec![outer, rcu.read_keyed(KEY)]
        }
        Section::KeyedAfterOtherKeys => {
            drop(rcu.read_keyed(OTHER_KEYS));
            vec![rcu.read_keyed(KEY)]
        }
    }
}

/// An object retired for [`KEY`] only (`retire_within`) is not reclaimed while a section that
/// may reach it, entered as `section` says, still reads it; it is after a `barrier`.
pub fn retire_within_waits_for_sections_that_may_reach_it<R: Rcu>(hold_yields: usize, section: Section) {
    let arena = Arena::new(1);
    let rcu = Arc::new(R::default());
    let shared = Arc::new(AtomicPtr::new(arena.ptr(0)));
    let entered = Arc::new(AtomicBool::new(false));
    let reader = {
        let (arena, rcu, shared, entered) = (arena.share(), rcu.clone(), shared.clone(), entered.clone());
        thread::spawn(move || {
            let guards = enter(&*rcu, section);
            // Acquire pairs with the writer's Release swap.
            let probe = shared.load(Ordering::Acquire);
            entered.store(true, Ordering::Release);
            if !probe.is_null() {
                // SAFETY: probes live in `arena`, which this thread keeps alive.
                hold(unsafe { &*probe }, hold_yields);
            }
            drop(guards);
            drop(arena);
        })
    };
    wait_for(&entered);
    let old = shared.swap(std::ptr::null_mut(), Ordering::AcqRel);
    // SAFETY: unpublished by the swap; only sections unkeyed or keyed at KEY read it here.
    unsafe { rcu.retire_within::<Probe, Poison>(old, KEY) };
    rcu.push_retired();
    reader
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    rcu.barrier();
    assert_eq!(arena.poisoned(), 1, "reclaimed after the readers and a barrier");
}

/// An object retired for [`KEY`] only is reclaimed at once while a section keyed at
/// [`OTHER_KEYS`] runs (slot domain: a sealed batch nobody may reach is reclaimed on the spot).
pub fn retire_within_skips_other_keys<R: Rcu>() {
    let arena = Arena::new(1);
    let poisoned = while_keyed_elsewhere(&Arc::new(R::default()), |rcu| {
        // SAFETY: never published; `Poison` only marks arena memory.
        unsafe { rcu.retire_within::<Probe, Poison>(arena.ptr(0), KEY) };
        arena.poisoned()
    });
    assert_eq!(poisoned, 1, "nothing that may reach it was running");
}

/// Runs `act` while another thread holds a section keyed at [`OTHER_KEYS`], which it keeps until
/// `act` has returned (so an `act` that waited for it would never return).
fn while_keyed_elsewhere<R: Rcu, T>(rcu: &Arc<R>, act: impl FnOnce(&R) -> T) -> T {
    let entered = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (rcu, entered, done) = (rcu.clone(), entered.clone(), done.clone());
        thread::spawn(move || {
            let guard = rcu.read_keyed(OTHER_KEYS);
            entered.store(true, Ordering::Release);
            wait_for(&done);
            drop(guard);
        })
    };
    wait_for(&entered);
    let result = act(rcu);
    done.store(true, Ordering::Release);
    reader
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    result
}

/// A grace period for [`KEY`] (`synchronize_timed_for`) does not return while a section that
/// may reach it, entered as `section` says, is still running.
pub fn synchronize_waits_for_reader<R: Rcu>(hold_yields: usize, section: Section) {
    let rcu = Arc::new(R::default());
    let entered = Arc::new(AtomicBool::new(false));
    let synced = Arc::new(AtomicBool::new(false));
    let reader = {
        let (rcu, entered, synced) = (rcu.clone(), entered.clone(), synced.clone());
        thread::spawn(move || {
            let guards = enter(&*rcu, section);
            entered.store(true, Ordering::Release);
            for _ in 0..hold_yields {
                thread::yield_now();
                assert!(
                    !synced.load(Ordering::Acquire),
                    "synchronize returned while an earlier guard was held"
                );
            }
            drop(guards);
        })
    };
    wait_for(&entered);
    rcu.synchronize_timed_for(|keys| keys.overlaps(KEY));
    synced.store(true, Ordering::Release);
    reader
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

/// A grace period for [`KEY`] does not wait for a section keyed at [`OTHER_KEYS`]: the reader
/// keeps its guard until the grace period has returned (a domain that waited would never
/// return).
pub fn keyed_grace_period_skips_other_keys<R: Rcu>() {
    while_keyed_elsewhere(&Arc::new(R::default()), |rcu| {
        rcu.synchronize_timed_for(|keys| keys.overlaps(KEY))
    });
}

/// One writer replaces a published probe `writes` times, retiring each old one; `readers` threads
/// read it `reads` times each, checking the probe before and after yielding inside the guard.
/// Panics if a reader sees a poisoned probe (freed too early) or if, after `barrier`, any
/// replaced probe is still unreclaimed.
pub fn retired_never_freed_under_reader<R: Rcu>(
    writes: usize,
    readers: usize,
    reads: usize,
    hold_yields: usize,
) {
    let arena = Arena::new(writes + 1);
    let rcu = Arc::new(R::default());
    let shared = Arc::new(AtomicPtr::new(arena.ptr(0)));
    let seen = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..readers)
        .map(|_| {
            let (arena, rcu, shared, seen) = (arena.share(), rcu.clone(), shared.clone(), seen.clone());
            thread::spawn(move || {
                for _ in 0..reads {
                    let guard = rcu.read();
                    // Acquire pairs with the writer's Release swap.
                    let probe = shared.load(Ordering::Acquire);
                    // SAFETY: probes live in `arena`, which this thread keeps alive.
                    hold(unsafe { &*probe }, hold_yields);
                    drop(guard);
                    seen.fetch_add(1, Ordering::Relaxed);
                }
                drop(arena);
            })
        })
        .collect();
    for i in 1..=writes {
        let old = shared.swap(arena.ptr(i), Ordering::AcqRel);
        // SAFETY: `old` was unpublished by the swap; `Poison` only marks arena memory.
        unsafe { rcu.retire::<Probe, Poison>(old) };
        thread::yield_now();
    }
    for handle in handles {
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    }
    rcu.barrier();
    assert_eq!(
        arena.poisoned(),
        writes,
        "every retired probe is reclaimed after the readers left and a barrier"
    );
    assert_eq!(seen.load(Ordering::Relaxed), readers * reads);
}

/// Objects retired while an earlier guard is held are not reclaimed until it ends, and all of
/// them are reclaimed once it has ended and the retiring thread calls `barrier`.
pub fn retired_freed_after_last_guard<R: Rcu>(count: usize) {
    let arena = Arena::new(count);
    let rcu = Arc::new(R::default());
    let entered = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let reader = {
        let (rcu, entered, release) = (rcu.clone(), entered.clone(), release.clone());
        thread::spawn(move || {
            let guard = rcu.read();
            entered.store(true, Ordering::Release);
            wait_for(&release);
            drop(guard);
        })
    };
    wait_for(&entered);
    for i in 0..count {
        // SAFETY: the probe was never published; `Poison` only marks arena memory.
        unsafe { rcu.retire::<Probe, Poison>(arena.ptr(i)) };
    }
    let early = arena.poisoned();
    release.store(true, Ordering::Release);
    assert_eq!(early, 0, "nothing is reclaimed while an earlier guard is held");
    reader
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    rcu.barrier();
    assert_eq!(
        arena.poisoned(),
        count,
        "everything is reclaimed after the last guard and a barrier"
    );
}

/// Readers that keep arriving after `synchronize` started do not starve it: reader A holds a
/// guard across the start; B and C keep taking fresh short guards, overlapping A and each other,
/// until `synchronize` has returned (or `max_rounds` pass, which fails the scenario). A guard is
/// one read-side section per thread, so each thread's guards are taken one after another.
pub fn new_readers_do_not_starve_synchronize<R: Rcu>(max_rounds: usize) {
    let rcu = Arc::new(R::default());
    let a_in = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let synced = Arc::new(AtomicBool::new(false));
    let a = {
        let (rcu, a_in, started) = (rcu.clone(), a_in.clone(), started.clone());
        thread::spawn(move || {
            let guard = rcu.read();
            a_in.store(true, Ordering::Release);
            wait_for(&started);
            drop(guard);
        })
    };
    let churners: Vec<_> = (0..2)
        .map(|_| {
            let (rcu, started, synced) = (rcu.clone(), started.clone(), synced.clone());
            thread::spawn(move || {
                wait_for(&started);
                for _ in 0..max_rounds {
                    if synced.load(Ordering::Acquire) {
                        return;
                    }
                    let guard = rcu.read();
                    thread::yield_now();
                    drop(guard);
                }
                panic!("synchronize was starved by readers that arrived after it started");
            })
        })
        .collect();
    wait_for(&a_in);
    started.store(true, Ordering::Release);
    rcu.synchronize();
    synced.store(true, Ordering::Release);
    a.join().unwrap();
    for churner in churners {
        churner
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    }
}
