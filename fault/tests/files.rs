//! Files shared by several address spaces, against a sequential model of Linux's semantics:
//! shared mappings and `write_at` see each other's writes in every `Mm`; a private mapping sees
//! the file until it writes a page (its copy), and keeps its copies after; truncate makes
//! faults beyond the end bus errors and removes private copies there too; a hole punch reads
//! zeros and keeps private copies; partial pages are zeroed; evicting pages under memory
//! pressure and writing them back change nothing anyone sees. Checked after every step through
//! every mapping of every address space, and `read_at`. Then bad input, and no leaks.

#![cfg(not(feature = "shuttle"))]

use fault::{
    Access, AccessError, Errno, FaultError, File, FileSync, FramePool, FramePoolConfig, MapFlags, MemBacking,
    Mm, MmConfig, PAGE_SIZE, Prot, Shrinker,
};
use maple::testing::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;

const P: u64 = PAGE_SIZE;
/// The model's file never grows beyond this many pages.
const MAX_PAGES: u64 = 12;

fn pool() -> Arc<FramePool> {
    Arc::new(
        FramePool::new(FramePoolConfig {
            chunk_frames: 64,
            max_frames: 4096,
        })
        .unwrap(),
    )
}

fn mm(frames: &Arc<FramePool>) -> Mm {
    Mm::new(MmConfig::default(), frames.clone()).unwrap()
}

/// One mapping in the model: where, which file pages, and (private) the pages it copied.
struct Mapped {
    mm: usize,
    addr: u64,
    pgoff: u64,
    pages: u64,
    shared: bool,
    copies: BTreeMap<u64, Vec<u8>>,
}

struct Model {
    file: Vec<u8>,
    mappings: Vec<Mapped>,
}

impl Model {
    /// What reading page `index` of mapping `m` gives: its bytes, or a bus error beyond the
    /// end of the file.
    fn page(&self, m: &Mapped, index: u64) -> Result<Vec<u8>, FaultError> {
        if let Some(copy) = m.copies.get(&index) {
            return Ok(copy.clone());
        }
        let pgoff = m.pgoff + index;
        let len = self.file.len() as u64;
        if pgoff * P >= len {
            return Err(FaultError::BusError);
        }
        let mut page = vec![0; P as usize];
        let end = ((pgoff + 1) * P).min(len);
        page[..(end - pgoff * P) as usize].copy_from_slice(&self.file[(pgoff * P) as usize..end as usize]);
        Ok(page)
    }
}

fn check(model: &Model, mms: &[Mm], file: &File) {
    assert_eq!(file.len(), model.file.len() as u64);
    let mut contents = vec![0; model.file.len()];
    assert_eq!(file.read_at(0, &mut contents).unwrap(), model.file.len());
    assert!(contents == model.file, "read_at differs from the model");
    for m in &model.mappings {
        for index in 0..m.pages {
            let mut page = vec![0; P as usize];
            let got = mms[m.mm].read(m.addr + index * P, &mut page).map(|()| page);
            let expected = model.page(m, index);
            match (got, expected) {
                (Ok(got), Ok(expected)) => assert!(
                    got == expected,
                    "mm {} {} mapping at pgoff {} page {index} differs",
                    m.mm,
                    if m.shared { "shared" } else { "private" },
                    m.pgoff
                ),
                (Err(AccessError { error, .. }), Err(expected)) => assert_eq!(error, expected),
                (got, expected) => panic!(
                    "mm {} page {index} of the mapping at pgoff {}: got {:?}, expected {:?}",
                    m.mm,
                    m.pgoff,
                    got.map(|_| ()),
                    expected.map(|_| ())
                ),
            }
        }
    }
}

/// Both ways of protecting a file (maplevm's RCU and the baselines' `i_mmap_rwsem`) give the
/// same semantics.
#[test]
fn many_address_spaces_see_one_file_as_linux_does() {
    for (seed, sync) in (0..6).flat_map(|seed| [(seed, FileSync::Rcu), (seed, FileSync::RwSem)]) {
        let frames = pool();
        let mms = [mm(&frames), mm(&frames), mm(&frames)];
        let initial: Vec<u8> = (0..8 * P).map(|i| (i / P) as u8 + 1).collect();
        let backing = Arc::new(MemBacking::new(&initial));
        let file = File::with_sync("/shared/data", &frames, initial.len() as u64, backing, sync).unwrap();
        let mut model = Model {
            file: initial,
            mappings: Vec::new(),
        };
        let mut rng = Rng::new(seed);
        for step in 0..300 {
            match rng.below(12) {
                0 | 1 if model.mappings.len() < 8 => {
                    let (m, pages) = (rng.below(3) as usize, 1 + rng.below(6));
                    let pgoff = rng.below(MAX_PAGES - pages);
                    let shared = rng.chance(50);
                    let flags = if shared {
                        MapFlags::SHARED
                    } else {
                        MapFlags::PRIVATE
                    };
                    let addr = mms[m]
                        .mmap(0, pages * P, Prot::READ_WRITE, flags, Some((&file, pgoff * P)))
                        .unwrap();
                    model.mappings.push(Mapped {
                        mm: m,
                        addr,
                        pgoff,
                        pages,
                        shared,
                        copies: BTreeMap::new(),
                    });
                }
                0 | 1 => {
                    let gone = model
                        .mappings
                        .swap_remove(rng.below(model.mappings.len() as u64) as usize);
                    mms[gone.mm].munmap(gone.addr, gone.pages * P).unwrap();
                }
                2 | 3 if !model.mappings.is_empty() => {
                    // A store through a mapping, inside the file.
                    let at = rng.below(model.mappings.len() as u64) as usize;
                    let (index, offset) = (rng.below(model.mappings[at].pages), rng.below(P - 8));
                    let m = &model.mappings[at];
                    let position = (m.pgoff + index) * P + offset;
                    if position + 8 > model.file.len() as u64 && !m.copies.contains_key(&index) {
                        continue;
                    }
                    let data = [step as u8; 8];
                    mms[m.mm].write(m.addr + index * P + offset, &data).unwrap();
                    if m.shared {
                        model.file[position as usize..position as usize + 8].copy_from_slice(&data);
                    } else {
                        let mut page = model.page(m, index).unwrap();
                        page[offset as usize..offset as usize + 8].copy_from_slice(&data);
                        model.mappings[at].copies.insert(index, page);
                    }
                }
                4 | 5 => {
                    let offset = rng.below(MAX_PAGES * P - 100);
                    let data = vec![0x80 | step as u8; 1 + rng.below(100) as usize];
                    file.write_at(offset, &data).unwrap();
                    let end = offset as usize + data.len();
                    if end > model.file.len() {
                        model.file.resize(end, 0);
                    }
                    model.file[offset as usize..end].copy_from_slice(&data);
                }
                6 | 7 => {
                    let len = rng.below(MAX_PAGES * P);
                    file.set_len(len).unwrap();
                    let old = model.file.len() as u64;
                    model.file.resize(len as usize, 0);
                    if len < old {
                        // Private copies of whole pages beyond the new end go too.
                        let first = len.div_ceil(P);
                        for m in &mut model.mappings {
                            m.copies.retain(|&index, _| m.pgoff + index < first);
                        }
                    }
                }
                10 => {
                    // Memory pressure: pages leave the cache (dirty ones written back first);
                    // nothing anyone sees changes.
                    file.shrink(1 + rng.below(8) as usize);
                }
                11 if !model.mappings.is_empty() => {
                    let m = &model.mappings[rng.below(model.mappings.len() as u64) as usize];
                    mms[m.mm].msync(m.addr, m.pages * P).unwrap();
                }
                11 => {
                    file.sync().unwrap();
                }
                _ => {
                    let offset = rng.below(MAX_PAGES * P);
                    let len = 1 + rng.below(4 * P);
                    file.punch_hole(offset, len).unwrap();
                    let end = (offset + len).min(model.file.len() as u64);
                    if offset < end {
                        model.file[offset as usize..end as usize].fill(0);
                    }
                }
            }
            check(&model, &mms, &file);
        }
        for m in model.mappings.drain(..) {
            mms[m.mm].munmap(m.addr, m.pages * P).unwrap();
        }
        assert_eq!(
            file.mappings(),
            0,
            "the reverse map is empty when nothing maps the file"
        );
        drop(file);
        for mm in &mms {
            mm.barrier();
            assert_eq!(mm.page_tables(), 0);
        }
        assert_eq!(frames.in_use(), 0, "frames leaked");
    }
}

#[test]
fn truncate_and_punch_reach_every_address_space() {
    let frames = pool();
    let (a, b) = (mm(&frames), mm(&frames));
    let file = File::new("/t", &frames, &[9; 4 * P as usize]);
    let in_a = a
        .mmap(0, 4 * P, Prot::READ_WRITE, MapFlags::SHARED, Some((&file, 0)))
        .unwrap();
    let in_b = b
        .mmap(0, 4 * P, Prot::READ_WRITE, MapFlags::PRIVATE, Some((&file, 0)))
        .unwrap();
    for page in 0..4 {
        a.fault(in_a + page * P, Access::Write).unwrap();
        b.fault(in_b + page * P, Access::Read).unwrap();
    }
    b.write(in_b + 3 * P, b"mine").unwrap();
    assert_eq!(file.mappings(), 2);
    file.punch_hole(P, P).unwrap();
    assert!(a.translation(in_a + P).is_none() && b.translation(in_b + P).is_none());
    let mut byte = [1];
    b.read(in_b + P, &mut byte).unwrap();
    assert_eq!(byte, [0], "a hole reads zeros");
    file.set_len(2 * P + 1).unwrap();
    for (mm, at) in [(&a, in_a), (&b, in_b)] {
        assert!(
            mm.translation(at + 3 * P).is_none(),
            "no translation beyond the end"
        );
        assert_eq!(mm.fault(at + 3 * P, Access::Read), Err(FaultError::BusError));
        let mut tail = [1; 2];
        mm.read(at + 2 * P, &mut tail).unwrap();
        assert_eq!(tail, [9, 0], "the rest of the last page is zeroed");
    }
    assert_eq!(a.stats().bus_errors, 1);
    drop((a, b));
    assert_eq!(file.mappings(), 0, "dropping an address space unlinks its VMAs");
    drop(file);
    assert_eq!(frames.in_use(), 0);
}

#[test]
fn shared_anonymous_memory_can_be_handed_to_another_address_space() {
    let frames = pool();
    let (a, b) = (mm(&frames), mm(&frames));
    let shm = File::zeroed("/dev/zero (deleted)", &frames, 4 * P).unwrap();
    let in_a = a
        .mmap(0, 4 * P, Prot::READ_WRITE, MapFlags::SHARED, Some((&shm, 0)))
        .unwrap();
    let in_b = b
        .mmap(0, 2 * P, Prot::READ_WRITE, MapFlags::SHARED, Some((&shm, 2 * P)))
        .unwrap();
    a.write(in_a + 2 * P + 5, b"hello").unwrap();
    let mut seen = [0; 5];
    b.read(in_b + 5, &mut seen).unwrap();
    assert_eq!(&seen, b"hello");
    // MAP_SHARED | MAP_ANONYMOUS makes such an object; `file_at` hands it on.
    let anon = a
        .mmap(0, 2 * P, Prot::READ_WRITE, MapFlags::SHARED_ANONYMOUS, None)
        .unwrap();
    a.write(anon + P, b"shm").unwrap();
    let (object, offset) = a.file_at(anon + P).unwrap();
    assert_eq!(offset, P);
    let in_b2 = b
        .mmap(0, 2 * P, Prot::READ, MapFlags::SHARED, Some((&object, 0)))
        .unwrap();
    let mut seen = [0; 3];
    b.read(in_b2 + P, &mut seen).unwrap();
    assert_eq!(&seen, b"shm");
    drop((a, b, shm, object));
    assert_eq!(frames.in_use(), 0);
}

#[test]
fn bad_file_requests_are_errors() {
    let frames = pool();
    let file = File::new("/bad", &frames, b"abc");
    let max = fault::MAX_FILE_LEN;
    assert_eq!(file.set_len(max + 1).unwrap_err().errno, Errno::EFBIG);
    assert_eq!(file.write_at(u64::MAX, b"x").unwrap_err().errno, Errno::EFBIG);
    assert_eq!(file.write_at(max, b"x").unwrap_err().errno, Errno::EFBIG);
    assert_eq!(file.punch_hole(0, 0).unwrap_err().errno, Errno::EINVAL);
    assert_eq!(file.punch_hole(u64::MAX, 2).unwrap_err().errno, Errno::EFBIG);
    assert!(File::zeroed("/big", &frames, max + 1).is_err());
    // Beyond the end: nothing to read, nothing to punch.
    assert_eq!(file.read_at(10, &mut [0; 4]).unwrap(), 0);
    assert_eq!(
        file.read_at(1, &mut [0; 4]).unwrap(),
        2,
        "a short read at the end"
    );
    file.punch_hole(100, 5).unwrap();
    // An unaligned punch zeroes the bytes inside.
    file.punch_hole(1, 1).unwrap();
    let mut all = [9; 3];
    file.read_at(0, &mut all).unwrap();
    assert_eq!(&all, b"a\0c");
    // A mapping whose offset lies beyond a new, smaller size faults with a bus error.
    let mm = mm(&frames);
    let big = File::new("/big", &frames, &[1; 3 * P as usize]);
    let at = mm
        .mmap(0, P, Prot::READ, MapFlags::SHARED, Some((&big, 2 * P)))
        .unwrap();
    big.set_len(P).unwrap();
    assert_eq!(mm.fault(at, Access::Read), Err(FaultError::BusError));
    big.set_len(0).unwrap();
    big.set_len(3 * P).unwrap();
    let mut byte = [1];
    mm.read(at, &mut byte).unwrap();
    assert_eq!(byte, [0], "grown again: zeros");
}

#[test]
fn a_partial_page_with_no_frame_to_zero_it_in_is_enomem() {
    let frames = Arc::new(
        FramePool::new(FramePoolConfig {
            chunk_frames: 2,
            max_frames: 2,
        })
        .unwrap(),
    );
    let file = File::new("/full", &frames, &[5; 4 * P as usize]);
    // The pool's two frames hold pages 2 and 3; page 1 cannot be read in.
    file.read_at(2 * P, &mut [0; 2 * P as usize]).unwrap();
    assert_eq!(file.set_len(P + 1).unwrap_err().errno, Errno::ENOMEM);
    assert_eq!(file.len(), 4 * P, "nothing changed");
    assert_eq!(file.punch_hole(P + 1, 2 * P).unwrap_err().errno, Errno::ENOMEM);
    let mut page = [0; 2];
    file.read_at(2 * P, &mut page).unwrap();
    assert_eq!(page, [5, 5], "no page removed");
    assert_eq!(file.write_at(P, b"x").unwrap_err().errno, Errno::ENOMEM);
}

/// A file four times larger than the frame pool, mapped shared in two address spaces, reads
/// end to end through a mapping and `read_at`; writes to every page through the other mapping
/// survive their pages' eviction (written back first); nothing leaks.
#[test]
fn a_file_larger_than_the_pool_maps_reads_and_writes_end_to_end() {
    let frames = Arc::new(
        FramePool::new(FramePoolConfig {
            chunk_frames: 16,
            max_frames: 64,
        })
        .unwrap(),
    );
    let pages = 256;
    let contents: Vec<u8> = (0..pages * P).map(|i| (i / P) as u8).collect();
    let backing = Arc::new(MemBacking::new(&contents));
    for sync in [FileSync::Rcu, FileSync::RwSem] {
        let file = File::with_sync("/big", &frames, pages * P, backing.clone(), sync).unwrap();
        let (reader, writer) = (mm(&frames), mm(&frames));
        let flags = MapFlags::SHARED;
        let seen = reader
            .mmap(0, pages * P, Prot::READ, flags, Some((&file, 0)))
            .unwrap();
        let written = writer
            .mmap(0, pages * P, Prot::READ_WRITE, flags, Some((&file, 0)))
            .unwrap();
        let mut byte = [0];
        for page in 0..pages {
            reader.read(seen + page * P + 7, &mut byte).unwrap();
            assert_eq!(byte[0], page as u8, "page {page} through the mapping");
            writer.write(written + page * P + 9, &[!(page as u8)]).unwrap();
        }
        assert!(frames.in_use() <= 64);
        for page in 0..pages {
            let mut two = [0; 2];
            file.read_at(page * P + 8, &mut two).unwrap();
            assert_eq!(two, [page as u8, !(page as u8)], "page {page} through read_at");
            reader.read(seen + page * P + 9, &mut byte).unwrap();
            assert_eq!(byte[0], !(page as u8), "page {page}: the write survived eviction");
        }
        assert!(backing.writes() >= pages - 64, "dirty pages were written back");
        reader.munmap(seen, pages * P).unwrap();
        writer.munmap(written, pages * P).unwrap();
        drop(file);
        reader.barrier();
        writer.barrier();
    }
    assert_eq!(frames.in_use(), 0, "frames leaked");
}

/// msync writes the pages written through a shared mapping back to the storage, and again
/// after they are written again (the first write after writeback faults and marks the page
/// dirty); clean pages are not written. Its errors are Linux's.
#[test]
fn msync_writes_back_what_shared_mappings_wrote() {
    let frames = pool();
    let backing = Arc::new(MemBacking::new(&[1; 4 * P as usize]));
    let file = File::with_backing("/synced", &frames, 4 * P, backing.clone()).unwrap();
    let mm = mm(&frames);
    let at = mm
        .mmap(0, 4 * P, Prot::READ_WRITE, MapFlags::SHARED, Some((&file, 0)))
        .unwrap();
    mm.read(at, &mut [0]).unwrap();
    mm.write(at + P, b"first").unwrap();
    mm.msync(at, 4 * P).unwrap();
    assert_eq!(backing.writes(), 1, "only the written page");
    let stored = |pgoff: u64| {
        let mut page = vec![0; P as usize];
        fault::Backing::read(&*backing, pgoff, &mut page).unwrap();
        page
    };
    assert_eq!(&stored(1)[..5], b"first");
    mm.write(at + P, b"again").unwrap();
    mm.msync(at + P, 1).unwrap();
    assert_eq!(backing.writes(), 2);
    assert_eq!(&stored(1)[..5], b"again");
    mm.msync(at, 4 * P).unwrap();
    assert_eq!(backing.writes(), 2, "nothing dirty");
    assert_eq!(mm.msync(at + 1, P).unwrap_err().errno, Errno::EINVAL);
    assert_eq!(mm.msync(at, 8 * P).unwrap_err().errno, Errno::ENOMEM);
    assert_eq!(
        mm.msync(u64::MAX - P + 1, 2 * P).unwrap_err().errno,
        Errno::ENOMEM
    );
    // Linux rounds the length up modulo 2^64: within a page of the top it is zero.
    mm.msync(at, u64::MAX).unwrap();
    mm.msync(at, 0).unwrap();
}

/// MADV_WILLNEED reads a file mapping's pages into the page cache (mincore shows them);
/// MADV_REMOVE punches a hole in the file under a shared mapping, for every address space;
/// MAP_POPULATE brings a new mapping's pages in at once.
#[test]
fn willneed_reads_ahead_remove_punches_and_populate_faults_in() {
    let frames = pool();
    let file = File::new("/advised", &frames, &[7u8; 4 * 4096]);
    let (mm, other) = (
        Mm::new(MmConfig::default(), frames.clone()).unwrap(),
        Mm::new(MmConfig::default(), frames.clone()).unwrap(),
    );
    let shared = |mm: &Mm| {
        mm.mmap(0, 4 * P, Prot::READ_WRITE, MapFlags::SHARED, Some((&file, 0)))
            .unwrap()
    };
    let (a, b) = (shared(&mm), shared(&other));
    assert_eq!(mm.mincore(a, 4 * P).unwrap(), [false; 4]);
    mm.madvise_willneed(a, 2 * P).unwrap();
    assert!(file.cached(0) && file.cached(1) && !file.cached(2));
    assert_eq!(
        mm.mincore(a, 4 * P).unwrap(),
        [true, true, false, false],
        "cached, not mapped"
    );
    let byte = |mm: &Mm, addr: u64| {
        let mut b = [0];
        mm.read(addr, &mut b).unwrap();
        b[0]
    };
    mm.write(a + P, &[9]).unwrap();
    assert_eq!(byte(&other, b + P), 9);
    mm.madvise_remove(a + P, P).unwrap();
    assert_eq!(
        (byte(&mm, a + P), byte(&other, b + P)),
        (0, 0),
        "punched everywhere"
    );
    assert_eq!((byte(&mm, a), byte(&mm, a + 2 * P)), (7, 7), "around the hole");
    let mut on_file = [1];
    file.read_at(P, &mut on_file).unwrap();
    assert_eq!(on_file, [0]);
    let flags = MapFlags {
        populate: true,
        ..MapFlags::PRIVATE_ANONYMOUS
    };
    let populated = mm.mmap(0, 3 * P, Prot::READ_WRITE, flags, None).unwrap();
    assert_eq!(mm.mincore(populated, 3 * P).unwrap(), [true; 3]);
    assert!(
        mm.translation(populated).unwrap().writable(),
        "written in: its own pages"
    );
    drop((mm, other, file));
    assert_eq!(frames.in_use(), 0);
}
