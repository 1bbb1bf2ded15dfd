//! The two address spaces of the VMA micro-benchmarks (`benches/vma.rs`, and
//! `examples/vma_instructions.rs` for callgrind counts): maplevm's [`AddressSpace`] without page
//! tables, and [`RwLockSpace`], the `rwlock` design's bookkeeping (a [`VmaMap`] under an
//! `RwLock`, planning and applying the same changes). Both are filled the same way: `n`
//! two-page VMAs side by side from [`BASE`], alternating permissions so that none merge.

use crate::designs::vma_map::{Op, VmaMap};
use std::sync::RwLock;
use vma::request::MmapRequest;
use vma::{AddressSpace, Layout, MapFlags, NoFlush, PAGE_SIZE, Prot};

/// Where the first VMA starts.
pub const BASE: u64 = 0x1000_0000;
/// Distance between the starts of neighbouring VMAs (each is this long).
pub const STRIDE: u64 = 2 * PAGE_SIZE;

/// The permissions of the `i`-th VMA.
pub fn prot_of(i: u64) -> Prot {
    if i % 2 == 0 { Prot::READ_WRITE } else { Prot::READ }
}

/// A free page above `n` VMAs, for map + unmap pairs.
pub fn free_page_above(n: u64) -> u64 {
    BASE + (n + 8) * STRIDE
}

/// The baseline: `RwLock<BTreeMap>` of VMAs.
pub struct RwLockSpace(RwLock<VmaMap>);

impl RwLockSpace {
    /// `n` VMAs (see the module documentation).
    pub fn filled(n: u64) -> Self {
        let space = Self(RwLock::new(VmaMap::new(Layout::X86_64)));
        for i in 0..n {
            space
                .mmap_fixed_noreplace(BASE + i * STRIDE, STRIDE, prot_of(i))
                .expect("free range");
        }
        space
    }

    fn change(&self, op: Op) -> vma::Result<u64> {
        self.0.write().unwrap().commit(&op)?.result
    }

    /// A private anonymous MAP_FIXED_NOREPLACE mapping.
    pub fn mmap_fixed_noreplace(&self, addr: u64, len: u64, prot: Prot) -> vma::Result<u64> {
        let flags = MapFlags::PRIVATE_ANONYMOUS.fixed_noreplace();
        self.change(Op::Map(MmapRequest::new(
            Layout::X86_64,
            addr,
            len,
            prot,
            flags,
            None,
        )?))
    }

    /// munmap of `[addr, addr + len)`.
    pub fn munmap(&self, addr: u64, len: u64) -> vma::Result<()> {
        self.change(Op::Unmap(addr, addr + len)).map(drop)
    }

    /// mprotect of `[addr, addr + len)`.
    pub fn mprotect(&self, addr: u64, len: u64, prot: Prot) -> vma::Result<u64> {
        self.change(Op::Protect(addr, addr + len, prot))
    }

    /// The start of the VMA holding `addr`, under the read lock.
    pub fn lookup(&self, addr: u64) -> Option<u64> {
        self.0.read().unwrap().lookup(addr).map(|m| m.start)
    }
}

/// maplevm's address space without page tables, with `n` VMAs (see the module documentation).
pub fn filled_address_space(n: u64) -> AddressSpace {
    let space = AddressSpace::new(Layout::X86_64, NoFlush).expect("the x86-64 layout is valid");
    let flags = MapFlags::PRIVATE_ANONYMOUS.fixed_noreplace();
    for i in 0..n {
        space
            .mmap(BASE + i * STRIDE, STRIDE, prot_of(i), flags, None)
            .expect("free range");
    }
    assert_eq!(space.vma_count() as u64, n, "the VMAs must not merge");
    space
}
