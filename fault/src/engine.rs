//! The fault engine: resolve a page fault without any address-space lock, and the CPU-like
//! `read`/`write` built on it.
//!
//! `fault(addr, access)`: under an RCU guard, look the VMA up. None: not mapped. BABY: drop the
//! guard, wait for its birth, retry. Wrong access: access denied. Otherwise decide what the
//! page's entry must become and install it with a compare-and-swap:
//! - Fast path: everything under the guard, no VMA reference, no write to any shared cache line
//!   but the page-table entry (frames come from per-thread shards of the pool; statistics are
//!   per-thread too), when the page is at hand: anonymous memory, a file page already cached, an
//!   upgrade of an entry. Safe because a writer replacing the VMA waits for a grace period
//!   (step 4) before it flushes the range (step 6): a fast fault that saw the old VMA has
//!   installed its entry by then, and the flush removes it. The guard is keyed at the page
//!   (`AddressSpace::guard_at`): it can only reach the VMA covering the page, so a writer
//!   replacing other VMAs does not wait for it; a preempted fault delays only writers of its
//!   own VMA.
//! - Slow path: the file page must be read (blocking). Take a VMA reference, drop the guard,
//!   read, take a guard again (for the page-table walk) and install against the referenced VMA
//!   (not a new lookup: a writer waiting for the reference would have made the new VMA BABY,
//!   and waiting for it would deadlock). A writer replacing the VMA waits for the reference
//!   (step 3), so the install still happens before its flush.
//!
//! A lost compare-and-swap means another fault (or a flush) changed the entry: the engine gives
//! back what it prepared and decides again. Two threads faulting one page therefore install one
//! frame.
//!
//! The decision and the install are [`Memory`]'s (`settle`, `read_in`), so that designs that
//! find and protect VMAs another way (the benchmark's baselines) fault exactly the same way.
//!
//! Entries: anonymous memory and private copies are `PRIVATE` frames; file pages are the
//! backing's cached frames, mapped read-only in private mappings until a write copies them
//! (copy-on-write) and writable in shared writable mappings (writes reach the file's page).

use crate::backing::BackingError;
use crate::frames::{FRAME_SIZE, Frame};
use crate::memory::{Memory, backing_of, readable};
use crate::mm::Mm;
use crate::pagetable::{ACCESSED, ADDRESS_LIMIT, DIRTY, NO_ACCESS, PRIVATE, Pte, WRITABLE};
use crate::stats::Counter;
use maple::Guard;
use maple::rcu::{DefaultRcu, Keys};
use maple::sync::atomic::{AtomicU64, Ordering};
use std::fmt;
use vma::{Backing as VmaBacking, Lookup, Mapping, PAGE_SIZE, VmaRef};

/// The kind of access that faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A load.
    Read,
    /// A store.
    Write,
}

/// A fault that succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// This fault installed (or upgraded) the translation.
    Installed,
    /// The translation was already there (a racing fault installed it).
    AlreadyMapped,
}

/// A fault that failed: what a CPU would deliver as a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultError {
    /// Nothing is mapped there (SIGSEGV, SEGV_MAPERR).
    NotMapped,
    /// The mapping does not allow the access (SIGSEGV, SEGV_ACCERR).
    AccessDenied,
    /// No frame was free.
    OutOfMemory,
    /// The page lies beyond the end of the mapped file (SIGBUS).
    BusError,
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultError::NotMapped => "segmentation fault: address not mapped",
            FaultError::AccessDenied => "segmentation fault: access not permitted",
            FaultError::OutOfMemory => "out of memory",
            FaultError::BusError => "bus error: beyond the end of the mapped file",
        })
    }
}

impl std::error::Error for FaultError {}

impl From<BackingError> for FaultError {
    fn from(error: BackingError) -> Self {
        match error {
            BackingError::OutsideObject => FaultError::BusError,
            BackingError::OutOfMemory => FaultError::OutOfMemory,
        }
    }
}

/// A `read` or `write` that faulted and could not be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessError {
    /// The first address that could not be accessed.
    pub addr: u64,
    /// Why.
    pub error: FaultError,
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {:#x}", self.error, self.addr)
    }
}

impl std::error::Error for AccessError {}

/// One decision about a page's entry.
enum Attempt {
    /// The fault is resolved.
    Done(Fault),
    /// The entry changed under us (or we changed it and must look again): decide again.
    Again,
    /// The file page must be read first (blocking).
    Blocking(u64),
}

/// What [`Memory::file_frame`] found for a missing entry of a file mapping.
enum FilePage {
    /// The frame to map, with one reference for the entry, and the entry's flags.
    Frame(Frame, u64),
    /// The page at this page offset must be read first.
    Blocking(u64),
}

/// How far [`Memory::settle`] got without blocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The fault is resolved.
    Done(Fault),
    /// The file page at this page offset must be read first: see [`Memory::read_in`].
    Blocking(u64),
}

impl Mm {
    /// Resolves a fault at `addr` as a CPU's page-fault handler would (see the module
    /// documentation for the paths). Never takes an address-space lock; waits only for a VMA
    /// that a writer is setting up (BABY) and for file reads.
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
        let counters = &self.memory.counters;
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
                counters.bump(Counter::Retries);
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
                        counters.bump(Counter::Retries);
                        continue;
                    };
                    drop(guard);
                    return self.slow_path(&reference, page, access, pgoff);
                }
            }
        }
    }

    /// Reads the file page with no guard held, then installs against the referenced VMA.
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
            self.memory.counters.bump(Counter::SlowPath);
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

impl Memory {
    /// Counts a fault's outcome in the statistics.
    pub fn count(&self, result: Result<Fault, FaultError>) {
        self.counters.bump(match result {
            Ok(Fault::Installed) => Counter::Installed,
            Ok(Fault::AlreadyMapped) => Counter::AlreadyMapped,
            Err(FaultError::NotMapped) => Counter::NotMapped,
            Err(FaultError::AccessDenied) => Counter::AccessDenied,
            Err(FaultError::OutOfMemory) => Counter::OutOfMemory,
            Err(FaultError::BusError) => Counter::BusError,
        });
    }

    /// Decides what the entry of `page` must become for an `access` through `mapping` and
    /// installs it, until the page is resolved or its file page must be read (blocking: see
    /// [`Memory::read_in`]). `read` is a file page already read (taken when used).
    ///
    /// The caller holds `guard` (the page-table walk may meet tables being freed) and makes
    /// sure that `mapping` covers `page` and permits `access` (see [`allows`]), and that no
    /// writer flushes `page` (zap, protect) until this returns, or at least not before a grace
    /// period of the domain `guard` belongs to: it holds the lock that writers take, a
    /// reference writers wait for, or an RCU guard writers wait for before flushing. Otherwise
    /// a translation of a removed mapping may survive (a logic error, not memory unsafety: the
    /// frame stays referenced).
    #[inline]
    pub fn settle(
        &self,
        mapping: &Mapping,
        page: u64,
        access: Access,
        read: &mut Option<Frame>,
        _guard: &Guard<'_, DefaultRcu>,
    ) -> Result<Progress, FaultError> {
        debug_assert!(page < ADDRESS_LIMIT && page % PAGE_SIZE == 0);
        debug_assert!(mapping.start <= page && page < mapping.end);
        let entry = self.table.entry_or_insert(page);
        loop {
            match self.attempt(mapping, page, access, entry, read)? {
                Attempt::Done(fault) => return Ok(Progress::Done(fault)),
                Attempt::Blocking(pgoff) => return Ok(Progress::Blocking(pgoff)),
                Attempt::Again => self.counters.bump(Counter::Retries),
            }
        }
    }

    /// The slow path after [`Memory::settle`] answered [`Progress::Blocking`]: reads the file
    /// page with no guard held (it may block), then settles under a guard of `rcu`, reading again
    /// if the backing dropped the page meanwhile. The caller keeps `mapping` valid throughout as
    /// for `settle` (a VMA reference, or a lock held across the read).
    pub fn read_in(
        &self,
        mapping: &Mapping,
        page: u64,
        access: Access,
        mut pgoff: u64,
        rcu: &DefaultRcu,
    ) -> Result<Fault, FaultError> {
        let VmaBacking::File(object) = &mapping.backing else {
            unreachable!("only file pages block");
        };
        let backing = backing_of(object);
        loop {
            let mut read = Some(backing.read_page(pgoff)?);
            let guard = Guard::new(rcu);
            let progress = self.settle(mapping, page, access, &mut read, &guard);
            drop(guard);
            if let Some(frame) = read {
                // SAFETY: the reference read_page gave us, not used by any translation.
                unsafe { self.frames.put(frame) };
            }
            match progress? {
                Progress::Done(fault) => return Ok(fault),
                // The backing dropped the page again before we installed it: read again.
                Progress::Blocking(again) => pgoff = again,
            }
        }
    }

    /// One decision: what the entry must become, prepared and installed with one
    /// compare-and-swap. The new anonymous page is the straight line; changing a present entry
    /// and finding a file page are out of line, so that the common fault carries none of their
    /// work.
    #[inline]
    fn attempt(
        &self,
        mapping: &Mapping,
        page: u64,
        access: Access,
        entry: &AtomicU64,
        read: &mut Option<Frame>,
    ) -> Result<Attempt, FaultError> {
        // Acquire pairs with the Release of the CAS that installed the entry: the frame's
        // contents are visible.
        let current = Pte(entry.load(Ordering::Acquire));
        let write = access == Access::Write;
        if current.readable() && (!write || current.writable()) {
            return Ok(Attempt::Done(Fault::AlreadyMapped));
        }
        if current.present() {
            return self.change_present(mapping, write, entry, current);
        }
        let writable = if mapping.prot.write { WRITABLE } else { 0 };
        let dirty = if write { DIRTY | ACCESSED } else { ACCESSED };
        let (frame, flags) = match &mapping.backing {
            VmaBacking::Anonymous => {
                let frame = if self.zero_fill {
                    self.frames.alloc_zeroed()
                } else {
                    self.frames.alloc()
                };
                (frame.ok_or(FaultError::OutOfMemory)?, PRIVATE | writable | dirty)
            }
            VmaBacking::File(object) => {
                let allowed = writable | dirty;
                match self.file_frame(mapping, page, write, allowed, backing_of(object), read)? {
                    FilePage::Frame(frame, flags) => (frame, flags),
                    FilePage::Blocking(pgoff) => return Ok(Attempt::Blocking(pgoff)),
                }
            }
        };
        Ok(if self.install(entry, current, Pte::new(frame, flags), frame) {
            Attempt::Done(Fault::Installed)
        } else {
            Attempt::Again
        })
    }

    /// An access that a present entry does not allow but `mapping` does: restore access (after
    /// mprotect back from PROT_NONE), allow a write to a page that is already the mapping's, or
    /// copy a file page on write in a private mapping.
    #[inline(never)]
    fn change_present(
        &self,
        mapping: &Mapping,
        write: bool,
        entry: &AtomicU64,
        current: Pte,
    ) -> Result<Attempt, FaultError> {
        let updated = if !current.readable() {
            // The mapping allows access again (mprotect back from PROT_NONE).
            current.with(0, NO_ACCESS)
        } else if mapping.shared || current.private() {
            // A write to a page that is already this mapping's: allow it.
            current.with(WRITABLE | DIRTY, 0)
        } else {
            // Copy-on-write of a file page in a private mapping.
            let copy = self.copy_of(current.frame())?;
            let new = Pte::new(copy, PRIVATE | WRITABLE | DIRTY | ACCESSED);
            return Ok(if self.install(entry, current, new, copy) {
                // SAFETY: the old entry's reference; the file's page cache still holds the
                // frame (the mapping, alive under our guard or reference, holds the file).
                unsafe { self.frames.put(current.frame()) };
                Attempt::Done(Fault::Installed)
            } else {
                Attempt::Again
            });
        };
        // Release pairs with the Acquire of readers of the entry.
        Ok(
            match entry.compare_exchange(current.0, updated.0, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) if updated.readable() && (!write || updated.writable()) => {
                    Attempt::Done(Fault::Installed)
                }
                _ => Attempt::Again,
            },
        )
    }

    /// The frame a missing entry of a file mapping gets and the entry's flags: the backing's
    /// cached page (`read`, or the page cache's) with the flags the access `allowed` (a shared
    /// mapping), read-only (a read through a private mapping, copied when written later), or a
    /// private copy (a write through a private mapping); or the page to read first when it is
    /// not cached.
    #[inline(never)]
    fn file_frame(
        &self,
        mapping: &Mapping,
        page: u64,
        write: bool,
        allowed: u64,
        backing: &dyn crate::Backing,
        read: &mut Option<Frame>,
    ) -> Result<FilePage, FaultError> {
        let pgoff = mapping.pgoff + ((page - mapping.start) >> vma::PAGE_SHIFT);
        if pgoff >= backing.pages() {
            return Err(FaultError::BusError);
        }
        let Some(cached) = read.take().or_else(|| backing.page_if_cached(pgoff)) else {
            return Ok(FilePage::Blocking(pgoff));
        };
        Ok(if mapping.shared {
            FilePage::Frame(cached, allowed)
        } else if write {
            let copy = self.copy_of(cached);
            // SAFETY: our reference on the cached page, no longer used; the page cache holds
            // its own.
            unsafe { self.frames.put(cached) };
            FilePage::Frame(copy?, PRIVATE | allowed)
        } else {
            FilePage::Frame(cached, allowed & !WRITABLE)
        })
    }

    /// A new frame holding a copy of `page` (copy-on-write), with one reference for the caller.
    fn copy_of(&self, page: Frame) -> Result<Frame, FaultError> {
        let frames = &self.frames;
        let copy = frames.alloc().ok_or(FaultError::OutOfMemory)?;
        frames.copy(page, copy);
        Ok(copy)
    }

    /// Replaces `current` with `new`, which carries a reference on `frame`; on failure gives
    /// the reference back.
    fn install(&self, entry: &AtomicU64, current: Pte, new: Pte, frame: Frame) -> bool {
        // Release pairs with the Acquire of readers of the entry: the frame's contents (zeroed
        // or copied) are visible before the translation is.
        if entry
            .compare_exchange(current.0, new.0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return true;
        }
        // SAFETY: the reference was for the entry, which was never published.
        unsafe { self.frames.put(frame) };
        false
    }

    /// Copies `buf.len()` bytes from `addr` as a CPU would: through the translations under a
    /// guard of `rcu`, calling `fault` where a page is missing or does not allow the access.
    pub fn read(
        &self,
        addr: u64,
        buf: &mut [u8],
        rcu: &DefaultRcu,
        fault: impl FnMut(u64, Access) -> Result<Fault, FaultError>,
    ) -> Result<(), AccessError> {
        self.access(
            addr,
            buf.len(),
            Access::Read,
            rcu,
            fault,
            |frame, offset, at, len| {
                self.frames.read(frame, offset, &mut buf[at..at + len]);
            },
        )
    }

    /// Copies `data` to `addr` as a CPU would (see [`Memory::read`]).
    pub fn write(
        &self,
        addr: u64,
        data: &[u8],
        rcu: &DefaultRcu,
        fault: impl FnMut(u64, Access) -> Result<Fault, FaultError>,
    ) -> Result<(), AccessError> {
        self.access(
            addr,
            data.len(),
            Access::Write,
            rcu,
            fault,
            |frame, offset, at, len| {
                self.frames.write(frame, offset, &data[at..at + len]);
            },
        )
    }

    /// Walks `[addr, addr + len)` page by page: translate under a guard and `copy(frame, offset
    /// in frame, offset in buffer, length)`, or fault and try again.
    fn access(
        &self,
        addr: u64,
        len: usize,
        access: Access,
        rcu: &DefaultRcu,
        mut fault: impl FnMut(u64, Access) -> Result<Fault, FaultError>,
        mut copy: impl FnMut(Frame, usize, usize, usize),
    ) -> Result<(), AccessError> {
        let mut done = 0;
        while done < len {
            let at = addr.checked_add(done as u64).ok_or(AccessError {
                addr: u64::MAX,
                error: FaultError::NotMapped,
            })?;
            let offset = (at % PAGE_SIZE) as usize;
            let chunk = (FRAME_SIZE - offset).min(len - done);
            loop {
                // Keyed at the address: only the translation of `at` is read.
                let guard = Guard::keyed(rcu, Keys::one(at));
                if at < ADDRESS_LIMIT
                    && let Some(pte) = self.table.translate(at)
                    && pte.readable()
                    && (access == Access::Read || pte.writable())
                {
                    // The guard keeps the frame: a removed translation's reference is put only
                    // after a grace period. A writer revoking the translation waits for this
                    // guard before it returns (step 8 of the protocol), however long the copy
                    // takes (under shuttle, it may be preempted here).
                    maple::sync::preemption_point();
                    copy(pte.frame(), offset, done, chunk);
                    break;
                }
                drop(guard);
                fault(at, access).map_err(|error| AccessError { addr: at, error })?;
            }
            done += chunk;
        }
        Ok(())
    }
}

/// Whether `mapping` permits `access`.
pub fn allows(mapping: &Mapping, access: Access) -> bool {
    match access {
        Access::Read => readable(mapping.prot),
        Access::Write => mapping.prot.write,
    }
}
