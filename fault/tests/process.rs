//! fork: what the child gets of each kind of mapping, copy-on-write both ways, a page one side
//! alone still holds written in place, the heap, truncate reaching the child's copies, and no
//! frame left behind once every `Mm` is dropped.
#![cfg(not(feature = "shuttle"))]

use fault::{File, FramePool, FramePoolConfig, MapFlags, Mm, MmConfig, PAGE_SIZE, Prot};
use std::sync::Arc;

const P: u64 = PAGE_SIZE;

fn pool() -> Arc<FramePool> {
    Arc::new(FramePool::new(FramePoolConfig::default()).unwrap())
}

fn mm(frames: &Arc<FramePool>) -> Mm {
    Mm::new(MmConfig::default(), frames.clone()).unwrap()
}

fn byte(mm: &Mm, addr: u64) -> u8 {
    let mut b = [0];
    mm.read(addr, &mut b).unwrap();
    b[0]
}

/// A private anonymous mapping of `pages` pages, page `i` written with `i + 1`.
fn written_pages(mm: &Mm, pages: u64) -> u64 {
    let a = mm
        .mmap(0, pages * P, Prot::READ_WRITE, MapFlags::PRIVATE_ANONYMOUS, None)
        .unwrap();
    for page in 0..pages {
        mm.write(a + page * P, &[page as u8 + 1]).unwrap();
    }
    a
}

/// A fixed private anonymous mapping that grows down (a stack).
fn stack_flags() -> MapFlags {
    MapFlags {
        growsdown: true,
        ..MapFlags::PRIVATE_ANONYMOUS.fixed()
    }
}

fn frame_of(mm: &Mm, addr: u64) -> Option<fault::Frame> {
    mm.translation(addr).map(|pte| pte.frame())
}

#[test]
fn private_pages_are_shared_until_either_side_writes() {
    let frames = pool();
    let parent = mm(&frames);
    let a = parent
        .mmap(0, 4 * P, Prot::READ_WRITE, MapFlags::PRIVATE_ANONYMOUS, None)
        .unwrap();
    for i in 0..3 {
        parent.write(a + i * P, &[10 + i as u8]).unwrap();
    }
    let child = parent.fork().unwrap();
    assert_eq!(child.maps(), parent.maps());
    // Written before the fork: in the child, in the same frame, read-only on both sides.
    for i in 0..3 {
        assert_eq!(byte(&child, a + i * P), 10 + i as u8);
        assert_eq!(frame_of(&child, a + i * P), frame_of(&parent, a + i * P));
        assert!(!parent.translation(a + i * P).unwrap().writable());
    }
    // The 4th page was never touched: nothing to copy.
    assert!(child.translation(a + 3 * P).is_none());
    // Written after the fork: each side keeps its own.
    parent.write(a, &[99]).unwrap();
    child.write(a + P, &[77]).unwrap();
    assert_eq!((byte(&parent, a), byte(&child, a)), (99, 10));
    assert_eq!((byte(&parent, a + P), byte(&child, a + P)), (11, 77));
    assert_ne!(frame_of(&child, a), frame_of(&parent, a));
    // Page 2 stays shared until someone writes it.
    assert_eq!(frame_of(&child, a + 2 * P), frame_of(&parent, a + 2 * P));
    drop(child);
    parent.barrier();
    // The child is gone: the parent alone holds page 2 and writes it in place.
    let before = frame_of(&parent, a + 2 * P);
    parent.write(a + 2 * P, &[55]).unwrap();
    assert_eq!(
        frame_of(&parent, a + 2 * P),
        before,
        "a page one side alone holds is reused"
    );
    parent.munmap(a, 4 * P).unwrap();
    parent.barrier();
    assert_eq!(frames.in_use(), 0, "every frame is back");
}

#[test]
fn shared_mappings_stay_shared() {
    let frames = pool();
    let parent = mm(&frames);
    let shared = MapFlags::SHARED_ANONYMOUS;
    let a = parent.mmap(0, 2 * P, Prot::READ_WRITE, shared, None).unwrap();
    parent.write(a, &[1]).unwrap();
    let child = parent.fork().unwrap();
    // Not copied: the child faults the shared page from the object.
    assert!(child.translation(a).is_none());
    assert_eq!(byte(&child, a), 1);
    child.write(a, &[2]).unwrap();
    parent.write(a + P, &[3]).unwrap();
    assert_eq!((byte(&parent, a), byte(&child, a + P)), (2, 3));
    drop((parent, child));
    assert_eq!(frames.in_use(), 0);
}

#[test]
fn a_private_file_mapping_keeps_its_copies_and_truncate_reaches_the_childs() {
    let frames = pool();
    let file = File::new("/forked", &frames, &[b'f'; 4 * 4096]);
    let parent = mm(&frames);
    let a = parent
        .mmap(0, 4 * P, Prot::READ_WRITE, MapFlags::PRIVATE, Some((&file, 0)))
        .unwrap();
    parent.write(a, b"p").unwrap();
    assert_eq!(byte(&parent, a + 3 * P), b'f');
    let child = parent.fork().unwrap();
    // The copy made on write is the child's too; the file's pages come from the file.
    assert_eq!((byte(&child, a), byte(&child, a + 3 * P)), (b'p', b'f'));
    child.write(a, b"c").unwrap();
    assert_eq!((byte(&parent, a), byte(&child, a)), (b'p', b'c'));
    // Truncate removes every translation beyond the end, private copies included, in both.
    parent.write(a + 3 * P, b"q").unwrap();
    let grandchild = parent.fork().unwrap();
    file.set_len(2 * P).unwrap();
    for mm in [&parent, &child, &grandchild] {
        assert!(mm.translation(a + 3 * P).is_none());
    }
    drop((parent, child, grandchild, file));
    assert_eq!(frames.in_use(), 0);
}

#[test]
fn the_heap_and_every_vma_come_along() {
    let frames = pool();
    let parent = mm(&frames);
    let heap = parent.brk(0);
    let top = parent.brk(heap + 8 * P);
    parent.write(heap, &[7]).unwrap();
    let many: Vec<u64> = (0..300)
        .map(|i| {
            let prot = if i % 2 == 0 { Prot::READ } else { Prot::READ_WRITE };
            parent
                .mmap(0, P, prot, MapFlags::PRIVATE_ANONYMOUS, None)
                .unwrap()
        })
        .collect();
    let child = parent.fork().unwrap();
    child.space().validate().unwrap();
    assert_eq!(child.maps(), parent.maps());
    assert_eq!(child.brk(0), top);
    assert_eq!(byte(&child, heap), 7);
    // The child's VMAs are its own: unmapping there leaves the parent's.
    child.munmap(many[0], P).unwrap();
    assert_eq!(parent.space().vma_count(), child.space().vma_count() + 1);
    // A grandchild of a child.
    let grandchild = child.fork().unwrap();
    assert_eq!(grandchild.maps(), child.maps());
    assert_eq!(byte(&grandchild, heap), 7);
    drop((parent, child, grandchild));
    assert_eq!(frames.in_use(), 0);
}

#[test]
fn a_fork_beside_faulting_threads_keeps_each_sides_writes() {
    let frames = pool();
    let parent = Arc::new(mm(&frames));
    const PAGES: u64 = 64;
    let a = parent
        .mmap(0, PAGES * P, Prot::READ_WRITE, MapFlags::PRIVATE_ANONYMOUS, None)
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (parent, stop) = (parent.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut round = 1u8;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for page in 0..PAGES {
                    parent.write(a + page * P, &[round]).unwrap();
                }
                round = round.wrapping_add(1).max(1);
            }
        })
    };
    let mut children = Vec::new();
    for _ in 0..20 {
        let child = parent.fork().unwrap();
        let seen: Vec<u8> = (0..PAGES).map(|page| byte(&child, a + page * P)).collect();
        // The child never changes after the fork returned, whatever the parent writes.
        std::thread::sleep(std::time::Duration::from_millis(1));
        let again: Vec<u8> = (0..PAGES).map(|page| byte(&child, a + page * P)).collect();
        assert_eq!(
            seen, again,
            "a write of the parent reached a child after fork returned"
        );
        children.push(child);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    drop(children);
    parent.munmap(a, PAGES * P).unwrap();
    parent.barrier();
    assert_eq!(frames.in_use(), 0);
}

#[test]
fn a_stack_grows_down_to_a_fault_within_its_limits() {
    let frames = pool();
    let mm = mm(&frames);
    let stack = stack_flags();
    let top = 0x7000_0000_0000;
    let at = mm
        .mmap(top - 2 * P, 2 * P, Prot::READ_WRITE, stack, None)
        .unwrap();
    mm.write(at, &[5]).unwrap();
    // A fault 10 pages below grows the stack there; its page keeps what it held.
    mm.write(at - 10 * P, &[6]).unwrap();
    assert!(
        mm.maps()
            .starts_with(&format!("{:08x}-{top:08x} rw-p", at - 10 * P)),
        "{}",
        mm.maps()
    );
    assert_eq!((byte(&mm, at), byte(&mm, at - 10 * P)), (5, 6));
    assert_eq!(mm.stats().waits.count, 0, "no fault waited for the growth");
    // Past the stack limit: a segmentation fault, and the stack stays.
    let limit = top - vma::STACK_LIMIT;
    assert_eq!(
        mm.fault(limit - P, fault::Access::Write),
        Err(fault::FaultError::NotMapped)
    );
    assert!(mm.fault(limit, fault::Access::Write).is_ok(), "exactly the limit");
    // Below a mapping that does not grow down: nothing grows.
    let below = limit - 300 * P;
    mm.mmap(below, P, Prot::READ, MapFlags::PRIVATE_ANONYMOUS.fixed(), None)
        .unwrap();
    assert_eq!(
        mm.fault(below - P, fault::Access::Write),
        Err(fault::FaultError::NotMapped)
    );
    mm.space().validate().unwrap();
    drop(mm);
    assert_eq!(frames.in_use(), 0);
}

#[test]
fn a_stack_stops_short_of_the_guard_gap_above_the_mapping_below() {
    let frames = pool();
    let mm = mm(&frames);
    let stack = stack_flags();
    let base = 0x6000_0000_0000;
    mm.mmap(base, P, Prot::READ, MapFlags::PRIVATE_ANONYMOUS.fixed(), None)
        .unwrap();
    let at = mm
        .mmap(base + 600 * P, 4 * P, Prot::READ_WRITE, stack, None)
        .unwrap();
    // The gap above `base + P` is 256 pages: the stack may reach `base + 257 pages`.
    assert_eq!(
        mm.fault(base + 256 * P, fault::Access::Read),
        Err(fault::FaultError::NotMapped)
    );
    assert!(mm.fault(base + 257 * P, fault::Access::Read).is_ok());
    assert_eq!(mm.space().vma_count(), 2);
    // mmap places nothing in the guard gap below the stack.
    let placed = mm
        .mmap(base + 100 * P, P, Prot::READ, MapFlags::PRIVATE_ANONYMOUS, None)
        .unwrap();
    assert!(placed > at || placed < base, "{placed:#x} is in the guard gap");
    // Under the lowest mapping, which is no stack, nothing grows.
    assert_eq!(mm.space().grow_stack(0).map_err(|e| e.errno), Ok(false));
}

#[test]
fn madv_dontfork_leaves_a_range_out_of_the_child_and_dofork_takes_it_back() {
    let frames = pool();
    let parent = mm(&frames);
    let a = written_pages(&parent, 4);
    parent.madvise_dontfork(a + P, 2 * P).unwrap();
    // The flag splits the VMA (maps shows no flag, only the split) and no page moves.
    assert_eq!(parent.space().vma_count(), 3);
    assert_eq!(byte(&parent, a + P), 2);
    let child = parent.fork().unwrap();
    assert_eq!(child.space().vma_count(), 2, "{}", child.maps());
    assert_eq!(
        child.fault(a + P, fault::Access::Read),
        Err(fault::FaultError::NotMapped)
    );
    assert_eq!((byte(&child, a), byte(&child, a + 3 * P)), (1, 4));
    // MADV_DOFORK over all of it: the parts merge back and the next child has everything.
    parent.madvise_dofork(a, 4 * P).unwrap();
    assert_eq!(parent.space().vma_count(), 1);
    let second = parent.fork().unwrap();
    assert_eq!(byte(&second, a + 2 * P), 3);
    // A hole in the range: what is mapped changes, then ENOMEM, as on Linux.
    parent.munmap(a + 3 * P, P).unwrap();
    let err = parent.madvise_dontfork(a, 4 * P).unwrap_err();
    assert_eq!(err.errno, vma::Errno::ENOMEM);
    assert_eq!(parent.fork().unwrap().space().vma_count(), 0);
    drop((parent, child, second));
    assert_eq!(frames.in_use(), 0);
}

#[test]
fn guard_regions_stay_through_dontneed_mprotect_truncate_and_fork_and_move_with_mremap() {
    use fault::{Access, FaultError};
    let frames = pool();
    let mm = mm(&frames);
    let a = mm
        .mmap(0, 4 * P, Prot::READ_WRITE, MapFlags::PRIVATE_ANONYMOUS, None)
        .unwrap();
    for page in 0..4 {
        mm.write(a + page * P, &[9]).unwrap();
    }
    mm.madvise_guard_install(a + P, P).unwrap();
    assert_eq!(mm.space().vma_count(), 1, "no split");
    let guarded = |mm: &Mm, addr: u64| mm.fault(addr, Access::Read) == Err(FaultError::NotMapped);
    assert!(guarded(&mm, a + P) && !guarded(&mm, a));
    mm.madvise_dontneed(a, 4 * P).unwrap();
    mm.mprotect(a, 4 * P, Prot::READ).unwrap();
    mm.mprotect(a, 4 * P, Prot::READ_WRITE).unwrap();
    assert!(guarded(&mm, a + P), "kept through MADV_DONTNEED and mprotect");
    let child = mm.fork().unwrap();
    assert!(guarded(&child, a + P), "the child gets the guard");
    let moved = mm
        .mremap(
            a,
            4 * P,
            4 * P,
            vma::RemapFlags {
                maymove: true,
                fixed: true,
            },
            a + 64 * P,
        )
        .unwrap();
    assert!(
        guarded(&mm, moved + P) && !guarded(&mm, moved + 2 * P),
        "moved with the mapping"
    );
    mm.madvise_guard_remove(moved, 4 * P).unwrap();
    assert_eq!(byte(&mm, moved + P), 0, "a fresh page where the guard was");
    // A shared file mapping: truncate keeps the guard, and a fork copies it too.
    let file = File::new("/guarded", &frames, &[3u8; 2 * 4096]);
    let s = mm
        .mmap(0, 2 * P, Prot::READ_WRITE, MapFlags::SHARED, Some((&file, 0)))
        .unwrap();
    mm.madvise_guard_install(s, P).unwrap();
    file.set_len(0).unwrap();
    file.set_len(2 * P).unwrap();
    assert!(guarded(&mm, s) && !guarded(&mm, s + P));
    assert!(guarded(&mm.fork().unwrap(), s));
    drop((mm, child, file));
    assert_eq!(frames.in_use(), 0);
}

#[test]
fn mlock_brings_pages_in_keeps_them_from_eviction_and_is_not_inherited() {
    use fault::Shrinker;
    let frames = pool();
    let file = File::new("/locked", &frames, &[4u8; 4 * 4096]);
    let mm = mm(&frames);
    let a = mm
        .mmap(0, 4 * P, Prot::READ, MapFlags::SHARED, Some((&file, 0)))
        .unwrap();
    mm.mlock(a, 2 * P).unwrap();
    assert_eq!(mm.mincore(a, 4 * P).unwrap(), [true, true, false, false]);
    mm.read(a + 2 * P, &mut [0]).unwrap();
    // Memory pressure: the pages of the locked part stay, the other one goes.
    file.shrink(4);
    assert!(file.cached(0) && file.cached(1), "locked pages are never evicted");
    assert!(!file.cached(2), "an unlocked page is");
    // Locked memory refuses MADV_DONTNEED, MADV_REMOVE and guards.
    let einval = |result: vma::Result<()>| result.map_err(|e| e.errno) == Err(vma::Errno::EINVAL);
    assert!(einval(mm.madvise_dontneed(a, P)));
    assert!(einval(mm.madvise_remove(a, P)));
    assert!(einval(mm.madvise_guard_install(a, P)));
    // A fork's child does not inherit the lock (the boundary stays, as on Linux).
    let child = mm.fork().unwrap();
    assert_eq!(child.space().vma_count(), 2);
    child.space().validate().unwrap();
    child.madvise_dontneed(a, P).unwrap();
    // munlock: the parts merge back and the pages may go.
    mm.munlock(a, 4 * P).unwrap();
    assert_eq!(mm.space().vma_count(), 1);
    mm.madvise_dontneed(a, 4 * P).unwrap();
    drop((mm, child));
    file.shrink(4);
    assert!(!file.cached(0));
    drop(file);
    assert_eq!(frames.in_use(), 0);
}

#[test]
fn madv_free_pages_go_under_pressure_unless_written_again() {
    let frames = pool();
    let mm = mm(&frames);
    let a = written_pages(&mm, 4);
    mm.madvise_free(a, 4 * P).unwrap();
    // No pressure yet: everything is still there.
    assert_eq!(byte(&mm, a), 1);
    assert_eq!(mm.mincore(a, 4 * P).unwrap(), [true; 4]);
    // Written again: page 1 is the mapping's once more.
    mm.write(a + P, &[42]).unwrap();
    let before = frames.in_use();
    assert_eq!(mm.reclaim(16), 3, "pages 0, 2 and 3 were not written since");
    mm.barrier();
    assert_eq!(frames.in_use(), before - 3);
    assert_eq!(mm.mincore(a, 4 * P).unwrap(), [false, true, false, false]);
    assert_eq!((byte(&mm, a), byte(&mm, a + P), byte(&mm, a + 2 * P)), (0, 42, 0));
    assert_eq!(mm.reclaim(16), 0, "nothing left to take");
    // Pages a fork's child shares stay.
    mm.write(a + 3 * P, &[7]).unwrap();
    let child = mm.fork().unwrap();
    mm.madvise_free(a, 4 * P).unwrap();
    assert_eq!(mm.reclaim(16), 0, "every page is the child's too");
    assert_eq!((byte(&child, a + P), byte(&child, a + 3 * P)), (42, 7));
    // Only private anonymous memory may be freed lazily.
    let shared = mm
        .mmap(0, P, Prot::READ_WRITE, MapFlags::SHARED_ANONYMOUS, None)
        .unwrap();
    assert_eq!(
        mm.madvise_free(shared, P).map_err(|e| e.errno),
        Err(vma::Errno::EINVAL)
    );
    drop((mm, child));
    assert_eq!(frames.in_use(), 0);
}

/// A child's VMAs that hold pages shared since fork get anon_vmas of their own, linked to the
/// parent's (Linux's `anon_vma_fork`): they merge only with pieces of themselves, not with a
/// new neighbour, in the child; the parent's merge as before. Read off Linux 6.18 (a child
/// mapping anonymous memory next to an inherited written VMA keeps two VMAs, the parent one).
#[test]
fn a_forked_vma_merges_only_with_its_own_pieces() {
    let frames = pool();
    let parent = mm(&frames);
    let a = written_pages(&parent, 2);
    let rw = Prot::READ_WRITE;
    let fixed = MapFlags::PRIVATE_ANONYMOUS.fixed();
    let child = parent.fork().unwrap();
    child.mmap(a + 2 * P, P, rw, fixed, None).unwrap();
    assert_eq!(child.space().vma_count(), 2, "{}", child.maps());
    child.mprotect(a + P, P, Prot::READ).unwrap();
    child.mprotect(a + P, P, rw).unwrap();
    assert_eq!(child.space().vma_count(), 2, "{}", child.maps());
    child.write(a + 2 * P, &[1]).unwrap();
    child.mprotect(a + 2 * P, P, Prot::READ).unwrap();
    child.mprotect(a + 2 * P, P, rw).unwrap();
    assert_eq!(child.space().vma_count(), 2, "{}", child.maps());
    parent.mmap(a + 2 * P, P, rw, fixed, None).unwrap();
    assert_eq!(parent.space().vma_count(), 1, "{}", parent.maps());
}

/// MAP_DROPPABLE (Linux 6.11): memory pressure drops its pages, written or not, and they read
/// back as zeros; a fork's child gets the mapping wiped (VM_WIPEONFORK).
#[test]
fn droppable_pages_go_under_pressure_and_stay_out_of_a_child() {
    let frames = pool();
    let mm = mm(&frames);
    let droppable = MapFlags {
        private: false,
        droppable: true,
        ..MapFlags::PRIVATE_ANONYMOUS
    };
    let a = mm.mmap(0, 4 * P, Prot::READ_WRITE, droppable, None).unwrap();
    for page in 0..4 {
        mm.write(a + page * P, &[page as u8 + 1]).unwrap();
    }
    let child = mm.fork().unwrap();
    assert_eq!(child.maps(), mm.maps());
    assert_eq!((byte(&child, a), byte(&mm, a)), (0, 1), "wiped in the child only");
    let before = frames.in_use();
    assert_eq!(mm.reclaim(16), 4);
    mm.barrier();
    assert_eq!(frames.in_use(), before - 4);
    assert_eq!(byte(&mm, a + 3 * P), 0, "dropped: zeros again");
    drop((mm, child));
    assert_eq!(frames.in_use(), 0);
}

/// MAP_HUGETLB | MAP_ANONYMOUS: anonymous memory of huge pages, a shared mapping reserving its
/// pages at mmap (ENOMEM beyond the pool), a private one faulting huge pages of its own.
#[test]
fn anonymous_huge_pages_come_from_the_huge_pool() {
    let frames = Arc::new(FramePool::with_huge_pages(FramePoolConfig::default(), 2).unwrap());
    let mm = mm(&frames);
    let huge = MapFlags {
        hugetlb: true,
        ..MapFlags::SHARED_ANONYMOUS
    };
    let two_mib = 2 << 20;
    assert_eq!(
        mm.mmap(0, 3 * two_mib, Prot::READ_WRITE, huge, None)
            .map_err(|e| e.errno),
        Err(vma::Errno::ENOMEM),
        "three huge pages from a pool of two"
    );
    let shared = mm.mmap(0, two_mib, Prot::READ_WRITE, huge, None).unwrap();
    mm.write(shared + 5, b"huge").unwrap();
    assert_eq!(frames.huge_in_use(), 1);
    let private = MapFlags {
        shared: false,
        private: true,
        ..huge
    };
    let mine = mm.mmap(0, P, Prot::READ_WRITE, private, None).unwrap();
    assert_eq!(mine % two_mib, 0);
    mm.write(mine, b"x").unwrap();
    assert_eq!(frames.huge_in_use(), 2);
    assert!(
        mm.maps()
            .lines()
            .all(|line| line.ends_with("/anon_hugepage (deleted)")),
        "{}",
        mm.maps()
    );
    let gib = MapFlags {
        huge_page_shift: 30,
        ..huge
    };
    assert_eq!(
        mm.mmap(0, P, Prot::READ_WRITE, gib, None).map_err(|e| e.errno),
        Err(vma::Errno::ENOMEM),
        "no 1 GiB pages"
    );
    drop(mm);
    assert_eq!(frames.huge_in_use(), 0);
}
