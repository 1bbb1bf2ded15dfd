//! File-like objects that mappings map: the [`Backing`] trait the fault engine asks for pages,
//! [`MemBacking`] (an in-memory object with an optional delay per read, standing for I/O), and
//! [`File`], the object an [`crate::Mm`] maps.
//!
//! A backing keeps the pages it has read in frames of the memory manager's pool (its page
//! cache): `page_if_cached` hands one out without blocking (the fault fast path),
//! `read_page` brings one in and may block (the slow path, run without an RCU guard). Each call
//! returns the frame with one reference for the caller; the page cache holds its own until the
//! backing is dropped, so a frame lives as long as the cache or a translation needs it.

use crate::frames::{FRAME_SIZE, Frame, FramePool};
use maple::sync::Mutex;
use maple::sync::atomic::{AtomicU64, Ordering};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why a backing could not supply a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackingError {
    /// The page lies beyond the end of the object (a fault there is a bus error).
    OutsideObject,
    /// No frame was free to hold it.
    OutOfMemory,
}

/// A file-like object's pages, as the fault engine asks for them.
pub trait Backing: Send + Sync + fmt::Debug + 'static {
    /// The name `maps()` shows.
    fn name(&self) -> &str;

    /// The object's size in pages.
    fn pages(&self) -> u64;

    /// The frame holding page `pgoff` if it is in memory now, with one reference for the
    /// caller. Never blocks.
    fn page_if_cached(&self, pgoff: u64) -> Option<Frame>;

    /// Brings page `pgoff` into memory, blocking as long as that takes (I/O), and returns its
    /// frame with one reference for the caller.
    fn read_page(&self, pgoff: u64) -> Result<Frame, BackingError>;

    /// The pool the page cache's frames come from: the memory manager mapping the object must
    /// use the same one.
    fn frames(&self) -> &Arc<FramePool>;
}

/// An object in memory: its contents live in a byte store until a page is read into the page
/// cache, after which the cached frame is the page (shared mappings write there).
pub struct MemBacking {
    name: String,
    frames: Arc<FramePool>,
    /// The contents of pages not cached yet.
    store: Mutex<Vec<u8>>,
    /// Per page: 0 when not cached, else frame number + 1. Set once, with a compare-and-swap
    /// (Release, pairing with the Acquire of `page_if_cached`: the frame's contents are
    /// visible before its number is); cleared only when the backing is dropped.
    cache: Box<[AtomicU64]>,
    delay: Duration,
    reads: AtomicU64,
}

impl fmt::Debug for MemBacking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemBacking")
            .field("name", &self.name)
            .field("pages", &self.pages())
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

impl MemBacking {
    /// An object named `name` holding `contents` (its size rounded up to pages, zero-padded),
    /// caching pages in `frames`.
    pub fn new(name: impl Into<String>, frames: &Arc<FramePool>, contents: &[u8]) -> Self {
        let pages = contents.len().div_ceil(FRAME_SIZE);
        let mut store = contents.to_vec();
        store.resize(pages * FRAME_SIZE, 0);
        Self {
            name: name.into(),
            frames: frames.clone(),
            store: Mutex::new(store),
            cache: (0..pages).map(|_| AtomicU64::new(0)).collect(),
            delay: Duration::ZERO,
            reads: AtomicU64::new(0),
        }
    }

    /// A zero-filled object of `len` bytes (rounded up to pages).
    pub fn zeroed(name: impl Into<String>, frames: &Arc<FramePool>, len: usize) -> Self {
        Self::new(name, frames, &vec![0; len])
    }

    /// The same object, with every read into the page cache taking `delay` (standing for I/O).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Reads into the page cache so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Pages in the page cache.
    pub fn cached_pages(&self) -> usize {
        self.cache
            .iter()
            .filter(|slot| slot.load(Ordering::Relaxed) != 0)
            .count()
    }

    fn cached(&self, pgoff: u64) -> Option<Frame> {
        let slot = self.cache.get(usize::try_from(pgoff).ok()?)?;
        // Acquire pairs with the Release of the CAS in `read_page`.
        match slot.load(Ordering::Acquire) {
            0 => None,
            n => Some(Frame(n - 1)),
        }
    }

    /// The object's bytes at `offset` (as `pread`: from the page cache where a page is there);
    /// `OutsideObject` if the range leaves the object.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<(), BackingError> {
        self.each_page(offset, buf.len(), |pgoff, in_page, at, len| {
            let out = &mut buf[at..at + len];
            match self.cached(pgoff) {
                Some(frame) => self.frames.read(frame, in_page, out),
                None => {
                    let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
                    let from = pgoff as usize * FRAME_SIZE + in_page;
                    out.copy_from_slice(&store[from..from + len]);
                }
            }
        })
    }

    /// Writes `data` into the object at `offset` (as `pwrite`); `OutsideObject` if the range
    /// leaves the object.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<(), BackingError> {
        self.each_page(offset, data.len(), |pgoff, in_page, at, len| {
            let data = &data[at..at + len];
            // The store lock orders this with a read into the cache copying the same page.
            let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
            match self.cached(pgoff) {
                Some(frame) => self.frames.write(frame, in_page, data),
                None => {
                    let from = pgoff as usize * FRAME_SIZE + in_page;
                    store[from..from + len].copy_from_slice(data);
                }
            }
        })
    }

    /// Splits `[offset, offset + len)` by page: `f(pgoff, offset in page, offset in buffer,
    /// length)`; `OutsideObject` (and no call) if the range leaves the object.
    fn each_page(
        &self,
        offset: usize,
        len: usize,
        mut f: impl FnMut(u64, usize, usize, usize),
    ) -> Result<(), BackingError> {
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= self.cache.len() * FRAME_SIZE)
            .ok_or(BackingError::OutsideObject)?;
        let mut at = offset;
        while at < end {
            let in_page = at % FRAME_SIZE;
            let chunk = (FRAME_SIZE - in_page).min(end - at);
            f((at / FRAME_SIZE) as u64, in_page, at - offset, chunk);
            at += chunk;
        }
        Ok(())
    }
}

impl Backing for MemBacking {
    fn name(&self) -> &str {
        &self.name
    }

    fn pages(&self) -> u64 {
        self.cache.len() as u64
    }

    fn page_if_cached(&self, pgoff: u64) -> Option<Frame> {
        let frame = self.cached(pgoff)?;
        // The cache's reference keeps the frame until the backing is dropped, and the caller
        // holds the backing.
        self.frames.get(frame);
        Some(frame)
    }

    fn read_page(&self, pgoff: u64) -> Result<Frame, BackingError> {
        let slot = usize::try_from(pgoff)
            .ok()
            .and_then(|i| self.cache.get(i))
            .ok_or(BackingError::OutsideObject)?;
        if let Some(frame) = self.page_if_cached(pgoff) {
            return Ok(frame);
        }
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let frame = self.frames.alloc().ok_or(BackingError::OutOfMemory)?;
        {
            let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
            let from = pgoff as usize * FRAME_SIZE;
            self.frames.write(frame, 0, &store[from..from + FRAME_SIZE]);
            // Published under the store lock, so `write_at` writes either the store before the
            // copy or the frame after it.
            // Release pairs with the Acquire in `cached`; AcqRel on success keeps the order.
            if let Err(winner) = slot.compare_exchange(0, frame.0 + 1, Ordering::AcqRel, Ordering::Acquire) {
                drop(store);
                // SAFETY: the frame was never published; this is its only reference.
                unsafe { self.frames.put(frame) };
                let winner = Frame(winner - 1);
                self.frames.get(winner);
                return Ok(winner);
            }
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        // One reference for the cache (from alloc), one for the caller.
        self.frames.get(frame);
        Ok(frame)
    }

    fn frames(&self) -> &Arc<FramePool> {
        &self.frames
    }
}

impl Drop for MemBacking {
    fn drop(&mut self) {
        for slot in self.cache.iter() {
            let n = slot.load(Ordering::Acquire);
            if n != 0 {
                // SAFETY: the cache's reference; the cache is gone, translations hold their own.
                unsafe { self.frames.put(Frame(n - 1)) };
            }
        }
    }
}

/// An object an [`crate::Mm`] can map: a [`Backing`] with the identity the VMA layer needs
/// (two mappings map the same object when they hold the same `Arc<File>`).
#[derive(Debug)]
pub struct File {
    backing: Arc<dyn Backing>,
}

impl File {
    /// Wraps a backing (keep a clone of the `Arc` to reach the backing itself, e.g. to read
    /// what shared mappings wrote).
    pub fn new(backing: Arc<dyn Backing>) -> Arc<Self> {
        Arc::new(Self { backing })
    }

    /// The backing.
    pub fn backing(&self) -> &dyn Backing {
        &*self.backing
    }
}

impl vma::MappedFile for File {
    fn name(&self) -> &str {
        self.backing.name()
    }
}
