//! Biased reader fences: a [`SlotRcu`](super::SlotRcu) reader skips its fence while no writer
//! is waiting for grace periods, and writers force the fence onto running readers instead, once,
//! when they come back.
//!
//! A reader's entry store must be ordered before its loads of shared pointers, against a writer's
//! unlink ordered before its scan of the entries (the store-buffering pair). Either side can pay
//! for it: each reader with a fence of its own (a locked instruction, 12–15 ns on the project's
//! machines, the largest single cost of a fast-path page fault), or each writer with a *heavy
//! barrier* that makes every running thread of the process execute a full fence
//! (`membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`: 0.2–3 µs). Readers far outnumber writers
//! when an address space is being faulted in, and writers come in bursts (munmap, mprotect), so
//! a domain switches between two modes, the way the Linux kernel's `rcu_sync` switches
//! per-CPU rw-semaphores between their fast and slow paths:
//!
//! - **FAST**: readers issue no fence. The first writer to scan switches the domain to
//!   SWITCHING, issues the heavy barrier, then stores FENCED.
//! - **FENCED**: readers fence as before and writers scan with no heavy barrier. A reader that
//!   ran [`QUIET_SECTIONS`] fenced sections in a row while no writer started a grace period
//!   moves the domain back to FAST: the fences it paid meanwhile cost about what one heavy
//!   barrier does (the ski-rental rule), so neither side pays more than twice the best choice
//!   made in hindsight.
//!
//! Invariants (each slot's entry is a Release store of its odd generation, then a compiler
//! fence, then an Acquire load of the mode; a writer unlinks, fences SeqCst, then calls
//! [`FenceMode::before_scan`] before it loads any entry):
//! - **F1** a reader that loads any mode but FAST issues a SeqCst fence before its loads of
//!   shared pointers: the classic store-buffering pair with the writer's fence.
//! - **F2** a writer scans only after it has loaded FENCED with Acquire, or after a heavy barrier
//!   of its own that followed a store of SWITCHING.
//! - **F3** only writers move the mode away from FAST, and only through SWITCHING and a heavy
//!   barrier; only readers move it from FENCED to FAST.
//!
//! Why an unfenced section is safe. Take a reader R that loaded FAST after its entry, and a
//! writer W that unlinked an object, fenced, and then either issued a heavy barrier B of its own
//! or loaded FENCED, stored by some writer after a heavy barrier B (F2).
//! - B lands in R at some point of R's program. If it lands before R's mode load, that load
//!   reads SWITCHING (stored before B) or a later value. If W issued B itself, R's loads after B
//!   see W's unlink, which preceded B: safe. Otherwise R read a FAST stored after the FENCED
//!   that W loaded (below).
//! - If B lands after R's mode load, it lands after R's entry store, which B makes visible
//!   before the FENCED store that W's scan (Acquire) follows, or before W's own scan: W sees R's
//!   section running and waits for it if its keys matter.
//! - If R's FAST was stored (by a reader, F3) after the FENCED that W loaded, in the mode's
//!   order: W's unlink was visible before W loaded the mode (W fenced in between), that load
//!   read a value older than the FAST, and R's loads are ordered after its Acquire load of the
//!   FAST, so they see the unlink. This case leans on the hardware's ordering of stores to one
//!   location against stores elsewhere (x86-64's total store order, Arm's multi-copy
//!   atomicity), which the C++ model does not promise without a fence in R; the heavy barrier
//!   itself lies outside that model, and `liburcu`'s membarrier flavour and seize make the same
//!   assumptions.
//!
//! Where the heavy barrier is not available (not Linux, or a kernel without expedited
//! membarrier), the mode stays FENCED for good. Under shuttle, which runs every atomic
//! sequentially consistent, the heavy barrier is a SeqCst fence and [`QUIET_SECTIONS`] is small,
//! so the mode changes often enough for the checker to interleave them with grace periods.

use crate::cache_aligned::CacheAligned;
use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use std::time::Instant;

/// Fenced sections a reader runs in a row, with no grace period started meanwhile, before it moves
/// its domain back to FAST, at first and at least: about one heavy barrier's cost in reader
/// fences (64 × 12–15 ns against 0.2–3 µs; docs/design.md, *Biased reader fences*). The domain doubles it
/// each time a FAST period turns out too short for its heavy barrier to have paid off, and halves
/// it back each time one was long enough, up to [`MAX_QUIET_SECTIONS`].
pub const QUIET_SECTIONS: u64 = if cfg!(feature = "shuttle") { 2 } else { 64 };

/// The most fenced sections in a row the domain may ask before readers go FAST again.
pub const MAX_QUIET_SECTIONS: u64 = 1 << 16;

/// A FAST period paid for its heavy barrier if it lasted this many times as long as the barrier
/// took: a fence is about a fifth of a fast-path fault, so a reader running back-to-back faults
/// saves about a fifth of the period, and a margin covers the writers' other costs.
const PAYOFF_FACTOR: u32 = 8;

const FAST: usize = 0;
const SWITCHING: usize = 1;
const FENCED: usize = 2;

/// A domain's fence mode, and the count of grace periods its writers started.
#[derive(Debug)]
pub(super) struct FenceMode {
    /// FAST, SWITCHING or FENCED: loaded by every reader entry, stored only at mode changes,
    /// so its line stays shared in every reader's cache while the mode holds.
    mode: CacheAligned<AtomicUsize>,
    /// When to go FAST: on a line of its own, written on every scan, read by fenced readers.
    policy: CacheAligned<Policy>,
    created: Instant,
    /// Whether the heavy barrier is available, so that readers may ever move the mode to FAST.
    may_relax: bool,
}

/// What decides when readers go FAST again.
#[derive(Debug)]
struct Policy {
    /// Grace periods started (the scans), for readers to tell whether writers are active.
    scans: AtomicU64,
    /// The fenced sections in a row that move the mode to FAST now (see [`QUIET_SECTIONS`]).
    quiet_sections: AtomicU64,
    /// When the mode last went FAST, in nanoseconds since the domain's creation.
    relaxed_at: AtomicU64,
}

/// What a reader keeps between its fenced sections to tell when writers went quiet: holder-only
/// fields of its slot.
#[derive(Debug, Default)]
pub(super) struct QuietCount {
    /// The scan count the reader's last fenced section loaded.
    scans_seen: AtomicU64,
    /// Fenced sections in a row that loaded `scans_seen`.
    sections: AtomicU64,
}

impl Default for FenceMode {
    fn default() -> Self {
        let may_relax = heavy_barrier::available();
        Self {
            mode: CacheAligned(AtomicUsize::new(if may_relax { FAST } else { FENCED })),
            policy: CacheAligned(Policy {
                scans: AtomicU64::new(0),
                quiet_sections: AtomicU64::new(QUIET_SECTIONS),
                relaxed_at: AtomicU64::new(0),
            }),
            created: Instant::now(),
            may_relax,
        }
    }
}

impl FenceMode {
    /// Orders a reader's entry (a Release store just before) before its loads of shared
    /// pointers: by a fence if the mode asks for one (F1), by the writers' heavy barrier if not.
    #[inline(always)]
    pub(super) fn after_entry(&self, quiet: &QuietCount) {
        // The mode load must follow the entry store in program order (see the module
        // documentation); the compiler would otherwise be free to hoist an Acquire load above a
        // Release store.
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        // Acquire pairs with the Release store of FENCED after a heavy barrier, and orders the
        // section's loads after this one.
        if self.mode.load(Ordering::Acquire) == FAST {
            return;
        }
        // SeqCst: the reader's half of the store-buffering pair with the fence in
        // `SlotRcu::running_readers`.
        fence(Ordering::SeqCst);
        self.count_quiet(quiet);
    }

    /// Counts a fenced section and moves the mode to FAST after [`QUIET_SECTIONS`] of them in a
    /// row with no scan in between.
    #[inline(always)]
    fn count_quiet(&self, quiet: &QuietCount) {
        if !self.may_relax {
            return;
        }
        // Relaxed: a heuristic; which scans a reader counts has no bearing on safety.
        let scans = self.policy.scans.load(Ordering::Relaxed);
        // Relaxed: holder-only fields.
        if quiet.scans_seen.load(Ordering::Relaxed) != scans {
            quiet.scans_seen.store(scans, Ordering::Relaxed);
            quiet.sections.store(0, Ordering::Relaxed);
            return;
        }
        let sections = quiet.sections.load(Ordering::Relaxed) + 1;
        // Relaxed: a heuristic, like `scans`.
        if sections < self.policy.quiet_sections.load(Ordering::Relaxed) {
            quiet.sections.store(sections, Ordering::Relaxed);
            return;
        }
        quiet.sections.store(0, Ordering::Relaxed);
        self.relax();
    }

    /// Moves the mode from FENCED to FAST (F3), unless a writer changed it meanwhile.
    #[cold]
    fn relax(&self) {
        // SeqCst: the store readers' FAST loads read from is ordered after the writers' loads of
        // FENCED that preceded it (the second case in the module documentation).
        if self
            .mode
            .compare_exchange(FENCED, FAST, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            // Relaxed: a heuristic; a writer that reads an older time misjudges one period.
            self.policy
                .relaxed_at
                .store(self.elapsed_nanos(), Ordering::Relaxed);
        }
    }

    fn elapsed_nanos(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Makes the calling writer's scan of reader entries complete (F2): to be called after the
    /// writer's SeqCst fence and before its first load of an entry.
    #[inline]
    pub(super) fn before_scan(&self) {
        // Relaxed: readers only compare counts (see `count_quiet`).
        self.policy.scans.fetch_add(1, Ordering::Relaxed);
        // Acquire pairs with the Release store of FENCED below (made by this writer or another),
        // which followed a heavy barrier.
        let mut mode = self.mode.load(Ordering::Acquire);
        let mut switched = false;
        while mode == FAST {
            // SeqCst: the heavy barrier below orders this store before every running reader's
            // later mode loads (the first case in the module documentation).
            match self
                .mode
                .compare_exchange(FAST, SWITCHING, Ordering::SeqCst, Ordering::Acquire)
            {
                Ok(_) => (mode, switched) = (SWITCHING, true),
                Err(now) => mode = now,
            }
        }
        if mode == FENCED {
            return;
        }
        // SWITCHING: this writer's or another's. A barrier of its own, in either case, so the
        // scan below never depends on another writer's barrier having returned.
        if switched {
            self.issue_and_judge();
        } else {
            heavy_barrier::issue();
        }
        // Release pairs with the Acquire loads of later writers: the entries the barrier made
        // visible are visible to them too. Fails only if another writer stored FENCED first (and
        // a reader may since have relaxed it): nothing to do then.
        let _ = self
            .mode
            .compare_exchange(SWITCHING, FENCED, Ordering::Release, Ordering::Relaxed);
    }

    /// Issues the heavy barrier that ends a FAST period, and judges by the time each took whether
    /// the period paid for it: if not, readers wait for twice as many quiet sections before the
    /// next one; if so, for half as many (never fewer than [`QUIET_SECTIONS`]).
    #[cold]
    fn issue_and_judge(&self) {
        let started = self.elapsed_nanos();
        heavy_barrier::issue();
        if cfg!(feature = "shuttle") {
            // Time is not the checker's to schedule: keep the runs deterministic.
            return;
        }
        let cost = self.elapsed_nanos().saturating_sub(started);
        // Relaxed: heuristics (see `relax`).
        let fast_for = started.saturating_sub(self.policy.relaxed_at.load(Ordering::Relaxed));
        let quiet = self.policy.quiet_sections.load(Ordering::Relaxed);
        let quiet = if fast_for >= cost.saturating_mul(PAYOFF_FACTOR.into()) {
            (quiet / 2).max(QUIET_SECTIONS)
        } else {
            (quiet * 2).min(MAX_QUIET_SECTIONS)
        };
        self.policy.quiet_sections.store(quiet, Ordering::Relaxed);
    }

    /// Whether readers currently fence their entries (for tests and statistics).
    pub(super) fn readers_fence(&self) -> bool {
        // Relaxed: a snapshot.
        self.mode.load(Ordering::Relaxed) != FAST
    }
}

/// The heavy barrier: every running thread of the process executes a full fence between this
/// call's start and its return.
#[cfg(all(target_os = "linux", not(feature = "shuttle")))]
mod heavy_barrier {
    use std::sync::OnceLock;

    const MEMBARRIER_CMD_QUERY: libc::c_long = 0;
    const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    fn membarrier(cmd: libc::c_long) -> libc::c_long {
        // SAFETY: membarrier takes two integer arguments and touches no memory of ours.
        unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_long, 0 as libc::c_long) }
    }

    /// Whether the kernel offers expedited private membarrier; registers the process for it
    /// (once) if so.
    pub(super) fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            let commands = membarrier(MEMBARRIER_CMD_QUERY);
            commands >= 0
                && commands & MEMBARRIER_CMD_PRIVATE_EXPEDITED != 0
                && membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0
        })
    }

    /// Issues the barrier. Only called once [`available`] said yes.
    pub(super) fn issue() {
        let done = membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
        // The registration succeeded, and the command fails for nothing else.
        assert_eq!(done, 0, "membarrier failed after a successful registration");
    }
}

/// Under shuttle every atomic is sequentially consistent, so a fence is all a heavy barrier is.
#[cfg(feature = "shuttle")]
mod heavy_barrier {
    pub(super) fn available() -> bool {
        true
    }

    pub(super) fn issue() {
        crate::sync::atomic::fence(crate::sync::atomic::Ordering::SeqCst);
    }
}

/// No heavy barrier off Linux: the mode stays FENCED.
#[cfg(all(not(target_os = "linux"), not(feature = "shuttle")))]
mod heavy_barrier {
    pub(super) fn available() -> bool {
        false
    }

    pub(super) fn issue() {
        unreachable!("the mode never leaves FENCED without a heavy barrier")
    }
}
