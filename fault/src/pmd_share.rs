//! PMD sharing: the level-2 page tables (512 huge entries, 1 GiB) that address spaces mapping
//! the same hugetlb file pages share (Linux's `huge_pmd_share`), and their lifetime.
//!
//! Invariants:
//! - A file's [`Registry`] owns every shared table made for it. A table is **live** (new
//!   sharers get it) from its creation until an invalidation (truncate, hole punch) covers any
//!   of its pages; after that no page table links it anew, so no sharer ever sees a
//!   translation the invalidation removed.
//! - A table's sharer count is the number of page tables that link it or are about to (an
//!   address space counts one per link). A page table that unlinks it (unshares: any range
//!   operation over it, see `PageTable::take_unshared`) gives its count back only a grace period
//!   of its own domain later, so when the count reaches zero no page table links the table and
//!   no walker of any of them can be inside: it is freed then, with the frames its entries held.
//! - An address space links a table only for a 1 GiB-aligned range that one shared mapping
//!   covers whole, at a file offset aligned to 1 GiB, keyed by the mapping's permissions (so
//!   every translation in it is one each sharer's mapping allows), and only inside a read-side
//!   section of the file keyed to the table's pages with no invalidation of them running: an
//!   invalidation either waits for the link and then unshares it, or is seen and no link made.
//! - **No fault installs through a table its address space no longer links.** Unsharing under
//!   the VMA protocol (munmap, mprotect, mremap) runs when no fault of the displaced VMA is
//!   left, and a shared table lies wholly inside one VMA. Unsharing outside it (MADV_DONTNEED,
//!   a file's invalidation) first fences the 1 GiB spans it covers (`fence::FaultFence`): a
//!   fault in those spans either began before, and has installed before the table is
//!   unlinked, or sees the fence and waits, its guard dropped, until the unsharing ends.

use crate::frames::FramePool;
use crate::pagetable::{SHARED_SPAN, SharedTable};
use maple::sync::Mutex;
use std::sync::{Arc, TryLockError};
use std::time::{Duration, Instant};
use vma::{PAGE_SIZE, Prot};

/// 4 KiB pages one shared table covers.
pub(crate) const SPAN_PAGES: u64 = SHARED_SPAN / PAGE_SIZE;

/// The shared tables of one file.
pub(crate) struct Registry {
    frames: Arc<FramePool>,
    tables: Mutex<Vec<Entry>>,
}

struct Entry {
    /// Which 1 GiB of the file (its first page offset / [`SPAN_PAGES`]).
    span: u64,
    /// The permissions of the mappings that share it.
    prot: Prot,
    table: SharedTable,
    sharers: usize,
    live: bool,
}

impl Registry {
    pub(crate) fn new(frames: &Arc<FramePool>) -> Self {
        Self {
            frames: frames.clone(),
            tables: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> maple::sync::MutexGuard<'_, Vec<Entry>> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live table of 1 GiB `span` for mappings with `prot`, counted for one more sharer; a
    /// new, empty one when there is none. Calls `waited` with how long it blocked on the
    /// registry's lock when it had to.
    pub(crate) fn acquire(&self, span: u64, prot: Prot, waited: impl FnOnce(Duration)) -> SharedTable {
        let mut tables = match self.tables.try_lock() {
            Ok(tables) => tables,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => {
                let since = Instant::now();
                let tables = self.lock();
                waited(since.elapsed());
                tables
            }
        };
        if let Some(entry) = tables
            .iter_mut()
            .find(|e| e.live && e.span == span && e.prot == prot)
        {
            entry.sharers += 1;
            return entry.table;
        }
        let table = SharedTable::new();
        tables.push(Entry {
            span,
            prot,
            table,
            sharers: 1,
            live: true,
        });
        table
    }

    /// One sharer fewer for `table`; the last frees it and puts the frames its entries held.
    /// The caller's page table does not link it (any more), and no walker of it can be inside.
    pub(crate) fn release(&self, table: SharedTable) {
        let freed = {
            let mut tables = self.lock();
            let at = tables
                .iter()
                .position(|e| e.table == table)
                .expect("a shared table is released into its own registry");
            tables[at].sharers -= 1;
            (tables[at].sharers == 0).then(|| tables.swap_remove(at).table)
        };
        if let Some(table) = freed {
            // SAFETY: no page table links it and each former sharer waited for its walkers
            // (the module documentation); it came from `SharedTable::new` and leaves the
            // registry here, once.
            let frames = unsafe { table.free() };
            // SAFETY: the references the table's entries held; nothing can walk them.
            unsafe { self.frames.put_many(&frames) };
        }
    }

    /// Makes the tables covering any page of `[first, end)` no longer live: no page table
    /// links them anew (those that do keep them until they unshare).
    pub(crate) fn retire(&self, first: u64, end: u64) {
        let (first, end) = (first / SPAN_PAGES, end.div_ceil(SPAN_PAGES));
        for entry in self.lock().iter_mut() {
            if first <= entry.span && entry.span < end {
                entry.live = false;
            }
        }
    }

    /// Tables made for the file and not yet freed.
    pub(crate) fn tables(&self) -> usize {
        self.lock().len()
    }
}

/// One page table's part in a shared table: what the address space gives back a grace period
/// after it unshared (retired to its domain; the drop gives the count back).
pub(crate) struct Release {
    pub(crate) registry: Arc<Registry>,
    pub(crate) table: SharedTable,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.registry.release(self.table);
    }
}
