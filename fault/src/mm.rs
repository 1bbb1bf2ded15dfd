//! The embeddable memory manager: an address space, its [`Memory`], and the fault entry
//! ([`Mm::fault`]: the VMA lookup and the paths described in the `engine` module).
//!
//! Invariants:
//! - The page table changes in only two ways: faults install or upgrade entries (under an RCU
//!   guard or holding a VMA reference, for a usable VMA covering the page), and the address
//!   space's writers zap, protect and relocate entries through [`FlushHook`] at step 6 of the
//!   protocol, when no fault can install into the changed ranges (`madvise_dontneed` only
//!   clears entries, which faults tolerate).
//! - Frames removed from entries are released a grace period of the space's RCU domain later
//!   (see [`Memory`]).

use crate::engine::{Access, AccessError, Fault, FaultError, Progress, allows, populate};
use crate::file::{File, Mapper};
use crate::frames::{FramePool, Shrinker};
use crate::memory::{Memory, einval, reserve_huge_pages};
use crate::pagetable::{ADDRESS_LIMIT, Pte};
use crate::smaps::Smaps;
use crate::stats::{Counter, FaultStats};
use maple::rcu::{DefaultRcu, Rcu};
use maple::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use vma::request::{MmapRequest, advise_range, dontneed_part};
use vma::{
    AddressSpace, Backing as VmaBacking, Errno, Error, FlushHook, Layout, Lookup, MapFlags, Mapping,
    PAGE_SIZE, Prot, RemapFlags, Revoked, VmaRef,
};

/// How an [`Mm`] is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmConfig {
    /// The address space's bounds (at most 48-bit addresses).
    pub layout: Layout,
    /// Zero-fill anonymous frames (off only to measure what zeroing costs: anonymous memory
    /// then shows whatever the frame held before).
    pub zero_fill: bool,
    /// Resolve faults whose page is at hand under the RCU guard alone (the default). Off, every
    /// fault takes a VMA reference, as the slow path does: only to measure what the fast path
    /// buys (the benchmark's `rcu-refonly` design).
    pub fast_path: bool,
    /// Share the page tables of hugetlb mappings with other address spaces (PMD sharing, the
    /// default: docs/hugetlb.md). Off, each builds its own: the benchmark's `no-share` control.
    pub share_page_tables: bool,
}

impl Default for MmConfig {
    fn default() -> Self {
        Self {
            layout: Layout::X86_64,
            zero_fill: true,
            fast_path: true,
            share_page_tables: true,
        }
    }
}

/// The page table's side of the replacement protocol, and the reverse maps' upkeep.
struct Hook {
    memory: Arc<Memory>,
    /// The address space this hook belongs to, as the files' reverse maps name it.
    mapper: Weak<dyn Mapper>,
}

impl FlushHook for Hook {
    fn zap(&self, start: u64, end: u64, free_tables: (u64, u64), rcu: &DefaultRcu) -> bool {
        self.memory.zap(start, end, free_tables, rcu)
    }

    fn protect(&self, start: u64, end: u64, prot: Prot, rcu: &DefaultRcu) -> bool {
        self.memory.protect(start, end, prot, rcu)
    }

    fn relocate(&self, from: u64, to: u64, len: u64, rcu: &DefaultRcu) -> bool {
        self.memory.relocate(from, to, len, rcu)
    }

    fn mapped(&self, mapping: &Mapping) {
        File::link(&self.mapper, mapping);
    }

    fn unmapped(&self, mapping: &Mapping) {
        File::unlink(&self.mapper, mapping);
    }
}

/// What an [`Mm`] is, shared with the reverse maps of the files it maps.
struct Shared {
    space: AddressSpace,
    memory: Arc<Memory>,
    /// What it was built with (fork builds the child alike).
    config: MmConfig,
    /// Whether it is among its frame pool's shrinkers (from its first MADV_FREE or
    /// MAP_DROPPABLE on).
    shrinks: AtomicBool,
}

impl Shared {
    /// Makes memory pressure reach this address space (once).
    fn shrink_under_pressure(self: &Arc<Self>) {
        // Relaxed: the pool's list is behind its own lock; this only keeps the registration
        // to one.
        if !self.shrinks.swap(true, Ordering::Relaxed) {
            let shrinker: Weak<dyn Shrinker> = Arc::downgrade(self) as Weak<Shared>;
            self.memory.frames().register_shrinker(shrinker);
        }
    }
}

/// Memory pressure reaches an address space through its MADV_FREE ranges, then its
/// MAP_DROPPABLE mappings, whose pages it drops written or not (they read back as zeros).
impl Shrinker for Shared {
    fn shrink(&self, want: usize) -> usize {
        let rcu = self.space.rcu();
        let mut freed = self.memory.reclaim_lazyfree(want, rcu);
        if freed < want {
            let droppable: Vec<(u64, u64)> = {
                let guard = self.space.guard();
                self.space
                    .iter_from(0, &guard)
                    .map(|vma| vma.mapping())
                    .filter(|mapping| mapping.droppable)
                    .map(|mapping| (mapping.start, mapping.end))
                    .collect()
            };
            for range in droppable {
                if freed >= want {
                    break;
                }
                freed += self.memory.drop_pages(range, rcu);
            }
        }
        freed
    }
}

impl Mapper for Shared {
    fn unmap_file_pages(&self, file: &File, first: u64, end: u64, even_cows: bool) -> Revoked {
        self.memory
            .unmap_file_pages(self, file, (first, end), even_cows, self.space.rcu())
    }

    fn write_protect_file_pages(&self, file: &File, first: u64, end: u64) -> Revoked {
        self.memory
            .write_protect_file_pages(self, file, (first, end), self.space.rcu())
    }

    fn await_revoked(&self, revoked: &Revoked) {
        self.space.await_revoked(revoked);
    }
}

/// An address space with memory behind it: map, fault, read and write, with Linux-like results.
/// Faults find their VMA without any lock (see [`Mm::fault`]); mmap, munmap, mprotect, mremap
/// and brk go through the VMA layer's replacement protocol, whose flush step zaps, protects or
/// moves this manager's translations.
pub struct Mm {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Mm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mm")
            .field("space", &self.shared.space)
            .field("memory", &self.shared.memory)
            .finish_non_exhaustive()
    }
}

impl Mm {
    /// An empty memory manager whose frames come from `frames`.
    pub fn new(config: MmConfig, frames: Arc<FramePool>) -> vma::Result<Self> {
        Self::build(config, frames, |_| {})
    }

    /// An `Mm` whose VMA layer skips `step` of its protocol (shuttle builds only; for tests
    /// that must fail).
    #[cfg(feature = "shuttle")]
    #[doc(hidden)]
    pub fn with_broken_protocol(
        config: MmConfig,
        frames: Arc<FramePool>,
        step: vma::BrokenStep,
    ) -> vma::Result<Self> {
        Self::build(config, frames, |space| space.break_protocol(step))
    }

    fn build(
        config: MmConfig,
        frames: Arc<FramePool>,
        prepare: impl FnOnce(&mut AddressSpace),
    ) -> vma::Result<Self> {
        config.layout.check()?;
        if config.layout.high > ADDRESS_LIMIT {
            return Err(einval("the layout exceeds the 48-bit page table"));
        }
        // Its faults hold no guard while they wait: writers may fence them (see
        // `Memory::with_fault_fence`).
        let mut memory = Memory::new(frames, config.zero_fill).with_fault_fence();
        if !config.share_page_tables {
            memory = memory.without_page_table_sharing();
        }
        let memory = Arc::new(memory);
        let shared = Arc::new_cyclic(|mapper: &Weak<Shared>| {
            let mapper: Weak<dyn Mapper> = mapper.clone();
            let hook = Hook {
                memory: memory.clone(),
                mapper,
            };
            let mut space = AddressSpace::new(config.layout, hook).expect("the layout was checked");
            prepare(&mut space);
            Shared {
                space,
                memory,
                config,
                shrinks: AtomicBool::new(false),
            }
        });
        Ok(Self { shared })
    }

    /// fork(2): a new `Mm` built like this one, with a copy of every VMA (built in one pass)
    /// and of the heap. A private mapping's pages are shared read-only between the two and
    /// copied on the first write of either (a page only one of them still holds is written in
    /// place); a shared mapping's pages are shared, the child faulting them from the file. This
    /// `Mm`'s writers wait for the fork; its faults go on, except those on the VMA whose
    /// translations are being copied at that moment, which wait for that copy alone (see
    /// docs/process.md). What this `Mm`'s threads wrote before the fork is in the child;
    /// nothing they write after it returns is.
    pub fn fork(&self) -> vma::Result<Mm> {
        let parent = &self.shared;
        let child = Mm::new(parent.config, parent.memory.frames().clone())?;
        let rcu = parent.space.rcu();
        let mut revoked = Revoked::new();
        parent.space.fork_into(&child.shared.space, |mapping| {
            let lost_write = parent.memory.copy_for_fork(&child.shared.memory, mapping, rcu);
            revoked.record(lost_write, mapping.start, mapping.end);
        })?;
        // A write through a translation the copy write-protected lands before fork returns.
        parent.space.await_revoked(&revoked);
        Ok(child)
    }

    /// The mappings in the format of `/proc/PID/maps` (see [`AddressSpace::maps`]).
    pub fn maps(&self) -> String {
        self.shared.space.maps()
    }

    /// Each VMA's `/proc/PID/smaps` block: its maps line and the memory its translations map
    /// (see [`Smaps`]; `Display` prints the block).
    pub fn smaps(&self) -> Vec<Smaps> {
        let space = &self.shared.space;
        let guard = space.guard();
        space
            .iter_from(0, &guard)
            .map(|vma| Smaps {
                header: space.maps_line(vma.mapping()),
                ..self.shared.memory.smaps(vma.mapping(), &guard)
            })
            .collect()
    }

    /// The address space (VMAs, `maps()`, lookups).
    pub fn space(&self) -> &AddressSpace {
        &self.shared.space
    }

    /// The file mapped at `addr` and the byte offset there in it (the object MAP_SHARED |
    /// MAP_ANONYMOUS created, to hand on to another `Mm` as a file descriptor would be), or
    /// `None` where no file mapping is.
    pub fn file_at(&self, addr: u64) -> Option<(Arc<File>, u64)> {
        let page = addr & !(PAGE_SIZE - 1);
        let guard = self.shared.space.guard_at(page);
        let Lookup::Mapped(vma) = self.shared.space.lookup(page, &guard) else {
            return None;
        };
        let mapping = vma.mapping();
        let file = shared_file(mapping)?;
        Some((file, (mapping.pgoff << vma::PAGE_SHIFT) + (page - mapping.start)))
    }

    /// The page table and its frames.
    pub fn memory(&self) -> &Memory {
        &self.shared.memory
    }

    /// The pool frames come from (create file backings with it).
    pub fn frames(&self) -> &Arc<FramePool> {
        self.shared.memory.frames()
    }

    /// Page-table pages below the root.
    pub fn page_tables(&self) -> usize {
        self.shared.memory.table().tables()
    }

    /// The translation of `addr`, if one is present.
    pub fn translation(&self, addr: u64) -> Option<Pte> {
        if addr >= ADDRESS_LIMIT {
            return None;
        }
        let _guard = self.shared.space.guard_at(addr);
        self.shared.memory.table().translate(addr)
    }

    /// Statistics so far.
    pub fn stats(&self) -> FaultStats {
        self.shared.memory.stats(self.shared.space.stats())
    }

    /// Waits until frames and page tables released so far are back in the pool (they go back
    /// a grace period after they were removed). For tests and teardown.
    pub fn barrier(&self) {
        self.shared.space.rcu().barrier();
    }

    /// Maps memory (see [`AddressSpace::mmap`]). `file` is the object and byte offset of a
    /// file mapping; MAP_SHARED | MAP_ANONYMOUS gets a new zero-filled shared object.
    ///
    /// # Examples
    /// ```
    /// use fault::{File, FramePool, MapFlags, Mm, MmConfig, Prot};
    /// use std::sync::Arc;
    ///
    /// let frames = Arc::new(FramePool::new(Default::default()).unwrap());
    /// let mm = Mm::new(MmConfig::default(), frames.clone()).unwrap();
    /// let file = File::new("/etc/motd", &frames, b"hello");
    /// // Shared: writes reach the file; private: writes stay in the mapping.
    /// let shared = mm.mmap(0, 4096, Prot::READ_WRITE, MapFlags::SHARED, Some((&file, 0))).unwrap();
    /// let private = mm.mmap(0, 4096, Prot::READ_WRITE, MapFlags::PRIVATE, Some((&file, 0))).unwrap();
    /// mm.write(shared, b"J").unwrap();
    /// mm.write(private + 1, b"E").unwrap();
    /// let (mut on_file, mut seen) = ([0; 5], [0; 5]);
    /// file.read_at(0, &mut on_file).unwrap();
    /// mm.read(private, &mut seen).unwrap();
    /// assert_eq!((&on_file, &seen), (b"Jello", b"JEllo"));
    /// ```
    pub fn mmap(
        &self,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        file: Option<(&Arc<File>, u64)>,
    ) -> vma::Result<u64> {
        let (flags, object) = self.shared.memory.mapped_object(len, flags, file)?;
        let request = MmapRequest::new(self.shared.space.layout(), addr, len, prot, flags, object)?;
        if flags.droppable {
            self.shared.shrink_under_pressure();
        }
        reserve_huge_pages(&request)?;
        let (len, step) = (request.length(), request.alignment());
        let start = self.shared.space.map(request)?;
        // MAP_LOCKED brings the pages in as mlock does (Linux ignores a failure here too).
        if flags.populate || flags.locked {
            populate((start, len, step), (prot, flags.shared), |addr, access| {
                self.fault(addr, access)
            });
        }
        Ok(start)
    }

    /// Unmaps `[addr, addr + len)`; when this returns its translations are gone and no access
    /// that went through one is still in progress (no store lands after it returns).
    pub fn munmap(&self, addr: u64, len: u64) -> vma::Result<()> {
        self.shared.space.munmap(addr, len)
    }

    /// Changes permissions; removing write permission write-protects the translations, removing
    /// all access hides them (the contents stay). When this returns, no access that the old
    /// permissions allowed and the new ones do not is still in progress.
    pub fn mprotect(&self, addr: u64, len: u64, prot: Prot) -> vma::Result<()> {
        self.shared.space.mprotect(addr, len, prot)
    }

    /// Resizes or moves a mapping (see [`AddressSpace::mremap`]); moved contents move with it,
    /// and no access through an old address is still in progress when this returns.
    pub fn mremap(
        &self,
        old: u64,
        old_len: u64,
        new_len: u64,
        flags: RemapFlags,
        new_addr: u64,
    ) -> vma::Result<u64> {
        self.shared.space.mremap(old, old_len, new_len, flags, new_addr)
    }

    /// Moves the program break (see [`AddressSpace::brk`]).
    pub fn brk(&self, addr: u64) -> u64 {
        self.shared.space.brk(addr)
    }

    /// Sets where the heap starts (see [`AddressSpace::set_heap_start`]).
    pub fn set_heap_start(&self, start: u64) -> vma::Result<()> {
        self.shared.space.set_heap_start(start)
    }

    /// MADV_DONTNEED: drops the pages of `[addr, addr + len)`; anonymous memory reads zero
    /// afterwards, private file mappings show the file again. As Linux: EINVAL for an unaligned
    /// address or a range that wraps around, ENOMEM (after dropping every mapped part) when part
    /// of the range is unmapped, beyond the space included; a zero length does nothing. When it
    /// returns, no access that began before it still goes through a dropped translation.
    pub fn madvise_dontneed(&self, addr: u64, len: u64) -> vma::Result<()> {
        let Some(range) = advise_range(addr, len)? else {
            return Ok(());
        };
        let memory = &self.shared.memory;
        let rcu = self.shared.space.rcu();
        // Unsharing a page table of a shared hugetlb mapping here, outside the VMA protocol,
        // first lets the faults in its spans finish (see `Memory::fence_for_unsharing`): when the
        // walk meets such a mapping without it, it starts again with it (clearing again what
        // it cleared is harmless).
        let mut unsharing = None;
        let mut fenced = false;
        let mut frames = Vec::new();
        let mut revoked = Revoked::new();
        let walk = loop {
            let mut unshares = false;
            let walk = self.walk_advised(range, |mapping, from, to| {
                if !fenced && mapping.shared && mapping.page_size() > PAGE_SIZE {
                    unshares = true;
                    // Stops the walk; it starts again once the spans are fenced.
                    return Err(einval("a shared page table to unshare"));
                }
                let (from, cut) = dontneed_part(mapping, from, to)?;
                let cleared = memory.table().clear(from, cut);
                revoked.record(!cleared.is_empty(), from, cut);
                frames.extend(cleared);
                Ok(())
            });
            if !unshares {
                break walk;
            }
            unsharing = memory.fence_for_unsharing(range.0, range.1.min(ADDRESS_LIMIT), rcu);
            fenced = true;
        };
        let walked = (range.0, range.1.min(ADDRESS_LIMIT));
        if memory.release_unshared(rcu) {
            revoked.record(true, walked.0, walked.1);
        }
        drop(unsharing);
        // Released after the walk's section, so that it is not among the sections the frames
        // wait for: with no fault in the range they go back at once.
        memory.release_later(frames, walked, rcu);
        self.shared.space.await_revoked(&revoked);
        walk.answer()
    }

    /// Linux's `madvise_walk_vmas` over `[addr, end)` (from `advise_range`): `visit(mapping,
    /// from, to)` for the part of each VMA inside the range, in address order, inside a
    /// read-side section keyed to it (writers elsewhere do not wait for the walk); an error from
    /// `visit` stops the walk there. See [`AdviceWalk::answer`] for what the call then returns.
    fn walk_advised(
        &self,
        (addr, end): (u64, u64),
        mut visit: impl FnMut(&Mapping, u64, u64) -> vma::Result<()>,
    ) -> AdviceWalk {
        let space = &self.shared.space;
        let end_mapped = end.min(ADDRESS_LIMIT);
        let mut mapped = 0;
        let mut refused = Ok(());
        if addr < end_mapped {
            let guard = space.guard_within(addr, end_mapped);
            for vma in space.iter_from(addr, &guard) {
                if vma.start() >= end_mapped {
                    break;
                }
                let (from, to) = (vma.start().max(addr), vma.end().min(end_mapped));
                if let Err(error) = visit(vma.mapping(), from, to) {
                    refused = Err(error);
                    break;
                }
                mapped += to - from;
            }
        }
        AdviceWalk {
            refused,
            unmapped: mapped < end - addr,
        }
    }

    /// mincore(2): for each page of `[addr, addr + len)` (the length rounded up to pages),
    /// whether it is resident — a translation maps it, or, in a file mapping, the file's page
    /// is in the page cache. As Linux 6.18 (checked with raw syscalls): EINVAL for an unaligned
    /// address, ENOMEM for a range reaching past the space or into unmapped memory; nothing for
    /// a length of 0.
    pub fn mincore(&self, addr: u64, len: u64) -> vma::Result<Vec<bool>> {
        if addr % PAGE_SIZE != 0 {
            return Err(einval("address not page aligned"));
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let end = len
            .checked_next_multiple_of(PAGE_SIZE)
            .and_then(|len| addr.checked_add(len))
            .filter(|&end| end <= self.shared.space.layout().high)
            .ok_or(Error::new(
                Errno::ENOMEM,
                "the range reaches past the address space",
            ))?;
        let guard = self.shared.space.guard_within(addr, end);
        let table = self.shared.memory.table();
        let mut resident = Vec::with_capacity(((end - addr) / PAGE_SIZE) as usize);
        let mut at = addr;
        for vma in self.shared.space.iter_from(addr, &guard) {
            if vma.start() > at || at >= end {
                break;
            }
            let mapping = vma.mapping();
            let file = File::of(mapping);
            for page in (at..vma.end().min(end)).step_by(PAGE_SIZE as usize) {
                let pgoff = mapping.pgoff + ((page - mapping.start) >> vma::PAGE_SHIFT);
                let cached = || file.is_some_and(|file| file.cached(pgoff));
                resident.push(table.translate(page).is_some() || cached());
            }
            at = vma.end().min(end);
        }
        if at < end {
            return Err(Error::new(Errno::ENOMEM, "part of the range is unmapped"));
        }
        Ok(resident)
    }

    /// madvise(MADV_WILLNEED): the pages that the file mappings of `[addr, addr + len)` map are
    /// read into their files' page caches (anonymous memory has nothing to read). As Linux:
    /// EINVAL for an unaligned address, ENOMEM, after reading, when part of the range is
    /// unmapped; a length of 0 does nothing.
    pub fn madvise_willneed(&self, addr: u64, len: u64) -> vma::Result<()> {
        let Some(range) = advise_range(addr, len)? else {
            return Ok(());
        };
        let mut parts = Vec::new();
        let walk = self.walk_advised(range, |mapping, from, to| {
            parts.extend(file_part(mapping, from, to));
            Ok(())
        });
        for (file, first, pages) in parts {
            file.read_ahead(first, first + pages);
        }
        walk.answer()
    }

    /// madvise(MADV_REMOVE): punches a hole in the objects that the shared mappings of `[addr,
    /// addr + len)` map, where the range lies (their pages read as zeros from then on, in
    /// every address space). As Linux 6.18 (checked with raw syscalls): EINVAL for an
    /// unaligned address or when the walk meets anonymous private memory, EACCES when it meets
    /// a private file mapping — the parts before are punched all the same — and ENOMEM, after
    /// punching, when part of the range is unmapped; a length of 0 does nothing.
    pub fn madvise_remove(&self, addr: u64, len: u64) -> vma::Result<()> {
        let Some(range) = advise_range(addr, len)? else {
            return Ok(());
        };
        let mut parts = Vec::new();
        let walk = self.walk_advised(range, |mapping, from, to| {
            match mapping.backing {
                _ if mapping.locked => return Err(einval("MADV_REMOVE of locked memory")),
                VmaBacking::Anonymous => return Err(einval("MADV_REMOVE of anonymous private memory")),
                VmaBacking::File(_) if !mapping.shared => {
                    return Err(Error::new(Errno::EACCES, "MADV_REMOVE of a private file mapping"));
                }
                VmaBacking::File(_) => {}
            }
            parts.extend(file_part(mapping, from, to));
            Ok(())
        });
        for (file, first, pages) in parts {
            file.punch_hole(first << vma::PAGE_SHIFT, pages << vma::PAGE_SHIFT)?;
        }
        walk.answer()
    }

    /// madvise(MADV_FREE): the pages of `[addr, addr + len)`, private anonymous memory, may be
    /// freed lazily: they stay, with their contents, until memory is short (the frame pool's
    /// shrinkers, or [`Mm::reclaim`]), when those not written since go (the page then reads as
    /// zeros); a page written since MADV_FREE stays. As Linux 6.18 (checked with raw
    /// syscalls): EINVAL for an unaligned address or when the walk meets a file mapping,
    /// shared memory, locked memory or a mapping of huge pages (the walk stops there), ENOMEM,
    /// after the rest, when part of the range is unmapped; a length of 0 does nothing.
    pub fn madvise_free(&self, addr: u64, len: u64) -> vma::Result<()> {
        let Some(range) = advise_range(addr, len)? else {
            return Ok(());
        };
        let (space, memory) = (&self.shared.space, &self.shared.memory);
        self.shared.shrink_under_pressure();
        let mut revoked = Revoked::new();
        let walk = self.walk_advised(range, |mapping, from, to| {
            let anonymous = matches!(mapping.backing, VmaBacking::Anonymous) && !mapping.shared;
            if !anonymous || mapping.locked {
                return Err(einval("MADV_FREE of memory other than private anonymous"));
            }
            revoked.record(memory.mark_lazyfree(from, to), from, to);
            Ok(())
        });
        space.await_revoked(&revoked);
        walk.answer()
    }

    /// Memory pressure on this address space alone (what the frame pool's shrinkers do when
    /// it runs out): lets go of up to about `want` frames of pages MADV_FREE left clean;
    /// returns how many (they go back to the pool a grace period later).
    pub fn reclaim(&self, want: usize) -> usize {
        self.shared.shrink(want)
    }

    /// mlock(2): the VMAs covering `[addr, addr + len)` (the address rounded down to a page, the
    /// length, with the address's offset, up) are locked — their pages never evicted,
    /// MADV_DONTNEED, MADV_REMOVE and guards refused there, the lock not inherited by a fork's
    /// child — then every page of the range is faulted in. As Linux 6.18 (checked with raw
    /// syscalls): ENOMEM at a hole (the VMAs before it are locked, nothing is faulted in), and
    /// ENOMEM when a page cannot come in (PROT_NONE), the VMAs staying locked; nothing for a
    /// length of 0.
    pub fn mlock(&self, addr: u64, len: u64) -> vma::Result<()> {
        let (start, end) = self.shared.space.set_locked(addr, len, true)?;
        if start == end {
            return Ok(());
        }
        let parts: Vec<(u64, u64, u64, Prot, bool)> = {
            let guard = self.shared.space.guard_within(start, end);
            self.shared
                .space
                .iter_from(start, &guard)
                .take_while(|vma| vma.start() < end)
                .map(|vma| {
                    let m = vma.mapping();
                    (
                        m.start.max(start),
                        m.end.min(end),
                        m.page_size(),
                        m.prot,
                        m.shared,
                    )
                })
                .collect()
        };
        for (from, to, step, prot, shared) in parts {
            let from = from & !(step - 1);
            let fault = |addr, access| self.fault(addr, access);
            if !populate((from, to - from, step), (prot, shared), fault) {
                return Err(Error::new(
                    Errno::ENOMEM,
                    "a page of the range cannot be brought in",
                ));
            }
        }
        Ok(())
    }

    /// munlock(2): undoes mlock on the VMAs covering the range (see [`Mm::mlock`]); ENOMEM at a
    /// hole, after unlocking what comes before it.
    pub fn munlock(&self, addr: u64, len: u64) -> vma::Result<()> {
        self.shared.space.set_locked(addr, len, false).map(drop)
    }

    /// madvise(MADV_GUARD_INSTALL), Linux 6.13's guard regions: every page of the mapped parts
    /// of `[addr, addr + len)` becomes a guard, where a fault is a segmentation fault, without
    /// splitting a VMA; what was mapped there goes (the page reads as zeros once the guard is
    /// removed). A fault racing the install either finds the guard or installed first and its
    /// translation is taken; when this returns, no access through one is still in progress.
    /// Guards stay through MADV_DONTNEED, mprotect and truncate, move with mremap, come along
    /// in a fork's child, and go with munmap. As Linux 6.18 (checked with raw syscalls): EINVAL
    /// for an unaligned address or a mapping of huge pages (the walk stops there), ENOMEM,
    /// after installing, when part of the range is unmapped; a length of 0 does nothing.
    pub fn madvise_guard_install(&self, addr: u64, len: u64) -> vma::Result<()> {
        self.guard_pages(addr, len, true)
    }

    /// madvise(MADV_GUARD_REMOVE): the guards of the mapped parts of `[addr, addr + len)`
    /// become holes again (a fault maps a fresh page); errors as for
    /// [`Mm::madvise_guard_install`].
    pub fn madvise_guard_remove(&self, addr: u64, len: u64) -> vma::Result<()> {
        self.guard_pages(addr, len, false)
    }

    /// MADV_GUARD_INSTALL (`install`) or MADV_GUARD_REMOVE.
    fn guard_pages(&self, addr: u64, len: u64, install: bool) -> vma::Result<()> {
        let Some(range) = advise_range(addr, len)? else {
            return Ok(());
        };
        let (space, memory) = (&self.shared.space, &self.shared.memory);
        let (mut frames, mut revoked) = (Vec::new(), Revoked::new());
        let walk = self.walk_advised(range, |mapping, from, to| {
            if mapping.page_size() != PAGE_SIZE || mapping.locked {
                return Err(einval(
                    "guard regions in locked memory or a mapping of huge pages",
                ));
            }
            if install {
                let taken = memory.table().guard(from, to);
                revoked.record(!taken.is_empty(), from, to);
                frames.extend(taken);
            } else {
                memory.table().unguard(from, to);
            }
            Ok(())
        });
        // Released after the walk's section, as MADV_DONTNEED's.
        memory.release_later(frames, (range.0, range.1.min(ADDRESS_LIMIT)), space.rcu());
        space.await_revoked(&revoked);
        walk.answer()
    }

    /// madvise(MADV_DONTFORK): the mapped parts of `[addr, addr + len)` are left out of a
    /// fork's child (see [`AddressSpace::set_dontfork`]).
    pub fn madvise_dontfork(&self, addr: u64, len: u64) -> vma::Result<()> {
        self.shared.space.set_dontfork(addr, len, true)
    }

    /// madvise(MADV_DOFORK): undoes MADV_DONTFORK (see [`AddressSpace::set_dontfork`]).
    pub fn madvise_dofork(&self, addr: u64, len: u64) -> vma::Result<()> {
        self.shared.space.set_dontfork(addr, len, false)
    }

    /// msync(MS_SYNC): writes the dirty pages that the shared file mappings of `[addr, addr +
    /// len)` map back to their files' storage (see [`File::sync_range`]). As Linux 6.18 (checked
    /// with raw syscalls): EINVAL for an unaligned address, ENOMEM for a range that wraps
    /// around and (after writing what is mapped) for one with unmapped parts; a length that
    /// rounds up to zero (0, or within a page of 2^64) does nothing. EIO when a backing fails.
    pub fn msync(&self, addr: u64, len: u64) -> vma::Result<()> {
        if addr % PAGE_SIZE != 0 {
            return Err(einval("address not page aligned"));
        }
        // Linux rounds the length up modulo 2^64 (a length within a page of the top is 0).
        let end = addr.wrapping_add(len.wrapping_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1));
        if end < addr {
            return Err(Error::new(Errno::ENOMEM, "the range wraps around"));
        }
        if end == addr {
            return Ok(());
        }
        let mut mapped = 0;
        let mut files = Vec::new();
        {
            let guard = self.shared.space.guard_within(addr, end);
            for vma in self.shared.space.iter_from(addr, &guard) {
                if vma.start() >= end {
                    break;
                }
                let (from, to) = (vma.start().max(addr), vma.end().min(end));
                mapped += to - from;
                let mapping = vma.mapping();
                if let (true, Some(file)) = (mapping.shared, shared_file(mapping)) {
                    let offset = (mapping.pgoff << vma::PAGE_SHIFT) + (from - mapping.start);
                    files.push((file, offset, to - from));
                }
            }
        }
        for (file, offset, len) in files {
            file.sync_range(offset, len)?;
        }
        if mapped < end - addr {
            return Err(Error::new(Errno::ENOMEM, "part of the range is unmapped"));
        }
        Ok(())
    }
}

/// The file `mapping` maps, to keep beyond a read-side section.
/// What an madvise walk ([`Mm::walk_advised`]) found.
struct AdviceWalk {
    /// The error that stopped it, if one did.
    refused: vma::Result<()>,
    /// Whether part of the range was not walked over a VMA (a hole, or past the refusal).
    unmapped: bool,
}

impl AdviceWalk {
    /// What the madvise call answers once its work is done: the refusal, else ENOMEM when part
    /// of the range is unmapped (Linux's `unmapped_error`), else success.
    fn answer(self) -> vma::Result<()> {
        self.refused?;
        if self.unmapped {
            return Err(Error::new(Errno::ENOMEM, "part of the range is unmapped"));
        }
        Ok(())
    }
}

/// The file that `mapping`, inside `[from, to)`, maps, with the first page offset and the page
/// count there; `None` for anonymous memory.
fn file_part(mapping: &Mapping, from: u64, to: u64) -> Option<(Arc<File>, u64, u64)> {
    let file = shared_file(mapping)?;
    let first = mapping.pgoff + ((from - mapping.start) >> vma::PAGE_SHIFT);
    Some((file, first, (to - from) >> vma::PAGE_SHIFT))
}

fn shared_file(mapping: &Mapping) -> Option<Arc<File>> {
    let VmaBacking::File(object) = &mapping.backing else {
        return None;
    };
    let any: Arc<dyn std::any::Any + Send + Sync> = object.clone();
    any.downcast::<File>().ok()
}

impl Mm {
    /// Resolves a fault at `addr` as a CPU's page-fault handler would (the fast and slow paths:
    /// docs/fault.md). Never takes an address-space lock; waits only for a VMA
    /// that a writer is setting up (BABY) and for file reads. A fault below a stack
    /// (MAP_GROWSDOWN) grows it first, as a writer would (see
    /// [`AddressSpace::grow_stack`](vma::AddressSpace::grow_stack)); where it cannot grow, the
    /// fault is a segmentation fault.
    ///
    /// # Examples
    /// ```
    /// use fault::{Access, Fault, FaultError, FramePool, MapFlags, Mm, MmConfig, Prot};
    /// use std::sync::Arc;
    ///
    /// let mm = Mm::new(MmConfig::default(), Arc::new(FramePool::new(Default::default()).unwrap())).unwrap();
    /// let a = mm.mmap(0, 4096, Prot::READ, MapFlags::PRIVATE_ANONYMOUS, None).unwrap();
    /// assert_eq!(mm.fault(a, Access::Read), Ok(Fault::Installed));
    /// assert_eq!(mm.fault(a, Access::Read), Ok(Fault::AlreadyMapped));
    /// assert_eq!(mm.fault(a, Access::Write), Err(FaultError::AccessDenied));
    /// assert_eq!(mm.fault(a + 4096, Access::Read), Err(FaultError::NotMapped));
    /// ```
    pub fn fault(&self, addr: u64, access: Access) -> Result<Fault, FaultError> {
        let result = self.resolve(addr, access);
        self.shared.memory.count(result);
        result
    }

    fn resolve(&self, addr: u64, access: Access) -> Result<Fault, FaultError> {
        if addr >= ADDRESS_LIMIT {
            return Err(FaultError::NotMapped);
        }
        let page = addr & !(PAGE_SIZE - 1);
        loop {
            // Keyed: writers replacing other VMAs do not wait for this fault.
            let guard = self.shared.space.guard_at(page);
            let vma = match self.shared.space.lookup(page, &guard) {
                Lookup::Unmapped => {
                    drop(guard);
                    // Below a stack, it grows down to the page (none of its faults waits).
                    match self.shared.space.grow_stack(page) {
                        Ok(true) => continue,
                        Ok(false) | Err(_) => return Err(FaultError::NotMapped),
                    }
                }
                Lookup::Baby => {
                    drop(guard);
                    let since = std::time::Instant::now();
                    self.shared.space.wait_for_birth(page);
                    self.shared.memory.record_wait(since.elapsed());
                    continue;
                }
                Lookup::Mapped(vma) => vma,
            };
            if !allows(vma.mapping(), access) {
                return Err(FaultError::AccessDenied);
            }
            // The first write to a private mapping makes pages of its own (Linux prepares the
            // anon_vma then, which decides what it may merge with later).
            if access == Access::Write && !vma.mapping().shared && vma.mapping().anon.get().is_none() {
                self.shared.space.prepare_anon(vma);
            }
            // Without the fast path, every fault holds a reference (rcu-refonly).
            let Ok(reference) = (!self.shared.config.fast_path)
                .then(|| self.shared.space.try_get(vma))
                .transpose()
            else {
                // Replaced or reborn since the lookup: look again.
                self.shared.memory.bump(Counter::Retries);
                continue;
            };
            match self.shared.memory.settle(vma.mapping(), page, access, &guard)? {
                Progress::Done(fault) => return Ok(fault),
                Progress::Fenced => {
                    drop(guard);
                    drop(reference);
                    self.shared.memory.wait_for_fence(page);
                    continue;
                }
                Progress::Blocking(pgoff) => {
                    // The slow path holds a reference across the read.
                    let Ok(reference) = reference.map_or_else(|| self.shared.space.try_get(vma), Ok) else {
                        self.shared.memory.bump(Counter::Retries);
                        continue;
                    };
                    drop(guard);
                    return self.slow_path(&reference, page, access, pgoff);
                }
            }
        }
    }

    /// Reads the file page with no guard held, then installs against the referenced VMA.
    #[cold]
    fn slow_path(
        &self,
        vma: &VmaRef<'_>,
        page: u64,
        access: Access,
        pgoff: u64,
    ) -> Result<Fault, FaultError> {
        let result = self
            .shared
            .memory
            .read_in(vma.mapping(), page, access, pgoff, self.shared.space.rcu());
        if result.is_ok() {
            self.shared.memory.bump(Counter::SlowPath);
        }
        result
    }

    /// Copies `buf.len()` bytes from `addr`, faulting pages in as a CPU would.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        self.shared
            .memory
            .read(addr, buf, self.shared.space.rcu(), |addr, access| {
                self.fault(addr, access)
            })
    }

    /// Copies `data` to `addr`, faulting pages in as a CPU would.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), AccessError> {
        self.shared
            .memory
            .write(addr, data, self.shared.space.rcu(), |addr, access| {
                self.fault(addr, access)
            })
    }
}
