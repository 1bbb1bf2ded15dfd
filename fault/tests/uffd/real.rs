use fault::uffd::{UffdError, UffdMm, availability};
use fault::{Errno, File, FramePool, FramePoolConfig, MapFlags, PAGE_SIZE, Prot};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const P: u64 = PAGE_SIZE;

/// An `UffdMm` of `len` bytes with two handler threads, or `None` (after saying why) where
/// userfaultfd is unavailable.
fn region(len: u64) -> Option<UffdMm> {
    if let Err(why) = availability() {
        eprintln!("skipped: userfaultfd unavailable: {why}");
        return None;
    }
    Some(UffdMm::new(len, 2).expect("userfaultfd is available"))
}

/// Whether this process may load from `addr` (a segmentation fault otherwise).
fn readable(addr: u64) -> bool {
    reachable(addr, None)
}

/// Whether this process may store to `addr`, storing `value` there if so.
fn writable(addr: u64, value: u8) -> bool {
    reachable(addr, Some(value))
}

/// Moves one byte between `addr` and a local (loading it, or storing `store`) through the
/// kernel, which checks `addr` as this process's own access would be: whether it could.
fn reachable(addr: u64, store: Option<u8>) -> bool {
    let mut byte = store.unwrap_or(0);
    let local = libc::iovec {
        iov_base: (&raw mut byte).cast(),
        iov_len: 1,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: 1,
    };
    // SAFETY: moves one byte between `byte` and this process at `addr`; the kernel checks
    // `addr` and fails with EFAULT where the access is not allowed.
    let moved = unsafe {
        match store {
            None => libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0),
            Some(_) => libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0),
        }
    };
    moved == 1
}

/// The bytes at `[addr, addr + len)`, loaded through a plain pointer.
///
/// # Safety
/// The range must be readable memory of a live `UffdMm` that no other thread unmaps meanwhile.
unsafe fn load(addr: u64, len: u64) -> Vec<u8> {
    // SAFETY: the caller vouches for the range; volatile, so every byte is a real load.
    (0..len)
        .map(|i| unsafe { std::ptr::read_volatile((addr + i) as *const u8) })
        .collect()
}

/// Stores `byte` at `addr` through a plain pointer.
///
/// # Safety
/// `addr` must be writable memory of a live `UffdMm` that no other thread unmaps meanwhile.
unsafe fn store(addr: u64, byte: u8) {
    // SAFETY: the caller vouches for the address.
    unsafe { std::ptr::write_volatile(addr as *mut u8, byte) }
}

#[test]
fn anonymous_memory_reads_zero_and_keeps_plain_stores() {
    let Some(mm) = region(64 << 20) else { return };
    let a = mm
        .mmap(0, 8 * P, Prot::READ_WRITE, MapFlags::PRIVATE_ANONYMOUS, None)
        .unwrap();
    let (low, high) = mm.region();
    assert!(low <= a && a + 8 * P <= high);
    // SAFETY: `a` was mapped read-write above and stays mapped.
    unsafe {
        assert!(load(a, 8 * P).iter().all(|&b| b == 0));
        for page in 0..8 {
            store(a + page * P + 5, page as u8 + 1);
        }
        for page in 0..8 {
            assert_eq!(load(a + page * P + 5, 1), [page as u8 + 1]);
        }
    }
    let stats = mm.stats();
    assert_eq!(stats.zero_filled, 8, "{stats:?}");
    assert_eq!(stats.copied, 0);
}

#[test]
fn after_munmap_returns_no_access_succeeds_and_a_new_mapping_reads_zero() {
    let Some(mm) = region(64 << 20) else { return };
    let a = mm
        .mmap(0, 4 * P, Prot::READ_WRITE, MapFlags::PRIVATE_ANONYMOUS, None)
        .unwrap();
    // SAFETY: mapped read-write above.
    unsafe { store(a + P, 42) };
    assert!(readable(a + P));
    mm.munmap(a + P, 2 * P).unwrap();
    assert!(!readable(a + P) && !readable(a + 2 * P));
    assert!(!writable(a + P, 1));
    assert!(readable(a) && readable(a + 3 * P), "the rest stays");
    assert_eq!(mm.space().vma_count(), 2);
    // Mapped again at the same place: the old page is gone.
    let fixed = MapFlags::PRIVATE_ANONYMOUS.fixed();
    assert_eq!(mm.mmap(a + P, P, Prot::READ_WRITE, fixed, None), Ok(a + P));
    // SAFETY: mapped read-write just above.
    assert_eq!(unsafe { load(a + P, 1) }, [0]);
}

#[test]
fn map_fixed_replaces_contents_and_mprotect_removes_write_access() {
    let Some(mm) = region(64 << 20) else { return };
    let a = mm
        .mmap(0, 2 * P, Prot::READ_WRITE, MapFlags::PRIVATE_ANONYMOUS, None)
        .unwrap();
    // SAFETY: mapped read-write above.
    unsafe { store(a, 7) };
    let fixed = MapFlags::PRIVATE_ANONYMOUS.fixed();
    mm.mmap(a, P, Prot::READ_WRITE, fixed, None).unwrap();
    // SAFETY: mapped again read-write just above.
    let fresh = unsafe { load(a, 1) };
    assert_eq!(fresh, [0], "MAP_FIXED never shows the old contents");
    // SAFETY: as above.
    unsafe { store(a, 9) };
    mm.mprotect(a, 2 * P, Prot::READ).unwrap();
    assert!(!writable(a, 1), "read-only once mprotect returned");
    assert!(readable(a + P));
    // SAFETY: still mapped, readable.
    assert_eq!(unsafe { load(a, 1) }, [9], "mprotect keeps the contents");
    mm.mprotect(a, P, Prot::READ_WRITE).unwrap();
    assert!(writable(a, 3));
    assert!(!writable(a + P, 3), "only the range asked");
    // mprotect over a hole changes what lies before it and fails, as Linux.
    mm.munmap(a + P, P).unwrap();
    assert_eq!(
        mm.mprotect(a, 2 * P, Prot::NONE).unwrap_err().errno,
        Errno::ENOMEM
    );
    assert!(!readable(a));
}

#[test]
fn a_private_file_mapping_copies_the_file_and_keeps_its_writes() {
    let Some(mm) = region(64 << 20) else { return };
    let frames = Arc::new(FramePool::new(FramePoolConfig::default()).unwrap());
    let mut contents = vec![0u8; 3 * P as usize];
    contents[..5].copy_from_slice(b"hello");
    contents[P as usize + 1] = 0xAB;
    let file = File::new("/data", &frames, &contents);
    let private = MapFlags {
        anonymous: false,
        ..MapFlags::PRIVATE_ANONYMOUS
    };
    let a = mm
        .mmap(0, 2 * P, Prot::READ_WRITE, private, Some((&file, P)))
        .unwrap();
    // SAFETY: mapped read-write above.
    unsafe {
        assert_eq!(load(a + 1, 1), [0xAB], "offset one page into the file");
        store(a + 1, 0xCD);
        assert_eq!(load(a + 1, 1), [0xCD]);
    }
    let mut on_file = [0u8; 1];
    file.read_at(P + 1, &mut on_file).unwrap();
    assert_eq!(on_file, [0xAB], "a private mapping's writes never reach the file");
    assert_eq!(mm.stats().copied, 1);
    // MAP_POPULATE fills the pages before mmap returns.
    let populate = MapFlags {
        populate: true,
        ..private
    };
    let b = mm.mmap(0, P, Prot::READ, populate, Some((&file, 0))).unwrap();
    assert_eq!(mm.stats().copied, 2);
    // SAFETY: mapped readable above.
    assert_eq!(unsafe { load(b, 5) }, b"hello");
}

#[test]
fn requests_userfaultfd_cannot_serve_are_refused() {
    let Some(mm) = region(64 << 20) else { return };
    let shared = MapFlags {
        shared: true,
        private: false,
        ..MapFlags::PRIVATE_ANONYMOUS
    };
    assert_eq!(
        mm.mmap(0, P, Prot::READ_WRITE, shared, None).unwrap_err().errno,
        Errno::ENODEV
    );
    let grows = MapFlags {
        growsdown: true,
        ..MapFlags::PRIVATE_ANONYMOUS
    };
    assert_eq!(
        mm.mmap(0, P, Prot::READ_WRITE, grows, None).unwrap_err().errno,
        Errno::EINVAL
    );
    let (low, high) = mm.region();
    let fixed = MapFlags::PRIVATE_ANONYMOUS.fixed();
    assert!(
        mm.mmap(high, P, Prot::READ, fixed, None).is_err(),
        "outside the region"
    );
    assert!(mm.mmap(low + 1, P, Prot::READ, fixed, None).is_err(), "unaligned");
    assert!(
        mm.mmap(0, 0, Prot::READ, MapFlags::PRIVATE_ANONYMOUS, None)
            .is_err(),
        "zero length"
    );
    assert!(matches!(UffdMm::new(P + 1, 1), Err(UffdError::Invalid(_))));
    assert!(matches!(UffdMm::new(P, 0), Err(UffdError::Invalid(_))));
}

/// Two threads store to and load from their own pages through plain pointers while a third
/// maps, writes, replaces (MAP_FIXED) and unmaps ranges beside them: every thread's data stays
/// its own, a fresh mapping reads zero, and after munmap returns nothing in the range is
/// reachable.
#[test]
fn threads_keep_their_data_while_ranges_beside_them_change() {
    let Some(mm) = region(256 << 20) else { return };
    let mm = Arc::new(mm);
    const PAGES: u64 = 64;
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2u8)
        .map(|id| {
            let (mm, stop) = (mm.clone(), stop.clone());
            std::thread::spawn(move || {
                let a = mm
                    .mmap(0, PAGES * P, Prot::READ_WRITE, MapFlags::PRIVATE_ANONYMOUS, None)
                    .unwrap();
                let mut round = 0u8;
                while !stop.load(Ordering::Relaxed) {
                    round = round.wrapping_add(1);
                    for page in 0..PAGES {
                        // SAFETY: this thread's own mapping, unmapped by no one else.
                        unsafe { store(a + page * P + u64::from(id), round) };
                    }
                    for page in 0..PAGES {
                        // SAFETY: as above.
                        let seen = unsafe { load(a + page * P + u64::from(id), 1) };
                        assert_eq!(seen, [round], "thread {id} page {page}");
                    }
                    if round % 16 == 0 {
                        // Replace the mapping now and then (its pages go), so that faults
                        // keep coming.
                        let fixed = MapFlags::PRIVATE_ANONYMOUS.fixed();
                        mm.mmap(a, PAGES * P, Prot::READ_WRITE, fixed, None).unwrap();
                        // SAFETY: as above.
                        let fresh = unsafe { load(a + u64::from(id), 1) };
                        assert_eq!(fresh, [0], "thread {id}: replaced pages read zero");
                    }
                }
            })
        })
        .collect();
    for _ in 0..300 {
        let b = mm
            .mmap(0, 8 * P, Prot::READ_WRITE, MapFlags::PRIVATE_ANONYMOUS, None)
            .unwrap();
        // SAFETY: mapped read-write just above; only this thread changes it.
        unsafe {
            assert!(
                load(b, 8 * P).iter().all(|&x| x == 0),
                "a fresh mapping reads zero"
            );
            store(b + 3 * P, 0x5A);
        }
        let fixed = MapFlags::PRIVATE_ANONYMOUS.fixed();
        mm.mmap(b + 2 * P, 2 * P, Prot::READ_WRITE, fixed, None).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { load(b + 3 * P, 1) }, [0], "replaced");
        mm.munmap(b, 8 * P).unwrap();
        assert!(
            (0..8).all(|page| !readable(b + page * P)),
            "reachable after munmap returned"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    let stats = mm.stats();
    assert!(stats.zero_filled > 0, "{stats:?}");
}

/// Which of the `pages` pages from `addr` are resident (mincore).
fn resident(addr: u64, pages: u64) -> Vec<bool> {
    let mut vec = vec![0u8; pages as usize];
    // SAFETY: mincore reads the residency of `[addr, addr + pages * P)`, a mapped range of
    // this process, into `vec`, one byte per page.
    let done = unsafe { libc::mincore(addr as *mut libc::c_void, (pages * P) as usize, vec.as_mut_ptr()) };
    assert_eq!(done, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().map(|&b| b & 1 == 1).collect()
}

#[test]
fn a_truncate_takes_the_copies_past_the_new_end() {
    let Some(mm) = region(64 << 20) else { return };
    let frames = Arc::new(FramePool::new(FramePoolConfig::default()).unwrap());
    let file = File::new("/t", &frames, &[5; 3 * P as usize]);
    let private = MapFlags {
        anonymous: false,
        ..MapFlags::PRIVATE_ANONYMOUS
    };
    let a = mm.mmap(0, 3 * P, Prot::READ, private, Some((&file, 0))).unwrap();
    for page in 0..3 {
        // SAFETY: mapped readable above, within the file.
        assert_eq!(unsafe { load(a + page * P, 1) }, [5]);
    }
    assert_eq!(resident(a, 3), [true, true, true]);
    file.set_len(P).unwrap();
    assert_eq!(
        resident(a, 3),
        [true, false, false],
        "the copies past the new end went"
    );
    // SAFETY: as above; the first page is still within the file.
    assert_eq!(unsafe { load(a, 1) }, [5]);
    assert_eq!(file.mappings(), 1, "the VMA is in the file's reverse map");
    mm.munmap(a, 3 * P).unwrap();
    assert_eq!(file.mappings(), 0, "and leaves it with munmap");
}

/// Set in the environment of the child that `a_page_past_its_files_end_is_a_bus_error` starts.
const BUS_ERROR_CHILD: &str = "MAPLEVM_UFFD_BUS_ERROR_CHILD";

/// The child's side of `a_page_past_its_files_end_is_a_bus_error` (does nothing unless that
/// test started this binary again to run it): loads from a private mapping's page that lies
/// wholly past its file's end, which must end the process with SIGBUS.
#[test]
fn bus_error_child() {
    if std::env::var_os(BUS_ERROR_CHILD).is_none() {
        return;
    }
    let Some(mm) = region(64 << 20) else { return };
    let frames = Arc::new(FramePool::new(FramePoolConfig::default()).unwrap());
    let file = File::new("/short", &frames, &[1; P as usize]);
    let private = MapFlags {
        anonymous: false,
        ..MapFlags::PRIVATE_ANONYMOUS
    };
    let a = mm.mmap(0, 2 * P, Prot::READ, private, Some((&file, 0))).unwrap();
    // SAFETY: mapped readable above.
    assert_eq!(unsafe { load(a, 1) }, [1], "the file's page");
    // SAFETY: as above; the page lies past the file's end, so the load is a bus error.
    unsafe { load(a + P, 1) };
    panic!("a load past the file's end succeeded");
}

#[test]
fn a_page_past_its_files_end_is_a_bus_error() {
    use std::os::unix::process::ExitStatusExt as _;
    if let Err(why) = availability() {
        eprintln!("skipped: userfaultfd unavailable: {why}");
        return;
    }
    // Under AddressSanitizer the child must leave SIGBUS to the system.
    let asan = std::env::var("ASAN_OPTIONS").unwrap_or_default();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "real::bus_error_child", "--test-threads=1"])
        .env(BUS_ERROR_CHILD, "1")
        .env("ASAN_OPTIONS", format!("{asan}:handle_sigbus=0"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A fault that is never answered would leave the child waiting, or faulting, forever.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the child neither finished nor got SIGBUS: {:?}", child.wait());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
}
