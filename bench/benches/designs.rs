//! Every design of the comparison side by side, one thread: the cost of a fault that installs
//! a zero-filled anonymous page, of a fault that finds its page already mapped (the lookup
//! and the design's read-side synchronization alone), and of an mmap + munmap pair (one page,
//! into free space, with 100 other VMAs mapped). Same page table, frame pool and fault install
//! for all (`fault::Memory`).

use bench::designs::{self, Design, DesignConfig, NAMES};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fault::{Access, FramePool, FramePoolConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vma::{MapFlags, PAGE_SIZE, Prot};

const PAGES: u64 = 512;

fn design(name: &str) -> Arc<dyn Design> {
    let frames = Arc::new(FramePool::new(FramePoolConfig::default()).unwrap());
    let design = designs::build(name, DesignConfig::default(), frames).unwrap();
    // 100 VMAs around (alternating permissions, so they stay apart).
    for i in 0..100 {
        let prot = if i % 2 == 0 { Prot::READ } else { Prot::READ_WRITE };
        design
            .mmap(0, PAGE_SIZE, prot, MapFlags::PRIVATE_ANONYMOUS, None)
            .unwrap();
    }
    design
}

/// Maps a region of `PAGES` anonymous read-write pages.
fn region(design: &dyn Design) -> u64 {
    let flags = MapFlags::PRIVATE_ANONYMOUS;
    design
        .mmap(0, PAGES * PAGE_SIZE, Prot::READ_WRITE, flags, None)
        .unwrap()
}

/// Times `iters` fresh faults, `PAGES` per region; mapping and unmapping (and waiting for the
/// frames to come back) are not timed.
fn fresh_faults(design: &dyn Design, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let pages = left.min(PAGES);
        let region = region(design);
        let started = Instant::now();
        for page in 0..pages {
            design.fault(region + page * PAGE_SIZE, Access::Write).unwrap();
        }
        total += started.elapsed();
        design.munmap(region, PAGES * PAGE_SIZE).unwrap();
        design.barrier();
        left -= pages;
    }
    total
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("designs");
    for name in NAMES {
        let design = design(name);
        let design = &*design;
        group.bench_function(BenchmarkId::new("fault, new zero-filled page", name), |b| {
            b.iter_custom(|iters| fresh_faults(design, iters))
        });
        let mapped = region(design);
        for page in 0..PAGES {
            design.fault(mapped + page * PAGE_SIZE, Access::Write).unwrap();
        }
        let mut page = 0;
        group.bench_function(BenchmarkId::new("fault, page already mapped", name), |b| {
            b.iter(|| {
                page = (page + 1) % PAGES;
                design.fault(mapped + page * PAGE_SIZE, Access::Write).unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("mmap+munmap", name), |b| {
            b.iter(|| {
                let at = design
                    .mmap(0, PAGE_SIZE, Prot::READ_WRITE, MapFlags::PRIVATE_ANONYMOUS, None)
                    .unwrap();
                design.munmap(at, PAGE_SIZE).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = designs;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(designs);
