//! `pervma`: the kernel's per-VMA locks as of Linux 6.15 (`lock_vma_under_rcu`,
//! `vma_start_read`, `vma_start_write`, `vm_refcnt`).
//!
//! VMAs sit in a maple tree read under RCU; each has a reference count that is also its read
//! lock, and the sequence number of the mmap-lock write session that write-locked it:
//!
//! | `refcnt` | meaning |
//! |---|---|
//! | 0 | detached: out of the tree, waiting for its grace period |
//! | 1 | attached, no readers |
//! | 1 + n | attached, n readers (faults) |
//! | `LOCK_OFFSET` + 1 + n | a writer waits for n readers to leave; no reader may enter |
//!
//! A fault looks the VMA up under RCU and read-locks it: not if its `lock_seq` equals the
//! address space's `mm_lock_seq` (write-locked this session), not if `refcnt` is 0 or carries
//! the offset; then it checks `lock_seq` again (a writer may have locked it between). If that
//! fails (or nothing is found), it falls back to the mmap lock for reading, as Linux does.
//! Writers take the mmap lock for writing (serialized), write-lock every VMA they replace
//! (set `lock_seq`, add the offset, wait for readers to drain, take the offset off), insert
//! new VMAs already write-locked, change the tree, flush_and_unlink, detach the old VMAs (retired to the
//! tree's RCU domain), and unlock all their VMAs at once by incrementing `mm_lock_seq` before
//! releasing the mmap lock. Faults on VMAs no writer touches never wait.

use super::vma_map::{Op, VmaMap};
use super::{
    Design, Parts, baseline, bounded, discard_in, fault_locked, flush_and_unlink, fork_baseline, link_added,
    maps_files, page_in, timed, unlink_all,
};
use fault::{Access, Fault, FaultError, FileSync, Mapper, Memory};
use maple::rcu::DefaultRcu;
use maple::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use maple::sync::{Backoff, RwLock};
use maple::{Guard, MapleTree};
use std::sync::{Arc, Weak};
use vma::{Layout, Mapping, Prot};

const ATTACHED: u32 = 1;
const LOCK_OFFSET: u32 = 1 << 30;
/// Readers may not raise the count to this (a writer's offset is there).
const REF_LIMIT: u32 = LOCK_OFFSET - 1;

/// A VMA with its per-VMA lock (see the module documentation).
struct PerVma {
    mapping: Mapping,
    refcnt: AtomicU32,
    lock_seq: AtomicU64,
}

impl PerVma {
    /// A VMA born write-locked by the session `seq`.
    fn new(mapping: Mapping, seq: u64) -> Self {
        Self {
            mapping,
            refcnt: AtomicU32::new(ATTACHED),
            lock_seq: AtomicU64::new(seq),
        }
    }

    /// `vma_start_read`: takes a read lock unless the VMA is write-locked or detached.
    fn start_read(&self, mm_lock_seq: &AtomicU64) -> bool {
        // Acquire (both loads) pairs with the writer's Release increment of mm_lock_seq and
        // its Release offset removal: a lock taken by an earlier session is seen released.
        if self.lock_seq.load(Ordering::Acquire) == mm_lock_seq.load(Ordering::Acquire) {
            return false;
        }
        let mut count = self.refcnt.load(Ordering::Relaxed);
        loop {
            if count == 0 || count >= REF_LIMIT {
                return false;
            }
            // Acquire pairs with the writer's Release offset removal: a VMA locked before our
            // increment shows its lock_seq to the check below.
            match self
                .refcnt
                .compare_exchange_weak(count, count + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => count = now,
            }
        }
        if self.lock_seq.load(Ordering::Acquire) == mm_lock_seq.load(Ordering::Acquire) {
            self.end_read();
            return false;
        }
        true
    }

    /// `vma_end_read`.
    fn end_read(&self) {
        // Release pairs with the Acquire load of a writer waiting for readers to drain: the
        // fault's page-table work happens before the writer's flush.
        self.refcnt.fetch_sub(1, Ordering::Release);
    }

    /// `vma_start_write` in session `seq` (under the mmap write lock): no reader holds or can
    /// take the VMA's read lock until the session ends. `drain` false skips waiting for the
    /// readers already in (the deliberately broken variant).
    fn start_write(&self, seq: u64, drain: bool) {
        if self.lock_seq.load(Ordering::Relaxed) == seq {
            return;
        }
        self.lock_seq.store(seq, Ordering::Relaxed);
        // AcqRel: Release publishes lock_seq to readers whose increment comes after; the
        // offset stops new readers.
        self.refcnt.fetch_add(LOCK_OFFSET, Ordering::AcqRel);
        if drain {
            wait_until(|| self.refcnt.load(Ordering::Acquire) == LOCK_OFFSET + ATTACHED);
        }
        // Release pairs with the Acquire increment of readers: they see lock_seq and back off.
        self.refcnt.fetch_sub(LOCK_OFFSET, Ordering::Release);
    }

    /// `vma_mark_detached`: waits for readers that raised the count and are backing off.
    fn detach(&self) {
        wait_until(|| {
            self.refcnt
                .compare_exchange(ATTACHED, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
    }
}

/// Waits (the facade's spin-then-yield backoff) until `done`.
fn wait_until(mut done: impl FnMut() -> bool) {
    let mut backoff = Backoff::new();
    while !done() {
        backoff.snooze();
    }
}

/// See the module documentation.
pub struct PerVmaDesign {
    layout: Layout,
    /// The mmap lock; the map it guards mirrors the tree (writers plan on it).
    mmap_lock: RwLock<VmaMap>,
    tree: MapleTree<Arc<PerVma>>,
    /// The current write session; VMAs whose `lock_seq` equals it are write-locked.
    mm_lock_seq: AtomicU64,
    memory: Memory,
    /// Writers wait for readers when they write-lock a VMA (false only in the broken variant).
    drain_readers: bool,
    /// This design, as the reverse maps of the files it maps know it.
    mapper: Weak<dyn Mapper>,
    /// How the files it maps are protected: `i_mmap_rwsem` (`pervma`) or Kravetz's
    /// `hugetlb_vma_lock` (`hugetlb-vma-lock`).
    file_sync: FileSync,
}

impl PerVmaDesign {
    /// An empty address space over `memory`, known to files' reverse maps as `mapper` (itself:
    /// see `designs::build`).
    pub fn new(layout: Layout, memory: Memory, mapper: Weak<dyn Mapper>) -> Self {
        Self {
            layout,
            mmap_lock: RwLock::new(VmaMap::new(layout)),
            tree: MapleTree::new(),
            mm_lock_seq: AtomicU64::new(0),
            memory,
            drain_readers: true,
            mapper,
            file_sync: FileSync::RwSem,
        }
    }

    /// The design `hugetlb-vma-lock`: the same address space, with the files it maps protected
    /// as Kravetz's `hugetlb_vma_lock` (seed 000) protects hugetlb files: a fault holds its
    /// VMA's read lock, which munmap write-locks, and takes the file's `i_mmap_rwsem` only to
    /// look for a page table to share (see `fault::FileSync::VmaLock`).
    pub fn with_hugetlb_vma_lock(layout: Layout, memory: Memory, mapper: Weak<dyn Mapper>) -> Self {
        let mut design = Self::new(layout, memory, mapper);
        design.file_sync = FileSync::VmaLock;
        design
    }

    /// A deliberately broken variant whose writers do not wait for readers to leave the VMAs
    /// they write-lock: faults may install translations after the flush. For the test that
    /// shows the correctness suite catches a wrong design.
    #[doc(hidden)]
    pub fn with_broken_write_lock(layout: Layout, memory: Memory) -> Arc<dyn Design> {
        baseline(|mapper| {
            let mut design = Self::new(layout, memory, mapper);
            design.drain_readers = false;
            design
        })
    }

    /// `lock_vma_under_rcu`: the VMA covering `page`, read-locked, if that works without
    /// waiting.
    fn lock_vma_under_rcu<'g>(&self, page: u64, guard: &'g Guard<'_, DefaultRcu>) -> Option<&'g PerVma> {
        let vma = self.tree.load(page, guard)?;
        vma.start_read(&self.mm_lock_seq).then_some(vma)
    }
}

impl Design for PerVmaDesign {
    fn parts(&self) -> Parts<'_> {
        Parts {
            name: if self.file_sync == FileSync::VmaLock {
                "hugetlb-vma-lock"
            } else {
                "pervma"
            },
            layout: self.layout,
            memory: &self.memory,
            rcu: self.tree.rcu(),
        }
    }

    fn file_sync(&self) -> FileSync {
        self.file_sync
    }

    fn barrier(&self) {
        // Detached VMAs wait in the tree's queue for writers to free them in batches: free them
        // now, so that the files they map are dropped too.
        self.tree.flush_retired();
        maple::rcu::Rcu::barrier(self.tree.rcu());
    }

    fn change(&self, op: Op) -> vma::Result<u64> {
        let mut map = self.mmap_lock.write().unwrap();
        let planned = map.plan(&op)?;
        if planned.is_empty() {
            return planned.result;
        }
        let seq = self.mm_lock_seq.load(Ordering::Relaxed);
        link_added(&self.mapper, &planned.changes);
        let mut displaced = Vec::new();
        for change in &planned.changes {
            // Lock what this change replaces (an earlier change may have added it).
            let guard = self.tree.guard();
            for m in &change.removed {
                self.tree
                    .load(m.start, &guard)
                    .expect("the tree mirrors the map")
                    .start_write(seq, self.drain_readers);
            }
            drop(guard);
            for m in &change.removed {
                displaced.push(self.tree.erase_range(m.start, m.end - 1).expect("a valid range"));
            }
            for m in &change.added {
                self.tree
                    .insert_range(m.start, m.end - 1, Arc::new(PerVma::new(m.clone(), seq)))
                    .expect("the range was emptied");
            }
            map.apply(change);
        }
        let flushes = bounded(&map, &planned.flushes);
        flush_and_unlink(self, &self.mapper, (&flushes, &planned.changes));
        for (_, _, vma) in displaced.iter().flat_map(|d| d.iter()) {
            vma.detach();
        }
        drop(displaced);
        // Release pairs with the readers' Acquire loads: unlocks every VMA of this session.
        self.mm_lock_seq.fetch_add(1, Ordering::Release);
        drop(map);
        planned.result
    }

    fn discard(&self, start: u64, end: u64) -> vma::Result<()> {
        // Linux 6.15 takes the mmap lock for reading for MADV_DONTNEED.
        let map = timed(
            &self.memory,
            || self.mmap_lock.try_read().ok(),
            || self.mmap_lock.read().unwrap(),
        );
        discard_in(&self.memory, &map, start, end, self.tree.rcu())
    }

    fn fault(&self, addr: u64, access: Access) -> Result<Fault, FaultError> {
        let page = page_in(&self.memory, self.layout, addr)?;
        // Keyed at the page (the kernel's lock_vma_under_rcu looks up one address too).
        let guard = self.tree.guard_at(page);
        if let Some(vma) = self.lock_vma_under_rcu(page, &guard) {
            // The read lock keeps writers from flushing the VMA's range; the guard is kept for
            // the page-table walk (and through a blocking read, which delays only reclamation).
            let result = fault_locked(&self.memory, self.tree.rcu(), Some(&vma.mapping), page, access);
            vma.end_read();
            return result;
        }
        drop(guard);
        let map = timed(
            &self.memory,
            || self.mmap_lock.try_read().ok(),
            || self.mmap_lock.read().unwrap(),
        );
        fault_locked(&self.memory, self.tree.rcu(), map.lookup(page), page, access)
    }

    fn vmas(&self) -> Vec<(u64, u64, Prot)> {
        self.mmap_lock.read().unwrap().ranges()
    }

    fn fork(&self) -> vma::Result<Arc<dyn Design>> {
        // Linux's dup_mmap: the mmap lock for writing, and every VMA write-locked for the
        // whole copy, so every fault waits for the fork.
        let map = self.mmap_lock.write().unwrap();
        let seq = self.mm_lock_seq.load(Ordering::Relaxed);
        let guard = self.tree.guard();
        for (_, _, vma) in self.tree.iter(&guard) {
            vma.start_write(seq, self.drain_readers);
        }
        drop(guard);
        let child = fork_baseline(self, &map.mappings().cloned().collect::<Vec<_>>());
        // Release pairs with the readers' Acquire loads: unlocks every VMA of this session.
        self.mm_lock_seq.fetch_add(1, Ordering::Release);
        drop(map);
        child
    }
}

#[cfg(all(test, not(feature = "shuttle")))]
mod tests {
    use super::*;
    use vma::{Backing, Prot};

    fn vma(seq: u64) -> PerVma {
        let mapping = Mapping {
            start: 0x1000,
            end: 0x2000,
            prot: Prot::READ_WRITE,
            shared: false,
            backing: Backing::Anonymous,
            pgoff: 1,
            growsdown: false,
            accounted: true,
            name: None,
            dontfork: false,
            locked: false,
            noreserve: false,
            nohugepage: false,
            droppable: false,
            sync: false,
            anon: Default::default(),
        };
        PerVma::new(mapping, seq)
    }

    #[test]
    fn a_vma_born_in_a_session_is_locked_until_the_session_ends() {
        let mm_lock_seq = AtomicU64::new(7);
        let v = vma(7);
        assert!(!v.start_read(&mm_lock_seq), "born write-locked");
        mm_lock_seq.fetch_add(1, Ordering::Release);
        assert!(v.start_read(&mm_lock_seq), "unlocked when the session ends");
        assert_eq!(v.refcnt.load(Ordering::Relaxed), ATTACHED + 1);
        v.end_read();
        assert_eq!(v.refcnt.load(Ordering::Relaxed), ATTACHED);
    }

    #[test]
    fn a_write_lock_waits_for_readers_and_keeps_new_ones_out() {
        let mm_lock_seq = AtomicU64::new(1);
        let v = vma(0);
        assert!(v.start_read(&mm_lock_seq));
        std::thread::scope(|s| {
            let writer = s.spawn(|| v.start_write(1, true));
            // The writer's offset stops new readers while it waits for the one inside.
            while v.refcnt.load(Ordering::Acquire) < LOCK_OFFSET {
                std::thread::yield_now();
            }
            assert!(!v.start_read(&mm_lock_seq));
            assert!(!writer.is_finished(), "the writer waits for the reader");
            v.end_read();
            writer.join().unwrap();
        });
        assert_eq!(v.refcnt.load(Ordering::Relaxed), ATTACHED, "offset taken off");
        assert!(!v.start_read(&mm_lock_seq), "still locked for the session");
        v.detach();
        mm_lock_seq.fetch_add(1, Ordering::Release);
        assert!(
            !v.start_read(&mm_lock_seq),
            "a detached VMA cannot be read-locked"
        );
    }
}

maps_files!(PerVmaDesign);

impl Drop for PerVmaDesign {
    fn drop(&mut self) {
        unlink_all(&self.mapper, &self.mmap_lock.read().unwrap());
    }
}
