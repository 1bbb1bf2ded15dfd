//! [`PageCache`]: the safe building block of a [`Backing`](crate::Backing)'s page cache — a
//! sparse index from page offset to a frame of the pool, holding one reference per cached frame
//! and giving them back when dropped, so that an implementer never counts references by hand.
//!
//! Invariants:
//! - A page's entry is set once, with a compare-and-swap (Release, pairing with the Acquire of
//!   lookups: the frame's contents are visible before its number is), and cleared only when the
//!   cache is dropped: while cached, a page is always the same frame (shared mappings write
//!   there, and every mapping sees those writes).
//! - Each present entry holds one reference on its frame; every frame handed out carries one
//!   more, for the caller.
//! - The index is a radix tree laid out as the page table (lookups without locks, tables
//!   allocated on first use, so it costs only what is cached); its tables are never unlinked
//!   before the cache is dropped, so lookups need no guard.

use crate::frames::{FRAME_SIZE, Frame, FramePool};
use crate::pagetable::{ADDRESS_LIMIT, PageTable, Pte};
use maple::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Why a backing (or its page cache) could not supply a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackingError {
    /// The page lies beyond the end of the object (a fault there is a bus error).
    OutsideObject,
    /// No frame was free to hold it.
    OutOfMemory,
}

/// The most pages a cache can index: 2^36 (256 TiB of 4 KiB pages).
pub const MAX_PAGES: u64 = ADDRESS_LIMIT / FRAME_SIZE as u64;

/// A page cache: page offset → frame, one reference held per cached page (see the module
/// documentation).
///
/// A backing of pages that read as their number, with no `unsafe` and no reference counting:
///
/// ```
/// use fault::{Backing, BackingError, Frame, FramePool, FramePoolConfig, PageCache};
/// use fault::{Access, File, MapFlags, Mm, MmConfig, PAGE_SIZE, Prot};
/// use std::sync::Arc;
///
/// #[derive(Debug)]
/// struct Numbers {
///     cache: PageCache,
/// }
///
/// impl Backing for Numbers {
///     fn name(&self) -> &str {
///         "/numbers"
///     }
///     fn pages(&self) -> u64 {
///         16
///     }
///     fn page_if_cached(&self, pgoff: u64) -> Option<Frame> {
///         self.cache.get(pgoff)
///     }
///     fn read_page(&self, pgoff: u64) -> Result<Frame, BackingError> {
///         let frames = self.cache.frames();
///         // Every byte of the page is written: nothing stale shows.
///         self.cache.get_or_fill(pgoff, |frame| frames.write(frame, 0, &[pgoff as u8; 4096]))
///     }
///     fn frames(&self) -> &Arc<FramePool> {
///         self.cache.frames()
///     }
/// }
///
/// let frames = Arc::new(FramePool::new(FramePoolConfig::default()).unwrap());
/// let mm = Mm::new(MmConfig::default(), frames.clone()).unwrap();
/// let file = File::new(Arc::new(Numbers { cache: PageCache::new(&frames) }));
/// let a = mm.mmap(0, 16 * PAGE_SIZE, Prot::READ, MapFlags::PRIVATE, Some((&file, 0))).unwrap();
/// let mut byte = [0];
/// mm.read(a + 5 * PAGE_SIZE, &mut byte).unwrap();
/// assert_eq!(byte, [5]);
/// mm.munmap(a, 16 * PAGE_SIZE).unwrap();
/// drop(file);
/// mm.barrier();
/// assert_eq!(frames.in_use(), 0, "the cache gave its frames back when dropped");
/// ```
pub struct PageCache {
    frames: Arc<FramePool>,
    index: PageTable,
    cached: AtomicUsize,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache")
            .field("cached_pages", &self.cached_pages())
            .finish_non_exhaustive()
    }
}

impl PageCache {
    /// An empty cache whose frames come from `frames`.
    pub fn new(frames: &Arc<FramePool>) -> Self {
        Self {
            frames: frames.clone(),
            index: PageTable::new(),
            cached: AtomicUsize::new(0),
        }
    }

    /// The pool the frames come from.
    pub fn frames(&self) -> &Arc<FramePool> {
        &self.frames
    }

    /// Pages cached so far.
    pub fn cached_pages(&self) -> usize {
        self.cached.load(Ordering::Relaxed)
    }

    /// The frame of page `pgoff` if it is cached, without taking a reference (for reading its
    /// contents while the cache is alive, as `pread` does).
    pub fn peek(&self, pgoff: u64) -> Option<Frame> {
        if pgoff >= MAX_PAGES {
            return None;
        }
        // Acquire pairs with the Release of the CAS in `get_or_fill`.
        let entry = Pte(self
            .index
            .entry(pgoff * FRAME_SIZE as u64)?
            .load(Ordering::Acquire));
        entry.present().then(|| entry.frame())
    }

    /// The frame of page `pgoff` if it is cached, with one reference for the caller (give it
    /// to a translation, or return it from a [`Backing`](crate::Backing) method). Never blocks.
    pub fn get(&self, pgoff: u64) -> Option<Frame> {
        let frame = self.peek(pgoff)?;
        // The cache's own reference keeps the frame while the cache lives, and the caller
        // holds the cache.
        self.frames.get(frame);
        Some(frame)
    }

    /// The frame of page `pgoff`, cached now if it was not: a new frame is filled by `fill`
    /// and published, unless another thread published one first (then that one is returned
    /// and the new one goes back). With one reference for the caller. `OutsideObject` beyond
    /// [`MAX_PAGES`], `OutOfMemory` when the pool is exhausted.
    pub fn get_or_fill(&self, pgoff: u64, fill: impl FnOnce(Frame)) -> Result<Frame, BackingError> {
        if pgoff >= MAX_PAGES {
            return Err(BackingError::OutsideObject);
        }
        if let Some(frame) = self.get(pgoff) {
            return Ok(frame);
        }
        let frame = self.frames.alloc().ok_or(BackingError::OutOfMemory)?;
        fill(frame);
        let entry = self.index.entry_or_insert(pgoff * FRAME_SIZE as u64);
        // Release pairs with the Acquire in `peek`; AcqRel on success keeps the order.
        match entry.compare_exchange(0, Pte::new(frame, 0).0, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                self.cached.fetch_add(1, Ordering::Relaxed);
                // One reference for the cache (from alloc), one for the caller.
                self.frames.get(frame);
                Ok(frame)
            }
            Err(winner) => {
                // SAFETY: the frame was never published; this is its only reference.
                unsafe { self.frames.put(frame) };
                let winner = Pte(winner).frame();
                self.frames.get(winner);
                Ok(winner)
            }
        }
    }
}

impl Drop for PageCache {
    fn drop(&mut self) {
        let frames = self.index.clear(0, ADDRESS_LIMIT);
        // SAFETY: the cache's own references; translations hold their own.
        unsafe { self.frames.put_many(&frames) };
    }
}
