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
//! This module holds the engine's vocabulary (accesses, outcomes, errors). The lookup is
//! [`Mm::fault`](crate::Mm::fault)'s; the decision and the install are
//! [`Memory`](crate::Memory)'s (`settle`, `read_in`), so that designs that find and protect
//! VMAs another way (the benchmark's baselines) fault exactly the same way.
//!
//! Entries: anonymous memory and private copies are `PRIVATE` frames; file pages are the
//! backing's cached frames, mapped read-only in private mappings until a write copies them
//! (copy-on-write) and writable in shared writable mappings (writes reach the file's page).

use crate::page_cache::BackingError;
use std::fmt;
use vma::{Mapping, Prot};

/// The kind of access that faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A load.
    Read,
    /// A store.
    Write,
    /// An instruction fetch: allowed where the mapping is executable, and mapped as a load
    /// maps the page (the translations model no no-execute bit: a CPU's fetch through a
    /// present translation is checked against the VMA when it faults).
    Exec,
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

/// How far [`Memory::settle`](crate::Memory::settle) got without blocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The fault is resolved.
    Done(Fault),
    /// The file page at this page offset must be read first: see [`Memory::read_in`](crate::Memory::read_in).
    Blocking(u64),
    /// A writer has fenced the page's range (see [`Memory::with_fault_fence`](crate::Memory::with_fault_fence)):
    /// drop the guard, wait ([`Memory::wait_for_fence`](crate::Memory::wait_for_fence)) and
    /// fault again.
    Fenced,
}

/// MAP_POPULATE and mlock (Linux's `populate_vma_page_range`): faults in every page of
/// `[start, start + len)`, pages of `step` bytes, through `fault` — for writing in a private
/// writable mapping (its pages become the mapping's own, as a write would make them), for
/// reading otherwise; nothing where `prot` allows no access. A fault that fails ends it.
/// Returns whether every page came in (false where `prot` allows no access): MAP_POPULATE
/// ignores the answer (the mmap has succeeded all the same, as on Linux), mlock answers ENOMEM.
pub fn populate(
    (start, len, step): (u64, u64, u64),
    (prot, shared): (vma::Prot, bool),
    mut fault: impl FnMut(u64, Access) -> Result<Fault, FaultError>,
) -> bool {
    if !prot.any() {
        return false;
    }
    let access = if prot.write && !shared {
        Access::Write
    } else {
        Access::Read
    };
    (start..start + len)
        .step_by(step as usize)
        .all(|addr| fault(addr, access).is_ok())
}

/// Whether `mapping` permits `access`.
pub fn allows(mapping: &Mapping, access: Access) -> bool {
    match access {
        Access::Read => readable(mapping.prot),
        Access::Write => mapping.prot.write,
        Access::Exec => mapping.prot.exec,
    }
}

/// Whether `prot` lets a CPU read (x86: write and execute imply read).
pub(crate) fn readable(prot: Prot) -> bool {
    prot != Prot::NONE
}
