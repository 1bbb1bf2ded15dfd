//! Page-table scenarios written against the `maple::sync` facade, run with std threads
//! (tests/pagetable.rs) and under shuttle (tests/pagetable_shuttle.rs).

use fault::frames::{FramePool, FramePoolConfig};
use fault::pagetable::{PageTable, Pte};
use maple::rcu::Rcu;
use maple::sync::atomic::Ordering;
use maple::sync::{Arc, thread};

/// `walkers` threads allocate the tables down to one address and try to install a frame there:
/// one set of tables and one frame survive, and a zap takes them all back.
pub fn racing_installs_share_tables_and_one_frame<R: Rcu>(walkers: usize) {
    const ADDR: u64 = 0x4000_0000;
    let table = Arc::new(PageTable::new());
    let pool = Arc::new(
        FramePool::new(FramePoolConfig {
            chunk_frames: 4,
            max_frames: 8,
        })
        .unwrap(),
    );
    let rcu = Arc::new(R::default());
    let threads: Vec<_> = (0..walkers)
        .map(|_| {
            let (table, pool, rcu) = (table.clone(), pool.clone(), rcu.clone());
            thread::spawn(move || {
                let _guard = rcu.read();
                let frame = pool.alloc().unwrap();
                let entry = table.entry_or_insert(ADDR);
                if entry
                    .compare_exchange(0, Pte::new(frame, 0).0, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    // SAFETY: never published.
                    unsafe { pool.put(frame) };
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(table.tables(), 3, "one table per level");
    assert_eq!(pool.in_use(), 1, "one frame installed");
    let frames = table.zap(0, 1 << 48, (0, 1 << 48), &*rcu);
    assert_eq!((frames.len(), table.tables()), (1, 0));
    // SAFETY: unmapped, and no reader is left.
    unsafe { pool.put(frames[0]) };
    assert_eq!(pool.in_use(), 0);
    rcu.barrier();
}
