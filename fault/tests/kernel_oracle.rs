//! maplevm against the running kernel. Each case lays out the same mappings in a scratch range
//! of a forked child process (raw syscalls) and in an `Mm` with x86-64 bounds, makes the same
//! call in both (munmap, mprotect, mremap, madvise, mincore, mmap), and requires the same result
//! (address or errno) and the same mappings in the scratch range afterwards. The child makes
//! only raw system calls and writes what it saw to a pipe, so a call the kernel takes in a way
//! that would wreck a process (an unmap reaching past the scratch range) wrecks only the child.
//! A second test grows a stack the same way (`against_linux::stack`). The expectations were read off
//! Linux 6.18; on other systems the tests say why they skip.
#![cfg(not(feature = "shuttle"))]

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod against_linux {
    use fault::{Access, File, FramePool, FramePoolConfig, Mm, MmConfig};
    use oracle::{child, prot_bits};
    use std::sync::Arc;
    use vma::{Layout, MapFlags, PAGE_SIZE, Prot, RemapFlags};

    const P: u64 = PAGE_SIZE;
    /// Pages in the scratch range.
    const PAGES: u64 = 64;
    /// The top of x86-64 user space (TASK_SIZE), Layout::X86_64's `high`.
    const TOP: u64 = Layout::X86_64.high;

    /// An address: a page of the scratch range, or an absolute one (beyond the space, say).
    #[derive(Debug, Clone, Copy)]
    enum At {
        Page(u64),
        Abs(u64),
    }

    impl At {
        fn addr(self, base: u64) -> u64 {
            match self {
                At::Page(page) => base + page * P,
                At::Abs(addr) => addr,
            }
        }
    }

    /// A call, lengths in bytes.
    #[derive(Debug, Clone, Copy)]
    enum Call {
        Munmap(At, u64),
        Mprotect(At, u64, Prot),
        Mremap {
            old: At,
            old_len: u64,
            new_len: u64,
            flags: RemapFlags,
            new_addr: At,
        },
        DontNeed(At, u64),
        /// MADV_DONTFORK, then (when the second range is not empty) MADV_DOFORK over it: the
        /// flag shows in the mappings as splits and merges.
        DontFork(At, u64, (At, u64)),
        /// msync(MS_SYNC).
        Msync(At, u64),
        /// Anonymous, not fixed: (length, shared, offset).
        MmapAnon(u64, bool, u64),
        /// mincore: the pages resident, as bits from the first page up.
        Mincore(At, u64),
        /// A fixed private anonymous mmap with MAP_POPULATE, then mincore over it.
        MmapPopulate(At, u64, Prot),
        /// MADV_WILLNEED.
        WillNeed(At, u64),
        /// MADV_REMOVE.
        Remove(At, u64),
        /// MADV_GUARD_INSTALL, then (when the second range is not empty) MADV_GUARD_REMOVE over
        /// it; then which of the first 8 pages take a write (as bits), the fault answering.
        Guard(At, u64, (At, u64)),
        /// mlock, then what comes after; then mincore over the locked range.
        Mlock(At, u64, After),
        /// MADV_FREE, then mincore over the range (no memory pressure: everything stays).
        Free(At, u64),
        /// A fixed anonymous mmap with the rest of Linux's flag bits as given (the mapping
        /// type, `MAP_NORESERVE`, `MAP_STACK`, `MAP_LOCKED`, ...): the flags that decide
        /// whether it merges, and the combinations that are errors.
        MmapFlags(At, u64, Prot, i32),
        /// A private anonymous mmap with MAP_32BIT, not fixed: the address divided by 1 GiB
        /// (Linux randomizes it inside `[1 GiB, 2 GiB)`), unmapped again.
        Mmap32(u64),
    }

    /// What a case does after mlock.
    #[derive(Debug, Clone, Copy)]
    enum After {
        Nothing,
        Munlock(At, u64),
        DontNeed(At, u64),
    }

    /// What a layout's run maps.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        /// Private anonymous memory, untouched.
        Anonymous,
        /// Private anonymous memory, each page written.
        Written,
        /// A shared mapping of the scratch file (a memfd on Linux), at the page's own offset.
        Shared,
        /// A private mapping of the scratch file.
        PrivateFile,
    }

    /// Result: the address returned (0 for calls returning nothing) or the errno.
    type Outcome = Result<u64, i32>;

    /// The pages of a layout: 'w' read-write, 'W' read-write and written, 'X' read-write-execute
    /// and written, 'r' read-only
    /// (private anonymous), 'n' PROT_NONE; 's' shared and 'p' private read-write mappings of the
    /// scratch file;
    /// '.' a hole. Runs of one letter are one VMA.
    fn runs(layout: &str) -> Vec<(u64, u64, Prot, Kind)> {
        let mut runs: Vec<(u64, u64, Prot, Kind)> = Vec::new();
        for (page, c) in layout.bytes().enumerate() {
            let (prot, kind) = match c {
                b'w' => (Prot::READ_WRITE, Kind::Anonymous),
                b'W' => (Prot::READ_WRITE, Kind::Written),
                b'X' => (Prot::new(true, true, true), Kind::Written),
                b'r' => (Prot::READ, Kind::Anonymous),
                b's' => (Prot::READ_WRITE, Kind::Shared),
                b'p' => (Prot::READ_WRITE, Kind::PrivateFile),
                b'n' => (Prot::NONE, Kind::Anonymous),
                _ => continue,
            };
            match runs.last_mut() {
                Some((_, end, p, k)) if *end == page as u64 && *p == prot && *k == kind => *end += 1,
                _ => runs.push((page as u64, page as u64 + 1, prot, kind)),
            }
        }
        runs
    }

    /// The kernel's answer: in a forked child, lays out `layout` at `base`, makes the call and
    /// sends back the result and /proc/self/maps.
    fn kernel(scratch: &child::Scratch, layout: &str, call: Call) -> (Outcome, String) {
        let runs = runs(layout);
        // SAFETY: raw syscalls on the scratch range this process reserved.
        let (ret, maps) = child::in_child(|| unsafe { calls(scratch, &runs, call) });
        let outcome = if ret < 0 { Err(-ret as i32) } else { Ok(ret as u64) };
        (outcome, maps)
    }

    /// The child's side of [`kernel`]: the layout and the call, as raw syscalls; returns the
    /// call's raw result.
    ///
    /// # Safety
    /// Only in a child just forked from the process that reserved `scratch`.
    unsafe fn calls(scratch: &child::Scratch, runs: &[(u64, u64, Prot, Kind)], call: Call) -> i64 {
        let base = scratch.base;
        use libc::{MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, syscall};
        // SAFETY: (whole function) raw syscalls on our own scratch range and descriptors, and
        // writes to pages just mapped writable.
        unsafe {
            scratch.clear();
            let file = syscall(libc::SYS_memfd_create, c"scratch".as_ptr(), 0);
            syscall(libc::SYS_ftruncate, file, PAGES * P);
            for &(start, end, prot, kind) in runs {
                let (flags, fd, offset) = match kind {
                    Kind::Anonymous | Kind::Written => (MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                    Kind::Shared => (MAP_SHARED, file, start * P),
                    Kind::PrivateFile => (MAP_PRIVATE, file, start * P),
                };
                let at = base + start * P;
                let len = (end - start) * P;
                syscall(
                    libc::SYS_mmap,
                    at,
                    len,
                    prot_bits(prot),
                    flags | MAP_FIXED,
                    fd,
                    offset,
                );
                if kind == Kind::Written {
                    for page in start..end {
                        ((base + page * P) as *mut u8).write_volatile(1);
                    }
                }
            }
            let resident = |at: u64, len: u64| {
                let mut vec = [0u8; PAGES as usize];
                let ret = syscall(libc::SYS_mincore, at, len, vec.as_mut_ptr());
                if ret != 0 {
                    return ret;
                }
                let pages = len.div_ceil(P).min(PAGES) as usize;
                (0..pages).filter(|&i| vec[i] & 1 != 0).map(|i| 1i64 << i).sum()
            };
            match call {
                Call::Munmap(at, len) => syscall(libc::SYS_munmap, at.addr(base), len),
                Call::Mprotect(at, len, prot) => {
                    syscall(libc::SYS_mprotect, at.addr(base), len, prot_bits(prot))
                }
                Call::Mremap {
                    old,
                    old_len,
                    new_len,
                    flags,
                    new_addr,
                } => {
                    let mut bits = 0;
                    if flags.maymove {
                        bits |= libc::MREMAP_MAYMOVE;
                    }
                    if flags.fixed {
                        bits |= libc::MREMAP_FIXED;
                    }
                    syscall(
                        libc::SYS_mremap,
                        old.addr(base),
                        old_len,
                        new_len,
                        bits,
                        new_addr.addr(base),
                    )
                }
                Call::DontNeed(at, len) => {
                    syscall(libc::SYS_madvise, at.addr(base), len, libc::MADV_DONTNEED)
                }
                Call::DontFork(at, len, (back, back_len)) => {
                    let first = syscall(libc::SYS_madvise, at.addr(base), len, libc::MADV_DONTFORK);
                    if back_len == 0 {
                        first
                    } else {
                        syscall(libc::SYS_madvise, back.addr(base), back_len, libc::MADV_DOFORK)
                    }
                }
                Call::Msync(at, len) => syscall(libc::SYS_msync, at.addr(base), len, libc::MS_SYNC),
                Call::MmapAnon(len, shared, offset) => {
                    let sharing = if shared { MAP_SHARED } else { MAP_PRIVATE };
                    let prot = libc::PROT_READ | libc::PROT_WRITE;
                    syscall(libc::SYS_mmap, 0, len, prot, sharing | MAP_ANONYMOUS, -1, offset)
                }
                Call::Mincore(at, len) => resident(at.addr(base), len),
                Call::MmapPopulate(at, len, prot) => {
                    let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | libc::MAP_POPULATE;
                    let placed = syscall(libc::SYS_mmap, at.addr(base), len, prot_bits(prot), flags, -1, 0);
                    if placed == -1 {
                        return -1;
                    }
                    resident(at.addr(base), len)
                }
                Call::WillNeed(at, len) => {
                    syscall(libc::SYS_madvise, at.addr(base), len, libc::MADV_WILLNEED)
                }
                Call::Remove(at, len) => syscall(libc::SYS_madvise, at.addr(base), len, libc::MADV_REMOVE),
                Call::Guard(at, len, (back, back_len)) => {
                    const MADV_GUARD_INSTALL: i64 = 102;
                    const MADV_GUARD_REMOVE: i64 = 103;
                    if syscall(libc::SYS_madvise, at.addr(base), len, MADV_GUARD_INSTALL) != 0 {
                        return -1;
                    }
                    if back_len != 0
                        && syscall(libc::SYS_madvise, back.addr(base), back_len, MADV_GUARD_REMOVE) != 0
                    {
                        return -1;
                    }
                    // read(2) from /dev/zero into a page faults it for writing, as a store
                    // would, and answers EFAULT where the store would be a SIGSEGV.
                    let zero = libc::open(c"/dev/zero".as_ptr(), libc::O_RDONLY);
                    (0..8)
                        .filter(|&page| libc::read(zero, (base + page * P) as *mut _, 1) == 1)
                        .map(|page| 1i64 << page)
                        .sum()
                }
                Call::MmapFlags(at, len, prot, bits) => {
                    let flags = MAP_ANONYMOUS | MAP_FIXED | bits;
                    syscall(libc::SYS_mmap, at.addr(base), len, prot_bits(prot), flags, -1, 0)
                }
                Call::Mmap32(len) => {
                    let flags = MAP_PRIVATE | MAP_ANONYMOUS | libc::MAP_32BIT;
                    let at = syscall(libc::SYS_mmap, 0, len, prot_bits(Prot::READ_WRITE), flags, -1, 0);
                    if at == -1 {
                        return -1;
                    }
                    syscall(libc::SYS_munmap, at, len);
                    at >> 30
                }
                Call::Free(at, len) => {
                    if syscall(libc::SYS_madvise, at.addr(base), len, libc::MADV_FREE) != 0 {
                        return -1;
                    }
                    resident(at.addr(base), len)
                }
                Call::Mlock(at, len, after) => {
                    if syscall(libc::SYS_mlock, at.addr(base), len) != 0 {
                        return -1;
                    }
                    let after = match after {
                        After::Nothing => 0,
                        After::Munlock(a, l) => syscall(libc::SYS_munlock, a.addr(base), l),
                        After::DontNeed(a, l) => {
                            syscall(libc::SYS_madvise, a.addr(base), l, libc::MADV_DONTNEED)
                        }
                    };
                    if after != 0 {
                        return -1;
                    }
                    resident(at.addr(base), len)
                }
            }
        }
    }

    /// maplevm's answer for the same layout and call.
    fn maplevm(base: u64, layout: &str, call: Call) -> (Outcome, String) {
        let frames = Arc::new(FramePool::new(FramePoolConfig::default()).unwrap());
        let mm = Mm::new(MmConfig::default(), frames.clone()).unwrap();
        let file = File::zeroed("/memfd:scratch", &frames, PAGES * P).unwrap();
        for (start, end, prot, kind) in runs(layout) {
            let (at, len) = (base + start * P, (end - start) * P);
            let (flags, object) = match kind {
                Kind::Anonymous | Kind::Written => (MapFlags::PRIVATE_ANONYMOUS, None),
                Kind::Shared => (MapFlags::SHARED, Some((&file, start * P))),
                Kind::PrivateFile => (MapFlags::PRIVATE, Some((&file, start * P))),
            };
            mm.mmap(at, len, prot, flags.fixed(), object).unwrap();
            if kind == Kind::Written {
                for page in start..end {
                    mm.write(base + page * P, &[1]).unwrap();
                }
            }
        }
        let resident = |at: u64, len: u64| {
            mm.mincore(at, len).map(|pages| {
                pages
                    .iter()
                    .enumerate()
                    .filter(|&(_, &resident)| resident)
                    .map(|(i, _)| 1u64 << i)
                    .sum()
            })
        };
        let anonymous_file = File::new("/ignored", &frames, &[]);
        let result = match call {
            Call::Munmap(at, len) => mm.munmap(at.addr(base), len).map(|()| 0),
            Call::Mprotect(at, len, prot) => mm.mprotect(at.addr(base), len, prot).map(|()| 0),
            Call::Mremap {
                old,
                old_len,
                new_len,
                flags,
                new_addr,
            } => mm.mremap(old.addr(base), old_len, new_len, flags, new_addr.addr(base)),
            Call::DontNeed(at, len) => mm.madvise_dontneed(at.addr(base), len).map(|()| 0),
            Call::DontFork(at, len, (back, back_len)) => {
                let first = mm.madvise_dontfork(at.addr(base), len).map(|()| 0);
                if back_len == 0 {
                    first
                } else {
                    mm.madvise_dofork(back.addr(base), back_len).map(|()| 0)
                }
            }
            Call::Msync(at, len) => mm.msync(at.addr(base), len).map(|()| 0),
            Call::Mincore(at, len) => resident(at.addr(base), len),
            Call::MmapPopulate(at, len, prot) => {
                let flags = MapFlags {
                    populate: true,
                    ..MapFlags::PRIVATE_ANONYMOUS.fixed()
                };
                mm.mmap(at.addr(base), len, prot, flags, None)
                    .and_then(|start| resident(start, len))
            }
            Call::WillNeed(at, len) => mm.madvise_willneed(at.addr(base), len).map(|()| 0),
            Call::Remove(at, len) => mm.madvise_remove(at.addr(base), len).map(|()| 0),
            Call::MmapFlags(at, len, prot, bits) => {
                let has = |bit: i32| bits & bit != 0;
                let flags = MapFlags {
                    shared: has(libc::MAP_SHARED),
                    private: has(libc::MAP_PRIVATE),
                    droppable: has(libc::MAP_DROPPABLE),
                    growsdown: has(libc::MAP_GROWSDOWN),
                    noreserve: has(libc::MAP_NORESERVE),
                    stack: has(libc::MAP_STACK),
                    locked: has(libc::MAP_LOCKED),
                    hugetlb: has(libc::MAP_HUGETLB),
                    huge_page_shift: (bits >> 26) as u32 & 0x3f,
                    sync: has(libc::MAP_SYNC),
                    ..MapFlags::PRIVATE_ANONYMOUS.fixed()
                };
                mm.mmap(at.addr(base), len, prot, flags, None)
            }
            Call::Mmap32(len) => {
                let flags = MapFlags {
                    low_32bit: true,
                    ..MapFlags::PRIVATE_ANONYMOUS
                };
                mm.mmap(0, len, Prot::READ_WRITE, flags, None).map(|at| {
                    mm.munmap(at, len).unwrap();
                    at >> 30
                })
            }
            Call::Free(at, len) => mm
                .madvise_free(at.addr(base), len)
                .and_then(|()| resident(at.addr(base), len)),
            Call::Mlock(at, len, after) => mm
                .mlock(at.addr(base), len)
                .and_then(|()| match after {
                    After::Nothing => Ok(()),
                    After::Munlock(a, l) => mm.munlock(a.addr(base), l),
                    After::DontNeed(a, l) => mm.madvise_dontneed(a.addr(base), l),
                })
                .and_then(|()| resident(at.addr(base), len)),
            Call::Guard(at, len, (back, back_len)) => mm
                .madvise_guard_install(at.addr(base), len)
                .and_then(|()| {
                    if back_len == 0 {
                        return Ok(());
                    }
                    mm.madvise_guard_remove(back.addr(base), back_len)
                })
                .map(|()| {
                    (0..8)
                        .filter(|&page| mm.fault(base + page * P, Access::Write).is_ok())
                        .map(|page| 1u64 << page)
                        .sum()
                }),
            Call::MmapAnon(len, shared, offset) => {
                let flags = MapFlags {
                    shared,
                    private: !shared,
                    ..MapFlags::PRIVATE_ANONYMOUS
                };
                mm.mmap(0, len, Prot::READ_WRITE, flags, Some((&anonymous_file, offset)))
            }
        };
        (result.map_err(|e| e.errno.code()), mm.space().maps())
    }

    pub fn run() {
        let none = RemapFlags::default();
        let maymove = RemapFlags {
            maymove: true,
            fixed: false,
        };
        let fixed = RemapFlags {
            maymove: true,
            fixed: true,
        };
        let remap = |old_len: u64, new_len: u64, flags: RemapFlags, target: u64| Call::Mremap {
            old: At::Page(0),
            old_len,
            new_len,
            flags,
            new_addr: At::Page(target),
        };
        let flags_call =
            |prot: Prot, extra: i32| Call::MmapFlags(At::Page(1), P, prot, libc::MAP_PRIVATE | extra);
        let typed_call = |bits: i32| Call::MmapFlags(At::Page(1), P, Prot::READ_WRITE, bits);
        let cases: Vec<(&str, &str, Call)> = vec![
            // msync's argument checks and holes.
            ("msync of mapped pages", "ww", Call::Msync(At::Page(0), 2 * P)),
            ("msync over a hole", "w.w", Call::Msync(At::Page(0), 3 * P)),
            ("msync unaligned", "w", Call::Msync(At::Abs(1), P)),
            ("msync of zero bytes", "w", Call::Msync(At::Page(0), 0)),
            (
                "msync length rounding to zero",
                "w",
                Call::Msync(At::Page(0), u64::MAX),
            ),
            (
                "msync wrapping around",
                "w",
                Call::Msync(At::Abs(!(P - 1)), 2 * P),
            ),
            // mremap over several VMAs and holes: shrinking unmaps the tail whatever it holds;
            // growing needs one VMA; a fixed move needs its kept part in one VMA unless it keeps
            // the size.
            ("shrink over two VMAs", "wr", remap(2 * P, P, none, 0)),
            ("shrink over a hole", "w.w", remap(3 * P, P, none, 0)),
            ("shrink keeping a hole", "w.w", remap(3 * P, 2 * P, none, 0)),
            ("shrink from a hole", ".ww", remap(3 * P, P, none, 0)),
            ("same size over two VMAs", "wr", remap(2 * P, 2 * P, none, 0)),
            ("same size over a hole", "w.", remap(2 * P, 2 * P, maymove, 0)),
            ("grow over two VMAs", "wr", remap(2 * P, 3 * P, maymove, 0)),
            ("shrink and move over two VMAs", "wr", remap(2 * P, P, fixed, 16)),
            ("shrink and move over a hole", "w.w", remap(3 * P, P, fixed, 16)),
            (
                "shrink and move keeping a hole",
                "w.w",
                remap(3 * P, 2 * P, fixed, 16),
            ),
            ("move two VMAs", "wr", remap(2 * P, 2 * P, fixed, 16)),
            ("move across a hole", "w.w", remap(3 * P, 3 * P, fixed, 16)),
            ("move from a hole", ".ww", remap(3 * P, 3 * P, fixed, 16)),
            ("move ending in holes", "w..", remap(3 * P, 3 * P, fixed, 16)),
            (
                "grow and move over two VMAs",
                "wr",
                remap(2 * P, 3 * P, fixed, 16),
            ),
            (
                "a failed move touches nothing",
                "w.w.......ww",
                remap(3 * P, 2 * P, fixed, 10),
            ),
            // mremap errnos.
            ("old length overflows", "ww", remap(u64::MAX - 100, P, none, 0)),
            ("new length overflows", "ww", remap(P, u64::MAX - 100, maymove, 0)),
            ("new length beyond the space", "ww", remap(P, TOP + 1, maymove, 0)),
            ("old range beyond the space", "w", remap(TOP, P, none, 0)),
            ("old length zero, private", "w", remap(0, P, maymove, 0)),
            ("old address unmapped", ".w", remap(P, P, none, 0)),
            ("fixed target overlapping", "ww", remap(2 * P, 2 * P, fixed, 1)),
            (
                "fixed target beyond the space",
                "w",
                Call::Mremap {
                    old: At::Page(0),
                    old_len: P,
                    new_len: P,
                    flags: fixed,
                    new_addr: At::Abs(!(P - 1)),
                },
            ),
            (
                "old range at the top, unmapped",
                "",
                Call::Mremap {
                    old: At::Abs(TOP - P),
                    old_len: 2 * P,
                    new_len: P,
                    flags: none,
                    new_addr: At::Page(0),
                },
            ),
            // munmap.
            ("munmap over a hole", "w.w", Call::Munmap(At::Page(0), 3 * P)),
            ("munmap length u64::MAX", "w", Call::Munmap(At::Page(0), u64::MAX)),
            (
                "munmap length within a page of the top",
                "w",
                Call::Munmap(At::Page(0), u64::MAX - P + 2),
            ),
            ("munmap length zero", "w", Call::Munmap(At::Page(0), 0)),
            ("munmap unaligned", "w", Call::Munmap(At::Abs(0x10001), P)),
            ("munmap at the top", "", Call::Munmap(At::Abs(TOP), P)),
            // mprotect.
            (
                "mprotect over a hole",
                "w.w",
                Call::Mprotect(At::Page(0), 3 * P, Prot::READ),
            ),
            (
                "mprotect from a hole",
                ".w",
                Call::Mprotect(At::Page(0), 2 * P, Prot::READ),
            ),
            (
                "mprotect length overflows",
                "w",
                Call::Mprotect(At::Page(0), u64::MAX - 100, Prot::READ),
            ),
            (
                "mprotect beyond the space",
                "",
                Call::Mprotect(At::Abs(TOP), P, Prot::READ),
            ),
            // MADV_DONTNEED.
            ("dontneed over a hole", "w.w", Call::DontNeed(At::Page(0), 3 * P)),
            ("dontneed from a hole", ".w", Call::DontNeed(At::Page(0), 2 * P)),
            ("dontneed mapped", "ww", Call::DontNeed(At::Page(0), 2 * P)),
            (
                "dontneed beyond the space",
                "",
                Call::DontNeed(At::Abs(1 << 47), P),
            ),
            (
                "dontneed far beyond the space",
                "",
                Call::DontNeed(At::Abs(1 << 60), P),
            ),
            (
                "dontneed length overflows",
                "w",
                Call::DontNeed(At::Page(0), u64::MAX - 100),
            ),
            (
                "dontneed wraps",
                "",
                Call::DontNeed(At::Abs(1 << 60), u64::MAX - (1 << 59)),
            ),
            ("dontneed unaligned", "", Call::DontNeed(At::Abs(0x10001), P)),
            // MADV_DONTFORK and MADV_DOFORK: splits, merges back, holes.
            (
                "dontfork over a hole",
                "w.ww",
                Call::DontFork(At::Page(0), 3 * P, (At::Page(0), 0)),
            ),
            (
                "dontfork, then dofork in the middle",
                "wwww",
                Call::DontFork(At::Page(0), 4 * P, (At::Page(1), 2 * P)),
            ),
            (
                "dontfork, then dofork all: merged back",
                "www",
                Call::DontFork(At::Page(1), P, (At::Page(0), 3 * P)),
            ),
            (
                "dofork over a hole only",
                "w.w",
                Call::DontFork(At::Page(1), 0, (At::Page(1), P)),
            ),
            (
                "dontfork unaligned",
                "w",
                Call::DontFork(At::Abs(0x10001), P, (At::Page(0), 0)),
            ),
            (
                "dontfork of nothing",
                "w",
                Call::DontFork(At::Page(0), 0, (At::Page(0), 0)),
            ),
            // mincore: what is resident, holes, arguments.
            ("mincore", "Ww.r", Call::Mincore(At::Page(0), 2 * P)),
            (
                "mincore of a file never read",
                "ss",
                Call::Mincore(At::Page(0), 2 * P),
            ),
            ("mincore over a hole", "W.W", Call::Mincore(At::Page(0), 3 * P)),
            ("mincore unaligned", "W", Call::Mincore(At::Abs(1), P)),
            ("mincore of nothing", "W", Call::Mincore(At::Page(0), 0)),
            ("mincore beyond the space", "", Call::Mincore(At::Abs(1 << 47), P)),
            // MAP_POPULATE: read-write and read-only pages come in, PROT_NONE ones do not.
            (
                "populate read-write",
                "",
                Call::MmapPopulate(At::Page(0), 3 * P, Prot::READ_WRITE),
            ),
            (
                "populate read-only",
                "",
                Call::MmapPopulate(At::Page(0), 3 * P, Prot::READ),
            ),
            (
                "populate PROT_NONE",
                "",
                Call::MmapPopulate(At::Page(0), 3 * P, Prot::NONE),
            ),
            // MADV_WILLNEED.
            ("willneed anonymous", "ww", Call::WillNeed(At::Page(0), 2 * P)),
            (
                "willneed of a shared file",
                "ss",
                Call::WillNeed(At::Page(0), 2 * P),
            ),
            ("willneed over a hole", "w.w", Call::WillNeed(At::Page(0), 3 * P)),
            ("willneed unaligned", "w", Call::WillNeed(At::Abs(1), P)),
            // MADV_REMOVE: shared mappings only, the walk stopping at the first refusal.
            ("remove shared", "ss", Call::Remove(At::Page(0), 2 * P)),
            ("remove anonymous", "ww", Call::Remove(At::Page(0), P)),
            (
                "remove a private file mapping",
                "pp",
                Call::Remove(At::Page(0), P),
            ),
            (
                "remove shared, then anonymous",
                "sw",
                Call::Remove(At::Page(0), 2 * P),
            ),
            ("remove over a hole", "s.s", Call::Remove(At::Page(0), 3 * P)),
            ("remove unaligned", "s", Call::Remove(At::Abs(1), P)),
            // Guard regions: no split, guards where installed, holes where removed.
            (
                "guard a page",
                "WWWW",
                Call::Guard(At::Page(1), P, (At::Page(0), 0)),
            ),
            (
                "guard, then remove one",
                "WWW",
                Call::Guard(At::Page(0), 3 * P, (At::Page(1), P)),
            ),
            (
                "guard a shared file",
                "ss",
                Call::Guard(At::Page(0), P, (At::Page(0), 0)),
            ),
            (
                "guard over a hole",
                "W.WW",
                Call::Guard(At::Page(0), 4 * P, (At::Page(0), 0)),
            ),
            (
                "guard unaligned",
                "W",
                Call::Guard(At::Abs(1), P, (At::Page(0), 0)),
            ),
            (
                "guard nothing",
                "W",
                Call::Guard(At::Page(0), 0, (At::Page(0), 0)),
            ),
            // mlock and munlock: splits and merges, population, holes, what locked memory refuses.
            ("mlock", "wwww", Call::Mlock(At::Page(1), 2 * P, After::Nothing)),
            (
                "mlock over a hole",
                "ww.w",
                Call::Mlock(At::Page(1), 3 * P, After::Nothing),
            ),
            (
                "mlock, munlock all: merged back",
                "www",
                Call::Mlock(At::Page(1), P, After::Munlock(At::Page(0), 3 * P)),
            ),
            (
                "munlock over a hole",
                "w.w",
                Call::Mlock(At::Page(0), P, After::Munlock(At::Page(0), 3 * P)),
            ),
            (
                "mlock PROT_NONE",
                "nn",
                Call::Mlock(At::Page(0), 2 * P, After::Nothing),
            ),
            (
                "mlock beyond the space",
                "",
                Call::Mlock(At::Abs(1 << 47), P, After::Nothing),
            ),
            (
                "mlock of nothing",
                "w",
                Call::Mlock(At::Page(0), 0, After::Nothing),
            ),
            (
                "dontneed of locked memory",
                "ww",
                Call::Mlock(At::Page(0), P, After::DontNeed(At::Page(0), 2 * P)),
            ),
            (
                "mlock of a shared file",
                "ss",
                Call::Mlock(At::Page(0), 2 * P, After::Nothing),
            ),
            // The flags that keep a new mapping apart from its neighbour (a plain one merges).
            ("next to, plain", "w", flags_call(Prot::READ_WRITE, 0)),
            (
                "next to, MAP_NORESERVE",
                "w",
                flags_call(Prot::READ_WRITE, libc::MAP_NORESERVE),
            ),
            (
                "read-only, MAP_NORESERVE",
                "r",
                flags_call(Prot::READ, libc::MAP_NORESERVE),
            ),
            (
                "next to, MAP_STACK",
                "w",
                flags_call(Prot::READ_WRITE, libc::MAP_STACK),
            ),
            (
                "next to, MAP_LOCKED",
                "w",
                flags_call(Prot::READ_WRITE, libc::MAP_LOCKED),
            ),
            // anon_vma: VMAs written apart from each other do not merge; a VMA never written
            // merges with either; a VMA first written next to a written one that differs only
            // in permissions shares its anon_vma (and merges once the permissions agree).
            (
                "a new mapping between two written ones",
                "W.W",
                flags_call(Prot::READ_WRITE, 0),
            ),
            (
                "a new mapping between written and untouched",
                "W.w",
                flags_call(Prot::READ_WRITE, 0),
            ),
            (
                "mprotect between two written ones",
                "WnW",
                Call::Mprotect(At::Page(1), P, Prot::READ_WRITE),
            ),
            (
                "mprotect between written and untouched",
                "Wnw",
                Call::Mprotect(At::Page(1), P, Prot::READ_WRITE),
            ),
            (
                "written next to written, then alike",
                "WX",
                Call::Mprotect(At::Page(1), P, Prot::READ_WRITE),
            ),
            (
                "untouched made read-only loses VM_ACCOUNT",
                "rw",
                Call::Mprotect(At::Page(1), P, Prot::READ),
            ),
            (
                "written made read-only keeps VM_ACCOUNT",
                "rW",
                Call::Mprotect(At::Page(1), P, Prot::READ),
            ),
            (
                "a private file made read-only keeps VM_ACCOUNT",
                "pr",
                Call::Mprotect(At::Page(0), P, Prot::READ),
            ),
            // The mapping types and flags that are errors or keep a mapping apart.
            (
                "MAP_DROPPABLE next to plain",
                "w",
                typed_call(libc::MAP_DROPPABLE),
            ),
            (
                "MAP_DROPPABLE next to MAP_DROPPABLE",
                "",
                Call::MmapFlags(At::Page(0), 2 * P, Prot::READ_WRITE, libc::MAP_DROPPABLE),
            ),
            (
                "MAP_DROPPABLE with MAP_PRIVATE",
                "",
                typed_call(libc::MAP_DROPPABLE | libc::MAP_PRIVATE),
            ),
            (
                "MAP_DROPPABLE locked",
                "",
                typed_call(libc::MAP_DROPPABLE | libc::MAP_LOCKED),
            ),
            (
                "MAP_DROPPABLE growing down",
                "",
                typed_call(libc::MAP_DROPPABLE | libc::MAP_GROWSDOWN),
            ),
            (
                "MAP_SHARED_VALIDATE anonymous",
                "",
                typed_call(libc::MAP_SHARED_VALIDATE),
            ),
            (
                "MAP_SYNC with MAP_PRIVATE is ignored",
                "w",
                typed_call(libc::MAP_PRIVATE | libc::MAP_SYNC),
            ),
            (
                "MAP_HUGETLB of a size x86-64 lacks",
                "",
                typed_call(libc::MAP_PRIVATE | libc::MAP_HUGETLB | (16 << 26)),
            ),
            ("MAP_32BIT below 2 GiB", "", Call::Mmap32(4 * P)),
            // MADV_FREE: private anonymous memory only; without memory pressure nothing goes.
            ("free written pages", "WW", Call::Free(At::Page(0), 2 * P)),
            ("free untouched read-only", "r", Call::Free(At::Page(0), P)),
            ("free a shared file", "ss", Call::Free(At::Page(0), P)),
            ("free a private file", "pp", Call::Free(At::Page(0), P)),
            ("free, then a private file", "Wp", Call::Free(At::Page(0), 2 * P)),
            ("free over a hole", "W.W", Call::Free(At::Page(0), 3 * P)),
            ("free unaligned", "W", Call::Free(At::Abs(1), P)),
            // mmap of anonymous memory.
            ("shared anonymous, 64 TiB", "", Call::MmapAnon(1 << 46, true, 0)),
            (
                "shared anonymous, beyond the space",
                "",
                Call::MmapAnon(1 << 47, true, 0),
            ),
            (
                "shared anonymous, length overflows",
                "",
                Call::MmapAnon(u64::MAX - 100, true, 0),
            ),
            (
                "private anonymous, length overflows",
                "",
                Call::MmapAnon(u64::MAX - 100, false, 0),
            ),
            ("shared anonymous, zero length", "", Call::MmapAnon(0, true, 0)),
            ("anonymous, unaligned offset", "", Call::MmapAnon(P, false, 100)),
            (
                "shared anonymous, unaligned offset",
                "",
                Call::MmapAnon(P, true, 100),
            ),
        ];
        // The scratch range: each child replaces it with its layout.
        let scratch = child::Scratch::reserve(PAGES, PAGES * P);
        let base = scratch.base;
        let mut differences = Vec::new();
        for (name, layout, call) in cases {
            let (kernel_outcome, kernel_maps) = kernel(&scratch, layout, call);
            let (ours, our_maps) = maplevm(base, layout, call);
            let (kernel_maps, our_maps) = (
                child::lines_in(&kernel_maps, base, PAGES),
                child::lines_in(&our_maps, base, PAGES),
            );
            // A successful non-fixed mmap lands wherever each chooses: compare that it succeeded.
            let same_outcome = match (kernel_outcome, ours) {
                (Ok(_), Ok(_)) if matches!(call, Call::MmapAnon(..)) => true,
                (kernel, ours) => kernel == ours,
            };
            if !same_outcome || kernel_maps != our_maps {
                differences.push(format!(
                    "{name} ({layout:?}, {call:?}):\n  Linux:   {kernel_outcome:?} {kernel_maps:?}\n  maplevm: {ours:?} {our_maps:?}"
                ));
            }
        }
        assert!(
            differences.is_empty(),
            "maplevm differs from Linux:\n{}",
            differences.join("\n")
        );
    }

    /// Stack growth: in a forked child and in an `Mm` with x86-64 bounds, the same mappings —
    /// one page near the bottom of a scratch range, a stack (MAP_GROWSDOWN) of four pages high
    /// in it — then faults at pages below the stack, one after the other, then mmap hints below
    /// it. The kernel's answers: a fault below the stack grows it down to the page, as far as
    /// `STACK_GUARD_GAP` above the mapping below, and fails past that (EFAULT from `read(2)`
    /// into the page, which faults the way a CPU access does); mmap places nothing in the guard
    /// gap below the stack. maplevm must give the same answers and the same mappings.
    pub mod stack {
        use fault::{Access, FramePool, FramePoolConfig, Mm, MmConfig};
        use oracle::child;
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
        /// hint `j` was taken as given (a mapping placed elsewhere is unmapped again: where it
        /// lands depends on the rest of the address space).
        ///
        /// # Safety
        /// Only in a child just forked from the process that reserved `scratch`.
        unsafe fn calls(scratch: &child::Scratch) -> i64 {
            let base = scratch.base;
            // SAFETY: (whole function) raw system calls on the child's own scratch range.
            unsafe {
                let rw = libc::PROT_READ | libc::PROT_WRITE;
                let private = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
                scratch.clear();
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
                    } else {
                        libc::munmap(at, 4 * P as usize);
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
                } else {
                    mm.munmap(at, 4 * P).unwrap();
                }
            }
            (answers, mm)
        }

        pub fn run() {
            let scratch = child::Scratch::reserve(PAGES, P);
            let base = scratch.base;
            // SAFETY: the child was just forked from this process, which reserved the range.
            let (kernel, kernel_maps) = child::in_child(|| unsafe { calls(&scratch) });
            let (ours, mm) = model(base);
            assert_eq!(
                ours, kernel,
                "fault and hint answers differ from the kernel's ({ours:#b} against {kernel:#b})"
            );
            // The answers read off Linux 6.18: four faults grow the stack, the one in the guard gap
            // fails; the hints in the guard gap are refused, the one above the stack taken.
            assert_eq!(kernel, 0b100_0000_1111, "the kernel answered {kernel:#b}");
            assert_eq!(
                child::lines_in(&mm.maps(), base, PAGES),
                child::lines_in(&kernel_maps, base, PAGES)
            );
        }
    }
}

#[test]
fn calls_answer_as_the_running_kernel_does() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    against_linux::run();
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    eprintln!("skipped: the kernel oracle needs Linux on x86-64");
}

/// Stack growth against the running kernel: in a forked child (raw syscalls) and in an `Mm`,
/// one page near the bottom of a scratch range and a stack (MAP_GROWSDOWN) high in it, faults
/// below the stack one after the other, then mmap hints below it. The kernel's answers: a fault
/// grows the stack down to its page, as far as `STACK_GUARD_GAP` above the mapping below, and
/// fails past that; mmap places nothing in the guard gap below the stack.
#[test]
fn stacks_grow_and_keep_their_guard_gap_as_the_kernel_does() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    against_linux::stack::run();
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    eprintln!("skipped: the oracle needs Linux on x86-64");
}
