//! Single-thread fault cost per page: an engine maps a fresh region of [`PAGES`] pages, its
//! faults are timed, and it unmaps the region (untimed, frames back in the pool). The criterion
//! benchmark `benches/fault.rs` times regions this way, one engine for seconds, then the next.
//!
//! [`paired_rounds`] times them so that engines can be compared on a noisy machine: each round
//! times one region on every engine, one after the other (the order rotates from round to
//! round), so a round's engines ran within a millisecond of each other, and the ratio of their
//! times within a round cancels the machine's slow and fast phases (on the 2-vCPU development
//! machine, the same engine's time moves by up to 40% from one criterion run to the next). The
//! median of the rounds' ratios is the figure to quote (`bench fault-cost`).

use crate::unsync_engine::UnsyncEngine;
use fault::{Access, File, FramePool, FramePoolConfig, Mm, MmConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vma::{MapFlags, PAGE_SIZE, Prot};

/// Pages in one region.
pub const PAGES: u64 = 512;
/// Where regions are mapped.
pub const REGION: u64 = 0x1000_0000;

/// An engine whose fault cost is measured, one region at a time.
pub trait FaultTarget {
    /// Maps a fresh region of [`PAGES`] pages (not timed) and returns its start.
    fn map(&mut self) -> u64;
    /// Faults the page at `addr` of the region, which must succeed.
    fn fault(&mut self, addr: u64);
    /// Unmaps the region at `start` and puts its frames back in the pool (not timed).
    fn unmap(&mut self, start: u64);
}

/// Maps a region on `target`, faults its first `pages` pages (timed) and unmaps it.
pub fn time_region<T: FaultTarget>(target: &mut T, pages: u64) -> Duration {
    assert!(pages <= PAGES, "a region has {PAGES} pages");
    let start = target.map();
    let began = Instant::now();
    for page in 0..pages {
        target.fault(start + page * PAGE_SIZE);
    }
    let elapsed = began.elapsed();
    target.unmap(start);
    elapsed
}

/// Unmaps `pages` pages at `start` from `mm` and waits until their frames are back in the
/// pool: munmap puts them back a grace period later, and waiting here (untimed), as the
/// unsynchronized engine puts them back at once, keeps the deferred work out of the next timed
/// fault.
pub fn release(mm: &Mm, start: u64, pages: u64) {
    mm.munmap(start, pages * PAGE_SIZE).expect("munmap");
    mm.barrier();
}

/// A new frame pool with the default settings.
pub fn frame_pool() -> Arc<FramePool> {
    Arc::new(FramePool::new(FramePoolConfig::default()).expect("default frame pool"))
}

/// What a [`Maplevm`] target maps in each region.
enum Mapping {
    /// Private anonymous memory, written.
    Anonymous,
    /// A private mapping of a file whose pages are all cached, read (the fast path).
    CachedFile(Arc<File>),
    /// A private mapping of a fresh file of which nothing is cached, read (the slow path: every
    /// fault reads its page with the guard dropped).
    ColdFile,
}

/// maplevm's engine ([`Mm`]) as a [`FaultTarget`].
pub struct Maplevm {
    mm: Mm,
    mapping: Mapping,
}

impl Maplevm {
    fn new(zero_fill: bool, mapping: impl FnOnce(&Mm) -> Mapping) -> Self {
        let config = MmConfig {
            zero_fill,
            ..MmConfig::default()
        };
        let mm = Mm::new(config, frame_pool()).expect("default Mm");
        let mapping = mapping(&mm);
        Self { mm, mapping }
    }

    /// Writes to private anonymous memory, zero-filled or not.
    pub fn anonymous(zero_fill: bool) -> Self {
        Self::new(zero_fill, |_| Mapping::Anonymous)
    }

    /// Reads a private mapping of a file whose pages are all in its cache.
    pub fn cached_file() -> Self {
        Self::new(true, |mm| {
            let file = File::zeroed("/cached", mm.frames(), PAGES * PAGE_SIZE).expect("a small file");
            // Reading every page brings it into the page cache.
            let mut page = vec![0; PAGE_SIZE as usize];
            for pgoff in 0..PAGES {
                file.read_at(pgoff * PAGE_SIZE, &mut page).expect("read a page");
            }
            Mapping::CachedFile(file)
        })
    }

    /// Reads a private mapping of a new file each region, none of it cached.
    pub fn cold_file() -> Self {
        Self::new(true, |_| Mapping::ColdFile)
    }

    /// The engine.
    pub fn mm(&self) -> &Mm {
        &self.mm
    }
}

impl FaultTarget for Maplevm {
    fn map(&mut self) -> u64 {
        let len = PAGES * PAGE_SIZE;
        let cold;
        let file = match &self.mapping {
            Mapping::Anonymous => {
                let flags = MapFlags::PRIVATE_ANONYMOUS.fixed();
                return self
                    .mm
                    .mmap(REGION, len, Prot::READ_WRITE, flags, None)
                    .expect("mmap");
            }
            Mapping::CachedFile(file) => file,
            Mapping::ColdFile => {
                cold = File::zeroed("/cold", self.mm.frames(), len).expect("a small file");
                &cold
            }
        };
        let flags = MapFlags::PRIVATE.fixed();
        self.mm
            .mmap(REGION, len, Prot::READ, flags, Some((file, 0)))
            .expect("mmap")
    }

    fn fault(&mut self, addr: u64) {
        let access = match self.mapping {
            Mapping::Anonymous => Access::Write,
            Mapping::CachedFile(_) | Mapping::ColdFile => Access::Read,
        };
        self.mm.fault(addr, access).expect("fault");
    }

    fn unmap(&mut self, start: u64) {
        release(&self.mm, start, PAGES);
    }
}

impl<const PROTOCOL_ATOMICS: bool> FaultTarget for UnsyncEngine<PROTOCOL_ATOMICS> {
    fn map(&mut self) -> u64 {
        UnsyncEngine::map(self, REGION, PAGES * PAGE_SIZE, Prot::READ_WRITE);
        REGION
    }

    fn fault(&mut self, addr: u64) {
        UnsyncEngine::fault(self, addr, Access::Write).expect("fault");
    }

    fn unmap(&mut self, start: u64) {
        UnsyncEngine::unmap(self, start);
    }
}

/// Times `rounds` regions on each of `timers` (each call maps, faults and unmaps one region
/// and returns the faults' time), a round at a time with every timer once per round, the first
/// timer of a round rotating. Returns each timer's time per fault (ns) in each round, after
/// `rounds / 10 + 1` untimed warm-up rounds (frame pools grown, caches warm).
pub fn paired_rounds(timers: &mut [&mut dyn FnMut() -> Duration], rounds: usize) -> Vec<Vec<f64>> {
    let count = timers.len();
    let mut times = vec![Vec::with_capacity(rounds); count];
    for round in 0..rounds / 10 + 1 + rounds {
        for turn in 0..count {
            let which = (round + turn) % count;
            let elapsed = timers[which]();
            if round > rounds / 10 {
                times[which].push(elapsed.as_nanos() as f64 / PAGES as f64);
            }
        }
    }
    times
}

/// The median of `values` (NaN if there are none).
pub fn median(values: &[f64]) -> f64 {
    quantile(values, 0.5)
}

/// The `q` quantile of `values` (nearest rank; NaN if there are none).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    sorted[(q * last as f64).round() as usize]
}

/// `numerators[i] / denominators[i]` for every round.
pub fn ratios(numerators: &[f64], denominators: &[f64]) -> Vec<f64> {
    numerators.iter().zip(denominators).map(|(n, d)| n / d).collect()
}

/// `bench fault-cost`: [`paired_rounds`] of maplevm's fast path (anonymous memory) beside
/// [`UnsyncEngine`] and [`ProtocolAtomicsEngine`](crate::unsync_engine::ProtocolAtomicsEngine),
/// without and with zero-filling; a table of the median times and of the median (and
/// quartiles) of the per-round ratios.
pub fn compare_engines(rounds: usize) -> String {
    use std::fmt::Write as _;
    let mut out =
        format!("# fault cost per page, one thread: {rounds} paired rounds of {PAGES} faults per engine\n");
    for zero_fill in [false, true] {
        let mut maplevm = Maplevm::anonymous(zero_fill);
        let mut unsync = UnsyncEngine::<false>::new(frame_pool(), zero_fill);
        let mut atomics = UnsyncEngine::<true>::new(frame_pool(), zero_fill);
        let times = paired_rounds(
            &mut [
                &mut || time_region(&mut maplevm, PAGES),
                &mut || time_region(&mut unsync, PAGES),
                &mut || time_region(&mut atomics, PAGES),
            ],
            rounds,
        );
        let zeroing = if zero_fill { "zero-fill" } else { "no zero-fill" };
        let _ = writeln!(out, "\nanonymous page, {zeroing}");
        let _ = writeln!(out, "{:<44} {:>10}", "engine", "median ns");
        let names = [
            "maplevm fast path",
            "unsynchronized",
            "unsynchronized + protocol atomics",
        ];
        for (name, engine) in names.iter().zip(&times) {
            let _ = writeln!(out, "{name:<44} {:>10.1}", median(engine));
        }
        let _ = writeln!(
            out,
            "{:<44} {:>10} {:>7} {:>7}",
            "per-round ratio", "median", "p25", "p75"
        );
        for (name, (n, d)) in [
            ("maplevm / unsynchronized", (0, 1)),
            ("maplevm / protocol atomics", (0, 2)),
            ("protocol atomics / unsynchronized", (2, 1)),
        ] {
            let r = ratios(&times[n], &times[d]);
            let (p25, p50, p75) = (quantile(&r, 0.25), median(&r), quantile(&r, 0.75));
            let _ = writeln!(out, "{name:<44} {p50:>10.3} {p25:>7.3} {p75:>7.3}");
        }
    }
    out
}

// Real threads and timings: not run under shuttle (its primitives need its scheduler).
#[cfg(all(test, not(feature = "shuttle")))]
mod tests {
    use super::*;

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let values = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(median(&values), 3.0);
        assert_eq!(quantile(&values, 0.0), 1.0);
        assert_eq!(quantile(&values, 0.25), 2.0);
        assert_eq!(quantile(&values, 1.0), 5.0);
        assert!(median(&[]).is_nan());
        assert_eq!(ratios(&[2.0, 9.0], &[1.0, 3.0]), [2.0, 3.0]);
    }

    #[test]
    fn rounds_time_every_engine_once_each_in_rotating_order() {
        let order = std::cell::RefCell::new(Vec::new());
        let timer = |which: usize| {
            let order = &order;
            move || {
                order.borrow_mut().push(which);
                Duration::from_nanos(PAGES * (which as u64 + 1))
            }
        };
        let (mut first, mut second, mut third) = (timer(0), timer(1), timer(2));
        let times = paired_rounds(&mut [&mut first, &mut second, &mut third], 20);
        // 3 warm-up rounds (20 / 10 + 1), then 20 timed.
        assert_eq!(order.borrow().len(), 3 * 23);
        for (round, calls) in order.borrow().chunks(3).enumerate() {
            let expected: Vec<usize> = (0..3).map(|turn| (round + turn) % 3).collect();
            assert_eq!(calls, expected, "round {round}");
        }
        assert_eq!(times, [vec![1.0; 20], vec![2.0; 20], vec![3.0; 20]]);
    }

    /// Every target gives back what a region took: nothing accumulates from round to round.
    #[test]
    fn regions_leave_nothing_behind() {
        for zero_fill in [false, true] {
            let mut maplevm = Maplevm::anonymous(zero_fill);
            time_region(&mut maplevm, PAGES);
            time_region(&mut maplevm, 7);
            assert_eq!(maplevm.mm().frames().in_use(), 0);
            assert_eq!(maplevm.mm().space().vma_count(), 0);
            for atomics in [false, true] {
                let frames = frame_pool();
                let elapsed = if atomics {
                    time_region(&mut UnsyncEngine::<true>::new(frames.clone(), zero_fill), PAGES)
                } else {
                    time_region(&mut UnsyncEngine::<false>::new(frames.clone(), zero_fill), PAGES)
                };
                assert!(elapsed > Duration::ZERO);
                assert_eq!(frames.in_use(), 0);
            }
        }
        let mut cold = Maplevm::cold_file();
        time_region(&mut cold, PAGES);
        assert_eq!(
            cold.mm().frames().in_use(),
            0,
            "the file's cache goes with the file"
        );
        let mut cached = Maplevm::cached_file();
        time_region(&mut cached, PAGES);
        time_region(&mut cached, PAGES);
        assert_eq!(
            cached.mm().frames().in_use(),
            PAGES as usize,
            "the file's cache stays"
        );
    }

    #[test]
    #[should_panic(expected = "a region has 512 pages")]
    fn a_region_has_a_bounded_size() {
        time_region(&mut Maplevm::anonymous(false), PAGES + 1);
    }
}
