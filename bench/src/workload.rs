//! The workloads of the comparison, each reproducing a published benchmark (see
//! docs/benchmarks.md), run against any [`Design`].
//!
//! Every fault a workload makes is a real one (the page is not mapped): threads that fault a
//! region again first drop its pages with MADV_DONTNEED, through the design, as a reader of
//! the VMA structure (like a fault). Each fault is timed into a per-thread histogram; a fault
//! that fails is a workload error (none should).

use crate::designs::{self, Design, DesignConfig};
use crate::trace_target::DesignTarget;
use fault::{Access, FaultError, File, FramePool, FramePoolConfig, MemBacking, Waits};
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vma::request::MmapRequest;
use vma::trace::Trace;
use vma::{AddressSpace, Layout, MapFlags, NoFlush, PAGE_SIZE, Prot};

/// The workloads (docs/benchmarks.md says what each reproduces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// Each thread maps, faults and unmaps its own region.
    PrivateChurn,
    /// Threads fault their own stable VMAs; a writer maps, protects and unmaps elsewhere.
    FaultsUnderChurn,
    /// Threads fault their slices of one VMA.
    GiantVma,
    /// As `GiantVma`, while a writer replaces the VMA with MAP_FIXED.
    FixedReplace,
    /// Each thread maps, faults and unmaps the same shared file.
    SharedFile,
    /// As `SharedFile`, but each thread in its own address space.
    MultiProcess,
    /// As `MultiProcess`, on a 1 GiB hugetlb file (Kravetz's benchmark as he ran it).
    Kravetz,
    /// As `Kravetz`, beside many address spaces that share the file's page tables, which a
    /// writer tears down and sets up again (Long's report, seed 003).
    Long,
    /// Threads, each in its own address space, fault a shared file while a writer shrinks,
    /// regrows and punches holes in it.
    SharedTruncate,
    /// Threads fault their own VMAs of a parent with many more, while a writer forks children
    /// and drops them.
    ForkUnderFaults,
    /// Threads fault a real program's mappings while a writer replays the program's calls
    /// (the JVM trace), wipes the space and replays them again.
    ReplayUnderFaults,
}

/// What a workload's extra writer thread does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// Replace the whole shared VMA with MAP_FIXED, every 50 µs.
    ReplaceAll,
    /// Map, protect and unmap 16 pages far from the faulting threads, in a loop.
    MapElsewhere,
    /// Shrink the file to half, check that no address space kept a translation beyond the
    /// end, regrow it, punch a hole of a quarter of it, in a loop.
    TruncateFile,
    /// Tear down one of the standing address spaces' mappings of the hugetlb file, map it
    /// again and fault it in (sharing its page table), each in turn, in a loop.
    Remap,
    /// Fork the address space and drop the child, in a loop.
    Fork,
    /// Replay the trace, then unmap everything, in a loop.
    Replay,
}

impl Workload {
    const ALL: [Workload; 11] = [
        Workload::PrivateChurn,
        Workload::FaultsUnderChurn,
        Workload::GiantVma,
        Workload::FixedReplace,
        Workload::SharedFile,
        Workload::MultiProcess,
        Workload::SharedTruncate,
        Workload::Kravetz,
        Workload::Long,
        Workload::ForkUnderFaults,
        Workload::ReplayUnderFaults,
    ];

    const fn name(self) -> &'static str {
        match self {
            Workload::PrivateChurn => "private-churn",
            Workload::FaultsUnderChurn => "faults-under-churn",
            Workload::GiantVma => "giant-vma",
            Workload::FixedReplace => "fixed-replace",
            Workload::SharedFile => "shared-file",
            Workload::MultiProcess => "multi-process",
            Workload::SharedTruncate => "shared-truncate",
            Workload::Kravetz => "kravetz",
            Workload::Long => "long",
            Workload::ForkUnderFaults => "fork-under-faults",
            Workload::ReplayUnderFaults => "replay-under-faults",
        }
    }

    /// Whether it maps the hugetlb file.
    fn maps_huge_pages(self) -> bool {
        matches!(self, Workload::Kravetz | Workload::Long)
    }

    /// Whether each faulting thread has an address space of its own (else all share one).
    fn space_per_thread(self) -> bool {
        matches!(
            self,
            Workload::MultiProcess | Workload::SharedTruncate | Workload::Kravetz | Workload::Long
        )
    }

    fn writer(self) -> Option<Writer> {
        match self {
            Workload::FaultsUnderChurn => Some(Writer::MapElsewhere),
            Workload::FixedReplace => Some(Writer::ReplaceAll),
            Workload::SharedTruncate => Some(Writer::TruncateFile),
            Workload::Long => Some(Writer::Remap),
            Workload::ForkUnderFaults => Some(Writer::Fork),
            Workload::ReplayUnderFaults => Some(Writer::Replay),
            Workload::PrivateChurn
            | Workload::GiantVma
            | Workload::SharedFile
            | Workload::MultiProcess
            | Workload::Kravetz => None,
        }
    }
}

/// What the workload called `name` does, for the comparison's legend: who faults, who writes.
pub fn describe(name: &str) -> Option<&'static str> {
    let workload = Workload::ALL.into_iter().find(|w| w.name() == name)?;
    Some(match workload {
        Workload::PrivateChurn => {
            "Each thread maps, faults and unmaps its own region: the faulting threads are the writers, so the two `vs rwlock` columns match"
        }
        Workload::FaultsUnderChurn => {
            "Threads fault their own stable VMAs; a writer thread maps, protects and unmaps 16 pages elsewhere"
        }
        Workload::GiantVma => "Threads fault their slices of one VMA; no writer",
        Workload::FixedReplace => {
            "Threads fault their slices of one VMA; a writer thread replaces it with MAP_FIXED every 50 µs"
        }
        Workload::SharedFile => {
            "Each thread maps, faults and unmaps the same shared file: the faulting threads are the writers, so the two `vs rwlock` columns match"
        }
        Workload::MultiProcess => {
            "Each thread, in an address space of its own, maps, faults and unmaps the same shared file (Kravetz's loop): every mmap and munmap writes the file's reverse map; the faulting threads are the writers"
        }
        Workload::Kravetz => {
            "Each thread, in an address space of its own, maps a shared 1 GiB hugetlb file, faults each of its 512 huge pages and unmaps it, in a loop (Kravetz's benchmark, seed 000; `--pages` does not apply): the baselines' faults hold the file's `i_mmap_rwsem` shared and their munmap holds it exclusive across its zap, as Linux 5.7 to 5.19 did"
        }
        Workload::Long => {
            "As `kravetz`, beside 16 more address spaces that map the file whole and share its page table; a writer thread, in turn for each, unmaps it, maps it again and faults it in (Long's report, seed 003: large hugetlb mappings set up and torn down while others fault and share). The writer's faults count with the others'"
        }
        Workload::ForkUnderFaults => {
            "Threads write-fault their own VMAs (private anonymous, `--pages` each) of one address space that holds 256 more (4 pages each, written), drop the pages and repeat; a writer thread forks the address space and drops the child, in a loop (writer calls: forks). A fork shares every present private page copy-on-write, so the threads' next writes copy or reclaim them"
        }
        Workload::ReplayUnderFaults => {
            "Threads read-fault the pages of a real program's mappings (the JVM's, vma/tests/traces/java.trace; `--pages` of each mapping at most) while a writer thread replays the program's 1,870 calls, unmaps everything and replays them again (writer calls: the trace's calls). A fault where the replay has nothing mapped, or nothing readable, at that moment counts as a fault all the same"
        }
        Workload::SharedTruncate => {
            "Threads, each in an address space of its own, fault a shared file mapped whole; a writer thread shrinks it to half, regrows it and punches a hole in a loop (writer calls: set_len and punch_hole). Faults beyond the end are bus errors; after every shrink no address space may keep a translation beyond the end (stale translations)"
        }
    })
}

/// Whether the workload called `name` truncates a mapped file (its reports show bus errors
/// and stale translations).
pub fn truncates(name: &str) -> bool {
    name == Workload::SharedTruncate.name()
}

/// Whether the workload called `name` maps huge pages (its reports show the page tables'
/// size: how much each address space needs for them).
pub fn maps_huge_pages(name: &str) -> bool {
    Workload::ALL
        .into_iter()
        .any(|w| w.name() == name && w.maps_huge_pages())
}

/// Every workload's name, in the order reports list them.
pub const WORKLOADS: [&str; 11] = {
    let mut names = [""; 11];
    let mut i = 0;
    while i < names.len() {
        names[i] = Workload::ALL[i].name();
        i += 1;
    }
    names
};

/// The trace `replay-under-faults` replays: the JVM's calls (the largest capture), parsed once.
fn replay_trace() -> &'static Trace {
    static TRACE: std::sync::OnceLock<Trace> = std::sync::OnceLock::new();
    TRACE.get_or_init(|| {
        Trace::parse(include_str!("../../vma/tests/traces/java.trace"))
            .expect("the repository's traces parse")
    })
}

/// The `kravetz` workload's hugetlb file: 1 GiB, what one page-table page of the level above
/// its huge entries covers (the unit Linux shares between processes).
const KRAVETZ_FILE: u64 = 1 << 30;
/// A huge page.
const HUGE_PAGE: u64 = fault::HUGE_FRAME_SIZE as u64;
/// Where each address space of `kravetz` maps the file: 1 GiB-aligned, so that its page table
/// of huge entries is shared (as the aligned middle of seed 000's 250 GB mapping is).
const KRAVETZ_HINT: u64 = 1 << 40;
/// The address spaces of `long` that map the hugetlb file besides the faulting threads'.
const LONG_STANDING: usize = 16;
/// The VMAs of `fork-under-faults` besides the faulting threads' own, and their pages.
const FORK_VMAS: u64 = 256;
const FORK_VMA_PAGES: u64 = 4;

/// Most faulting threads a run may have.
pub const MAX_THREADS: usize = 1024;
/// Most pages a thread's region may have (4 GiB).
pub const MAX_PAGES: u64 = 1 << 20;

/// How one run is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunConfig {
    /// Faulting threads (the workloads with a writer add one writer thread).
    pub threads: usize,
    /// How long the threads run.
    pub duration: Duration,
    /// Pages in each thread's region.
    pub pages: u64,
    /// One-page VMAs mapped in every address space before the run, spread over the space
    /// below the workload's mappings (see [`background`]): the VMA-count axis.
    pub background_vmas: u64,
}

/// The most background VMAs a run may have (Linux's default `max_map_count` is 65,530; a run
/// may go past it to show how each design grows).
pub const MAX_BACKGROUND_VMAS: u64 = 1_000_000;

/// `count` one-page read-only VMAs spread evenly over `[low + 4 TiB, mmap_base - 4 TiB)`,
/// where no workload maps (the regions lie below the mmap base, the churn above 1 TiB), as
/// the set-up requests of an address space that holds them.
pub fn background(layout: Layout, count: u64) -> vma::Result<Vec<MmapRequest>> {
    const MARGIN: u64 = 4 << 40;
    let (from, to) = (layout.low + MARGIN, layout.mmap_base - MARGIN);
    let stride = ((to - from) / count.max(1)) & !(PAGE_SIZE - 1);
    let fixed = MapFlags::PRIVATE_ANONYMOUS.fixed_noreplace();
    (0..count)
        .map(|i| MmapRequest::new(layout, from + i * stride, PAGE_SIZE, Prot::READ, fixed, None))
        .collect()
}

/// What one run measured.
#[derive(Debug)]
pub struct Measurement {
    /// Design name.
    pub design: &'static str,
    /// Workload name.
    pub workload: &'static str,
    /// Faulting threads.
    pub threads: usize,
    /// Whether the run had more threads than the machine has CPUs.
    pub oversubscribed: bool,
    /// Faults made.
    pub faults: u64,
    /// mmap / munmap / mprotect calls made.
    pub writer_ops: u64,
    /// How long the threads ran.
    pub elapsed: Duration,
    /// Fault latency in nanoseconds.
    pub latency: Histogram<u64>,
    /// Faults that waited for another thread.
    pub waits: Waits,
    /// Share lookups (PMD sharing) held up by a lock.
    pub share_waits: Waits,
    /// The process's peak resident memory during the run (Linux's VmHWM, reset before it).
    pub peak_rss_bytes: u64,
    /// Faults beyond the end of a file (`shared-truncate`).
    pub bus_errors: u64,
    /// Translations beyond the end of a file found after a truncate returned (must be 0).
    pub stale_translations: u64,
    /// The largest page table of any address space during the run, in bytes (every table,
    /// the root included), read after each pass over a region.
    pub page_table_bytes: u64,
    /// Background VMAs in every address space.
    pub background_vmas: u64,
}

impl Measurement {
    /// The figures the reports show.
    pub fn summary(&self) -> Summary {
        let seconds = self.elapsed.as_secs_f64();
        let h = &self.latency;
        Summary {
            design: self.design.to_string(),
            workload: self.workload.to_string(),
            threads: self.threads,
            oversubscribed: self.oversubscribed,
            faults_per_sec: self.faults as f64 / seconds,
            fault_p50_ns: h.value_at_quantile(0.5),
            fault_p99_ns: h.value_at_quantile(0.99),
            fault_p999_ns: h.value_at_quantile(0.999),
            fault_max_ns: h.max(),
            writer_ops_per_sec: self.writer_ops as f64 / seconds,
            peak_rss_bytes: self.peak_rss_bytes,
            waits: self.waits,
            share_waits: self.share_waits,
            bus_errors: self.bus_errors,
            stale_translations: self.stale_translations,
            page_table_bytes: self.page_table_bytes,
            background_vmas: self.background_vmas,
        }
    }
}

/// A measurement's figures, as reports show them and as `bench run-one` passes them to the
/// comparison (one line of `key=value` fields).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Design name.
    pub design: String,
    /// Workload name.
    pub workload: String,
    /// Faulting threads.
    pub threads: usize,
    /// More threads than CPUs.
    pub oversubscribed: bool,
    /// Faults per second.
    pub faults_per_sec: f64,
    /// Median fault latency.
    pub fault_p50_ns: u64,
    /// 99th percentile fault latency.
    pub fault_p99_ns: u64,
    /// 99.9th percentile fault latency.
    pub fault_p999_ns: u64,
    /// Slowest fault.
    pub fault_max_ns: u64,
    /// mmap / munmap / mprotect calls per second.
    pub writer_ops_per_sec: f64,
    /// Peak resident memory of the process that ran it.
    pub peak_rss_bytes: u64,
    /// Faults that waited for another thread.
    pub waits: Waits,
    /// Share lookups (PMD sharing) held up by a lock.
    pub share_waits: Waits,
    /// Faults beyond the end of a file.
    pub bus_errors: u64,
    /// Translations beyond the end of a file found after a truncate returned.
    pub stale_translations: u64,
    /// The largest page table of any address space during the run, in bytes.
    pub page_table_bytes: u64,
    /// Background VMAs in every address space.
    pub background_vmas: u64,
}

impl Summary {
    /// One line of `key=value` fields.
    pub fn to_line(&self) -> String {
        format!(
            "design={} workload={} threads={} oversubscribed={} faults_per_sec={} fault_p50_ns={} \
             fault_p99_ns={} fault_p999_ns={} fault_max_ns={} writer_ops_per_sec={} peak_rss_bytes={} \
             waits={} wait_total_ns={} wait_max_ns={} share_waits={} share_wait_total_ns={} \
             share_wait_max_ns={} bus_errors={} stale_translations={} page_table_bytes={} \
             background_vmas={}",
            self.design,
            self.workload,
            self.threads,
            self.oversubscribed,
            self.faults_per_sec,
            self.fault_p50_ns,
            self.fault_p99_ns,
            self.fault_p999_ns,
            self.fault_max_ns,
            self.writer_ops_per_sec,
            self.peak_rss_bytes,
            self.waits.count,
            self.waits.total_ns,
            self.waits.max_ns,
            self.share_waits.count,
            self.share_waits.total_ns,
            self.share_waits.max_ns,
            self.bus_errors,
            self.stale_translations,
            self.page_table_bytes,
            self.background_vmas
        )
    }

    /// Parses [`Summary::to_line`]'s output.
    pub fn from_line(line: &str) -> Result<Self, String> {
        let fields: std::collections::HashMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|field| field.split_once('='))
            .collect();
        let text = |key: &str| {
            fields
                .get(key)
                .copied()
                .ok_or_else(|| format!("no {key} in {line:?}"))
        };
        fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
            value.parse().map_err(|_| format!("bad {key}: {value:?}"))
        }
        let get = |key: &str| text(key).and_then(|value| number::<u64>(key, value));
        let rate = |key: &str| text(key).and_then(|value| number::<f64>(key, value));
        Ok(Self {
            design: text("design")?.to_string(),
            workload: text("workload")?.to_string(),
            threads: text("threads").and_then(|value| number("threads", value))?,
            oversubscribed: text("oversubscribed")? == "true",
            faults_per_sec: rate("faults_per_sec")?,
            fault_p50_ns: get("fault_p50_ns")?,
            fault_p99_ns: get("fault_p99_ns")?,
            fault_p999_ns: get("fault_p999_ns")?,
            fault_max_ns: get("fault_max_ns")?,
            writer_ops_per_sec: rate("writer_ops_per_sec")?,
            peak_rss_bytes: get("peak_rss_bytes")?,
            waits: Waits {
                count: get("waits")?,
                total_ns: get("wait_total_ns")?,
                max_ns: get("wait_max_ns")?,
            },
            share_waits: Waits {
                count: get("share_waits")?,
                total_ns: get("share_wait_total_ns")?,
                max_ns: get("share_wait_max_ns")?,
            },
            bus_errors: get("bus_errors")?,
            stale_translations: get("stale_translations")?,
            page_table_bytes: get("page_table_bytes")?,
            background_vmas: get("background_vmas")?,
        })
    }
}

/// One thread's tally.
struct Tally {
    faults: u64,
    writer_ops: u64,
    latency: Histogram<u64>,
    bus_errors: u64,
    stale_translations: u64,
    /// The most page-table pages seen in the thread's address space.
    tables: usize,
}

impl Tally {
    fn new() -> Self {
        Self {
            faults: 0,
            writer_ops: 0,
            latency: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
            bus_errors: 0,
            stale_translations: 0,
            tables: 0,
        }
    }

    /// Write-faults `[start, start + len)` every `step` bytes (its pages), timing each, then
    /// notes the size of the address space's page table; stops early (and says so) when
    /// `stop` is set. With `as_cpu`, a page whose translation already allows the write is
    /// skipped, as a CPU takes no fault there (another address space may have installed it in
    /// a shared page table). A bus error is counted where the file may be truncated (`bus_ok`),
    /// a failure elsewhere.
    fn fault_all(
        &mut self,
        design: &dyn Design,
        (start, len, step): (u64, u64, u64),
        (bus_ok, as_cpu): (bool, bool),
        stop: &AtomicBool,
    ) -> Result<bool, String> {
        for addr in (start..start + len).step_by(step as usize) {
            if stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            if as_cpu && writable(design, addr) {
                continue;
            }
            let since = Instant::now();
            let result = design.fault(addr, Access::Write);
            self.latency.saturating_record(since.elapsed().as_nanos() as u64);
            self.faults += 1;
            match result {
                Err(FaultError::BusError) if bus_ok => self.bus_errors += 1,
                result => {
                    result.map_err(|e: FaultError| format!("fault at {addr:#x}: {e}"))?;
                }
            }
        }
        self.tables = self.tables.max(design.memory().table().tables());
        Ok(true)
    }

    fn op<T>(&mut self, result: vma::Result<T>) -> Result<T, String> {
        self.writer_ops += 1;
        result.map_err(|e| e.to_string())
    }
}

/// The regions' place: below the mmap base, thread `t`'s region `gap` pages apart from the
/// next so that they stay separate VMAs.
fn region(layout: Layout, t: usize, pages: u64) -> u64 {
    layout.mmap_base - (t as u64 + 1) * (pages + 16) * PAGE_SIZE
}

/// Maps `file`, a hugetlb file of `KRAVETZ_FILE` bytes, shared and whole into `design` at
/// `KRAVETZ_HINT`, and write-faults each of its huge pages as a CPU would (a page already
/// mapped through a shared page table takes no fault), into `tally` (the mmap counted as a
/// writer call). Returns where it is mapped.
fn map_hugetlb(
    design: &dyn Design,
    file: &Arc<File>,
    tally: &mut Tally,
    stop: &AtomicBool,
) -> Result<u64, String> {
    let shared = Some((file, 0));
    let a = tally.op(design.mmap(
        KRAVETZ_HINT,
        KRAVETZ_FILE,
        Prot::READ_WRITE,
        MapFlags::SHARED,
        shared,
    ))?;
    tally.fault_all(design, (a, KRAVETZ_FILE, HUGE_PAGE), (false, true), stop)?;
    Ok(a)
}

/// Reads VmHWM from /proc/self/status (0 where there is none).
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Resets VmHWM to the current RSS (Linux's clear_refs 5); without it the figure is the
/// process's peak so far.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Whether `design`'s translation of `addr` allows a write (read in a section of its domain).
fn writable(design: &dyn Design, addr: u64) -> bool {
    let _guard = maple::Guard::keyed(design.rcu(), maple::rcu::Keys::one(addr));
    design
        .memory()
        .table()
        .translate(addr)
        .is_some_and(|pte| pte.writable())
}

/// Translations of `[start, end)` in `design`'s page table (read in a section of its domain).
fn translations(design: &dyn Design, start: u64, end: u64) -> u64 {
    let _guard = maple::Guard::new(design.rcu());
    let table = design.memory().table();
    (start..end)
        .step_by(PAGE_SIZE as usize)
        .filter(|&addr| table.translate(addr).is_some())
        .count() as u64
}

/// Runs `workload` on fresh instances of `design` (both by name): one address space, or one
/// per faulting thread.
pub fn run(workload: &str, design: &str, config: RunConfig) -> Result<Measurement, String> {
    let kind = Workload::ALL
        .into_iter()
        .find(|w| w.name() == workload)
        .ok_or_else(|| format!("unknown workload {workload}"))?;
    let RunConfig {
        threads,
        duration,
        pages,
        background_vmas,
    } = config;
    if background_vmas > MAX_BACKGROUND_VMAS {
        return Err(format!("background VMAs: at most {MAX_BACKGROUND_VMAS}"));
    }
    if !(1..=MAX_THREADS).contains(&threads) {
        return Err(format!("threads: from 1 to {MAX_THREADS}"));
    }
    if !(1..=MAX_PAGES).contains(&pages) {
        return Err(format!("pages: from 1 to {MAX_PAGES}"));
    }
    if duration.is_zero() {
        return Err("duration: at least 1 ms".into());
    }
    // Huge pages for the hugetlb workload: its file, whole (their memory comes as used).
    let huge_pages = if kind.maps_huge_pages() {
        (KRAVETZ_FILE / HUGE_PAGE) as usize
    } else {
        0
    };
    let frames = Arc::new(
        FramePool::with_huge_pages(FramePoolConfig::default(), huge_pages).map_err(|e| e.to_string())?,
    );
    let spaces = if kind.space_per_thread() { threads } else { 1 };
    let spaces: Vec<Arc<dyn Design>> = (0..spaces)
        .map(|_| designs::build(design, DesignConfig::default(), frames.clone()))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("unknown design {design}"))?;
    // `long`'s standing address spaces, each mapping the hugetlb file whole.
    let standing = if kind == Workload::Long { LONG_STANDING } else { 0 };
    let standing: Vec<Arc<dyn Design>> = (0..standing)
        .map(|_| designs::build(design, DesignConfig::default(), frames.clone()).expect("built above"))
        .collect();
    let first = &*spaces[0];
    let layout = first.layout();
    for space in spaces.iter().chain(&standing) {
        space
            .map_all(background(layout, background_vmas).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let len = pages * PAGE_SIZE;
    let rw = Prot::READ_WRITE;
    let anon = MapFlags::PRIVATE_ANONYMOUS;
    let error = |e: vma::Error| e.to_string();

    // Set-up before the clock starts.
    let mut regions = Vec::new();
    let mut file = None;
    let mut program_pages: Vec<Vec<u64>> = Vec::new();
    match kind {
        Workload::FaultsUnderChurn | Workload::ForkUnderFaults => {
            for t in 0..threads {
                let at = region(layout, t, pages);
                let fixed = anon.fixed_noreplace();
                regions.push(first.mmap(at, len, rw, fixed, None).map_err(error)?);
            }
            if kind == Workload::ForkUnderFaults {
                // The rest of the process: VMAs that do not merge (every other one read-only
                // once written), each with its pages present, for every fork to copy.
                for i in 0..FORK_VMAS {
                    let size = FORK_VMA_PAGES * PAGE_SIZE;
                    let at = first.mmap(0, size, rw, anon, None).map_err(error)?;
                    for page in 0..FORK_VMA_PAGES {
                        first
                            .write(at + page * PAGE_SIZE, &[1])
                            .map_err(|e| e.to_string())?;
                    }
                    if i % 2 == 1 {
                        first.mprotect(at, size, Prot::READ).map_err(error)?;
                    }
                }
            }
        }
        Workload::GiantVma | Workload::FixedReplace => {
            let total = threads as u64 * len;
            let start = first.mmap(0, total, rw, anon, None).map_err(error)?;
            regions.extend((0..threads as u64).map(|t| start + t * len));
        }
        Workload::SharedFile | Workload::MultiProcess | Workload::SharedTruncate => {
            let backing = Arc::new(MemBacking::new(&[]));
            let sync = first.file_sync();
            let shared = File::with_sync(workload, &frames, len, backing, sync).map_err(error)?;
            if kind == Workload::SharedTruncate {
                for space in &spaces {
                    let at = space.mmap(0, len, rw, MapFlags::SHARED, Some((&shared, 0)));
                    regions.push(at.map_err(error)?);
                }
            }
            file = Some(shared);
        }
        Workload::Kravetz | Workload::Long => {
            let sync = first.file_sync();
            let hugetlb = File::hugetlb(workload, &frames, KRAVETZ_FILE, sync).map_err(error)?;
            // The steady state of Kravetz's loop, which runs for hours: every huge page is in
            // the file already (allocated and zeroed once), and a fault maps it.
            let never = AtomicBool::new(false);
            let a = map_hugetlb(first, &hugetlb, &mut Tally::new(), &never)?;
            first.munmap(a, KRAVETZ_FILE).map_err(error)?;
            for space in &standing {
                regions.push(map_hugetlb(&**space, &hugetlb, &mut Tally::new(), &never)?);
            }
            file = Some(hugetlb);
        }
        Workload::ReplayUnderFaults => {
            // The program's pages: those of its readable mappings once replayed (on maplevm's
            // address space, which holds nothing else), `pages` of each at most, dealt out to
            // the threads in turn.
            let program = AddressSpace::new(layout, NoFlush).map_err(error)?;
            replay_trace().replay(&program).map_err(|e| e.to_string())?;
            let guard = program.guard();
            let mut every: Vec<u64> = Vec::new();
            for vma in program.iter_from(0, &guard) {
                if vma.prot().read {
                    every.extend(
                        (vma.start()..vma.end())
                            .step_by(PAGE_SIZE as usize)
                            .take(pages as usize),
                    );
                }
            }
            program_pages = (0..threads)
                .map(|t| every.iter().copied().skip(t).step_by(threads).collect())
                .collect();
        }
        Workload::PrivateChurn => {}
    }
    let writer = kind.writer();
    let (file, regions, spaces, standing) = (&file, &regions, &spaces, &standing);
    let program_pages = &program_pages;

    reset_peak_rss();
    let stop = AtomicBool::new(false);
    let stop = &stop;
    let start = Instant::now();
    let tallies: Vec<Result<Tally, String>> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for t in 0..threads {
            let own = regions.get(t).copied();
            let design = &*spaces[t % spaces.len()];
            handles.push(s.spawn(move || -> Result<Tally, String> {
                let mut tally = Tally::new();
                while !stop.load(Ordering::Relaxed) {
                    match kind {
                        Workload::PrivateChurn => {
                            let a = tally.op(design.mmap(0, len, rw, anon, None))?;
                            tally.fault_all(design, (a, len, PAGE_SIZE), (false, false), stop)?;
                            tally.op(design.munmap(a, len))?;
                        }
                        Workload::SharedFile | Workload::MultiProcess => {
                            let file = file.as_ref().expect("set up");
                            let a = tally.op(design.mmap(0, len, rw, MapFlags::SHARED, Some((file, 0))))?;
                            tally.fault_all(design, (a, len, PAGE_SIZE), (false, false), stop)?;
                            tally.op(design.munmap(a, len))?;
                        }
                        Workload::Kravetz | Workload::Long => {
                            let file = file.as_ref().expect("set up");
                            let a = map_hugetlb(design, file, &mut tally, stop)?;
                            tally.op(design.munmap(a, KRAVETZ_FILE))?;
                        }
                        Workload::ReplayUnderFaults => {
                            for &page in &program_pages[t] {
                                if stop.load(Ordering::Relaxed) {
                                    break;
                                }
                                let since = Instant::now();
                                // Unmapped or unreadable at this moment: a fault all the same.
                                let _ = design.fault(page, Access::Read);
                                tally.latency.saturating_record(since.elapsed().as_nanos() as u64);
                                tally.faults += 1;
                            }
                        }
                        Workload::FaultsUnderChurn
                        | Workload::ForkUnderFaults
                        | Workload::GiantVma
                        | Workload::FixedReplace
                        | Workload::SharedTruncate => {
                            let a = own.expect("set up");
                            let bus_ok = kind == Workload::SharedTruncate;
                            if tally.fault_all(design, (a, len, PAGE_SIZE), (bus_ok, false), stop)? {
                                design.madvise_dontneed(a, len).map_err(error)?;
                            }
                        }
                    }
                }
                Ok(tally)
            }));
        }
        if let Some(writer) = writer {
            handles.push(s.spawn(move || -> Result<Tally, String> {
                let mut tally = Tally::new();
                let churn_hint = layout.low + (1 << 40);
                let mut turn = 0;
                while !stop.load(Ordering::Relaxed) {
                    match writer {
                        Writer::ReplaceAll => {
                            let total = threads as u64 * len;
                            tally.op(first.mmap(regions[0], total, rw, anon.fixed(), None))?;
                            std::thread::sleep(Duration::from_micros(50));
                        }
                        Writer::MapElsewhere => {
                            let a = tally.op(first.mmap(churn_hint, 16 * PAGE_SIZE, rw, anon, None))?;
                            tally.op(first.mprotect(a, 16 * PAGE_SIZE, Prot::READ))?;
                            tally.op(first.munmap(a, 16 * PAGE_SIZE))?;
                        }
                        Writer::TruncateFile => {
                            let file = file.as_ref().expect("set up");
                            let half = (pages / 2) * PAGE_SIZE;
                            tally.op(file.set_len(half))?;
                            for (space, &at) in spaces.iter().zip(regions) {
                                tally.stale_translations += translations(&**space, at + half, at + len);
                            }
                            tally.op(file.set_len(len))?;
                            let quarter = (pages / 4).max(1) * PAGE_SIZE;
                            tally.op(file.punch_hole(quarter, quarter))?;
                        }
                        Writer::Fork => {
                            let child = tally.op(first.fork())?;
                            drop(child);
                        }
                        Writer::Replay => {
                            let trace = replay_trace();
                            trace
                                .replay(&DesignTarget::new(first))
                                .map_err(|e| e.to_string())?;
                            tally.writer_ops += trace.ops.len() as u64;
                            tally.op(first.munmap(layout.low, layout.high - layout.low))?;
                        }
                        Writer::Remap => {
                            let file = file.as_ref().expect("set up");
                            let (space, at) = (&*standing[turn], regions[turn]);
                            tally.op(space.munmap(at, KRAVETZ_FILE))?;
                            if map_hugetlb(space, file, &mut tally, stop)? != at {
                                return Err("the hugetlb file mapped elsewhere".into());
                            }
                            turn = (turn + 1) % standing.len();
                        }
                    }
                }
                Ok(tally)
            }));
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().expect("workload thread panicked"))
            .collect()
    });
    let elapsed = start.elapsed();
    let peak_rss_bytes = peak_rss();
    let mut total = Tally::new();
    for tally in tallies {
        let tally = tally?;
        total.faults += tally.faults;
        total.writer_ops += tally.writer_ops;
        total.bus_errors += tally.bus_errors;
        total.stale_translations += tally.stale_translations;
        total.tables = total.tables.max(tally.tables);
        total.latency.add(&tally.latency).expect("same bounds");
    }
    let every_space = || spaces.iter().chain(standing);
    let waits = every_space().fold(Waits::default(), |sum, space| sum.plus(space.waits()));
    let share_waits = every_space().fold(Waits::default(), |sum, space| sum.plus(space.share_waits()));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(Measurement {
        design: first.name(),
        workload: kind.name(),
        threads,
        oversubscribed: threads + usize::from(writer.is_some()) > cpus,
        faults: total.faults,
        writer_ops: total.writer_ops,
        elapsed,
        latency: total.latency,
        waits,
        share_waits,
        peak_rss_bytes,
        bus_errors: total.bus_errors,
        stale_translations: total.stale_translations,
        // The root is not among the tables counted below it.
        page_table_bytes: (total.tables as u64 + 1) * PAGE_SIZE,
        background_vmas,
    })
}

#[cfg(all(test, not(feature = "shuttle")))]
mod tests {
    use super::*;

    #[test]
    fn a_summary_survives_its_line() {
        let summary = Summary {
            design: "pervma".into(),
            workload: "giant-vma".into(),
            threads: 4,
            oversubscribed: true,
            faults_per_sec: 1234567.25,
            fault_p50_ns: 250,
            fault_p99_ns: 1_500,
            fault_p999_ns: 20_000,
            fault_max_ns: 3_000_000,
            writer_ops_per_sec: 0.0,
            peak_rss_bytes: 42 << 20,
            waits: Waits {
                count: 7,
                total_ns: 9_000,
                max_ns: 5_000,
            },
            share_waits: Waits {
                count: 2,
                total_ns: 700,
                max_ns: 400,
            },
            bus_errors: 3,
            stale_translations: 0,
            page_table_bytes: 5 << 12,
            background_vmas: 1000,
        };
        assert_eq!(Summary::from_line(&summary.to_line()), Ok(summary));
        assert!(Summary::from_line("design=rcu").is_err());
    }

    #[test]
    fn every_workload_runs_on_every_design() {
        let config = RunConfig {
            threads: 2,
            duration: Duration::from_millis(20),
            pages: 8,
            background_vmas: 0,
        };
        for workload in WORKLOADS {
            for design in crate::designs::NAMES {
                let mut m = run(workload, design, config).unwrap();
                if m.faults == 0 {
                    // A slow build (a sanitizer's) can spend a short run setting up (kravetz
                    // caches a 1 GiB file first): give it a longer one.
                    let longer = RunConfig {
                        duration: Duration::from_millis(500),
                        ..config
                    };
                    m = run(workload, design, longer).unwrap();
                }
                assert!(m.faults > 0, "{workload} on {design} made no fault");
                assert_eq!(
                    m.stale_translations, 0,
                    "{workload} on {design}: a translation beyond the end"
                );
                if truncates(workload) {
                    assert!(
                        m.writer_ops > 0,
                        "{workload} on {design}: the file was never truncated"
                    );
                }
                assert_eq!((m.workload, m.design, m.threads), (workload, design, 2));
            }
        }
        assert!(run("nope", "rcu", config).is_err());
        assert!(run("giant-vma", "nope", config).is_err());
        for bad in [
            RunConfig { threads: 0, ..config },
            RunConfig {
                threads: MAX_THREADS + 1,
                ..config
            },
            RunConfig { pages: 0, ..config },
            RunConfig {
                pages: u64::MAX,
                ..config
            },
            RunConfig {
                duration: Duration::ZERO,
                ..config
            },
        ] {
            assert!(run("giant-vma", "rcu", bad).is_err(), "{bad:?}");
        }
    }
}
