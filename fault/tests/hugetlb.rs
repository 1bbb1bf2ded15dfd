//! hugetlb files (2 MiB pages) mapped by several address spaces, against Linux's semantics: a
//! fault installs one huge entry for the whole 2 MiB; shared mappings see each other's writes;
//! a private mapping's fault on a page the file lacks takes a private zeroed page (the cache
//! gains nothing), copies a cached page on write, and keeps its copies through a hole punch but
//! not a truncate; an exhausted pool is a bus error; sizes change by whole huge pages; partial
//! punches zero only what is cached; MADV_DONTNEED needs an aligned start and rounds the end
//! down; mprotect and mremap move and protect whole huge entries. Then no leaks.

#![cfg(not(feature = "shuttle"))]

use fault::{
    Access, AccessError, Errno, FaultError, File, FileSync, FramePool, FramePoolConfig, HUGE_FRAME_SIZE,
    MapFlags, Mm, MmConfig, Prot, RemapFlags,
};
use std::sync::Arc;

const H: u64 = HUGE_FRAME_SIZE as u64;
const P: u64 = fault::PAGE_SIZE;

fn pool(huge_pages: usize) -> Arc<FramePool> {
    let config = FramePoolConfig {
        chunk_frames: 64,
        max_frames: 1024,
    };
    Arc::new(FramePool::with_huge_pages(config, huge_pages).unwrap())
}

fn mm(frames: &Arc<FramePool>) -> Mm {
    Mm::new(MmConfig::default(), frames.clone()).unwrap()
}

fn byte(mm: &Mm, addr: u64) -> Result<u8, FaultError> {
    let mut b = [0];
    mm.read(addr, &mut b).map_err(|AccessError { error, .. }| error)?;
    Ok(b[0])
}

#[test]
fn shared_and_private_mappings_of_a_hugetlb_file() {
    let frames = pool(4);
    let file = File::hugetlb("/hugepages/f", &frames, 2 * H, FileSync::Rcu).unwrap();
    let (a, b) = (mm(&frames), mm(&frames));
    let rw = Prot::READ_WRITE;
    let in_a = a.mmap(0, 2 * H, rw, MapFlags::SHARED, Some((&file, 0))).unwrap();
    let in_b = b.mmap(0, 2 * H, rw, MapFlags::SHARED, Some((&file, 0))).unwrap();
    assert_eq!(in_a % H, 0, "placed at a huge page boundary");

    a.write(in_a + H + 5, b"x").unwrap();
    let pte = a
        .translation(in_a + H + 5 * P)
        .expect("one entry maps the whole 2 MiB");
    assert!(
        pte.huge() && pte.writable(),
        "shared hugetlb pages are writable at once"
    );
    assert_eq!(
        byte(&b, in_b + H + 5),
        Ok(b'x'),
        "shared mappings see each other's writes"
    );
    let mut read = [0; 2];
    file.read_at(H + 4, &mut read).unwrap();
    assert_eq!(read, [0, b'x'], "and read_at sees them");
    assert_eq!(
        (frames.huge_in_use(), file.cached_pages()),
        (1, 1),
        "one huge page"
    );
    file.read_at(0, &mut read).unwrap();
    assert_eq!(
        (read, frames.huge_in_use()),
        ([0, 0], 1),
        "untouched pages read zeros, unallocated"
    );

    // A private mapping: its own zeroed page where the file has none (the cache gains
    // nothing), the file's page where it has one, copied on write.
    let c = mm(&frames);
    let in_c = c.mmap(0, 2 * H, rw, MapFlags::PRIVATE, Some((&file, 0))).unwrap();
    assert_eq!(byte(&c, in_c), Ok(0));
    assert_eq!(
        (frames.huge_in_use(), file.cached_pages()),
        (2, 1),
        "a private page, not cached"
    );
    assert_eq!(byte(&c, in_c + H + 5), Ok(b'x'), "the file's page, read-only");
    assert!(!c.translation(in_c + H).unwrap().writable());
    c.write(in_c + H + 5, b"p").unwrap();
    assert_eq!(frames.huge_in_use(), 3, "copied on write, whole");
    assert_eq!(byte(&a, in_a + H + 5), Ok(b'x'), "the copy stays private");
    assert_eq!(byte(&c, in_c + H + 6), Ok(0));

    // The pool is exhausted: a fault that needs a huge page is a bus error.
    b.write(in_b, b"y").unwrap();
    assert_eq!(frames.huge_in_use(), 4);
    let d = mm(&frames);
    let in_d = d.mmap(0, 2 * H, rw, MapFlags::PRIVATE, Some((&file, 0))).unwrap();
    assert_eq!(d.fault(in_d + H, Access::Write), Err(FaultError::BusError));
    d.munmap(in_d, 2 * H).unwrap();

    // A hole punch removes the shared page and keeps private copies; partial edges are zeroed
    // where cached.
    file.punch_hole(H + 5, 1).unwrap();
    assert_eq!(byte(&a, in_a + H + 5), Ok(0), "a partial punch zeroes in place");
    a.write(in_a + H + 5, b"z").unwrap();
    file.punch_hole(H, H).unwrap();
    assert_eq!(file.cached_pages(), 1);
    assert_eq!(byte(&a, in_a + H + 5), Ok(0), "punched: zeros, a new page");
    assert_eq!(byte(&c, in_c + H + 5), Ok(b'p'), "private copies survive a punch");
    // A truncate removes them.
    assert_eq!(file.set_len(H + P).map_err(|e| e.errno), Err(Errno::EINVAL));
    file.set_len(H).unwrap();
    assert_eq!(byte(&c, in_c + H), Err(FaultError::BusError), "beyond the end");
    assert_eq!(byte(&a, in_a + H), Err(FaultError::BusError));
    assert_eq!(byte(&b, in_b), Ok(b'y'), "the page before the end stays");
    assert_eq!(file.write_at(0, b"w").map_err(|e| e.errno), Err(Errno::EINVAL));

    for (space, addr) in [(&a, in_a), (&b, in_b), (&c, in_c)] {
        space.munmap(addr, 2 * H).unwrap();
        space.barrier();
    }
    assert_eq!(frames.huge_in_use(), 1, "only the cached page is left");
    drop(file);
    assert_eq!((frames.huge_in_use(), frames.in_use()), (0, 0), "nothing leaked");
}

#[test]
fn madvise_mprotect_and_mremap_act_on_whole_huge_pages() {
    let frames = pool(2);
    let file = File::hugetlb("/hugepages/g", &frames, 2 * H, FileSync::Rcu).unwrap();
    let a = mm(&frames);
    let at = a
        .mmap(0, 2 * H, Prot::READ_WRITE, MapFlags::PRIVATE, Some((&file, 0)))
        .unwrap();
    a.write(at + H + 1, b"m").unwrap();
    // MADV_DONTNEED (Linux's madvise_dontneed_free_valid_vma): EINVAL inside a huge page; the
    // end is rounded down, so a length of a page drops nothing.
    assert_eq!(
        a.madvise_dontneed(at + P, H).map_err(|e| e.errno),
        Err(Errno::EINVAL)
    );
    a.madvise_dontneed(at + H, P).unwrap();
    assert_eq!(byte(&a, at + H + 1), Ok(b'm'), "rounded down to nothing");
    a.madvise_dontneed(at + H, H).unwrap();
    a.barrier();
    assert_eq!(byte(&a, at + H + 1), Ok(0), "dropped: a new zeroed private page");

    // mprotect takes the write permission of the whole huge entry; it comes back.
    a.write(at + 7, b"q").unwrap();
    a.mprotect(at, H, Prot::READ).unwrap();
    assert_eq!(a.fault(at + 7, Access::Write), Err(FaultError::AccessDenied));
    a.mprotect(at, H, Prot::READ_WRITE).unwrap();
    a.write(at + 8, b"r").unwrap();

    // mremap moves whole huge entries; it cannot grow a hugetlb mapping.
    let none = RemapFlags::default();
    assert_eq!(
        a.mremap(at, H, 3 * H, none, 0).map_err(|e| e.errno),
        Err(Errno::EINVAL)
    );
    let moved = a
        .mremap(
            at,
            2 * H,
            2 * H,
            RemapFlags {
                maymove: true,
                fixed: true,
            },
            0x4000_0000,
        )
        .unwrap();
    assert_eq!((byte(&a, moved + 7), byte(&a, moved + 8)), (Ok(b'q'), Ok(b'r')));
    assert!(a.translation(at).is_none(), "nothing left at the old place");
    a.munmap(moved, 2 * H).unwrap();
    a.barrier();
    drop(file);
    assert_eq!(frames.huge_in_use(), 0, "nothing leaked");
}

#[test]
fn shared_mappings_reserve_at_mmap_and_truncate_punch_and_drop_give_back() {
    let frames = pool(3);
    let file = File::hugetlb("/hugepages/r", &frames, 4 * H, FileSync::Rcu).unwrap();
    let (a, b) = (mm(&frames), mm(&frames));
    let rw = Prot::READ_WRITE;
    let map =
        |space: &Mm, offset: u64, len: u64| space.mmap(0, len, rw, MapFlags::SHARED, Some((&file, offset)));
    // Linux's hugetlb_reserve_pages: ENOMEM, with nothing reserved, when the pool cannot
    // cover the mapping.
    assert_eq!(map(&a, 0, 4 * H).map_err(|e| e.errno), Err(Errno::ENOMEM));
    assert_eq!(frames.huge_reserved(), 0);
    let in_a = map(&a, 0, 2 * H).unwrap();
    let in_b = map(&b, 0, 2 * H).unwrap();
    assert_eq!(frames.huge_reserved(), 2, "the file's pages are reserved once");
    map(&b, 2 * H, H).unwrap();
    assert_eq!((frames.huge_reserved(), file.reserved_pages()), (3, 3));
    // Every huge page is promised: an unreserved allocation (a private mapping's) fails.
    let private = a.mmap(0, H, rw, MapFlags::PRIVATE, Some((&file, 3 * H))).unwrap();
    assert_eq!(a.fault(private, Access::Write), Err(FaultError::BusError));
    // A fault consumes its page's reservation; munmap keeps the file's.
    a.write(in_a + 1, b"a").unwrap();
    assert_eq!((frames.huge_reserved(), frames.huge_in_use()), (2, 1));
    assert_eq!(byte(&b, in_b + 1), Ok(b'a'));
    a.munmap(in_a, 2 * H).unwrap();
    b.munmap(in_b, 2 * H).unwrap();
    assert_eq!(frames.huge_reserved(), 2, "reservations belong to the file");
    // Hole punch and truncate give back the reservations of the pages they remove.
    file.punch_hole(H, H).unwrap();
    assert_eq!(frames.huge_reserved(), 1);
    file.set_len(H).unwrap();
    assert_eq!((frames.huge_reserved(), file.reserved_pages()), (0, 0));
    // Dropping the file gives back what is left.
    file.set_len(2 * H).unwrap();
    map(&a, H, H).unwrap();
    assert_eq!(frames.huge_reserved(), 1);
    drop((a, b));
    drop(file);
    assert_eq!(
        (frames.huge_reserved(), frames.huge_in_use()),
        (0, 0),
        "nothing left"
    );
}

#[test]
fn address_spaces_share_the_page_table_of_a_whole_gib_and_unshare_it() {
    const GIB: u64 = 1 << 30;
    let frames = pool(600);
    let file = File::hugetlb("/hugepages/shared", &frames, GIB, FileSync::Rcu).unwrap();
    let spaces = [mm(&frames), mm(&frames), mm(&frames)];
    let rw = Prot::READ_WRITE;
    let at = |i: u64| (i + 1) * GIB;
    for (i, space) in spaces.iter().enumerate() {
        let prot = if i == 2 { Prot::READ } else { rw };
        let flags = MapFlags::SHARED.fixed();
        space
            .mmap(at(i as u64), GIB, prot, flags, Some((&file, 0)))
            .unwrap();
    }
    let [a, b, c] = &spaces;
    a.write(at(0) + 5, b"a").unwrap();
    assert_eq!(byte(b, at(1) + H), Ok(0), "b links the table a made");
    assert!(
        b.translation(at(1) + 5).is_some(),
        "a's translation, without a fault in b"
    );
    assert_eq!(byte(b, at(1) + 5), Ok(b'a'));
    assert_eq!(
        (a.page_tables(), b.page_tables()),
        (1, 1),
        "neither owns the shared table"
    );
    assert_eq!(byte(c, at(2) + 5), Ok(b'a'));
    assert_eq!(
        file.shared_page_tables(),
        2,
        "read-only mappings share another table"
    );
    assert!(c.translation(at(2) + H).is_none(), "not a's nor b's");

    // Part of b's mapping goes: b unshares the whole table, a keeps its translations.
    b.munmap(at(1) + GIB - H, H).unwrap();
    assert!(b.translation(at(1) + 5).is_none() && a.translation(at(0) + 5).is_some());
    assert_eq!(
        byte(b, at(1) + 5),
        Ok(b'a'),
        "faulted again, into a table of its own"
    );
    assert_eq!(b.page_tables(), 2);
    b.barrier();

    // A truncate unshares every table of the pages it removes; the last sharer frees them.
    file.set_len(0).unwrap();
    assert!(a.translation(at(0) + 5).is_none() && c.translation(at(2) + 5).is_none());
    for space in &spaces {
        space.barrier();
    }
    assert_eq!(file.shared_page_tables(), 0, "freed once every sharer let go");
    assert_eq!(frames.huge_in_use(), 0);
    assert_eq!(byte(a, at(0) + 5), Err(FaultError::BusError));
    file.set_len(GIB).unwrap();
    a.write(at(0) + 5, b"n").unwrap();
    assert_eq!(
        byte(b, at(1) + 5),
        Ok(b'n'),
        "a new table after the truncate, the same file page"
    );
    drop(spaces);
    drop(file);
    assert_eq!(
        (frames.huge_in_use(), frames.huge_reserved(), frames.in_use()),
        (0, 0, 0),
        "nothing leaked"
    );
}
