//! The floor for fault cost: a fault engine with no synchronization at all, for one thread.
//! VMAs in a plain `BTreeMap`, the same page table and frame pool as maplevm's engine, frames
//! put back at once on unmap (nobody else can be reading). What maplevm's fast path adds over
//! this is the price of running the same fault lock-free beside writers.

use fault::pagetable::{PRIVATE, PageTable, Pte, WRITABLE};
use fault::{Access, FaultError, FramePool};
use maple::rcu::DefaultRcu;
use std::collections::BTreeMap;
use std::sync::Arc;
use vma::{PAGE_SIZE, Prot};

/// A single-threaded anonymous-memory fault engine (see the module documentation).
pub struct UnsyncEngine {
    /// Start → (end, permissions).
    vmas: BTreeMap<u64, (u64, Prot)>,
    table: PageTable,
    frames: Arc<FramePool>,
    zero_fill: bool,
    rcu: DefaultRcu,
}

impl UnsyncEngine {
    /// An empty engine taking frames from `frames`, zero-filling them or not.
    pub fn new(frames: Arc<FramePool>, zero_fill: bool) -> Self {
        Self {
            vmas: BTreeMap::new(),
            table: PageTable::new(),
            frames,
            zero_fill,
            rcu: DefaultRcu::default(),
        }
    }

    /// Maps anonymous memory at `[start, start + len)` (page aligned, free).
    pub fn map(&mut self, start: u64, len: u64, prot: Prot) {
        assert!(start % PAGE_SIZE == 0 && len % PAGE_SIZE == 0 && len > 0);
        self.vmas.insert(start, (start + len, prot));
    }

    /// Unmaps the VMA starting at `start` and frees its frames.
    pub fn unmap(&mut self, start: u64) {
        let Some((end, _)) = self.vmas.remove(&start) else {
            return;
        };
        for frame in self.table.zap(start, end, (start, end), &self.rcu) {
            // SAFETY: one thread: nobody else can reach the removed translation.
            unsafe { self.frames.put(frame) };
        }
    }

    /// Resolves a fault at `addr`.
    pub fn fault(&mut self, addr: u64, access: Access) -> Result<(), FaultError> {
        let (_, &(end, prot)) = self
            .vmas
            .range(..=addr)
            .next_back()
            .ok_or(FaultError::NotMapped)?;
        if addr >= end {
            return Err(FaultError::NotMapped);
        }
        if access == Access::Write && !prot.write {
            return Err(FaultError::AccessDenied);
        }
        let entry = self.table.entry_or_insert(addr & !(PAGE_SIZE - 1));
        if Pte(entry.load(std::sync::atomic::Ordering::Relaxed)).present() {
            return Ok(());
        }
        let frame = if self.zero_fill {
            self.frames.alloc_zeroed()
        } else {
            self.frames.alloc()
        }
        .ok_or(FaultError::OutOfMemory)?;
        let writable = if prot.write { WRITABLE } else { 0 };
        entry.store(
            Pte::new(frame, PRIVATE | writable).0,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }
}
