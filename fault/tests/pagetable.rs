//! The frame pool and the page table, single-threaded semantics and real-thread races.
#![cfg(not(feature = "shuttle"))]

#[path = "support/scenarios.rs"]
mod scenarios;

use fault::frames::{FRAME_SIZE, Frame, FramePool, FramePoolConfig, HUGE_FRAME_SIZE};
use fault::pagetable::{PageTable, Pte, WRITABLE};
use maple::rcu::{EpochRcu, Rcu};
use std::sync::Arc;
use std::sync::atomic::Ordering;

fn pool(max_frames: usize) -> FramePool {
    FramePool::new(FramePoolConfig {
        chunk_frames: 4,
        max_frames,
    })
    .unwrap()
}

#[test]
fn bad_pool_configurations_are_refused() {
    for config in [
        FramePoolConfig {
            chunk_frames: 0,
            max_frames: 4,
        },
        FramePoolConfig {
            chunk_frames: 4,
            max_frames: 0,
        },
        FramePoolConfig {
            chunk_frames: 1,
            max_frames: 1 << 20,
        },
    ] {
        assert!(FramePool::new(config).is_err(), "{config:?}");
    }
}

#[test]
fn frames_are_distinct_usable_and_bounded() {
    let pool = pool(10);
    let frames: Vec<Frame> = (0..10).map(|_| pool.alloc_zeroed().unwrap()).collect();
    assert_eq!(pool.alloc(), None, "the pool's size is a limit");
    assert_eq!(pool.in_use(), 10);
    for (i, &frame) in frames.iter().enumerate() {
        let mut page = vec![1; FRAME_SIZE];
        pool.read(frame, 0, &mut page);
        assert!(page.iter().all(|&b| b == 0), "alloc_zeroed zeroes");
        pool.write(frame, 0, &vec![i as u8; FRAME_SIZE]);
    }
    for (i, &frame) in frames.iter().enumerate() {
        let mut last = [0];
        pool.read(frame, FRAME_SIZE - 1, &mut last);
        assert_eq!(last[0], i as u8, "frames do not overlap");
    }
    // References: a second holder keeps the frame until it lets go too.
    pool.get(frames[0]);
    assert_eq!(pool.references(frames[0]), 2);
    // SAFETY: the extra reference taken above.
    unsafe { pool.put(frames[0]) };
    assert_eq!(pool.in_use(), 10);
    let copy_target = frames[1];
    pool.copy(frames[0], copy_target);
    let mut first = [9];
    pool.read(copy_target, 0, &mut first);
    assert_eq!(first[0], 0, "copy copies the whole frame");
    for frame in frames {
        // SAFETY: owned and unreachable.
        unsafe { pool.put(frame) };
    }
    assert_eq!(pool.in_use(), 0);
    assert!(pool.alloc_zeroed().is_some(), "freed frames are reused");
}

#[test]
fn frames_from_many_threads() {
    let pool = Arc::new(pool(4096));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    let frame = pool.alloc().unwrap();
                    // SAFETY: owned by this thread.
                    unsafe { pool.put(frame) };
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn translations_install_zap_and_free_their_tables() {
    let rcu = EpochRcu;
    let table = PageTable::new();
    let pool = pool(64);
    let addrs = [0x1000u64, 0x2000, 0x20_0000, 0x7fff_ffff_f000];
    for &addr in &addrs {
        let frame = pool.alloc().unwrap();
        table
            .entry_or_insert(addr)
            .store(Pte::new(frame, WRITABLE).0, Ordering::Release);
    }
    assert_eq!(
        table.tables(),
        3 + 1 + 3,
        "two 2 MiB regions share upper tables; the top one has its own"
    );
    assert!(table.translate(0x1000).unwrap().writable());
    assert_eq!(table.translate(0x3000), None);
    table.protect(0x1000, 0x3000, true, false);
    assert!(!table.translate(0x2000).unwrap().writable());
    assert!(table.translate(0x2000).unwrap().readable());
    table.protect(0x1000, 0x2000, false, false);
    assert!(
        !table.translate(0x1000).unwrap().readable(),
        "PROT_NONE hides the page"
    );
    assert!(
        table.translate(0x1000).unwrap().present(),
        "... but keeps its frame"
    );
    // A zap of part of a 2 MiB region keeps the region's tables.
    let frames = table.zap(0x1000, 0x2000, (0x1000, 0x2000), &rcu);
    assert_eq!(frames.len(), 1);
    assert_eq!(table.tables(), 7);
    assert!(table.translate(0x2000).is_some());
    // Zapping everything frees every table.
    let rest = table.zap(0, 1 << 48, (0, 1 << 48), &rcu);
    assert_eq!(rest.len(), 3);
    assert_eq!(table.tables(), 0);
    for frame in frames.into_iter().chain(rest) {
        // SAFETY: unmapped, and no reader exists in this test.
        unsafe { pool.put(frame) };
    }
    assert_eq!(pool.in_use(), 0);
    rcu.barrier();
}

#[test]
fn racing_walkers_share_one_set_of_tables_and_one_frame() {
    scenarios::racing_installs_share_tables_and_one_frame::<EpochRcu>(4);
}

#[test]
fn huge_frames_are_a_pool_of_their_own() {
    let pool = FramePool::with_huge_pages(
        FramePoolConfig {
            chunk_frames: 4,
            max_frames: 4,
        },
        2,
    )
    .unwrap();
    assert_eq!(pool.huge_pages(), 2);
    let (a, b) = (pool.alloc_huge().unwrap(), pool.alloc_huge().unwrap());
    assert!(a.is_huge() && b.is_huge() && a != b);
    assert_eq!(pool.alloc_huge(), None, "nr_hugepages is a limit");
    assert_eq!((pool.huge_in_use(), pool.in_use()), (2, 0), "counted apart");
    pool.write(a, HUGE_FRAME_SIZE - 1, &[7]);
    pool.copy(a, b);
    let mut last = [0];
    pool.read(b, HUGE_FRAME_SIZE - 1, &mut last);
    assert_eq!(last, [7], "a huge frame is 2 MiB, copied whole");
    // SAFETY: owned and unreachable.
    unsafe { pool.put_many(&[a, b]) };
    assert_eq!(pool.huge_in_use(), 0);
    let again = pool.alloc_huge().unwrap();
    pool.read(again, HUGE_FRAME_SIZE - 1, &mut last);
    assert_eq!(last, [0], "a reused huge frame is zeroed");
    // SAFETY: as above.
    unsafe { pool.put(again) };
}

#[test]
fn huge_entries_translate_2_mib_and_leave_whole() {
    const HUGE: u64 = fault::pagetable::HUGE_PAGE_SIZE;
    let pool = FramePool::with_huge_pages(
        FramePoolConfig {
            chunk_frames: 4,
            max_frames: 4,
        },
        2,
    )
    .unwrap();
    let rcu = EpochRcu;
    let table = PageTable::new();
    let base = 3 * HUGE;
    let frame = pool.alloc_huge().unwrap();
    let slot = table.huge_entry_or_insert(base + 12345);
    slot.store(
        Pte::new(frame, WRITABLE | fault::pagetable::HUGE).0,
        Ordering::Release,
    );
    for addr in [base, base + 4096, base + HUGE - 1] {
        let pte = table.translate(addr).expect("one entry maps the 2 MiB");
        assert!(pte.huge() && pte.frame() == frame, "{addr:#x}");
    }
    assert_eq!(table.translate(base + HUGE), None);
    assert_eq!(
        table.present(0, 8 * HUGE).len(),
        1,
        "one leaf, at its first address"
    );
    assert!(table.protect(base, base + HUGE, true, false));
    assert!(!table.translate(base).unwrap().writable());
    // Moved whole to another 2 MiB-aligned place, then zapped with its tables.
    assert!(table.relocate(base, 5 * HUGE, HUGE));
    assert_eq!(table.translate(base), None);
    assert_eq!(table.translate(5 * HUGE + 8).map(|pte| pte.frame()), Some(frame));
    let frames = table.zap(5 * HUGE, 6 * HUGE, (0, 1 << 40), &rcu);
    assert_eq!(frames, vec![frame]);
    rcu.barrier();
    assert_eq!(table.tables(), 0, "the tables above the huge entry went with it");
    // SAFETY: the zapped entry's reference; nobody walks the table.
    unsafe { pool.put_many(&frames) };
    assert_eq!(pool.huge_in_use(), 0);
}
