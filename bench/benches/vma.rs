//! Address-space operations without page tables: maplevm's `AddressSpace` beside the
//! `rwlock` baseline's bookkeeping (an `RwLock` over a BTreeMap of VMAs, planning and applying
//! the same changes), at 10 and 10,000 VMAs (one-page VMAs with one-page holes, alternating
//! permissions so that they do not merge). `benches/designs.rs` compares the whole designs.

use bench::designs::vma_map::{Op, VmaMap};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::RwLock;
use std::time::Duration;
use vma::request::MmapRequest;
use vma::{AddressSpace, Layout, Lookup, MapFlags, NoFlush, PAGE_SIZE, Prot};

/// The baseline's bookkeeping: `RwLock<BTreeMap>` of VMAs.
struct RwLockSpace(RwLock<VmaMap>);

impl RwLockSpace {
    fn change(&self, op: Op) -> vma::Result<u64> {
        let mut map = self.0.write().unwrap();
        let planned = map.plan(&op)?;
        for change in &planned.changes {
            map.apply(change);
        }
        planned.result
    }

    fn mmap_fixed_noreplace(&self, addr: u64, len: u64, prot: Prot) -> vma::Result<u64> {
        let flags = MapFlags::PRIVATE_ANONYMOUS.fixed_noreplace();
        self.change(Op::Map(MmapRequest::new(
            Layout::X86_64,
            addr,
            len,
            prot,
            flags,
            None,
        )?))
    }

    fn munmap(&self, addr: u64, len: u64) {
        self.change(Op::Unmap(addr, addr + len)).unwrap();
    }

    fn mprotect(&self, addr: u64, len: u64, prot: Prot) -> vma::Result<u64> {
        self.change(Op::Protect(addr, addr + len, prot))
    }

    fn lookup(&self, addr: u64) -> Option<u64> {
        self.0.read().unwrap().lookup(addr).map(|m| m.start)
    }
}

const BASE: u64 = 0x1000_0000;
const STRIDE: u64 = 2 * PAGE_SIZE;

fn prot_of(i: u64) -> Prot {
    if i % 2 == 0 { Prot::READ_WRITE } else { Prot::READ }
}

fn spaces(n: u64) -> (AddressSpace, RwLockSpace) {
    let space = AddressSpace::new(Layout::X86_64, NoFlush).unwrap();
    let plain = RwLockSpace(RwLock::new(VmaMap::new(Layout::X86_64)));
    let flags = MapFlags::PRIVATE_ANONYMOUS.fixed_noreplace();
    for i in 0..n {
        let at = BASE + i * STRIDE;
        space.mmap(at, 2 * PAGE_SIZE, prot_of(i), flags, None).unwrap();
        plain.mmap_fixed_noreplace(at, 2 * PAGE_SIZE, prot_of(i)).unwrap();
    }
    assert_eq!(space.vma_count() as u64, n);
    (space, plain)
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("vma");
    for n in [10u64, 10_000] {
        let (space, plain) = spaces(n);
        // A free page well above the VMAs: map it and unmap it.
        let free = BASE + (n + 8) * STRIDE;
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
                plain.munmap(free, PAGE_SIZE);
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
