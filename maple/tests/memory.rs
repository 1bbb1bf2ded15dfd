//! Memory: nothing leaks, and erasure rebalances. A counting global allocator counts the
//! allocations of the test's own thread (the test harness's thread allocates at its own pace,
//! which once made a whole-process count flaky); the tree is used from that thread only, so
//! everything it allocates is freed there too. The checks run one after another in a single
//! test.
#![cfg(not(feature = "shuttle"))]

use maple::MapleTree;
use maple::rcu::{Rcu, SeizeRcu, SlotRcu};
use maple::testing::Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// Whether this thread's allocations are counted.
    static COUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn counted() -> bool {
    COUNTED.try_with(|c| c.get()).unwrap_or(false)
}

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            LIVE.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            LIVE.fetch_sub(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Counts its drops.
#[derive(Clone)]
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Builds and churns a tree, then drops it: every value is dropped once and every allocation
/// (nodes, values, retired nodes in the domain) is returned.
fn drop_frees_everything<R: Rcu>() {
    let drops = Arc::new(AtomicUsize::new(0));
    let before = LIVE.load(Ordering::Relaxed);
    let mut created = 0;
    {
        let tree = MapleTree::<Box<Counted>, R>::new();
        let mut rng = Rng::new(7);
        for i in 0..20_000u64 {
            let first = rng.below(1_000_000);
            let last = first + rng.below(200);
            created += 1;
            match i % 4 {
                0 => drop(tree.insert_range(first, last, Box::new(Counted(drops.clone())))),
                1 => drop(
                    tree.store_range(first, last, Box::new(Counted(drops.clone())))
                        .unwrap(),
                ),
                2 => {
                    created -= 1;
                    drop(tree.erase_range(first, last).unwrap());
                }
                _ => {
                    created -= 1;
                    drop(tree.erase(first));
                }
            }
        }
        assert!(!tree.is_empty());
        tree.validate().unwrap();
    }
    // Values that insert_range refused were dropped at once; clones made by splits count too.
    let dropped = drops.load(Ordering::Relaxed);
    assert!(dropped >= created, "{dropped} drops for {created} values created");
    assert_eq!(
        LIVE.load(Ordering::Relaxed),
        before,
        "{}: every allocation is freed",
        R::NAME
    );
}

#[test]
fn memory() {
    COUNTED.with(|c| c.set(true));
    drop_frees_everything::<SlotRcu>();
    drop_frees_everything::<SeizeRcu>();

    // Dropped values are counted exactly: a tree of distinct values, dropped whole.
    let drops = Arc::new(AtomicUsize::new(0));
    let tree = MapleTree::<Box<Counted>, SlotRcu>::new();
    for i in 0..10_000u64 {
        tree.insert_range(i * 4, i * 4 + 2, Box::new(Counted(drops.clone())))
            .unwrap();
    }
    drop(tree);
    assert_eq!(drops.load(Ordering::Relaxed), 10_000);

    // Rebalancing: 100,000 ranges, 90% erased in random order.
    let tree = MapleTree::<Box<u64>, SlotRcu>::new();
    let mut firsts: Vec<u64> = (0..100_000u64).map(|i| i * 16).collect();
    for &first in &firsts {
        tree.insert_range(first, first + 7, Box::new(first)).unwrap();
    }
    let full = tree.stats();
    let mut rng = Rng::new(99);
    for _ in 0..90_000 {
        let pick = rng.below(firsts.len() as u64) as usize;
        let first = firsts.swap_remove(pick);
        assert_eq!(tree.erase(first).len(), 1);
    }
    tree.validate().unwrap();
    let after = tree.stats();
    let ratio = after.nodes() as f64 / after.minimum_nodes() as f64;
    println!(
        "full: {full:?} (minimum {}); after erasing 90%: {after:?} (minimum {}, ratio {ratio:.2})",
        full.minimum_nodes(),
        after.minimum_nodes()
    );
    assert_eq!(tree.len(), 10_000);
    assert!(
        ratio <= 3.0,
        "live nodes {} are within 3x of the minimum {}",
        after.nodes(),
        after.minimum_nodes()
    );
}
