//! Stack growth against the running kernel: in a forked child (raw syscalls) and in an `Mm` with
//! x86-64 bounds, the same mappings — one page near the bottom of a scratch range, a stack
//! (MAP_GROWSDOWN) of four pages high in it — then faults at pages below the stack, one after
//! the other, then two mmap hints below the stack. The kernel's answers: a fault below the stack
//! grows it down to the page, as far as `STACK_GUARD_GAP` above the mapping below, and fails
//! past that (EFAULT from `read(2)` into the page, which faults the way a CPU access does);
//! mmap places nothing in the guard gap below the stack. maplevm must give the same answers
//! and the same mappings. Read off Linux 6.18; elsewhere the test says why it skips.
#![cfg(not(feature = "shuttle"))]

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[path = "support/child.rs"]
mod child;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod oracle {
    use super::child;
    use fault::{Access, FramePool, FramePoolConfig, Mm, MmConfig};
    use std::sync::Arc;
    use vma::{MapFlags, PAGE_SIZE, Prot};

    const P: u64 = PAGE_SIZE;
    /// Pages in the scratch range: the guard gap (256 pages) and more.
    const PAGES: u64 = 1024;
    /// The mapping at the bottom: page 0.
    const BELOW: u64 = 0;
    /// The stack: pages 600 to 603.
    const STACK: (u64, u64) = (600, 604);
    /// Where the faults land, in order: just below the stack, further down, as far as the
    /// guard gap above page 0 allows, then inside the guard gap (fails).
    const FAULTS: [u64; 5] = [599, 500, 300, 257, 200];
    /// mmap hints of 4 pages after the faults: two inside the guard gap below the stack (now at
    /// page 257, its gap reaching down to page 1), one above the stack.
    const HINTS: [u64; 3] = [240, 8, 700];

    /// The kernel's answers, in a child: bit `i` set when fault `i` succeeded, bit 8 + `j` when
    /// hint `j` was taken as given.
    ///
    /// # Safety
    /// Only in a child just forked from the process that reserved `[base, base + PAGES * P)`.
    unsafe fn calls(base: u64) -> i64 {
        // SAFETY: (whole function) raw system calls on the child's own scratch range.
        unsafe {
            let rw = libc::PROT_READ | libc::PROT_WRITE;
            let private = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
            libc::munmap(base as *mut _, (PAGES * P) as usize);
            libc::mmap((base + BELOW * P) as *mut _, P as usize, rw, private, -1, 0);
            let stack = base + STACK.0 * P;
            let len = ((STACK.1 - STACK.0) * P) as usize;
            libc::mmap(stack as *mut _, len, rw, private | libc::MAP_GROWSDOWN, -1, 0);
            let zero = libc::open(c"/dev/zero".as_ptr(), libc::O_RDONLY);
            let mut answers = 0i64;
            for (i, page) in FAULTS.into_iter().enumerate() {
                if libc::read(zero, (base + page * P) as *mut _, 1) == 1 {
                    answers |= 1 << i;
                }
            }
            for (j, page) in HINTS.into_iter().enumerate() {
                let hint = base + page * P;
                let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
                let at = libc::mmap(hint as *mut _, 4 * P as usize, rw, flags, -1, 0);
                if at as u64 == hint {
                    answers |= 1 << (8 + j);
                }
            }
            answers
        }
    }

    /// The same in an `Mm`.
    fn model(base: u64) -> (i64, Mm) {
        let frames = Arc::new(FramePool::new(FramePoolConfig::default()).unwrap());
        let mm = Mm::new(MmConfig::default(), frames).unwrap();
        let rw = Prot::READ_WRITE;
        let fixed = MapFlags::PRIVATE_ANONYMOUS.fixed();
        mm.mmap(base + BELOW * P, P, rw, fixed, None).unwrap();
        let stack = MapFlags {
            growsdown: true,
            ..fixed
        };
        mm.mmap(base + STACK.0 * P, (STACK.1 - STACK.0) * P, rw, stack, None)
            .unwrap();
        let mut answers = 0i64;
        for (i, page) in FAULTS.into_iter().enumerate() {
            if mm.fault(base + page * P, Access::Write).is_ok() {
                answers |= 1 << i;
            }
        }
        for (j, page) in HINTS.into_iter().enumerate() {
            let hint = base + page * P;
            let at = mm
                .mmap(hint, 4 * P, rw, MapFlags::PRIVATE_ANONYMOUS, None)
                .unwrap();
            if at == hint {
                answers |= 1 << (8 + j);
            }
        }
        (answers, mm)
    }

    /// The mappings inside the scratch range, as `start-end perms` in pages from its base.
    fn inside(maps: &str, base: u64) -> Vec<String> {
        let end = base + PAGES * P;
        maps.lines()
            .filter_map(|line| {
                let (range, rest) = line.split_once(' ')?;
                let (from, to) = range.split_once('-')?;
                let (from, to) = (
                    u64::from_str_radix(from, 16).ok()?,
                    u64::from_str_radix(to, 16).ok()?,
                );
                (from >= base && to <= end)
                    .then(|| format!("{}-{} {}", (from - base) / P, (to - base) / P, &rest[..4]))
            })
            .collect()
    }

    pub fn run() {
        // The scratch range: reserved here, so that nothing else lands in it in the child.
        // SAFETY: a fresh PROT_NONE reservation, only ever unmapped in the forked child.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                (PAGES * P) as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base as u64;
        // SAFETY: the child was just forked from this process, which reserved the range.
        let (kernel, kernel_maps) = child::in_child(|| unsafe { calls(base) });
        let (ours, mm) = model(base);
        assert_eq!(
            ours, kernel,
            "fault and hint answers differ from the kernel's ({ours:#b} against {kernel:#b})"
        );
        // The answers read off Linux 6.18: four faults grow the stack, the one in the guard gap
        // fails; the hints in the guard gap are refused, the one above the stack taken.
        assert_eq!(kernel, 0b100_0000_1111, "the kernel answered {kernel:#b}");
        assert_eq!(inside(&mm.maps(), base), inside(&kernel_maps, base));
        // SAFETY: our own reservation.
        unsafe { libc::munmap(base as *mut _, (PAGES * P) as usize) };
    }
}

#[test]
fn stacks_grow_and_keep_their_guard_gap_as_the_kernel_does() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    oracle::run();
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    eprintln!("skipped: the oracle needs Linux on x86-64");
}
