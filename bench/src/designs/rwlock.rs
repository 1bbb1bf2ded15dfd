//! `rwlock`: one reader-writer lock over a BTreeMap of VMAs for everything, as mmap_sem was
//! before Linux 6.4. Faults hold the lock for reading for the whole fault (the blocking read of
//! a file page included: Linux drops mmap_sem for I/O and retries, which this baseline does
//! not model); writers hold it for writing while they change the map and flush.

use super::vma_map::{Op, VmaMap};
use super::{
    Design, Parts, bounded, discard_in, fault_locked, flush_and_unlink, fork_baseline, link_added,
    maps_files, page_in, timed, unlink_all,
};
use fault::{Access, Fault, FaultError, Mapper, Memory};
use maple::rcu::DefaultRcu;
use maple::sync::{RwLock, RwLockReadGuard};
use std::sync::{Arc, Weak};
use vma::{Layout, Prot};

/// See the module documentation.
pub struct RwLockDesign {
    layout: Layout,
    map: RwLock<VmaMap>,
    memory: Memory,
    rcu: DefaultRcu,
    /// This design, as the reverse maps of the files it maps know it.
    mapper: Weak<dyn Mapper>,
}

impl RwLockDesign {
    /// An empty address space over `memory`, known to files' reverse maps as `mapper` (itself:
    /// see `designs::build`).
    pub fn new(layout: Layout, memory: Memory, mapper: Weak<dyn Mapper>) -> Self {
        Self {
            layout,
            map: RwLock::new(VmaMap::new(layout)),
            memory,
            rcu: DefaultRcu::default(),
            mapper,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, VmaMap> {
        timed(
            &self.memory,
            || self.map.try_read().ok(),
            || self.map.read().unwrap(),
        )
    }
}

impl Design for RwLockDesign {
    fn parts(&self) -> Parts<'_> {
        Parts {
            name: "rwlock",
            layout: self.layout,
            memory: &self.memory,
            rcu: &self.rcu,
        }
    }

    fn change(&self, op: Op) -> vma::Result<u64> {
        let mut map = self.map.write().unwrap();
        let planned = map.commit(&op)?;
        link_added(&self.mapper, &planned.changes);
        let flushes = bounded(&map, &planned.flushes);
        flush_and_unlink(self, &self.mapper, (&flushes, &planned.changes));
        planned.result
    }

    fn discard(&self, start: u64, end: u64) -> vma::Result<()> {
        discard_in(&self.memory, &self.read(), start, end, &self.rcu)
    }

    fn fault(&self, addr: u64, access: Access) -> Result<Fault, FaultError> {
        let page = page_in(&self.memory, self.layout, addr)?;
        let map = self.read();
        fault_locked(&self.memory, &self.rcu, map.lookup(page), page, access)
    }

    fn vmas(&self) -> Vec<(u64, u64, Prot)> {
        self.map.read().unwrap().ranges()
    }

    // The lock is taken for writing to keep the faults out, not to change the map.
    #[allow(clippy::readonly_write_lock)]
    fn fork(&self) -> vma::Result<Arc<dyn Design>> {
        // mmap_sem held for writing across the whole fork, as Linux did: every fault waits.
        let map = self.map.write().unwrap();
        fork_baseline(self, &map.mappings().cloned().collect::<Vec<_>>())
    }
}

maps_files!(RwLockDesign);

impl Drop for RwLockDesign {
    fn drop(&mut self) {
        unlink_all(&self.mapper, &self.map.read().unwrap());
    }
}
