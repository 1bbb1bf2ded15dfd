//! `snapshot`: an immutable VMA map behind an `ArcSwap`. Faults load the current snapshot
//! wait-free and keep it while they install; a writer (serialized by a mutex) copies the map
//! (O(VMAs)), applies its change and publishes it twice:
//!
//! 1. the new map with the changed range marked settling — faults there wait (yielding) for
//!    the next snapshot, as this project's faults wait on BABY;
//! 2. after the readers of the old snapshot are gone (its reference count, which arc-swap
//!    makes exact when it is replaced, drops to the writer's own) and the range is flushed,
//!    the same map without the mark.
//!
//! Without step 1 a fault could find the new mapping while the old translations are still
//! there and read old contents through it.

use super::vma_map::{Op, VmaMap};
use super::{
    Design, Parts, bounded, discard_in, fault_locked, flush_and_unlink, fork_baseline, link_added,
    maps_files, page_in, unlink_all,
};
use arc_swap::ArcSwap;
use fault::{Access, Fault, FaultError, Mapper, Memory};
use maple::rcu::DefaultRcu;
use maple::sync::{Mutex, thread};
use std::sync::{Arc, Weak};
use std::time::Instant;
use vma::{Layout, Prot};

/// One published version.
struct Snapshot {
    map: Arc<VmaMap>,
    /// A range whose new mappings are not usable yet.
    settling: Option<(u64, u64)>,
}

impl Snapshot {
    fn settling(&self, start: u64, end: u64) -> bool {
        self.settling.is_some_and(|(from, to)| start < to && from < end)
    }
}

/// See the module documentation.
pub struct SnapshotDesign {
    layout: Layout,
    current: ArcSwap<Snapshot>,
    writer: Mutex<()>,
    memory: Memory,
    rcu: DefaultRcu,
    /// This design, as the reverse maps of the files it maps know it.
    mapper: Weak<dyn Mapper>,
}

impl SnapshotDesign {
    /// An empty address space over `memory`, known to files' reverse maps as `mapper` (itself:
    /// see `designs::build`).
    pub fn new(layout: Layout, memory: Memory, mapper: Weak<dyn Mapper>) -> Self {
        Self {
            layout,
            current: ArcSwap::from_pointee(Snapshot {
                map: Arc::new(VmaMap::new(layout)),
                settling: None,
            }),
            writer: Mutex::new(()),
            memory,
            rcu: DefaultRcu::default(),
            mapper,
        }
    }

    /// The current snapshot with `[start, end)` usable, waiting (yielding) while a writer
    /// settles it.
    fn usable(&self, start: u64, end: u64) -> arc_swap::Guard<Arc<Snapshot>> {
        let snapshot = self.current.load();
        if !snapshot.settling(start, end) {
            return snapshot;
        }
        drop(snapshot);
        let since = Instant::now();
        loop {
            thread::yield_now();
            let snapshot = self.current.load();
            if !snapshot.settling(start, end) {
                self.memory.record_wait(since.elapsed());
                return snapshot;
            }
        }
    }
}

impl Design for SnapshotDesign {
    fn parts(&self) -> Parts<'_> {
        Parts {
            name: "snapshot",
            layout: self.layout,
            memory: &self.memory,
            rcu: &self.rcu,
        }
    }

    fn change(&self, op: Op) -> vma::Result<u64> {
        let _writer = self.writer.lock().unwrap();
        let old_map = self.current.load().map.clone();
        let planned = old_map.plan(&op)?;
        if planned.is_empty() {
            return planned.result;
        }
        let mut map = VmaMap::clone(&old_map);
        drop(old_map);
        for change in &planned.changes {
            map.apply(change);
        }
        let map = Arc::new(map);
        link_added(&self.mapper, &planned.changes);
        if planned.flushes.is_empty() {
            // Nothing mapped changes meaning (mremap growing in place): publish at once.
            self.current.store(Arc::new(Snapshot { map, settling: None }));
            flush_and_unlink(self, &self.mapper, (&[], &planned.changes));
            return planned.result;
        }
        let old = self.current.swap(Arc::new(Snapshot {
            map: map.clone(),
            settling: Some(planned.flushed_span()),
        }));
        // arc-swap pays its readers' debts on the old value when it is replaced: from now on
        // every reader of `old` holds a counted reference.
        while Arc::strong_count(&old) > 1 {
            thread::yield_now();
        }
        drop(old);
        let flushes = bounded(&map, &planned.flushes);
        flush_and_unlink(self, &self.mapper, (&flushes, &planned.changes));
        self.current.store(Arc::new(Snapshot { map, settling: None }));
        planned.result
    }

    /// One copy of the map for all of them (each is new memory in free space: nothing to
    /// flush, no reader to wait for).
    fn map_all(&self, requests: Vec<vma::request::MmapRequest>) -> vma::Result<()> {
        let _writer = self.writer.lock().unwrap();
        let mut map = VmaMap::clone(&self.current.load().map);
        let mut changes = Vec::new();
        for request in requests {
            let planned = map.plan(&Op::Map(request))?;
            for change in &planned.changes {
                map.apply(change);
            }
            changes.extend(planned.changes);
        }
        link_added(&self.mapper, &changes);
        self.current.store(Arc::new(Snapshot {
            map: Arc::new(map),
            settling: None,
        }));
        Ok(())
    }

    fn discard(&self, start: u64, end: u64) -> vma::Result<()> {
        let snapshot = self.usable(start, end);
        discard_in(&self.memory, &snapshot.map, start, end, &self.rcu)
    }

    fn fault(&self, addr: u64, access: Access) -> Result<Fault, FaultError> {
        let page = page_in(&self.memory, self.layout, addr)?;
        let snapshot = self.usable(page, page + vma::PAGE_SIZE);
        fault_locked(&self.memory, &self.rcu, snapshot.map.lookup(page), page, access)
    }

    fn vmas(&self) -> Vec<(u64, u64, Prot)> {
        self.current.load().map.ranges()
    }

    fn fork(&self) -> vma::Result<Arc<dyn Design>> {
        let _writer = self.writer.lock().unwrap();
        let map = self.current.load().map.clone();
        // The same map, with the whole space settling: faults wait for the fork, as for a
        // change of everything; the readers of the old snapshot are waited for first.
        let whole = (self.layout.low, self.layout.high);
        let old = self.current.swap(Arc::new(Snapshot {
            map: map.clone(),
            settling: Some(whole),
        }));
        while Arc::strong_count(&old) > 1 {
            thread::yield_now();
        }
        drop(old);
        let child = fork_baseline(self, &map.mappings().cloned().collect::<Vec<_>>());
        self.current.store(Arc::new(Snapshot { map, settling: None }));
        child
    }
}

maps_files!(SnapshotDesign);

impl Drop for SnapshotDesign {
    fn drop(&mut self) {
        unlink_all(&self.mapper, &self.current.load().map);
    }
}
