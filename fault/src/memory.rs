//! [`Memory`]: a page table, the pool its frames come from, and everything that changes the
//! table — the fault side (decide what a page's entry must become and install it, in
//! `engine`) and the writer side (zap, protect, relocate, clear). It knows nothing of how VMAs
//! are found or protected: [`Mm`](crate::Mm) finds them in the RCU-safe address space; the
//! benchmark's baseline designs find them under their locks. Each caller states what keeps
//! the mapping it passes valid (see [`Memory::settle`]).
//!
//! Invariants:
//! - Every present entry holds one reference on its frame.
//! - A frame removed from an entry is put only after a grace period of the caller's RCU domain
//!   ([`Memory::release_later`]): a `read`/`write` copying through the old translation under a
//!   guard finishes first. Emptied page tables are retired to the same domain.
//! - A shared page table (PMD sharing, `pmd_share`) that a range operation unlinks from this
//!   table is given back to its file's registry only after a grace period of the same domain,
//!   and counts as a revocation of the range it covers (the caller waits for the accesses
//!   through it, as for any removed translation).
//! - With the fault fence ([`Memory::with_fault_fence`], as [`Mm`](crate::Mm) builds it), no
//!   fault installs through a shared table after this table unlinked it: unsharing outside the
//!   VMA protocol fences the spans it covers (`fence::FaultFence`), waiting for the faults
//!   already there while later ones wait for it.

use crate::engine::{Access, AccessError, Fault, FaultError, Progress, readable};
use crate::fence::{FaultFence, Fenced};
use crate::file::{File, FileSync, Lookup, file_of};
use crate::frames::{FRAME_SIZE, Frame, FramePool, HUGE_FRAME_SIZE};
use crate::pagetable::{
    ACCESSED, ADDRESS_LIMIT, DIRTY, NO_ACCESS, PRIVATE, PageTable, Pte, SHARED_SPAN, SharedTable, WRITABLE,
};
use crate::pmd_share::{Registry, Release, SPAN_PAGES};
use crate::stats::{Counter, Counters, FaultStats, WaitClock, Waits};
use maple::Guard;
use maple::rcu::{DefaultRcu, DropBox, Keys, Rcu};
use maple::sync::Mutex;
use maple::sync::atomic::{AtomicU64, Ordering};
use std::collections::HashMap;
use std::sync::Arc;
use vma::{Backing as VmaBacking, Errno, Error, MapFlags, MappedFile, Mapping, PAGE_SIZE, Prot, Revoked};

/// What a file mapping maps: the object and the byte offset in it (`None` for anonymous
/// memory), as [`vma::AddressSpace::mmap`] takes it.
pub type MappedObject = Option<(Arc<dyn MappedFile>, u64)>;

/// A page table and the frames behind it: faults decide and install entries
/// ([`Memory::settle`], [`Memory::read_in`]), writers zap, protect and relocate them; every
/// present entry holds one reference on its frame, and a frame removed from an entry goes
/// back a grace period later (docs/fault.md).
pub struct Memory {
    table: PageTable,
    frames: Arc<FramePool>,
    zero_fill: bool,
    counters: Counters,
    waits: WaitClock,
    /// Share lookups (faults looking for a page table to share) held up by a lock.
    share_waits: WaitClock,
    /// Held while translations move between addresses (mremap), and by a file's invalidation
    /// while it removes this table's translations of the file: it never misses one in flight.
    relocation: Mutex<()>,
    /// The shared page tables this table links or is linking, each with its file's registry
    /// and how many of its links are not yet given back (see `pmd_share`).
    shares: Mutex<HashMap<SharedTable, (Arc<Registry>, usize)>>,
    /// Serializes this table's attempts to link a shared table.
    sharing: Mutex<()>,
    /// Whether faults link shared page tables at all.
    share_page_tables: bool,
    /// Ranges of MADV_FREE: their clean private pages may go when memory is short (sorted,
    /// apart).
    lazyfree: Mutex<Vec<(u64, u64)>>,
    /// Whether writers that keep this table's faults out of a range without the VMA protocol
    /// fence it (see `fence`): on for [`Mm`](crate::Mm), whose faults hold no guard while
    /// they wait.
    fenced: bool,
    fence: FaultFence,
    /// Shuttle builds only: fences are skipped (a test's broken variant), and whether a fault
    /// then installed through a table this one no longer linked.
    #[cfg(feature = "shuttle")]
    fence_broken: maple::sync::atomic::AtomicBool,
    #[cfg(feature = "shuttle")]
    installed_unlinked: maple::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("frames_in_use", &self.frames.in_use())
            .field("page_tables", &self.table.tables())
            .field("zero_fill", &self.zero_fill)
            .finish()
    }
}

/// Frames removed from translations, put back when the grace period they were retired with
/// has passed.
struct Released {
    frames: Arc<FramePool>,
    list: Vec<Frame>,
}

impl Drop for Released {
    fn drop(&mut self) {
        // SAFETY: each is the reference of a translation that was removed before this was
        // retired; the grace period has passed, so no reader still copies through it.
        unsafe { self.frames.put_many(&self.list) };
    }
}

/// One decision about a page's entry.
enum Attempt {
    /// The fault is resolved.
    Done(Fault),
    /// The entry changed under us (or we changed it and must look again): decide again.
    Again,
    /// The file page must be read first (blocking).
    Blocking(u64),
}

impl Memory {
    /// An empty page table over `frames`; anonymous frames are zero-filled when `zero_fill`
    /// (off only to measure what zeroing costs: anonymous memory then shows stale bytes).
    pub fn new(frames: Arc<FramePool>, zero_fill: bool) -> Self {
        Self {
            table: PageTable::new(),
            frames,
            zero_fill,
            counters: Counters::new(),
            waits: WaitClock::default(),
            share_waits: WaitClock::default(),
            relocation: Mutex::new(()),
            shares: Mutex::new(HashMap::new()),
            sharing: Mutex::new(()),
            share_page_tables: true,
            lazyfree: Mutex::new(Vec::new()),
            fenced: false,
            fence: FaultFence::default(),
            #[cfg(feature = "shuttle")]
            fence_broken: maple::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "shuttle")]
            installed_unlinked: maple::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The same memory, but writers that must keep its faults out of a range without the VMA
    /// protocol — unsharing a page table outside it (MADV_DONTNEED, a file's invalidation) —
    /// fence the range: they wait for the faults already in it, and later ones wait for them,
    /// so that no fault installs through a table this one no longer links (see `fence` and
    /// `pmd_share`). Only for callers whose faults hold no read-side section while they wait
    /// ([`Progress::Fenced`]).
    pub fn with_fault_fence(mut self) -> Self {
        self.fenced = true;
        self
    }

    /// Makes fences come up empty (shuttle builds only; for the tests that must fail).
    #[cfg(feature = "shuttle")]
    #[doc(hidden)]
    pub fn break_fault_fence(&self) {
        self.fence_broken.store(true, Ordering::SeqCst);
    }

    /// Fences `[start, end)` when this memory fences at all ([`Memory::with_fault_fence`]): waits
    /// for the faults already there, and later ones wait until the result is dropped. The
    /// caller is inside no read-side section of `rcu`, this table's domain.
    pub(crate) fn fence(&self, start: u64, end: u64, rcu: &DefaultRcu) -> Option<Fenced<'_>> {
        #[cfg(feature = "shuttle")]
        if self.fence_broken.load(Ordering::SeqCst) {
            return None;
        }
        self.fenced.then(|| self.fence.raise(start, end, rcu))
    }

    /// Before unsharing page tables in `[start, end)` outside the VMA protocol: fences the
    /// 1 GiB spans around it (see [`Memory::fence`]); hold the result until the tables are
    /// unlinked.
    pub(crate) fn fence_for_unsharing(&self, start: u64, end: u64, rcu: &DefaultRcu) -> Option<Fenced<'_>> {
        let spans = (start & !(SHARED_SPAN - 1), end.next_multiple_of(SHARED_SPAN));
        self.fence(spans.0, spans.1, rcu)
    }

    /// Waits, with no section held, while a fence stands over `page` (after
    /// [`Progress::Fenced`]); counts the wait.
    pub fn wait_for_fence(&self, page: u64) {
        self.fence.wait_out(page, |waited| self.record_wait(waited));
    }

    /// Checks that the table still links `entry`, the huge entry of `page` a fault has just
    /// installed (debug and shuttle builds, with the fault fence on): a violation panics, or is
    /// only recorded when a test broke the fence on purpose.
    #[cfg(any(debug_assertions, feature = "shuttle"))]
    fn check_still_linked(&self, page: u64, entry: &AtomicU64) {
        if self
            .table
            .huge_entry(page)
            .is_some_and(|linked| std::ptr::eq(linked, entry))
        {
            return;
        }
        #[cfg(feature = "shuttle")]
        if self.fence_broken.load(Ordering::SeqCst) {
            self.installed_unlinked.store(true, Ordering::SeqCst);
            return;
        }
        panic!("violated: a fault installed through a page table its address space no longer links");
    }

    /// Whether a fault installed through a page table this one no longer linked, which only
    /// a broken fence allows (shuttle builds only; see [`Memory::break_fault_fence`]).
    #[cfg(feature = "shuttle")]
    #[doc(hidden)]
    pub fn installed_through_an_unlinked_table(&self) -> bool {
        self.installed_unlinked.load(Ordering::SeqCst)
    }

    /// The same memory, but its faults never link a shared page table: every level-2 table is
    /// its own (PMD sharing off, for comparison).
    pub fn without_page_table_sharing(mut self) -> Self {
        self.share_page_tables = false;
        self
    }

    /// Gives back, a grace period of `rcu` later, the shared page tables that range operations
    /// unlinked from this table (see `pmd_share`); returns whether there were any (their
    /// translations were revoked here).
    pub(crate) fn release_unshared(&self, rcu: &DefaultRcu) -> bool {
        let unshared = self.table.take_unshared();
        for &(base, table) in &unshared {
            let registry = self.forget_link(table);
            let release = Box::into_raw(Box::new(Release { registry, table }));
            // SAFETY: the box is reachable only through this pointer, retired once; DropBox
            // frees what came from Box::into_raw. Walkers of this table reached the shared one
            // only at addresses it covers, `[base, base + SHARED_SPAN)`.
            unsafe {
                rcu.retire_within::<Release, DropBox>(release, Keys::new(base, base + SHARED_SPAN - 1))
            };
        }
        !unshared.is_empty()
    }

    /// One link of shared `table` fewer in this table's record; returns its file's registry,
    /// where the link's count goes back.
    fn forget_link(&self, table: SharedTable) -> Arc<Registry> {
        let mut shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        let (registry, links) = shares.get_mut(&table).expect("a linked shared table is recorded");
        *links -= 1;
        let registry = registry.clone();
        if *links == 0 {
            shares.remove(&table);
        }
        registry
    }

    /// Links the file's shared page table for the 1 GiB around `page` (PMD sharing: see
    /// `pmd_share`) when `mapping`, a shared mapping of hugetlb `file`, covers that 1 GiB
    /// whole at a file offset aligned to it, and no level-2 table is linked there yet.
    /// `fault_waited`: how long the fault waited for the file's lock it holds across (under
    /// [`FileSync::RwSem`](crate::FileSync::RwSem)), which held this lookup up as well.
    fn try_share(
        &self,
        mapping: &Mapping,
        page: u64,
        file: &File,
        fault_waited: Option<std::time::Duration>,
    ) {
        let base = page & !(SHARED_SPAN - 1);
        if !self.share_page_tables
            || !mapping.shared
            || base < mapping.start
            || mapping.end - base < SHARED_SPAN
        {
            return;
        }
        let first = mapping.pgoff + ((base - mapping.start) >> vma::PAGE_SHIFT);
        if first % SPAN_PAGES != 0 {
            return;
        }
        if let Some(waited) = fault_waited {
            self.share_waits.record(waited);
        }
        let _sharing = self.sharing.lock().unwrap_or_else(|e| e.into_inner());
        // Another fault of this table may have linked one while this one waited.
        if self.table.has_level2(base) {
            return;
        }
        // Inside the file's section for the table's pages, or under its lock shared, no
        // invalidation of them runs unseen (see `pmd_share`).
        let guarded = !file.shares_unguarded();
        let _shared = guarded.then(|| file.lock_for_share(|waited| self.share_waits.record(waited)));
        let _guard = guarded.then(|| file.guard_within(first, first + SPAN_PAGES));
        if guarded && file.invalidating(first, first + SPAN_PAGES) {
            return;
        }
        let registry = file.shared_tables();
        let table = registry.acquire(first / SPAN_PAGES, mapping.prot, |waited| {
            self.share_waits.record(waited)
        });
        {
            let mut shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
            shares.entry(table).or_insert_with(|| (registry.clone(), 0)).1 += 1;
        }
        if !self.table.link_shared(base, table) {
            // A table of its own was linked meanwhile: this one was never reachable from here.
            self.forget_link(table).release(table);
        }
    }

    /// The pool frames come from.
    pub fn frames(&self) -> &Arc<FramePool> {
        &self.frames
    }

    /// The page table.
    pub fn table(&self) -> &PageTable {
        &self.table
    }

    /// Records that a fault waited `waited` for another thread (a writer setting up its VMA,
    /// a lock a writer held).
    pub fn record_wait(&self, waited: std::time::Duration) {
        self.waits.record(waited);
    }

    /// The waits recorded so far.
    pub fn waits(&self) -> Waits {
        self.waits.snapshot()
    }

    /// How often share lookups (a fault looking for a page table to share) were held up by a
    /// lock, and for how long.
    pub fn share_waits(&self) -> Waits {
        self.share_waits.snapshot()
    }

    /// Puts `list`, the frames of translations removed from `[start, end)`, back after a grace
    /// period of `rcu` for those addresses (a fault keyed elsewhere cannot have read them).
    pub fn release_later(&self, list: Vec<Frame>, (start, end): (u64, u64), rcu: &DefaultRcu) {
        if list.is_empty() {
            return;
        }
        let released = Box::into_raw(Box::new(Released {
            frames: self.frames.clone(),
            list,
        }));
        // SAFETY: the box is reachable only through this pointer, which is retired once;
        // DropBox frees what came from Box::into_raw. Its frames were reachable only through
        // the removed translations, which only sections whose keys overlap the range (faults,
        // `read` and `write` there, madvise over it) or unkeyed ones could have read.
        unsafe { rcu.retire_within::<Released, DropBox>(released, Keys::new(start, end - 1)) };
        // Frames are memory the pool wants back soon: do not let them wait for a batch to fill
        // (a batch of 16 retirements could be 16 whole regions); the slot domain reclaims the
        // sealed batch on the spot when no reader is running.
        rcu.push_retired();
    }

    /// MADV_FREE of `[start, end)`, private anonymous memory: its pages are cleaned — write
    /// permission and the dirty bit taken off, so that a write faults and marks the page
    /// dirty again — and the range is recorded, for `Memory::reclaim_lazyfree` to take the
    /// pages still clean when memory is short. Returns whether a translation lost its write
    /// permission (the caller waits for the accesses through it: a write in flight lands
    /// before the page counts as clean). Call it inside a read-side section.
    pub fn mark_lazyfree(&self, start: u64, end: u64) -> bool {
        let revoked = self.table.clean(start, end);
        let mut ranges = self.lazyfree.lock().unwrap_or_else(|e| e.into_inner());
        ranges.push((start, end));
        ranges.sort_unstable();
        ranges.dedup_by(|next, previous| {
            let joins = next.0 <= previous.1;
            if joins {
                previous.1 = previous.1.max(next.1);
            }
            joins
        });
        revoked
    }

    /// Takes the pages of MADV_FREE's ranges that are still clean — not written since, and
    /// held by this page table alone — until about `want` frames are let go of (they go back a
    /// grace period of `rcu` later); a range gone through leaves the list (its pages written
    /// since are no longer lazily freed). A fault racing it either wrote first (the page is
    /// dirty and stays) or finds the hole and maps a zeroed page. Returns how many frames it
    /// let go of.
    pub(crate) fn reclaim_lazyfree(&self, want: usize, rcu: &DefaultRcu) -> usize {
        let mut freed = 0;
        while freed < want {
            let Some((start, end)) = self.lazyfree.lock().unwrap_or_else(|e| e.into_inner()).pop() else {
                break;
            };
            freed += self.drop_where((start, end), rcu, |pte| !pte.dirty() && pte.0 & WRITABLE == 0);
        }
        freed
    }

    /// Drops the pages of a MAP_DROPPABLE mapping `[start, end)` under memory pressure: its
    /// own frames not shared, written or not (a fault afterwards maps a zeroed page; a store
    /// racing the drop may be lost, as MAP_DROPPABLE allows, but never lands in a reused
    /// frame: they go back a grace period of `rcu` later). Returns how many it let go of.
    pub(crate) fn drop_pages(&self, range: (u64, u64), rcu: &DefaultRcu) -> usize {
        self.drop_where(range, rcu, |_| true)
    }

    /// Removes the translations in `[start, end)` of frames of the mapping's own, not shared,
    /// that pass `also`, and releases the frames a grace period of `rcu` later; returns how
    /// many. The reclaim of MADV_FREE's pages and MAP_DROPPABLE's.
    fn drop_where(&self, (start, end): (u64, u64), rcu: &DefaultRcu, also: impl Fn(Pte) -> bool) -> usize {
        let guard = Guard::keyed(rcu, Keys::new(start, end - 1));
        let frames = self.table.clear_if(start, end, |pte| {
            pte.private() && !self.frames.shared(pte.frame()) && also(pte)
        });
        drop(guard);
        let freed = frames.len();
        self.release_later(frames, (start, end), rcu);
        freed
    }

    /// Removes the translations of `[start, end)` and releases their frames after a grace
    /// period; frees page tables lying wholly inside `free_tables` (see
    /// [`vma::FlushHook::zap`]). The caller makes sure no fault installs into the range
    /// meanwhile. Returns whether a translation was removed (revoked: see [`vma::Revoked`]).
    pub fn zap(&self, start: u64, end: u64, free_tables: (u64, u64), rcu: &DefaultRcu) -> bool {
        let frames = self.table.zap(start, end, free_tables, rcu);
        let revoked = !frames.is_empty();
        self.release_later(frames, (start, end), rcu);
        self.release_unshared(rcu) | revoked
    }

    /// Makes the translations of `[start, end)` allow no more than `prot`; returns whether one
    /// lost a permission.
    pub fn protect(&self, start: u64, end: u64, prot: Prot, rcu: &DefaultRcu) -> bool {
        let reduced = self.table.protect(start, end, readable(prot), prot.write);
        self.release_unshared(rcu) | reduced
    }

    /// Moves the translations of `[from, from + len)` to `[to, to + len)`; returns whether one
    /// moved (and so was revoked at its old address).
    pub fn relocate(&self, from: u64, to: u64, len: u64, rcu: &DefaultRcu) -> bool {
        let _relocation = self.relocation.lock().unwrap_or_else(|e| e.into_inner());
        let moved = self.table.relocate(from, to, len);
        self.release_unshared(rcu) | moved
    }

    /// fork's copy of `mapping`, one of this memory's VMAs, into `child` (the child's memory,
    /// whose VMA maps the same): a private mapping's own pages (anonymous memory, copies made
    /// on write) become copy-on-write in both, each write-protected and referenced once more;
    /// a shared mapping's pages, and the file pages a private mapping reads, are not copied
    /// (the child faults them from the file, as Linux leaves them to its faults); guards are
    /// copied in every mapping, as Linux copies them. The range is
    /// fenced meanwhile (see `fence`): no fault of this memory there is between its lookup and
    /// its install, so none can upgrade a page in place that the copy has just shared. A
    /// private file mapping's copies are made inside the file's section for its pages, with no
    /// invalidation of them running, so a truncate either waits for the copy and then removes
    /// the child's copies too (the child's VMA is in the file's reverse map already), or ended
    /// before. Returns whether a translation here lost its write permission (revoked: the
    /// caller waits for the accesses through it before fork returns). The caller is inside no
    /// read-side section of `rcu`, this memory's domain.
    pub fn copy_for_fork(&self, child: &Memory, mapping: &Mapping, rcu: &DefaultRcu) -> bool {
        // MAP_DROPPABLE memory is wiped on fork (VM_WIPEONFORK): the child's reads zeros.
        if mapping.droppable {
            return false;
        }
        if mapping.shared {
            // Only the guards (MADV_GUARD_INSTALL) come along; a mapping of huge pages has none
            // (and its walk would unshare its page tables).
            if mapping.page_size() == PAGE_SIZE {
                let _guard = Guard::keyed(rcu, Keys::new(mapping.start, mapping.end - 1));
                self.table
                    .copy_protected(mapping.start, mapping.end, &child.table, |_| false);
            }
            return false;
        }
        let file = File::of(mapping);
        let first = mapping.pgoff;
        let end = first + ((mapping.end - mapping.start) >> vma::PAGE_SHIFT);
        loop {
            let fenced = self.fence(mapping.start, mapping.end, rcu);
            let file_guard = file.map(|file| file.guard_within(first, end));
            if let Some(file) = file
                && file.invalidating(first, end)
            {
                drop((file_guard, fenced));
                let mut backoff = maple::sync::Backoff::new();
                while file.invalidating(first, end) {
                    backoff.snooze();
                }
                continue;
            }
            let guard = Guard::keyed(rcu, Keys::new(mapping.start, mapping.end - 1));
            let (frames, revoked) =
                self.table
                    .copy_protected(mapping.start, mapping.end, &child.table, |pte| pte.private());
            for &frame in &frames {
                self.frames.get(frame);
            }
            drop((guard, file_guard, fenced));
            return revoked;
        }
    }

    /// Removes the translations of `file`'s pages `[first, end)` that `mapper` (this memory's
    /// owner, whose VMAs find pages in this table) installed: all of them when `even_cows`,
    /// else those mapping the file's frames. Holds the relocation lock, so none moves away
    /// meanwhile; walks the table inside sections of `rcu` (the owner's domain, where emptied
    /// tables are retired) and releases the frames a grace period later. Returns what was
    /// revoked: the caller waits for it ([`Revoked::wait`]) once the file lets faults go on.
    pub fn unmap_file_pages(
        &self,
        mapper: &dyn crate::Mapper,
        file: &File,
        range: (u64, u64),
        even_cows: bool,
        rcu: &DefaultRcu,
    ) -> Revoked {
        self.each_file_range(mapper, file, range, rcu, |start, stop| {
            let frames = self
                .table
                .clear_if(start, stop, |pte| even_cows || !pte.private());
            (!frames.is_empty(), frames)
        })
    }

    /// Write-protects the translations of `file`'s own frames of pages `[first, end)` that
    /// `mapper` installed (private copies keep their permissions), as
    /// [`Memory::unmap_file_pages`] walks them; a write through them faults from now on.
    /// Returns what was revoked.
    pub fn write_protect_file_pages(
        &self,
        mapper: &dyn crate::Mapper,
        file: &File,
        range: (u64, u64),
        rcu: &DefaultRcu,
    ) -> Revoked {
        self.each_file_range(mapper, file, range, rcu, |start, stop| {
            let reduced = self
                .table
                .protect_if(start, stop, true, false, |pte| !pte.private());
            (reduced, Vec::new())
        })
    }

    /// Calls `change` on each address range where `mapper` maps `file`'s pages `range`, under
    /// the relocation lock and inside a section of `rcu` keyed to it; `change` says whether it
    /// revoked a translation and which frames to release a grace period later.
    fn each_file_range(
        &self,
        mapper: &dyn crate::Mapper,
        file: &File,
        (first, end): (u64, u64),
        rcu: &DefaultRcu,
        mut change: impl FnMut(u64, u64) -> (bool, Vec<Frame>),
    ) -> Revoked {
        let mut revoked = Revoked::new();
        let _relocation = self.relocation.lock().unwrap_or_else(|e| e.into_inner());
        for (start, stop) in file.mapped_ranges(mapper, first, end) {
            // A hugetlb range may lie in a shared page table, which the change unshares. Under
            // `FileSync::RwSem` the file's lock, held exclusive, keeps out the faults, which
            // hold it shared across the fault (and would wait for it inside their section).
            let _fenced = (file.is_hugetlb() && !file.faults_take_lock())
                .then(|| self.fence_for_unsharing(start, stop, rcu))
                .flatten();
            let guard = Guard::keyed(rcu, Keys::new(start, stop - 1));
            let (any, frames) = change(start, stop);
            drop(guard);
            self.release_later(frames, (start, stop), rcu);
            revoked.record(self.release_unshared(rcu) | any, start, stop);
        }
        revoked
    }

    /// Drops the pages of `[start, end)` (MADV_DONTNEED), releasing their frames after a grace
    /// period. Faults may run meanwhile: they install again. Returns whether a translation was
    /// removed.
    pub fn clear(&self, start: u64, end: u64, rcu: &DefaultRcu) -> bool {
        let frames = self.table.clear(start, end);
        let revoked = !frames.is_empty();
        self.release_later(frames, (start, end), rcu);
        self.release_unshared(rcu) | revoked
    }

    /// What an mmap with `flags` maps, for [`vma::request::MmapRequest`]: MAP_SHARED |
    /// MAP_ANONYMOUS gets a new zero-filled object of `len` bytes caching its pages in this
    /// memory's pool, created lazily (returned with the flags turned into a file mapping's); an
    /// object longer than the pool is ENOMEM, as Linux's default overcommit heuristic refuses
    /// one larger than memory. Anonymous mappings need an aligned offset, then ignore it and
    /// the file (EINVAL otherwise); a file must cache its pages in this pool (EINVAL otherwise).
    pub fn mapped_object(
        &self,
        len: u64,
        flags: MapFlags,
        file: Option<(&Arc<File>, u64)>,
    ) -> vma::Result<(MapFlags, MappedObject)> {
        let shared = flags.check()?;
        if flags.anonymous && flags.hugetlb {
            // Anonymous memory of huge pages: a hugetlbfs object of its own (Linux's
            // HUGETLB_ANON_FILE), which a shared mapping reserves pages of at mmap.
            if flags.huge_page_size() != Some(HUGE_FRAME_SIZE as u64) {
                return Err(Error::new(
                    Errno::ENOMEM,
                    "no huge pages of that size in the pool",
                ));
            }
            let len = len
                .checked_next_multiple_of(HUGE_FRAME_SIZE as u64)
                .ok_or(Error::new(
                    Errno::ENOMEM,
                    "length overflows when rounded to huge pages",
                ))?;
            let object = File::hugetlb("/anon_hugepage (deleted)", &self.frames, len, FileSync::Rcu)
                .map_err(|_| Error::new(Errno::ENOMEM, "longer than a hugetlb object can be"))?;
            let flags = MapFlags {
                anonymous: false,
                ..flags
            };
            let object: Arc<dyn MappedFile> = object;
            return Ok((flags, Some((object, 0))));
        }
        if flags.anonymous {
            // Linux checks the offset, then ignores it (and the file).
            if file.is_some_and(|(_, offset)| offset % FRAME_SIZE as u64 != 0) {
                return Err(einval("offset not page aligned"));
            }
            if !shared {
                return Ok((flags, None));
            }
            // Linux's default overcommit heuristic refuses an object larger than memory.
            let memory = self.frames.config().max_frames as u64 * FRAME_SIZE as u64;
            if len > memory {
                return Err(Error::new(Errno::ENOMEM, "longer than the frame pool"));
            }
            let shmem = File::shared_anonymous(&self.frames, len)
                .map_err(|_| Error::new(Errno::ENOMEM, "longer than a shared object can be"))?;
            let flags = MapFlags {
                anonymous: false,
                ..flags
            };
            let object: Arc<dyn MappedFile> = shmem;
            return Ok((flags, Some((object, 0))));
        }
        let object = match file {
            Some((file, offset)) => {
                if !Arc::ptr_eq(file.frames(), &self.frames) {
                    return Err(einval("the file caches its pages in another frame pool"));
                }
                let object: Arc<dyn MappedFile> = file.clone();
                Some((object, offset))
            }
            None => None,
        };
        Ok((flags, object))
    }
}

/// Reserves the huge pages a checked mmap `request` may fault, if it maps a hugetlb file
/// shared (Linux's `hugetlb_reserve_pages` at mmap): ENOMEM, with nothing reserved, when the
/// pool cannot cover them (see [`File::reserve`]). Nothing for any other mapping.
pub fn reserve_huge_pages(request: &vma::request::MmapRequest) -> vma::Result<()> {
    let mapping = request.mapping_at(0);
    match File::of(&mapping) {
        Some(file) if file.is_hugetlb() && mapping.shared => {
            file.reserve(mapping.pgoff, mapping.pgoff + mapping.pages())
        }
        _ => Ok(()),
    }
}

/// The fault side: what a page's entry must become and its install, and the CPU-like copies.
impl Memory {
    /// Counts one event of the fault path.
    pub(crate) fn bump(&self, counter: Counter) {
        self.counters.bump(counter);
    }

    /// The statistics so far, with the address space's writer counters.
    pub(crate) fn stats(&self, space: &vma::SpaceStats) -> FaultStats {
        FaultStats::collect(&self.counters, (&self.waits, &self.share_waits), space)
    }

    /// Counts a fault's outcome in the statistics.
    pub fn count(&self, result: Result<Fault, FaultError>) {
        self.counters.bump(match result {
            Ok(Fault::Installed) => Counter::Installed,
            Ok(Fault::AlreadyMapped) => Counter::AlreadyMapped,
            Err(FaultError::NotMapped) => Counter::NotMapped,
            Err(FaultError::AccessDenied) => Counter::AccessDenied,
            Err(FaultError::OutOfMemory) => Counter::OutOfMemory,
            Err(FaultError::BusError) => Counter::BusError,
        });
    }

    /// Decides what the entry of `page` must become for an `access` through `mapping` and
    /// installs it, until the page is resolved or its file page must be read in (blocking: see
    /// [`Memory::read_in`]).
    ///
    /// The caller holds `guard` (the page-table walk may meet tables being freed) and makes
    /// sure that `mapping` covers `page` and permits `access` (see [`allows`](crate::allows)), and that no
    /// writer flushes `page` (zap, protect) until this returns, or at least not before a grace
    /// period of the domain `guard` belongs to: it holds the lock that writers take, a
    /// reference writers wait for, or an RCU guard writers wait for before flushing. Otherwise
    /// a translation of a removed mapping may survive (a logic error, not memory unsafety: the
    /// frame stays referenced).
    #[inline]
    pub fn settle(
        &self,
        mapping: &Mapping,
        page: u64,
        access: Access,
        guard: &Guard<'_, DefaultRcu>,
    ) -> Result<Progress, FaultError> {
        debug_assert!(page < ADDRESS_LIMIT && page % PAGE_SIZE == 0);
        debug_assert!(mapping.start <= page && page < mapping.end);
        let huge = mapping.page_size();
        // Only a private mapping (fork copies it) or a shared hugetlb one (unsharing) is fenced.
        if self.fenced && (!mapping.shared || huge > PAGE_SIZE) && self.fence.covers(page) {
            return Ok(Progress::Fenced);
        }
        // A mapping of huge pages: one entry maps the huge page around `page`, in a page table
        // shared with other address spaces where they map the same 1 GiB of the file.
        let page = page & !(huge - 1);
        if huge == PAGE_SIZE {
            return self.settle_entry(mapping, (page, access), self.table.entry_or_insert(page), guard);
        }
        let file = File::of(mapping);
        // Under `FileSync::RwSem`, a hugetlb fault holds the file's lock shared from the walk
        // to the install, its share lookup included (Linux 5.7 to 5.19, c0d0381).
        let mut fault_waited = None;
        let _whole_fault = file.and_then(|file| {
            file.lock_for_fault(|waited| {
                self.record_wait(waited);
                fault_waited = Some(waited);
            })
        });
        let entry = if let Some(entry) = self.table.huge_entry(page) {
            entry
        } else {
            // No level-2 table here yet: link a shared one if the mapping allows, else build.
            if let Some(file) = file {
                self.try_share(mapping, page, file, fault_waited);
            }
            self.table.huge_entry_or_insert(page)
        };
        self.settle_entry(mapping, (page, access), entry, guard)
    }

    /// [`Memory::settle`] once the entry of `page` is found.
    #[inline]
    fn settle_entry(
        &self,
        mapping: &Mapping,
        (page, access): (u64, Access),
        entry: &AtomicU64,
        guard: &Guard<'_, DefaultRcu>,
    ) -> Result<Progress, FaultError> {
        loop {
            match self.attempt(mapping, page, access, entry, guard.domain())? {
                Attempt::Done(fault) => return Ok(Progress::Done(fault)),
                Attempt::Blocking(pgoff) => return Ok(Progress::Blocking(pgoff)),
                Attempt::Again => self.counters.bump(Counter::Retries),
            }
        }
    }

    /// The slow path after [`Memory::settle`] answered [`Progress::Blocking`]: brings the file
    /// page into the file's page cache with no guard held (it may block, and waits while a
    /// truncate or hole punch covers the page), then settles under a guard of `rcu`, reading
    /// again if the page left the cache meanwhile. The caller keeps `mapping` valid throughout
    /// as for `settle` (a VMA reference, or a lock held across the read).
    pub fn read_in(
        &self,
        mapping: &Mapping,
        page: u64,
        access: Access,
        mut pgoff: u64,
        rcu: &DefaultRcu,
    ) -> Result<Fault, FaultError> {
        let VmaBacking::File(object) = &mapping.backing else {
            unreachable!("only file pages block");
        };
        let file = file_of(object);
        loop {
            // The turn keeps the next invalidation from taking the page away before it is
            // installed.
            let turn = file.read_in(pgoff, |waited| self.record_wait(waited))?;
            let guard = Guard::new(rcu);
            let progress = self.settle(mapping, page, access, &guard);
            drop(guard);
            drop(turn);
            match progress? {
                Progress::Done(fault) => return Ok(fault),
                // The page left the cache before we installed it: read it in again.
                Progress::Blocking(again) => pgoff = again,
                Progress::Fenced => self.wait_for_fence(page),
            }
        }
    }

    /// One decision: what the entry must become, prepared and installed with one
    /// compare-and-swap. The new anonymous page is the straight line; changing a present entry
    /// and mapping a file page are out of line, so that the common fault carries none of their
    /// work.
    #[inline]
    fn attempt(
        &self,
        mapping: &Mapping,
        page: u64,
        access: Access,
        entry: &AtomicU64,
        rcu: &DefaultRcu,
    ) -> Result<Attempt, FaultError> {
        // Acquire pairs with the Release of the CAS that installed the entry: the frame's
        // contents are visible.
        let current = Pte(entry.load(Ordering::Acquire));
        if current.guard() {
            return Err(FaultError::NotMapped);
        }
        let write = access == Access::Write;
        if current.readable() && (!write || current.writable()) {
            return Ok(Attempt::Done(Fault::AlreadyMapped));
        }
        if current.present() {
            return self.change_present(mapping, (page, write), entry, current, rcu);
        }
        let writable = if mapping.prot.write { WRITABLE } else { 0 };
        let dirty = if write { DIRTY | ACCESSED } else { ACCESSED };
        let frame = match &mapping.backing {
            VmaBacking::Anonymous => {
                let frame = if self.zero_fill {
                    self.frames.alloc_zeroed()
                } else {
                    self.frames.alloc()
                };
                frame.ok_or(FaultError::OutOfMemory)?
            }
            VmaBacking::File(object) => {
                return self.map_file_page(
                    mapping,
                    page,
                    write,
                    writable | dirty,
                    file_of(object),
                    entry,
                    current,
                );
            }
        };
        Ok(
            if self.install(entry, current, Pte::new(frame, PRIVATE | writable | dirty), frame) {
                Attempt::Done(Fault::Installed)
            } else {
                Attempt::Again
            },
        )
    }

    /// An access that a present entry does not allow but `mapping` does: restore access (after
    /// mprotect back from PROT_NONE), allow a write to a page that is already the mapping's, or
    /// copy a file page on write in a private mapping.
    #[inline(never)]
    fn change_present(
        &self,
        mapping: &Mapping,
        (page, write): (u64, bool),
        entry: &AtomicU64,
        current: Pte,
        rcu: &DefaultRcu,
    ) -> Result<Attempt, FaultError> {
        // A write-notify fault's section of the file, held until its entry is updated.
        let mut dirtying = None;
        let updated = if !current.readable() {
            // The mapping allows access again (mprotect back from PROT_NONE).
            current.with(0, NO_ACCESS)
        } else if current.private() && self.frames.shared(current.frame()) {
            // Copy-on-write of a private page another address space shares since fork (a
            // fence kept fork from sharing it between this check and the install). Readers of
            // the old translation may still copy through it: its reference goes back a grace
            // period later.
            let copy = self.copy_of(current.frame())?;
            let new = Pte::new(copy, PRIVATE | WRITABLE | DIRTY | ACCESSED);
            return Ok(if self.install(entry, current, new, copy) {
                let size = current.frame().size() as u64;
                self.release_later(vec![current.frame()], (page, page + size), rcu);
                Attempt::Done(Fault::Installed)
            } else {
                Attempt::Again
            });
        } else if current.private() {
            // A write to a page that is already this mapping's alone: allow it in place.
            current.with(WRITABLE | DIRTY, 0)
        } else if mapping.shared && current.huge() {
            // Allowed again after mprotect: hugetlb pages are never written back, so their
            // shared translations are writable from the first fault.
            current.with(WRITABLE | DIRTY, 0)
        } else if mapping.shared {
            // A write to a shared file page mapped read-only (write-notify): the page cache
            // marks it dirty before the write can land, while it still caches this frame, and
            // the entry becomes writable inside the same section of the file, so a writeback
            // that takes the dirty mark waits for it before it write-protects the page.
            let file = File::of(mapping).expect("shared mappings map files");
            let pgoff = mapping.pgoff + ((page - mapping.start) >> vma::PAGE_SHIFT);
            let guard = dirtying.insert(file.guard_at(pgoff));
            if !file.mark_dirty(pgoff, current.frame(), guard) {
                // Leaving the cache: its invalidation removes this entry; wait for it to end
                // (on the slow path, with no guard held) and map the page again.
                return Ok(Attempt::Blocking(pgoff));
            }
            current.with(WRITABLE | DIRTY, 0)
        } else {
            // Copy-on-write of a file page in a private mapping.
            let copy = self.copy_of(current.frame())?;
            let new = Pte::new(copy, PRIVATE | WRITABLE | DIRTY | ACCESSED);
            return Ok(if self.install(entry, current, new, copy) {
                // SAFETY: the old entry's reference; the file's page cache still holds the
                // frame (the mapping, alive under our guard or reference, holds the file).
                unsafe { self.frames.put(current.frame()) };
                Attempt::Done(Fault::Installed)
            } else {
                Attempt::Again
            });
        };
        // Release pairs with the Acquire of readers of the entry.
        let swapped = entry.compare_exchange(current.0, updated.0, Ordering::AcqRel, Ordering::Relaxed);
        drop(dirtying);
        Ok(match swapped {
            Ok(_) if updated.readable() && (!write || updated.writable()) => Attempt::Done(Fault::Installed),
            _ => Attempt::Again,
        })
    }

    /// Installs a missing entry of a file mapping, inside a read-side section of the file keyed
    /// to the page (so that a truncate or hole punch of the page either waits for the install
    /// or is seen by it): the file's cached page with the flags the access `allowed` (a shared
    /// mapping), read-only (a read through a private mapping, copied when written later), or a
    /// private copy (a write through a private mapping). A bus error at or beyond the end of
    /// the file; the page to read in first when it is not cached.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn map_file_page(
        &self,
        mapping: &Mapping,
        page: u64,
        write: bool,
        allowed: u64,
        file: &File,
        entry: &AtomicU64,
        current: Pte,
    ) -> Result<Attempt, FaultError> {
        let pgoff = mapping.pgoff + ((page - mapping.start) >> vma::PAGE_SHIFT);
        // A hugetlb fault holds it from the start (`settle`).
        let shared = (!file.is_hugetlb())
            .then(|| file.lock_for_fault(|waited| self.record_wait(waited)))
            .flatten();
        let guard = file.guard_at(pgoff);
        let cached = match file.lookup(pgoff, &guard) {
            Lookup::Cached(frame) => frame,
            Lookup::Missing if file.is_hugetlb() && !mapping.shared => {
                // Linux's hugetlb_no_page: a private page of its own, not added to the cache
                // (installed inside the file's section: a truncate removes it too).
                let frame = self.frames.alloc_huge().ok_or(FaultError::BusError)?;
                let installed = self.install(entry, current, Pte::new(frame, PRIVATE | allowed), frame);
                return Ok(if installed {
                    Attempt::Done(Fault::Installed)
                } else {
                    Attempt::Again
                });
            }
            Lookup::Missing | Lookup::Invalidating => return Ok(Attempt::Blocking(pgoff)),
            Lookup::Beyond => return Err(FaultError::BusError),
        };
        let (frame, flags) = if mapping.shared && file.is_hugetlb() {
            // Never written back: writable from the first fault, as the mapping allows.
            (cached, allowed)
        } else if mapping.shared && write {
            if !file.mark_dirty(pgoff, cached, &guard) {
                // SAFETY: our reference on the cached page, not installed.
                unsafe { self.frames.put(cached) };
                // Leaving the cache: wait for its invalidation on the slow path.
                return Ok(Attempt::Blocking(pgoff));
            }
            (cached, allowed)
        } else if mapping.shared {
            // Read-only until the first write, which marks the page dirty (write-notify).
            (cached, allowed & !WRITABLE)
        } else if write {
            let copy = self.copy_of(cached);
            // SAFETY: our reference on the cached page, no longer used; the page cache holds
            // its own.
            unsafe { self.frames.put(cached) };
            (copy?, PRIVATE | allowed)
        } else {
            (cached, allowed & !WRITABLE)
        };
        let installed = self.install(entry, current, Pte::new(frame, flags), frame);
        #[cfg(any(debug_assertions, feature = "shuttle"))]
        if installed && self.fenced && file.is_hugetlb() && mapping.shared {
            self.check_still_linked(page, entry);
        }
        drop(guard);
        drop(shared);
        Ok(if installed {
            Attempt::Done(Fault::Installed)
        } else {
            Attempt::Again
        })
    }

    /// A new frame holding a copy of `page` (copy-on-write), with one reference for the caller;
    /// a huge frame for a huge one (a bus error when none is free, as Linux's hugetlb copy on
    /// write answers SIGBUS).
    fn copy_of(&self, page: Frame) -> Result<Frame, FaultError> {
        let frames = &self.frames;
        let copy = if page.is_huge() {
            frames.alloc_huge().ok_or(FaultError::BusError)?
        } else {
            frames.alloc().ok_or(FaultError::OutOfMemory)?
        };
        frames.copy(page, copy);
        Ok(copy)
    }

    /// Replaces `current` with `new`, which carries a reference on `frame`; on failure gives
    /// the reference back.
    fn install(&self, entry: &AtomicU64, current: Pte, new: Pte, frame: Frame) -> bool {
        // Release pairs with the Acquire of readers of the entry: the frame's contents (zeroed
        // or copied) are visible before the translation is.
        if entry
            .compare_exchange(current.0, new.0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return true;
        }
        // SAFETY: the reference was for the entry, which was never published.
        unsafe { self.frames.put(frame) };
        false
    }

    /// Copies `buf.len()` bytes from `addr` as a CPU would: through the translations under a
    /// guard of `rcu`, calling `fault` where a page is missing or does not allow the access.
    pub fn read(
        &self,
        addr: u64,
        buf: &mut [u8],
        rcu: &DefaultRcu,
        fault: impl FnMut(u64, Access) -> Result<Fault, FaultError>,
    ) -> Result<(), AccessError> {
        self.access(
            addr,
            buf.len(),
            Access::Read,
            rcu,
            fault,
            |frame, offset, at, len| {
                self.frames.read(frame, offset, &mut buf[at..at + len]);
            },
        )
    }

    /// Copies `data` to `addr` as a CPU would (see [`Memory::read`]).
    pub fn write(
        &self,
        addr: u64,
        data: &[u8],
        rcu: &DefaultRcu,
        fault: impl FnMut(u64, Access) -> Result<Fault, FaultError>,
    ) -> Result<(), AccessError> {
        self.access(
            addr,
            data.len(),
            Access::Write,
            rcu,
            fault,
            |frame, offset, at, len| {
                self.frames.write(frame, offset, &data[at..at + len]);
            },
        )
    }

    /// Walks `[addr, addr + len)` page by page: translate under a guard and `copy(frame, offset
    /// in frame, offset in buffer, length)`, or fault and try again.
    fn access(
        &self,
        addr: u64,
        len: usize,
        access: Access,
        rcu: &DefaultRcu,
        mut fault: impl FnMut(u64, Access) -> Result<Fault, FaultError>,
        mut copy: impl FnMut(Frame, usize, usize, usize),
    ) -> Result<(), AccessError> {
        let mut done = 0;
        while done < len {
            let at = addr.checked_add(done as u64).ok_or(AccessError {
                addr: u64::MAX,
                error: FaultError::NotMapped,
            })?;
            let chunk = (FRAME_SIZE - (at % PAGE_SIZE) as usize).min(len - done);
            loop {
                // Keyed at the address: only the translation of `at` is read.
                let guard = Guard::keyed(rcu, Keys::one(at));
                if at < ADDRESS_LIMIT
                    && let Some(pte) = self.table.translate(at)
                    && pte.readable()
                    && (access == Access::Read || pte.writable())
                {
                    // The guard keeps the frame: a removed translation's reference is put only
                    // after a grace period. A writer revoking the translation waits for this
                    // guard before it returns (step 8 of the protocol), however long the copy
                    // takes (under shuttle, it may be preempted here).
                    maple::sync::preemption_point();
                    let offset = (at % pte.frame().size() as u64) as usize;
                    copy(pte.frame(), offset, done, chunk);
                    break;
                }
                drop(guard);
                fault(at, access).map_err(|error| AccessError { addr: at, error })?;
            }
            done += chunk;
        }
        Ok(())
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // Nobody else can walk the table now: put the frames of the remaining translations and
        // give the shared tables back. The tables stay linked: the page table frees them when
        // dropped.
        let frames = self.table.clear(0, ADDRESS_LIMIT);
        // SAFETY: each is a removed translation's reference, and no reader is left.
        unsafe { self.frames.put_many(&frames) };
        for (_, table) in self.table.take_unshared() {
            let shares = self.shares.get_mut().unwrap_or_else(|e| e.into_inner());
            let (registry, _) = shares.get(&table).expect("a linked shared table is recorded");
            registry.release(table);
        }
    }
}

pub(crate) fn einval(reason: &'static str) -> Error {
    Error::new(Errno::EINVAL, reason)
}
