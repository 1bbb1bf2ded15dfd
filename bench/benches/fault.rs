//! Fault cost per page: maplevm's engine (fast path: anonymous memory with and without
//! zero-filling, a cached file page; slow path: a file page read with the guard dropped) beside
//! an engine with no synchronization at all (single thread, plain BTreeMap, same page table and
//! frame pool), and beside the same engine with the read-side section and compare-and-swap
//! install of a lock-free fault (`ProtocolAtomicsEngine`); and two threads faulting one large
//! VMA, per fault, to set beside one thread.
//! Each measurement maps a fresh region, faults its pages (timed), and unmaps it (not timed):
//! see `bench::fault_cost`, whose paired rounds (`bench fault-cost`) give the ratios between
//! these engines that this machine's phases do not move.

use bench::fault_cost::{FaultTarget, Maplevm, PAGES, REGION, frame_pool, release, time_region};
use bench::unsync_engine::{ProtocolAtomicsEngine, UnsyncEngine};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use fault::Access;
use std::sync::Barrier;
use std::time::{Duration, Instant};
use vma::{MapFlags, PAGE_SIZE, Prot};

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

/// Times `iters` faults of `target`, a region of up to `PAGES` at a time.
fn bench_target(group: &mut BenchmarkGroup<'_, WallTime>, name: String, mut target: impl FaultTarget) {
    group.bench_function(name, |b| {
        b.iter_custom(|iters| in_batches(iters, PAGES, |pages| time_region(&mut target, pages)))
    });
}

fn single_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("fault");
    for zero_fill in [true, false] {
        let zeroing = if zero_fill { "zero-fill" } else { "no zero-fill" };
        let name = |engine: &str| format!("{engine} anonymous, {zeroing}");
        bench_target(
            &mut group,
            name("maplevm fast path"),
            Maplevm::anonymous(zero_fill),
        );
        let unsync = UnsyncEngine::<false>::new(frame_pool(), zero_fill);
        bench_target(&mut group, name("unsynchronized"), unsync);
        let atomics = ProtocolAtomicsEngine::new(frame_pool(), zero_fill);
        bench_target(&mut group, name("unsynchronized + protocol atomics"), atomics);
    }
    let cached = Maplevm::cached_file();
    bench_target(&mut group, "maplevm fast path cached file page".into(), cached);
    let cold = Maplevm::cold_file();
    bench_target(&mut group, "maplevm slow path file page read".into(), cold);
    group.finish();
}

/// Two threads fault disjoint halves of one VMA; the time reported is per fault per thread
/// (wall time / faults one thread made), to set beside the single-thread figure. Without
/// zero-filling, what remains is the engine's own cost, separated from memory bandwidth.
fn two_threads_one_vma(c: &mut Criterion) {
    const PER_THREAD: u64 = 2048;
    let mut group = c.benchmark_group("fault");
    for (zero_fill, threads) in [(true, 1u64), (true, 2), (false, 1), (false, 2)] {
        let target = Maplevm::anonymous(zero_fill);
        let maplevm = target.mm();
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
                    release(maplevm, at, threads * PER_THREAD);
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
        let shared = shared_pool.then(frame_pool);
        let mut engines: Vec<UnsyncEngine> = (0..threads)
            .map(|_| UnsyncEngine::new(shared.clone().unwrap_or_else(frame_pool), zero_fill))
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
