//! [`PageCache`]: a file's page cache — a sparse index from page offset to a frame of the
//! pool, holding one reference per cached frame.
//!
//! Invariants:
//! - A page's entry is set with a compare-and-swap (Release, pairing with the Acquire of
//!   lookups: the frame's contents are visible before its number is) and cleared only by
//!   [`PageCache::remove`], whose caller (the file's truncate and hole punch) first makes sure
//!   no lookup of those pages is running or can start (docs/files.md): while cached, a page is
//!   always the same frame (shared mappings write there, and every mapping sees those writes).
//! - Each present entry holds one reference on its frame; every frame handed out carries one
//!   more, for the caller.
//! - An entry's [`DIRTY`] bit says the frame may hold data its backing lacks. It is set (by
//!   compare-and-swap, on the entry still naming the frame) before any write reaches the
//!   frame — `write_at`, or a fault making a shared translation writable — and cleared only
//!   by writeback, before it copies the frame out, after write-protecting every shared
//!   translation of it. So a clean entry's frame equals the backing's page, and
//!   [`PageCache::remove_clean`] (a compare-and-swap from the clean entry) never drops data.
//! - The index is a radix tree laid out as the page table (lookups without locks, tables
//!   allocated on first use, so it costs only what is cached); its tables are never unlinked
//!   before the cache is dropped, so walking them needs no guard.

use crate::frames::{FRAME_SIZE, Frame, FramePool};
use crate::pagetable::{ADDRESS_LIMIT, DIRTY, PageTable, Pte};
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

    /// The frame of page `pgoff` if it is cached, with one reference for the caller. Never
    /// blocks.
    pub fn get(&self, pgoff: u64) -> Option<Frame> {
        let frame = self.peek(pgoff)?;
        // The cache's own reference keeps the frame while the cache lives, and the caller
        // holds the cache.
        self.frames.get(frame);
        Some(frame)
    }

    /// Caches `frame` (whose reference the cache takes) as page `pgoff`, unless another
    /// thread cached one first (then `frame` goes back to the pool). Returns the cached frame
    /// with one reference for the caller. `pgoff` must be below [`MAX_PAGES`].
    pub fn insert(&self, pgoff: u64, frame: Frame) -> Frame {
        let entry = self.index.entry_or_insert(pgoff * FRAME_SIZE as u64);
        // Release pairs with the Acquire in `peek`; AcqRel on success keeps the order.
        match entry.compare_exchange(0, Pte::new(frame, 0).0, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                self.cached.fetch_add(1, Ordering::Relaxed);
                // One reference for the cache (the caller's), one for the caller.
                self.frames.get(frame);
                frame
            }
            Err(winner) => {
                // SAFETY: the frame was never published; this is its only reference.
                unsafe { self.frames.put(frame) };
                let winner = Pte(winner).frame();
                self.frames.get(winner);
                winner
            }
        }
    }

    /// The entry of page `pgoff`, if its table exists.
    fn slot(&self, pgoff: u64) -> Option<&maple::sync::atomic::AtomicU64> {
        (pgoff < MAX_PAGES).then(|| self.index.entry(pgoff * FRAME_SIZE as u64))?
    }

    /// Marks page `pgoff` dirty, before a write to it, if the cache still holds `frame` there;
    /// false when the page has left the cache (or holds another frame).
    pub fn mark_dirty(&self, pgoff: u64, frame: Frame) -> bool {
        let Some(slot) = self.slot(pgoff) else {
            return false;
        };
        // AcqRel: ordered with writeback's clearing and eviction's removal of the entry.
        slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
            let entry = Pte(old);
            (entry.present() && entry.frame() == frame).then_some(old | DIRTY)
        })
        .is_ok()
    }

    /// Clears page `pgoff`'s dirty mark (writeback begins) and returns its frame if it was
    /// dirty.
    pub fn take_dirty(&self, pgoff: u64) -> Option<Frame> {
        let slot = self.slot(pgoff)?;
        // AcqRel as in `mark_dirty`.
        slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
            let entry = Pte(old);
            (entry.present() && old & DIRTY != 0).then_some(old & !DIRTY)
        })
        .ok()
        .map(|old| Pte(old).frame())
    }

    /// Takes page `pgoff` out of the cache if it is cached and clean, returning its frame with
    /// the cache's reference (put it once no lookup can still be using the frame).
    pub fn remove_clean(&self, pgoff: u64) -> Option<Frame> {
        let slot = self.slot(pgoff)?;
        // AcqRel as in `mark_dirty`: a page dirtied first stays.
        let old = slot
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                (Pte(old).present() && old & DIRTY == 0).then_some(0)
            })
            .ok()?;
        self.cached.fetch_sub(1, Ordering::Relaxed);
        Some(Pte(old).frame())
    }

    /// The cached pages of `[first, end)`, in order, each with whether it is dirty.
    pub fn cached_in(&self, first: u64, end: u64) -> Vec<(u64, bool)> {
        let to_address = |pgoff: u64| pgoff.min(MAX_PAGES) * FRAME_SIZE as u64;
        self.index
            .present(to_address(first), to_address(end))
            .into_iter()
            .map(|(addr, entry)| (addr / FRAME_SIZE as u64, entry.0 & DIRTY != 0))
            .collect()
    }

    /// Takes the pages of `[first, end)` out of the cache and returns their frames, each with
    /// the cache's reference (put it once no lookup can still be using the frame).
    pub fn remove(&self, first: u64, end: u64) -> Vec<Frame> {
        let to_address = |pgoff: u64| pgoff.min(MAX_PAGES) * FRAME_SIZE as u64;
        let frames = self.index.clear(to_address(first), to_address(end));
        self.cached.fetch_sub(frames.len(), Ordering::Relaxed);
        frames
    }
}

impl Drop for PageCache {
    fn drop(&mut self) {
        let frames = self.index.clear(0, ADDRESS_LIMIT);
        // SAFETY: the cache's own references; translations hold their own.
        unsafe { self.frames.put_many(&frames) };
    }
}
