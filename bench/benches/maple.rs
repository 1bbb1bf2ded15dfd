//! The maple tree beside the maps a user would pick instead, in one run.
//!
//! Every map holds `n` ranges `[16 i, 16 i + 7]`; lookups ask for the range holding a random
//! index below `16 n` (half of them land in gaps). Point maps answer with a floor search
//! (greatest start <= index) and a bounds check, which is what a range lookup costs them.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use crossbeam_skiplist::SkipMap;
use maple::MapleTree;
use maple::testing::Rng;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

const SIZES: [u64; 5] = [100, 1_000, 10_000, 100_000, 1_000_000];
const RANGE_STRIDE: u64 = 16;
const RANGE_LEN: u64 = 8;

fn maple_tree(n: u64) -> MapleTree<Box<u64>> {
    let tree = MapleTree::new();
    for i in 0..n {
        tree.insert_range(i * RANGE_STRIDE, i * RANGE_STRIDE + RANGE_LEN - 1, Box::new(i))
            .unwrap();
    }
    tree
}

/// first -> (last, value)
fn btree(n: u64) -> BTreeMap<u64, (u64, u64)> {
    (0..n)
        .map(|i| (i * RANGE_STRIDE, (i * RANGE_STRIDE + RANGE_LEN - 1, i)))
        .collect()
}

/// The range holding `index`, as `(first, last)`: the lookup without touching the value.
#[inline]
fn btree_range(map: &BTreeMap<u64, (u64, u64)>, index: u64) -> Option<(u64, u64)> {
    map.range(..=index)
        .next_back()
        .and_then(|(&first, &(last, _))| (last >= index).then_some((first, last)))
}

#[inline]
fn btree_lookup(map: &BTreeMap<u64, (u64, u64)>, index: u64) -> Option<u64> {
    map.range(..=index)
        .next_back()
        .and_then(|(_, &(last, value))| (last >= index).then_some(value))
}

fn lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("maple/lookup");
    for n in SIZES {
        let universe = n * RANGE_STRIDE;
        let tree = maple_tree(n);
        group.bench_function(BenchmarkId::new("maple (guard per lookup)", n), |b| {
            let mut rng = Rng::new(1);
            b.iter(|| {
                let guard = tree.guard();
                black_box(tree.load(rng.below(universe), &guard).copied())
            })
        });
        let guard = tree.guard();
        group.bench_function(BenchmarkId::new("maple (guard held)", n), |b| {
            let mut rng = Rng::new(1);
            b.iter(|| black_box(tree.load(rng.below(universe), &guard).copied()))
        });
        group.bench_function(BenchmarkId::new("maple range bounds (guard held)", n), |b| {
            let mut rng = Rng::new(1);
            b.iter(|| {
                black_box(
                    tree.load_range(rng.below(universe), &guard)
                        .map(|(f, l, _)| (f, l)),
                )
            })
        });
        drop(guard);
        drop(tree);

        let map = btree(n);
        group.bench_function(BenchmarkId::new("std BTreeMap", n), |b| {
            let mut rng = Rng::new(1);
            b.iter(|| black_box(btree_lookup(&map, rng.below(universe))))
        });
        group.bench_function(BenchmarkId::new("std BTreeMap range bounds", n), |b| {
            let mut rng = Rng::new(1);
            b.iter(|| black_box(btree_range(&map, rng.below(universe))))
        });
        drop(map);

        let index = scc::TreeIndex::new();
        for i in 0..n {
            index
                .insert_sync(i * RANGE_STRIDE, (i * RANGE_STRIDE + RANGE_LEN - 1, i))
                .unwrap();
        }
        group.bench_function(BenchmarkId::new("scc TreeIndex", n), |b| {
            let mut rng = Rng::new(1);
            b.iter(|| {
                let key = rng.below(universe);
                let guard = scc::Guard::new();
                let found = index.range(..=key, &guard).next_back();
                black_box(found.and_then(|(_, &(last, value))| (last >= key).then_some(value)))
            })
        });
        drop(index);

        let skip = SkipMap::new();
        for i in 0..n {
            skip.insert(i * RANGE_STRIDE, (i * RANGE_STRIDE + RANGE_LEN - 1, i));
        }
        group.bench_function(BenchmarkId::new("crossbeam SkipMap", n), |b| {
            let mut rng = Rng::new(1);
            b.iter(|| {
                let key = rng.below(universe);
                let found = skip.upper_bound(Bound::Included(&key));
                black_box(found.and_then(|entry| {
                    let (last, value) = *entry.value();
                    (last >= key).then_some(value)
                }))
            })
        });
    }
    group.finish();
}

/// A store over an existing range (displacing it) and an erase + re-insert of a range.
fn writes(c: &mut Criterion) {
    let mut group = c.benchmark_group("maple/write");
    for n in SIZES {
        let tree = maple_tree(n);
        group.bench_function(BenchmarkId::new("maple store_range (replace)", n), |b| {
            let mut rng = Rng::new(2);
            b.iter(|| {
                let first = rng.below(n) * RANGE_STRIDE;
                drop(
                    tree.store_range(first, first + RANGE_LEN - 1, Box::new(first))
                        .unwrap(),
                );
            })
        });
        group.bench_function(BenchmarkId::new("maple erase + insert_range", n), |b| {
            let mut rng = Rng::new(3);
            b.iter(|| {
                let first = rng.below(n) * RANGE_STRIDE;
                drop(tree.erase(first));
                tree.insert_range(first, first + RANGE_LEN - 1, Box::new(first))
                    .unwrap();
            })
        });
        drop(tree);
        let map = RwLock::new(btree(n));
        group.bench_function(BenchmarkId::new("RwLock<BTreeMap> insert (replace)", n), |b| {
            let mut rng = Rng::new(2);
            b.iter(|| {
                let first = rng.below(n) * RANGE_STRIDE;
                black_box(map.write().unwrap().insert(first, (first + RANGE_LEN - 1, first)));
            })
        });
        group.bench_function(BenchmarkId::new("RwLock<BTreeMap> remove + insert", n), |b| {
            let mut rng = Rng::new(3);
            b.iter(|| {
                let first = rng.below(n) * RANGE_STRIDE;
                black_box(map.write().unwrap().remove(&first));
                black_box(map.write().unwrap().insert(first, (first + RANGE_LEN - 1, first)));
            })
        });
        drop(map);
        // The concurrent point maps: erase and re-insert (neither replaces in place).
        let index = scc::TreeIndex::new();
        for i in 0..n {
            let _ = index.insert_sync(i * RANGE_STRIDE, (i * RANGE_STRIDE + RANGE_LEN - 1, i));
        }
        group.bench_function(BenchmarkId::new("scc TreeIndex remove + insert", n), |b| {
            let mut rng = Rng::new(3);
            b.iter(|| {
                let first = rng.below(n) * RANGE_STRIDE;
                black_box(index.remove_sync(&first));
                black_box(index.insert_sync(first, (first + RANGE_LEN - 1, first)).is_ok());
            })
        });
        let skip = SkipMap::new();
        for i in 0..n {
            skip.insert(i * RANGE_STRIDE, (i * RANGE_STRIDE + RANGE_LEN - 1, i));
        }
        group.bench_function(BenchmarkId::new("crossbeam SkipMap remove + insert", n), |b| {
            let mut rng = Rng::new(3);
            b.iter(|| {
                let first = rng.below(n) * RANGE_STRIDE;
                black_box(skip.remove(&first).is_some());
                black_box(skip.insert(first, (first + RANGE_LEN - 1, first)));
            })
        });
    }
    group.finish();
}

/// The highest free 8 indices below a random limit. The tree has 8-index gaps everywhere, so
/// the search always succeeds near the limit; the BTreeMap scan is the obvious alternative.
fn gaps(c: &mut Criterion) {
    let mut group = c.benchmark_group("maple/find_gap_rev");
    for n in SIZES {
        let universe = n * RANGE_STRIDE;
        let tree = maple_tree(n);
        group.bench_function(BenchmarkId::new("maple", n), |b| {
            let mut rng = Rng::new(4);
            b.iter(|| black_box(tree.find_gap_rev(0, rng.below(universe), RANGE_LEN).unwrap()))
        });
        // A request no gap satisfies: the tree answers from the recorded gaps alone.
        group.bench_function(BenchmarkId::new("maple (no fit)", n), |b| {
            b.iter(|| black_box(tree.find_gap_rev(0, universe, RANGE_STRIDE).unwrap()))
        });
        let map = btree(n);
        group.bench_function(BenchmarkId::new("BTreeMap scan", n), |b| {
            let mut rng = Rng::new(4);
            b.iter(|| {
                let limit = rng.below(universe);
                // Walk ranges downwards from the limit until a hole of RANGE_LEN fits.
                let mut top = limit;
                let mut found = None;
                for (&first, &(last, _)) in map.range(..=limit).rev() {
                    if last < top && top - last >= RANGE_LEN {
                        found = Some((top - RANGE_LEN + 1, top));
                        break;
                    }
                    top = first.saturating_sub(1);
                }
                black_box(found)
            })
        });
        group.bench_function(BenchmarkId::new("BTreeMap scan (no fit)", n), |b| {
            b.iter(|| {
                let mut top = universe;
                let mut found = None;
                for (&first, &(last, _)) in map.range(..=universe).rev() {
                    if last < top && top - last >= RANGE_STRIDE {
                        found = Some(top);
                        break;
                    }
                    top = first.saturating_sub(1);
                }
                black_box(found)
            })
        });
    }
    group.finish();
}

/// What the second thread does while one thread reads.
#[derive(Clone, Copy)]
enum Background {
    /// Nothing: the reader alone.
    Idle,
    /// Spins on private data: a control for how much a busy second vCPU alone slows the reader.
    Busy,
    /// Stores continuously into the same map.
    Writer,
}

/// Reader throughput on one thread while another thread idles, spins, or stores continuously.
fn readers_under_writer(c: &mut Criterion) {
    const N: u64 = 100_000;
    let universe = N * RANGE_STRIDE;
    let mut group = c.benchmark_group("maple/read_while_writing");
    for (background, label) in [
        (Background::Idle, "no writer"),
        (Background::Busy, "busy thread"),
        (Background::Writer, "writer running"),
    ] {
        let tree = Arc::new(maple_tree(N));
        group.bench_function(BenchmarkId::new("maple", label), |b| {
            b.iter_custom(|iters| {
                let write = |tree: &MapleTree<Box<u64>>, rng: &mut Rng| {
                    let first = rng.below(N) * RANGE_STRIDE;
                    drop(
                        tree.store_range(first, first + RANGE_LEN - 1, Box::new(first))
                            .unwrap(),
                    );
                };
                with_background(background, &tree, write, || {
                    let mut rng = Rng::new(5);
                    let start = Instant::now();
                    for _ in 0..iters {
                        let guard = tree.guard();
                        black_box(
                            tree.load_range(rng.below(universe), &guard)
                                .map(|(f, l, _)| (f, l)),
                        );
                    }
                    start.elapsed()
                })
            })
        });
        let map = Arc::new(RwLock::new(btree(N)));
        group.bench_function(BenchmarkId::new("RwLock<BTreeMap>", label), |b| {
            b.iter_custom(|iters| {
                let write = |map: &RwLock<BTreeMap<u64, (u64, u64)>>, rng: &mut Rng| {
                    let first = rng.below(N) * RANGE_STRIDE;
                    map.write().unwrap().insert(first, (first + RANGE_LEN - 1, first));
                };
                with_background(background, &map, write, || {
                    let mut rng = Rng::new(5);
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(btree_range(&map.read().unwrap(), rng.below(universe)));
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

/// Runs `measure` on this thread while another thread does `background` (`write` in a loop
/// for [`Background::Writer`]).
fn with_background<S: Send + Sync + 'static>(
    background: Background,
    shared: &Arc<S>,
    write: impl Fn(&S, &mut Rng) + Send + 'static,
    measure: impl FnOnce() -> Duration,
) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let helper = match background {
        Background::Idle => None,
        Background::Busy => {
            let stop = stop.clone();
            Some(thread::spawn(move || {
                let mut rng = Rng::new(6);
                while !stop.load(Ordering::Relaxed) {
                    black_box(rng.below(1_000));
                }
            }))
        }
        Background::Writer => {
            let (shared, stop) = (shared.clone(), stop.clone());
            Some(thread::spawn(move || {
                let mut rng = Rng::new(6);
                while !stop.load(Ordering::Relaxed) {
                    write(&shared, &mut rng);
                }
            }))
        }
    };
    let elapsed = measure();
    stop.store(true, Ordering::Relaxed);
    if let Some(helper) = helper {
        helper.join().unwrap();
    }
    elapsed
}

criterion_group! {
    name = maple;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = lookups, writes, gaps, readers_under_writer
}
criterion_main!(maple);
