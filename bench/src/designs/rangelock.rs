//! `rangelock`: a range reader-writer lock (seed 004: the range lock proposed to replace
//! mmap_sem). A fault read-locks its page's range; a writer write-locks the range it changes.
//! The VMA map itself sits under a short mutex, held only to look up or apply.
//!
//! A writer plans its change under the map mutex, drops it (faults take the range lock first
//! and the mutex second, so a writer may not wait for a range holding the mutex), write-locks
//! the planned span, then plans again: if the span is still the same (no other writer moved
//! it, e.g. took the same free range), it applies and flushes while faults and writers are held
//! off the span; otherwise it retries. Merging with a neighbour outside the range does not
//! change what any page outside the range maps, so faults there need not be held off.
//!
//! Writers of disjoint spans flush concurrently. A zap may free page tables in the free space
//! around its range (as every design's does), so for a zap the span is the range plus that free
//! space: no other writer may map into it, and so no fault may fill a table there, meanwhile.
//!
//! The range lock is fair: a request waits for every earlier request it conflicts with
//! (overlapping, one of them a writer), granted or not, so a stream of faults cannot starve a
//! writer.

use super::vma_map::{Flush, Op, Planned, VmaMap};
use super::{
    Design, Parts, bounded, discard_in, fault_locked, flush_and_unlink, fork_baseline, link_added,
    maps_files, page_in, timed, unlink_all,
};
use fault::{Access, Fault, FaultError, Mapper, Memory};
use maple::rcu::DefaultRcu;
use maple::sync::{Condvar, Mutex, MutexGuard};
use std::sync::{Arc, Weak};
use std::time::Instant;
use vma::{Layout, PAGE_SIZE, Prot};

#[derive(Debug, Clone, Copy)]
struct Request {
    ticket: u64,
    start: u64,
    end: u64,
    write: bool,
}

impl Request {
    fn conflicts(&self, other: &Request) -> bool {
        self.start < other.end && other.start < self.end && (self.write || other.write)
    }
}

#[derive(Debug, Default)]
struct Requests {
    next_ticket: u64,
    /// Granted and waiting requests, in arrival order.
    queue: Vec<Request>,
    waiting: usize,
}

impl Requests {
    /// Whether the request at `index` conflicts with none before it.
    fn grantable(&self, index: usize) -> bool {
        let request = &self.queue[index];
        !self.queue[..index]
            .iter()
            .any(|earlier| earlier.conflicts(request))
    }
}

/// A fair range reader-writer lock over `u64` addresses (see the module documentation).
#[derive(Debug, Default)]
pub struct RangeLock {
    requests: Mutex<Requests>,
    changed: Condvar,
}

/// A held range; dropping it releases the range.
#[must_use = "the range is released when this is dropped"]
pub struct RangeGuard<'a> {
    lock: &'a RangeLock,
    ticket: u64,
}

impl RangeLock {
    /// An unlocked range lock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks `[start, end)` for reading or writing, waiting for conflicting earlier requests;
    /// returns the guard and whether it had to wait.
    pub fn lock(&self, start: u64, end: u64, write: bool) -> (RangeGuard<'_>, bool) {
        let mut requests = self.requests.lock().unwrap();
        let ticket = requests.next_ticket;
        requests.next_ticket += 1;
        requests.queue.push(Request {
            ticket,
            start,
            end,
            write,
        });
        let mut waited = false;
        loop {
            let index = requests
                .queue
                .iter()
                .position(|r| r.ticket == ticket)
                .expect("queued");
            if requests.grantable(index) {
                break;
            }
            waited = true;
            requests.waiting += 1;
            requests = self.changed.wait(requests).unwrap();
            requests.waiting -= 1;
        }
        (RangeGuard { lock: self, ticket }, waited)
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        let mut requests = self.lock.requests.lock().unwrap();
        requests.queue.retain(|r| r.ticket != self.ticket);
        if requests.waiting > 0 {
            self.lock.changed.notify_all();
        }
    }
}

/// Plans `op` and the span its writer must lock: every range its flushes touch, and for a zap
/// the free space around it too (the page table may free tables there; a plan's changes can
/// only shrink that free space). `(0, 0)` when nothing is flushed (mremap growing in place:
/// the map mutex alone keeps it consistent).
fn plan_in(map: &VmaMap, op: &Op) -> vma::Result<(Planned, (u64, u64))> {
    let planned = map.plan(op)?;
    let span = planned
        .flushes
        .iter()
        .flat_map(|flush| match *flush {
            Flush::Zap(start, end) => {
                let free = map.free_around(start, end);
                [free, free]
            }
            other => other.ranges(),
        })
        .reduce(|(lo, hi), (start, end)| (lo.min(start), hi.max(end)))
        .unwrap_or((0, 0));
    Ok((planned, span))
}

/// See the module documentation.
pub struct RangeLockDesign {
    layout: Layout,
    ranges: RangeLock,
    map: Mutex<VmaMap>,
    memory: Memory,
    rcu: DefaultRcu,
    /// This design, as the reverse maps of the files it maps know it.
    mapper: Weak<dyn Mapper>,
}

impl RangeLockDesign {
    /// An empty address space over `memory`, known to files' reverse maps as `mapper` (itself:
    /// see `designs::build`).
    pub fn new(layout: Layout, memory: Memory, mapper: Weak<dyn Mapper>) -> Self {
        Self {
            layout,
            ranges: RangeLock::new(),
            map: Mutex::new(VmaMap::new(layout)),
            memory,
            rcu: DefaultRcu::default(),
            mapper,
        }
    }

    /// The map mutex, for faults (a wait is recorded).
    fn map(&self) -> MutexGuard<'_, VmaMap> {
        timed(
            &self.memory,
            || self.map.try_lock().ok(),
            || self.map.lock().unwrap(),
        )
    }

    /// Read-locks `[start, end)` for a fault, recording a wait.
    fn read_range(&self, start: u64, end: u64) -> RangeGuard<'_> {
        let since = Instant::now();
        let (guard, waited) = self.ranges.lock(start, end, false);
        if waited {
            self.memory.record_wait(since.elapsed());
        }
        guard
    }
}

impl Design for RangeLockDesign {
    fn parts(&self) -> Parts<'_> {
        Parts {
            name: "rangelock",
            layout: self.layout,
            memory: &self.memory,
            rcu: &self.rcu,
        }
    }

    fn change(&self, op: Op) -> vma::Result<u64> {
        loop {
            let (planned, span) = plan_in(&self.map.lock().unwrap(), &op)?;
            if planned.is_empty() {
                return planned.result;
            }
            let _range = self.ranges.lock(span.0, span.1, true).0;
            let mut map = self.map.lock().unwrap();
            let (planned, now) = plan_in(&map, &op)?;
            if planned.is_empty() || now != span {
                // Another writer changed the map meanwhile: plan again.
                continue;
            }
            for change in &planned.changes {
                map.apply(change);
            }
            let flushes = bounded(&map, &planned.flushes);
            drop(map);
            // Faults and writers are held off the span by the range lock; the map is free.
            link_added(&self.mapper, &planned.changes);
            flush_and_unlink(self, &self.mapper, (&flushes, &planned.changes));
            return planned.result;
        }
    }

    fn discard(&self, start: u64, end: u64) -> vma::Result<()> {
        let _range = self.read_range(start, end);
        discard_in(&self.memory, &self.map(), start, end, &self.rcu)
    }

    fn fault(&self, addr: u64, access: Access) -> Result<Fault, FaultError> {
        let page = page_in(&self.memory, self.layout, addr)?;
        let _range = self.read_range(page, page + PAGE_SIZE);
        let mapping = self.map().lookup(page).cloned();
        fault_locked(&self.memory, &self.rcu, mapping.as_ref(), page, access)
    }

    fn vmas(&self) -> Vec<(u64, u64, Prot)> {
        self.map.lock().unwrap().ranges()
    }

    fn fork(&self) -> vma::Result<Arc<dyn Design>> {
        // The whole space locked for writing: every fault and writer waits for the fork.
        let _all = self.ranges.lock(self.layout.low, self.layout.high, true).0;
        let mappings: Vec<_> = self.map.lock().unwrap().mappings().cloned().collect();
        fork_baseline(self, &mappings)
    }
}

#[cfg(all(test, not(feature = "shuttle")))]
mod tests {
    use super::RangeLock;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn readers_share_and_disjoint_writers_do_not_wait() {
        let lock = RangeLock::new();
        let (_a, waited_a) = lock.lock(0, 10, false);
        let (_b, waited_b) = lock.lock(5, 15, false);
        let (_c, waited_c) = lock.lock(20, 30, true);
        assert!(!waited_a && !waited_b && !waited_c);
    }

    #[test]
    fn a_writer_waits_for_overlapping_readers_and_later_readers_wait_for_it() {
        let lock = RangeLock::new();
        let reader = lock.lock(0, 10, false).0;
        let writer_in = AtomicBool::new(false);
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                let (_guard, waited) = lock.lock(5, 6, true);
                writer_in.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                writer_in.store(false, Ordering::SeqCst);
                waited
            });
            // Let the writer queue behind the reader.
            while lock.requests.lock().unwrap().queue.len() < 2 {
                std::thread::yield_now();
            }
            assert!(
                !writer_in.load(Ordering::SeqCst),
                "the writer got in beside a reader"
            );
            let later = s.spawn(|| {
                // Arrives after the writer and overlaps it: must wait for it (fairness).
                let (_guard, waited) = lock.lock(0, 10, false);
                assert!(
                    !writer_in.load(Ordering::SeqCst),
                    "a reader got in beside the writer"
                );
                waited
            });
            while lock.requests.lock().unwrap().queue.len() < 3 {
                std::thread::yield_now();
            }
            drop(reader);
            assert!(writer.join().unwrap(), "the writer waited");
            assert!(later.join().unwrap(), "the later reader waited");
        });
        assert!(lock.requests.lock().unwrap().queue.is_empty());
    }
}

maps_files!(RangeLockDesign);

impl Drop for RangeLockDesign {
    fn drop(&mut self) {
        unlink_all(&self.mapper, &self.map.lock().unwrap());
    }
}
