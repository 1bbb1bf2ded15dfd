//! `cortenmm`: the locking of CortenMM (SOSP 2025) as a design over the same page table and
//! frames. CortenMM keeps no VMA tree behind a lock: a fault walks the page table under RCU and
//! locks only the page-table node (2 MiB of address space, a leaf table) it installs into; a
//! writer locks the nodes its change covers, so writers of disjoint ranges run in parallel.
//!
//! Here:
//! - **Node locks.** Every 2 MiB node has a reader-writer lock (striped: node `n` uses lock
//!   `n % STRIPES`, so a change over more nodes than stripes takes them all). A fault
//!   read-locks its node's; a writer write-locks those of every node its flushes touch, in
//!   stripe order.
//! - **Mapping state, read lock-free.** The mappings sit in an RCU maple tree that faults read
//!   under a guard while holding their node's lock: a writer changes what a page maps only with
//!   that page's node locked for writing, so a fault sees a settled mapping. CortenMM stores the
//!   same state in the page-table nodes' entries; the tree stands in for that storage.
//! - **Writers** follow `rangelock`'s protocol: plan under a short mutex (the map of mappings
//!   the semantics are computed on), lock the nodes of the span, plan again (retrying if
//!   another writer moved it), apply — the tree in one publication per change, so a neighbour
//!   merged into the change changes meaning for no page — and flush with only the nodes held.
//!   A zap frees the page tables of the free space around its range only within the nodes
//!   its range touches (which it holds), where the other designs free all of them; the
//!   tables above the leaves stay until an unmap of free space covers them (CortenMM's munmap
//!   walks the page table over its range whatever the mappings) or an unmap of the whole
//!   address space.
//!
//! Differences from CortenMM: the per-node state lives in a tree rather than in the page
//! table's entries, the node locks are striped, and writers still plan under one short mutex
//! (CortenMM's mmap searches free space in the page table itself).

use super::vma_map::{Change, Flush, Op, VmaMap};
use super::{
    BoundedFlush, Design, Parts, bounded, discard_in, fault_locked, flush_and_unlink, fork_baseline,
    link_added, maps_files, page_in, timed, unlink_all,
};
use fault::{Access, Fault, FaultError, Mapper, Memory};
use maple::MapleTree;
use maple::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::sync::{Arc, Weak};
use vma::{Layout, Mapping, Prot};

/// A page-table node's span of address space: a leaf table's 2 MiB.
const NODE_SHIFT: u32 = 21;
/// Node locks (a power of two).
const STRIPES: usize = 4096;

/// The stripes of the nodes `[start, end)` touches, in order (every stripe for a wide range).
fn stripes_of(start: u64, end: u64) -> Vec<usize> {
    if start >= end {
        return Vec::new();
    }
    let (first, last) = (start >> NODE_SHIFT, (end - 1) >> NODE_SHIFT);
    if last - first >= STRIPES as u64 {
        return (0..STRIPES).collect();
    }
    let mut stripes: Vec<usize> = (first..=last).map(|node| node as usize % STRIPES).collect();
    stripes.sort_unstable();
    stripes.dedup();
    stripes
}

/// The range a flush changes translations in (a relocation, both of its ranges).
fn flushed(flush: &Flush) -> [(u64, u64); 2] {
    flush.ranges()
}

/// See the module documentation.
pub struct CortenDesign {
    layout: Layout,
    nodes: Box<[RwLock<()>]>,
    /// The mappings, as faults read them (see the module documentation).
    tree: MapleTree<Box<Mapping>>,
    /// The mappings the writers plan on.
    map: Mutex<VmaMap>,
    memory: Memory,
    /// This design, as the reverse maps of the files it maps know it.
    mapper: Weak<dyn Mapper>,
}

impl CortenDesign {
    /// An empty address space over `memory`, known to files' reverse maps as `mapper` (itself:
    /// see `designs::build`).
    pub fn new(layout: Layout, memory: Memory, mapper: Weak<dyn Mapper>) -> Self {
        Self {
            layout,
            nodes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
            tree: MapleTree::new(),
            map: Mutex::new(VmaMap::new(layout)),
            memory,
            mapper,
        }
    }

    /// What a writer of `op`'s `flushes` locks, computed on `map` before their changes apply
    /// (which only shrink the free space): each flush, a zap with the free space around it
    /// where tables may be freed, within the nodes its range touches (so it locks no others),
    /// or all of it for an unmap of the whole address space (teardown, which locks every
    /// node).
    fn bound(&self, map: &VmaMap, op: &Op, flushes: &[Flush]) -> Vec<BoundedFlush> {
        const NODE: u64 = 1 << NODE_SHIFT;
        let teardown =
            matches!(*op, Op::Unmap(start, end) if start <= self.layout.low && end >= self.layout.high);
        flushes
            .iter()
            .map(|&flush| match flush {
                Flush::Zap(start, end) => {
                    let (floor, ceiling) = map.free_around(start, end);
                    if teardown {
                        return (flush, (floor, ceiling));
                    }
                    let within = (
                        start & !(NODE - 1),
                        end.checked_next_multiple_of(NODE).unwrap_or(u64::MAX),
                    );
                    (flush, (floor.max(within.0), ceiling.min(within.1)))
                }
                other => (other, (0, 0)),
            })
            .collect()
    }

    /// Write-locks, in stripe order, the nodes of every range `flushes` change, and of the
    /// free space whose tables a zap may free.
    fn lock_nodes(&self, flushes: &[BoundedFlush]) -> Vec<RwLockWriteGuard<'_, ()>> {
        let mut stripes: Vec<usize> = flushes
            .iter()
            .flat_map(|(flush, tables)| flushed(flush).into_iter().chain([*tables]))
            .flat_map(|(start, end)| stripes_of(start, end))
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .map(|s| self.nodes[s].write().unwrap())
            .collect()
    }

    /// Read-locks the node of `page` for a fault, recording a wait.
    fn read_node(&self, page: u64) -> RwLockReadGuard<'_, ()> {
        let lock = &self.nodes[(page >> NODE_SHIFT) as usize % STRIPES];
        timed(&self.memory, || lock.try_read().ok(), || lock.read().unwrap())
    }

    /// munmap of a range where nothing is mapped: frees the page tables left in it and in the
    /// free space around it, as CortenMM's munmap walks the page table over its range whatever
    /// the mappings (a zap frees tables only within the nodes its range touches, so others
    /// stay until an unmap of free space covers them). Those nodes are held, so no mmap (which
    /// locks its nodes) can map there meanwhile.
    fn free_tables(&self, start: u64, end: u64) {
        // The free space around the range, whose tables may go too: its nodes are locked
        // first, then checked still free.
        let (floor, ceiling) = self.map.lock().unwrap().free_around(start, end);
        let _nodes = self.lock_nodes(&[(Flush::Zap(floor, ceiling), (floor, ceiling))]);
        if self.map.lock().unwrap().free(floor, ceiling) {
            self.memory.zap(start, end, (floor, ceiling), self.tree.rcu());
        }
    }

    /// Puts `change` into the tree in one publication over the range it rewrites.
    fn publish(&self, change: &Change) {
        let bounds = change
            .removed
            .iter()
            .chain(&change.added)
            .map(|m| (m.start, m.end));
        let Some((lo, hi)) = bounds.reduce(|(lo, hi), (start, end)| (lo.min(start), hi.max(end))) else {
            return;
        };
        let values = change
            .added
            .iter()
            .map(|m| (m.start, m.end - 1, Box::new(m.clone())))
            .collect();
        let mut writer = self.tree.lock();
        // The displaced mappings go back a grace period later (readers may hold them).
        drop(
            writer
                .replace_exact(lo, hi - 1, values)
                .expect("a change covers whole mappings"),
        );
    }
}

impl Design for CortenDesign {
    fn parts(&self) -> Parts<'_> {
        Parts {
            name: "cortenmm",
            layout: self.layout,
            memory: &self.memory,
            rcu: self.tree.rcu(),
        }
    }

    fn barrier(&self) {
        // Displaced mappings wait in the tree's queue for writers to free them in batches: free
        // them now, so that the files they map are dropped too.
        self.tree.flush_retired();
        maple::rcu::Rcu::barrier(self.tree.rcu());
    }

    fn change(&self, op: Op) -> vma::Result<u64> {
        loop {
            let (planned, locked) = {
                let map = self.map.lock().unwrap();
                let planned = map.plan(&op)?;
                let locked = self.bound(&map, &op, &planned.flushes);
                (planned, locked)
            };
            if planned.is_empty() {
                if let Op::Unmap(start, end) = op {
                    self.free_tables(start, end);
                }
                return planned.result;
            }
            let _nodes = self.lock_nodes(&locked);
            let mut map = self.map.lock().unwrap();
            let again = map.plan(&op)?;
            if again.is_empty() || self.bound(&map, &op, &again.flushes) != locked {
                // Another writer changed the map meanwhile: plan again.
                continue;
            }
            link_added(&self.mapper, &again.changes);
            for change in &again.changes {
                map.apply(change);
                self.publish(change);
            }
            // The tables a zap frees: the free space around it once the changes are in,
            // within the nodes held.
            let flushes: Vec<BoundedFlush> = bounded(&map, &again.flushes)
                .into_iter()
                .zip(&locked)
                .map(|((flush, (floor, ceiling)), &(_, (low, high)))| {
                    (flush, (floor.max(low), ceiling.min(high)))
                })
                .collect();
            drop(map);
            flush_and_unlink(self, &self.mapper, (&flushes, &again.changes));
            return again.result;
        }
    }

    fn discard(&self, start: u64, end: u64) -> vma::Result<()> {
        let _nodes: Vec<_> = stripes_of(start, end)
            .into_iter()
            .map(|s| self.nodes[s].read().unwrap())
            .collect();
        discard_in(
            &self.memory,
            &self.map.lock().unwrap(),
            start,
            end,
            self.tree.rcu(),
        )
    }

    fn fault(&self, addr: u64, access: Access) -> Result<Fault, FaultError> {
        let page = page_in(&self.memory, self.layout, addr)?;
        let _node = self.read_node(page);
        let guard = self.tree.guard_at(page);
        let mapping = self.tree.load(page, &guard);
        fault_locked(&self.memory, self.tree.rcu(), mapping, page, access)
    }

    fn vmas(&self) -> Vec<(u64, u64, Prot)> {
        self.map.lock().unwrap().ranges()
    }

    fn fork(&self) -> vma::Result<Arc<dyn Design>> {
        // Every node locked for writing: every fault and writer waits for the fork.
        let _all: Vec<_> = self.nodes.iter().map(|node| node.write().unwrap()).collect();
        let mappings: Vec<_> = self.map.lock().unwrap().mappings().cloned().collect();
        fork_baseline(self, &mappings)
    }
}

maps_files!(CortenDesign);

impl Drop for CortenDesign {
    fn drop(&mut self) {
        unlink_all(&self.mapper, &self.map.lock().unwrap());
    }
}

#[cfg(all(test, not(feature = "shuttle")))]
mod tests {
    use super::{STRIPES, stripes_of};

    #[test]
    fn a_range_takes_the_stripes_of_its_nodes_in_order() {
        assert_eq!(stripes_of(0, 4096), [0]);
        assert_eq!(stripes_of((2 << 20) - 4096, (2 << 20) + 4096), [0, 1]);
        let wrapping = (STRIPES as u64 - 1) << 21;
        assert_eq!(stripes_of(wrapping, wrapping + (4 << 20)), [0, STRIPES - 1]);
        assert_eq!(stripes_of(0, 1 << 45).len(), STRIPES);
        assert!(stripes_of(4096, 4096).is_empty());
    }
}
