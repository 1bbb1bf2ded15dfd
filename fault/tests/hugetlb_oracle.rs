//! maplevm's mappings of huge pages against the running kernel. Each case lays out shared
//! `MAP_HUGETLB` mappings in a 2 MiB-aligned scratch range of a forked child process (raw
//! syscalls) and the same layout of hugetlb files in an `Mm`, makes the same call in both, and
//! requires the same result (address or errno) and the same mappings in the scratch range
//! afterwards. It needs free huge pages (`/proc/sys/vm/nr_hugepages`): where there are too few,
//! or on another system, the test says why it skips. The expectations were read off Linux 6.18.
#![cfg(not(feature = "shuttle"))]

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod against_linux {
    use fault::{
        File, FileSync, FramePool, FramePoolConfig, HUGE_FRAME_SIZE, MapFlags, Mm, MmConfig, Prot, RemapFlags,
    };
    use oracle::child;
    use std::sync::Arc;

    const H: u64 = HUGE_FRAME_SIZE as u64;
    const P: u64 = fault::PAGE_SIZE;
    /// Huge pages in the scratch range.
    const SPAN: u64 = 8;
    /// Huge pages a case may map at once.
    const NEEDED: u64 = 4;

    /// A call; addresses and lengths in bytes from the scratch range's base.
    #[derive(Debug, Clone, Copy)]
    enum Call {
        Munmap(u64, u64),
        Mprotect(u64, u64),
        /// old, old_len, new_len, MREMAP_MAYMOVE | MREMAP_FIXED, new address
        Mremap(u64, u64, u64, bool, u64),
        DontNeed(u64, u64),
        /// MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED of 4 KiB pages over the range.
        AnonFixed(u64, u64),
        /// A shared hugetlb mapping, MAP_FIXED at the address.
        HugeFixed(u64, u64),
    }

    type Outcome = Result<u64, i32>;

    fn free_huge_pages() -> u64 {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|line| line.strip_prefix("HugePages_Free:"))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// The kernel's answer: in a forked child, maps each huge-page run of `layout` (in huge
    /// pages from `base`), makes the call, and sends back the result (an offset from `base`
    /// for an address, 0 for calls returning nothing) and the ranges of the mappings inside
    /// the scratch range.
    fn kernel(scratch: &child::Scratch, layout: &[(u64, u64)], call: Call) -> (Outcome, Vec<(u64, u64)>) {
        let base = scratch.base;
        // SAFETY: raw syscalls on the scratch range this process reserved.
        let (ret, maps) = child::in_child(|| unsafe { calls(scratch, layout, call) });
        let outcome = match ret {
            ..0 => Err(-ret as i32),
            0 => Ok(0),
            address => Ok(address as u64 - base),
        };
        (outcome, ranges_in(&maps, base))
    }

    /// The child's side of [`kernel`]: the layout and the call, as raw syscalls; returns the
    /// call's raw result.
    ///
    /// # Safety
    /// Only in a child just forked from the process that reserved `scratch`.
    unsafe fn calls(scratch: &child::Scratch, layout: &[(u64, u64)], call: Call) -> i64 {
        let base = scratch.base;
        use libc::{MAP_ANONYMOUS, MAP_FIXED, MAP_HUGETLB, MAP_PRIVATE, MAP_SHARED, syscall};
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let huge = MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB | MAP_FIXED;
        // SAFETY: (whole function) raw syscalls on our own scratch range.
        unsafe {
            scratch.clear();
            for &(start, end) in layout {
                syscall(
                    libc::SYS_mmap,
                    base + start * H,
                    (end - start) * H,
                    rw,
                    huge,
                    -1,
                    0,
                );
            }
            match call {
                Call::Munmap(at, len) => syscall(libc::SYS_munmap, base + at, len),
                Call::Mprotect(at, len) => syscall(libc::SYS_mprotect, base + at, len, libc::PROT_READ),
                Call::Mremap(old, old_len, new_len, fixed, new_addr) => {
                    let flags = if fixed {
                        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED
                    } else {
                        0
                    };
                    syscall(
                        libc::SYS_mremap,
                        base + old,
                        old_len,
                        new_len,
                        flags,
                        base + new_addr,
                    )
                }
                Call::DontNeed(at, len) => syscall(libc::SYS_madvise, base + at, len, libc::MADV_DONTNEED),
                Call::AnonFixed(at, len) => {
                    let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
                    syscall(libc::SYS_mmap, base + at, len, rw, flags, -1, 0)
                }
                Call::HugeFixed(at, len) => syscall(libc::SYS_mmap, base + at, len, rw, huge, -1, 0),
            }
        }
    }

    /// The mappings of `maps` (as /proc/self/maps prints them) inside the scratch range, as
    /// offsets from `base`.
    fn ranges_in(maps: &str, base: u64) -> Vec<(u64, u64)> {
        maps.lines()
            .filter_map(|line| {
                let (start, end) = line.split(' ').next()?.split_once('-')?;
                let (start, end) = (
                    u64::from_str_radix(start, 16).ok()?,
                    u64::from_str_radix(end, 16).ok()?,
                );
                (base <= start && end <= base + SPAN * H).then(|| (start - base, end - base))
            })
            .collect()
    }

    /// maplevm's answer: the same layout of hugetlb files (one per run, as each `MAP_HUGETLB`
    /// mapping gets its own) in an `Mm`, and the same call.
    fn maplevm(base: u64, layout: &[(u64, u64)], call: Call) -> (Outcome, Vec<(u64, u64)>) {
        let config = FramePoolConfig {
            chunk_frames: 64,
            max_frames: 1024,
        };
        let frames = Arc::new(FramePool::with_huge_pages(config, 2 * SPAN as usize).unwrap());
        let mm = Mm::new(MmConfig::default(), frames.clone()).unwrap();
        let rw = Prot::READ_WRITE;
        let huge_map = |at: u64, len: u64| {
            let file =
                File::hugetlb("/anon_hugepage", &frames, len.next_multiple_of(H), FileSync::Rcu).unwrap();
            mm.mmap(base + at, len, rw, MapFlags::SHARED.fixed(), Some((&file, 0)))
        };
        for &(start, end) in layout {
            huge_map(start * H, (end - start) * H).unwrap();
        }
        let result = match call {
            Call::Munmap(at, len) => mm.munmap(base + at, len).map(|()| base),
            Call::Mprotect(at, len) => mm.mprotect(base + at, len, Prot::READ).map(|()| base),
            Call::Mremap(old, old_len, new_len, fixed, new_addr) => {
                let flags = RemapFlags {
                    maymove: fixed,
                    fixed,
                };
                mm.mremap(base + old, old_len, new_len, flags, base + new_addr)
            }
            Call::DontNeed(at, len) => mm.madvise_dontneed(base + at, len).map(|()| base),
            Call::AnonFixed(at, len) => {
                mm.mmap(base + at, len, rw, MapFlags::PRIVATE_ANONYMOUS.fixed(), None)
            }
            Call::HugeFixed(at, len) => huge_map(at, len),
        };
        let outcome = result.map(|addr| addr - base).map_err(|e| e.errno.code());
        (outcome, ranges_in(&mm.maps(), base))
    }

    #[test]
    fn hugetlb_calls_answer_as_the_running_kernel_does() {
        if free_huge_pages() < NEEDED {
            eprintln!(
                "skipped: fewer than {NEEDED} free huge pages (set /proc/sys/vm/nr_hugepages to run it)"
            );
            return;
        }
        // A 2 MiB-aligned scratch range.
        let scratch = child::Scratch::reserve(SPAN * H / P, H);
        let base = scratch.base;
        let two = [(0, 2)];
        let cases: &[(&[(u64, u64)], Call)] = &[
            (&two, Call::Munmap(0, P)),
            (&two, Call::Munmap(P, H)),
            (&two, Call::Munmap(H, H)),
            (&two, Call::Mprotect(0, H + P)),
            (&two, Call::Mprotect(0, H)),
            (&two, Call::DontNeed(P, H)),
            (&two, Call::DontNeed(H, P)),
            (&two, Call::DontNeed(0, 2 * H)),
            (&two, Call::AnonFixed(H - P, 2 * P)),
            (&two, Call::AnonFixed(2 * H, P)),
            (&two, Call::HugeFixed(4 * H + P, H)),
            (&two, Call::HugeFixed(4 * H, P)),
            (&two, Call::Mremap(0, H, 2 * H, false, 0)),
            (&two, Call::Mremap(P, P, P, false, 0)),
            (&two, Call::Mremap(0, 2 * H, P, false, 0)),
            (&two, Call::Mremap(0, H, H, true, 4 * H + P)),
            (&two, Call::Mremap(0, P, P, true, 4 * H)),
            (&[(0, 1), (1, 2)], Call::Mprotect(0, 2 * H)),
        ];
        for &(layout, call) in cases {
            let expected = kernel(&scratch, layout, call);
            assert_eq!(maplevm(base, layout, call), expected, "{layout:?} {call:?}");
        }
    }
}
