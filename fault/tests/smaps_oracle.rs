//! `Mm::smaps` against the running kernel's /proc/self/smaps: the same mappings, touched the
//! same way, in a forked child (raw system calls and plain loads and stores) and in an `Mm`;
//! each VMA's Rss, Pss, Shared/Private Clean/Dirty, Anonymous and Locked must be the same.
#![cfg(not(feature = "shuttle"))]

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod against_linux {
    use fault::{File, FramePool, FramePoolConfig, MapFlags, Mm, MmConfig, PAGE_SIZE, Prot};
    use oracle::child::{Scratch, in_child_reporting};
    use std::sync::Arc;

    const P: u64 = PAGE_SIZE;
    const PAGES: u64 = 24;

    /// The figures compared, in kB, by VMA (first page, end page).
    type Figures = Vec<((u64, u64), [u64; 8])>;

    /// The labels of the figures, in order.
    const LABELS: [&str; 8] = [
        "Rss:",
        "Pss:",
        "Shared_Clean:",
        "Shared_Dirty:",
        "Private_Clean:",
        "Private_Dirty:",
        "Anonymous:",
        "Locked:",
    ];

    /// The child's side: the layout, its touches, and a fork whose child keeps the pages it
    /// shares until well after the report.
    ///
    /// # Safety
    /// Only in a child forked from the process that reserved `scratch`.
    unsafe fn kernel(scratch: &Scratch) -> i64 {
        use libc::{MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, syscall};
        let base = scratch.base;
        let at = |page: u64| base + page * P;
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        // SAFETY: raw system calls on the child's scratch range and descriptors; loads and
        // stores to pages just mapped with those permissions.
        unsafe {
            scratch.clear();
            let memfd = syscall(libc::SYS_memfd_create, c"smaps".as_ptr(), 0);
            syscall(libc::SYS_ftruncate, memfd, PAGES * P);
            let anon = (MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED) as u64;
            // A: anonymous, two of four pages written.
            syscall(libc::SYS_mmap, at(0), 4 * P, rw, anon, -1, 0);
            (at(0) as *mut u8).write_volatile(1);
            (at(1) as *mut u8).write_volatile(1);
            // B: a private file mapping, one page read.
            let private = (MAP_PRIVATE | MAP_FIXED) as u64;
            syscall(
                libc::SYS_mmap,
                at(5),
                3 * P,
                libc::PROT_READ as u64,
                private,
                memfd,
                0,
            );
            (at(5) as *const u8).read_volatile();
            // C: a shared file mapping, one page written.
            let shared = (MAP_SHARED | MAP_FIXED) as u64;
            syscall(libc::SYS_mmap, at(9), 2 * P, rw, shared, memfd, 8 * P);
            (at(9) as *mut u8).write_volatile(1);
            // D: locked anonymous memory (mlock brings it in).
            syscall(libc::SYS_mmap, at(12), 2 * P, rw, anon, -1, 0);
            syscall(libc::SYS_mlock, at(12), 2 * P);
            // E: anonymous, one page written, then shared with a forked child.
            syscall(libc::SYS_mmap, at(16), 2 * P, rw, anon, -1, 0);
            (at(16) as *mut u8).write_volatile(1);
            if syscall(libc::SYS_fork) == 0 {
                // The grandchild holds the pages, and none of the pipe, until long after the
                // report.
                syscall(libc::SYS_close_range, 3, u32::MAX, 0);
                let nap = libc::timespec {
                    tv_sec: 5,
                    tv_nsec: 0,
                };
                syscall(libc::SYS_nanosleep, &nap, std::ptr::null_mut::<libc::timespec>());
                syscall(libc::SYS_exit_group, 0);
            }
            0
        }
    }

    /// The same in an `Mm`; returns it with the child that shares E.
    fn maplevm(base: u64) -> (Mm, Mm) {
        let frames = Arc::new(FramePool::new(FramePoolConfig::default()).unwrap());
        let mm = Mm::new(MmConfig::default(), frames.clone()).unwrap();
        let memfd = File::zeroed("/memfd:smaps (deleted)", &frames, PAGES * P).unwrap();
        let at = |page: u64| base + page * P;
        let (rw, anon) = (Prot::READ_WRITE, MapFlags::PRIVATE_ANONYMOUS.fixed());
        mm.mmap(at(0), 4 * P, rw, anon, None).unwrap();
        mm.write(at(0), &[1]).unwrap();
        mm.write(at(1), &[1]).unwrap();
        mm.mmap(
            at(5),
            3 * P,
            Prot::READ,
            MapFlags::PRIVATE.fixed(),
            Some((&memfd, 0)),
        )
        .unwrap();
        mm.read(at(5), &mut [0]).unwrap();
        mm.mmap(at(9), 2 * P, rw, MapFlags::SHARED.fixed(), Some((&memfd, 8 * P)))
            .unwrap();
        mm.write(at(9), &[1]).unwrap();
        mm.mmap(at(12), 2 * P, rw, anon, None).unwrap();
        mm.mlock(at(12), 2 * P).unwrap();
        mm.mmap(at(16), 2 * P, rw, anon, None).unwrap();
        mm.write(at(16), &[1]).unwrap();
        let child = mm.fork().unwrap();
        (mm, child)
    }

    /// The figures of the VMAs inside the scratch range in smaps text.
    fn figures(smaps: &str, base: u64) -> Figures {
        let mut found: Figures = Vec::new();
        let mut current: Option<usize> = None;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((start, end)) = range.split_once('-')
                && let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
            {
                current = (start >= base && end <= base + PAGES * P).then(|| {
                    found.push((((start - base) / P, (end - base) / P), [0; 8]));
                    found.len() - 1
                });
                continue;
            }
            let Some(vma) = current else { continue };
            let mut words = line.split_whitespace();
            let (Some(label), Some(value)) = (words.next(), words.next()) else {
                continue;
            };
            if let Some(i) = LABELS.iter().position(|&l| l == label) {
                found[vma].1[i] = value.parse().unwrap();
            }
        }
        found
    }

    pub fn run() {
        let scratch = Scratch::reserve(PAGES, P);
        let base = scratch.base;
        // SAFETY: the child was just forked from this process, which reserved the range.
        let (_, linux) = in_child_reporting(c"/proc/self/smaps", || unsafe { kernel(&scratch) });
        let (mm, _child) = maplevm(base);
        let ours: String = mm.smaps().iter().map(ToString::to_string).collect();
        assert_eq!(
            figures(&ours, base),
            figures(&linux, base),
            "smaps figures (kB: {LABELS:?}) by VMA, maplevm then Linux"
        );
    }
}

/// Anonymous memory written in part, a private file page read, a shared file page written,
/// locked memory, and pages shared with a forked child.
#[test]
fn smaps_figures_are_the_kernels() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    against_linux::run();
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    eprintln!("skipped: the smaps oracle needs Linux on x86-64");
}
