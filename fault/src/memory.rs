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

use crate::backing::{File, MemBacking};
use crate::frames::{FRAME_SIZE, Frame, FramePool};
use crate::pagetable::{ADDRESS_LIMIT, PageTable};
use crate::stats::{Counters, WaitClock, Waits};
use maple::rcu::{DefaultRcu, DropBox, Keys, Rcu};
use std::sync::Arc;
use vma::{Errno, Error, MapFlags, MappedFile, Prot};

/// What a file mapping maps: the object and the byte offset in it (`None` for anonymous
/// memory), as [`vma::AddressSpace::mmap`] takes it.
pub type MappedObject = Option<(Arc<dyn MappedFile>, u64)>;

/// A page table and the frames behind it (see the module documentation).
pub struct Memory {
    pub(crate) table: PageTable,
    pub(crate) frames: Arc<FramePool>,
    pub(crate) zero_fill: bool,
    pub(crate) counters: Counters,
    pub(crate) waits: WaitClock,
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

    /// Removes the translations of `[start, end)` and releases their frames after a grace
    /// period; frees page tables lying wholly inside `free_tables` (see
    /// [`vma::FlushHook::zap`]). The caller makes sure no fault installs into the range
    /// meanwhile. Returns whether a translation was removed (revoked: see [`vma::Revoked`]).
    pub fn zap(&self, start: u64, end: u64, free_tables: (u64, u64), rcu: &DefaultRcu) -> bool {
        let frames = self.table.zap(start, end, free_tables, rcu);
        let revoked = !frames.is_empty();
        self.release_later(frames, (start, end), rcu);
        revoked
    }

    /// Makes the translations of `[start, end)` allow no more than `prot`; returns whether one
    /// lost a permission.
    pub fn protect(&self, start: u64, end: u64, prot: Prot) -> bool {
        self.table.protect(start, end, readable(prot), prot.write)
    }

    /// Moves the translations of `[from, from + len)` to `[to, to + len)`; returns whether one
    /// moved (and so was revoked at its old address).
    pub fn relocate(&self, from: u64, to: u64, len: u64) -> bool {
        self.table.relocate(from, to, len)
    }

    /// Drops the pages of `[start, end)` (MADV_DONTNEED), releasing their frames after a grace
    /// period. Faults may run meanwhile: they install again. Returns whether a translation was
    /// removed.
    pub fn clear(&self, start: u64, end: u64, rcu: &DefaultRcu) -> bool {
        let frames = self.table.clear(start, end);
        let revoked = !frames.is_empty();
        self.release_later(frames, (start, end), rcu);
        revoked
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
        if flags.anonymous {
            // Linux checks the offset, then ignores it (and the file).
            if file.is_some_and(|(_, offset)| offset % FRAME_SIZE as u64 != 0) {
                return Err(einval("offset not page aligned"));
            }
            if !flags.shared {
                return Ok((flags, None));
            }
            // Linux's default overcommit heuristic refuses an object larger than memory.
            let memory = self.frames.config().max_frames as u64 * FRAME_SIZE as u64;
            if len > memory {
                return Err(Error::new(Errno::ENOMEM, "longer than the frame pool"));
            }
            let shmem = MemBacking::zeroed("/dev/zero (deleted)", &self.frames, len)?;
            let flags = MapFlags {
                anonymous: false,
                ..flags
            };
            let object: Arc<dyn MappedFile> = File::new(Arc::new(shmem));
            return Ok((flags, Some((object, 0))));
        }
        let object = match file {
            Some((file, offset)) => {
                if !Arc::ptr_eq(file.backing().frames(), &self.frames) {
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

impl Drop for Memory {
    fn drop(&mut self) {
        // Nobody else can walk the table now: put the frames of the remaining translations.
        // The tables stay linked: the page table frees them when dropped.
        let frames = self.table.clear(0, ADDRESS_LIMIT);
        // SAFETY: each is a removed translation's reference, and no reader is left.
        unsafe { self.frames.put_many(&frames) };
    }
}

/// The backing of a file mapping made through a [`Memory`] (it maps only [`File`]s, see
/// [`Memory::mapped_object`]).
pub(crate) fn backing_of(object: &Arc<dyn MappedFile>) -> &dyn crate::Backing {
    let any: &dyn std::any::Any = &**object;
    any.downcast_ref::<File>()
        .expect("a Memory maps only fault::File objects")
        .backing()
}

pub(crate) fn einval(reason: &'static str) -> Error {
    Error::new(Errno::EINVAL, reason)
}

/// Whether `prot` lets a CPU read (x86: write and execute imply read).
pub(crate) fn readable(prot: Prot) -> bool {
    prot != Prot::NONE
}
