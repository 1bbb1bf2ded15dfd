//! The tree under shuttle: one writer and two readers, every interleaving point controlled by
//! the checker. Replaced nodes are poisoned, not freed, by the model build, and values poison
//! themselves on drop, so a reader reaching freed memory fails loudly. Run with
//! `--features shuttle`.
#![cfg(feature = "shuttle")]

#[path = "support/no_grace.rs"]
mod no_grace;

use maple::MapleTree;
use maple::rcu::{Rcu, SlotRcu};
use maple::sync::atomic::{AtomicU64, Ordering};
use maple::sync::{Arc, thread};
use maple::testing::{assert_broken_variant_fails, check_random_and_pct};

fn check_both(test: impl Fn() + Send + Sync + 'static) {
    check_random_and_pct(100_000, test);
}
use no_grace::NoGrace;

const LIVE: u64 = 0x11fe;
const POISONED: u64 = 0xdead;

/// A value that poisons itself when dropped (its memory is quarantined under shuttle).
struct Val {
    id: u64,
    state: AtomicU64,
}

impl Val {
    fn new(id: u64) -> Self {
        Self {
            id,
            state: AtomicU64::new(LIVE),
        }
    }

    /// The id, after checking the value was not freed.
    fn read(&self) -> u64 {
        assert_eq!(
            self.state.load(Ordering::Relaxed),
            LIVE,
            "a reader saw a freed value"
        );
        self.id
    }
}

impl Clone for Val {
    fn clone(&self) -> Self {
        Self::new(self.id)
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        self.state.store(POISONED, Ordering::Relaxed);
    }
}

/// Twenty ranges `[100 i, 100 i + 9]` with id `i` (two leaves), plus the writer's target.
fn populated<R: Rcu>() -> MapleTree<Box<Val>, R> {
    let tree = MapleTree::new();
    for i in 0..20 {
        tree.insert_range(100 * i, 100 * i + 9, Box::new(Val::new(i)))
            .unwrap();
    }
    tree
}

/// The writer: overwrites range 5 twice, splits range 7, erases range 12 and re-inserts it;
/// it never touches range 3.
fn write<R: Rcu>(tree: &MapleTree<Box<Val>, R>) {
    drop(tree.store_range(500, 509, Box::new(Val::new(50))).unwrap());
    drop(tree.store_range(703, 704, Box::new(Val::new(70))).unwrap());
    drop(tree.erase(1200));
    drop(tree.store_range(500, 509, Box::new(Val::new(51))).unwrap());
    tree.insert_range(1200, 1209, Box::new(Val::new(120))).unwrap();
}

/// Every range any version of the tree holds: `(first, last, id)`.
fn possible(first: u64, last: u64, id: u64) -> bool {
    let original = id < 20 && first == 100 * id && last == 100 * id + 9;
    let trimmed_7 = id == 7 && ((first, last) == (700, 702) || (first, last) == (705, 709));
    let written = matches!(
        (first, last, id),
        (500, 509, 50 | 51) | (703, 704, 70) | (1200, 1209, 120)
    );
    original || trimmed_7 || written
}

fn reader<R: Rcu>(tree: &MapleTree<Box<Val>, R>) {
    for _ in 0..2 {
        let guard = tree.guard();
        assert_eq!(
            tree.load(305, &guard).map(Val::read),
            Some(3),
            "an untouched index keeps its value"
        );
        let overwritten = tree.load(505, &guard).map(Val::read);
        assert!(
            matches!(overwritten, Some(5 | 50 | 51)),
            "old or new value, got {overwritten:?}"
        );
        let mut previous_last = None;
        for (first, last, value) in tree.iter(&guard) {
            let id = value.read();
            assert!(
                possible(first, last, id),
                "range [{first}, {last}] -> {id} is whole"
            );
            assert!(
                previous_last.is_none_or(|p| first > p),
                "ranges ascend without overlap"
            );
            previous_last = Some(last);
        }
        drop(guard);
        thread::yield_now();
    }
}

fn one_writer_two_readers<R: Rcu>() {
    let tree = Arc::new(populated::<R>());
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let tree = tree.clone();
            thread::spawn(move || reader(&tree))
        })
        .collect();
    write(&tree);
    for reader in readers {
        reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    }
    tree.validate().unwrap();
    tree.rcu().barrier();
}

#[test]
fn readers_see_whole_old_or_new_ranges() {
    check_both(one_writer_two_readers::<SlotRcu>);
}

#[test]
fn freeing_replaced_nodes_without_grace_is_caught() {
    assert_broken_variant_fails(100_000, &["freed"], one_writer_two_readers::<NoGrace<SlotRcu>>);
}
