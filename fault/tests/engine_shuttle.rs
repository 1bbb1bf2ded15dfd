//! The fault engine against the replacement protocol under shuttle (random and PCT
//! schedulers): G2 (munmap; fast path, slow path, and every fault referenced as with
//! `MmConfig::fast_path` off), G3 (MAP_FIXED), mprotect to read-only, G4 (a fault on an untouched
//! VMA while a writer waits), one frame per page for racing faults, and no frame or table
//! leaked. The fast path is covered by step 4 (a variant without the grace period fails) and
//! the slow path by step 3 (a variant without the reference wait fails). Run with
//! `--features shuttle`.
#![cfg(feature = "shuttle")]

use fault::{Access, Fault, FaultError, File, FramePool, FramePoolConfig, Mm, MmConfig};
use maple::sync::atomic::{AtomicBool, Ordering};
use maple::sync::{Arc, thread};
use maple::testing::{assert_broken_variant_fails, check_random_and_pct as check_both};
use vma::{BrokenStep, MapFlags, Prot, RemapFlags};

#[path = "../../vma/tests/support/shuttle_space.rs"]
mod shuttle_space;
use shuttle_space::{A, B, LAYOUT, P, STEPS};

fn mm(broken: Option<BrokenStep>) -> Mm {
    mm_with(broken, true)
}

fn mm_with(broken: Option<BrokenStep>, fast_path: bool) -> Mm {
    let frames = FramePool::new(FramePoolConfig {
        chunk_frames: 8,
        max_frames: 32,
    })
    .unwrap();
    let config = MmConfig {
        layout: LAYOUT,
        zero_fill: true,
        fast_path,
        share_page_tables: true,
    };
    let frames = std::sync::Arc::new(frames);
    match broken {
        Some(step) => Mm::with_broken_protocol(config, frames, step),
        None => Mm::new(config, frames),
    }
    .unwrap()
}

fn anon(mm: &Mm, addr: u64, prot: Prot) {
    mm.mmap(addr, P, prot, MapFlags::PRIVATE_ANONYMOUS.fixed(), None)
        .unwrap();
}

/// A one-page file filled with 0xaa, mapped private at `addr`.
fn file_at(mm: &Mm, addr: u64) -> std::sync::Arc<File> {
    let file = File::new("/old", mm.frames(), &[0xaa; P as usize]);
    mm.mmap(addr, P, Prot::READ, MapFlags::PRIVATE.fixed(), Some((&file, 0)))
        .unwrap();
    file
}

fn join<T>(handle: thread::JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Unmaps everything; every table and every frame not held by `cached` file pages goes back.
/// (Under shuttle, freed VMAs are quarantined, so the files they map, and their page caches,
/// stay.) A leak is how a translation installed into an unlinked table after a flush shows.
fn assert_nothing_leaked(mm: &Mm, cached: usize) {
    mm.munmap(LAYOUT.low, LAYOUT.high - LAYOUT.low).unwrap();
    mm.barrier();
    assert_eq!(mm.page_tables(), 0, "violated: page tables leaked");
    assert_eq!(mm.frames().in_use(), cached, "violated: frames leaked");
}

/// Runs a broken variant, which must fail with a panic whose message contains one of
/// `expected` (or the VMA layer's use-after-free detection).
fn must_fail(test: impl Fn() + Send + Sync + 'static, expected: &[&str]) {
    let expected: Vec<&str> = expected
        .iter()
        .copied()
        .chain(["used after it was freed"])
        .collect();
    assert_broken_variant_fails(STEPS, &expected, test);
}

/// What the page that races munmap is.
#[derive(Clone, Copy)]
enum Racing {
    /// Anonymous memory, written: the fast path (no reference, the guard only).
    FastPath,
    /// A file page not cached yet: the slow path (a VMA reference, the guard dropped).
    SlowPath,
    /// Anonymous memory with the fast path off (`rcu-refonly`): a reference and the guard.
    Referenced,
}

/// G2: a fault racing munmap completes before munmap returns or fails; afterwards no
/// translation exists in the range, and none appears later.
fn fault_racing_munmap(broken: Option<BrokenStep>, racing: Racing) {
    let mm = Arc::new(mm_with(broken, !matches!(racing, Racing::Referenced)));
    let (access, file) = match racing {
        Racing::FastPath | Racing::Referenced => {
            anon(&mm, A, Prot::READ_WRITE);
            (Access::Write, None)
        }
        Racing::SlowPath => (Access::Read, Some(file_at(&mm, A))),
    };
    let faulting = {
        let mm = mm.clone();
        thread::spawn(move || {
            let result = mm.fault(A, access);
            assert!(
                matches!(result, Ok(Fault::Installed) | Err(FaultError::NotMapped)),
                "{result:?}"
            );
        })
    };
    mm.munmap(A, P).unwrap();
    assert_eq!(
        mm.translation(A),
        None,
        "a translation exists when munmap returns"
    );
    join(faulting);
    assert_eq!(
        mm.translation(A),
        None,
        "a translation appeared after munmap returned"
    );
    // Under shuttle freed VMAs are quarantined, and the files they map with them.
    let cached = file.map_or(0, |file| file.cached_pages());
    assert_nothing_leaked(&mm, cached);
}

#[test]
fn g2_fault_racing_munmap() {
    check_both(STEPS, || fault_racing_munmap(None, Racing::FastPath));
}

#[test]
fn g2_fails_without_grace_period() {
    must_fail(
        || fault_racing_munmap(Some(BrokenStep::GracePeriod), Racing::FastPath),
        &["munmap return", "leaked"],
    );
}

#[test]
fn g2_slow_fault_racing_munmap() {
    check_both(STEPS, || fault_racing_munmap(None, Racing::SlowPath));
}

#[test]
fn g2_referenced_fault_racing_munmap() {
    check_both(STEPS, || fault_racing_munmap(None, Racing::Referenced));
}

#[test]
fn g2_slow_path_fails_without_reference_wait() {
    must_fail(
        || fault_racing_munmap(Some(BrokenStep::ReferenceWait), Racing::SlowPath),
        &["munmap return", "leaked"],
    );
}

/// G3: a fault racing MAP_FIXED never shows the old mapping's contents through the new one.
fn fault_racing_map_fixed(broken: Option<BrokenStep>) {
    let mm = Arc::new(mm(broken));
    let file = file_at(&mm, A);
    // Cache the file page, then drop the translation: the race below is a fast-path fault.
    mm.read(A, &mut [0]).unwrap();
    mm.madvise_dontneed(A, P).unwrap();
    let faulting = {
        let mm = mm.clone();
        thread::spawn(move || {
            let mut byte = [0];
            mm.read(A, &mut byte).unwrap();
            assert!(byte[0] == 0xaa || byte[0] == 0, "{byte:?}");
        })
    };
    anon(&mm, A, Prot::READ_WRITE);
    let mut byte = [1];
    mm.read(A, &mut byte).unwrap();
    assert_eq!(byte[0], 0, "old contents through the new mapping");
    join(faulting);
    mm.read(A, &mut byte).unwrap();
    assert_eq!(byte[0], 0, "old contents through the new mapping");
    let cached = file.cached_pages();
    drop(file);
    assert_nothing_leaked(&mm, cached);
}

#[test]
fn g3_fault_racing_map_fixed() {
    check_both(STEPS, || fault_racing_map_fixed(None));
}

#[test]
fn g3_fails_without_grace_period() {
    must_fail(
        || fault_racing_map_fixed(Some(BrokenStep::GracePeriod)),
        &["old contents through the new mapping", "leaked"],
    );
}

/// A write fault racing mprotect to read-only never leaves a writable translation.
fn write_fault_racing_mprotect(broken: Option<BrokenStep>) {
    let mm = Arc::new(mm(broken));
    anon(&mm, A, Prot::READ_WRITE);
    let faulting = {
        let mm = mm.clone();
        thread::spawn(move || {
            let result = mm.fault(A, Access::Write);
            assert!(
                matches!(result, Ok(Fault::Installed) | Err(FaultError::AccessDenied)),
                "{result:?}"
            );
        })
    };
    mm.mprotect(A, P, Prot::READ).unwrap();
    let writable = || mm.translation(A).is_some_and(|pte| pte.writable());
    assert!(!writable(), "writable translation after mprotect to read-only");
    join(faulting);
    assert!(!writable(), "writable translation after mprotect to read-only");
    assert_nothing_leaked(&mm, 0);
}

#[test]
fn write_fault_racing_mprotect_read_only() {
    check_both(STEPS, || write_fault_racing_mprotect(None));
}

#[test]
fn mprotect_fails_without_grace_period() {
    must_fail(
        || write_fault_racing_mprotect(Some(BrokenStep::GracePeriod)),
        &["writable translation after mprotect", "leaked"],
    );
}

/// G4: while munmap of A waits for a reference held on A, faults on B complete (if they
/// waited for the writer, this would deadlock and shuttle would report it).
fn faults_on_untouched_vma_do_not_wait() {
    let mm = Arc::new(mm(None));
    anon(&mm, A, Prot::READ_WRITE);
    anon(&mm, B, Prot::READ_WRITE);
    let holding = Arc::new(AtomicBool::new(false));
    let b_done = Arc::new(AtomicBool::new(false));
    let holder = {
        let (mm, holding, b_done) = (mm.clone(), holding.clone(), b_done.clone());
        thread::spawn(move || {
            let reference = mm.space().get(A).expect("A is mapped");
            holding.store(true, Ordering::SeqCst);
            while !b_done.load(Ordering::SeqCst) {
                thread::yield_now();
            }
            drop(reference);
        })
    };
    let writer = {
        let (mm, holding) = (mm.clone(), holding.clone());
        thread::spawn(move || {
            while !holding.load(Ordering::SeqCst) {
                thread::yield_now();
            }
            mm.munmap(A, P).unwrap();
        })
    };
    assert_eq!(mm.fault(B, Access::Write), Ok(Fault::Installed));
    mm.write(B, b"b").unwrap();
    b_done.store(true, Ordering::SeqCst);
    join(holder);
    join(writer);
    assert_nothing_leaked(&mm, 0);
}

#[test]
fn g4_faults_on_untouched_vma_complete_while_a_writer_waits() {
    check_both(STEPS, faults_on_untouched_vma_do_not_wait);
}

/// Two threads faulting one page install one frame; exactly one of them installs it.
fn racing_faults_install_one_frame() {
    let mm = Arc::new(mm(None));
    anon(&mm, A, Prot::READ_WRITE);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let mm = mm.clone();
            thread::spawn(move || mm.fault(A + 8, Access::Write).unwrap())
        })
        .collect();
    let results: Vec<Fault> = threads.into_iter().map(join).collect();
    assert_eq!(
        results.iter().filter(|&&r| r == Fault::Installed).count(),
        1,
        "{results:?}"
    );
    assert_eq!(mm.frames().in_use(), 1, "one frame installed");
    assert_nothing_leaked(&mm, 0);
}

#[test]
fn racing_faults_install_one_frame_only() {
    check_both(STEPS, racing_faults_install_one_frame);
}

/// A call that revokes the translation of a page.
#[derive(Clone, Copy, Debug)]
enum Revocation {
    Munmap,
    ReadOnly,
    NoAccess,
    MapFixed,
    DontNeed,
    MremapMove,
}

impl Revocation {
    const ALL: [Revocation; 6] = [
        Self::Munmap,
        Self::ReadOnly,
        Self::NoAccess,
        Self::MapFixed,
        Self::DontNeed,
        Self::MremapMove,
    ];

    fn run(self, mm: &Mm) {
        match self {
            Self::Munmap => mm.munmap(A, P).unwrap(),
            Self::ReadOnly => mm.mprotect(A, P, Prot::READ).unwrap(),
            Self::NoAccess => mm.mprotect(A, P, Prot::NONE).unwrap(),
            Self::MapFixed => anon(mm, A, Prot::READ_WRITE),
            Self::DontNeed => mm.madvise_dontneed(A, P).unwrap(),
            Self::MremapMove => {
                let flags = RemapFlags {
                    maymove: true,
                    fixed: true,
                };
                assert_eq!(mm.mremap(A, P, P, flags, B), Ok(B));
            }
        }
    }
}

/// Once a call revoking a translation returns, no store that went through it lands: a store
/// racing the call lands before it returns or not at all. The page is a shared file page, so
/// a late store would show in the file; the store never faults, so it can only go through the
/// translation it found (under shuttle it may be preempted between reading the translation
/// and copying, as a CPU's store through a stale TLB entry).
fn store_racing_revocation(broken: Option<BrokenStep>, revocation: Revocation) {
    let mm = Arc::new(mm(broken));
    let file = File::new("/shared", mm.frames(), &[0; P as usize]);
    mm.mmap(A, P, Prot::READ_WRITE, MapFlags::SHARED.fixed(), Some((&file, 0)))
        .unwrap();
    mm.write(A, &[0]).unwrap();
    let storing = {
        let mm = mm.clone();
        thread::spawn(move || {
            let never_fault = |_, _| Err(FaultError::NotMapped);
            let _ = mm.memory().write(A, &[1], mm.space().rcu(), never_fault);
        })
    };
    revocation.run(&mm);
    let file_byte = || {
        let mut byte = [0];
        file.read_at(0, &mut byte).unwrap();
        byte[0]
    };
    let when_returned = file_byte();
    join(storing);
    assert_eq!(
        file_byte(),
        when_returned,
        "violated: a store landed after {revocation:?} returned"
    );
    let cached = file.cached_pages();
    drop(file);
    assert_nothing_leaked(&mm, cached);
}

#[test]
fn no_store_lands_after_a_revoking_call_returns() {
    for revocation in Revocation::ALL {
        check_both(STEPS, move || store_racing_revocation(None, revocation));
    }
}

#[test]
fn stores_land_late_without_the_revocation_wait() {
    for revocation in Revocation::ALL {
        must_fail(
            move || store_racing_revocation(Some(BrokenStep::RevocationWait), revocation),
            &["a store landed after"],
        );
    }
}

/// Two first writes into one VMA prepare one anon_vma between them (the slot is set once, the
/// loser takes the winner's), while a writer splits the VMA: the pieces keep it and merge
/// again once alike.
#[test]
fn racing_first_writes_share_one_anon_vma() {
    check_both(STEPS, || {
        let mm = Arc::new(mm(None));
        mm.mmap(
            A,
            2 * P,
            Prot::READ_WRITE,
            MapFlags::PRIVATE_ANONYMOUS.fixed(),
            None,
        )
        .unwrap();
        let writers: Vec<_> = [A, A + P]
            .into_iter()
            .map(|addr| {
                let mm = mm.clone();
                // The second page may be read-only by then: denied, as it should be.
                thread::spawn(move || {
                    let _ = mm.write(addr, &[1]);
                })
            })
            .collect();
        mm.mprotect(A + P, P, Prot::READ).unwrap();
        writers.into_iter().for_each(join);
        mm.mprotect(A + P, P, Prot::READ_WRITE).unwrap();
        mm.write(A + P, &[2]).unwrap();
        let anon = |addr| {
            let guard = mm.space().guard();
            match mm.space().lookup(addr, &guard) {
                vma::Lookup::Mapped(vma) => vma.mapping().anon.get(),
                other => panic!("{other:?} at {addr:#x}"),
            }
        };
        assert!(anon(A).is_some());
        assert_eq!(
            mm.space().vma_count(),
            1,
            "violated: the pieces did not merge again"
        );
    });
}
