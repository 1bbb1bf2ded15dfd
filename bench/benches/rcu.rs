//! RCU domains side by side: guard enter/exit, retire, synchronize; 1 and 2 threads.
//!
//! With 2 threads, a second thread performs the same operation in a loop while the measured
//! thread runs, so the figures include the cost of sharing the domain's cache lines.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use maple::rcu::{DropBox, EpochRcu, Rcu, SeizeRcu, SlotRcu};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Runs `op` `iters` times on this thread while `threads - 1` other threads run `op` in a loop.
fn timed<R: Rcu>(rcu: &Arc<R>, threads: usize, iters: u64, op: fn(&R)) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let helpers: Vec<_> = (1..threads)
        .map(|_| {
            let (rcu, stop) = (rcu.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    op(&rcu);
                }
            })
        })
        .collect();
    let start = Instant::now();
    for _ in 0..iters {
        op(rcu);
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for helper in helpers {
        helper.join().unwrap();
    }
    elapsed
}

fn guard<R: Rcu>(rcu: &R) {
    black_box(rcu.read());
}

fn retire<R: Rcu>(rcu: &R) {
    let object = Box::into_raw(Box::new(black_box(7u64)));
    // SAFETY: the box was never shared; DropBox frees a box.
    unsafe { rcu.retire::<u64, DropBox>(object) };
}

fn guard_and_synchronize<R: Rcu>(rcu: &R) {
    rcu.synchronize();
}

fn domain<R: Rcu>(c: &mut Criterion) {
    let rcu = Arc::new(R::default());
    let mut group = c.benchmark_group(format!("rcu/{}", R::NAME));
    for threads in [1, 2] {
        group.bench_function(BenchmarkId::new("guard", threads), |b| {
            b.iter_custom(|iters| timed(&rcu, threads, iters, guard::<R>))
        });
        group.bench_function(BenchmarkId::new("retire", threads), |b| {
            b.iter_custom(|iters| timed(&rcu, threads, iters, retire::<R>))
        });
        // With 2 threads the helper only takes guards: synchronize waits for its readers.
        group.bench_function(BenchmarkId::new("synchronize", threads), |b| {
            b.iter_custom(|iters| {
                let stop = Arc::new(AtomicBool::new(false));
                let reader = (threads > 1).then(|| {
                    let (rcu, stop) = (rcu.clone(), stop.clone());
                    thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            guard(&*rcu);
                        }
                    })
                });
                let elapsed = timed(&rcu, 1, iters, guard_and_synchronize::<R>);
                stop.store(true, Ordering::Relaxed);
                if let Some(reader) = reader {
                    reader.join().unwrap();
                }
                elapsed
            })
        });
    }
    group.finish();
    rcu.barrier();
}

fn benches(c: &mut Criterion) {
    domain::<EpochRcu>(c);
    domain::<SeizeRcu>(c);
    domain::<SlotRcu>(c);
}

criterion_group! {
    name = rcu;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(rcu);
