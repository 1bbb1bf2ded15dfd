//! Stress with real threads: faulting threads read and write a stable region (each its own
//! pages, contents checked) and a churning region, while a writer thread maps, unmaps,
//! mprotects and MAP_FIXED-replaces overlapping parts of the churning region in a loop. At the
//! end every frame and table must be back. Short by default; `MAPLEVM_STRESS_SCALE=N` runs N
//! times longer. CI also runs it under AddressSanitizer.
#![cfg(not(feature = "shuttle"))]

use fault::{Access, FaultError, File, FileSync, FramePool, FramePoolConfig, Mm, MmConfig};
use maple::testing::Rng;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use vma::{MapFlags, PAGE_SIZE, Prot};

const P: u64 = PAGE_SIZE;
const HUGE: u64 = fault::HUGE_FRAME_SIZE as u64;
const STABLE: u64 = 0x1000_0000;
const CHURN: u64 = 0x2000_0000;
const CHURN_PAGES: u64 = 32;
const FAULTERS: u64 = 3;
const PAGES_PER_FAULTER: u64 = 16;

fn scale() -> u64 {
    std::env::var("MAPLEVM_STRESS_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

#[test]
fn faults_and_writers_on_overlapping_regions() {
    let frames = Arc::new(
        FramePool::new(FramePoolConfig {
            chunk_frames: 64,
            max_frames: 4096,
        })
        .unwrap(),
    );
    let mm = Arc::new(Mm::new(MmConfig::default(), frames.clone()).unwrap());
    let fixed = MapFlags::PRIVATE_ANONYMOUS.fixed();
    mm.mmap(
        STABLE,
        FAULTERS * PAGES_PER_FAULTER * P,
        Prot::READ_WRITE,
        fixed,
        None,
    )
    .unwrap();
    let file = File::new("/stress", &frames, &[0x5a; 8 * P as usize]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer_ops = 2_000 * scale();

    let faulters: Vec<_> = (0..FAULTERS)
        .map(|t| {
            let (mm, stop) = (mm.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(0x9e37_79b9 + t);
                let mine = STABLE + t * PAGES_PER_FAULTER * P;
                let mut round = 0u8;
                let mut faults = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    round = round.wrapping_add(1);
                    // Own pages in the stable region: what was written stays.
                    let page = mine + rng.below(PAGES_PER_FAULTER) * P;
                    mm.write(page + 8 * t, &[round; 8]).unwrap();
                    let mut back = [0; 8];
                    mm.read(page + 8 * t, &mut back).unwrap();
                    assert_eq!(back, [round; 8], "the stable region lost a write");
                    // The churning region: any outcome a racing writer can cause, never a
                    // panic or an unexpected error.
                    let addr = CHURN + rng.below(CHURN_PAGES) * P;
                    let access = if rng.below(2) == 0 {
                        Access::Read
                    } else {
                        Access::Write
                    };
                    match mm.fault(addr, access) {
                        Ok(_) | Err(FaultError::NotMapped | FaultError::AccessDenied) => {}
                        Err(other) => panic!("unexpected fault outcome {other:?}"),
                    }
                    let mut byte = [0];
                    match mm.read(addr, &mut byte) {
                        // Fresh anonymous memory, a byte a faulter wrote, or the file.
                        Ok(()) => assert!(byte[0] == 0 || byte[0] == 0x5a || byte[0] == 0xc3, "{byte:?}"),
                        Err(e) => assert!(matches!(
                            e.error,
                            FaultError::NotMapped | FaultError::AccessDenied
                        )),
                    }
                    let _ = mm.write(addr, &[0xc3]);
                    faults += 1;
                }
                faults
            })
        })
        .collect();

    let writer = {
        let (mm, file) = (mm.clone(), file.clone());
        std::thread::spawn(move || {
            let mut rng = Rng::new(0x1234_5678);
            for _ in 0..writer_ops {
                let start = CHURN + rng.below(CHURN_PAGES) * P;
                let pages = 1 + rng.below(CHURN_PAGES - (start - CHURN) / P);
                let len = pages * P;
                match rng.below(5) {
                    0 => drop(mm.mmap(start, len, Prot::READ_WRITE, fixed, None).unwrap()),
                    1 => mm.munmap(start, len).unwrap(),
                    2 => {
                        let prot = [Prot::READ, Prot::READ_WRITE, Prot::NONE][rng.below(3) as usize];
                        // ENOMEM when part of the range is unmapped is fine.
                        let _ = mm.mprotect(start, len, prot);
                    }
                    3 => {
                        let len = len.min(8 * P);
                        let flags = MapFlags::PRIVATE.fixed();
                        mm.mmap(start, len, Prot::READ_WRITE, flags, Some((&file, 0)))
                            .unwrap();
                    }
                    _ => {
                        let len = len.min(8 * P);
                        let flags = MapFlags::SHARED.fixed();
                        mm.mmap(start, len, Prot::READ, flags, Some((&file, 0))).unwrap();
                    }
                }
                mm.space().validate().unwrap();
            }
        })
    };
    writer.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let faults: u64 = faulters.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(faults > 0);

    // The file holds its contents or bytes written through a shared mapping made writable.
    let mut contents = vec![0; 8 * P as usize];
    file.read_at(0, &mut contents).unwrap();
    assert!(
        contents.iter().all(|&b| b == 0x5a || b == 0xc3),
        "the file was corrupted"
    );
    let stats = mm.stats();
    assert!(stats.replacements > 0 && stats.fast_path > 0, "{stats}");

    mm.munmap(STABLE, CHURN + CHURN_PAGES * P - STABLE).unwrap();
    mm.barrier();
    assert_eq!(mm.page_tables(), 0, "page tables leaked");
    drop(file);
    assert_eq!(frames.in_use(), 0, "frames leaked");
}

/// Once munmap or mprotect returns, no store through the translation it revoked lands: a
/// thread writes whole pages of a shared file mapping in a loop while this one revokes the
/// mapping's translations (alternately mprotect to read-only and munmap), reads the file, waits
/// for the storing thread to stop, and reads the file again: it must not have changed.
#[test]
fn no_store_lands_after_munmap_or_mprotect_returns() {
    const A: u64 = 0x3000_0000;
    let frames = Arc::new(FramePool::new(FramePoolConfig::default()).unwrap());
    let mm = Arc::new(Mm::new(MmConfig::default(), frames.clone()).unwrap());
    let file = File::new("/revoked", &frames, &[0; P as usize]);
    let contents = || {
        let mut page = vec![0; P as usize];
        file.read_at(0, &mut page).unwrap();
        page
    };
    for round in 0..200 * scale() {
        mm.mmap(A, P, Prot::READ_WRITE, MapFlags::SHARED.fixed(), Some((&file, 0)))
            .unwrap();
        let stores = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let storing = {
            let (mm, stores) = (mm.clone(), stores.clone());
            std::thread::spawn(move || {
                for value in (1..=u8::MAX).cycle() {
                    if mm.write(A, &[value; P as usize]).is_err() {
                        break;
                    }
                    stores.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        while stores.load(Ordering::Relaxed) < 3 {
            std::thread::yield_now();
        }
        if round % 2 == 0 {
            mm.mprotect(A, P, Prot::READ).unwrap();
        } else {
            mm.munmap(A, P).unwrap();
        }
        let when_returned = contents();
        storing.join().unwrap();
        assert!(
            contents() == when_returned,
            "round {round}: a store landed after {} returned",
            if round % 2 == 0 { "mprotect" } else { "munmap" }
        );
    }
    mm.munmap(A, P).unwrap();
    drop(file);
    mm.barrier();
    assert_eq!(frames.in_use(), 0, "frames leaked");
}

/// Several address spaces map one file (shared and private, remapping it now and then) and
/// fault it, reading and writing, while a thread shrinks it, grows it back and punches holes
/// in a loop. After every shrink no address space holds a translation beyond the end; faults
/// beyond it are bus errors, never a panic or a stale page; at the end every frame is back.
#[test]
fn address_spaces_fault_a_file_while_it_is_truncated_and_punched() {
    const PAGES: u64 = 16;
    let frames = Arc::new(
        FramePool::new(FramePoolConfig {
            chunk_frames: 64,
            max_frames: 4096,
        })
        .unwrap(),
    );
    let file = File::new("/truncated", &frames, &[0x77; (PAGES * P) as usize]);
    fault_a_file_while_it_is_truncated(file, &frames, PAGES);
}

/// The same with a hugetlb file: its sizes change by whole huge pages, faults take whole huge
/// pages (a bus error also when the pool has none free for a private page), shared mappings
/// reserve theirs; at the end every huge page is back and no reservation is left.
#[test]
fn address_spaces_fault_a_hugetlb_file_while_it_is_truncated_and_punched() {
    const PAGES: u64 = 4;
    let config = FramePoolConfig {
        chunk_frames: 64,
        max_frames: 1024,
    };
    let frames = Arc::new(FramePool::with_huge_pages(config, 16).unwrap());
    let file = File::hugetlb("/hugepages/truncated", &frames, PAGES * HUGE, FileSync::Rcu).unwrap();
    fault_a_file_while_it_is_truncated(file, &frames, PAGES);
    assert_eq!(frames.huge_in_use(), 0, "huge frames leaked");
    assert_eq!(frames.huge_reserved(), 0, "reservations leaked");
}

/// Three address spaces, shared and private mappings of `file` (`pages` of its pages long),
/// against a truncating thread (see above); drops the file at the end.
fn fault_a_file_while_it_is_truncated(file: Arc<File>, frames: &FramePool, pages: u64) {
    const SPACES: usize = 3;
    let unit = file.page_size();
    let len = pages * unit;
    let spaces: Vec<Arc<Mm>> = (0..SPACES)
        .map(|_| Arc::new(Mm::new(MmConfig::default(), file.frames().clone()).unwrap()))
        .collect();
    let flags = |i: usize| {
        if i % 2 == 0 {
            MapFlags::SHARED
        } else {
            MapFlags::PRIVATE
        }
    };
    let at: Vec<u64> = spaces
        .iter()
        .enumerate()
        .map(|(i, mm)| {
            mm.mmap(0, len, Prot::READ_WRITE, flags(i), Some((&file, 0)))
                .unwrap()
        })
        .collect();
    let stop = AtomicBool::new(false);
    let accesses = std::sync::atomic::AtomicU64::new(0);
    let (rounds, enough) = (300 * scale(), 30_000 * scale());
    std::thread::scope(|scope| {
        for (i, mm) in spaces.iter().enumerate() {
            let (stop, accesses) = (&stop, &accesses);
            let (mm, mut addr, file) = (mm.clone(), at[i], file.clone());
            scope.spawn(move || {
                let mut rng = Rng::new(i as u64);
                while !stop.load(Ordering::Relaxed) {
                    let target = addr + rng.below(len - 1);
                    let result = if rng.chance(50) {
                        mm.write(target, &[i as u8])
                    } else {
                        mm.read(target, &mut [0]).map(|_| ())
                    };
                    match result {
                        Ok(()) => {}
                        Err(e) => assert_eq!(e.error, FaultError::BusError, "{e:?}"),
                    }
                    accesses.fetch_add(1, Ordering::Relaxed);
                    if rng.chance(2) {
                        // Remap: the reverse map changes under the truncating thread.
                        mm.munmap(addr, len).unwrap();
                        addr = mm
                            .mmap(0, len, Prot::READ_WRITE, flags(i), Some((&file, 0)))
                            .unwrap();
                    }
                }
                mm.munmap(addr, len).unwrap();
            });
        }
        let mut rng = Rng::new(99);
        let mut round = 0;
        while round < rounds || accesses.load(Ordering::Relaxed) < enough {
            round += 1;
            // A hugetlb file's size changes by whole huge pages.
            let size = if file.is_hugetlb() {
                rng.below(pages) * unit
            } else {
                rng.below(len)
            };
            file.set_len(size).unwrap();
            let first = size.div_ceil(unit);
            for (mm, &addr) in spaces.iter().zip(&at) {
                // The initial mappings may have been remapped elsewhere; their old range then
                // holds nothing of the file, and a translation there would be a leak.
                for page in first..pages {
                    let at = addr + page * unit;
                    assert!(
                        mm.translation(at).is_none()
                            || mm.file_at(at).is_none_or(|(_, off)| off / unit < first),
                        "a translation beyond the end survived set_len"
                    );
                }
            }
            let offset = rng.below(len);
            file.punch_hole(offset, 1 + rng.below(3 * unit)).unwrap();
            file.set_len(len).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(file.mappings(), 0);
    drop(file);
    for mm in &spaces {
        mm.barrier();
        assert_eq!(mm.page_tables(), 0, "page tables leaked");
    }
    assert_eq!(frames.in_use(), 0, "frames leaked");
}
