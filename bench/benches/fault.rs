//! Fault cost per page: maplevm's engine (fast path: anonymous memory with and without
//! zero-filling, a cached file page; slow path: a file page read with the guard dropped) beside
//! an engine with no synchronization at all (single thread, plain BTreeMap, same page table and
//! frame pool), and beside the same engine executing the two locked instructions a lock-free
//! fault cannot do without (`ProtocolAtomicsEngine`); and two threads faulting one large VMA,
//! per fault, to set beside one thread.
//! Each measurement maps a fresh region, faults its pages (timed), and unmaps it (not timed).

use bench::unsync_engine::{ProtocolAtomicsEngine, UnsyncEngine};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use fault::{Access, File, FramePool, FramePoolConfig, MemBacking, Mm, MmConfig};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use vma::{MapFlags, PAGE_SIZE, Prot};

const PAGES: u64 = 512;
const REGION: u64 = 0x1000_0000;

fn pool() -> Arc<FramePool> {
    Arc::new(FramePool::new(FramePoolConfig::default()).unwrap())
}

fn mm(zero_fill: bool) -> Mm {
    let config = MmConfig {
        zero_fill,
        ..MmConfig::default()
    };
    Mm::new(config, pool()).unwrap()
}

/// Unmaps a region and waits until its frames are back in the pool, so that frame release
/// (which munmap defers by a grace period) is charged to the untimed teardown, as the
/// unsynchronized engine's unmap is, and not to the next timed fault that happens to run the
/// deferred work.
fn release(mm: &Mm, at: u64, pages: u64) {
    mm.munmap(at, pages * PAGE_SIZE).unwrap();
    mm.barrier();
}

/// Splits `iters` into batches of at most `size` and sums what `batch(count)` measures.
fn in_batches(iters: u64, size: u64, mut batch: impl FnMut(u64) -> Duration) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let count = left.min(size);
        total += batch(count);
        left -= count;
    }
    total
}

/// Times `iters` faults, `PAGES` per region: `setup` maps a region and returns its address,
/// `fault` faults one page, `teardown` unmaps it.
fn per_fault<S>(
    iters: u64,
    mut setup: impl FnMut() -> S,
    mut fault: impl FnMut(&S, u64),
    mut teardown: impl FnMut(S),
) -> Duration {
    in_batches(iters, PAGES, |pages| {
        let region = setup();
        let started = Instant::now();
        for page in 0..pages {
            fault(&region, page);
        }
        let elapsed = started.elapsed();
        teardown(region);
        elapsed
    })
}

/// Runs `work` on one thread per worker; each waits at the barrier it is given before it
/// starts its clock and returns its time. The slowest thread's time.
fn slowest<W: Send>(workers: Vec<W>, work: impl Fn(W, &Barrier) -> Duration + Sync) -> Duration {
    let start = Barrier::new(workers.len());
    std::thread::scope(|scope| {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|worker| {
                let (work, start) = (&work, &start);
                scope.spawn(move || work(worker, start))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).max().unwrap()
    })
}

/// Times `engine`'s anonymous faults, as `{name} anonymous, {zeroing}`.
fn bench_unsync<const PROTOCOL_ATOMICS: bool>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    mut engine: UnsyncEngine<PROTOCOL_ATOMICS>,
    name: &str,
    zeroing: &str,
) {
    let engine = std::cell::RefCell::new(&mut engine);
    group.bench_function(format!("{name} anonymous, {zeroing}"), |b| {
        b.iter_custom(|iters| {
            per_fault(
                iters,
                || {
                    engine
                        .borrow_mut()
                        .map(REGION, PAGES * PAGE_SIZE, Prot::READ_WRITE);
                    REGION
                },
                |&at, page| {
                    engine
                        .borrow_mut()
                        .fault(at + page * PAGE_SIZE, Access::Write)
                        .unwrap();
                },
                |at| engine.borrow_mut().unmap(at),
            )
        })
    });
}

fn single_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("fault");
    for zero_fill in [true, false] {
        let zeroing = if zero_fill { "zero-fill" } else { "no zero-fill" };
        let maplevm = mm(zero_fill);
        group.bench_function(format!("maplevm fast path anonymous, {zeroing}"), |b| {
            b.iter_custom(|iters| {
                per_fault(
                    iters,
                    || {
                        let flags = MapFlags::PRIVATE_ANONYMOUS.fixed();
                        maplevm
                            .mmap(REGION, PAGES * PAGE_SIZE, Prot::READ_WRITE, flags, None)
                            .unwrap()
                    },
                    |&at, page| {
                        maplevm.fault(at + page * PAGE_SIZE, Access::Write).unwrap();
                    },
                    |at| release(&maplevm, at, PAGES),
                )
            })
        });
        bench_unsync(
            &mut group,
            UnsyncEngine::<false>::new(pool(), zero_fill),
            "unsynchronized",
            zeroing,
        );
        bench_unsync(
            &mut group,
            ProtocolAtomicsEngine::new(pool(), zero_fill),
            "unsynchronized + protocol atomics",
            zeroing,
        );
    }

    let maplevm = mm(true);
    let cached = Arc::new(MemBacking::zeroed(
        "/cached",
        maplevm.frames(),
        (PAGES * PAGE_SIZE) as usize,
    ));
    let cached_file = File::new(cached.clone());
    for page in 0..PAGES {
        let frame = fault::Backing::read_page(&*cached, page).unwrap();
        // SAFETY: the reference read_page handed us; the page cache keeps its own.
        unsafe { maplevm.frames().put(frame) };
    }
    let map_file = |file: &Arc<File>| {
        let flags = MapFlags::PRIVATE.fixed();
        maplevm
            .mmap(REGION, PAGES * PAGE_SIZE, Prot::READ, flags, Some((file, 0)))
            .unwrap()
    };
    group.bench_function("maplevm fast path cached file page", |b| {
        b.iter_custom(|iters| {
            per_fault(
                iters,
                || map_file(&cached_file),
                |&at, page| {
                    maplevm.fault(at + page * PAGE_SIZE, Access::Read).unwrap();
                },
                |at| release(&maplevm, at, PAGES),
            )
        })
    });
    group.bench_function("maplevm slow path file page read", |b| {
        b.iter_custom(|iters| {
            per_fault(
                iters,
                || {
                    // A fresh file each time: nothing cached, every fault reads.
                    let backing = MemBacking::zeroed("/cold", maplevm.frames(), (PAGES * PAGE_SIZE) as usize);
                    let file = File::new(Arc::new(backing));
                    (map_file(&file), file)
                },
                |(at, _), page| {
                    maplevm.fault(at + page * PAGE_SIZE, Access::Read).unwrap();
                },
                |(at, _)| release(&maplevm, at, PAGES),
            )
        })
    });
    group.finish();
}

/// Two threads fault disjoint halves of one VMA; the time reported is per fault per thread
/// (wall time / faults one thread made), to set beside the single-thread figure. Without
/// zero-filling, what remains is the engine's own cost, separated from memory bandwidth.
fn two_threads_one_vma(c: &mut Criterion) {
    const PER_THREAD: u64 = 2048;
    let mut group = c.benchmark_group("fault");
    for (zero_fill, threads) in [(true, 1u64), (true, 2), (false, 1), (false, 2)] {
        let maplevm = mm(zero_fill);
        let zeroing = if zero_fill { "zero-fill" } else { "no zero-fill" };
        let name = format!("maplevm one VMA, {zeroing}, {threads} thread(s), per fault");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                in_batches(iters, PER_THREAD, |faults| {
                    let len = threads * PER_THREAD * PAGE_SIZE;
                    let flags = MapFlags::PRIVATE_ANONYMOUS.fixed();
                    let at = maplevm.mmap(REGION, len, Prot::READ_WRITE, flags, None).unwrap();
                    let bases = (0..threads).map(|t| at + t * PER_THREAD * PAGE_SIZE).collect();
                    let elapsed = slowest(bases, |base, start| {
                        start.wait();
                        let started = Instant::now();
                        for page in 0..faults {
                            maplevm.fault(base + page * PAGE_SIZE, Access::Write).unwrap();
                        }
                        started.elapsed()
                    });
                    release(&maplevm, at, threads * PER_THREAD);
                    elapsed
                })
            })
        });
    }
    group.finish();
}

/// The controls for `two_threads_one_vma`: each thread faults its own region in its own
/// unsynchronized engine (own page table). With its own frame pool too, nothing is shared, so
/// what two threads lose is the machine's, not the design's; with one frame pool for both (as
/// maplevm's threads share their `Mm`'s), what they lose beyond that is the pool's: frames one
/// thread freed (and whose lines another core may hold) reused by the other.
fn two_threads_nothing_shared(c: &mut Criterion) {
    const PER_THREAD: u64 = 2048;
    let mut group = c.benchmark_group("fault");
    let cases = [
        (true, 1u64, false),
        (true, 2, false),
        (true, 2, true),
        (false, 1, false),
        (false, 2, false),
        (false, 2, true),
    ];
    for (zero_fill, threads, shared_pool) in cases {
        let zeroing = if zero_fill { "zero-fill" } else { "no zero-fill" };
        let shared = shared_pool.then(pool);
        let mut engines: Vec<UnsyncEngine> = (0..threads)
            .map(|_| UnsyncEngine::new(shared.clone().unwrap_or_else(pool), zero_fill))
            .collect();
        let engines_are = if shared_pool {
            "engines sharing one pool"
        } else {
            "own engines"
        };
        let name =
            format!("unsynchronized {engines_are} (control), {zeroing}, {threads} thread(s), per fault");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                in_batches(iters, PER_THREAD, |faults| {
                    slowest(engines.iter_mut().collect(), |engine, start| {
                        engine.map(REGION, PER_THREAD * PAGE_SIZE, Prot::READ_WRITE);
                        start.wait();
                        let started = Instant::now();
                        for page in 0..faults {
                            engine.fault(REGION + page * PAGE_SIZE, Access::Write).unwrap();
                        }
                        let elapsed = started.elapsed();
                        engine.unmap(REGION);
                        elapsed
                    })
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = fault;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    targets = single_thread, two_threads_one_vma, two_threads_nothing_shared
}
criterion_main!(fault);
