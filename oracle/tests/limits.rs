//! The limits (`vma::Limits`) against the running kernel: the same calls, with the same room
//! left under `RLIMIT_AS` and `RLIMIT_DATA`, or under `vm.max_map_count`, made in a forked
//! child (raw system calls; the child sets its rlimits to what it uses plus the room) and on
//! an `AddressSpace`; which calls succeed, and the mappings left in the scratch range, must be
//! the same.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod against_linux {
    use oracle::child::{Scratch, in_child, lines_in};
    use oracle::prot_bits;
    use vma::{AddressSpace, Layout, Limits, MapFlags, NoFlush, PAGE_SIZE, Prot, RemapFlags};

    const P: u64 = PAGE_SIZE;

    /// A call, in pages from the scratch range's base.
    #[derive(Debug, Clone, Copy)]
    pub enum Step {
        /// A fixed anonymous mmap: (page, pages, prot, shared).
        Map(u64, u64, Prot, bool),
        Unmap(u64, u64),
        Protect(u64, u64, Prot),
        /// mremap: (page, old pages, new pages, fixed target page).
        Remap(u64, u64, u64, Option<u64>),
        /// MADV_DONTFORK.
        DontFork(u64, u64),
    }

    /// The step on the running kernel: its raw result (-1 with errno on failure).
    ///
    /// # Safety
    /// Only in a child forked from the process that reserved the scratch range at `base`.
    unsafe fn kernel_step(base: u64, step: Step) -> i64 {
        use libc::{MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, syscall};
        let at = |page: u64| base + page * P;
        // SAFETY: raw system calls on the child's scratch range.
        unsafe {
            match step {
                Step::Map(page, pages, prot, shared) => {
                    let sharing = if shared { MAP_SHARED } else { MAP_PRIVATE };
                    let flags = sharing | MAP_ANONYMOUS | MAP_FIXED;
                    syscall(libc::SYS_mmap, at(page), pages * P, prot_bits(prot), flags, -1, 0)
                }
                Step::Unmap(page, pages) => syscall(libc::SYS_munmap, at(page), pages * P),
                Step::Protect(page, pages, prot) => {
                    syscall(libc::SYS_mprotect, at(page), pages * P, prot_bits(prot))
                }
                Step::Remap(page, old, new, target) => {
                    let flags = libc::MREMAP_MAYMOVE | target.map_or(0, |_| libc::MREMAP_FIXED);
                    let to = target.map_or(0, at);
                    syscall(libc::SYS_mremap, at(page), old * P, new * P, flags, to)
                }
                Step::DontFork(page, pages) => {
                    syscall(libc::SYS_madvise, at(page), pages * P, libc::MADV_DONTFORK)
                }
            }
        }
    }

    /// The step on `space`: Ok, or the errno.
    fn maplevm_step(space: &AddressSpace, base: u64, step: Step) -> Result<(), i32> {
        let at = |page: u64| base + page * P;
        let result = match step {
            Step::Map(page, pages, prot, shared) => {
                let flags = if shared {
                    MapFlags::SHARED_ANONYMOUS
                } else {
                    MapFlags::PRIVATE_ANONYMOUS
                };
                space
                    .mmap(at(page), pages * P, prot, flags.fixed(), None)
                    .map(drop)
            }
            Step::Unmap(page, pages) => space.munmap(at(page), pages * P),
            Step::Protect(page, pages, prot) => space.mprotect(at(page), pages * P, prot),
            Step::Remap(page, old, new, target) => {
                let flags = RemapFlags {
                    maymove: true,
                    fixed: target.is_some(),
                };
                space
                    .mremap(at(page), old * P, new * P, flags, target.map_or(0, at))
                    .map(drop)
            }
            Step::DontFork(page, pages) => space.set_dontfork(at(page), pages * P, true),
        };
        result.map_err(|e| e.errno.code())
    }

    /// Reads a whole small /proc file into `buf` with raw system calls; returns its length.
    ///
    /// # Safety
    /// `path` is NUL-terminated; in a forked child (no allocation).
    unsafe fn read_proc(path: &std::ffi::CStr, buf: &mut [u8]) -> usize {
        // SAFETY: raw system calls on our own descriptor and buffer.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
            let mut len = 0;
            while len < buf.len() {
                let n = libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len);
                if n <= 0 {
                    break;
                }
                len += n as usize;
            }
            libc::close(fd);
            len
        }
    }

    /// The number after `key` in /proc/self/status text (in kB there).
    fn status_field(status: &[u8], key: &[u8]) -> u64 {
        let at = status
            .windows(key.len())
            .position(|w| w == key)
            .expect("a field of /proc/self/status");
        status[at + key.len()..]
            .iter()
            .skip_while(|b| !b.is_ascii_digit())
            .take_while(|b| b.is_ascii_digit())
            .fold(0, |n, &b| n * 10 + u64::from(b - b'0'))
    }

    /// The answers of up to 15 steps, 4 bits each: 0 for success, else the errno's index in
    /// [`ERRNOS`] plus one (15 for another).
    fn answers(results: impl Iterator<Item = Result<(), i32>>) -> u64 {
        results.enumerate().fold(0, |all, (i, result)| {
            let code = match result {
                Ok(()) => 0,
                Err(errno) => ERRNOS
                    .iter()
                    .position(|&e| e == errno)
                    .map_or(15, |at| at as u64 + 1),
            };
            all | code << (4 * i)
        })
    }

    /// The errnos the limits answer with.
    const ERRNOS: [i32; 2] = [libc::ENOMEM, libc::EAGAIN];

    fn raw_result(ret: i64) -> Result<(), i32> {
        if ret == -1 {
            // SAFETY: reading this thread's errno.
            Err(unsafe { *libc::__errno_location() })
        } else {
            Ok(())
        }
    }

    /// RLIMIT_AS with `as_room` pages to spare and RLIMIT_DATA with `data_room`: the steps on
    /// Linux and on maplevm, answers and mappings compared.
    pub fn rlimits(as_room: u64, data_room: u64, steps: &[Step]) {
        const PAGES: u64 = 64;
        let scratch = Scratch::reserve(PAGES, P);
        let base = scratch.base;
        // The child's answers go out through a shared page: (ok bits, errnos).
        // SAFETY: the child clears the scratch range, reads its usage, sets its rlimits to it
        // plus the room, and makes raw system calls on the range.
        let (ret, maps) = in_child(|| unsafe {
            scratch.clear();
            let mut status = [0u8; 4096];
            let len = read_proc(c"/proc/self/status", &mut status);
            let status = &status[..len];
            let total = status_field(status, b"VmSize:") / 4;
            let data = status_field(status, b"VmData:") / 4;
            let limit = |resource, pages: u64| {
                let bytes = pages * P;
                let limit = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: libc::RLIM_INFINITY,
                };
                libc::setrlimit(resource, &limit);
            };
            limit(libc::RLIMIT_AS, total + as_room);
            limit(libc::RLIMIT_DATA, data + data_room);
            answers(steps.iter().map(|&step| raw_result(kernel_step(base, step)))) as i64
        });
        let space = AddressSpace::new(Layout::X86_64, NoFlush).unwrap();
        space.set_limits(Limits {
            address_space: as_room * P,
            data: data_room * P,
            ..Limits::LINUX
        });
        let ours = answers(steps.iter().map(|&step| maplevm_step(&space, base, step)));
        assert_eq!(
            ours, ret as u64,
            "answers (4 bits a step, 0 success, 1 ENOMEM, 2 EAGAIN) differ: maplevm {ours:#x}, Linux {ret:#x}"
        );
        assert_eq!(lines_in(&space.maps(), base, PAGES), lines_in(&maps, base, PAGES));
        space.validate().unwrap();
    }

    /// `vm.max_map_count` as the running kernel has it: the child fills the scratch range with
    /// one-page VMAs until it holds `max_map_count - short` VMAs in all, then makes `steps`;
    /// maplevm makes the same with as many VMAs of its own outside the range.
    pub fn max_map_count(short: usize, steps: &[Step]) {
        let max: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Fill pages every other page, then the pages the steps use.
        let fill_pages = 2 * max as u64;
        let pages = fill_pages + 64;
        let scratch = Scratch::reserve(pages, P);
        let base = scratch.base;
        let work = base + fill_pages * P;
        // SAFETY: the child clears the scratch range, counts its VMAs, fills the range with
        // one-page mappings and makes raw system calls on it.
        let (ret, maps) = in_child(|| unsafe {
            scratch.clear();
            let mut own = 0u64;
            let mut buf = [0u8; 4096];
            let maps_fd = libc::open(c"/proc/self/maps".as_ptr(), libc::O_RDONLY);
            loop {
                let n = libc::read(maps_fd, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                own += buf[..n as usize].iter().filter(|&&b| b == b'\n').count() as u64;
            }
            libc::close(maps_fd);
            // [vsyscall] is shown but is no VMA.
            own -= 1;
            let fill = max as u64 - short as u64 - own;
            for i in 0..fill {
                let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
                libc::syscall(libc::SYS_mmap, base + 2 * i * P, P, libc::PROT_READ, flags, -1, 0);
            }
            answers(steps.iter().map(|&step| raw_result(kernel_step(work, step)))) as i64
        });
        // The child's own VMAs: those outside the scratch range and its margins, less
        // [vsyscall].
        let (first, end) = (base - P, base + (pages + 1) * P);
        let own = maps
            .lines()
            .filter(|line| !line.ends_with("[vsyscall]"))
            .filter(|line| {
                let start = u64::from_str_radix(line.split('-').next().unwrap(), 16).unwrap();
                !(first..end).contains(&start)
            })
            .count() as u64;
        let space = AddressSpace::new(Layout::X86_64, NoFlush).unwrap();
        // maplevm's own VMAs: one-page mappings far below the range.
        let low = 1 << 32;
        for i in 0..own {
            space
                .mmap(
                    low + 2 * i * P,
                    P,
                    Prot::READ,
                    MapFlags::PRIVATE_ANONYMOUS.fixed(),
                    None,
                )
                .unwrap();
        }
        for i in 0..max as u64 - short as u64 - own {
            space
                .mmap(
                    base + 2 * i * P,
                    P,
                    Prot::READ,
                    MapFlags::PRIVATE_ANONYMOUS.fixed(),
                    None,
                )
                .unwrap();
        }
        space.set_limits(Limits {
            max_map_count: max,
            ..Limits::LINUX
        });
        let ours = answers(steps.iter().map(|&step| maplevm_step(&space, work, step)));
        assert_eq!(
            ours, ret as u64,
            "answers (4 bits a step, 0 success, 1 ENOMEM, 2 EAGAIN) differ: maplevm {ours:#x}, Linux {ret:#x}"
        );
        assert_eq!(lines_in(&space.maps(), work, 64), lines_in(&maps, work, 64));
        space.validate().unwrap();
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
use against_linux::Step::{self, DontFork, Map, Protect, Remap, Unmap};
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
use vma::Prot;

/// RLIMIT_AS and RLIMIT_DATA: mmap, mprotect making pages data, MAP_FIXED replacing pages,
/// munmap giving room back, mremap growing. 16 pages of room, 8 of them data.
#[test]
fn rlimits_apply_as_the_kernel_does() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        let (rw, r) = (Prot::READ_WRITE, Prot::READ);
        let steps: [Step; 12] = [
            Map(0, 8, rw, false),          // data 8 of 8, total 8 of 16
            Map(10, 1, rw, false),         // data: ENOMEM
            Map(12, 4, r, false),          // total 12
            Protect(12, 4, rw),            // would make 4 pages data: ENOMEM
            Map(20, 4, rw, true),          // shared, not data: total 16
            Map(30, 1, Prot::NONE, false), // total: ENOMEM
            Unmap(0, 2),                   // data 6, total 14
            Remap(12, 4, 6, None),         // grows in place: total 16
            Remap(20, 4, 5, None),         // total: ENOMEM
            Map(2, 6, rw, false),          // MAP_FIXED over its own 6 pages: no more
            Protect(12, 2, rw),            // data 8
            Map(40, 1, rw, false),         // ENOMEM
        ];
        against_linux::rlimits(16, 8, &steps);
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    eprintln!("skipped: the limits oracle needs Linux on x86-64");
}

/// vm.max_map_count: with max_map_count - 1 VMAs, mmap works twice (the count may pass the
/// limit by one), then fails; splitting calls fail at the limit; mremap needs room to spare.
#[test]
fn max_map_count_applies_as_the_kernel_does() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        let rw = Prot::READ_WRITE;
        // The count starts at max - 2.
        let steps: [Step; 14] = [
            Map(0, 3, rw, false),      // max - 1
            Map(10, 1, rw, false),     // max
            Map(12, 1, rw, false),     // max + 1: mmap checks only for more than max
            Map(14, 1, rw, false),     // ENOMEM
            Unmap(1, 1),               // would split in three: ENOMEM
            Protect(1, 1, Prot::READ), // would split: ENOMEM
            DontFork(1, 1),            // would split: EAGAIN
            Protect(0, 3, Prot::READ), // the whole VMA: no split
            Unmap(12, 1),              // max
            Unmap(10, 1),              // max - 1
            Unmap(1, 1),               // splits in three: max
            Remap(0, 1, 3, None),      // must move (page 2 is taken): needs 3 to spare, ENOMEM
            Unmap(0, 1),               // max - 1
            Remap(2, 1, 1, Some(20)),  // a fixed move needs 5 to spare: ENOMEM
        ];
        against_linux::max_map_count(2, &steps);
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    eprintln!("skipped: the limits oracle needs Linux on x86-64");
}
