//! What an embedder sees through `read` / `write`: Linux-like memory semantics for anonymous,
//! private file, shared file and shared anonymous mappings across mmap, munmap, mprotect,
//! mremap, MAP_FIXED, madvise and brk; and nothing leaked afterwards.
#![cfg(not(feature = "shuttle"))]

use fault::{Access, Fault, FaultError, File, FramePool, FramePoolConfig, MemBacking, Mm, MmConfig};
use std::sync::Arc;
use std::time::Duration;
use vma::{Errno, MapFlags, PAGE_SIZE, Prot, RemapFlags};

const P: u64 = PAGE_SIZE;

fn mm_with(max_frames: usize) -> Mm {
    let frames = FramePool::new(FramePoolConfig {
        chunk_frames: 64,
        max_frames,
    })
    .unwrap();
    Mm::new(MmConfig::default(), Arc::new(frames)).unwrap()
}

fn mm() -> Mm {
    mm_with(4096)
}

fn anon(mm: &Mm, pages: u64, prot: Prot) -> u64 {
    mm.mmap(0, pages * P, prot, MapFlags::PRIVATE_ANONYMOUS, None)
        .unwrap()
}

fn read(mm: &Mm, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    mm.read(addr, &mut buf).unwrap();
    buf
}

/// A file of `pages` pages, page `i` filled with byte `fill + i`.
fn file(mm: &Mm, name: &str, pages: usize, fill: u8) -> Arc<File> {
    let contents: Vec<u8> = (0..pages)
        .flat_map(|i| std::iter::repeat_n(fill.wrapping_add(i as u8), P as usize))
        .collect();
    File::new(name, mm.frames(), &contents)
}

/// Unmaps everything and checks that every frame and table went back.
fn assert_nothing_leaked(mm: &Mm, held_by_files: usize) {
    mm.munmap(
        vma::Layout::X86_64.low,
        vma::Layout::X86_64.high - vma::Layout::X86_64.low,
    )
    .unwrap();
    mm.barrier();
    assert_eq!(mm.page_tables(), 0, "page tables left");
    assert_eq!(mm.frames().in_use(), held_by_files, "frames left");
}

#[test]
fn anonymous_memory_reads_zero_and_keeps_writes() {
    let mm = mm();
    let a = anon(&mm, 4, Prot::READ_WRITE);
    assert!(read(&mm, a, 4 * P as usize).iter().all(|&b| b == 0));
    mm.write(a + P - 3, b"across pages").unwrap();
    assert_eq!(read(&mm, a + P - 3, 12), b"across pages");
    assert_eq!(mm.fault(a, Access::Write), Ok(Fault::AlreadyMapped));
    let stats = mm.stats();
    assert!(stats.installed >= 2 && stats.fast_path >= 2, "{stats}");
    assert_nothing_leaked(&mm, 0);
}

#[test]
fn munmap_then_access_is_a_segmentation_fault() {
    let mm = mm();
    let a = anon(&mm, 3, Prot::READ_WRITE);
    mm.write(a, &[7; 3 * P as usize]).unwrap();
    mm.munmap(a + P, P).unwrap();
    assert_eq!(mm.translation(a + P), None, "munmap removed the translation");
    let err = mm.read(a, &mut [0; 2 * P as usize]).unwrap_err();
    assert_eq!((err.addr, err.error), (a + P, FaultError::NotMapped));
    assert_eq!(read(&mm, a + 2 * P, 1), [7], "the rest keeps its contents");
    assert_eq!(mm.fault(0, Access::Read), Err(FaultError::NotMapped));
    assert_eq!(mm.fault(u64::MAX, Access::Read), Err(FaultError::NotMapped));
    assert_nothing_leaked(&mm, 0);
}

#[test]
fn read_only_refuses_writes_and_keeps_data() {
    let mm = mm();
    let a = anon(&mm, 2, Prot::READ_WRITE);
    mm.write(a, b"keep me").unwrap();
    mm.mprotect(a, 2 * P, Prot::READ).unwrap();
    assert!(!mm.translation(a).unwrap().writable(), "write-protected");
    let err = mm.write(a, b"X").unwrap_err();
    assert_eq!((err.addr, err.error), (a, FaultError::AccessDenied));
    assert_eq!(read(&mm, a, 7), b"keep me");
    // PROT_NONE hides the page but keeps it; access comes back with the permission.
    mm.mprotect(a, P, Prot::NONE).unwrap();
    assert_eq!(mm.read(a, &mut [0]).unwrap_err().error, FaultError::AccessDenied);
    mm.mprotect(a, 2 * P, Prot::READ_WRITE).unwrap();
    assert_eq!(read(&mm, a, 7), b"keep me");
    mm.write(a, b"K").unwrap();
    assert_eq!(read(&mm, a, 7), b"Keep me");
    assert_eq!(mm.stats().access_denied, 2);
    assert_nothing_leaked(&mm, 0);
}

#[test]
fn private_file_writes_stay_private() {
    let mm = mm();
    let f = file(&mm, "/lib/data", 2, b'a');
    let flags = MapFlags::PRIVATE;
    let one = mm.mmap(0, 2 * P, Prot::READ_WRITE, flags, Some((&f, 0))).unwrap();
    let two = mm.mmap(0, 2 * P, Prot::READ, flags, Some((&f, 0))).unwrap();
    assert_eq!(read(&mm, one + P, 2), b"bb");
    // Read faults map the file's cached page itself, read-only.
    let cached = mm.translation(one + P).unwrap();
    assert!(!cached.writable() && !cached.private());
    mm.write(one + P, b"XY").unwrap();
    let copy = mm.translation(one + P).unwrap();
    assert!(
        copy.writable() && copy.private() && copy.frame() != cached.frame(),
        "copied on write"
    );
    assert_eq!(read(&mm, one + P, 3), b"XYb");
    assert_eq!(read(&mm, two + P, 3), b"bbb", "another mapping sees the file");
    let mut on_file = [0; 2];
    f.read_at(P, &mut on_file).unwrap();
    assert_eq!(&on_file, b"bb", "the file is unchanged");
    // A write fault on a page never read copies straight from the file.
    mm.write(one, b"Z").unwrap();
    assert_eq!(read(&mm, one, 2), b"Za");
    // madvise(DONTNEED) drops the private copies: the file shows again.
    mm.madvise_dontneed(one, 2 * P).unwrap();
    assert_eq!(read(&mm, one + P, 2), b"bb");
    drop(f);
    assert_nothing_leaked(&mm, 0);
    assert_eq!(mm.frames().in_use(), 0, "the page cache went with the file");
}

#[test]
fn shared_file_writes_reach_the_file_and_other_mappings() {
    let mm = mm();
    let f = file(&mm, "/data/shared", 3, b'0');
    let flags = MapFlags::SHARED;
    let one = mm.mmap(0, 3 * P, Prot::READ_WRITE, flags, Some((&f, 0))).unwrap();
    // The second mapping starts one page into the file.
    let two = mm.mmap(0, 2 * P, Prot::READ, flags, Some((&f, P))).unwrap();
    mm.write(one + P + 10, b"shared!").unwrap();
    assert_eq!(read(&mm, two + 10, 7), b"shared!");
    let mut on_file = [0; 7];
    f.read_at(P + 10, &mut on_file).unwrap();
    assert_eq!(&on_file, b"shared!");
    // A write to the file shows through both mappings.
    f.write_at(2 * P, b"pwrite").unwrap();
    assert_eq!(
        f.read_at(u64::MAX, &mut [0]),
        Ok(0),
        "nothing to read beyond the end"
    );
    assert_eq!(read(&mm, one + 2 * P, 6), b"pwrite");
    assert_eq!(read(&mm, two + P, 6), b"pwrite");
    // Beyond the end of the file: a bus error.
    let past = mm.mmap(0, 4 * P, Prot::READ, flags, Some((&f, 0))).unwrap();
    assert_eq!(mm.fault(past + 3 * P, Access::Read), Err(FaultError::BusError));
    assert_eq!(mm.stats().bus_errors, 1);
    drop(f);
    assert_nothing_leaked(&mm, 0);
}

#[test]
fn shared_anonymous_memory_is_shared_across_a_move() {
    let mm = mm();
    let a = mm
        .mmap(
            0,
            2 * P,
            Prot::READ_WRITE,
            MapFlags {
                anonymous: true,
                ..MapFlags::SHARED
            },
            None,
        )
        .unwrap();
    assert!(read(&mm, a, 2 * P as usize).iter().all(|&b| b == 0));
    mm.write(a, b"shm").unwrap();
    let maps = mm.space().maps();
    assert!(
        maps.contains("rw-s 00000000 00:01 ") && maps.ends_with(" /dev/zero (deleted)\n"),
        "{maps}"
    );
    let moved = mm
        .mremap(
            a,
            2 * P,
            4 * P,
            RemapFlags {
                maymove: true,
                fixed: false,
            },
            0,
        )
        .unwrap();
    assert_eq!(read(&mm, moved, 3), b"shm");
    assert_nothing_leaked(&mm, 0);
}

#[test]
fn mremap_moves_contents() {
    let mm = mm();
    let a = anon(&mm, 2, Prot::READ_WRITE);
    // Block growth in place.
    let blocker = mm
        .mmap(
            a + 2 * P,
            P,
            Prot::READ,
            MapFlags::PRIVATE_ANONYMOUS.fixed(),
            None,
        )
        .unwrap();
    mm.write(a, b"first page").unwrap();
    mm.write(a + P, b"second page").unwrap();
    let moved = mm
        .mremap(
            a,
            2 * P,
            8 * P,
            RemapFlags {
                maymove: true,
                fixed: false,
            },
            0,
        )
        .unwrap();
    assert_ne!(moved, a);
    assert_eq!(read(&mm, moved, 10), b"first page");
    assert_eq!(read(&mm, moved + P, 11), b"second page");
    assert!(read(&mm, moved + 2 * P, 6 * P as usize).iter().all(|&b| b == 0));
    assert_eq!(mm.fault(a, Access::Read), Err(FaultError::NotMapped));
    // Shrinking drops the tail; a fixed move to a chosen address keeps the rest.
    let target = blocker + 16 * P;
    let fixed = mm
        .mremap(
            moved,
            8 * P,
            P,
            RemapFlags {
                maymove: true,
                fixed: true,
            },
            target,
        )
        .unwrap();
    assert_eq!(fixed, target);
    assert_eq!(read(&mm, target, 10), b"first page");
    assert_eq!(mm.fault(target + P, Access::Read), Err(FaultError::NotMapped));
    // Growing in place keeps what is there.
    mm.munmap(target + P, P).unwrap();
    mm.mremap(target, P, 3 * P, RemapFlags::default(), 0).unwrap();
    assert_eq!(read(&mm, target, 10), b"first page");
    assert_nothing_leaked(&mm, 0);
}

#[test]
fn map_fixed_shows_the_new_mapping_never_the_old() {
    let mm = mm();
    let f = file(&mm, "/lib/new", 1, b'n');
    let a = anon(&mm, 3, Prot::READ_WRITE);
    mm.write(a, &vec![0xee; 3 * P as usize]).unwrap();
    // Anonymous over anonymous: zeroes.
    mm.mmap(a, P, Prot::READ_WRITE, MapFlags::PRIVATE_ANONYMOUS.fixed(), None)
        .unwrap();
    assert_eq!(read(&mm, a, 2), [0, 0]);
    // A file over anonymous: the file.
    mm.mmap(a + P, P, Prot::READ, MapFlags::PRIVATE.fixed(), Some((&f, 0)))
        .unwrap();
    assert_eq!(read(&mm, a + P, 2), b"nn");
    assert_eq!(
        read(&mm, a + 2 * P, 1),
        [0xee],
        "outside the fixed range nothing changed"
    );
    drop(f);
    assert_nothing_leaked(&mm, 0);
}

#[test]
fn slow_path_reads_files_without_the_guard() {
    let mm = mm();
    let backing = Arc::new(MemBacking::new(&[5; 2 * P as usize]).with_delay(Duration::from_millis(1)));
    let f = File::with_backing("/slow", mm.frames(), 2 * P, backing.clone()).unwrap();
    let a = mm
        .mmap(0, 2 * P, Prot::READ, MapFlags::PRIVATE, Some((&f, 0)))
        .unwrap();
    assert_eq!(read(&mm, a, 1), [5]);
    let stats = mm.stats();
    assert_eq!((stats.slow_path, backing.reads()), (1, 1), "{stats}");
    // Cached now: a second mapping faults it on the fast path.
    let b = mm
        .mmap(0, P, Prot::READ, MapFlags::PRIVATE, Some((&f, 0)))
        .unwrap();
    assert_eq!(read(&mm, b, 1), [5]);
    assert_eq!((mm.stats().slow_path, backing.reads()), (1, 1));
    drop(f);
    assert_nothing_leaked(&mm, 0);
}

#[test]
fn out_of_memory_is_reported_not_panicked() {
    let mm = mm_with(2);
    let a = anon(&mm, 3, Prot::READ_WRITE);
    mm.write(a, &[1; 2 * P as usize]).unwrap();
    assert_eq!(mm.fault(a + 2 * P, Access::Write), Err(FaultError::OutOfMemory));
    mm.munmap(a, P).unwrap();
    mm.barrier();
    assert_eq!(
        mm.fault(a + 2 * P, Access::Write),
        Ok(Fault::Installed),
        "freed frames return"
    );
    assert_eq!(mm.stats().out_of_memory, 1);
    assert_nothing_leaked(&mm, 0);
}

#[test]
fn brk_heap_holds_data() {
    let mm = mm();
    mm.set_heap_start(0x60_0000).unwrap();
    assert_eq!(mm.brk(0x60_0000 + 2 * P), 0x60_0000 + 2 * P);
    mm.write(0x60_0000 + P, b"heap").unwrap();
    mm.brk(0x60_0000 + P);
    assert_eq!(mm.fault(0x60_0000 + P, Access::Read), Err(FaultError::NotMapped));
    assert_nothing_leaked(&mm, 0);
}

#[test]
fn bad_requests_are_errors() {
    let mm = mm();
    let other_pool = Arc::new(FramePool::new(FramePoolConfig::default()).unwrap());
    let foreign = File::new("/foreign", &other_pool, &[0; 4096]);
    let err = mm
        .mmap(0, P, Prot::READ, MapFlags::PRIVATE, Some((&foreign, 0)))
        .unwrap_err();
    assert_eq!(err.errno, Errno::EINVAL);
    let a = anon(&mm, 2, Prot::READ_WRITE);
    assert_eq!(mm.madvise_dontneed(a + 1, P).unwrap_err().errno, Errno::EINVAL);
    assert_eq!(mm.madvise_dontneed(a, u64::MAX).unwrap_err().errno, Errno::EINVAL);
    assert_eq!(mm.madvise_dontneed(a, 3 * P).unwrap_err().errno, Errno::ENOMEM);
    assert_eq!(mm.madvise_dontneed(a, 0), Ok(()));
    let shared_anon = MapFlags {
        anonymous: true,
        ..MapFlags::SHARED
    };
    assert_eq!(
        mm.mmap(0, 0, Prot::READ, shared_anon, None).unwrap_err().errno,
        Errno::EINVAL
    );
    let layout = vma::Layout {
        high: 1 << 50,
        ..vma::Layout::X86_64
    };
    let config = MmConfig {
        layout,
        zero_fill: true,
        fast_path: true,
        share_page_tables: true,
    };
    assert_eq!(
        Mm::new(config, mm.frames().clone()).unwrap_err().errno,
        Errno::EINVAL
    );
    assert_nothing_leaked(&mm, 0);
}

#[test]
fn dropping_a_manager_returns_its_frames() {
    let frames = Arc::new(FramePool::new(FramePoolConfig::default()).unwrap());
    let mm = Mm::new(MmConfig::default(), frames.clone()).unwrap();
    let a = anon(&mm, 8, Prot::READ_WRITE);
    mm.write(a, &[3; 8 * P as usize]).unwrap();
    assert_eq!(frames.in_use(), 8);
    drop(mm);
    assert_eq!(frames.in_use(), 0);
}

#[test]
fn madvise_dontneed_drops_every_mapped_part_around_a_hole() {
    let mm = mm();
    let a = anon(&mm, 3, Prot::READ_WRITE);
    mm.write(a, &[7; 3 * P as usize]).unwrap();
    mm.munmap(a + P, P).unwrap();
    assert_eq!(
        mm.madvise_dontneed(a, 3 * P).unwrap_err().errno,
        Errno::ENOMEM,
        "part of the range is unmapped"
    );
    assert_eq!(read(&mm, a, 1), [0], "the part before the hole is dropped");
    assert_eq!(read(&mm, a + 2 * P, 1), [0], "the part after the hole is dropped");
    // Starting in the hole: the mapped part after it is dropped too.
    mm.write(a + 2 * P, &[7]).unwrap();
    assert_eq!(
        mm.madvise_dontneed(a + P, 2 * P).unwrap_err().errno,
        Errno::ENOMEM
    );
    assert_eq!(read(&mm, a + 2 * P, 1), [0]);
    // Beyond the top of the space nothing is mapped: ENOMEM, not EINVAL (as Linux).
    let top = vma::Layout::X86_64.high;
    assert_eq!(mm.madvise_dontneed(top, P).unwrap_err().errno, Errno::ENOMEM);
    assert_eq!(mm.madvise_dontneed(1 << 60, P).unwrap_err().errno, Errno::ENOMEM);
    assert_eq!(
        mm.madvise_dontneed(1 << 60, u64::MAX - (1 << 59))
            .unwrap_err()
            .errno,
        Errno::EINVAL,
        "wraps around"
    );
    assert_nothing_leaked(&mm, 0);
}

#[test]
fn shared_anonymous_memory_is_created_lazily() {
    // A 64 GiB pool (in 64 MiB chunks): mapping all of it as shared anonymous memory
    // allocates nothing until a page is touched.
    let frames = FramePool::new(FramePoolConfig {
        chunk_frames: 1 << 14,
        max_frames: 1 << 24,
    })
    .unwrap();
    let mm = Mm::new(MmConfig::default(), Arc::new(frames)).unwrap();
    let shared_anon = MapFlags {
        anonymous: true,
        ..MapFlags::SHARED
    };
    let len = (1 << 24) * P;
    let a = mm.mmap(0, len, Prot::READ_WRITE, shared_anon, None).unwrap();
    mm.write(a + len / 2, b"far").unwrap();
    assert_eq!(read(&mm, a + len / 2, 3), b"far");
    assert_eq!(read(&mm, a, 1), [0]);
    assert_eq!(mm.frames().in_use(), 2, "two pages touched, two frames");
    mm.munmap(a, len).unwrap();
    // Longer than memory (as Linux's overcommit heuristic), than the space, than any length:
    // ENOMEM, as Linux answers.
    for len in [len + P, 1 << 46, 1 << 47, u64::MAX - 100] {
        assert_eq!(
            mm.mmap(0, len, Prot::READ_WRITE, shared_anon, None)
                .unwrap_err()
                .errno,
            Errno::ENOMEM,
            "{len:#x}"
        );
    }
    assert_nothing_leaked(&mm, 0);
}

#[test]
fn anonymous_mappings_refuse_an_unaligned_offset() {
    let mm = mm();
    let f = file(&mm, "/ignored", 1, 0);
    for flags in [
        MapFlags::PRIVATE_ANONYMOUS,
        MapFlags {
            anonymous: true,
            ..MapFlags::SHARED
        },
    ] {
        assert_eq!(
            mm.mmap(0, P, Prot::READ, flags, Some((&f, 100)))
                .unwrap_err()
                .errno,
            Errno::EINVAL,
            "{flags:?}"
        );
        // An aligned offset is ignored, as the file is.
        let a = mm.mmap(0, P, Prot::READ, flags, Some((&f, P))).unwrap();
        assert_eq!(read(&mm, a, 1), [0]);
        mm.munmap(a, P).unwrap();
    }
    assert_nothing_leaked(&mm, 0);
}

#[test]
fn a_pool_that_cannot_be_allocated_is_an_error() {
    for max_frames in [usize::MAX / 2, 1 << 53, 1 << 45] {
        let config = FramePoolConfig {
            chunk_frames: 1 << 40,
            max_frames,
        };
        assert!(FramePool::new(config).is_err(), "{max_frames:#x}");
    }
}

#[test]
fn exec_faults_need_an_executable_mapping() {
    let mm = mm();
    let code = anon(&mm, 1, Prot::READ_EXEC);
    let data = anon(&mm, 1, Prot::READ_WRITE);
    assert_eq!(mm.fault(code, Access::Exec), Ok(Fault::Installed));
    assert_eq!(mm.fault(code, Access::Exec), Ok(Fault::AlreadyMapped));
    assert_eq!(mm.fault(data, Access::Exec), Err(FaultError::AccessDenied));
    mm.mprotect(code, P, Prot::READ).unwrap();
    assert_eq!(mm.fault(code, Access::Exec), Err(FaultError::AccessDenied));
    assert_nothing_leaked(&mm, 0);
}

#[test]
fn shared_and_private_together_are_map_shared_validate() {
    let mm = mm();
    let f = file(&mm, "/validated", 1, 0);
    let both = MapFlags {
        shared: true,
        private: true,
        ..MapFlags::SHARED
    };
    let a = mm.mmap(0, P, Prot::READ_WRITE, both, Some((&f, 0))).unwrap();
    mm.write(a, b"shared").unwrap();
    let mut on_file = [0; 6];
    f.read_at(0, &mut on_file).unwrap();
    assert_eq!(&on_file, b"shared", "a file mapped with both flags is shared");
    assert!(mm.maps().contains("rw-s"), "{}", mm.maps());
    let anonymous = MapFlags {
        private: true,
        ..MapFlags::SHARED_ANONYMOUS
    };
    let err = mm.mmap(0, P, Prot::READ, anonymous, None).unwrap_err();
    assert_eq!(
        err.errno,
        Errno::EINVAL,
        "as Linux: MAP_SHARED_VALIDATE of anonymous memory"
    );
    assert_eq!(
        err.to_string(),
        "EINVAL: MAP_SHARED_VALIDATE does not map anonymous memory"
    );
    drop(f);
    assert_nothing_leaked(&mm, 0);
}
