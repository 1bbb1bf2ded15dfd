//! The embeddable memory manager: an address space, its page table and the fault engine.
//!
//! Invariants:
//! - The page table changes in only two ways: faults install or upgrade entries (under an RCU
//!   guard or holding a VMA reference, for a usable VMA covering the page), and the address
//!   space's writers zap, protect and relocate entries through [`FlushHook`] at step 6 of the
//!   protocol, when no fault can install into the changed ranges (`madvise_dontneed` only
//!   clears entries, which faults tolerate).
//! - Every present entry holds one reference on its frame. A frame removed from an entry is
//!   put only after a grace period (retired to the space's RCU domain): readers copying through
//!   the old translation under a guard finish first.

use crate::backing::{Backing, File, MemBacking};
use crate::frames::{Frame, FramePool};
use crate::pagetable::{ADDRESS_LIMIT, PageTable, Pte};
use crate::stats::{Counters, FaultStats};
use maple::rcu::{DefaultRcu, DropBox, Rcu};
use std::sync::Arc;
use vma::{AddressSpace, Errno, Error, FlushHook, Layout, MapFlags, MappedFile, PAGE_SIZE, Prot, RemapFlags};

/// How an [`Mm`] is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmConfig {
    /// The address space's bounds (at most 48-bit addresses).
    pub layout: Layout,
    /// Zero-fill anonymous frames (off only to measure what zeroing costs: anonymous memory
    /// then shows whatever the frame held before).
    pub zero_fill: bool,
}

impl Default for MmConfig {
    fn default() -> Self {
        Self {
            layout: Layout::X86_64,
            zero_fill: true,
        }
    }
}

/// The page table and the pool its frames come from, shared by the engine and the flush hook.
pub(crate) struct Translations {
    pub(crate) table: PageTable,
    pub(crate) frames: Arc<FramePool>,
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

impl Translations {
    /// Puts `list` back after a grace period of `rcu`.
    pub(crate) fn release_later(&self, list: Vec<Frame>, rcu: &DefaultRcu) {
        if list.is_empty() {
            return;
        }
        let released = Box::into_raw(Box::new(Released {
            frames: self.frames.clone(),
            list,
        }));
        // SAFETY: the box is reachable only through this pointer, which is retired once;
        // DropBox frees what came from Box::into_raw.
        unsafe { rcu.retire::<Released, DropBox>(released) };
    }
}

/// The page table's side of the replacement protocol.
struct Hook(Arc<Translations>);

impl FlushHook for Hook {
    fn zap(&self, start: u64, end: u64, free_tables: (u64, u64), rcu: &DefaultRcu) {
        let frames = self.0.table.zap(start, end, free_tables, rcu);
        self.0.release_later(frames, rcu);
    }

    fn protect(&self, start: u64, end: u64, prot: Prot, _rcu: &DefaultRcu) {
        self.0.table.protect(start, end, readable(prot), prot.write);
    }

    fn relocate(&self, from: u64, to: u64, len: u64, _rcu: &DefaultRcu) {
        self.0.table.relocate(from, to, len);
    }
}

/// Whether `prot` lets a CPU read (x86: write and execute imply read).
pub(crate) fn readable(prot: Prot) -> bool {
    prot != Prot::NONE
}

/// An address space with memory behind it: map, fault, read and write, with Linux-like results.
/// Faults find their VMA without any lock (see [`Mm::fault`]); mmap, munmap, mprotect, mremap
/// and brk go through the VMA layer's replacement protocol, whose flush step zaps, protects or
/// moves this manager's translations.
pub struct Mm {
    pub(crate) space: AddressSpace,
    pub(crate) translations: Arc<Translations>,
    pub(crate) zero_fill: bool,
    pub(crate) counters: Counters,
}

impl std::fmt::Debug for Mm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mm")
            .field("space", &self.space)
            .field("frames_in_use", &self.translations.frames.in_use())
            .field("page_tables", &self.translations.table.tables())
            .finish_non_exhaustive()
    }
}

fn einval(reason: &'static str) -> Error {
    Error::new(Errno::EINVAL, reason)
}

impl Mm {
    /// An empty memory manager whose frames come from `frames`.
    pub fn new(config: MmConfig, frames: Arc<FramePool>) -> vma::Result<Self> {
        if config.layout.high > ADDRESS_LIMIT {
            return Err(einval("the layout exceeds the 48-bit page table"));
        }
        let translations = Arc::new(Translations {
            table: PageTable::new(),
            frames,
        });
        Ok(Self {
            space: AddressSpace::new(config.layout, Hook(translations.clone()))?,
            translations,
            zero_fill: config.zero_fill,
            counters: Counters::new(),
        })
    }

    /// Breaks the VMA layer's protocol by skipping `step` (shuttle builds only; for tests that
    /// must fail).
    #[cfg(feature = "shuttle")]
    #[doc(hidden)]
    pub fn break_protocol(&mut self, step: vma::BrokenStep) {
        self.space.break_protocol(step);
    }

    /// The address space (VMAs, `maps()`, lookups).
    pub fn space(&self) -> &AddressSpace {
        &self.space
    }

    /// The pool frames come from (create file backings with it).
    pub fn frames(&self) -> &Arc<FramePool> {
        &self.translations.frames
    }

    /// Page-table pages below the root.
    pub fn page_tables(&self) -> usize {
        self.translations.table.tables()
    }

    /// The translation of `addr`, if one is present.
    pub fn translation(&self, addr: u64) -> Option<Pte> {
        if addr >= ADDRESS_LIMIT {
            return None;
        }
        let _guard = self.space.guard();
        self.translations.table.translate(addr)
    }

    /// Statistics so far.
    pub fn stats(&self) -> FaultStats {
        FaultStats::collect(&self.counters, self.space.stats())
    }

    /// Waits until frames and page tables released so far are back in the pool (they go back
    /// a grace period after they were removed). For tests and teardown.
    pub fn barrier(&self) {
        self.space.rcu().barrier();
    }

    /// Maps memory (see [`AddressSpace::mmap`]). `file` is the object and byte offset of a
    /// file mapping; MAP_SHARED | MAP_ANONYMOUS gets a new zero-filled shared object.
    pub fn mmap(
        &self,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        file: Option<(&Arc<File>, u64)>,
    ) -> vma::Result<u64> {
        let object: Option<(Arc<dyn MappedFile>, u64)> = if flags.anonymous && flags.shared {
            let len = usize::try_from(len)
                .ok()
                .filter(|&len| len > 0 && len as u64 <= self.space.layout().high)
                .ok_or(einval("bad length"))?;
            let shmem = MemBacking::zeroed("/dev/zero (deleted)", self.frames(), len);
            let flags = MapFlags {
                anonymous: false,
                ..flags
            };
            return self.space.mmap(
                addr,
                len as u64,
                prot,
                flags,
                Some((File::new(Arc::new(shmem)), 0)),
            );
        } else if flags.anonymous {
            None
        } else {
            match file {
                Some((file, offset)) => {
                    if !Arc::ptr_eq(file.backing().frames(), self.frames()) {
                        return Err(einval("the file caches its pages in another frame pool"));
                    }
                    Some((file.clone(), offset))
                }
                None => None,
            }
        };
        self.space.mmap(addr, len, prot, flags, object)
    }

    /// Unmaps `[addr, addr + len)`; its translations are gone when this returns.
    pub fn munmap(&self, addr: u64, len: u64) -> vma::Result<()> {
        self.space.munmap(addr, len)
    }

    /// Changes permissions; removing write permission write-protects the translations, removing
    /// all access hides them (the contents stay).
    pub fn mprotect(&self, addr: u64, len: u64, prot: Prot) -> vma::Result<()> {
        self.space.mprotect(addr, len, prot)
    }

    /// Resizes or moves a mapping; moved contents move with it.
    pub fn mremap(
        &self,
        old: u64,
        old_len: u64,
        new_len: u64,
        flags: RemapFlags,
        new_addr: u64,
    ) -> vma::Result<u64> {
        self.space.mremap(old, old_len, new_len, flags, new_addr)
    }

    /// Moves the program break (see [`AddressSpace::brk`]).
    pub fn brk(&self, addr: u64) -> u64 {
        self.space.brk(addr)
    }

    /// Sets where the heap starts (see [`AddressSpace::set_heap_start`]).
    pub fn set_heap_start(&self, start: u64) -> vma::Result<()> {
        self.space.set_heap_start(start)
    }

    /// MADV_DONTNEED: drops the pages of `[addr, addr + len)`; anonymous memory reads zero
    /// afterwards, private file mappings show the file again. As Linux: EINVAL for an unaligned
    /// address or a range beyond the space, ENOMEM (after dropping the mapped part) when part
    /// of the range is unmapped; a zero length does nothing.
    pub fn madvise_dontneed(&self, addr: u64, len: u64) -> vma::Result<()> {
        if addr % PAGE_SIZE != 0 {
            return Err(einval("address not page aligned"));
        }
        if len == 0 {
            return Ok(());
        }
        let end = len
            .checked_next_multiple_of(PAGE_SIZE)
            .and_then(|len| addr.checked_add(len))
            .filter(|&end| end <= self.space.layout().high)
            .ok_or(einval("range beyond the address space"))?;
        let guard = self.space.guard();
        let mut at = addr;
        let mut frames = Vec::new();
        for vma in self.space.iter_from(addr, &guard) {
            if vma.start() >= end || vma.start() > at {
                break;
            }
            let upto = vma.end().min(end);
            frames.extend(self.translations.table.clear(at, upto));
            at = upto;
        }
        drop(guard);
        self.translations.release_later(frames, self.space.rcu());
        if at < end {
            return Err(Error::new(Errno::ENOMEM, "part of the range is unmapped"));
        }
        Ok(())
    }
}

impl Drop for Mm {
    fn drop(&mut self) {
        // Nobody else can walk the table now: put the frames of the remaining translations.
        let everything = (0, ADDRESS_LIMIT);
        let frames = self
            .translations
            .table
            .zap(0, ADDRESS_LIMIT, everything, self.space.rcu());
        // SAFETY: each is a removed translation's reference, and no reader is left.
        unsafe { self.translations.frames.put_many(&frames) };
    }
}

/// The backing of a file mapping made by an [`Mm`] (it maps only [`File`]s).
pub(crate) fn backing_of(object: &Arc<dyn MappedFile>) -> &dyn Backing {
    let any: &dyn std::any::Any = &**object;
    any.downcast_ref::<File>()
        .expect("an Mm maps only fault::File objects")
        .backing()
}
