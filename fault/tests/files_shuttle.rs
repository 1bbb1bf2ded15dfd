//! Files shared by address spaces under shuttle (random and PCT schedulers): a fault racing a
//! truncate never leaves a translation beyond the end (seed 001's race: the fault looked the
//! page up before the truncate and installs after it), on the fast path (page cached) and the
//! slow path (read in from the backing), in two address spaces at once; a fault racing a hole
//! punch never shows the punched contents afterwards; a reverse-map walk racing splits, merges
//! and replacements sees every VMA whole and never misses a page that stays mapped; a fault
//! (read or write) racing the eviction of its page never keeps a translation to a frame that
//! left the cache, and no write is lost; a fault beside a truncate loop waits for one truncate
//! at most (its turn); a fault racing a truncate of a hugetlb file leaves the huge-page
//! reservation counts right (seed 001); a fault never installs through a shared page table
//! its address space unshared meanwhile (MADV_DONTNEED, hole punch: seed 001's first problem).
//! Each has a broken variant that must fail. Run with `--features shuttle`.
#![cfg(feature = "shuttle")]

use fault::{
    Access, Backing, File, FileSync, FramePool, FramePoolConfig, MapFlags, MemBacking, Mm, MmConfig, Prot,
    Shrinker,
};
use maple::sync::atomic::{AtomicBool, Ordering};
use maple::sync::{Arc, thread};
use maple::testing::{assert_broken_variant_fails, check_random_and_pct as check_both};
use vma::BrokenStep;

#[path = "../../vma/tests/support/shuttle_space.rs"]
mod shuttle_space;
use shuttle_space::{A, LAYOUT, P, STEPS};

fn pool() -> Arc<FramePool> {
    pool_with_huge_pages(0)
}

/// The suite's pool, with `huge` huge frames besides (a hugetlb file's).
fn pool_with_huge_pages(huge: usize) -> Arc<FramePool> {
    let config = FramePoolConfig {
        chunk_frames: 8,
        max_frames: 64,
    };
    Arc::new(FramePool::with_huge_pages(config, huge).unwrap())
}

fn mm(frames: &Arc<FramePool>, broken: Option<BrokenStep>) -> Arc<Mm> {
    let config = MmConfig {
        layout: LAYOUT,
        ..MmConfig::default()
    };
    Arc::new(
        match broken {
            Some(step) => Mm::with_broken_protocol(config, frames.clone(), step),
            None => Mm::new(config, frames.clone()),
        }
        .unwrap(),
    )
}

fn join<T>(handle: thread::JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// How the racing fault finds its page.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// Cached: the fault installs it under the file's guard.
    Fast,
    /// Not cached: the fault reads it in from the backing first.
    Slow,
}

/// A two-page file mapped shared in two address spaces; each faults page 1 while the file is
/// truncated to one page. When `set_len` returns, and after the faults are done, no address
/// space has a translation of page 1.
fn fault_racing_truncate(broken: bool, path: Path, sync: FileSync) {
    let frames = pool();
    let backing = Arc::new(MemBacking::new(&[0x11; 2 * P as usize]));
    let file = File::with_sync("/truncated", &frames, 2 * P, backing, sync).unwrap();
    if broken {
        file.break_invalidation();
    }
    if let Path::Fast = path {
        file.read_at(P, &mut [0]).unwrap();
    }
    let spaces = [mm(&frames, None), mm(&frames, None)];
    for mm in &spaces {
        mm.mmap(A, 2 * P, Prot::READ, MapFlags::SHARED.fixed(), Some((&file, 0)))
            .unwrap();
    }
    let faulting: Vec<_> = spaces
        .iter()
        .map(|mm| {
            let mm = mm.clone();
            thread::spawn(move || {
                // A bus error once the truncate is seen; a page before.
                let _ = mm.fault(A + P, Access::Read);
            })
        })
        .collect();
    file.set_len(P).unwrap();
    for mm in &spaces {
        assert!(
            mm.translation(A + P).is_none(),
            "violated: a translation beyond the end when set_len returned"
        );
    }
    faulting.into_iter().for_each(join);
    for mm in &spaces {
        assert!(
            mm.translation(A + P).is_none(),
            "violated: a translation beyond the end appeared after set_len returned"
        );
        mm.munmap(A, 2 * P).unwrap();
        mm.barrier();
    }
    assert_eq!(
        file.cached_pages(),
        0,
        "violated: a page beyond the end stayed cached"
    );
}

/// A fault on a page that a writer truncates away and regrows twice: the fault waits for at
/// most one truncate, because once it has waited it is owed a turn that the next truncate
/// waits for (so a truncate in a loop cannot starve it). Without turns it may wait for both.
fn fault_beside_truncate_loop(unfair: bool) {
    let frames = pool();
    let backing = Arc::new(MemBacking::new(&[0x11; 2 * P as usize]));
    let file = File::with_sync("/looped", &frames, 2 * P, backing, FileSync::Rcu).unwrap();
    if unfair {
        file.break_fairness();
    }
    let mm = mm(&frames, None);
    mm.mmap(A, 2 * P, Prot::READ, MapFlags::SHARED.fixed(), Some((&file, 0)))
        .unwrap();
    let writer = {
        let file = file.clone();
        thread::spawn(move || {
            for _ in 0..2 {
                file.set_len(P).unwrap();
                file.set_len(2 * P).unwrap();
            }
        })
    };
    let result = mm.fault(A + P, Access::Read);
    join(writer);
    assert!(
        matches!(result, Ok(_) | Err(fault::FaultError::BusError)),
        "the fault ends with the page or beyond the end: {result:?}"
    );
    assert!(
        mm.stats().waits.count <= 1,
        "violated: a fault waited for {} truncates",
        mm.stats().waits.count
    );
}

#[test]
fn faults_wait_for_one_truncate_at_most() {
    check_both(STEPS, || fault_beside_truncate_loop(false));
}

#[test]
fn unfair_invalidations_make_faults_wait_again() {
    assert_broken_variant_fails(STEPS, &["violated"], || fault_beside_truncate_loop(true));
}

/// Seed 001's reservation race: a two-page hugetlb file mapped shared (both pages reserved at
/// mmap); a fault on page 1 races a truncate to one page. Page 1's reservation is consumed by
/// the fault or given back by the truncate, never both and never neither: page 0's is the only
/// one left, no page beyond the end stays cached, and no huge page is left in use.
fn fault_racing_truncate_keeps_reservations(broken: bool) {
    const H: u64 = fault::HUGE_FRAME_SIZE as u64;
    let frames = pool_with_huge_pages(2);
    let file = File::hugetlb("/hugepages/r", &frames, 2 * H, FileSync::Rcu).unwrap();
    if broken {
        file.break_reservations();
    }
    let mm = Arc::new(Mm::new(MmConfig::default(), frames.clone()).unwrap());
    let at = 0x4000_0000;
    mm.mmap(
        at,
        2 * H,
        Prot::READ_WRITE,
        MapFlags::SHARED.fixed(),
        Some((&file, 0)),
    )
    .unwrap();
    assert_eq!(frames.huge_reserved(), 2);
    let fault = {
        let mm = mm.clone();
        thread::spawn(move || mm.fault(at + H, Access::Write))
    };
    file.set_len(H).unwrap();
    let result = join(fault);
    assert!(
        matches!(result, Ok(_) | Err(fault::FaultError::BusError)),
        "{result:?}"
    );
    assert_eq!(
        frames.huge_reserved(),
        1,
        "violated: the truncated page's reservation was counted twice or not at all"
    );
    assert_eq!(
        file.cached_pages(),
        0,
        "violated: a page beyond the end stayed cached"
    );
    mm.munmap(at, 2 * H).unwrap();
    mm.barrier();
    assert_eq!(frames.huge_in_use(), 0, "violated: a huge page leaked");
    // Under shuttle freed VMAs are quarantined with the file they map: leave it empty, so
    // that thousands of schedules do not keep thousands of huge pages.
    file.set_len(0).unwrap();
}

#[test]
fn fault_racing_truncate_keeps_reservation_counts() {
    check_both(STEPS, || fault_racing_truncate_keeps_reservations(false));
}

#[test]
fn late_reservation_consumption_miscounts() {
    assert_broken_variant_fails(STEPS, &["violated", "reservations given back than held"], || {
        fault_racing_truncate_keeps_reservations(true)
    });
}

/// PMD sharing racing a truncate: address space `a` made the shared page table of a 1 GiB
/// hugetlb file (a page installed in it); `b` faults, linking the same table, while the file is
/// truncated to one huge page. When `set_len` returns and the fault is done, neither has a
/// translation beyond the end — `b` linked the table before the truncate unshared it, or saw
/// the truncate and linked a new one — and once both let go the tables are freed. Under
/// `FileSync::RwSem` the fault holds the file's lock across its share lookup. Without the
/// fault `fence` (as the baselines' memories run) the file's section alone must keep the
/// link right; with it, the truncate also waits for `b`'s fault before unsharing.
fn share_racing_truncate(broken: bool, fence: bool, sync: FileSync) {
    const H: u64 = fault::HUGE_FRAME_SIZE as u64;
    const GIB: u64 = 1 << 30;
    let frames = pool_with_huge_pages(512);
    let file = File::hugetlb("/hugepages/shared", &frames, GIB, sync).unwrap();
    if broken {
        file.break_sharing();
    }
    let wide = || Arc::new(Mm::new(MmConfig::default(), frames.clone()).unwrap());
    let (a, b) = (wide(), wide());
    if !fence {
        a.memory().break_fault_fence();
        b.memory().break_fault_fence();
    }
    let space = |mm: &Arc<Mm>, at: u64| {
        mm.mmap(
            at,
            GIB,
            Prot::READ_WRITE,
            MapFlags::SHARED.fixed(),
            Some((&file, 0)),
        )
        .unwrap();
    };
    let (in_a, in_b) = (GIB, 2 * GIB);
    space(&a, in_a);
    space(&b, in_b);
    a.fault(in_a + H, Access::Write).unwrap();
    let fault = {
        let b = b.clone();
        thread::spawn(move || b.fault(in_b, Access::Read))
    };
    file.set_len(H).unwrap();
    join(fault).unwrap();
    for (mm, at) in [(&a, in_a), (&b, in_b)] {
        assert!(
            mm.translation(at + H).is_none(),
            "violated: a translation beyond the end through a shared page table"
        );
    }
    for (mm, at) in [(&a, in_a), (&b, in_b)] {
        mm.munmap(at, GIB).unwrap();
        mm.barrier();
    }
    assert_eq!(
        file.shared_page_tables(),
        0,
        "violated: a shared page table leaked"
    );
    // As above: the quarantined file keeps no huge page.
    file.set_len(0).unwrap();
}

/// What unshares the page table while a fault of the same address space uses it.
#[derive(Clone, Copy, Debug)]
enum Unsharer {
    /// MADV_DONTNEED of another huge page of the same GiB.
    Dontneed,
    /// A hole punched in another huge page of the same GiB.
    Punch,
}

/// Seed 001's first problem: address spaces `a` and `b` share the page table of a 1 GiB
/// hugetlb file; `a` faults huge page 1 while its page table unshares the table (by
/// `unsharer`, on huge page 2: outside the VMA protocol). The fault never installs through the
/// table after `a` unlinked it (the fault checks after installing: with the fence it panics,
/// without it records), and once both let go the tables are freed. The broken variant skips
/// the fault fence.
fn unshare_racing_fault(broken: bool, unsharer: Unsharer) {
    const H: u64 = fault::HUGE_FRAME_SIZE as u64;
    const GIB: u64 = 1 << 30;
    let frames = pool_with_huge_pages(512);
    let file = File::hugetlb("/hugepages/unshared", &frames, GIB, FileSync::Rcu).unwrap();
    let wide = || Arc::new(Mm::new(MmConfig::default(), frames.clone()).unwrap());
    let (a, b) = (wide(), wide());
    if broken {
        a.memory().break_fault_fence();
    }
    for mm in [&a, &b] {
        let at = mm
            .mmap(
                GIB,
                GIB,
                Prot::READ_WRITE,
                MapFlags::SHARED.fixed(),
                Some((&file, 0)),
            )
            .unwrap();
        assert_eq!(at, GIB);
        mm.fault(GIB, Access::Write).unwrap();
    }
    assert_eq!(file.shared_page_tables(), 1, "both link one table");
    let fault = {
        let a = a.clone();
        thread::spawn(move || a.fault(GIB + H, Access::Write))
    };
    match unsharer {
        Unsharer::Dontneed => a.madvise_dontneed(GIB + 2 * H, H).unwrap(),
        Unsharer::Punch => file.punch_hole(2 * H, H).unwrap(),
    }
    join(fault).unwrap();
    assert!(
        !a.memory().installed_through_an_unlinked_table(),
        "violated: a fault installed through a page table its address space no longer links"
    );
    for mm in [&a, &b] {
        mm.munmap(GIB, GIB).unwrap();
        mm.barrier();
    }
    assert_eq!(
        file.shared_page_tables(),
        0,
        "violated: a shared page table leaked"
    );
    // As above: the quarantined file keeps no huge page.
    file.set_len(0).unwrap();
}

#[test]
fn unsharing_waits_for_the_faults_in_its_span() {
    for unsharer in [Unsharer::Dontneed, Unsharer::Punch] {
        check_both(STEPS, move || unshare_racing_fault(false, unsharer));
    }
}

#[test]
fn unsharing_without_the_fence_lets_a_fault_install_through_an_unlinked_table() {
    for unsharer in [Unsharer::Dontneed, Unsharer::Punch] {
        assert_broken_variant_fails(STEPS, &["violated"], move || unshare_racing_fault(true, unsharer));
    }
}

#[test]
fn sharing_racing_truncate_leaves_no_stale_translation() {
    for fence in [true, false] {
        check_both(STEPS, move || share_racing_truncate(false, fence, FileSync::Rcu));
    }
}

#[test]
fn sharing_racing_truncate_under_i_mmap_rwsem() {
    check_both(STEPS, || share_racing_truncate(false, true, FileSync::RwSem));
}

#[test]
fn sharing_without_the_files_section_shows_truncated_pages() {
    assert_broken_variant_fails(STEPS, &["violated"], || {
        share_racing_truncate(true, false, FileSync::Rcu)
    });
}

#[test]
fn fault_racing_truncate_fast_path() {
    check_both(STEPS, || fault_racing_truncate(false, Path::Fast, FileSync::Rcu));
}

#[test]
fn fault_racing_truncate_slow_path() {
    check_both(STEPS, || fault_racing_truncate(false, Path::Slow, FileSync::Rcu));
}

/// The baselines' protection (`i_mmap_rwsem`) closes the race too.
#[test]
fn fault_racing_truncate_under_i_mmap_rwsem() {
    for path in [Path::Fast, Path::Slow] {
        check_both(STEPS, move || fault_racing_truncate(false, path, FileSync::RwSem));
    }
}

#[test]
fn truncate_without_invalidation_leaves_stale_translations() {
    for path in [Path::Fast, Path::Slow] {
        assert_broken_variant_fails(STEPS, &["violated"], move || {
            fault_racing_truncate(true, path, FileSync::Rcu)
        });
    }
}

/// A page of a shared file faulted (and written through a private mapping, whose copy must
/// survive) while a hole is punched over it: afterwards the shared mapping reads zeros, and
/// the private copy keeps its bytes.
fn fault_racing_punch(broken: bool, path: Path) {
    let frames = pool();
    let file = File::new("/punched", &frames, &[0x22; P as usize]);
    if broken {
        file.break_invalidation();
    }
    if let Path::Fast = path {
        file.read_at(0, &mut [0]).unwrap();
    }
    let mm = mm(&frames, None);
    mm.mmap(A, P, Prot::READ, MapFlags::SHARED.fixed(), Some((&file, 0)))
        .unwrap();
    let private = A + 4 * P;
    mm.mmap(
        private,
        P,
        Prot::READ_WRITE,
        MapFlags::PRIVATE.fixed(),
        Some((&file, 0)),
    )
    .unwrap();
    mm.write(private + 1, b"c").unwrap();
    let faulting = {
        let mm = mm.clone();
        thread::spawn(move || {
            let mut byte = [0];
            mm.read(A, &mut byte).unwrap();
            assert!(byte[0] == 0x22 || byte[0] == 0, "{byte:?}");
        })
    };
    file.punch_hole(0, P).unwrap();
    join(faulting);
    let mut byte = [0];
    mm.read(A, &mut byte).unwrap();
    assert_eq!(
        byte,
        [0],
        "violated: the punched contents show after punch_hole returned"
    );
    let mut copy = [0; 2];
    mm.read(private, &mut copy).unwrap();
    assert_eq!(copy, [0x22, b'c'], "the private copy survives a hole punch");
    mm.munmap(A, 8 * P).unwrap();
    mm.barrier();
}

#[test]
fn fault_racing_punch_hole() {
    for path in [Path::Fast, Path::Slow] {
        check_both(STEPS, move || fault_racing_punch(false, path));
    }
}

#[test]
fn punch_without_invalidation_shows_stale_contents() {
    for path in [Path::Fast, Path::Slow] {
        assert_broken_variant_fails(STEPS, &["violated"], move || fault_racing_punch(true, path));
    }
}

/// G5 for the reverse map: while one address space splits its mapping of a four-page file
/// (mprotect of the middle), merges it back, and replaces one page with a fresh mapping of
/// the same page, a walker finds every page covered, by VMAs each whole (their address
/// consistent with their page offsets).
fn reverse_map_walk_sees_every_vma_whole(broken: Option<BrokenStep>) {
    let frames = pool();
    let file = File::new("/walked", &frames, &[0; 4 * P as usize]);
    let mm = mm(&frames, broken);
    mm.mmap(A, 4 * P, Prot::READ, MapFlags::SHARED.fixed(), Some((&file, 0)))
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let walker = {
        let (file, done) = (file.clone(), done.clone());
        thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let found = file.walk_reverse_map(0, 4);
                for range in &found {
                    assert_eq!(
                        range.address,
                        A + range.first * P,
                        "violated: a VMA seen half-changed: {range:?}"
                    );
                }
                for pgoff in 0..4 {
                    assert!(
                        found.iter().any(|r| r.first <= pgoff && pgoff < r.end),
                        "violated: page {pgoff} mapped throughout, missing from the walk: {found:?}"
                    );
                }
                thread::yield_now();
            }
        })
    };
    mm.mprotect(A + P, P, Prot::READ_WRITE).unwrap();
    mm.mprotect(A + P, P, Prot::READ).unwrap();
    mm.mmap(
        A + 2 * P,
        P,
        Prot::READ,
        MapFlags::SHARED.fixed(),
        Some((&file, 2 * P)),
    )
    .unwrap();
    done.store(true, Ordering::SeqCst);
    join(walker);
    mm.munmap(A, 4 * P).unwrap();
    assert_eq!(file.mappings(), 0);
}

#[test]
fn reverse_map_walk_sees_every_vma_whole_test() {
    check_both(STEPS, || reverse_map_walk_sees_every_vma_whole(None));
}

#[test]
fn reverse_map_walk_misses_pages_when_old_vmas_leave_first() {
    assert_broken_variant_fails(STEPS, &["violated"], || {
        reverse_map_walk_sees_every_vma_whole(Some(BrokenStep::ReverseMapOrder))
    });
}

/// What the thread racing an eviction does through its shared mapping.
#[derive(Clone, Copy, Debug)]
enum Racer {
    /// Reads a byte (a read fault: the page mapped read-only).
    Read,
    /// Writes a byte (a write fault that marks the page dirty).
    Write,
    /// Reads, then writes (the write faults again to mark the page dirty).
    ReadThenWrite,
}

/// A cached one-page file mapped shared; one thread reads or writes a byte through the mapping
/// while the page is evicted under memory pressure. Afterwards the mapping still sees the file
/// (a write to the file shows through it: a translation that survived maps the cached frame),
/// the byte written is in the file (written back before eviction, or still cached), and no
/// frame is held but the cache's.
fn fault_racing_eviction(broken: bool, racer: Racer, sync: FileSync) {
    let frames = pool();
    let backing = Arc::new(MemBacking::new(&[0x33; P as usize]));
    let file = File::with_sync("/evicted", &frames, P, backing, sync).unwrap();
    if broken {
        file.break_invalidation();
    }
    file.read_at(0, &mut [0]).unwrap();
    let mm = mm(&frames, None);
    mm.mmap(A, P, Prot::READ_WRITE, MapFlags::SHARED.fixed(), Some((&file, 0)))
        .unwrap();
    let thread = {
        let mm = mm.clone();
        thread::spawn(move || {
            if let Racer::Read | Racer::ReadThenWrite = racer {
                mm.read(A + 2, &mut [0]).unwrap();
            }
            if let Racer::Write | Racer::ReadThenWrite = racer {
                mm.write(A + 1, b"w").unwrap();
            }
        })
    };
    file.shrink(1);
    join(thread);
    file.write_at(0, b"f").unwrap();
    let mut seen = [0; 2];
    mm.read(A, &mut seen).unwrap();
    assert_eq!(
        seen[0], b'f',
        "violated: the mapping kept a frame that left the cache"
    );
    let mut stored = [0];
    file.read_at(1, &mut stored).unwrap();
    let expected = if let Racer::Read = racer { 0x33 } else { b'w' };
    assert_eq!(
        stored,
        [expected],
        "violated: a write through the mapping was lost"
    );
    mm.munmap(A, P).unwrap();
    mm.barrier();
    // Not 0 after dropping the file: under shuttle freed VMAs are quarantined, and the file
    // they map with them (the std tests check that every frame comes back).
    assert_eq!(
        frames.in_use(),
        file.cached_pages(),
        "violated: a frame held beyond the page cache"
    );
}

#[test]
fn fault_racing_eviction_keeps_translations_and_writes() {
    for racer in [Racer::Read, Racer::Write, Racer::ReadThenWrite] {
        check_both(STEPS, move || fault_racing_eviction(false, racer, FileSync::Rcu));
    }
}

#[test]
fn fault_racing_eviction_under_i_mmap_rwsem() {
    for racer in [Racer::Read, Racer::Write] {
        check_both(STEPS, move || {
            fault_racing_eviction(false, racer, FileSync::RwSem)
        });
    }
}

/// Writes through a shared mapping of pages mapped read-only (write-notify faults) race a
/// writeback of the file: each write reaches the backing, in that writeback or in the next (a
/// translation made writable after the writeback took the page's dirty mark would leave the
/// page written and marked clean). Several pages, each a window for the race.
fn write_notify_racing_writeback(broken: bool) {
    const PAGES: u64 = 8;
    let frames = pool();
    let backing = Arc::new(MemBacking::new(&[0x33; (PAGES * P) as usize]));
    let file = File::with_sync("/synced", &frames, PAGES * P, backing.clone(), FileSync::Rcu).unwrap();
    if broken {
        file.break_writeback();
    }
    let mm = mm(&frames, None);
    mm.mmap(
        A,
        PAGES * P,
        Prot::READ_WRITE,
        MapFlags::SHARED.fixed(),
        Some((&file, 0)),
    )
    .unwrap();
    // Mapped read-only: each write below marks its page dirty as it makes it writable.
    mm.read(A, &mut vec![0; (PAGES * P) as usize]).unwrap();
    let thread = {
        let mm = mm.clone();
        thread::spawn(move || {
            for page in 0..PAGES {
                mm.write(A + page * P + 1, b"w").unwrap();
            }
        })
    };
    file.sync().unwrap();
    join(thread);
    file.sync().unwrap();
    for page in 0..PAGES {
        let mut stored = [0; P as usize];
        backing.read(page, &mut stored).unwrap();
        assert_eq!(
            stored[1], b'w',
            "violated: a write through the mapping never reached the backing"
        );
    }
}

#[test]
fn write_notify_racing_writeback_reaches_the_backing() {
    check_both(STEPS, || write_notify_racing_writeback(false));
}

#[test]
fn writeback_without_waiting_for_write_notify_loses_writes() {
    assert_broken_variant_fails(STEPS, &["violated"], || write_notify_racing_writeback(true));
}

#[test]
fn eviction_without_invalidation_leaves_stale_translations() {
    assert_broken_variant_fails(STEPS, &["violated"], || {
        fault_racing_eviction(true, Racer::Read, FileSync::Rcu)
    });
}
