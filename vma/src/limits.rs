//! Resource limits as Linux applies them to one address space: `vm.max_map_count` (how many
//! VMAs), `RLIMIT_AS` (pages mapped, Linux's `total_vm`) and `RLIMIT_DATA` (pages of private
//! writable mappings that do not grow down, Linux's `data_vm`).
//!
//! Invariant: the counters (`Counters`) hold exactly the pages of the VMAs in the tree. The protocol adds a
//! change's new VMAs and subtracts the VMAs it displaces as it publishes them (with the
//! writer lock held), and fork counts the child's VMAs as it fills the child's tree; nothing
//! else changes the tree.

use crate::PAGE_SHIFT;
use crate::vma::Mapping;
use maple::sync::atomic::{AtomicU64, Ordering};

/// Linux's default `vm.max_map_count` (`DEFAULT_MAX_MAP_COUNT`).
pub const DEFAULT_MAX_MAP_COUNT: usize = 65_530;

/// The limits of an address space (`AddressSpace::set_limits`), with Linux's rules:
/// - **`max_map_count`**: mmap and brk fail with ENOMEM when there are more VMAs than this;
///   munmap (and MAP_FIXED) of a range inside one VMA, which splits it in three, fails when
///   there are at least this many (`vms_gather_munmap_vmas`), and so do mprotect, mlock and
///   madvise when they would add VMAs (`split_vma`); mremap moving a mapping needs three VMAs
///   to spare, four more with MREMAP_FIXED.
/// - **`address_space`** (`RLIMIT_AS`, bytes): mmap, brk, mremap growing and stack growth fail
///   with ENOMEM when the pages mapped would pass it (`may_expand_vm`).
/// - **`data`** (`RLIMIT_DATA`, bytes): the same for the pages of private writable mappings
///   that do not grow down, and mprotect making such pages of others; brk fails when the heap
///   would pass it (`check_data_rlimit`).
///
/// `u64::MAX` is unlimited (`RLIM_INFINITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `vm.max_map_count`.
    pub max_map_count: usize,
    /// `RLIMIT_AS`, in bytes.
    pub address_space: u64,
    /// `RLIMIT_DATA`, in bytes.
    pub data: u64,
}

impl Limits {
    /// Linux's defaults: 65,530 VMAs, no rlimit.
    pub const LINUX: Limits = Limits {
        max_map_count: DEFAULT_MAX_MAP_COUNT,
        address_space: u64::MAX,
        data: u64::MAX,
    };

    /// Whether `pages` more pages, of a data mapping or not, fit (Linux's `may_expand_vm`).
    pub(crate) fn may_expand(&self, usage: Usage, data: bool, pages: u64) -> bool {
        let limit = |bytes: u64| bytes >> PAGE_SHIFT;
        usage.total_pages + pages <= limit(self.address_space)
            && (!data || usage.data_pages + pages <= limit(self.data))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::LINUX
    }
}

/// Pages mapped, as Linux counts them against the limits (`/proc/PID/status`: `VmSize`,
/// `VmData`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Every page mapped (`total_vm`).
    pub total_pages: u64,
    /// Pages of private writable mappings that do not grow down (`data_vm`).
    pub data_pages: u64,
}

/// Whether `RLIMIT_DATA` counts `mapping` (Linux's `is_data_mapping`: private, writable, not
/// `VM_STACK`, which is `VM_GROWSDOWN` on x86).
pub fn is_data(mapping: &Mapping) -> bool {
    mapping.prot.write && !mapping.shared && !mapping.growsdown
}

/// The space's [`Usage`], kept as its VMAs change (see the module's invariant).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    total: AtomicU64,
    data: AtomicU64,
}

impl Counters {
    /// Counts `mapping` in (`add`) or out.
    fn count(&self, mapping: &Mapping, add: bool) {
        let pages = mapping.pages();
        let apply = |counter: &AtomicU64| {
            // Relaxed: changed only by the writer holding the lock; readers outside it (usage
            // reports) take a snapshot.
            if add {
                counter.fetch_add(pages, Ordering::Relaxed);
            } else {
                counter.fetch_sub(pages, Ordering::Relaxed);
            }
        };
        apply(&self.total);
        if is_data(mapping) {
            apply(&self.data);
        }
    }

    /// A VMA mapping `mapping` entered the tree.
    pub(crate) fn add(&self, mapping: &Mapping) {
        self.count(mapping, true);
    }

    /// A VMA mapping `mapping` left the tree.
    pub(crate) fn remove(&self, mapping: &Mapping) {
        self.count(mapping, false);
    }

    /// What they hold.
    pub(crate) fn usage(&self) -> Usage {
        Usage {
            total_pages: self.total.load(Ordering::Relaxed),
            data_pages: self.data.load(Ordering::Relaxed),
        }
    }
}
