//! The embeddable memory manager: an address space, its [`Memory`], and the fault entry
//! ([`Mm::fault`]: the VMA lookup and the paths described in the `engine` module).
//!
//! Invariants:
//! - The page table changes in only two ways: faults install or upgrade entries (under an RCU
//!   guard or holding a VMA reference, for a usable VMA covering the page), and the address
//!   space's writers zap, protect and relocate entries through [`FlushHook`] at step 6 of the
//!   protocol, when no fault can install into the changed ranges (`madvise_dontneed` only
//!   clears entries, which faults tolerate).
//! - Frames removed from entries are released a grace period of the space's RCU domain later
//!   (see [`Memory`]).

use crate::backing::File;
use crate::engine::{Access, AccessError, Fault, FaultError, Progress, allows};
use crate::frames::FramePool;
use crate::memory::{Memory, einval};
use crate::pagetable::{ADDRESS_LIMIT, Pte};
use crate::stats::{Counter, FaultStats};
use maple::rcu::{DefaultRcu, Rcu};
use std::sync::Arc;
use vma::request::advise_range;
use vma::{
    AddressSpace, Errno, Error, FlushHook, Layout, Lookup, MapFlags, PAGE_SIZE, Prot, RemapFlags, Revoked,
    VmaRef,
};

/// How an [`Mm`] is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmConfig {
    /// The address space's bounds (at most 48-bit addresses).
    pub layout: Layout,
    /// Zero-fill anonymous frames (off only to measure what zeroing costs: anonymous memory
    /// then shows whatever the frame held before).
    pub zero_fill: bool,
    /// Resolve faults whose page is at hand under the RCU guard alone (the default). Off, every
    /// fault takes a VMA reference, as the slow path does: only to measure what the fast path
    /// buys (the benchmark's `rcu-refonly` design).
    pub fast_path: bool,
}

impl Default for MmConfig {
    fn default() -> Self {
        Self {
            layout: Layout::X86_64,
            zero_fill: true,
            fast_path: true,
        }
    }
}

/// The page table's side of the replacement protocol.
struct Hook(Arc<Memory>);

impl FlushHook for Hook {
    fn zap(&self, start: u64, end: u64, free_tables: (u64, u64), rcu: &DefaultRcu) -> bool {
        self.0.zap(start, end, free_tables, rcu)
    }

    fn protect(&self, start: u64, end: u64, prot: Prot, _rcu: &DefaultRcu) -> bool {
        self.0.protect(start, end, prot)
    }

    fn relocate(&self, from: u64, to: u64, len: u64, _rcu: &DefaultRcu) -> bool {
        self.0.relocate(from, to, len)
    }
}

/// An address space with memory behind it: map, fault, read and write, with Linux-like results.
/// Faults find their VMA without any lock (see [`Mm::fault`]); mmap, munmap, mprotect, mremap
/// and brk go through the VMA layer's replacement protocol, whose flush step zaps, protects or
/// moves this manager's translations.
pub struct Mm {
    space: AddressSpace,
    memory: Arc<Memory>,
    fast_path: bool,
}

impl std::fmt::Debug for Mm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mm")
            .field("space", &self.space)
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

impl Mm {
    /// An empty memory manager whose frames come from `frames`.
    pub fn new(config: MmConfig, frames: Arc<FramePool>) -> vma::Result<Self> {
        if config.layout.high > ADDRESS_LIMIT {
            return Err(einval("the layout exceeds the 48-bit page table"));
        }
        let memory = Arc::new(Memory::new(frames, config.zero_fill));
        Ok(Self {
            space: AddressSpace::new(config.layout, Hook(memory.clone()))?,
            memory,
            fast_path: config.fast_path,
        })
    }

    /// Breaks the VMA layer's protocol by skipping `step` (shuttle builds only; for tests that
    /// must fail).
    #[cfg(feature = "shuttle")]
    #[doc(hidden)]
    pub fn break_protocol(&mut self, step: vma::BrokenStep) {
        self.space.break_protocol(step);
    }

    /// The mappings in the format of `/proc/PID/maps` (see [`AddressSpace::maps`]).
    pub fn maps(&self) -> String {
        self.space.maps()
    }

    /// The address space (VMAs, `maps()`, lookups).
    pub fn space(&self) -> &AddressSpace {
        &self.space
    }

    /// The page table and its frames.
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// The pool frames come from (create file backings with it).
    pub fn frames(&self) -> &Arc<FramePool> {
        self.memory.frames()
    }

    /// Page-table pages below the root.
    pub fn page_tables(&self) -> usize {
        self.memory.table().tables()
    }

    /// The translation of `addr`, if one is present.
    pub fn translation(&self, addr: u64) -> Option<Pte> {
        if addr >= ADDRESS_LIMIT {
            return None;
        }
        let _guard = self.space.guard_at(addr);
        self.memory.table().translate(addr)
    }

    /// Statistics so far.
    pub fn stats(&self) -> FaultStats {
        self.memory.stats(self.space.stats())
    }

    /// Waits until frames and page tables released so far are back in the pool (they go back
    /// a grace period after they were removed). For tests and teardown.
    pub fn barrier(&self) {
        self.space.rcu().barrier();
    }

    /// Maps memory (see [`AddressSpace::mmap`]). `file` is the object and byte offset of a
    /// file mapping; MAP_SHARED | MAP_ANONYMOUS gets a new zero-filled shared object.
    ///
    /// # Examples
    /// ```
    /// use fault::{File, FramePool, MapFlags, MemBacking, Mm, MmConfig, Prot};
    /// use std::sync::Arc;
    ///
    /// let frames = Arc::new(FramePool::new(Default::default()).unwrap());
    /// let mm = Mm::new(MmConfig::default(), frames.clone()).unwrap();
    /// let backing = Arc::new(MemBacking::new("/etc/motd", &frames, b"hello"));
    /// let file = File::new(backing.clone());
    /// // Shared: writes reach the file; private: writes stay in the mapping.
    /// let shared = mm.mmap(0, 4096, Prot::READ_WRITE, MapFlags::SHARED, Some((&file, 0))).unwrap();
    /// let private = mm.mmap(0, 4096, Prot::READ_WRITE, MapFlags::PRIVATE, Some((&file, 0))).unwrap();
    /// mm.write(shared, b"J").unwrap();
    /// mm.write(private + 1, b"E").unwrap();
    /// let (mut on_file, mut seen) = ([0; 5], [0; 5]);
    /// backing.read_at(0, &mut on_file).unwrap();
    /// mm.read(private, &mut seen).unwrap();
    /// assert_eq!((&on_file, &seen), (b"Jello", b"JEllo"));
    /// ```
    pub fn mmap(
        &self,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        file: Option<(&Arc<File>, u64)>,
    ) -> vma::Result<u64> {
        let (flags, object) = self.memory.mapped_object(len, flags, file)?;
        self.space.mmap(addr, len, prot, flags, object)
    }

    /// Unmaps `[addr, addr + len)`; when this returns its translations are gone and no access
    /// that went through one is still in progress (no store lands after it returns).
    pub fn munmap(&self, addr: u64, len: u64) -> vma::Result<()> {
        self.space.munmap(addr, len)
    }

    /// Changes permissions; removing write permission write-protects the translations, removing
    /// all access hides them (the contents stay). When this returns, no access that the old
    /// permissions allowed and the new ones do not is still in progress.
    pub fn mprotect(&self, addr: u64, len: u64, prot: Prot) -> vma::Result<()> {
        self.space.mprotect(addr, len, prot)
    }

    /// Resizes or moves a mapping (see [`AddressSpace::mremap`]); moved contents move with it,
    /// and no access through an old address is still in progress when this returns.
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
    /// address or a range that wraps around, ENOMEM (after dropping every mapped part) when part
    /// of the range is unmapped, beyond the space included; a zero length does nothing. When it
    /// returns, no access that began before it still goes through a dropped translation.
    pub fn madvise_dontneed(&self, addr: u64, len: u64) -> vma::Result<()> {
        let Some((addr, end)) = advise_range(addr, len)? else {
            return Ok(());
        };
        // Keyed to the range: writers elsewhere do not wait for this walk.
        let guard = self.space.guard_within(addr, end);
        let mut mapped = 0;
        let mut frames = Vec::new();
        let mut revoked = Revoked::new();
        for vma in self.space.iter_from(addr, &guard) {
            if vma.start() >= end {
                break;
            }
            let (from, to) = (vma.start().max(addr), vma.end().min(end));
            let cleared = self.memory.table().clear(from, to);
            revoked.record(!cleared.is_empty(), from, to);
            frames.extend(cleared);
            mapped += to - from;
        }
        drop(guard);
        // Released after the guard is gone, so that this walk is not among the sections the
        // frames wait for: with no fault in the range they go back at once.
        self.memory
            .release_later(frames, (addr, end.min(ADDRESS_LIMIT)), self.space.rcu());
        self.space.await_revoked(&revoked);
        if mapped < end - addr {
            return Err(Error::new(Errno::ENOMEM, "part of the range is unmapped"));
        }
        Ok(())
    }
}

impl Mm {
    /// Resolves a fault at `addr` as a CPU's page-fault handler would (the fast and slow paths:
    /// docs/fault.md). Never takes an address-space lock; waits only for a VMA
    /// that a writer is setting up (BABY) and for file reads.
    ///
    /// # Examples
    /// ```
    /// use fault::{Access, Fault, FaultError, FramePool, MapFlags, Mm, MmConfig, Prot};
    /// use std::sync::Arc;
    ///
    /// let mm = Mm::new(MmConfig::default(), Arc::new(FramePool::new(Default::default()).unwrap())).unwrap();
    /// let a = mm.mmap(0, 4096, Prot::READ, MapFlags::PRIVATE_ANONYMOUS, None).unwrap();
    /// assert_eq!(mm.fault(a, Access::Read), Ok(Fault::Installed));
    /// assert_eq!(mm.fault(a, Access::Read), Ok(Fault::AlreadyMapped));
    /// assert_eq!(mm.fault(a, Access::Write), Err(FaultError::AccessDenied));
    /// assert_eq!(mm.fault(a + 4096, Access::Read), Err(FaultError::NotMapped));
    /// ```
    pub fn fault(&self, addr: u64, access: Access) -> Result<Fault, FaultError> {
        let result = self.resolve(addr, access);
        self.memory.count(result);
        result
    }

    fn resolve(&self, addr: u64, access: Access) -> Result<Fault, FaultError> {
        if addr >= ADDRESS_LIMIT {
            return Err(FaultError::NotMapped);
        }
        let page = addr & !(PAGE_SIZE - 1);
        loop {
            // Keyed: writers replacing other VMAs do not wait for this fault.
            let guard = self.space.guard_at(page);
            let vma = match self.space.lookup(page, &guard) {
                Lookup::Unmapped => return Err(FaultError::NotMapped),
                Lookup::Baby => {
                    drop(guard);
                    let since = std::time::Instant::now();
                    self.space.wait_for_birth(page);
                    self.memory.record_wait(since.elapsed());
                    continue;
                }
                Lookup::Mapped(vma) => vma,
            };
            if !allows(vma.mapping(), access) {
                return Err(FaultError::AccessDenied);
            }
            // Without the fast path, every fault holds a reference (rcu-refonly).
            let Ok(reference) = (!self.fast_path).then(|| self.space.try_get(vma)).transpose() else {
                // Replaced or reborn since the lookup: look again.
                self.memory.bump(Counter::Retries);
                continue;
            };
            match self
                .memory
                .settle(vma.mapping(), page, access, &mut None, &guard)?
            {
                Progress::Done(fault) => return Ok(fault),
                Progress::Blocking(pgoff) => {
                    // The slow path holds a reference across the read.
                    let Ok(reference) = reference.map_or_else(|| self.space.try_get(vma), Ok) else {
                        self.memory.bump(Counter::Retries);
                        continue;
                    };
                    drop(guard);
                    return self.slow_path(&reference, page, access, pgoff);
                }
            }
        }
    }

    /// Reads the file page with no guard held, then installs against the referenced VMA.
    #[cold]
    fn slow_path(
        &self,
        vma: &VmaRef<'_>,
        page: u64,
        access: Access,
        pgoff: u64,
    ) -> Result<Fault, FaultError> {
        let result = self
            .memory
            .read_in(vma.mapping(), page, access, pgoff, self.space.rcu());
        if result.is_ok() {
            self.memory.bump(Counter::SlowPath);
        }
        result
    }

    /// Copies `buf.len()` bytes from `addr`, faulting pages in as a CPU would.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        self.memory.read(addr, buf, self.space.rcu(), |addr, access| {
            self.fault(addr, access)
        })
    }

    /// Copies `data` to `addr`, faulting pages in as a CPU would.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), AccessError> {
        self.memory.write(addr, data, self.space.rcu(), |addr, access| {
            self.fault(addr, access)
        })
    }
}
