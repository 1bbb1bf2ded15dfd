//! Address-space operations without page tables: maplevm's `AddressSpace` beside the
//! `rwlock` baseline's bookkeeping (an `RwLock` over a BTreeMap of VMAs, planning and applying
//! the same changes), at 10 and 10,000 VMAs (see `bench::vma_spaces`). `benches/designs.rs`
//! compares the whole designs.

use bench::vma_spaces::{BASE, RwLockSpace, STRIDE, filled_address_space, free_page_above, prot_of};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use vma::{Lookup, MapFlags, PAGE_SIZE, Prot};

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("vma");
    for n in [10u64, 10_000] {
        let (space, plain) = (filled_address_space(n), RwLockSpace::filled(n));
        // A free page well above the VMAs: map it and unmap it.
        let free = free_page_above(n);
        group.bench_function(BenchmarkId::new("maplevm mmap+munmap", n), |b| {
            b.iter(|| {
                let flags = MapFlags::PRIVATE_ANONYMOUS.fixed_noreplace();
                space
                    .mmap(free, PAGE_SIZE, Prot::READ_WRITE, flags, None)
                    .unwrap();
                space.munmap(free, PAGE_SIZE).unwrap();
            })
        });
        group.bench_function(BenchmarkId::new("RwLock<BTreeMap> mmap+munmap", n), |b| {
            b.iter(|| {
                plain
                    .mmap_fixed_noreplace(free, PAGE_SIZE, Prot::READ_WRITE)
                    .unwrap();
                plain.munmap(free, PAGE_SIZE).unwrap();
            })
        });
        // The middle VMA's first page read-only (a split), then back (a merge).
        let middle = BASE + (n / 2) * STRIDE;
        let prot = prot_of(n / 2);
        let other = if prot == Prot::READ {
            Prot::READ_WRITE
        } else {
            Prot::READ
        };
        group.bench_function(BenchmarkId::new("maplevm mprotect split+merge", n), |b| {
            b.iter(|| {
                space.mprotect(middle, PAGE_SIZE, other).unwrap();
                space.mprotect(middle, PAGE_SIZE, prot).unwrap();
            })
        });
        group.bench_function(
            BenchmarkId::new("RwLock<BTreeMap> mprotect split+merge", n),
            |b| {
                b.iter(|| {
                    plain.mprotect(middle, PAGE_SIZE, other).unwrap();
                    plain.mprotect(middle, PAGE_SIZE, prot).unwrap();
                })
            },
        );
        let mut i = 0u64;
        group.bench_function(BenchmarkId::new("maplevm lookup", n), |b| {
            b.iter(|| {
                i = (i + 7919) % n;
                let guard = space.guard();
                let found = match space.lookup(BASE + i * STRIDE + 100, &guard) {
                    Lookup::Mapped(vma) => vma.start(),
                    _ => 0,
                };
                black_box(found)
            })
        });
        group.bench_function(BenchmarkId::new("RwLock<BTreeMap> lookup", n), |b| {
            b.iter(|| {
                i = (i + 7919) % n;
                black_box(plain.lookup(BASE + i * STRIDE + 100))
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = vma;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(vma);
