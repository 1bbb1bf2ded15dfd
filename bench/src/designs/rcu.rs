//! `rcu`, `rcu-refonly` and `no-share`: this project's design, [`fault::Mm`], with the RCU-only
//! fast path on (`rcu`) or off (`rcu-refonly`: every fault takes a VMA reference), and with the
//! page tables of hugetlb mappings never shared (`no-share`, the control of PMD sharing).

use super::vma_map::Op;
use super::{Design, DesignConfig, Parts};
use fault::{Access, Fault, FaultError, FramePool, Mm, MmConfig};
use std::sync::Arc;
use vma::Prot;

/// See the module documentation.
pub struct RcuDesign {
    mm: Mm,
    name: &'static str,
}

impl RcuDesign {
    /// An empty address space taking frames from `frames`, with the fast path and PMD sharing
    /// as `variant` says: `rcu`, `rcu-refonly` or `no-share` (see the module documentation).
    ///
    /// # Panics
    /// For another name.
    pub fn new(config: DesignConfig, frames: Arc<FramePool>, variant: &'static str) -> Self {
        let config = MmConfig {
            layout: config.layout,
            zero_fill: config.zero_fill,
            fast_path: variant != "rcu-refonly",
            share_page_tables: variant != "no-share",
        };
        assert!(["rcu", "rcu-refonly", "no-share"].contains(&variant), "{variant}");
        let mm = Mm::new(config, frames).expect("a design's layout is valid");
        // The baselines apply no limits; nor does maplevm here, so the VMA-count axis may go
        // past Linux's default max_map_count for every design alike.
        mm.space().set_limits(vma::Limits {
            max_map_count: usize::MAX,
            ..vma::Limits::LINUX
        });
        Self { mm, name: variant }
    }

    /// The memory manager.
    pub fn mm(&self) -> &Mm {
        &self.mm
    }
}

impl Design for RcuDesign {
    fn parts(&self) -> Parts<'_> {
        Parts {
            name: self.name,
            layout: self.mm.space().layout(),
            memory: self.mm.memory(),
            rcu: self.mm.space().rcu(),
        }
    }

    fn change(&self, op: Op) -> vma::Result<u64> {
        match op {
            Op::Map(request) => self.mm.space().map(request),
            Op::Unmap(start, end) => self.mm.munmap(start, end - start).map(|()| 0),
            Op::Protect(start, end, prot) => self.mm.mprotect(start, end - start, prot).map(|()| 0),
            Op::Remap(request) => self.mm.space().remap(request),
            Op::Copy(_) => Err(vma::Error::new(
                vma::Errno::EINVAL,
                "maplevm copies a parent's VMAs in fork only",
            )),
        }
    }

    fn discard(&self, start: u64, end: u64) -> vma::Result<()> {
        self.mm.madvise_dontneed(start, end - start)
    }

    fn fault(&self, addr: u64, access: Access) -> Result<Fault, FaultError> {
        self.mm.fault(addr, access)
    }

    fn fork(&self) -> vma::Result<Arc<dyn Design>> {
        Ok(Arc::new(Self {
            mm: self.mm.fork()?,
            name: self.name,
        }))
    }

    fn vmas(&self) -> Vec<(u64, u64, Prot)> {
        let space = self.mm.space();
        let guard = space.guard();
        space
            .iter_from(0, &guard)
            .map(|vma| (vma.start(), vma.end(), vma.prot()))
            .collect()
    }

    fn file_sync(&self) -> fault::FileSync {
        fault::FileSync::Rcu
    }

    fn waits(&self) -> fault::Waits {
        self.mm.stats().waits
    }
}
