//! The address-space designs the comparison runs, behind one trait ([`Design`]), all over the
//! same page table, frame pool and fault install ([`fault::Memory`]): the only difference is
//! how a fault finds its VMA and what keeps that VMA valid while the fault installs.
//!
//! | name | faults find the VMA | writers |
//! |---|---|---|
//! | `rcu` | RCU walk of the maple tree, no reference (fast path) | replacement protocol |
//! | `rcu-refonly` | the same, always taking a VMA reference | replacement protocol |
//! | `no-share` | as `rcu`, but hugetlb mappings never share page tables (PMD sharing off) | replacement protocol |
//! | `rwlock` | read lock over a BTreeMap (mmap_sem) | write lock |
//! | `rangelock` | read lock on their page's range, then a short map lock | write lock on the changed range (and the free space around a zap) |
//! | `pervma` | RCU walk + per-VMA read lock, falling back to the mmap lock (Linux 6.15) | mmap lock, write-locking each changed VMA |
//! | `hugetlb-vma-lock` | as `pervma`; files take `i_mmap_rwsem` only to share page tables and to change reverse maps (Kravetz's `hugetlb_vma_lock`) | as `pervma`, the file lock not held across the zap |
//! | `snapshot` | wait-free load of an immutable map (arc-swap) | copy the map, publish, wait for readers |
//! | `cortenmm` | read lock on their page's 2 MiB page-table node, then an RCU lookup (CortenMM, SOSP 2025) | write locks on the nodes of the changed range; writers of disjoint ranges run in parallel |

mod cortenmm;
mod pervma;
mod rangelock;
mod rcu;
mod rwlock;
mod snapshot;
pub mod vma_map;

pub use cortenmm::CortenDesign;
pub use pervma::PerVmaDesign;
pub use rangelock::{RangeLock, RangeLockDesign};
pub use rcu::RcuDesign;
pub use rwlock::RwLockDesign;
pub use snapshot::SnapshotDesign;

use fault::{
    Access, AccessError, Fault, FaultError, File, FileSync, FramePool, Mapper, Memory, ReverseMapWriter,
    Waits,
};
use maple::rcu::{DefaultRcu, Rcu};
use std::sync::{Arc, Weak};
use std::time::Instant;
use vma::request::{MmapRequest, RemapRequest, advise_range, dontneed_part, protect_range, unmap_range};
use vma::{Errno, Error, Layout, MapFlags, PAGE_SIZE, Prot, RemapFlags, Revoked};
use vma_map::{Change, Flush, Op, VmaMap};

/// Every design's name, in the order reports list them.
pub const NAMES: [&str; 9] = [
    "rcu",
    "rcu-refonly",
    "no-share",
    "rwlock",
    "rangelock",
    "pervma",
    "hugetlb-vma-lock",
    "snapshot",
    "cortenmm",
];

/// How the design called `name` finds a fault's VMA and what its writers hold, for the
/// comparison's legend (the module documentation's table).
pub fn describe(name: &str) -> Option<&'static str> {
    Some(match name {
        "rcu" => {
            "maplevm: RCU walk of the maple tree, no VMA reference (fast path); writers run the replacement protocol"
        }
        "rcu-refonly" => "maplevm with every fault taking a VMA reference (what the fast path buys)",
        "no-share" => {
            "maplevm with the page tables of hugetlb mappings never shared between address spaces (what PMD sharing buys)"
        }
        "rwlock" => "one reader-writer lock over a BTreeMap (mmap_sem): faults read-lock, writers write-lock",
        "rangelock" => "faults read-lock their page's range; writers write-lock the range they change",
        "pervma" => {
            "Linux 6.15: RCU walk plus a per-VMA read lock, the mmap lock as fallback; writers lock each changed VMA. Files use i_mmap_rwsem as Linux 5.7 to 5.19 hugetlb did: held shared across a hugetlb fault, exclusive across munmap's zap"
        }
        "hugetlb-vma-lock" => {
            "`pervma` with Kravetz's hugetlb_vma_lock for files: faults take no file lock (their VMA's lock keeps munmap out), the file's i_mmap_rwsem only to look for a page table to share"
        }
        "snapshot" => {
            "a copy-on-write map behind arc-swap: faults load it wait-free; writers copy and publish it"
        }
        "cortenmm" => {
            "CortenMM (SOSP 2025): faults read-lock their 2 MiB page-table node and look the mapping up under RCU; writers lock the nodes they change, so writers of disjoint ranges run in parallel"
        }
        _ => return None,
    })
}

/// How a design is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DesignConfig {
    /// The address space's bounds.
    pub layout: Layout,
    /// Zero-fill anonymous frames.
    pub zero_fill: bool,
}

impl Default for DesignConfig {
    fn default() -> Self {
        Self {
            layout: Layout::X86_64,
            zero_fill: true,
        }
    }
}

/// Builds the design called `name` (one of [`NAMES`]) over `frames`.
pub fn build(name: &str, config: DesignConfig, frames: Arc<FramePool>) -> Option<Arc<dyn Design>> {
    let memory = || Memory::new(frames.clone(), config.zero_fill);
    Some(match name {
        "rcu" => Arc::new(RcuDesign::new(config, frames.clone(), "rcu")),
        "rcu-refonly" => Arc::new(RcuDesign::new(config, frames.clone(), "rcu-refonly")),
        "no-share" => Arc::new(RcuDesign::new(config, frames.clone(), "no-share")),
        "rwlock" => baseline(|mapper| RwLockDesign::new(config.layout, memory(), mapper)),
        "rangelock" => baseline(|mapper| RangeLockDesign::new(config.layout, memory(), mapper)),
        "pervma" => baseline(|mapper| PerVmaDesign::new(config.layout, memory(), mapper)),
        "hugetlb-vma-lock" => {
            baseline(|mapper| PerVmaDesign::with_hugetlb_vma_lock(config.layout, memory(), mapper))
        }
        "snapshot" => baseline(|mapper| SnapshotDesign::new(config.layout, memory(), mapper)),
        "cortenmm" => baseline(|mapper| CortenDesign::new(config.layout, memory(), mapper)),
        _ => return None,
    })
}

/// A baseline, built by `new` with the name files' reverse maps know it by (itself).
fn baseline<D: Design + Mapper + 'static>(new: impl FnOnce(Weak<dyn Mapper>) -> D) -> Arc<dyn Design> {
    Arc::new_cyclic(|this: &Weak<D>| {
        let mapper: Weak<dyn Mapper> = this.clone();
        new(mapper)
    })
}

/// Makes a baseline a [`Mapper`] of the files it maps: a truncate, hole punch or eviction
/// removes the file's pages from its page table, writeback write-protects them (under the
/// table's relocation lock, walking in its RCU domain), and each waits for accesses through
/// what it revoked in that domain.
macro_rules! maps_files {
    ($design:ty) => {
        impl fault::Mapper for $design {
            fn unmap_file_pages(
                &self,
                file: &fault::File,
                first: u64,
                end: u64,
                even_cows: bool,
            ) -> vma::Revoked {
                let parts = $crate::designs::Design::parts(self);
                parts
                    .memory
                    .unmap_file_pages(self, file, (first, end), even_cows, parts.rcu)
            }

            fn write_protect_file_pages(&self, file: &fault::File, first: u64, end: u64) -> vma::Revoked {
                let parts = $crate::designs::Design::parts(self);
                parts
                    .memory
                    .write_protect_file_pages(self, file, (first, end), parts.rcu)
            }

            fn await_revoked(&self, revoked: &vma::Revoked) {
                revoked.wait($crate::designs::Design::rcu(self));
            }
        }
    };
}
use maps_files;

/// Links the file mappings that `changes` add into their files' reverse maps: before a fault
/// can find them and before translations move into them.
fn link_added(mapper: &Weak<dyn Mapper>, changes: &[Change]) {
    for mapping in changes.iter().flat_map(|change| &change.added) {
        File::link(mapper, mapping);
    }
}

/// A baseline's fork, once it holds what keeps its writers and the faults of `mappings` out
/// (all of them: its VMAs, in address order): a fresh instance of the same design over the
/// same frames gets each mapping as it is (`Op::Copy`, one VMA at a time, as Linux's
/// `dup_mmap` before the maple tree's bulk copy), then each private mapping's pages are
/// shared copy-on-write (`Memory::copy_for_fork`), and the accesses through the translations
/// that lost their write permission are waited for.
fn fork_baseline(parent: &dyn Design, mappings: &[vma::Mapping]) -> vma::Result<Arc<dyn Design>> {
    let config = DesignConfig {
        layout: parent.layout(),
        ..DesignConfig::default()
    };
    let child = build(parent.name(), config, parent.memory().frames().clone()).expect("a design's own name");
    for mapping in mappings {
        child.change(Op::Copy(mapping.clone()))?;
    }
    let mut revoked = Revoked::new();
    for mapping in mappings {
        let lost_write = parent
            .memory()
            .copy_for_fork(child.memory(), mapping, parent.rcu());
        revoked.record(lost_write, mapping.start, mapping.end);
    }
    revoked.wait(parent.rcu());
    Ok(child)
}

/// Unlinks every file mapping of `map` (a baseline being dropped).
fn unlink_all(mapper: &Weak<dyn Mapper>, map: &VmaMap) {
    for mapping in map.mappings() {
        File::unlink(mapper, mapping);
    }
}

/// What every design stands on: its name, the address space's bounds, the page table and frames
/// it shares with the other designs' code, and the RCU domain translations' frames are released
/// to (readers copy under its guards).
#[derive(Clone, Copy)]
pub struct Parts<'a> {
    /// One of [`NAMES`].
    pub name: &'static str,
    /// The address space's bounds.
    pub layout: Layout,
    /// The page table and frames.
    pub memory: &'a Memory,
    /// The RCU domain of the translations.
    pub rcu: &'a DefaultRcu,
}

/// An address-space design: mmap / munmap / mprotect / mremap / MADV_DONTNEED and faults, with
/// Linux's semantics and errors (arguments are checked by the provided methods with
/// `vma::request`, the same checks `vma::AddressSpace` makes).
pub trait Design: Send + Sync {
    /// What the design stands on (see [`Parts`]).
    fn parts(&self) -> Parts<'_>;

    /// The design's name (one of [`NAMES`]).
    fn name(&self) -> &'static str {
        self.parts().name
    }

    /// The address space's bounds.
    fn layout(&self) -> Layout {
        self.parts().layout
    }

    /// The page table and frames.
    fn memory(&self) -> &Memory {
        self.parts().memory
    }

    /// The RCU domain translations' frames are released to (readers copy under its guards).
    fn rcu(&self) -> &DefaultRcu {
        self.parts().rcu
    }

    /// How the files this design maps protect their reverse maps and page lookups: Linux's
    /// `i_mmap_rwsem` for the baselines (held across the zap of removed mappings: see
    /// `flush_and_unlink`), maplevm's RCU for `rcu`, `rcu-refonly` and `no-share`. Create the
    /// files it maps with it ([`File::with_sync`]).
    fn file_sync(&self) -> FileSync {
        FileSync::RwSem
    }

    /// Applies a checked change; returns the mapped address for [`Op::Map`].
    fn change(&self, op: Op) -> vma::Result<u64>;

    /// MADV_DONTNEED of `[start, end)` (page aligned, perhaps reaching beyond the space): drops
    /// the pages of every mapped part, then ENOMEM if part of the range is unmapped (as Linux).
    fn discard(&self, start: u64, end: u64) -> vma::Result<()>;

    /// Resolves a fault at `addr`.
    fn fault(&self, addr: u64, access: Access) -> Result<Fault, FaultError>;

    /// The VMAs: start, end and permissions, in address order.
    fn vmas(&self) -> Vec<(u64, u64, Prot)>;

    /// fork: a new instance of this design over the same frames, with a copy of every VMA, a
    /// private mapping's pages copied on write (see `fault::Mm::fork`); each design keeps its
    /// own faults and writers out as Linux's locking or its own protocol says.
    fn fork(&self) -> vma::Result<Arc<dyn Design>>;

    /// Maps each of `requests` (fixed, into free space): the set-up of an address space that
    /// holds many VMAs, before a run. One change each by default; a design that copies its
    /// whole map per change builds it once.
    fn map_all(&self, requests: Vec<MmapRequest>) -> vma::Result<()> {
        for request in requests {
            self.change(Op::Map(request))?;
        }
        Ok(())
    }

    /// Number of VMAs.
    fn vma_count(&self) -> usize {
        self.vmas().len()
    }

    /// mmap (see `vma::AddressSpace::mmap`); `file` is a file and byte offset.
    fn mmap(
        &self,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        file: Option<(&Arc<File>, u64)>,
    ) -> vma::Result<u64> {
        let layout = self.layout();
        let (flags, object) = self.memory().mapped_object(len, flags, file)?;
        let request = MmapRequest::new(layout, addr, len, prot, flags, object)?;
        fault::reserve_huge_pages(&request)?;
        let (len, step) = (request.length(), request.alignment());
        let start = self.change(Op::Map(request))?;
        if flags.populate || flags.locked {
            fault::populate((start, len, step), (prot, flags.shared), |addr, access| {
                self.fault(addr, access)
            });
        }
        Ok(start)
    }

    /// munmap.
    fn munmap(&self, addr: u64, len: u64) -> vma::Result<()> {
        let (start, end) = unmap_range(self.layout(), addr, len)?;
        self.change(Op::Unmap(start, end)).map(drop)
    }

    /// mprotect.
    fn mprotect(&self, addr: u64, len: u64, prot: Prot) -> vma::Result<()> {
        match protect_range(self.layout(), addr, len)? {
            Some((start, end)) => self.change(Op::Protect(start, end, prot)).map(drop),
            None => Ok(()),
        }
    }

    /// mremap (see `vma::AddressSpace::mremap`).
    fn mremap(
        &self,
        old: u64,
        old_len: u64,
        new_len: u64,
        flags: RemapFlags,
        new_addr: u64,
    ) -> vma::Result<u64> {
        let request = RemapRequest::new(self.layout(), old, old_len, new_len, flags, new_addr)?;
        self.change(Op::Remap(request))
    }

    /// MADV_DONTNEED of `[addr, addr + len)`.
    fn madvise_dontneed(&self, addr: u64, len: u64) -> vma::Result<()> {
        match advise_range(addr, len)? {
            Some((start, end)) => self.discard(start, end),
            None => Ok(()),
        }
    }

    /// Copies from `addr`, faulting as a CPU would.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        self.memory()
            .read(addr, buf, self.rcu(), |a, access| self.fault(a, access))
    }

    /// Copies to `addr`, faulting as a CPU would.
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), AccessError> {
        self.memory()
            .write(addr, data, self.rcu(), |a, access| self.fault(a, access))
    }

    /// How often faults waited for another thread.
    fn waits(&self) -> Waits {
        self.memory().waits()
    }

    /// How often share lookups (PMD sharing) were held up by a lock.
    fn share_waits(&self) -> Waits {
        self.memory().share_waits()
    }

    /// Waits until released frames and tables are back (see `fault::Mm::barrier`).
    fn barrier(&self) {
        self.rcu().barrier();
    }
}

/// Takes a lock, trying first: a fault that must block records how long it waited.
fn timed<G>(memory: &Memory, try_lock: impl FnOnce() -> Option<G>, lock: impl FnOnce() -> G) -> G {
    if let Some(guard) = try_lock() {
        return guard;
    }
    let since = Instant::now();
    let guard = lock();
    memory.record_wait(since.elapsed());
    guard
}

/// The page of `addr`, or (counted) a segmentation fault when `addr` lies beyond the space.
fn page_in(memory: &Memory, layout: Layout, addr: u64) -> Result<u64, FaultError> {
    if addr >= layout.high {
        memory.count(Err(FaultError::NotMapped));
        return Err(FaultError::NotMapped);
    }
    Ok(addr & !(PAGE_SIZE - 1))
}

/// A flush of a plan with the free space around it (see [`bounded`]).
type BoundedFlush = (Flush, (u64, u64));

/// The flushes of a plan, each zap with the free space around it (where page tables may be
/// freed), computed on `map` once the plan's changes are applied to it.
fn bounded(map: &VmaMap, flushes: &[Flush]) -> Vec<BoundedFlush> {
    flushes
        .iter()
        .map(|&flush| match flush {
            Flush::Zap(start, end) => (flush, map.free_around(start, end)),
            other => (other, (0, 0)),
        })
        .collect()
}

/// Steps 6 to 8 for the baselines: the page table's side of a plan (see [`bounded`]) and the
/// unlinking of the file mappings its changes removed, holding those files' reverse maps for
/// writing throughout — Linux's `i_mmap_rwsem` as hugetlb's munmap held it across the zap (to
/// unshare page tables; the locking seeds 000 and 003 measure), which keeps faults on those
/// files out meanwhile — then, with the locks released, the wait for accesses through the
/// translations it revoked, as maplevm's writers wait (a fault may hold this address space's
/// guard while it waits for a file's lock). The caller keeps faults out of the flushed ranges
/// (its lock).
///
/// Under [`FileSync::VmaLock`] (Kravetz's `hugetlb_vma_lock`) the files' locks are taken only
/// to unlink, after the flush: the design's per-VMA lock keeps faults out of what it zaps.
fn flush_and_unlink(
    design: &dyn Design,
    mapper: &Weak<dyn Mapper>,
    (flushes, changes): (&[BoundedFlush], &[Change]),
) {
    let Parts { memory, rcu, .. } = design.parts();
    let removed: Vec<(&File, &vma::Mapping)> = changes
        .iter()
        .flat_map(|change| &change.removed)
        .filter_map(|mapping| Some((File::of(mapping)?, mapping)))
        .collect();
    // Each file once, in address order, so that two writers never wait for each other.
    let mut files: Vec<&File> = removed.iter().map(|&(file, _)| file).collect();
    files.sort_by_key(|&file| file as *const File);
    files.dedup_by_key(|file| *file as *const File);
    fn lock<'f>(files: &[&'f File]) -> Vec<(&'f File, ReverseMapWriter<'f>)> {
        files
            .iter()
            .map(|&file| (file, file.write_reverse_map()))
            .collect()
    }
    // Held across the zap (i_mmap_rwsem), or taken after it to unlink (hugetlb_vma_lock).
    let across_zap = design.file_sync() != FileSync::VmaLock;
    let mut writers = if across_zap { lock(&files) } else { Vec::new() };
    let mut revoked = Revoked::new();
    for &(flush, free_tables) in flushes {
        match flush {
            Flush::Zap(start, end) => revoked.record(memory.zap(start, end, free_tables, rcu), start, end),
            Flush::Protect(start, end, prot) => {
                revoked.record(memory.protect(start, end, prot, rcu), start, end)
            }
            Flush::Relocate { from, to, len } => {
                revoked.record(memory.relocate(from, to, len, rcu), from, from + len)
            }
        }
    }
    if !across_zap {
        writers = lock(&files);
    }
    for (file, mapping) in removed {
        let (_, writer) = writers
            .iter()
            .find(|(held, _)| std::ptr::eq(*held, file))
            .expect("every removed mapping's file is held");
        writer.unlink(mapper, mapping);
    }
    drop(writers);
    revoked.wait(rcu);
}

/// MADV_DONTNEED for the baselines: clears every mapped part of `[start, end)` in `map` (as
/// `vma::request::dontneed_part` allows, stopping at a mapping that refuses), which the caller
/// keeps from changing, and waits for accesses through what it cleared.
fn discard_in(memory: &Memory, map: &VmaMap, start: u64, end: u64, rcu: &DefaultRcu) -> vma::Result<()> {
    let mut revoked = Revoked::new();
    let mut mapped = 0;
    let mut refused = Ok(());
    for m in map.overlapping(start, end) {
        let (from, to) = (m.start.max(start), m.end.min(end));
        let (from, cut) = match dontneed_part(&m, from, to) {
            Ok(part) => part,
            Err(error) => {
                refused = Err(error);
                break;
            }
        };
        revoked.record(memory.clear(from, cut, rcu), from, cut);
        mapped += to - from;
    }
    revoked.wait(rcu);
    refused?;
    if mapped < end - start {
        return Err(Error::new(Errno::ENOMEM, "part of the range is unmapped"));
    }
    Ok(())
}

/// Resolves a fault on `page` through `mapping`, which the caller keeps valid (its lock) for
/// the whole fault, the blocking read included; counts the outcome. The baselines' one fault
/// routine.
fn fault_locked(
    memory: &Memory,
    rcu: &DefaultRcu,
    mapping: Option<&vma::Mapping>,
    page: u64,
    access: Access,
) -> Result<Fault, FaultError> {
    let result = install_locked(memory, rcu, mapping, page, access);
    memory.count(result);
    result
}

/// [`fault_locked`] but for the counting.
fn install_locked(
    memory: &Memory,
    rcu: &DefaultRcu,
    mapping: Option<&vma::Mapping>,
    page: u64,
    access: Access,
) -> Result<Fault, FaultError> {
    let mapping = mapping.ok_or(FaultError::NotMapped)?;
    if !fault::allows(mapping, access) {
        return Err(FaultError::AccessDenied);
    }
    // Keyed at the page, as maplevm's fault: frames freed elsewhere do not wait for it.
    let guard = maple::Guard::keyed(rcu, maple::rcu::Keys::one(page));
    match memory.settle(mapping, page, access, &guard)? {
        fault::Progress::Done(fault) => Ok(fault),
        fault::Progress::Blocking(pgoff) => {
            drop(guard);
            memory.read_in(mapping, page, access, pgoff, rcu)
        }
        fault::Progress::Fenced => unreachable!("the baselines' memories fence nothing"),
    }
}
