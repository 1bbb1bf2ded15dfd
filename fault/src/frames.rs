//! The frame pool: real 4 KiB frames carved from large zeroed allocations ("chunks"), handed
//! out and taken back from many threads.
//!
//! Invariants: a frame number `n` lives in chunk `n / chunk_frames` at offset
//! `(n % chunk_frames) * 4096`; chunks are only added (never moved or freed before the pool is
//! dropped), so a frame's memory stays valid for the pool's lifetime; a frame is either free
//! (in the free list) or owned by exactly one holder; `in_use` counts the owned ones.

use maple::sync::Mutex;
use maple::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::alloc::Layout;
use std::fmt;

/// Bytes in a frame.
pub const FRAME_SIZE: usize = 4096;

/// Most chunks a pool may grow to.
const MAX_CHUNKS: usize = 1024;

/// A physical frame, by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame(pub u64);

/// How big a pool may grow, and in what steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePoolConfig {
    /// Frames per chunk (one allocation).
    pub chunk_frames: usize,
    /// Most frames the pool hands out at once: its size.
    pub max_frames: usize,
}

impl Default for FramePoolConfig {
    /// 2 MiB chunks, up to 1 GiB.
    fn default() -> Self {
        Self {
            chunk_frames: 512,
            max_frames: 512 * 512,
        }
    }
}

/// Why a pool configuration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPoolConfig(&'static str);

impl fmt::Display for BadPoolConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad frame pool configuration: {}", self.0)
    }
}

impl std::error::Error for BadPoolConfig {}

struct FreeList {
    frames: Vec<Frame>,
    chunks: usize,
}

/// A pool of 4 KiB frames, safe to use from many threads.
pub struct FramePool {
    config: FramePoolConfig,
    /// Chunk base addresses; Release-stored once when a chunk is added, Acquire-loaded by
    /// `frame_ptr` (pairing with it) so a frame's memory is visible before its number is.
    chunks: Box<[AtomicPtr<u8>]>,
    free: Mutex<FreeList>,
    in_use: AtomicUsize,
}

impl fmt::Debug for FramePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FramePool")
            .field("config", &self.config)
            .field("in_use", &self.in_use())
            .finish()
    }
}

impl FramePool {
    /// An empty pool; chunks are allocated as frames are needed.
    pub fn new(config: FramePoolConfig) -> Result<Self, BadPoolConfig> {
        if config.chunk_frames == 0 || config.max_frames == 0 {
            return Err(BadPoolConfig("zero frames"));
        }
        if config.max_frames.div_ceil(config.chunk_frames) > MAX_CHUNKS {
            return Err(BadPoolConfig("more than 1024 chunks"));
        }
        if config
            .chunk_frames
            .checked_mul(FRAME_SIZE)
            .is_none_or(|bytes| bytes > isize::MAX as usize)
        {
            return Err(BadPoolConfig("chunk too large"));
        }
        Ok(Self {
            config,
            chunks: (0..MAX_CHUNKS)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            free: Mutex::new(FreeList {
                frames: Vec::new(),
                chunks: 0,
            }),
            in_use: AtomicUsize::new(0),
        })
    }

    fn chunk_layout(&self) -> Layout {
        Layout::from_size_align(self.config.chunk_frames * FRAME_SIZE, FRAME_SIZE).expect("checked in new")
    }

    /// A frame (its contents are whatever the last user left), or `None` when the pool is at
    /// its size.
    pub fn alloc(&self) -> Option<Frame> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.frames.is_empty() {
            let total = free.chunks * self.config.chunk_frames;
            if total >= self.config.max_frames {
                return None;
            }
            // SAFETY: the layout has a non-zero size.
            let chunk = unsafe { std::alloc::alloc_zeroed(self.chunk_layout()) };
            if chunk.is_null() {
                return None;
            }
            // Release pairs with the Acquire in `frame_ptr`.
            self.chunks[free.chunks].store(chunk, Ordering::Release);
            let first = total as u64;
            let count = self.config.chunk_frames.min(self.config.max_frames - total) as u64;
            free.frames.extend((first..first + count).rev().map(Frame));
            free.chunks += 1;
        }
        let frame = free.frames.pop();
        drop(free);
        self.in_use.fetch_add(1, Ordering::Relaxed);
        frame
    }

    /// A zero-filled frame.
    pub fn alloc_zeroed(&self) -> Option<Frame> {
        let frame = self.alloc()?;
        // SAFETY: the frame was just handed out: the caller owns it.
        unsafe { std::ptr::write_bytes(self.frame_ptr(frame), 0, FRAME_SIZE) };
        Some(frame)
    }

    /// Gives a frame back.
    ///
    /// # Safety
    /// The frame came from this pool, is owned by the caller, and nothing can reach it any more
    /// (no translation maps it, no reader still copies from it).
    pub unsafe fn free(&self, frame: Frame) {
        self.in_use.fetch_sub(1, Ordering::Relaxed);
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .frames
            .push(frame);
    }

    /// The frame's memory (4096 bytes).
    ///
    /// # Panics
    /// If `frame` was never handed out by this pool.
    pub fn frame_ptr(&self, frame: Frame) -> *mut u8 {
        let n = usize::try_from(frame.0).expect("frame number fits usize");
        let chunk = self
            .chunks
            .get(n / self.config.chunk_frames)
            .map_or(std::ptr::null_mut(), |c| {
                // Acquire pairs with the Release in `alloc`.
                c.load(Ordering::Acquire)
            });
        assert!(
            !chunk.is_null() && n < self.config.max_frames,
            "frame {n} does not belong to this pool"
        );
        // SAFETY: the chunk holds `chunk_frames` frames and `n` lies in it.
        unsafe { chunk.add((n % self.config.chunk_frames) * FRAME_SIZE) }
    }

    /// Frames handed out and not given back.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// The pool's configuration.
    pub fn config(&self) -> FramePoolConfig {
        self.config
    }
}

impl Drop for FramePool {
    fn drop(&mut self) {
        let layout = self.chunk_layout();
        for chunk in self.chunks.iter() {
            let chunk = chunk.load(Ordering::Relaxed);
            if !chunk.is_null() {
                // SAFETY: allocated in `alloc` with this layout; the pool owns it.
                unsafe { std::alloc::dealloc(chunk, layout) };
            }
        }
    }
}
