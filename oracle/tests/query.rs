//! PROCMAP_QUERY against the running kernel: the same layout in a forked child (raw system
//! calls; the queries are ioctls on its /proc/self/maps) and on an `AddressSpace`
//! (`AddressSpace::query`); every answer — the VMA's range, permissions and sharing, offset,
//! page size and name, or the errno — must be the same.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod against_linux {
    use oracle::child::{Scratch, SharedPage, in_child};
    use oracle::prot_bits;
    use std::sync::Arc;
    use vma::{AddressSpace, Layout, MapFlags, MappedFile, NoFlush, PAGE_SIZE, Prot, QueryFlags};

    const P: u64 = PAGE_SIZE;
    const PAGES: u64 = 16;
    /// The name the child's memfd shows, and the maplevm file's.
    const MEMFD: &str = "/memfd:q (deleted)";
    /// Bytes of a name the child reports.
    const NAME: usize = 64;

    /// Linux's `struct procmap_query`.
    #[repr(C)]
    #[derive(Default)]
    struct ProcmapQuery {
        size: u64,
        query_flags: u64,
        query_addr: u64,
        vma_start: u64,
        vma_end: u64,
        vma_flags: u64,
        vma_page_size: u64,
        vma_offset: u64,
        inode: u64,
        dev_major: u32,
        dev_minor: u32,
        vma_name_size: u32,
        build_id_size: u32,
        vma_name_addr: u64,
        build_id_addr: u64,
    }

    /// `_IOWR('f', 17, struct procmap_query)`.
    const PROCMAP_QUERY: u64 = 3 << 30 | (size_of::<ProcmapQuery>() as u64) << 16 | (b'f' as u64) << 8 | 17;

    /// The layout, in pages of the scratch range: (first, pages, prot, kind).
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Anonymous,
        PrivateFile,
        SharedAnonymous,
        SharedFile,
    }

    const LAYOUT: [(u64, u64, Prot, Kind); 5] = [
        (0, 3, Prot::READ_WRITE, Kind::Anonymous),
        (3, 3, Prot::READ_EXEC, Kind::PrivateFile),
        (7, 1, Prot::READ_WRITE, Kind::SharedAnonymous),
        (9, 2, Prot::NONE, Kind::Anonymous),
        (12, 1, Prot::READ, Kind::SharedFile),
    ];

    /// One answer: `Err(errno)` or (first page, end page, Linux's R/W/X/S bits, offset, page
    /// size, name).
    type Answer = Result<(u64, u64, u64, u64, u64, String), i32>;

    /// An answer's slot in the page shared with the child.
    #[repr(C)]
    struct Slot {
        ret: i64,
        start: u64,
        end: u64,
        flags: u64,
        offset: u64,
        page_size: u64,
        name: [u8; NAME],
    }

    /// The child's side: lays the layout out and makes the queries, each answer in its slot.
    ///
    /// # Safety
    /// Only in a child forked from the process that reserved `scratch`; `slots` points to a
    /// shared page holding a slot per query.
    unsafe fn kernel(scratch: &Scratch, queries: &[(u64, u64)], slots: *mut Slot) -> i64 {
        use libc::{MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, syscall};
        let base = scratch.base;
        // SAFETY: raw system calls on the child's own scratch range and descriptors, and stores
        // into the shared slots.
        unsafe {
            scratch.clear();
            let memfd = syscall(libc::SYS_memfd_create, c"q".as_ptr(), 0);
            syscall(libc::SYS_ftruncate, memfd, PAGES * P);
            for (first, pages, prot, kind) in LAYOUT {
                let (flags, fd, offset) = match kind {
                    Kind::Anonymous => (MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                    Kind::PrivateFile => (MAP_PRIVATE, memfd, first * P),
                    Kind::SharedAnonymous => (MAP_SHARED | MAP_ANONYMOUS, -1, 0),
                    Kind::SharedFile => (MAP_SHARED, memfd, first * P),
                };
                let at = base + first * P;
                syscall(
                    libc::SYS_mmap,
                    at,
                    pages * P,
                    prot_bits(prot),
                    flags | MAP_FIXED,
                    fd,
                    offset,
                );
            }
            let maps = libc::open(c"/proc/self/maps".as_ptr(), libc::O_RDONLY);
            for (i, &(addr, flags)) in queries.iter().enumerate() {
                let slot = &mut *slots.add(i);
                let mut query = ProcmapQuery {
                    size: size_of::<ProcmapQuery>() as u64,
                    query_flags: flags,
                    query_addr: addr,
                    vma_name_size: NAME as u32,
                    vma_name_addr: slot.name.as_mut_ptr() as u64,
                    ..ProcmapQuery::default()
                };
                let ret = libc::ioctl(maps, PROCMAP_QUERY, &mut query);
                slot.ret = if ret < 0 {
                    -(*libc::__errno_location() as i64)
                } else {
                    0
                };
                slot.start = query.vma_start;
                slot.end = query.vma_end;
                slot.flags = query.vma_flags;
                slot.offset = query.vma_offset;
                slot.page_size = query.vma_page_size;
                if query.vma_name_size == 0 {
                    slot.name[0] = 0;
                }
            }
            0
        }
    }

    /// The same layout on `space`.
    fn layout(space: &AddressSpace, base: u64) {
        #[derive(Debug)]
        struct Memfd;
        impl MappedFile for Memfd {
            fn name(&self) -> &str {
                MEMFD
            }
        }
        let memfd: Arc<dyn MappedFile> = Arc::new(Memfd);
        for (first, pages, prot, kind) in LAYOUT {
            let (flags, file) = match kind {
                Kind::Anonymous => (MapFlags::PRIVATE_ANONYMOUS, None),
                Kind::PrivateFile => (MapFlags::PRIVATE, Some((memfd.clone(), first * P))),
                Kind::SharedAnonymous => (MapFlags::SHARED_ANONYMOUS, None),
                Kind::SharedFile => (MapFlags::SHARED, Some((memfd.clone(), first * P))),
            };
            space
                .mmap(base + first * P, pages * P, prot, flags.fixed(), file)
                .unwrap();
        }
    }

    /// Runs `queries` (page of the scratch range, Linux's flag bits) both ways and compares.
    pub fn run(queries: &[(u64, u64)]) {
        let scratch = Scratch::reserve(PAGES, P);
        let base = scratch.base;
        let queries: Vec<(u64, u64)> = queries
            .iter()
            .map(|&(page, flags)| (base + page * P, flags))
            .collect();
        assert!(queries.len() * size_of::<Slot>() <= P as usize);
        let shared = SharedPage::new();
        let slots = shared.as_mut_ptr::<Slot>();
        // SAFETY: the child was just forked from this process, which reserved the range and
        // mapped the slots.
        in_child(|| unsafe { kernel(&scratch, &queries, slots) });
        let page = |addr: u64| (addr - base) / P;
        let linux: Vec<Answer> = (0..queries.len())
            .map(|i| {
                // SAFETY: the slots the child filled (it has exited).
                let slot = unsafe { &*slots.add(i) };
                if slot.ret < 0 {
                    return Err(-slot.ret as i32);
                }
                let len = slot.name.iter().position(|&b| b == 0).unwrap_or(NAME);
                let name = String::from_utf8_lossy(&slot.name[..len]).into_owned();
                Ok((
                    page(slot.start),
                    page(slot.end),
                    slot.flags,
                    slot.offset,
                    slot.page_size,
                    name,
                ))
            })
            .collect();
        let space = AddressSpace::new(Layout::X86_64, NoFlush).unwrap();
        layout(&space, base);
        let ours: Vec<Answer> = queries
            .iter()
            .map(|&(addr, flags)| {
                let info = QueryFlags::from_bits(flags)
                    .and_then(|flags| space.query(addr, flags))
                    .map_err(|e| e.errno.code())?;
                let bits = [info.prot.read, info.prot.write, info.prot.exec, info.shared]
                    .iter()
                    .enumerate()
                    .filter(|&(_, &on)| on)
                    .fold(0, |all, (i, _)| all | 1 << i);
                Ok((
                    page(info.start),
                    page(info.end),
                    bits,
                    info.offset,
                    info.page_size,
                    info.name,
                ))
            })
            .collect();
        for (i, (linux, ours)) in linux.iter().zip(&ours).enumerate() {
            assert_eq!(ours, linux, "query {i}: {:?} (maplevm, then Linux)", queries[i]);
        }
    }
}

/// Covering and next VMAs, each filter, a hole, a filter that skips to a later VMA, an
/// unknown flag.
#[test]
fn queries_answer_as_the_kernel_does() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        const R: u64 = 0x01;
        const X: u64 = 0x04;
        const S: u64 = 0x08;
        const NEXT: u64 = 0x10;
        const FILE: u64 = 0x20;
        against_linux::run(&[
            (0, 0),
            (2, 0),
            (6, 0),
            (6, NEXT),
            (0, FILE),
            (0, FILE | NEXT),
            (0, X | NEXT),
            (0, S | NEXT),
            (8, R | NEXT),
            (9, R),
            (9, 0),
            (12, S | FILE | R),
            (4, R | X),
            (0, 0x40),
        ]);
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    eprintln!("skipped: the query oracle needs Linux on x86-64");
}
