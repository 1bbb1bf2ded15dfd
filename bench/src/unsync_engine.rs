//! The floor for fault cost: a fault engine with no synchronization at all, for one thread.
//! VMAs in a plain `BTreeMap`, the same page table and frame pool as maplevm's engine, frames
//! put back at once on unmap (nobody else can be reading). What maplevm's fast path adds over
//! this is the price of running the same fault lock-free beside writers.
//!
//! [`ProtocolAtomicsEngine`] splits that price: the same engine also does what any fault
//! resolved without a lock beside writers cannot do without, and nothing else of maplevm's —
//! it runs inside a read-side section that writers can see before they free what it reads
//! (maplevm's own: a guard of the RCU domain, keyed at the page, as `Mm::fault` enters it), and
//! it installs the entry with a compare-and-swap (two faults race to install one page). The
//! distance from that engine to maplevm is what the design adds beyond them: the VMA tree's
//! walk, the VMA's lifecycle and permission checks, and the statistics.
//!
//! (Announcing the section with a SeqCst `lock xadd` on a line of its own, as maplevm's readers
//! did before they fenced only while writers scan, measures within 2% of this.)

use fault::pagetable::{PRIVATE, PageTable, Pte, WRITABLE};
use fault::{Access, FaultError, FramePool};
use maple::Guard;
use maple::rcu::{DefaultRcu, Keys};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use vma::{PAGE_SIZE, Prot};

/// A single-threaded anonymous-memory fault engine (see the module documentation): with
/// `PROTOCOL_ATOMICS`, also the read-side section and the compare-and-swap install of a
/// lock-free fault.
pub struct UnsyncEngine<const PROTOCOL_ATOMICS: bool = false> {
    /// Start → (end, permissions).
    vmas: BTreeMap<u64, (u64, Prot)>,
    table: PageTable,
    frames: Arc<FramePool>,
    zero_fill: bool,
    /// Page tables emptied by unmap are retired here; with `PROTOCOL_ATOMICS`, faults run
    /// under its guards.
    rcu: DefaultRcu,
}

/// [`UnsyncEngine`] with what a lock-free fault beside writers cannot do without: a read-side
/// section and a compare-and-swap install (see the module documentation).
pub type ProtocolAtomicsEngine = UnsyncEngine<true>;

impl<const PROTOCOL_ATOMICS: bool> UnsyncEngine<PROTOCOL_ATOMICS> {
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
        if !PROTOCOL_ATOMICS {
            return self.resolve(addr, access);
        }
        // The section maplevm's fault runs in, keyed at the page as `Mm::fault` keys it.
        let _section = Guard::keyed(&self.rcu, Keys::one(addr & !(PAGE_SIZE - 1)));
        self.resolve(addr, access)
    }

    #[inline(always)]
    fn resolve(&self, addr: u64, access: Access) -> Result<(), FaultError> {
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
        let current = entry.load(Ordering::Relaxed);
        if Pte(current).present() {
            return Ok(());
        }
        let frame = if self.zero_fill {
            self.frames.alloc_zeroed()
        } else {
            self.frames.alloc()
        }
        .ok_or(FaultError::OutOfMemory)?;
        let writable = if prot.write { WRITABLE } else { 0 };
        let new = Pte::new(frame, PRIVATE | writable).0;
        if PROTOCOL_ATOMICS {
            // AcqRel as maplevm's install (the frame's contents before the translation); with
            // one thread nothing else can install first.
            let installed = entry.compare_exchange(current, new, Ordering::AcqRel, Ordering::Relaxed);
            assert!(installed.is_ok(), "one thread: nothing else installs");
        } else {
            entry.store(new, Ordering::Relaxed);
        }
        Ok(())
    }
}
