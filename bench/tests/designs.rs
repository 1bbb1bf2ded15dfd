//! The shared correctness suite: every design of the comparison must give the same memory
//! semantics (issue "fault", point 1) and keep them under concurrency; a deliberately broken
//! design must fail. (`designs_shuttle.rs` checks the same guarantees under shuttle.)
#![cfg(not(feature = "shuttle"))]

use bench::designs::{self, Design, DesignConfig, NAMES, PerVmaDesign};
use fault::{Access, FaultError, File, FramePool, FramePoolConfig, MemBacking, Memory};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use vma::{Errno, Layout, MapFlags, PAGE_SIZE, Prot, RemapFlags};

const P: u64 = PAGE_SIZE;

fn pool() -> Arc<FramePool> {
    Arc::new(
        FramePool::new(FramePoolConfig {
            chunk_frames: 64,
            max_frames: 8192,
        })
        .unwrap(),
    )
}

/// Runs `test` against a fresh instance of every design, naming the design on failure.
fn for_each_design(test: impl Fn(&dyn Design)) {
    for name in NAMES {
        let design = designs::build(name, DesignConfig::default(), pool()).unwrap();
        assert_eq!(design.name(), name);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(&*design)));
        if let Err(panic) = result {
            eprintln!("design {name} failed");
            std::panic::resume_unwind(panic);
        }
    }
}

fn anon(design: &dyn Design, pages: u64, prot: Prot) -> u64 {
    design
        .mmap(0, pages * P, prot, MapFlags::PRIVATE_ANONYMOUS, None)
        .unwrap()
}

fn read(design: &dyn Design, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    design.read(addr, &mut buf).unwrap();
    buf
}

/// A file of `pages` pages, page `i` filled with byte `fill + i`, protected as `design`'s
/// files are.
fn file(design: &dyn Design, pages: usize, fill: u8) -> Arc<File> {
    let contents: Vec<u8> = (0..pages)
        .flat_map(|i| std::iter::repeat_n(fill.wrapping_add(i as u8), P as usize))
        .collect();
    let backing = Arc::new(MemBacking::new(&contents));
    let len = contents.len() as u64;
    File::with_sync("file", design.memory().frames(), len, backing, design.file_sync()).unwrap()
}

/// Unmaps everything and checks that every frame and table went back.
fn assert_nothing_leaked(design: &dyn Design, held_by_files: usize) {
    let Layout { low, high, .. } = design.layout();
    design.munmap(low, high - low).unwrap();
    design.barrier();
    assert_eq!(design.vma_count(), 0);
    assert_eq!(design.memory().table().tables(), 0, "page tables left");
    assert_eq!(design.memory().frames().in_use(), held_by_files, "frames left");
}

#[test]
fn anonymous_memory_reads_zero_and_keeps_writes() {
    for_each_design(|d| {
        let a = anon(d, 4, Prot::READ_WRITE);
        assert!(read(d, a, 4 * P as usize).iter().all(|&b| b == 0));
        d.write(a + P - 3, b"across pages").unwrap();
        assert_eq!(read(d, a + P - 3, 12), b"across pages");
        assert_nothing_leaked(d, 0);
    });
}

#[test]
fn munmap_then_access_is_a_segmentation_fault() {
    for_each_design(|d| {
        let a = anon(d, 3, Prot::READ_WRITE);
        d.write(a, &[7; 3 * P as usize]).unwrap();
        d.munmap(a + P, P).unwrap();
        assert_eq!(d.memory().table().translate(a + P), None);
        let err = d.read(a, &mut [0; 2 * P as usize]).unwrap_err();
        assert_eq!((err.addr, err.error), (a + P, FaultError::NotMapped));
        assert_eq!(read(d, a + 2 * P, 1), [7]);
        assert_eq!(d.vma_count(), 2);
        assert_nothing_leaked(d, 0);
    });
}

#[test]
fn read_only_refuses_writes_and_keeps_data() {
    for_each_design(|d| {
        let a = anon(d, 3, Prot::READ_WRITE);
        d.write(a, &[5; 3 * P as usize]).unwrap();
        d.mprotect(a + P, P, Prot::READ).unwrap();
        assert_eq!(d.vma_count(), 3, "mprotect in the middle splits in three");
        let err = d.write(a + P, b"x").unwrap_err();
        assert_eq!(err.error, FaultError::AccessDenied);
        assert_eq!(read(d, a + P, 2), [5, 5]);
        d.mprotect(a + P, P, Prot::NONE).unwrap();
        assert_eq!(
            d.read(a + P, &mut [0]).unwrap_err().error,
            FaultError::AccessDenied
        );
        d.mprotect(a + P, P, Prot::READ_WRITE).unwrap();
        assert_eq!(d.vma_count(), 1, "and merges back");
        d.write(a + P, b"y").unwrap();
        assert_eq!(read(d, a + P, 2), b"y\x05");
        assert_nothing_leaked(d, 0);
    });
}

#[test]
fn fork_copies_private_pages_on_write_and_shares_shared_ones() {
    for_each_design(|d| {
        let file = file(d, 2, 10);
        let private = anon(d, 2, Prot::READ_WRITE);
        let shared = d
            .mmap(0, 2 * P, Prot::READ_WRITE, MapFlags::SHARED, Some((&file, 0)))
            .unwrap();
        let private_file = d
            .mmap(0, 2 * P, Prot::READ_WRITE, MapFlags::PRIVATE, Some((&file, 0)))
            .unwrap();
        d.write(private, b"a").unwrap();
        d.write(private_file, b"c").unwrap();
        let child = d.fork().unwrap();
        assert_eq!(child.name(), d.name());
        assert_eq!(child.vmas(), d.vmas());
        // Written before the fork: in the child.
        assert_eq!(read(&*child, private, 1), b"a");
        assert_eq!(read(&*child, private_file, 1), b"c");
        assert_eq!(
            read(&*child, private_file + P, 1),
            [11],
            "file pages come from the file"
        );
        // Private writes after the fork stay on their side; shared ones reach both.
        d.write(private, b"A").unwrap();
        child.write(private_file, b"C").unwrap();
        assert_eq!(
            (read(d, private, 1), read(&*child, private, 1)),
            (b"A".to_vec(), b"a".to_vec())
        );
        assert_eq!(
            (read(d, private_file, 1), read(&*child, private_file, 1)),
            (b"c".to_vec(), b"C".to_vec())
        );
        child.write(shared + P, b"s").unwrap();
        assert_eq!(read(d, shared + P, 1), b"s");
        drop(file);
        let Layout { low, high, .. } = child.layout();
        child.munmap(low, high - low).unwrap();
        child.barrier();
        assert_eq!(child.memory().table().tables(), 0, "the child's page tables left");
        drop(child);
        // The pool is the parent's too: once it unmaps, every frame is back.
        assert_nothing_leaked(d, 0);
    });
}

#[test]
fn private_file_writes_stay_private_shared_ones_reach_the_file() {
    for_each_design(|d| {
        let file = file(d, 2, 10);
        let private = d
            .mmap(0, 2 * P, Prot::READ_WRITE, MapFlags::PRIVATE, Some((&file, 0)))
            .unwrap();
        let shared = d
            .mmap(0, 2 * P, Prot::READ_WRITE, MapFlags::SHARED, Some((&file, 0)))
            .unwrap();
        let other = d
            .mmap(0, P, Prot::READ, MapFlags::SHARED, Some((&file, P)))
            .unwrap();
        assert_eq!(read(d, private + P, 1), [11]);
        d.write(private + P, b"p").unwrap();
        assert_eq!(read(d, private + P, 1), b"p");
        assert_eq!(read(d, shared + P, 1), [11], "private writes stay private");
        d.write(shared + P, b"s").unwrap();
        assert_eq!(read(d, other, 1), b"s", "shared writes reach other mappings");
        let mut byte = [0];
        file.read_at(P, &mut byte).unwrap();
        assert_eq!(&byte, b"s", "and the file");
        assert_eq!(read(d, private + P, 1), b"p");
        drop(file);
        assert_nothing_leaked(d, 0);
    });
}

#[test]
fn map_fixed_shows_the_new_mapping_never_the_old() {
    for_each_design(|d| {
        let file = file(d, 1, 42);
        let a = anon(d, 2, Prot::READ_WRITE);
        d.write(a, &[9; 2 * P as usize]).unwrap();
        d.mmap(a, P, Prot::READ_WRITE, MapFlags::PRIVATE_ANONYMOUS.fixed(), None)
            .unwrap();
        assert_eq!(read(d, a, 1), [0], "new anonymous memory");
        d.mmap(a + P, P, Prot::READ, MapFlags::PRIVATE.fixed(), Some((&file, 0)))
            .unwrap();
        assert_eq!(read(d, a + P, 1), [42], "the file");
        let err = d
            .mmap(
                a,
                P,
                Prot::READ,
                MapFlags::PRIVATE_ANONYMOUS.fixed_noreplace(),
                None,
            )
            .unwrap_err();
        assert_eq!(err.errno, Errno::EEXIST);
        drop(file);
        assert_nothing_leaked(d, 0);
    });
}

/// Every design is in the reverse map of the files it maps, in each mapping's current shape
/// (split by mprotect, moved by mremap): a hole punch removes its shared translations and
/// keeps its private copies, a truncate removes both; munmap unlinks, and so does dropping
/// the design.
#[test]
fn truncate_and_hole_punch_reach_every_design() {
    let bus = |d: &dyn Design, addr: u64| d.read(addr, &mut [0]).map_err(|e| e.error);
    for name in NAMES {
        let design = designs::build(name, DesignConfig::default(), pool()).unwrap();
        let d = &*design;
        let f = file(d, 8, 1);
        let rw = Prot::READ_WRITE;
        let shared = d.mmap(0, 8 * P, rw, MapFlags::SHARED, Some((&f, 0))).unwrap();
        let private = d.mmap(0, 8 * P, rw, MapFlags::PRIVATE, Some((&f, 0))).unwrap();
        for page in 0..8 {
            assert_eq!(read(d, shared + page * P, 1), [1 + page as u8], "{name}");
            d.write(private + page * P, b"copy").unwrap();
        }
        d.mprotect(shared + 2 * P, P, Prot::READ).unwrap();
        assert_eq!(
            f.mappings(),
            4,
            "{name}: three pieces of the shared mapping and the private one"
        );
        f.punch_hole(3 * P, P).unwrap();
        assert_eq!(read(d, shared + 3 * P, 1), [0], "{name}: the hole reads zeros");
        assert_eq!(
            read(d, private + 3 * P, 4),
            b"copy",
            "{name}: private copies survive a hole punch"
        );
        let target = shared + 64 * P;
        let fixed = RemapFlags {
            maymove: true,
            fixed: true,
        };
        let moved = d.mremap(shared, 8 * P, 8 * P, fixed, target).unwrap();
        assert_eq!(read(d, moved + 5 * P, 1), [6], "{name}");
        f.set_len(4 * P).unwrap();
        assert_eq!(
            bus(d, moved + 5 * P),
            Err(FaultError::BusError),
            "{name}: moved, then truncated"
        );
        assert_eq!(
            bus(d, private + 5 * P),
            Err(FaultError::BusError),
            "{name}: truncate takes private copies"
        );
        assert_eq!(
            read(d, private + 2 * P, 4),
            b"copy",
            "{name}: inside the file the copy stays"
        );
        d.munmap(private, 8 * P).unwrap();
        assert_eq!(f.mappings(), 3, "{name}: munmap unlinks");
        drop(design);
        assert_eq!(f.mappings(), 0, "{name}: dropping the design unlinks the rest");
    }
}

#[test]
fn mremap_moves_contents() {
    let maymove = RemapFlags {
        maymove: true,
        fixed: false,
    };
    for_each_design(|d| {
        let a = anon(d, 2, Prot::READ_WRITE);
        // Block growth in place.
        let blocker = d
            .mmap(
                a + 2 * P,
                P,
                Prot::READ,
                MapFlags::PRIVATE_ANONYMOUS.fixed(),
                None,
            )
            .unwrap();
        d.write(a, b"first page").unwrap();
        d.write(a + P, b"second page").unwrap();
        let moved = d.mremap(a, 2 * P, 8 * P, maymove, 0).unwrap();
        assert_ne!(moved, a);
        assert_eq!(read(d, moved, 10), b"first page");
        assert_eq!(read(d, moved + P, 11), b"second page");
        assert!(read(d, moved + 2 * P, 6 * P as usize).iter().all(|&b| b == 0));
        assert_eq!(d.fault(a, Access::Read), Err(FaultError::NotMapped));
        // Shrinking drops the tail; a fixed move to a chosen address keeps the rest.
        let target = blocker + 16 * P;
        let fixed = RemapFlags {
            maymove: true,
            fixed: true,
        };
        assert_eq!(d.mremap(moved, 8 * P, P, fixed, target).unwrap(), target);
        assert_eq!(read(d, target, 10), b"first page");
        assert_eq!(d.fault(target + P, Access::Read), Err(FaultError::NotMapped));
        // Growing in place keeps what is there; growing without room or leave to move fails.
        d.mremap(target, P, 3 * P, RemapFlags::default(), 0).unwrap();
        assert_eq!(read(d, target, 10), b"first page");
        let flags = MapFlags::PRIVATE_ANONYMOUS.fixed_noreplace();
        let x = d.mmap(target + 8 * P, P, Prot::READ_WRITE, flags, None).unwrap();
        d.mmap(x + P, P, Prot::READ, flags, None).unwrap();
        let no_move = RemapFlags::default();
        assert_eq!(
            d.mremap(x, P, 2 * P, no_move, 0).unwrap_err().errno,
            Errno::ENOMEM
        );
        assert_eq!(
            d.mremap(x, 2 * P, 3 * P, maymove, 0).unwrap_err().errno,
            Errno::EFAULT,
            "growing needs the old range in one VMA"
        );
        assert_eq!(
            d.mremap(x, 2 * P, P, maymove, 0),
            Ok(x),
            "shrinking over two VMAs"
        );
        assert_eq!(d.fault(x + P, Access::Read), Err(FaultError::NotMapped));
        assert_nothing_leaked(d, 0);
    });
}

#[test]
fn madvise_dontneed_drops_pages() {
    for_each_design(|d| {
        let a = anon(d, 2, Prot::READ_WRITE);
        d.write(a, &[3; 2 * P as usize]).unwrap();
        d.madvise_dontneed(a, P).unwrap();
        assert_eq!(read(d, a, 1), [0]);
        assert_eq!(read(d, a + P, 1), [3]);
        assert_eq!(d.madvise_dontneed(a, 3 * P).unwrap_err().errno, Errno::ENOMEM);
        assert_eq!(read(d, a + P, 1), [0], "the mapped part was dropped");
        assert_nothing_leaked(d, 0);
    });
}

#[test]
fn bad_requests_are_errors() {
    for_each_design(|d| {
        let a = anon(d, 2, Prot::READ_WRITE);
        let errno = |r: vma::Result<()>| r.unwrap_err().errno;
        assert_eq!(errno(d.munmap(a + 1, P)), Errno::EINVAL);
        assert_eq!(errno(d.munmap(a, 0)), Errno::EINVAL);
        assert_eq!(errno(d.munmap(a, u64::MAX)), Errno::EINVAL);
        assert_eq!(errno(d.mprotect(a + 8 * P, P, Prot::READ)), Errno::ENOMEM);
        assert_eq!(
            errno(d.mprotect(a, 4 * P, Prot::READ)),
            Errno::ENOMEM,
            "a hole after the VMA"
        );
        assert_eq!(errno(d.madvise_dontneed(a + 1, P)), Errno::EINVAL);
        assert_eq!(errno(d.madvise_dontneed(a, u64::MAX)), Errno::EINVAL);
        assert_eq!(d.madvise_dontneed(a, 0), Ok(()));
        let neither = MapFlags {
            shared: false,
            ..MapFlags::SHARED
        };
        let validate_anonymous = MapFlags {
            private: true,
            ..MapFlags::SHARED_ANONYMOUS
        };
        for bad in [neither, validate_anonymous] {
            assert_eq!(
                d.mmap(0, P, Prot::READ, bad, None).unwrap_err().errno,
                Errno::EINVAL
            );
        }
        assert_eq!(
            d.mmap(0, P, Prot::READ, MapFlags::PRIVATE, None)
                .unwrap_err()
                .errno,
            Errno::EBADF
        );
        assert_eq!(d.fault(0x10, Access::Read), Err(FaultError::NotMapped));
        assert_eq!(d.fault(u64::MAX, Access::Read), Err(FaultError::NotMapped));
        assert_nothing_leaked(d, 0);
    });
}

/// Faulting threads against a writer that maps a region, lets them fault it, protects it
/// read-only and unmaps it (every other round after moving it with mremap), over and over. Checked: after munmap returns no translation is
/// left in the region (G2); a write that succeeds while the region is read-only and no new
/// mapping has started is a violation. Returns the violations seen.
fn race_writer_and_faults(design: &dyn Design, rounds: u64) -> u64 {
    const PAGES: u64 = 8;
    let base = design.layout().mmap_base - 64 * P;
    let elsewhere = base - 64 * P;
    let started = AtomicU64::new(0);
    let read_only = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let violations = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (started, read_only, done, violations) = (&started, &read_only, &done, &violations);
            s.spawn(move || {
                let mut i = t;
                while !done.load(Ordering::Relaxed) {
                    i = i
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let page = base + (i >> 33) % PAGES * P;
                    let round = read_only.load(Ordering::SeqCst);
                    if round != 0 && round == started.load(Ordering::SeqCst) {
                        if design.write(page, b"w").is_ok() && started.load(Ordering::SeqCst) == round {
                            violations.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        let _ = design.fault(page, if i & 2 == 0 { Access::Read } else { Access::Write });
                    }
                }
            });
        }
        for round in 1..=rounds {
            started.store(round, Ordering::SeqCst);
            design
                .mmap(
                    base,
                    PAGES * P,
                    Prot::READ_WRITE,
                    MapFlags::PRIVATE_ANONYMOUS.fixed(),
                    None,
                )
                .unwrap();
            std::thread::yield_now();
            design.mprotect(base, PAGES * P, Prot::READ).unwrap();
            read_only.store(round, Ordering::SeqCst);
            std::thread::yield_now();
            // Every other round the region moves away first (its translations with it).
            let last = if round % 2 == 0 {
                let fixed = RemapFlags {
                    maymove: true,
                    fixed: true,
                };
                design
                    .mremap(base, PAGES * P, PAGES * P, fixed, elsewhere)
                    .unwrap();
                elsewhere
            } else {
                base
            };
            design.munmap(last, PAGES * P).unwrap();
            for page in 0..PAGES {
                for region in [base, elsewhere] {
                    if design.memory().table().translate(region + page * P).is_some() {
                        violations.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        done.store(true, Ordering::Relaxed);
    });
    violations.load(Ordering::Relaxed)
}

#[test]
fn every_design_keeps_faults_and_writers_apart() {
    for_each_design(|d| {
        assert_eq!(race_writer_and_faults(d, 2000), 0, "{}", d.name());
        assert_nothing_leaked(d, 0);
    });
}

/// `pervma` whose writers do not wait for readers to leave a VMA they lock: faults install
/// translations after munmap's flush. The suite must catch it.
#[test]
fn a_design_whose_writers_skip_the_reader_drain_fails_the_suite() {
    let design = PerVmaDesign::with_broken_write_lock(Layout::X86_64, Memory::new(pool(), true));
    let mut violations = 0;
    for _ in 0..20 {
        violations += race_writer_and_faults(&*design, 2000);
        if violations > 0 {
            break;
        }
    }
    assert!(violations > 0, "the broken design passed");
}

/// Every design answers a seeded random mix of mmap (hint, fixed, fixed-noreplace; anonymous
/// or file), munmap, mprotect and mremap (shrink, grow, move, fixed) exactly as `rcu` (the `vma::AddressSpace` checked against its
/// own model) does: same results, same errors, same VMAs after every step.
#[test]
fn every_design_agrees_with_the_address_space() {
    let frames = pool();
    let all: Vec<Arc<dyn Design>> = NAMES
        .iter()
        .map(|name| designs::build(name, DesignConfig::default(), frames.clone()).unwrap())
        .collect();
    let file = File::zeroed("f", &frames, 64 * P).unwrap();
    let base = Layout::X86_64.mmap_base - 48 * P;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let prots = [Prot::READ, Prot::READ_WRITE, Prot::NONE];
    for step in 0..3000 {
        let addr = base + next(40) * P;
        let len = (1 + next(8)) * P;
        let prot = prots[next(3) as usize];
        let kind = next(12);
        let remap = RemapFlags {
            maymove: next(2) == 0,
            fixed: next(3) == 0,
        };
        let new_len = (1 + next(10)) * P;
        let new_addr = base + next(40) * P;
        // mremap mostly from inside a VMA (else it is EFAULT).
        let vmas = all[0].vmas();
        let (addr, len) = match (kind >= 10, vmas.len()) {
            (true, n) if n > 0 => {
                let (start, end, _) = vmas[next(n as u64) as usize];
                (start, len.min(end - start))
            }
            _ => (addr, len),
        };
        let flags = match next(3) {
            0 => MapFlags::PRIVATE_ANONYMOUS,
            1 => MapFlags::PRIVATE_ANONYMOUS.fixed(),
            _ => MapFlags::PRIVATE_ANONYMOUS.fixed_noreplace(),
        };
        let (flags, object) = if next(4) == 0 {
            (
                MapFlags {
                    anonymous: false,
                    ..flags
                },
                Some((&file, next(4) * P)),
            )
        } else {
            (flags, None)
        };
        let results: Vec<String> = all
            .iter()
            .map(|d| {
                let result = match kind {
                    0..=3 => d.mmap(addr, len, prot, flags, object),
                    4..=6 => d.munmap(addr, len).map(|()| 0),
                    7..=9 => d.mprotect(addr, len, prot).map(|()| 0),
                    _ => d.mremap(addr, len, new_len, remap, new_addr),
                };
                format!("{:?} {:x?}", result.map_err(|e| e.errno), d.vmas())
            })
            .collect();
        for (d, result) in all.iter().zip(&results).skip(1) {
            assert_eq!(result, &results[0], "step {step}: {} differs from rcu", d.name());
        }
    }
}

/// hugetlb files behave alike in every design: 2 MiB-aligned placement, whole huge pages
/// faulted and copied on write, splits and MADV_DONTNEED only at huge-page boundaries (EINVAL
/// inside), moves of whole huge entries, truncate and hole punch through the reverse map, and
/// every huge page back at the end.
#[test]
fn hugetlb_files_behave_alike_in_every_design() {
    const H: u64 = fault::HUGE_FRAME_SIZE as u64;
    let errno = |result: vma::Result<()>| result.map_err(|e| e.errno);
    for name in NAMES {
        let config = FramePoolConfig {
            chunk_frames: 64,
            max_frames: 1024,
        };
        let frames = Arc::new(FramePool::with_huge_pages(config, 4).unwrap());
        let design = designs::build(name, DesignConfig::default(), frames.clone()).unwrap();
        let d = &*design;
        let f = File::hugetlb("/hugepages/d", &frames, 2 * H, d.file_sync()).unwrap();
        let rw = Prot::READ_WRITE;
        let shared = d.mmap(0, P, rw, MapFlags::SHARED, Some((&f, 0))).unwrap();
        assert_eq!(shared % H, 0, "{name}: aligned");
        let private = d.mmap(0, 2 * H, rw, MapFlags::PRIVATE, Some((&f, 0))).unwrap();
        d.write(shared + 9, b"s").unwrap();
        assert_eq!(read(d, private + 9, 1), [b's'], "{name}: the file's page");
        d.write(private + 9, b"p").unwrap();
        d.write(private + H, b"q").unwrap();
        assert_eq!(read(d, shared + 9, 1), [b's'], "{name}: copied on write");
        assert_eq!(frames.huge_in_use(), 3, "{name}: one cached, two private");
        assert_eq!(errno(d.munmap(private + P, H)), Err(Errno::EINVAL), "{name}");
        assert_eq!(
            errno(d.mprotect(private, P, Prot::READ)),
            Err(Errno::EINVAL),
            "{name}"
        );
        assert_eq!(
            errno(d.madvise_dontneed(private + P, H)),
            Err(Errno::EINVAL),
            "{name}"
        );
        let fixed = RemapFlags {
            maymove: true,
            fixed: true,
        };
        let moved = d.mremap(private, 2 * H, 2 * H, fixed, private + 8 * H).unwrap();
        assert_eq!(read(d, moved + H, 1), [b'q'], "{name}: moved whole");
        f.punch_hole(0, H).unwrap();
        assert_eq!(read(d, shared + 9, 1), [0], "{name}: punched");
        assert_eq!(read(d, moved + 9, 1), [b'p'], "{name}: the copy survives a punch");
        f.set_len(0).unwrap();
        let bus = d.read(moved + 9, &mut [0]).map_err(|e| e.error);
        assert_eq!(bus, Err(FaultError::BusError), "{name}: truncated");
        d.munmap(shared, H).unwrap();
        d.munmap(moved, 2 * H).unwrap();
        d.barrier();
        drop(design);
        drop(f);
        assert_eq!(frames.huge_in_use(), 0, "{name}: every huge page back");
    }
}
