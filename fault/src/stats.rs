//! Fault statistics, counted per thread slot (see `shard::PerThreadCounters`) so that counting
//! does not make faulting threads write a shared cache line or take a locked instruction; a
//! snapshot sums the slots.

use crate::shard::PerThreadCounters;
use maple::sync::atomic::{AtomicU64, Ordering};
use std::fmt;

/// What is counted.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    Installed,
    AlreadyMapped,
    NotMapped,
    AccessDenied,
    OutOfMemory,
    BusError,
    SlowPath,
    Retries,
}

const COUNTERS: usize = Counter::Retries as usize + 1;

/// The counters of one memory manager.
pub(crate) struct Counters(PerThreadCounters<COUNTERS>);

impl Counters {
    pub(crate) fn new() -> Self {
        Self(PerThreadCounters::new())
    }

    /// Adds one to `counter` in the calling thread's slot.
    #[inline]
    pub(crate) fn bump(&self, counter: Counter) {
        self.0.add(counter as usize, 1);
    }

    fn sum(&self, counter: Counter) -> u64 {
        self.0.sum(counter as usize)
    }
}

/// Times faults blocked behind another thread (a writer setting up their VMA, a lock held by
/// a writer), with the total and longest wait. Touched only when a fault waits, so it may be
/// one shared set of counters.
#[derive(Debug, Default)]
pub(crate) struct WaitClock {
    count: AtomicU64,
    total_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl WaitClock {
    pub(crate) fn record(&self, waited: std::time::Duration) {
        let ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        // Relaxed: statistics order nothing.
        self.count.fetch_add(1, Ordering::Relaxed);
        self.total_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Waits {
        Waits {
            count: self.count.load(Ordering::Relaxed),
            total_ns: self.total_ns.load(Ordering::Relaxed),
            max_ns: self.max_ns.load(Ordering::Relaxed),
        }
    }
}

/// How often faults waited for another thread, and for how long.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waits {
    /// Faults that waited.
    pub count: u64,
    /// Nanoseconds waited in all.
    pub total_ns: u64,
    /// The longest wait, in nanoseconds.
    pub max_ns: u64,
}

impl Waits {
    /// These waits and `other`'s together (the faults of several address spaces).
    pub fn plus(self, other: Waits) -> Waits {
        Waits {
            count: self.count + other.count,
            total_ns: self.total_ns + other.total_ns,
            max_ns: self.max_ns.max(other.max_ns),
        }
    }
}

/// A snapshot of a memory manager's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Faults that installed or upgraded a translation.
    pub installed: u64,
    /// Faults that found the translation already there (another thread installed it).
    pub already_mapped: u64,
    /// Faults on unmapped addresses (SIGSEGV, SEGV_MAPERR).
    pub not_mapped: u64,
    /// Faults the mapping's permissions refused (SIGSEGV, SEGV_ACCERR).
    pub access_denied: u64,
    /// Faults that found no free frame.
    pub out_of_memory: u64,
    /// Faults beyond the end of a file (SIGBUS).
    pub bus_errors: u64,
    /// Faults resolved under the RCU guard alone, without a VMA reference (successful faults
    /// not resolved on the slow path; counted that way so the fast path bumps one counter).
    pub fast_path: u64,
    /// Faults resolved holding a VMA reference, the guard dropped while the page was read.
    pub slow_path: u64,
    /// Attempts repeated because a racing fault or writer changed what was found.
    pub retries: u64,
    /// Faults that waited for another thread — a VMA being set up (BABY), a truncate, hole
    /// punch or eviction of their file page — and for how long.
    pub waits: Waits,
    /// Share lookups (a fault looking for a page table to share, PMD sharing) held up by a
    /// lock, and for how long.
    pub share_waits: Waits,
    /// Writer operations that replaced or removed VMAs.
    pub replacements: u64,
    /// Of those, how many waited for VMA references to drain.
    pub reference_waits: u64,
    /// Nanoseconds writers waited for references.
    pub reference_wait_ns: u64,
    /// Nanoseconds writers waited for grace periods.
    pub grace_period_ns: u64,
    /// Writer operations and MADV_DONTNEEDs that revoked translations, and so waited for the
    /// accesses through them before returning.
    pub revocations: u64,
    /// Nanoseconds those waits took.
    pub revocation_wait_ns: u64,
}

impl FaultStats {
    pub(crate) fn collect(
        counters: &Counters,
        (waits, share_waits): (&WaitClock, &WaitClock),
        space: &vma::SpaceStats,
    ) -> Self {
        let load = |value: &AtomicU64| value.load(Ordering::Relaxed);
        Self {
            installed: counters.sum(Counter::Installed),
            already_mapped: counters.sum(Counter::AlreadyMapped),
            not_mapped: counters.sum(Counter::NotMapped),
            access_denied: counters.sum(Counter::AccessDenied),
            out_of_memory: counters.sum(Counter::OutOfMemory),
            bus_errors: counters.sum(Counter::BusError),
            fast_path: (counters.sum(Counter::Installed) + counters.sum(Counter::AlreadyMapped))
                .saturating_sub(counters.sum(Counter::SlowPath)),
            slow_path: counters.sum(Counter::SlowPath),
            retries: counters.sum(Counter::Retries),
            waits: waits.snapshot(),
            share_waits: share_waits.snapshot(),
            replacements: load(&space.replacements),
            reference_waits: load(&space.reference_waits),
            reference_wait_ns: load(&space.reference_wait_ns),
            grace_period_ns: load(&space.grace_period_ns),
            revocations: load(&space.revocations),
            revocation_wait_ns: load(&space.revocation_wait_ns),
        }
    }

    /// Faults of every outcome.
    pub fn faults(&self) -> u64 {
        self.installed
            + self.already_mapped
            + self.not_mapped
            + self.access_denied
            + self.out_of_memory
            + self.bus_errors
    }
}

impl fmt::Display for FaultStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "faults: {} (installed {}, already mapped {}, not mapped {}, access denied {}, \
             out of memory {}, bus errors {})",
            self.faults(),
            self.installed,
            self.already_mapped,
            self.not_mapped,
            self.access_denied,
            self.out_of_memory,
            self.bus_errors
        )?;
        writeln!(
            f,
            "paths: fast {}, slow {}; retries {}; waits {} ({:.3} ms, longest {:.3} ms)",
            self.fast_path,
            self.slow_path,
            self.retries,
            self.waits.count,
            self.waits.total_ns as f64 / 1e6,
            self.waits.max_ns as f64 / 1e6
        )?;
        writeln!(
            f,
            "share lookups held up: {} ({:.3} ms, longest {:.3} ms)",
            self.share_waits.count,
            self.share_waits.total_ns as f64 / 1e6,
            self.share_waits.max_ns as f64 / 1e6
        )?;
        write!(
            f,
            "writers: {} replacements, {} waited for references ({:.3} ms), {:.3} ms in grace periods; \
             {} revoked translations ({:.3} ms waiting for accesses through them)",
            self.replacements,
            self.reference_waits,
            self.reference_wait_ns as f64 / 1e6,
            self.grace_period_ns as f64 / 1e6,
            self.revocations,
            self.revocation_wait_ns as f64 / 1e6
        )
    }
}
