//! Differential test: random operations on the address space and on a page-granular model;
//! results, errors and `maps()` compared after every step, `validate()` too.
#![cfg(not(feature = "shuttle"))]

#[path = "support/model.rs"]
mod model;

use maple::testing::Rng;
use model::Model;
use std::sync::Arc;
use vma::maps::without_shmem_inodes;
use vma::{AddressSpace, Layout, MapFlags, MappedFile, NoFlush, PAGE_SIZE, Prot, RemapFlags};

#[derive(Debug)]
struct File(&'static str);

impl MappedFile for File {
    fn name(&self) -> &str {
        self.0
    }
}

/// A small space so that operations collide: 128 pages, mmap base at page 96.
const LAYOUT: Layout = Layout {
    low: 0x10_0000,
    high: 0x10_0000 + 128 * PAGE_SIZE,
    mmap_base: 0x10_0000 + 96 * PAGE_SIZE,
};

/// What the tests draw from the shared seeded generator.
trait Draws {
    fn addr(&mut self) -> u64;
    fn len(&mut self) -> u64;
    fn prot(&mut self) -> Prot;
}

impl Draws for Rng {
    fn addr(&mut self) -> u64 {
        let page = LAYOUT.low - 2 * PAGE_SIZE + self.below(132) * PAGE_SIZE;
        if self.chance(3) {
            page + 1 + self.below(PAGE_SIZE - 1)
        } else {
            page
        }
    }
    fn len(&mut self) -> u64 {
        match self.below(40) {
            0 => 0,
            1 => u64::MAX - self.below(PAGE_SIZE),
            2 => 1 + self.below(3 * PAGE_SIZE),
            _ => (1 + self.below(12)) * PAGE_SIZE,
        }
    }
    fn prot(&mut self) -> Prot {
        // Mostly two values, so that merges happen.
        match self.below(6) {
            0..=2 => Prot::READ_WRITE,
            3 | 4 => Prot::READ,
            _ => Prot::new(self.chance(50), self.chance(50), self.chance(50)),
        }
    }
}

fn run(seed: u64, steps: usize) {
    let mut rng = Rng::new(seed);
    let files: [Arc<dyn MappedFile>; 2] = [Arc::new(File("/lib/libfoo.so")), Arc::new(File("/data/blob"))];
    let space = AddressSpace::new(LAYOUT, NoFlush).unwrap();
    let mut model = Model::new(LAYOUT);
    let heap_start = LAYOUT.low + 4 * PAGE_SIZE;
    space.set_heap_start(heap_start).unwrap();
    model.set_heap_start(heap_start);
    for step in 0..steps {
        let what = rng.below(100);
        let description;
        match what {
            0..=39 => {
                let (addr, len, prot) = (if rng.chance(20) { 0 } else { rng.addr() }, rng.len(), rng.prot());
                let mut flags = match rng.below(10) {
                    0..=4 => MapFlags::PRIVATE_ANONYMOUS,
                    5 | 6 => MapFlags::PRIVATE,
                    7 | 8 => MapFlags::SHARED,
                    _ => MapFlags {
                        shared: true,
                        private: false,
                        anonymous: true,
                        ..MapFlags::default()
                    },
                };
                flags.fixed = rng.chance(35);
                flags.fixed_noreplace = !flags.fixed && rng.chance(15);
                flags.growsdown = rng.chance(3);
                flags.noreserve = rng.chance(5);
                flags.stack = rng.chance(5);
                flags.locked = rng.chance(5);
                if rng.chance(2) {
                    flags.shared = !flags.shared;
                }
                let file = (!flags.anonymous || rng.chance(5)).then(|| {
                    let offset = rng.below(8) * PAGE_SIZE + if rng.chance(3) { 1 } else { 0 };
                    (files[rng.below(2) as usize].clone(), offset)
                });
                let file = if rng.chance(2) { None } else { file };
                description = format!(
                    "mmap({addr:#x}, {len:#x}, {prot}, {flags:?}, {:?})",
                    file.as_ref().map(|f| (f.0.name().to_string(), f.1))
                );
                let got = space
                    .mmap(addr, len, prot, flags, file.clone())
                    .map_err(|e| e.errno);
                let want = model.mmap(addr, len, prot, flags, file);
                assert_eq!(got, want, "step {step}: {description}");
            }
            40..=59 => {
                let (addr, len) = (rng.addr(), rng.len());
                description = format!("munmap({addr:#x}, {len:#x})");
                assert_eq!(
                    space.munmap(addr, len).map_err(|e| e.errno),
                    model.munmap(addr, len),
                    "step {step}: {description}"
                );
            }
            60..=79 => {
                let (addr, len, prot) = (rng.addr(), rng.len(), rng.prot());
                description = format!("mprotect({addr:#x}, {len:#x}, {prot})");
                assert_eq!(
                    space.mprotect(addr, len, prot).map_err(|e| e.errno),
                    model.mprotect(addr, len, prot),
                    "step {step}: {description}"
                );
            }
            80..=92 => {
                let (old, old_len, new_len) = (rng.addr(), rng.len(), rng.len());
                let flags = RemapFlags {
                    maymove: rng.chance(60),
                    fixed: rng.chance(20),
                };
                let new_addr = rng.addr();
                description =
                    format!("mremap({old:#x}, {old_len:#x}, {new_len:#x}, {flags:?}, {new_addr:#x})");
                assert_eq!(
                    space
                        .mremap(old, old_len, new_len, flags, new_addr)
                        .map_err(|e| e.errno),
                    model.mremap(old, old_len, new_len, flags, new_addr),
                    "step {step}: {description}"
                );
            }
            96 => {
                let (addr, len, locked) = (rng.addr() + rng.below(3) * 5, rng.len(), rng.chance(60));
                description = format!("mlock({addr:#x}, {len:#x}, locked {locked})");
                assert_eq!(
                    space.set_locked(addr, len, locked).map_err(|e| e.errno),
                    model.set_locked(addr, len, locked),
                    "step {step}: {description}"
                );
            }
            93..=95 => {
                let (addr, len, dontfork) = (rng.addr(), rng.len(), rng.chance(60));
                description = format!("madvise({addr:#x}, {len:#x}, dontfork {dontfork})");
                assert_eq!(
                    space.set_dontfork(addr, len, dontfork).map_err(|e| e.errno),
                    model.set_dontfork(addr, len, dontfork),
                    "step {step}: {description}"
                );
            }
            _ => {
                let addr = heap_start - PAGE_SIZE + rng.below(12 * PAGE_SIZE);
                description = format!("brk({addr:#x})");
                assert_eq!(space.brk(addr), model.brk(addr), "step {step}: {description}");
            }
        }
        if let Err(problem) = space.validate() {
            panic!("step {step} ({description}): {problem}\n{}", space.maps());
        }
        assert_eq!(
            without_shmem_inodes(&space.maps()),
            without_shmem_inodes(&model.maps()),
            "step {step}: {description}"
        );
    }
}

/// 100,000+ operations per run (`VMA_DIFF_SEEDS` seeds of 12,500).
#[test]
fn random_operations_match_the_model() {
    let seeds: u64 = std::env::var("VMA_DIFF_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    for seed in 0..seeds {
        run(seed, 12_500);
    }
}
